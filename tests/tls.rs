//! TLS on the chat port over real TCP, against the real `chatd`: TLS and
//! plain users of both modes in one room, the self-signed certificate and
//! `chat-client --tls-pin`, `--require-tls` with `--allow-plain`, SIGHUP
//! certificate reloads, a TLS reader that stops reading, bytes that are
//! not TLS after a 0x16, handshakes left unfinished, and who speaks first.
//! The contract is PROTOCOL.md, "TLS (the security layer)". Servers listen
//! on 127.0.0.1 only; 127.0.0.2 plays a host outside `--allow-plain`.

mod common;

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use common::proc::Proc;
use common::{Client, Dial, Server, TIMEOUT, TempDb, TempPath, Trust, WELCOME, joined, tls_client};

/// How long the server waits in silence before greeting (PROTOCOL.md).
const WELCOME_DELAY: Duration = Duration::from_millis(250);

/// What a refused plain connection is told, whatever it sent.
const REQUIRES_TLS: &str = "! this server requires TLS";

/// A certificate for localhost and 127.0.0.1, with its key, made here
/// with rcgen (not by chatd) so the test knows what chatd should present.
struct Cert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Cert {
    fn new() -> Cert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("rcgen makes a certificate");
        Cert {
            der: made.cert.der().clone(),
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        }
    }

    fn fingerprint(&self) -> String {
        chatd::crypto::fingerprint(&self.der)
    }

    /// Trust in this certificate alone, verified as a real client would.
    fn trust(&self) -> Trust {
        Trust::Root(self.der.clone())
    }
}

/// The files `--tls-cert` and `--tls-key` name, removed when dropped.
struct CertFiles {
    cert: TempPath,
    key: TempPath,
}

impl CertFiles {
    fn new(tag: &str) -> CertFiles {
        CertFiles {
            cert: TempPath::new(&format!("{tag}.cert.pem")),
            key: TempPath::new(&format!("{tag}.key.pem")),
        }
    }

    fn write(&self, cert: &Cert) {
        std::fs::write(&self.key.0, &cert.key_pem).expect("write the key");
        std::fs::write(&self.cert.0, &cert.cert_pem).expect("write the certificate");
    }

    fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.as_str(),
            "--tls-key",
            self.key.as_str(),
        ]
    }
}

/// A chatd serving TLS with a fresh certificate from files, plus `extra`
/// flags. The files are returned to be kept alive (SIGHUP reads them).
fn tls_server(tag: &str, extra: &[&str]) -> (Server, Cert, CertFiles) {
    let cert = Cert::new();
    let files = CertFiles::new(tag);
    files.write(&cert);
    let mut args = files.args().to_vec();
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    (server, cert, files)
}

/// A ClientHello as rustls first sends it, the same bytes a real TLS
/// client would put on the wire.
fn client_hello() -> Vec<u8> {
    let mut conn = tls_client(&Trust::Any);
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("write the ClientHello");
    }
    assert_eq!(hello.first(), Some(&0x16), "a handshake record");
    hello
}

/// `bytes` must be exactly one fatal TLS alert record.
#[track_caller]
fn assert_one_alert(bytes: &[u8]) {
    assert!(
        bytes.len() == 7 && bytes[0] == 0x15 && bytes[3..5] == [0, 2] && bytes[5] == 2,
        "expected one fatal alert record, got {bytes:02x?}"
    );
}

/// JSON mode: connects `c` (welcome not yet read) as `name` to the lobby.
#[track_caller]
fn json_connect(c: &mut Client, name: &str) {
    c.expect(WELCOME);
    common::json::send(c, &json!({"type": "connect", "payload": {"name": name}}));
    common::json::expect(
        c,
        json!({"type": "connect_ack", "payload": {
            "message": "Connected to the room.", "name": name, "room": "lobby", "version": 1,
        }}),
    );
}

fn json_joined(name: &str) -> Value {
    json!({"type": "notification", "payload": {
        "message": format!("{name} has joined the room."),
        "event": "join", "name": name, "room": "lobby",
    }})
}

fn json_direct(sender: &str, text: &str) -> Value {
    json!({"type": "direct", "payload": {"sender": sender, "text": text}})
}

