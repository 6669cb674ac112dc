//! HTTP and WebSocket on the chat's port, over real TCP: the routes and
//! their headers, 404, 431 and a slow head; the WebSocket handshake, JSON
//! both ways with a text user in the same room, every close code of the
//! contract, the Origin check, pings (PROTOCOL.md, "HTTP, WebSocket and
//! the web client").

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use common::ws::{Frame, Ws, frame, http};
use common::{Server, TIMEOUT};

#[test]
fn routes_headers_and_errors() {
    let server = Server::start(&[]);
    let (status, head, body) = http(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'self'; frame-ancestors 'none'"),
        "{head}"
    );
    assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    assert!(head.contains("ETag: \""), "{head}");
    assert_eq!(
        head.lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|n| n.parse::<usize>().unwrap()),
        Some(body.len())
    );
    for (path, kind) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let (status, head, _) = http(server.addr, &format!("GET {path} HTTP/1.1\r\n\r\n"));
        assert_eq!(status, 200, "{path}");
        assert!(head.contains(kind), "{head}");
    }
    let (status, _, body) = http(server.addr, "GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(http(server.addr, "GET /missing HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(server.addr, "POST / HTTP/1.1\r\n\r\n").0, 404);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "y".repeat(9000));
    assert_eq!(http(server.addr, &big).0, 431);
    let many: String = (0..150)
        .map(|i| format!("X-{i}: {}\r\n", "z".repeat(50)))
        .collect();
    assert_eq!(
        http(server.addr, &format!("GET / HTTP/1.1\r\n{many}\r\n")).0,
        431
    );
    // A chat user on the same port is unaffected.
    let mut alice = server.login("alice");
    alice.send("/who");
    alice.expect("* users in #lobby: 1");
}

#[test]
fn a_slow_request_head_is_closed_at_the_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    use std::io::Read;
    let n = s.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "nothing is answered: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[test]
fn a_websocket_user_and_a_text_user_share_a_room() {
    let server = Server::start(&[]);
    let mut bob = server.login("bob");
    let mut ws = Ws::open(server.addr);
    ws.send_json(&json!({"type": "connect", "payload": {"name": "alice"}, "id": 1}));
    let ack = ws.recv();
    assert_eq!(ack["type"], "connect_ack", "{ack}");
    assert_eq!(ack["id"], 1, "{ack}");
    assert_eq!(ws.recv()["type"], "history");
    bob.expect("* alice has joined #lobby");
    ws.send_json(&json!({"type": "message", "payload": {"text": "hi bob"}}));
    bob.expect("<alice> hi bob");
    bob.send("hello alice");
    let msg = ws.recv();
    assert_eq!(
        (
            &msg["type"],
            &msg["payload"]["sender"],
            &msg["payload"]["text"]
        ),
        (&json!("message"), &json!("bob"), &json!("hello alice")),
        "{msg}"
    );
    // A request fragmented over three frames, and a ping between them.
    let req = json!({"type": "who", "id": "w"}).to_string();
    let (a, rest) = req.split_at(5);
    let (b, c) = rest.split_at(5);
    ws.send_frame(false, 1, a.as_bytes());
    ws.send_frame(false, 0, b.as_bytes());
    ws.send_frame(true, 9, b"are you there");
    ws.send_frame(true, 0, c.as_bytes());
    assert_eq!(ws.frame(), Frame::Pong(b"are you there".to_vec()));
    let who = ws.recv();
    assert_eq!((&who["type"], &who["id"]), (&json!("who"), &json!("w")));
    // A message over --max-line is answered and dropped; the rest goes on.
    let long = json!({"type": "message", "payload": {"text": "x".repeat(5000)}, "id": 7});
    ws.send_json(&long);
    let err = ws.recv();
    assert_eq!(err["payload"]["code"], "line_too_long", "{err}");
    ws.send_json(&json!({"type": "message", "payload": {"text": "still here"}}));
    bob.expect("<alice> still here");
    // Closed without quit: a disconnect, and the close is answered.
    ws.send_frame(true, 8, &1000u16.to_be_bytes());
    ws.expect_close(1000);
    bob.expect("* alice has disconnected (connection closed)");
}

#[test]
fn quit_and_shutdown_close_the_websocket_with_their_codes() {
    let server = Server::start(&[]);
    let mut ws = Ws::open(server.addr);
    ws.send_json(&json!({"type": "connect", "payload": {"name": "alice"}}));
    ws.recv();
    ws.recv();
    ws.send_json(&json!({"type": "quit"}));
    assert_eq!(ws.recv()["payload"]["event"], "quit");
    ws.expect_close(1000);

    let mut ws = Ws::open(server.addr);
    ws.send_json(&json!({"type": "connect", "payload": {"name": "carol"}}));
    ws.recv();
    ws.recv();
    let mut bob = server.login("bob");
    common::stop(server, vec![]);
    ws.expect_close(1001);
    bob.read_until(|l| l == "* server is shutting down");
}

