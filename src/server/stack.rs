//! A connection's stack of layers below the codec: detection of what the
//! client speaks from its first bytes, then TLS if it chose it, then line
//! framing. Bytes from the socket in, complete lines out (read from
//! `lines`). Socket-free.
//!
//! One port serves every kind of client. The first byte of a TLS
//! ClientHello is 0x16, which no line protocol starts with; anything else
//! is a line protocol (text or JSON, chosen later by the first line).
//! Inside TLS the first plaintext bytes are detected the same way. A
//! client that speaks first is never sent a stray line: the chat greets a
//! connection only once its first bytes show a line protocol, or after a
//! short silence (`WELCOME_DELAY`), so a person at `nc` sees the welcome
//! almost at once.

use std::fmt;
use std::time::Duration;

use crate::server::tls::{TlsConfig, TlsError, TlsLayer};
use crate::wire::lines::LineBuf;
use crate::wire::ws::{self, Decoder, Piece, Violation};

/// How long a connection that has sent nothing is given before it is
/// taken for a person at a line protocol and greeted.
pub const WELCOME_DELAY: Duration = Duration::from_millis(250);

/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection's first byte says it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    Tls,
    Lines,
}

pub fn detect(first: u8) -> Speaks {
    if first == TLS_HANDSHAKE {
        Speaks::Tls
    } else {
        Speaks::Lines
    }
}

/// Where the stack is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing received: TLS or a line protocol.
    Fresh,
    /// TLS chosen; the handshake runs, or no plaintext has come yet.
    Tls,
    /// A line protocol (plain or inside TLS): input goes to the lines.
    Lines,
}

/// What one batch of input did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Arrival {
    /// The line protocol just began: time to greet.
    pub greet: bool,
    /// The batch went into a TLS handshake (it cost handshake work).
    pub handshake: bool,
    /// The peer closed TLS (close_notify): like a FIN for what is above.
    pub peer_closed: bool,
    /// WebSocket: the client sent a close frame (with its code).
    pub ws_closed: Option<Option<u16>>,
}

/// Why a connection's input cannot go on. An alert for the client is
/// queued before this is returned (in the TLS layer, or `NO_TLS_ALERT`).
#[derive(Debug)]
pub enum StackError {
    /// A ClientHello, and no certificate to answer it with.
    NoCertificate,
    Tls(TlsError),
    /// A WebSocket frame broke the protocol: close with its code.
    WebSocket(Violation),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::NoCertificate => f.write_str("TLS ClientHello, but TLS is not set up"),
            StackError::Tls(e) => e.fmt(f),
            StackError::WebSocket(v) => write!(f, "WebSocket: {} (closing {})", v.why, v.code),
        }
    }
}

/// The layers of one connection below the codec.
#[derive(Debug)]
pub struct Stack {
    pub lines: LineBuf,
    /// Present only on TLS connections: a plain one pays a null pointer.
    pub tls: Option<Box<TlsLayer>>,
    phase: Phase,
    /// The peer closed TLS (close_notify): no more input will come.
    peer_closed: bool,
    /// Present only once the connection became a WebSocket: its frames
    /// are decoded into `lines`, one JSON request per message.
    pub ws: Option<Box<WsIn>>,
}

/// A WebSocket's input side.
#[derive(Debug, Default)]
pub struct WsIn {
    decoder: Decoder,
    /// Frames the server owes because of input (pongs), to be queued.
    pub control: Vec<u8>,
    /// The server's close frame is queued: nothing may follow it.
    pub close_sent: bool,
}

/// Hands a WebSocket's decoded pieces to the line framing: a message's
/// bytes become one line (its CR and LF, JSON whitespace, as spaces).
fn deliver_ws(
    ws: &mut WsIn,
    lines: &mut LineBuf,
    closed: &mut Option<Option<u16>>,
    data: &[u8],
) -> Result<(), Violation> {
    let WsIn {
        decoder, control, ..
    } = ws;
    let mut cleaned = [0u8; 1024];
    decoder.push(data, &mut |piece| match piece {
        Piece::Data(bytes) => {
            for chunk in bytes.chunks(cleaned.len()) {
                let out = &mut cleaned[..chunk.len()];
                for (o, &b) in out.iter_mut().zip(chunk) {
                    *o = if b == b'\n' || b == b'\r' { b' ' } else { b };
                }
                lines.push(out);
            }
        }
        Piece::End => lines.push(b"\n"),
        Piece::Ping(payload) => ws::frame(0xA, payload, control),
        Piece::Close(code) => *closed = Some(code),
    })
}