#[test]
fn tls_and_plain_users_of_both_modes_share_a_room_both_ways() {
    let (server, cert, _files) = tls_server("mixed", &[]);
    let trust = cert.trust();

    let mut plain = server.connect();
    plain.choose_name("plain", 1);
    let mut tls = server.connect_tls(&trust);
    assert!(tls.tls_version().is_some());
    tls.choose_name("tls", 2);
    plain.expect("* tls has joined #lobby");

    // A JSON client inside TLS is seen by both text users.
    let mut tjson = server.connect_tls(&trust);
    json_connect(&mut tjson, "tjson");
    plain.expect("* tjson has joined #lobby");
    tls.expect("* tjson has joined #lobby");

    // And a plain JSON client, seen by all three.
    let mut pjson = server.connect();
    json_connect(&mut pjson, "pjson");
    plain.expect("* pjson has joined #lobby");
    tls.expect("* pjson has joined #lobby");
    common::json::expect(&mut tjson, json_joined("pjson"));

    let message = common::json::message;
    tls.send("from tls text");
    plain.expect("<tls> from tls text");
    common::json::expect(&mut tjson, message("tls", "lobby", "from tls text"));
    common::json::expect(&mut pjson, message("tls", "lobby", "from tls text"));

    plain.send("from plain text");
    tls.expect("<plain> from plain text");
    common::json::expect(&mut tjson, message("plain", "lobby", "from plain text"));
    common::json::expect(&mut pjson, message("plain", "lobby", "from plain text"));

    let say = |c: &mut Client, text: &str| {
        common::json::send(c, &json!({"type": "message", "payload": {"text": text}}));
    };
    say(&mut tjson, "from tls json");
    plain.expect("<tjson> from tls json");
    tls.expect("<tjson> from tls json");
    common::json::expect(&mut pjson, message("tjson", "lobby", "from tls json"));

    say(&mut pjson, "from plain json");
    plain.expect("<pjson> from plain json");
    tls.expect("<pjson> from plain json");
    common::json::expect(&mut tjson, message("pjson", "lobby", "from plain json"));

    // Direct messages across the boundary, each way.
    let direct = |c: &mut Client, to: &str, text: &str| {
        common::json::send(
            c,
            &json!({"type": "direct", "payload": {"to": to, "text": text}}),
        );
    };
    tls.send("@plain tls to plain");
    plain.expect("*tls* tls to plain");
    plain.send("/msg tjson plain to tls json");
    common::json::expect(&mut tjson, json_direct("plain", "plain to tls json"));
    direct(&mut tjson, "tls", "tls json to tls");
    tls.expect("*tjson* tls json to tls");
    direct(&mut pjson, "tjson", "plain json to tls json");
    common::json::expect(&mut tjson, json_direct("pjson", "plain json to tls json"));
    tjson.send(r#"{"type":"direct","payload":{"to":"pjson","text":"and back"}}"#);
    common::json::expect(&mut pjson, json_direct("tjson", "and back"));

    // The barrier: a last room message is what everyone gets next, so no
    // direct message went anywhere else.
    plain.send("last");
    tls.expect("<plain> last");
    common::json::expect(&mut tjson, message("plain", "lobby", "last"));
    common::json::expect(&mut pjson, message("plain", "lobby", "last"));
}

/// The fingerprint at the end of a `TLS: ... SHA-256 HEX` log line.
#[track_caller]
fn logged_fingerprint(line: &str) -> String {
    let (_, fp) = line
        .rsplit_once(", SHA-256 ")
        .unwrap_or_else(|| panic!("no fingerprint in {line:?}"));
    assert!(
        fp.len() == 64 && fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not 64 lowercase hex digits: {fp:?}"
    );
    fp.to_string()
}

#[test]
fn a_self_signed_certificate_is_made_once_kept_and_pinned_by_chat_client() {
    let db = TempDb::new("tls-self-signed");
    let args = ["--tls-self-signed", "--db", db.as_str()];
    let cert_path = format!("{}.cert.pem", db.as_str());

    let server = Server::start(&args);
    let made = server.wait_log("TLS: made a self-signed certificate");
    let fp = logged_fingerprint(&made);
    // Log lines begin with a time stamp and a level.
    assert!(
        made.ends_with(&format!(
            " TLS: made a self-signed certificate {cert_path}, SHA-256 {fp}"
        )),
        "{made}"
    );
    // The logged fingerprint is that of the file kept beside the database
    // and of the certificate the server presents.
    let file = CertificateDer::from_pem_file(&cert_path).expect("the kept certificate");
    assert_eq!(chatd::crypto::fingerprint(&file), fp);
    let probe = server.connect_tls(&Trust::Any);
    assert_eq!(probe.peer_fingerprint(), fp);
    drop(probe);

    let port = server.addr.port().to_string();
    let mut bob = server.connect();
    bob.choose_name("bob", 1);
    let mut alice = Proc::spawn(&["--tls-pin", &fp, "127.0.0.1", &port]);
    alice.expect(WELCOME);
    alice.send("alice");
    alice.expect(&joined("alice", 2));
    bob.expect("* alice has joined #lobby");
    alice.send("hello over TLS");
    bob.expect("<alice> hello over TLS");
    bob.send("hello in clear");
    alice.expect("<bob> hello in clear");
    let (status, _, stderr) = alice.wait();
    assert!(status.success(), "chat-client: {status}; {stderr}");
    bob.read_until(|l| l.starts_with("* alice has quit"));
    drop(bob);
    drop(server);

    // The same database: the same certificate, read back, not made again.
    let server = Server::start(&args);
    let kept = server.wait_log("TLS: certificate ");
    assert!(
        kept.ends_with(&format!(" TLS: certificate {cert_path}, SHA-256 {fp}")),
        "{kept}"
    );
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("made a self-signed")),
        "{:#?}",
        server.log()
    );
    // Verified as a root too, not only by its fingerprint.
    let again = server.connect_tls(&Trust::Root(file));
    assert_eq!(again.peer_fingerprint(), fp);

    let port = server.addr.port().to_string();
    let wrong = "0".repeat(64);
    let mut mallory = Proc::spawn(&["--tls-pin", &wrong, "127.0.0.1", &port]);
    // It may have failed and gone already; then the write fails, fine.
    mallory.try_send("mallory");
    let (status, _, stderr) = mallory.wait();
    assert_eq!(status.code(), Some(1), "a wrong pin: {stderr}");
    assert!(
        stderr.contains(&fp),
        "the real fingerprint is shown: {stderr}"
    );
}

