//! A thousand TLS clients arrive at once while two users talk: every
//! handshake completes, and the conversation's latency stays low because
//! the server spreads handshake work over its loop turns.
//!
//! The conversation is open-loop: a line every millisecond, each timed
//! from when it was sent to when it arrived, so a stall shows in every
//! line sent during it.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT, TempDb};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Clients in the storm.
const STORM: usize = 1000;
/// The conversation's 99th percentile round trip may not exceed this.
const P99_LIMIT: Duration = Duration::from_millis(50);

/// A client configuration trusting the server's self-signed certificate.
fn trusting(cert_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(cert_pem).expect("the server wrote its certificate");
    roots.add(cert).expect("a usable certificate");
    let config = rustls::ClientConfig::builder_with_provider(chatd::crypto::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Opens `n` connections, then sends every ClientHello in one burst, then
/// completes the handshakes. Returns how many completed.
fn storm(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, n: usize) -> usize {
    let name = ServerName::try_from("localhost").expect("a name");
    let mut clients: Vec<(rustls::ClientConnection, TcpStream)> = (0..n)
        .map(|_| {
            let sock = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
            sock.set_read_timeout(Some(TIMEOUT)).expect("timeout");
            sock.set_write_timeout(Some(TIMEOUT)).expect("timeout");
            let conn = rustls::ClientConnection::new(config.clone(), name.clone()).expect("client");
            (conn, sock)
        })
        .collect();
    for (conn, sock) in &mut clients {
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("a ClientHello");
        sock.write_all(&hello).expect("send the ClientHello");
    }
    let mut done = 0;
    for (conn, sock) in &mut clients {
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(sock) {
                panic!("handshake {done} of {n} failed: {e}");
            }
        }
        done += 1;
    }
    done
}

#[test]
fn a_thousand_handshakes_at_once_do_not_stall_a_conversation() {
    let db = TempDb::new("storm");
    let server = Server::start(&[
        "--tls-self-signed",
        "--db",
        db.as_str(),
        "--rate",
        "0",
        "--max-clients",
        "3000",
        "--max-per-ip",
        "0",
    ]);
    let config = trusting(&format!("{}.cert.pem", db.as_str()));
    let (mut a, mut b) = server.pair();

    // a says something every millisecond, whatever happens to earlier
    // lines (a lock-step exchange would take one sample per stall and hide
    // it); b notes how long each took to arrive.
    let t0 = Instant::now();
    let storming = Arc::new(AtomicBool::new(true));
    let speaker = {
        let storming = storming.clone();
        thread::spawn(move || {
            let mut said = 0u64;
            while storming.load(Ordering::Relaxed) {
                a.send(&format!("{}", t0.elapsed().as_micros()));
                said += 1;
                thread::sleep(Duration::from_millis(1));
            }
            a.send("end");
            (a, said)
        })
    };
    let listener = thread::spawn(move || {
        let mut delays = Vec::new();
        loop {
            let line = b.line();
            let Some(text) = line.strip_prefix("<a> ") else {
                panic!("unexpected line {line:?}");
            };
            if text == "end" {
                return delays;
            }
            let sent: u64 = text.parse().expect("a time stamp");
            delays.push(t0.elapsed() - Duration::from_micros(sent));
        }
    });
    let started = Instant::now();
    let completed = storm(server.addr, &config, STORM);
    let took = started.elapsed();
    storming.store(false, Ordering::Relaxed);
    let (_a, said) = speaker.join().expect("a went on talking");
    let mut delays = listener.join().expect("b went on listening");
    assert_eq!(completed, STORM, "every handshake completes");
    assert_eq!(delays.len() as u64, said, "every line arrived");
    assert!(
        delays.len() >= 100,
        "the conversation went on during the storm: {} lines in {took:?}",
        delays.len()
    );
    delays.sort();
    let p99 = delays[(delays.len() * 99).div_ceil(100) - 1];
    let median = delays[delays.len() / 2];
    eprintln!(
        "{STORM} handshakes in {took:?}; {} lines meanwhile, delivered in median {median:?}, p99 {p99:?}, max {:?}",
        delays.len(),
        delays[delays.len() - 1]
    );
    assert!(
        p99 <= P99_LIMIT,
        "p99 delivery {p99:?} during the storm (median {median:?}), over {P99_LIMIT:?}"
    );
}