impl Default for Stack {
    fn default() -> Self {
        Stack {
            lines: LineBuf::default(),
            tls: None,
            phase: Phase::Fresh,
            peer_closed: false,
            ws: None,
        }
    }
}

impl Stack {
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A TLS handshake is under way.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Takes bytes read from the socket (used as scratch space by TLS).
    /// `tls` is the certificate to answer a ClientHello with, if any.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        tls: Option<&TlsConfig>,
    ) -> Result<Arrival, StackError> {
        let mut arrival = Arrival::default();
        let Some(&first) = data.first() else {
            return Ok(arrival);
        };
        if self.phase == Phase::Fresh {
            match detect(first) {
                Speaks::Tls => {
                    let cfg = tls.ok_or(StackError::NoCertificate)?;
                    let layer = TlsLayer::new(cfg).map_err(StackError::Tls)?;
                    self.tls = Some(Box::new(layer));
                    self.phase = Phase::Tls;
                }
                Speaks::Lines => {
                    self.phase = Phase::Lines;
                    arrival.greet = true;
                }
            }
        }
        let Some(layer) = self.tls.as_deref_mut() else {
            return match self.ws.as_deref_mut() {
                None => {
                    self.lines.push(data);
                    Ok(arrival)
                }
                Some(ws) => deliver_ws(ws, &mut self.lines, &mut arrival.ws_closed, data)
                    .map(|()| arrival)
                    .map_err(StackError::WebSocket),
            };
        };
        arrival.handshake = layer.is_handshaking();
        let (lines, phase, ws) = (&mut self.lines, &mut self.phase, &mut self.ws);
        let mut violation = None;
        let mut ws_closed = None;
        let received = layer.receive(data, &mut |plain: &[u8]| {
            if plain.is_empty() || violation.is_some() {
                return;
            }
            if *phase == Phase::Tls {
                *phase = Phase::Lines;
                arrival.greet = true;
            }
            match ws.as_deref_mut() {
                None => lines.push(plain),
                Some(ws) => {
                    if let Err(v) = deliver_ws(ws, lines, &mut ws_closed, plain) {
                        violation = Some(v);
                    }
                }
            }
        });
        arrival.ws_closed = ws_closed;
        if let Some(v) = violation {
            return Err(StackError::WebSocket(v));
        }
        match received {
            Ok(r) => {
                arrival.peer_closed = r.peer_closed;
                self.peer_closed |= r.peer_closed;
                Ok(arrival)
            }
            Err(e) => Err(StackError::Tls(e)),
        }
    }

    /// The HTTP upgrade is done: from now on input is WebSocket frames.
    /// Bytes that came after the request head are decoded at once.
    pub fn start_websocket(&mut self) -> Result<Arrival, StackError> {
        let rest = self.lines.take_pending();
        let ws = self.ws.insert(Box::default());
        let mut arrival = Arrival::default();
        deliver_ws(ws, &mut self.lines, &mut arrival.ws_closed, &rest)
            .map(|()| arrival)
            .map_err(StackError::WebSocket)
    }

    /// Whether the connection is a WebSocket.
    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
    }

    /// `WELCOME_DELAY` passed in silence. Returns true if the connection
    /// is now taken for a line protocol and should be greeted; false if it
    /// was greeted already or its TLS handshake is still running.
    pub fn silence(&mut self) -> bool {
        let ready = match self.phase {
            Phase::Fresh => true,
            Phase::Tls => !self.handshaking(),
            Phase::Lines => false,
        };
        if ready {
            self.phase = Phase::Lines;
        }
        ready
    }

    /// The peer closed TLS: its input has ended, whatever the socket says.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Ciphertext waiting inside the TLS layer.
    pub fn tls_pending(&self) -> usize {
        self.tls.as_ref().map_or(0, |t| t.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::records;
    use crate::wire::lines::Line;
    use proptest::prelude::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    use std::sync::{Arc, OnceLock};

    /// One certificate for every test (making one costs a few ms).
    fn identity() -> &'static (TlsConfig, Vec<u8>) {
        static ID: OnceLock<(TlsConfig, Vec<u8>)> = OnceLock::new();
        ID.get_or_init(|| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let cfg = TlsConfig::from_pem(
                made.cert.pem().as_bytes(),
                made.signing_key.serialize_pem().as_bytes(),
            )
            .unwrap();
            (cfg, made.cert.der().to_vec())
        })
    }

    fn client() -> rustls::ClientConnection {
        client_of(rustls::DEFAULT_VERSIONS)
    }

    fn client_of(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConnection {
        let (_, der) = identity();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der.clone())).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crate::crypto::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(Arc::new(config), name).unwrap()
    }

    /// Feeds `bytes` to the stack in pieces of `step` bytes (0: all at
    /// once), as the socket might deliver them.
    fn feed(stack: &mut Stack, bytes: &[u8], step: usize) -> Vec<Arrival> {
        let step = if step == 0 { bytes.len().max(1) } else { step };
        let mut arrivals = Vec::new();
        for piece in bytes.chunks(step) {
            let mut piece = piece.to_vec();
            arrivals.push(stack.receive(&mut piece, Some(&identity().0)).unwrap());
        }
        arrivals
    }

    fn lines_of(stack: &mut Stack) -> Vec<String> {
        let mut got = Vec::new();
        while let Some(Line::Full(l)) = stack.lines.next_line(4096) {
            got.push(String::from_utf8(l.to_vec()).unwrap());
        }
        got
    }

    /// Runs a whole TLS conversation between a rustls client and a stack,
    /// every flight delivered in pieces of `step` bytes. Returns the lines
    /// the stack framed and what the client decrypted.
    fn converse(step: usize, client_says: &[u8], server_says: &[u8]) -> (Vec<String>, Vec<u8>) {
        let mut c = client();
        let mut stack = Stack::default();
        let mut greeted = 0;
        let mut scratch = Vec::new();
        let mut plain_out = Vec::new();
        let mut said = false;
        let mut answered = false;
        for _ in 0..50 {
            // Client to server.
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            if !c.is_handshaking() && !said {
                c.writer().write_all(client_says).unwrap();
                c.write_tls(&mut wire).unwrap();
                said = true;
            }
            for a in feed(&mut stack, &wire, step) {
                greeted += a.greet as usize;
            }
            // Server to client.
            let layer = stack.tls.as_mut().unwrap();
            let mut to_client = Vec::new();
            if !layer.is_handshaking() && said && !answered && greeted == 1 {
                layer
                    .flush([server_says, b""], &mut scratch, &mut to_client)
                    .unwrap()
                    .unwrap();
                answered = true;
            } else {
                layer.write_to(&mut to_client).unwrap();
            }
            let step = if step == 0 {
                to_client.len().max(1)
            } else {
                step
            };
            for piece in to_client.chunks(step) {
                c.read_tls(&mut &piece[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            let mut buf = [0; 4096];
            while let Ok(n) = c.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                plain_out.extend_from_slice(&buf[..n]);
            }
            if answered && plain_out.len() == server_says.len() {
                break;
            }
        }
        assert_eq!(greeted, 1, "greeted once, when plaintext began");
        assert_eq!(stack.phase(), Phase::Lines);
        let layer = stack.tls.as_ref().unwrap();
        assert_eq!(layer.pending(), 0);
        assert_eq!(
            layer.buffered_capacity(),
            0,
            "an idle layer holds no buffer"
        );
        (lines_of(&mut stack), plain_out)
    }

    #[test]
    fn tls_conversation_whole_split_and_byte_at_a_time() {
        for step in [0, 1, 2, 7, 100, 1000] {
            let (lines, got) = converse(step, b"alice\r\nhello all\n", b"* welcome\n<bob> hi\n");
            assert_eq!(lines, ["alice", "hello all"], "step {step}");
            assert_eq!(got, b"* welcome\n<bob> hi\n", "step {step}");
        }
    }

    #[test]
    fn plain_bytes_go_straight_to_the_lines_and_greet_once() {
        for step in [0, 1, 3] {
            let mut stack = Stack::default();
            let arrivals = feed(&mut stack, b"alice\nhi\n", step);
            assert_eq!(arrivals.iter().filter(|a| a.greet).count(), 1);
            assert!(arrivals[0].greet, "the first bytes decide");
            assert!(stack.tls.is_none());
            assert_eq!(lines_of(&mut stack), ["alice", "hi"]);
        }
    }

    #[test]
    fn silence_greets_a_fresh_connection_but_not_a_handshake_in_progress() {
        let mut quiet = Stack::default();
        assert!(quiet.silence());
        assert!(!quiet.silence(), "greeted once");
        // After silence, bytes are lines and greet no more.
        assert!(!feed(&mut quiet, b"x\n", 0)[0].greet);

        let mut c = client();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let mut tls = Stack::default();
        let a = &feed(&mut tls, &hello, 0)[0];
        assert!(a.handshake && !a.greet);
        assert!(tls.handshaking());
        assert!(!tls.silence(), "the handshake is not over");
        assert!(tls.tls_pending() > 0, "the server's flight is queued");
    }

    #[test]
    fn a_client_hello_without_a_certificate_is_refused() {
        let mut c = client();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let mut stack = Stack::default();
        let err = stack.receive(&mut hello, None).unwrap_err();
        assert!(matches!(err, StackError::NoCertificate), "{err}");
    }

    #[test]
    fn garbage_after_0x16_gets_an_alert_and_an_error() {
        for junk in [
            &b"\x16\x03\x01\x00\x05hello"[..],
            &b"\x16GET / HTTP/1.1\r\n\r\n"[..],
            &b"\x16\x03\x03\xff\xff"[..],
        ] {
            let mut stack = Stack::default();
            let mut data = junk.to_vec();
            let got = stack.receive(&mut data, Some(&identity().0));
            // A header that promises more waits for it; anything that
            // cannot be a record fails at once.
            if let Err(e) = got {
                let layer = stack.tls.as_ref().unwrap();
                assert!(layer.pending() > 0, "{e}: an alert is queued");
                let mut out = Vec::new();
                stack.tls.as_mut().unwrap().write_to(&mut out).unwrap();
                assert_eq!(out[0], 0x15, "an alert record");
            }
        }
    }

    /// A client and a stack that have finished a TLS handshake.
    fn handshaken() -> (rustls::ClientConnection, Stack) {
        let mut c = client();
        let mut stack = Stack::default();
        for _ in 0..10 {
            to_server(&mut c, &mut stack, 0);
            to_client(&mut stack, &mut c);
            if !c.is_handshaking() && !stack.handshaking() {
                return (c, stack);
            }
        }
        panic!("no handshake in 10 flights");
    }

    /// What the client has to send, fed to the stack in pieces of `step`.
    fn to_server(c: &mut rustls::ClientConnection, stack: &mut Stack, step: usize) -> Vec<Arrival> {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        feed(stack, &wire, step)
    }

    /// What the stack has queued, handed to the client; the plaintext the
    /// client then reads.
    fn to_client(stack: &mut Stack, c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut back = Vec::new();
        stack.tls.as_mut().unwrap().write_to(&mut back).unwrap();
        c.read_tls(&mut &back[..]).unwrap();
        c.process_new_packets().unwrap();
        let mut plain = Vec::new();
        let _ = c.reader().read_to_end(&mut plain);
        plain
    }

    /// The stack sends `text` as a flush would.
    fn say(stack: &mut Stack, text: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let layer = stack.tls.as_mut().unwrap();
        layer
            .flush([text, b""], &mut Vec::new(), &mut wire)
            .unwrap()
            .unwrap();
        wire
    }

    #[test]
    fn tls12_stays_with_rustls_and_works_both_ways() {
        let mut c = client_of(&[&rustls::version::TLS12]);
        let mut stack = Stack::default();
        for _ in 0..10 {
            to_server(&mut c, &mut stack, 5);
            to_client(&mut stack, &mut c);
            if !c.is_handshaking() && !stack.handshaking() {
                break;
            }
        }
        assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert!(stack.tls.as_mut().unwrap().records().is_none());
        c.writer().write_all(b"bob\nhi\n").unwrap();
        to_server(&mut c, &mut stack, 1);
        assert_eq!(lines_of(&mut stack), ["bob", "hi"]);
        let wire = say(&mut stack, b"<alice> hello bob\n");
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = c.reader().read_to_end(&mut got);
        assert_eq!(got, b"<alice> hello bob\n");
        stack.tls.as_mut().unwrap().close_notify();
        to_client(&mut stack, &mut c);
        let mut buf = [0; 8];
        assert_eq!(c.reader().read(&mut buf).unwrap(), 0, "a clean close");
    }

    #[test]
    fn after_a_tls13_handshake_the_layer_keeps_only_its_own_records() {
        let (mut c, mut stack) = handshaken();
        assert!(stack.tls.as_mut().unwrap().records().is_some());
        c.writer().write_all(b"alice\n").unwrap();
        to_server(&mut c, &mut stack, 3);
        assert_eq!(lines_of(&mut stack), ["alice"]);
        let wire = say(&mut stack, b"* hi alice\n");
        c.read_tls(&mut &wire[..]).unwrap();
        c.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = c.reader().read_to_end(&mut got);
        assert_eq!(got, b"* hi alice\n");
    }

    /// The lengths of the TLS records in `wire`.
    fn records_in(mut wire: &[u8]) -> Vec<usize> {
        let mut lens = Vec::new();
        while wire.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
            lens.push(len);
            wire = &wire[5 + len..];
        }
        assert!(wire.is_empty(), "whole records");
        lens
    }

    #[test]
    fn a_flush_is_one_record_per_16_kib_whatever_its_parts() {
        let (mut c, mut stack) = handshaken();
        let layer = stack.tls.as_mut().unwrap();
        let mut wire = Vec::new();
        let (own, shared) = (b"* own notice\n".repeat(3), b"<a> broadcast\n".repeat(50));
        layer
            .flush([&own, &shared], &mut Vec::new(), &mut wire)
            .unwrap()
            .unwrap();
        assert_eq!(
            records_in(&wire).len(),
            1,
            "own bytes and broadcasts in one record"
        );
        let big = vec![b'x'; 20_000];
        let mut more = Vec::new();
        layer
            .flush([&own, &big], &mut Vec::new(), &mut more)
            .unwrap()
            .unwrap();
        let lens = records_in(&more);
        assert_eq!(lens.len(), 2, "{lens:?}");
        assert_eq!(lens[0], 16384 + 1 + 16, "the first one full");
        wire.extend_from_slice(&more);
        let mut got = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            c.read_tls(&mut rest).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut got);
        }
        let want = [own.clone(), shared, own, big].concat();
        assert!(
            got == want,
            "everything, in order: {} bytes of {}",
            got.len(),
            want.len()
        );
    }

    #[test]
    fn close_notify_from_the_peer_is_seen() {
        let (mut c, mut stack) = handshaken();
        c.send_close_notify();
        let arrivals = to_server(&mut c, &mut stack, 1);
        assert!(arrivals.iter().any(|a| a.peer_closed));
        // Ours goes back encrypted, and the client takes it as a close.
        stack.tls.as_mut().unwrap().close_notify();
        to_client(&mut stack, &mut c);
        let mut buf = [0; 8];
        assert_eq!(c.reader().read(&mut buf).unwrap(), 0, "a clean close");
    }

    #[test]
    fn key_updates_from_the_client_are_followed_and_answered() {
        let (mut c, mut stack) = handshaken();
        for round in 0..3 {
            c.refresh_traffic_keys().unwrap();
            c.writer()
                .write_all(format!("line {round}\n").as_bytes())
                .unwrap();
            to_server(&mut c, &mut stack, 0);
            assert_eq!(lines_of(&mut stack), [format!("line {round}")]);
            // Our answer to a requested update goes out before the data.
            let mut wire = say(&mut stack, format!("back {round}\n").as_bytes());
            let layer = stack.tls.as_mut().unwrap();
            layer.write_to(&mut wire).unwrap();
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
            let mut got = Vec::new();
            let _ = c.reader().read_to_end(&mut got);
            assert_eq!(got, format!("back {round}\n").as_bytes());
        }
    }

    #[test]
    fn our_keys_change_before_their_limit() {
        let (mut c, mut stack) = handshaken();
        stack
            .tls
            .as_mut()
            .unwrap()
            .records()
            .unwrap()
            .rekey_after(3);
        let mut got = Vec::new();
        for i in 0..10 {
            let wire = say(&mut stack, format!("{i}\n").as_bytes());
            c.read_tls(&mut &wire[..]).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut got);
        }
        assert_eq!(got, b"0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n");
        let records = stack.tls.as_mut().unwrap().records().unwrap();
        assert!(records.sealed() < 10, "a new key starts counting again");
    }

    #[test]
    fn a_tampered_record_is_refused_with_an_encrypted_alert() {
        let (mut c, mut stack) = handshaken();
        c.writer().write_all(b"hello\n").unwrap();
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let err = stack.receive(&mut wire, Some(&identity().0)).unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
        assert!(stack.lines.is_empty(), "nothing of it reached the lines");
        let mut back = Vec::new();
        stack.tls.as_mut().unwrap().write_to(&mut back).unwrap();
        c.read_tls(&mut &back[..]).unwrap();
        let alert = c.process_new_packets().unwrap_err();
        assert!(alert.to_string().contains("BadRecordMac"), "{alert}");
    }

    #[test]
    fn a_flood_of_key_updates_is_refused() {
        let (mut c, mut stack) = handshaken();
        let mut refused = None;
        for n in 1..=records::MAX_IDLE_RECORDS + 1 {
            c.refresh_traffic_keys().unwrap();
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).unwrap();
            }
            if let Err(e) = stack.receive(&mut wire, Some(&identity().0)) {
                refused = Some((n, e.to_string()));
                break;
            }
            to_client(&mut stack, &mut c);
        }
        let (n, why) = refused.expect("refused at some point");
        assert_eq!(n, records::MAX_IDLE_RECORDS + 1);
        assert!(why.contains("too many records without data"), "{why}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            first in prop::sample::select(vec![0x16u8, b'a', b'{', 0, 0xff]),
            rest in prop::collection::vec(any::<u8>(), 0..600),
            step in 1usize..64,
        ) {
            let mut bytes = vec![first];
            bytes.extend_from_slice(&rest);
            let mut stack = Stack::default();
            for piece in bytes.chunks(step) {
                let mut piece = piece.to_vec();
                if stack.receive(&mut piece, Some(&identity().0)).is_err() {
                    break;
                }
            }
            while stack.lines.next_line(64).is_some() {}
        }

        #[test]
        fn random_bytes_after_a_handshake_never_panic(
            records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6),
            real_header in any::<bool>(),
        ) {
            let (_c, mut stack) = handshaken();
            for mut bytes in records {
                if real_header && bytes.len() >= 5 {
                    // Past the header check, into decryption.
                    let len = (bytes.len() - 5) as u16;
                    bytes[..5].copy_from_slice(&[0x17, 3, 3, (len >> 8) as u8, len as u8]);
                }
                if stack.receive(&mut bytes, Some(&identity().0)).is_err() {
                    break;
                }
            }
            let layer = stack.tls.as_mut().unwrap();
            let _ = layer.flush([b"x\n", b""], &mut Vec::new(), &mut Vec::new());
            layer.close_notify();
        }
    }
}
