//! What the load generator says and listens for, per protocol: the line
//! that logs a connection in and its answer, a published message carrying
//! a sequence number and a send time, and telling a delivery apart from
//! everything else a server sends. Bytes only, no sockets.

use std::fmt;

/// Which server the load generator talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// chatd in text mode: subscribers and the publisher are users in one
    /// room; a delivery is the line `<pub> TEXT`.
    Chat,
    /// Redis pub/sub (RESP2): subscribers SUBSCRIBE to one channel, the
    /// publisher PUBLISHes to it and is answered `:N`.
    Redis,
    /// chatd with JSON subscribers: each connects with a JSON `connect`, and
    /// a delivery is a `message` object. The publisher stays a text user
    /// sending the same lines as in `Chat`, so the two compare the same
    /// messages; each JSON delivery is longer on the wire.
    ChatJson,
    /// chatd with WebSocket subscribers: each upgrades `/ws` and connects
    /// in JSON; a delivery is a text frame holding a `message` object. The
    /// publisher is a text user, as for `ChatJson`.
    ChatWs,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Chat => "chat",
            Proto::Redis => "redis",
            Proto::ChatJson => "chat-json",
            Proto::ChatWs => "chat-ws",
        })
    }
}

/// The publisher's name in chat mode.
pub const PUBLISHER: &str = "pub";
/// The Redis channel everyone uses.
pub const CHANNEL: &str = "bench";
/// First byte of every published text, so a delivery cannot be mistaken for
/// a notice or a RESP header.
const MARK: u8 = b'~';
const SEQ_DIGITS: usize = 10;
const TIME_DIGITS: usize = 12;
/// The shortest text that can carry a stamp: the mark, a sequence number
/// (up to 2^40) and a send time in nanoseconds (up to 2^48, three days).
pub const STAMP_LEN: usize = 1 + SEQ_DIGITS + TIME_DIGITS;
/// What fills a text out to the size asked for.
const PAD: u8 = b'.';

/// A WebSocket subscriber's upgrade request.
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Whether a connection's first bytes ask for a WebSocket.
pub fn is_websocket_hello(hello: &[u8]) -> bool {
    hello.starts_with(b"GET /ws ")
}

/// A WebSocket subscriber's input as lines: each line of the answer's
/// head, then each server frame's payload. Frames wholly inside one read
/// are handed out where they lie; only one split across reads is copied.
#[derive(Debug, Default)]
pub struct Unframe {
    in_frames: bool,
    /// Bytes of a head line or a frame not complete yet.
    partial: Vec<u8>,
}

/// The length of the frame at the start of `b` (header and payload) and
/// where its payload starts, once its header is all there.
fn frame_span(b: &[u8]) -> Option<(usize, usize)> {
    let (start, len) = match *b.get(1)? & 0x7F {
        126 => (4, u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)),
        n => (2, u64::from(n)),
    };
    Some((start + usize::try_from(len).ok()?, start))
}

impl Unframe {
    pub fn feed(&mut self, data: &[u8], f: &mut impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            let used = self.take(data, f);
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut held = std::mem::take(&mut self.partial);
            held.extend_from_slice(data);
            let used = self.take(&held, f);
            held.drain(..used);
            self.partial = held;
        }
    }

    /// Hands out what is complete in `b`; returns how much it used.
    fn take(&mut self, b: &[u8], f: &mut impl FnMut(&[u8])) -> usize {
        let mut at = 0;
        while !self.in_frames {
            let Some(end) = memchr::memchr(b'\n', &b[at..]) else {
                return at;
            };
            let line = &b[at..at + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            at += end + 1;
            if line.is_empty() {
                self.in_frames = true;
            } else {
                f(line);
            }
        }
        while let Some((len, start)) = frame_span(&b[at..]) {
            if b.len() - at < len {
                break;
            }
            f(&b[at + start..at + len]);
            at += len;
        }
        at
    }
}

/// How a login ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginReply {
    Accepted,
    Refused(String),
}