#[test]
fn require_tls_refuses_plain_text_from_outside_allow_plain_whatever_it_sends() {
    let (server, cert, _files) = tls_server(
        "require",
        &["--require-tls", "--allow-plain", "127.0.0.1/32"],
    );
    let outside = Dial::from("127.0.0.2");
    let firsts: [Option<&str>; 3] = [
        None,
        Some("alice"),
        Some(r#"{"type":"connect","payload":{"name":"alice"}}"#),
    ];
    for first in firsts {
        let mut c = server.connect_with(outside);
        if let Some(line) = first {
            c.send(line);
        }
        // The text line even for a JSON client, as with `! server full`,
        // and nothing after it: no welcome, no answer to the name.
        c.expect(REQUIRES_TLS);
        c.expect_eof();
    }
    server.wait_log_where("a refusal of 127.0.0.2", |l| {
        l.contains(" 127.0.0.2:") && l.contains("plain text refused (--require-tls)")
    });

    // TLS from the same outside address is served and chats with a plain
    // user from an allowed address.
    let mut tls = server.connect_tls_with(outside, &cert.trust());
    assert_eq!(
        tls.stream().local_addr().unwrap().ip().to_string(),
        "127.0.0.2"
    );
    tls.choose_name("outside", 1);
    let mut plain = server.connect();
    plain.choose_name("inside", 2);
    tls.expect("* inside has joined #lobby");
    tls.send("over tls");
    plain.expect("<outside> over tls");
    plain.send("in clear");
    tls.expect("<inside> in clear");
}

#[test]
fn sighup_gives_new_connections_a_new_certificate_and_keeps_old_ones() {
    let first = Cert::new();
    let files = CertFiles::new("sighup");
    files.write(&first);
    // No history on entering: each join is followed by live lines only.
    let mut args = files.args().to_vec();
    args.extend_from_slice(&["--history", "0"]);
    let server = Server::start(&args);
    server.wait_log(&format!(
        "TLS: certificate {}, SHA-256 {}",
        files.cert.as_str(),
        first.fingerprint()
    ));
    let mut old = server.connect_tls(&first.trust());
    assert_eq!(old.peer_fingerprint(), first.fingerprint());
    old.choose_name("old", 1);

    let second = Cert::new();
    files.write(&second);
    server.signal(libc::SIGHUP);
    // Logged by the loop once it has taken the new certificate.
    server.wait_log(&format!(
        "TLS: new connections get the certificate with SHA-256 {}",
        second.fingerprint()
    ));
    let mut new = server.connect_tls(&Trust::Any);
    assert_eq!(new.peer_fingerprint(), second.fingerprint());
    new.choose_name("new", 2);
    old.expect("* new has joined #lobby");
    // The connection from before the reload goes on, both ways.
    old.send("from before the reload");
    new.expect("<old> from before the reload");
    new.send("from after it");
    old.expect("<new> from after it");

    std::fs::write(&files.cert.0, "not a certificate\n").expect("break the certificate file");
    server.signal(libc::SIGHUP);
    let kept = server.wait_log("keeping the current certificate");
    assert!(
        kept.contains(files.cert.as_str()),
        "the file is named: {kept}"
    );
    let mut third = server.connect_tls(&second.trust());
    assert_eq!(third.peer_fingerprint(), second.fingerprint());
    third.choose_name("third", 3);
    old.expect("* third has joined #lobby");
    new.expect("* third has joined #lobby");
    old.send("still here");
    new.expect("<old> still here");
    third.expect("<old> still here");
}

#[test]
fn a_tls_client_that_stops_reading_is_dropped_while_others_get_everything() {
    const DROPPED: &str = "* slow has disconnected (too slow, output limit exceeded)";
    let (server, cert, _files) = tls_server("slow", &["--rate", "0", "--max-outbuf", "65536"]);
    let trust = cert.trust();
    let mut plain = server.connect();
    plain.choose_name("plain", 1);
    let mut tls = server.connect_tls(&trust);
    tls.choose_name("tls", 2);
    plain.expect("* tls has joined #lobby");
    let small = Dial {
        rcvbuf: Some(4096),
        ..Dial::default()
    };
    let mut slow = server.connect_tls_with(small, &trust);
    slow.choose_name("slow", 3);
    plain.expect("* slow has joined #lobby");
    tls.expect("* slow has joined #lobby");
    // From here on `slow` reads nothing.

    // plain and tls take turns sending; each reads the other's message
    // before the next is sent, so neither reader falls behind itself.
    // The drop notice may come between any two messages, once to each.
    let mut users = [(plain, "plain", false), (tls, "tls", false)];
    // The kernel's send buffer towards slow grows by itself up to
    // tcp_wmem's maximum (4 MiB by default) before the server's own queue
    // fills: the cap on messages is four times what that needs.
    let filler = "x".repeat(4000);
    let mut after_drop = 0;
    for i in 0..4000 {
        let (from, to) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        let sender = users[from].1;
        let text = format!("{i:05} {filler}");
        users[from].0.send(&text);
        let want = format!("<{sender}> {text}");
        let (reader, _, told) = &mut users[to];
        loop {
            let got = reader.line();
            if got == want {
                break;
            }
            assert!(
                got == DROPPED && !*told,
                "expected {:?}, got {got:?}",
                &want[..20]
            );
            *told = true;
        }
        if users[0].2 && users[1].2 {
            after_drop += 1;
            if after_drop == 20 {
                break;
            }
        }
    }
    assert!(
        users[0].2 && users[1].2,
        "slow was not dropped (plain told: {}, tls told: {})",
        users[0].2,
        users[1].2
    );
    server.wait_log("over --max-outbuf");
    server.wait_log("(slow) ");
    drop(slow);
}

#[test]
fn garbage_after_0x16_gets_an_alert_and_is_closed_at_once() {
    let (server, _cert, _files) = tls_server("garbage", &[]);
    let (mut a, mut b) = server.pair();
    let start = Instant::now();
    let mut bad = server.connect();
    // A handshake record whose message is nonsense, then more junk.
    bad.send_raw(b"\x16\x03\x01\x00\x05hello");
    bad.send_raw(b"\x16\x03\x01\xff\xffjunk junk junk\n");
    let got = bad.read_to_eof();
    let took = start.elapsed();
    assert_one_alert(&got);
    // The handshake timeout is the default 30 s: an alert within a few
    // seconds was sent because of the garbage.
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    a.send("unbothered");
    b.expect("<a> unbothered");
}

#[test]
fn an_unfinished_handshake_is_closed_at_the_handshake_timeout() {
    let (server, _cert, _files) = tls_server("unfinished", &["--handshake-timeout", "1"]);
    let (mut a, mut b) = server.pair();
    let hello = client_hello();
    let start = Instant::now();
    let mut half = server.connect();
    half.send_raw(&hello[..hello.len() / 2]);
    let mut lone = server.connect();
    lone.send_raw(&[0x16]);
    // While both wait, the loop serves the others.
    a.send("during");
    b.expect("<a> during");
    for c in [&mut half, &mut lone] {
        let got = c.read_to_eof();
        let took = start.elapsed();
        // Never a welcome in clear to a TLS client: at most an alert.
        assert!(
            got.is_empty() || got[0] == 0x15,
            "sent {:?}",
            String::from_utf8_lossy(&got)
        );
        // The timer runs from the accept, after `start`.
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(6),
            "closed after {took:?}"
        );
        let port = c.stream().local_addr().unwrap();
        server.wait_log(&format!("{port}: TLS handshake not completed within 1 s"));
    }
    a.send("after");
    b.expect("<a> after");
}

