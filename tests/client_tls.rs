//! `chat-client --tls-pin` and `--tls-ca`, run as a binary against a small
//! TLS server inside the test (rustls over a std socket, with rcgen
//! certificates): it welcomes, answers the name, echoes lines and says
//! goodbye to `/quit`. What it records (the handshake's outcome, the lines,
//! every raw byte) shows what the client sent, and that it sent nothing in
//! clear when the check failed.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread;

use common::proc::Proc;
use common::{TIMEOUT, TempPath, WELCOME, accept, fake_server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

/// The fingerprint form chatd logs, computed here independently of the
/// client's code.
fn sha256_hex(der: &[u8]) -> String {
    chatd::crypto::fingerprint(der)
}

/// A server certificate and its key.
struct Identity {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Identity {
    fn self_signed() -> Identity {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .expect("rcgen makes a certificate");
        Identity {
            cert: made.cert.der().clone(),
            key: made.signing_key,
        }
    }

    fn fingerprint(&self) -> String {
        sha256_hex(&self.cert)
    }
}

/// A tiny CA; distinct names keep two of them from looking alike.
fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

/// A server certificate from `ca` for localhost and 127.0.0.1.
fn issued_by(ca: &CertifiedIssuer<'static, KeyPair>) -> Identity {
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server params");
    let cert = params.signed_by(&key, ca).expect("signed by the CA");
    Identity {
        cert: cert.der().clone(),
        key,
    }
}

/// The provider chatd and the client use.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    chatd::crypto::provider()
}

/// What the in-test server saw of one connection.
#[derive(Debug)]
struct Report {
    handshake: Result<(), String>,
    /// Plaintext lines received after the handshake.
    lines: Vec<String>,
    /// Every byte received on the socket, TLS records and all.
    raw: Vec<u8>,
    /// The client ended with close_notify (not a bare TCP FIN).
    clean_close: bool,
}

/// The socket, keeping a copy of everything read from it.
struct Tap {
    sock: TcpStream,
    raw: Vec<u8>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.raw.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// A TLS server for one connection, on 127.0.0.1, in a thread.
struct TlsServer {
    addr: SocketAddr,
    report: Receiver<Report>,
}

impl TlsServer {
    fn start(id: Identity) -> TlsServer {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![id.cert], key)
            .expect("a usable certificate and key");
        let listener = fake_server();
        let addr = listener.local_addr().expect("local address");
        let (tx, report) = mpsc::channel();
        thread::spawn(move || {
            // A panic here (nobody connected in time) drops `tx`: the test
            // waiting for the report then fails instead of hanging.
            let client = accept(&listener);
            let sock = client.stream().try_clone().expect("clone the socket");
            let _ = tx.send(serve(Arc::new(config), sock));
        });
        TlsServer { addr, report }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The report, once the connection is over.
    #[track_caller]
    fn report(&self) -> Report {
        self.report
            .recv_timeout(TIMEOUT)
            .expect("the TLS server reports within the timeout")
    }
}

/// Reads are bounded by the timeout `accept` set on the socket.
fn serve(config: Arc<ServerConfig>, sock: TcpStream) -> Report {
    let mut tap = Tap {
        sock,
        raw: Vec::new(),
    };
    let mut conn = ServerConnection::new(config).expect("a server connection");
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tap) {
            return Report {
                handshake: Err(e.to_string()),
                lines: Vec::new(),
                raw: tap.raw,
                clean_close: false,
            };
        }
    }
    let mut lines = Vec::new();
    let mut clean_close = false;
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut tap);
        let mut reader = BufReader::new(&mut tls);
        // A failed write shows up as the client's missing line.
        let _ = reader
            .get_mut()
            .write_all(format!("{WELCOME}\n").as_bytes());
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                // rustls reads close_notify as the end, a bare FIN as an
                // error.
                Ok(0) => {
                    clean_close = true;
                    break;
                }
                Err(_) => break,
                Ok(_) => {}
            }
            let got = line.trim_end_matches('\n').to_string();
            let answer = if lines.is_empty() && got == "carol" {
                // carol has an account: the client must not answer the
                // question with `/quit` when its input ends.
                "* password for carol:\n".to_string()
            } else if lines.is_empty() {
                format!("* you joined #lobby as {got} (1 user here)\n")
            } else if got == "/quit" {
                "* goodbye\n".to_string()
            } else {
                format!("<echo> {got}\n")
            };
            let _ = reader.get_mut().write_all(answer.as_bytes());
            lines.push(got);
            if lines.last().is_some_and(|l| l == "/quit") {
                break;
            }
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tap);
    Report {
        handshake: Ok(()),
        lines,
        raw: tap.raw,
        clean_close,
    }
}

/// Whether `needle` appears anywhere in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Logs in as alice, talks, quits; the session a trusted server gets.
#[track_caller]
fn converse(mut client: Proc, server: &TlsServer) {
    client.expect(WELCOME);
    client.send("alice");
    client.expect("* you joined #lobby as alice (1 user here)");
    client.send("hello over TLS");
    client.expect("<echo> hello over TLS");
    let (status, rest, stderr) = client.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(rest, ["* goodbye"]);
    assert_eq!(stderr, "");
    let report = server.report();
    assert_eq!(report.handshake, Ok(()));
    assert_eq!(report.lines, ["alice", "hello over TLS", "/quit"]);
    // Encrypted on the wire.
    assert!(!contains(&report.raw, b"hello over TLS"));
}

