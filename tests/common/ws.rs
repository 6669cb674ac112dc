//! A WebSocket client for the tests, as small as RFC 6455 allows: the
//! opening handshake over a plain socket, masked frames out, server
//! frames in. Every read has the socket's timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use super::TIMEOUT;

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Close(Option<u16>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Other(u8, Vec<u8>),
}

pub struct Ws {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// The answer to an HTTP request: status, head, body (read to EOF).
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).expect("send the request");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head[9..12].parse().expect("a status");
    (status, head, all[end + 4..].to_vec())
}

impl Ws {
    /// Opens `/ws` on `stream` with `extra` header lines (each ending in
    /// CRLF); returns the status and head if it did not switch.
    pub fn open_on(stream: TcpStream, extra: &str) -> Result<Ws, (u16, String)> {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
            stream.peer_addr().unwrap()
        );
        writer.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("the answer's head");
            if line.is_empty() || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if status != 101 {
            return Err((status, head));
        }
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        Ok(Ws { reader, writer })
    }

    #[track_caller]
    pub fn open(addr: SocketAddr) -> Ws {
        let stream = TcpStream::connect(addr).expect("connect");
        Ws::open_on(stream, "").unwrap_or_else(|(s, h)| panic!("no upgrade: {s} {h}"))
    }

    /// Sends one frame, masked, as a client must.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&frame(fin, opcode, payload, Some([0x12, 0x34, 0x56, 0x78])));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 1, text.as_bytes());
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    /// The next frame from the server.
    #[track_caller]
    pub fn frame(&mut self) -> Frame {
        let mut first = [0u8; 1];
        self.reader.read_exact(&mut first).expect("a frame header");
        self.frame_after(first[0])
    }

    /// The rest of a frame whose first byte was `b0`.
    #[track_caller]
    fn frame_after(&mut self, b0: u8) -> Frame {
        let mut second = [0u8; 1];
        self.reader.read_exact(&mut second).expect("a frame header");
        let h = [b0, second[0]];
        assert_eq!(h[0] & 0x80, 0x80, "server frames are unfragmented");
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.reader.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.reader.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.reader
            .read_exact(&mut payload)
            .expect("a frame's payload");
        match h[0] & 0x0F {
            1 => Frame::Text(String::from_utf8(payload).expect("UTF-8 text")),
            8 => Frame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            9 => Frame::Ping(payload),
            10 => Frame::Pong(payload),
            op => Frame::Other(op, payload),
        }
    }

    /// The next frame if one comes within `limit` (the socket's usual
    /// timeout is set back after).
    pub fn frame_within(&mut self, limit: std::time::Duration) -> Option<Frame> {
        let socket = self.reader.get_ref();
        socket.set_read_timeout(Some(limit)).unwrap();
        let mut first = [0u8; 1];
        let got = self.reader.read_exact(&mut first).is_ok();
        self.reader
            .get_ref()
            .set_read_timeout(Some(TIMEOUT))
            .unwrap();
        if !got {
            return None;
        }
        Some(self.frame_after(first[0]))
    }

    /// The next text frame as JSON (pings are skipped).
    #[track_caller]
    pub fn recv(&mut self) -> Value {
        loop {
            match self.frame() {
                Frame::Text(t) => {
                    assert!(!t.ends_with('\n'), "one object per frame, no LF: {t:?}");
                    return serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("not JSON: {t:?} ({e})"));
                }
                Frame::Ping(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The server closes: a close frame with `code`, then EOF.
    #[track_caller]
    pub fn expect_close(&mut self, code: u16) {
        loop {
            match self.frame() {
                Frame::Close(c) => {
                    assert_eq!(c, Some(code), "close code");
                    break;
                }
                Frame::Text(_) | Frame::Ping(_) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "bytes after the close frame: {rest:?}");
    }
}

/// A client frame (`mask` None: unmasked, which a server must refuse).
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(bit | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        out.push(bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(bit | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}