#[test]
fn a_client_hello_without_tls_set_up_gets_an_alert_and_is_closed() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let start = Instant::now();
    let mut c = server.connect();
    c.send_raw(&client_hello());
    let got = c.read_to_eof();
    assert_one_alert(&got);
    assert!(start.elapsed() < Duration::from_secs(5));
    server.wait_log("TLS ClientHello, but TLS is not set up");
    a.send("unbothered");
    b.expect("<a> unbothered");
}

#[test]
fn a_tls_client_that_speaks_first_gets_the_welcome_then_its_answer() {
    let (server, cert, _files) = tls_server("speak-first", &[]);
    let trust = cert.trust();
    let mut plain = server.connect();
    plain.choose_name("plain", 1);

    let mut text = server.connect_tls(&trust);
    // Right after the handshake, before any welcome could be due.
    text.send("eager");
    text.expect(WELCOME);
    text.expect(&joined("eager", 2));
    plain.expect("* eager has joined #lobby");
    // No second welcome or stray line: the listing is what comes next.
    let who = text.who();
    assert_eq!(who[0], "* users in #lobby: 2", "{who:#?}");

    let mut json = server.connect_tls(&trust);
    common::json::send(
        &mut json,
        &json!({"type": "connect", "payload": {"name": "keen"}}),
    );
    // Until the mode is known the server speaks text: the welcome first.
    json.expect(WELCOME);
    common::json::expect(
        &mut json,
        json!({"type": "connect_ack", "payload": {
            "message": "Connected to the room.", "name": "keen", "room": "lobby", "version": 1,
        }}),
    );
    plain.expect("* keen has joined #lobby");
    text.expect("* keen has joined #lobby");
}