#[test]
fn protocol_violations_close_with_their_codes() {
    let server = Server::start(&[]);
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("unmasked", frame(true, 1, b"{}", None), 1002),
        ("binary", frame(true, 2, b"\x00", Some([1, 2, 3, 4])), 1003),
        (
            "not UTF-8",
            frame(true, 1, b"\xff\xfe", Some([1, 2, 3, 4])),
            1007,
        ),
        ("bad opcode", frame(true, 5, b"", Some([1, 2, 3, 4])), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut ws = Ws::open(server.addr);
        ws.send_raw(&bytes);
        match ws.frame() {
            Frame::Close(c) => assert_eq!(c, Some(code), "{what}"),
            other => panic!("{what}: expected a close frame, got {other:?}"),
        }
    }
}

#[test]
fn the_origin_is_checked() {
    let server = Server::start(&["--web-origin", "https://app.example"]);
    let open = |origin: &str| {
        let s = TcpStream::connect(server.addr).unwrap();
        Ws::open_on(s, &format!("Origin: {origin}\r\n"))
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert_eq!(open("http://evil.example"), Err(403));
    assert_eq!(open("https://app.example"), Ok(()));
    assert_eq!(open(&format!("http://{}", server.addr)), Ok(()));
    assert_eq!(open(&format!("https://{}", server.addr)), Err(403));
    let (status, _, _) = http(server.addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 426);
}

#[test]
fn https_and_wss_on_the_same_port() {
    let db = common::TempDb::new("web-tls");
    let server = Server::start(&["--tls-self-signed", "--db", db.as_str()]);
    let mut https = server.connect_tls(&common::Trust::Any);
    https.send("GET /healthz HTTP/1.1\r");
    https.send("Host: localhost\r");
    https.send("\r");
    https.expect("HTTP/1.1 200 OK\r");
    // A WebSocket inside TLS: its frames read as one JSON object each.
    let mut wss = server.connect_tls(&common::Trust::Any);
    let origin = format!("https://{}", server.addr);
    wss.send_raw(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    wss.expect("HTTP/1.1 101 Switching Protocols\r");
    wss.read_until(|l| l == "\r");
    let connect = json!({"type": "connect", "payload": {"name": "tessa"}}).to_string();
    wss.send_raw(&frame(true, 1, connect.as_bytes(), Some([9, 9, 9, 9])));
    // The connect_ack's frame: a text frame header, then the object.
    let mut header = [0u8; 2];
    wss.read_bytes(&mut header);
    assert_eq!(header[0], 0x81);
    let len = match header[1] & 0x7F {
        126 => {
            let mut n = [0u8; 2];
            wss.read_bytes(&mut n);
            usize::from(u16::from_be_bytes(n))
        }
        n => usize::from(n),
    };
    let mut body = vec![0u8; len];
    wss.read_bytes(&mut body);
    let ack: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ack["type"], "connect_ack", "{ack}");
}

#[test]
fn an_idle_websocket_is_pinged_within_30_seconds() {
    let server = Server::start(&[]);
    let mut ws = Ws::open(server.addr);
    ws.send_json(&json!({"type": "connect", "payload": {"name": "idle"}}));
    assert_eq!(ws.recv()["type"], "connect_ack");
    assert_eq!(ws.recv()["type"], "history");
    // Nothing is sent; the server's ping comes on its own.
    let started = Instant::now();
    loop {
        match ws.frame_within(Duration::from_secs(31)) {
            Some(Frame::Ping(_)) => break,
            Some(_) => {}
            None => panic!("no ping within 31 s"),
        }
    }
    assert!(started.elapsed() <= Duration::from_secs(30));
    // A pong is accepted and the connection goes on.
    ws.send_frame(true, 10, b"");
    ws.send_json(&json!({"type": "who", "id": 1}));
    assert_eq!(ws.recv()["type"], "who");
}

#[test]
fn an_unfinished_first_line_is_timed_out_as_a_name_or_a_head() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    // A person typing: greeted after the welcome delay, then timed out.
    let mut typing = server.connect();
    typing.send_raw(b"x");
    typing.expect(common::WELCOME);
    typing.expect("! no name chosen within 1 s");
    typing.expect_eof();
    // What may be a request line: closed at the timeout, nothing said.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET /slo").unwrap();
    let mut buf = Vec::new();
    use std::io::Read;
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
}

#[test]
fn requests_sent_just_before_the_close_frame_are_handled() {
    let server = Server::start(&[]);
    let mut bob = server.login("bob");
    let mut ws = Ws::open(server.addr);
    ws.send_json(&json!({"type": "connect", "payload": {"name": "alice"}}));
    ws.recv();
    ws.recv();
    bob.expect("* alice has joined #lobby");
    let mut both = frame(
        true,
        1,
        json!({"type": "message", "payload": {"text": "bye all"}})
            .to_string()
            .as_bytes(),
        Some([1, 2, 3, 4]),
    );
    both.extend(frame(true, 8, &1000u16.to_be_bytes(), Some([1, 2, 3, 4])));
    ws.send_raw(&both);
    bob.expect("<alice> bye all");
    ws.expect_close(1000);
    bob.expect("* alice has disconnected (connection closed)");
}
