//! WebSocket (RFC 6455) framing, sans I/O: the opening handshake's key,
//! a decoder for client frames that streams message bytes out as they
//! arrive (nothing is buffered but a frame header), and the encoder of
//! server frames.
//!
//! The well-kept Rust crates either own the socket and its buffers
//! (tungstenite keeps 128 KiB per connection and never shrinks) or are
//! tied to an async runtime; chatd needs only the framing, with its own
//! buffers, so it is here, and property-tested with arbitrary input.

/// What a client must append to its key before hashing (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_UNSUPPORTED: u16 = 1003;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64(digest.as_ref())
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends one unfragmented, unmasked server frame.
pub fn frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 10);
    out.push(0x80 | opcode);
    header_len(payload.len(), out);
    out.extend_from_slice(payload);
}

/// Appends a text frame holding `payload`.
pub fn text(payload: &[u8], out: &mut Vec<u8>) {
    frame(OP_TEXT, payload, out);
}

/// Appends a close frame with `code`.
pub fn close(code: u16, out: &mut Vec<u8>) {
    frame(OP_CLOSE, &code.to_be_bytes(), out);
}

/// Appends a ping frame (empty).
pub fn ping(out: &mut Vec<u8>) {
    frame(OP_PING, &[], out);
}

/// Appends a frame's length field (unmasked).
pub fn header_len(len: usize, out: &mut Vec<u8>) {
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// What the decoder hands up.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes of the current text message, unmasked, in order.
    Data(&'a [u8]),
    /// The current text message is complete.
    End,
    /// A ping with its payload: answer with a pong carrying it.
    Ping(&'a [u8]),
    /// The client closed, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the connection must close, with the code to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub why: &'static str,
}

fn violation(code: u16, why: &'static str) -> Violation {
    Violation { code, why }
}

/// Decodes client frames incrementally. Holds at most a frame header and
/// a control frame's payload (≤ 125 bytes).
#[derive(Debug, Default)]
pub struct Decoder {
    header: [u8; 14],
    header_len: u8,
    /// Payload bytes left in the current frame (once its header is read).
    remaining: u64,
    in_frame: bool,
    mask: [u8; 4],
    /// Offset into the mask of the next payload byte.
    mask_at: u8,
    opcode: u8,
    fin: bool,
    /// A text message has begun and not ended.
    in_message: bool,
    control: Vec<u8>,
    closed: bool,
}

impl Decoder {
    /// Takes bytes from the client. `sink` gets the pieces in order; an
    /// error ends the connection (nothing more is decoded after it).
    pub fn push(
        &mut self,
        mut data: &[u8],
        sink: &mut impl FnMut(Piece<'_>),
    ) -> Result<(), Violation> {
        let mut scratch = [0u8; 1024];
        while !data.is_empty() && !self.closed {
            if !self.in_frame {
                let n = self.read_header(data)?;
                data = &data[n..];
                if !self.in_frame {
                    continue;
                }
                if self.remaining == 0 {
                    self.frame_done(sink)?;
                }
                continue;
            }
            let take = (self.remaining.min(data.len() as u64) as usize).min(scratch.len());
            let piece = &mut scratch[..take];
            piece.copy_from_slice(&data[..take]);
            for b in piece.iter_mut() {
                *b ^= self.mask[self.mask_at as usize];
                self.mask_at = (self.mask_at + 1) & 3;
            }
            data = &data[take..];
            self.remaining -= take as u64;
            if self.opcode >= OP_CLOSE {
                self.control.extend_from_slice(piece);
            } else {
                sink(Piece::Data(piece));
            }
            if self.remaining == 0 {
                self.frame_done(sink)?;
            }
        }
        Ok(())
    }

    /// Reads header bytes from `data`; returns how many it took. Sets
    /// `in_frame` once the whole header is in.
    fn read_header(&mut self, data: &[u8]) -> Result<usize, Violation> {
        let mut used = 0;
        loop {
            let have = self.header_len as usize;
            let need = self.header_need();
            if have >= need {
                break;
            }
            let Some(&b) = data.get(used) else {
                return Ok(used);
            };
            self.header[have] = b;
            self.header_len += 1;
            used += 1;
            if self.header_len == 2 {
                self.check_first_two()?;
            }
        }
        let h = &self.header[..self.header_len as usize];
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let len = u64::from_be_bytes(h[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(violation(CLOSE_PROTOCOL, "frame length out of range"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        self.mask.copy_from_slice(&h[mask_at..mask_at + 4]);
        self.mask_at = 0;
        self.remaining = len;
        self.in_frame = true;
        self.header_len = 0;
        Ok(used)
    }

    /// Header bytes needed, given what is read so far.
    fn header_need(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        2 + match self.header[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        } + 4
    }

    fn check_first_two(&mut self) -> Result<(), Violation> {
        let (b0, b1) = (self.header[0], self.header[1]);
        if b0 & 0x70 != 0 {
            return Err(violation(CLOSE_PROTOCOL, "reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(violation(CLOSE_PROTOCOL, "unmasked client frame"));
        }
        self.fin = b0 & 0x80 != 0;
        self.opcode = b0 & 0x0F;
        let len = b1 & 0x7F;
        match self.opcode {
            OP_TEXT if self.in_message => Err(violation(
                CLOSE_PROTOCOL,
                "new message inside a fragmented one",
            )),
            OP_CONTINUATION if !self.in_message => {
                Err(violation(CLOSE_PROTOCOL, "continuation without a message"))
            }
            OP_TEXT | OP_CONTINUATION => {
                self.in_message = true;
                Ok(())
            }
            OP_BINARY => Err(violation(
                CLOSE_UNSUPPORTED,
                "binary messages are not served",
            )),
            OP_CLOSE | OP_PING | OP_PONG if !self.fin || len > 125 => {
                Err(violation(CLOSE_PROTOCOL, "bad control frame"))
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                self.control.clear();
                Ok(())
            }
            _ => Err(violation(CLOSE_PROTOCOL, "unknown opcode")),
        }
    }

    fn frame_done(&mut self, sink: &mut impl FnMut(Piece<'_>)) -> Result<(), Violation> {
        self.in_frame = false;
        match self.opcode {
            OP_TEXT | OP_CONTINUATION => {
                if self.fin {
                    self.in_message = false;
                    sink(Piece::End);
                }
            }
            OP_PING => sink(Piece::Ping(&self.control)),
            OP_PONG => {}
            OP_CLOSE => {
                self.closed = true;
                let code = match self.control.as_slice() {
                    [] => None,
                    [_] => return Err(violation(CLOSE_PROTOCOL, "one-byte close payload")),
                    [a, b, rest @ ..] => {
                        if std::str::from_utf8(rest).is_err() {
                            return Err(violation(CLOSE_INVALID_DATA, "close reason not UTF-8"));
                        }
                        Some(u16::from_be_bytes([*a, *b]))
                    }
                };
                sink(Piece::Close(code));
            }
            _ => unreachable!("checked with the header"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: masked with `mask`.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let mut len = Vec::new();
        header_len(payload.len(), &mut len);
        len[0] |= 0x80;
        out.extend_from_slice(&len);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Got {
        Message(Vec<u8>),
        Ping(Vec<u8>),
        Close(Option<u16>),
    }

    /// Decodes `bytes` fed `step` bytes at a time (0: at once).
    fn decode(bytes: &[u8], step: usize) -> (Vec<Got>, Option<Violation>) {
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut current = Vec::new();
        let step = if step == 0 { bytes.len().max(1) } else { step };
        for piece in bytes.chunks(step) {
            let r = d.push(piece, &mut |p| match p {
                Piece::Data(b) => current.extend_from_slice(b),
                Piece::End => got.push(Got::Message(std::mem::take(&mut current))),
                Piece::Ping(b) => got.push(Got::Ping(b.to_vec())),
                Piece::Close(c) => got.push(Got::Close(c)),
            });
            if let Err(v) = r {
                return (got, Some(v));
            }
        }
        (got, None)
    }

    #[test]
    fn the_rfc_handshake_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        let mut out = Vec::new();
        text(b"Hello", &mut out);
        assert_eq!(out, b"\x81\x05Hello");
        out.clear();
        text(&[b'x'; 126], &mut out);
        assert_eq!(&out[..4], &[0x81, 126, 0, 126]);
        out.clear();
        text(&vec![b'x'; 70_000], &mut out);
        assert_eq!(&out[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        out.clear();
        close(CLOSE_PROTOCOL, &mut out);
        assert_eq!(out, [0x88, 2, 0x03, 0xEA]);
    }

    #[test]
    fn messages_fragments_and_controls_whole_split_and_byte_at_a_time() {
        let m = [1, 2, 3, 4];
        let mut bytes = client_frame(true, OP_TEXT, b"Hello", m);
        bytes.extend(client_frame(false, OP_TEXT, b"Hel", m));
        bytes.extend(client_frame(true, OP_PING, b"p!", m));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"lo ", m));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"again", m));
        bytes.extend(client_frame(true, OP_PONG, b"", m));
        bytes.extend(client_frame(true, OP_TEXT, &[b'y'; 300], m));
        bytes.extend(client_frame(true, OP_CLOSE, &[0x03, 0xE8, b'o', b'k'], m));
        let want = vec![
            Got::Message(b"Hello".to_vec()),
            Got::Ping(b"p!".to_vec()),
            Got::Message(b"Hello again".to_vec()),
            Got::Message(vec![b'y'; 300]),
            Got::Close(Some(1000)),
        ];
        for step in [0, 1, 2, 3, 7, 100] {
            assert_eq!(decode(&bytes, step), (want.clone(), None), "step {step}");
        }
    }

    #[test]
    fn violations_carry_their_close_codes() {
        let m = [9, 8, 7, 6];
        let unmasked = b"\x81\x02hi".to_vec();
        assert_eq!(decode(&unmasked, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let binary = client_frame(true, OP_BINARY, b"\x00\x01", m);
        assert_eq!(decode(&binary, 0).1.unwrap().code, CLOSE_UNSUPPORTED);
        let mut rsv = client_frame(true, OP_TEXT, b"x", m);
        rsv[0] |= 0x40;
        assert_eq!(decode(&rsv, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let lone = client_frame(true, OP_CONTINUATION, b"x", m);
        assert_eq!(decode(&lone, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let mut twice = client_frame(false, OP_TEXT, b"a", m);
        twice.extend(client_frame(true, OP_TEXT, b"b", m));
        assert_eq!(decode(&twice, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let long_ping = client_frame(true, OP_PING, &[0; 126], m);
        assert_eq!(decode(&long_ping, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let split_ping = client_frame(false, OP_PING, b"", m);
        assert_eq!(decode(&split_ping, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let odd_close = client_frame(true, OP_CLOSE, &[3], m);
        assert_eq!(decode(&odd_close, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let opcode = client_frame(true, 0x3, b"", m);
        assert_eq!(decode(&opcode, 0).1.unwrap().code, CLOSE_PROTOCOL);
        let mut huge = vec![0x81, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&m);
        assert_eq!(decode(&huge, 0).1.unwrap().code, CLOSE_PROTOCOL);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic, whatever the pieces.
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600),
                                        step in 0usize..20) {
            let _ = decode(&bytes, step);
        }

        /// Any message, fragmented anyhow and fed in any pieces, comes out
        /// whole and unchanged.
        #[test]
        fn fragmented_messages_come_out_whole(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(0usize..3000, 0..6),
            mask in any::<[u8; 4]>(),
            step in 0usize..50,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut bytes = Vec::new();
            let mut start = 0;
            let mut first = true;
            for &cut in cuts.iter().chain(std::iter::once(&payload.len())) {
                if cut < start { continue; }
                let last = cut == payload.len();
                let op = if first { OP_TEXT } else { OP_CONTINUATION };
                bytes.extend(client_frame(last, op, &payload[start..cut], mask));
                first = false;
                start = cut;
                if last { break; }
            }
            let (got, err) = decode(&bytes, step);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, vec![Got::Message(payload)]);
        }

        /// Mutating one byte of a valid stream never panics.
        #[test]
        fn mutated_frames_never_panic(at in 0usize..40, byte in any::<u8>(), step in 0usize..9) {
            let m = [1, 2, 3, 4];
            let mut bytes = client_frame(true, OP_TEXT, b"{\"type\":\"who\"}", m);
            bytes.extend(client_frame(true, OP_PING, b"x", m));
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = decode(&bytes, step);
        }
    }
}