#[test]
fn the_right_pin_connects_whatever_the_certificate_names() {
    let id = Identity::self_signed();
    // Colons and capitals, as `openssl x509 -fingerprint` prints it.
    let fp = id.fingerprint();
    let pairs: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_uppercase())
        .collect();
    let pin = pairs.join(":");
    let server = TlsServer::start(id);
    // The certificate names only localhost: a pin does not look at names.
    let client = Proc::spawn(&["--tls-pin", &pin, "127.0.0.1", &server.port()]);
    converse(client, &server);
}

#[test]
fn a_wrong_pin_exits_1_with_the_fingerprint_and_sends_nothing_in_clear() {
    let id = Identity::self_signed();
    let fp = id.fingerprint();
    let wrong = sha256_hex(b"some other certificate");
    let server = TlsServer::start(id);
    let mut client = Proc::spawn(&[
        "--tls-pin",
        &wrong,
        "--name",
        "alice",
        "127.0.0.1",
        &server.port(),
    ]);
    // The client may already have failed and gone: a refused write is fine.
    client.try_send("secret words");
    let (status, rest, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        stderr,
        format!(
            "chat-client: cannot verify the server's certificate (its fingerprint is not \
             the one given to --tls-pin); its SHA-256 fingerprint is {fp}\n"
        )
    );
    let report = server.report();
    assert!(report.handshake.is_err(), "{:?}", report.lines);
    assert!(report.lines.is_empty());
    assert!(!contains(&report.raw, b"alice"));
    assert!(!contains(&report.raw, b"secret words"));
}

#[test]
fn a_ca_file_that_issued_the_certificate_connects_and_another_does_not() {
    let ca = make_ca("chatd test CA");
    let ca_file = TempPath::new("tls-ca.pem");
    // Another CA's certificate before ours: a file may hold several.
    let other = make_ca("some other CA");
    std::fs::write(&ca_file.0, format!("{}{}", other.pem(), ca.pem())).expect("write the CA");
    let server = TlsServer::start(issued_by(&ca));
    let client = Proc::spawn(&["--tls-ca", ca_file.as_str(), "127.0.0.1", &server.port()]);
    converse(client, &server);

    let other_file = TempPath::new("tls-other-ca.pem");
    std::fs::write(&other_file.0, other.pem()).expect("write the other CA");
    let id = issued_by(&ca);
    let fp = id.fingerprint();
    let server = TlsServer::start(id);
    let client = Proc::spawn(&["--tls-ca", other_file.as_str(), "127.0.0.1", &server.port()]);
    let (status, rest, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(
        stderr,
        format!(
            "chat-client: cannot verify the server's certificate (not issued by a trusted \
             authority); its SHA-256 fingerprint is {fp}\n"
        )
    );
    assert!(server.report().handshake.is_err());
}

#[test]
fn a_server_that_answers_in_plain_text_is_not_talked_to_in_plain_text() {
    let listener = fake_server();
    let port = listener
        .local_addr()
        .expect("local address")
        .port()
        .to_string();
    let zeros = "0".repeat(64);
    let client = Proc::spawn(&["--tls-pin", &zeros, "--name", "alice", "127.0.0.1", &port]);
    let mut plain = accept(&listener);
    plain.send(WELCOME);
    // Everything the client sends until it hangs up (a reset ends it too).
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    let mut sock = plain.stream();
    while let Ok(n @ 1..) = sock.read(&mut buf) {
        raw.extend_from_slice(&buf[..n]);
    }
    let (status, rest, stderr) = client.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        stderr.starts_with("chat-client: TLS handshake failed: ") && stderr.ends_with('\n'),
        "{stderr:?}"
    );
    // A ClientHello, then at most an alert: never the name.
    assert_eq!(raw.first(), Some(&0x16), "{raw:?}");
    assert!(!contains(&raw, b"alice"));
}

#[test]
fn a_long_script_flows_both_ways_through_tls() {
    // Far more than one TLS record, rustls's buffers and the client's read
    // budget per turn, both ways, so every layer must be drained.
    const LINES: usize = 4000;
    let id = Identity::self_signed();
    let pin = id.fingerprint();
    let server = TlsServer::start(id);
    let mut client = Proc::spawn(&[
        "--tls-pin",
        &pin,
        "--name",
        "bulk",
        "127.0.0.1",
        &server.port(),
    ]);
    let stdin = client.take_stdin();
    // Written from a thread: the pipe holds less than the script.
    let writer = thread::spawn(move || {
        let mut stdin = io::BufWriter::new(stdin);
        for i in 0..LINES {
            writeln!(stdin, "line {i:05} {}", "x".repeat(100)).expect("write the script");
        }
    });
    client.expect(WELCOME);
    client.expect("* you joined #lobby as bulk (1 user here)");
    for i in 0..LINES {
        client.expect(&format!("<echo> line {i:05} {}", "x".repeat(100)));
    }
    writer.join().expect("the script was written");
    let (status, rest, stderr) = client.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(rest, ["* goodbye"]);
    let report = server.report();
    assert_eq!(report.lines.len(), LINES + 2);
}

#[test]
fn quitting_at_a_password_question_closes_tls_cleanly() {
    let id = Identity::self_signed();
    let pin = id.fingerprint();
    let server = TlsServer::start(id);
    let mut client = Proc::spawn(&["--tls-pin", &pin, "127.0.0.1", &server.port()]);
    client.expect(WELCOME);
    client.send("carol");
    client.expect("* password for carol:");
    // The end of input at the question: close_notify, then FIN, and no
    // line that would be taken as the password.
    let (status, rest, stderr) = client.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    let report = server.report();
    assert_eq!(report.lines, ["carol"]);
    assert!(
        report.clean_close,
        "the client ended TLS without close_notify"
    );
}