fn resp_bulk(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(s.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

fn resp_command(out: &mut Vec<u8>, words: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(words.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for w in words {
        resp_bulk(out, w);
    }
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// Appends `v` as exactly `n` lower-case hex digits (the low bits of `v`).
fn put_hex(out: &mut Vec<u8>, v: u64, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..n).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xf) as usize]);
    }
}

fn hex(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in bytes {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

impl Proto {
    /// What a subscriber sends to join: its name, or SUBSCRIBE.
    pub fn subscribe(self, name: &str, out: &mut Vec<u8>) {
        match self {
            Proto::Chat => {
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
            }
            Proto::Redis => resp_command(out, &[b"SUBSCRIBE", CHANNEL.as_bytes()]),
            Proto::ChatJson => {
                out.extend_from_slice(br#"{"type":"connect","payload":{"name":""#);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\"}}\n");
            }
            Proto::ChatWs => {
                out.extend_from_slice(WS_UPGRADE);
                let mut connect = Vec::new();
                Proto::ChatJson.subscribe(name, &mut connect);
                connect.pop();
                // Masked, as a client must; a zero key leaves it as is.
                out.push(0x81);
                out.push(0x80 | connect.len() as u8);
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(&connect);
            }
        }
    }

    /// What the publisher sends to log in: its name, or a PING that shows
    /// the connection works.
    pub fn hello_publisher(self, out: &mut Vec<u8>) {
        match self {
            Proto::Chat | Proto::ChatJson | Proto::ChatWs => Proto::Chat.subscribe(PUBLISHER, out),
            Proto::Redis => resp_command(out, &[b"PING"]),
        }
    }

    /// What an idle connection sends to take a name: the name, or CLIENT
    /// SETNAME.
    pub fn name_only(self, name: &str, out: &mut Vec<u8>) {
        match self {
            Proto::Chat | Proto::ChatJson | Proto::ChatWs => self.subscribe(name, out),
            Proto::Redis => resp_command(out, &[b"CLIENT", b"SETNAME", name.as_bytes()]),
        }
    }

    /// Whether `line` (terminator removed) ends a login; `None` while it is
    /// some other line.
    pub fn login_reply(self, line: &[u8]) -> Option<LoginReply> {
        let refused = || LoginReply::Refused(String::from_utf8_lossy(line).into_owned());
        match self {
            // The JSON subscribers' publisher is a text user.
            Proto::Chat | Proto::ChatJson | Proto::ChatWs if line.starts_with(b"* you joined") => {
                Some(LoginReply::Accepted)
            }
            Proto::Chat | Proto::ChatJson | Proto::ChatWs if line.starts_with(b"! ") => {
                Some(refused())
            }
            Proto::ChatJson | Proto::ChatWs if line.starts_with(br#"{"type":"connect_ack""#) => {
                Some(LoginReply::Accepted)
            }
            Proto::ChatJson | Proto::ChatWs if line.starts_with(br#"{"type":"error""#) => {
                Some(refused())
            }
            Proto::ChatWs
                if line.starts_with(b"HTTP/1.1 ") && !line.starts_with(b"HTTP/1.1 101") =>
            {
                Some(refused())
            }
            // The subscribe reply ends in the subscription count, PING and
            // SETNAME are answered with a simple string.
            Proto::Redis if line.starts_with(b":") || line.starts_with(b"+") => {
                Some(LoginReply::Accepted)
            }
            Proto::Redis if line.starts_with(b"-") => Some(refused()),
            _ => None,
        }
    }

    /// Bytes of published text that make one delivery `size` bytes on the
    /// wire, framing included.
    pub fn text_len(self, size: usize) -> Result<usize, String> {
        let text = match self {
            // <pub> TEXT LF; JSON subscribers get the same text, framed
            // longer.
            Proto::Chat | Proto::ChatJson | Proto::ChatWs => size.checked_sub(PUBLISHER.len() + 4),
            // *3 $7 message $N channel $N TEXT, each with CRLF
            Proto::Redis => {
                let fixed = 4 + 13 + (1 + digits(CHANNEL.len()) + 2 + CHANNEL.len() + 2);
                (1..=size)
                    .rev()
                    .find(|&t| fixed + 1 + digits(t) + 2 + t + 2 <= size)
                    .filter(|&t| fixed + 1 + digits(t) + 2 + t + 2 == size)
            }
        };
        match text {
            Some(t) if t >= STAMP_LEN => Ok(t),
            _ => Err(format!(
                "--size {size} is too small for a stamped {self} message"
            )),
        }
    }

    /// Appends one publish of a `text_len`-byte text carrying `seq` and the
    /// send time `sent_ns`.
    pub fn publish(self, seq: u64, sent_ns: u64, text_len: usize, out: &mut Vec<u8>) {
        let stamp = |out: &mut Vec<u8>| {
            out.push(MARK);
            put_hex(out, seq, SEQ_DIGITS);
            put_hex(out, sent_ns, TIME_DIGITS);
            out.resize(out.len() + text_len - STAMP_LEN, PAD);
        };
        match self {
            Proto::Chat | Proto::ChatJson | Proto::ChatWs => {
                stamp(out);
                out.push(b'\n');
            }
            Proto::Redis => {
                out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
                resp_bulk(out, CHANNEL.as_bytes());
                out.push(b'$');
                out.extend_from_slice(text_len.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                stamp(out);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// The sequence number and send time in `line` (terminator removed) if
    /// it is a delivery of a published message.
    pub fn delivery(self, line: &[u8]) -> Option<(u64, u64)> {
        let text = match self {
            Proto::Chat => line.strip_prefix(b"<pub> ")?,
            // The stamp is plain ASCII, so it appears in the JSON text as is.
            // Everyone is in the lobby, so the text starts at a fixed place.
            Proto::ChatJson | Proto::ChatWs => line.strip_prefix(
                br#"{"type":"message","payload":{"sender":"pub","room":"lobby","text":""#,
            )?,
            // The text's own line of the RESP message; the headers before
            // it never start with the mark.
            Proto::Redis => line,
        };
        if text.len() < STAMP_LEN || text[0] != MARK {
            return None;
        }
        let seq = hex(&text[1..1 + SEQ_DIGITS])?;
        let sent = hex(&text[1 + SEQ_DIGITS..STAMP_LEN])?;
        Some((seq, sent))
    }

    /// The subscriber count a Redis PUBLISH reply gives, for the publisher.
    pub fn publish_reply(self, line: &[u8]) -> Option<u64> {
        match self {
            Proto::Chat | Proto::ChatJson | Proto::ChatWs => None,
            Proto::Redis => std::str::from_utf8(line.strip_prefix(b":")?)
                .ok()?
                .trim_end()
                .parse()
                .ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect()
    }

    #[test]
    fn chat_delivery_is_the_size_asked_and_round_trips() {
        let t = Proto::Chat.text_len(64).unwrap();
        let mut sent = Vec::new();
        Proto::Chat.publish(42, 123_456_789, t, &mut sent);
        assert_eq!(sent.len(), t + 1);
        // The server prefixes the sender's name.
        let delivered = [b"<pub> ".as_slice(), &sent].concat();
        assert_eq!(delivered.len(), 64);
        let line = &delivered[..delivered.len() - 1];
        assert_eq!(Proto::Chat.delivery(line), Some((42, 123_456_789)));
        assert_eq!(Proto::Chat.delivery(b"* s1 has joined #lobby"), None);
        assert_eq!(Proto::Chat.delivery(b"<bob> ~hello"), None);
    }

    #[test]
    fn redis_delivery_is_the_size_asked_and_round_trips() {
        let t = Proto::Redis.text_len(64).unwrap();
        let mut publish = Vec::new();
        Proto::Redis.publish(7, 99, t, &mut publish);
        let words = lines(&publish);
        assert_eq!(
            words[..5],
            [b"*3".as_slice(), b"$7", b"PUBLISH", b"$5", b"bench"]
        );
        let text = words[6];
        // What a subscriber receives for it.
        let mut msg = Vec::new();
        resp_command(&mut msg, &[b"message", CHANNEL.as_bytes(), text]);
        assert_eq!(msg.len(), 64);
        let got: Vec<_> = lines(&msg)
            .into_iter()
            .filter_map(|l| Proto::Redis.delivery(l))
            .collect();
        assert_eq!(got, [(7, 99)]);
    }

    #[test]
    fn json_subscribers_log_in_and_read_the_text_publisher() {
        let mut hello = Vec::new();
        Proto::ChatJson.subscribe("s0", &mut hello);
        assert_eq!(
            hello,
            b"{\"type\":\"connect\",\"payload\":{\"name\":\"s0\"}}\n"
        );
        let ack = br#"{"type":"connect_ack","payload":{"message":"Connected to the room.","name":"s0","room":"lobby","version":1}}"#;
        assert_eq!(Proto::ChatJson.login_reply(ack), Some(LoginReply::Accepted));
        assert_eq!(
            Proto::ChatJson.login_reply(b"* you joined #lobby as pub (2 users here)"),
            Some(LoginReply::Accepted)
        );
        let t = Proto::ChatJson.text_len(64).unwrap();
        let mut sent = Vec::new();
        Proto::ChatJson.publish(42, 123_456_789, t, &mut sent);
        let text = std::str::from_utf8(&sent[..sent.len() - 1]).unwrap();
        let line = format!(
            r#"{{"type":"message","payload":{{"sender":"pub","room":"lobby","text":"{text}","ts":"2026-11-21T14:02:07Z"}}}}"#
        );
        assert_eq!(
            Proto::ChatJson.delivery(line.as_bytes()),
            Some((42, 123_456_789))
        );
        let joined = br#"{"type":"notification","payload":{"message":"s1 has joined the room.","event":"join","name":"s1","room":"lobby"}}"#;
        assert_eq!(Proto::ChatJson.delivery(joined), None);
    }

    #[test]
    fn sizes_too_small_are_refused() {
        assert!(Proto::Chat.text_len(10).is_err());
        assert!(Proto::Redis.text_len(40).is_err());
        assert!(Proto::Redis.text_len(200).is_ok());
    }

    #[test]
    fn logins_and_replies() {
        assert_eq!(
            Proto::Chat.login_reply(b"* you joined #lobby as s0 (1 user here)"),
            Some(LoginReply::Accepted)
        );
        assert_eq!(Proto::Chat.login_reply(b"* welcome to chatd"), None);
        assert!(matches!(
            Proto::Chat.login_reply(b"! name taken: s0"),
            Some(LoginReply::Refused(_))
        ));
        let mut sub = Vec::new();
        Proto::Redis.subscribe("s0", &mut sub);
        assert_eq!(sub, b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n");
        assert_eq!(Proto::Redis.login_reply(b"subscribe"), None);
        assert_eq!(Proto::Redis.login_reply(b":1"), Some(LoginReply::Accepted));
        assert_eq!(Proto::Redis.publish_reply(b":1000"), Some(1000));
        assert_eq!(Proto::Chat.publish_reply(b":1000"), None);
    }

    #[test]
    fn websocket_frames_become_lines_however_they_are_read() {
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let payloads = [vec![b'a'; 3], vec![b'b'; 200], vec![b'c'; 70_000], vec![]];
        for p in &payloads {
            bytes.push(0x81);
            if p.len() < 126 {
                bytes.push(p.len() as u8);
            } else if p.len() <= 0xFFFF {
                bytes.push(126);
                bytes.extend_from_slice(&(p.len() as u16).to_be_bytes());
            } else {
                bytes.push(127);
                bytes.extend_from_slice(&(p.len() as u64).to_be_bytes());
            }
            bytes.extend_from_slice(p);
        }
        for step in [1, 2, 7, 1000, bytes.len()] {
            let mut u = Unframe::default();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for piece in bytes.chunks(step) {
                u.feed(piece, &mut |l| got.push(l.to_vec()));
            }
            assert_eq!(got[0], b"HTTP/1.1 101 Switching Protocols", "step {step}");
            assert_eq!(got[1], b"Upgrade: websocket");
            assert_eq!(&got[2..], &payloads[..], "step {step}");
        }
        let mut hello = Vec::new();
        Proto::ChatWs.subscribe("s1", &mut hello);
        assert!(is_websocket_hello(&hello));
        assert!(hello.ends_with(br#"{"type":"connect","payload":{"name":"s1"}}"#));
    }
}