/// Waits up to `limit` for the first byte from the server without taking
/// it; returns how long after `since` it came, or None.
#[track_caller]
fn first_byte_after(c: &Client, since: Instant, limit: Duration) -> Option<Duration> {
    let sock = c.stream();
    sock.set_read_timeout(Some(limit)).expect("timeout");
    let mut byte = [0u8; 1];
    let came = match sock.peek(&mut byte) {
        Ok(_) => Some(since.elapsed()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("peek failed: {e}"),
    };
    sock.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    came
}

#[test]
fn a_plain_client_that_speaks_first_is_sent_nothing_before_it_speaks() {
    let (server, _cert, _files) = tls_server("http", &[]);
    let start = Instant::now();
    let mut http = server.connect();
    // Only an early byte is a failure: one that came after the welcome
    // delay (a slow test machine) is the silence rule, not a stray line.
    if let Some(at) = first_byte_after(&http, start, Duration::from_millis(100)) {
        assert!(
            at >= WELCOME_DELAY,
            "the server sent something {at:?} after the connect, before the client spoke"
        );
    }
    http.send("GET /healthz HTTP/1.1\r");
    http.send("\r");
    // Answered in HTTP: no welcome line before it.
    http.expect("HTTP/1.1 200 OK\r");
}

/// Another TLS implementation than the one chatd and these tests use:
/// OpenSSL's s_client, driven through its stdin. Its `K` command sends a
/// KeyUpdate that asks for one back, which rustls clients never send.
#[test]
fn openssl_s_client_chats_and_updates_keys_both_ways() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed for this test (.ci/run installs it)");
    }
    let (server, _cert, _files) = tls_server("openssl", &[]);
    let mut bob = server.login("bob");
    // Its stderr joins its stdout, where it reports each KeyUpdate.
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "exec openssl s_client -connect {} -servername localhost -tls1_3 2>&1",
        server.addr
    ));
    let mut alice = Proc::spawn_command(cmd, Stdio::piped());
    alice.expect_containing(WELCOME);
    alice.send("alice");
    alice.expect_containing("* you joined #lobby as alice");
    bob.expect("* alice has joined #lobby");
    for round in 0..3 {
        // A read of stdin that starts with K is s_client's command (the
        // rest of that read is dropped), so the next line waits until it
        // has reported the update.
        alice.send("K");
        alice.expect_containing("KEYUPDATE");
        alice.send(&format!("hello after key update {round}"));
        bob.expect(&format!("<alice> hello after key update {round}"));
        bob.send(&format!("heard you {round}"));
        alice.expect_containing(&format!("<bob> heard you {round}"));
    }
    alice.send("bye");
    bob.expect("<alice> bye");
}
