//! The load generator against a real server in this process: every
//! delivery is counted, the window holds, a rate is kept, idle connections
//! are opened and measured. Over TLS too: through a TLS relay in this
//! process in front of the same server, and (once the server speaks TLS
//! itself) against the chatd binary.

mod common;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chatd::loadgen::wire::Proto;
use chatd::loadgen::{self, Fanout, Setup};
use chatd::server::{self, Config, Server, ShutdownHandle};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::ServerConnection;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

struct Running {
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    setup: Setup,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(subs: usize) -> Running {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = Config {
        rate: 0,
        ..Config::default()
    };
    let mut server = Server::new(listener, cfg).unwrap();
    let mut setup = Setup::new(server.local_addr(), Proto::Chat, subs);
    setup.timeout = Duration::from_secs(20);
    setup.server_pid = Some(std::process::id());
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());
    Running {
        handle,
        thread: Some(thread),
        setup,
    }
}

#[test]
fn every_delivery_arrives_and_is_counted() {
    let running = start(20);
    let mut fanout = Fanout::connect(running.setup.clone()).unwrap();
    for _ in 0..2 {
        let stats = fanout.run(500, None).unwrap();
        assert!(stats.clean(), "{stats}");
        assert_eq!(stats.delivered, 20 * 500);
        assert!(stats.latency.count() == 10_000 && stats.latency.max() > 0);
        assert!(stats.server_cpu.is_some() && stats.server_peak_rss_kib.is_some());
        assert!(stats.kv().contains("delivered=10000 lost=0"));
    }
}

#[test]
fn a_small_window_still_gets_everything_through() {
    let running = start(5);
    let mut setup = running.setup.clone();
    setup.window = 1;
    let mut fanout = Fanout::connect(setup).unwrap();
    let stats = fanout.run(200, None).unwrap();
    assert!(stats.clean(), "{stats}");
}

#[test]
fn a_send_rate_is_kept() {
    let running = start(3);
    let mut fanout = Fanout::connect(running.setup.clone()).unwrap();
    let started = Instant::now();
    let stats = fanout.run(50, Some(500.0)).unwrap();
    assert!(stats.clean(), "{stats}");
    // 50 messages at 500/s: the last goes out 98 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(95), "{stats}");
}

#[test]
fn idle_connections_are_opened_and_measured() {
    let running = start(30);
    let stats = loadgen::idle(&running.setup).unwrap();
    assert_eq!(stats.conns, 30);
    assert!(stats.server_rss_kib.is_some());
    assert!(stats.kv().contains("conns=30"));
}

#[test]
fn a_taken_name_is_reported() {
    let running = start(2);
    let _first = Fanout::connect(running.setup.clone()).unwrap();
    let err = Fanout::connect(running.setup.clone()).err().unwrap();
    assert!(err.to_string().contains("s0 was refused"), "{err}");
}

/// A TLS-terminating relay in front of `backend`, on its own thread: each
/// TLS connection it accepts gets a plain connection to the backend, and
/// the plaintext goes both ways. Stands in for chatd's own TLS until that
/// is on this branch; the load generator cannot tell the difference.
struct TlsRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One relayed connection.
struct Pair {
    tls_side: TcpStream,
    conn: ServerConnection,
    plain_side: TcpStream,
    /// Plaintext from the client the backend has not taken yet.
    to_backend: Vec<u8>,
}

impl Pair {
    /// Moves everything that can move, both ways, until every socket would
    /// block (the relay's poll is edge-triggered). False once either side
    /// has closed.
    fn pump(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let mut open = true;
        loop {
            match self.conn.read_tls(&mut self.tls_side) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    loop {
                        match self.conn.reader().read(buf) {
                            Ok(0) => return Ok(false),
                            Ok(n) => self.to_backend.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while !self.to_backend.is_empty() {
            match self.plain_side.write(&self.to_backend) {
                Ok(n) => drop(self.to_backend.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        loop {
            match self.plain_side.read(buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                // No buffer limit (set at accept): rustls keeps it all.
                Ok(n) => self.conn.writer().write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tls_side) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(open)
    }
}

const RELAY_LISTENER: Token = Token(usize::MAX);

fn tls_relay(backend: SocketAddr) -> TlsRelay {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = chatd::crypto::provider();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
    );
    let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut listener, RELAY_LISTENER, Interest::READABLE)
            .unwrap();
        let mut pairs: Vec<Option<Pair>> = Vec::new();
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; 64 * 1024];
        while !stopped.load(Ordering::Relaxed) {
            // A failing poll ends the relay; the test then fails on its
            // own timeout.
            if poll
                .poll(&mut events, Some(Duration::from_millis(50)))
                .is_err()
            {
                return;
            }
            for event in events.iter() {
                if event.token() == RELAY_LISTENER {
                    while let Ok((mut tls_side, _)) = listener.accept() {
                        // A client the relay cannot serve is dropped, which
                        // closes it: the load generator reports that.
                        let Ok(std_plain) = std::net::TcpStream::connect(backend) else {
                            continue;
                        };
                        if std_plain.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let mut plain_side = TcpStream::from_std(std_plain);
                        let k = pairs.len();
                        let both = Interest::READABLE | Interest::WRITABLE;
                        let reg = poll.registry();
                        if reg.register(&mut tls_side, Token(2 * k), both).is_err()
                            || reg
                                .register(&mut plain_side, Token(2 * k + 1), both)
                                .is_err()
                        {
                            continue;
                        }
                        let Ok(mut conn) = ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        conn.set_buffer_limit(None);
                        pairs.push(Some(Pair {
                            tls_side,
                            conn,
                            plain_side,
                            to_backend: Vec::new(),
                        }));
                    }
                    continue;
                }
                let k = event.token().0 / 2;
                let Some(slot) = pairs.get_mut(k) else {
                    continue;
                };
                if let Some(pair) = slot
                    && !matches!(pair.pump(&mut buf), Ok(true))
                {
                    // Dropping both sockets closes the other side too.
                    *slot = None;
                }
            }
        }
    });
    TlsRelay {
        addr,
        stop,
        thread: Some(thread),
    }
}

fn tls_setup(addr: SocketAddr, subs: usize) -> Setup {
    let mut setup = Setup::new(addr, Proto::Chat, subs);
    setup.timeout = Duration::from_secs(20);
    setup.tls = Some(loadgen::tls::client_config().unwrap());
    setup
}

#[test]
fn over_tls_every_delivery_arrives_and_is_counted() {
    let running = start(20);
    let relay = tls_relay(running.setup.addr);
    let mut setup = tls_setup(relay.addr, 20);
    setup.server_pid = Some(std::process::id());
    let mut fanout = Fanout::connect(setup).unwrap();
    for _ in 0..2 {
        let stats = fanout.run(500, None).unwrap();
        assert!(stats.clean(), "{stats}");
        assert_eq!(stats.delivered, 20 * 500);
        assert_eq!(stats.latency.count(), 10_000);
        let suite = stats.tls.as_deref().unwrap_or("");
        assert!(suite.starts_with("TLS13_"), "{stats}");
        assert!(stats.kv().contains(" tls=TLS13_"), "{}", stats.kv());
    }
}

#[test]
fn over_tls_a_small_window_still_gets_everything_through() {
    // Window 1: every message waits for the one before it to reach all,
    // so plaintext left behind in rustls would stall the run.
    let running = start(5);
    let relay = tls_relay(running.setup.addr);
    let mut setup = tls_setup(relay.addr, 5);
    setup.window = 1;
    let mut fanout = Fanout::connect(setup).unwrap();
    let stats = fanout.run(300, None).unwrap();
    assert!(stats.clean(), "{stats}");
}

#[test]
fn over_tls_lines_span_records_and_windows_fill_sockets() {
    // 4000-byte deliveries (the server's longest line is 4096): lines
    // cross the 16 KB TLS records, and a window of them is more than the
    // socket buffers hold, so every layer has to be drained and refilled.
    let running = start(3);
    let relay = tls_relay(running.setup.addr);
    let mut setup = tls_setup(relay.addr, 3);
    setup.size = 4000;
    setup.window = 200;
    let mut fanout = Fanout::connect(setup).unwrap();
    let stats = fanout.run(1000, None).unwrap();
    assert!(stats.clean(), "{stats}");
}

#[test]
fn over_tls_idle_connections_are_opened() {
    let running = start(10);
    let relay = tls_relay(running.setup.addr);
    let stats = loadgen::idle(&tls_setup(relay.addr, 10)).unwrap();
    assert_eq!(stats.conns, 10);
    assert!(stats.tls.is_some());
}

#[test]
fn tls_against_a_plain_server_fails_rather_than_waits() {
    let running = start(2);
    let err = Fanout::connect(tls_setup(running.setup.addr, 2))
        .err()
        .unwrap();
    assert!(!matches!(err, loadgen::BenchError::Timeout { .. }), "{err}");
}

/// Runs `chat-bench ARGS --kv` to the end (at most a minute); its exit
/// status and its one line of output.
fn chat_bench(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(args)
        .args(["--kv", "--timeout", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chat-bench");
    // One line of output: it fits the pipe, so reading after the exit is
    // safe.
    let status = common::wait_child(&mut child, Duration::from_secs(60));
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (status.success(), format!("{out}{err}"))
}

#[test]
fn the_tls_flag_loads_through_the_relay() {
    let running = start(10);
    let relay = tls_relay(running.setup.addr);
    let addr = relay.addr.to_string();
    let (ok, out) = chat_bench(&[
        "--tls",
        "--addr",
        &addr,
        "--subs",
        "10",
        "--messages",
        "300",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("delivered=3000 lost=0"), "{out}");
    assert!(out.contains(" tls=TLS"), "{out}");
}

/// A directory for one test, removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_tls_flag_loads_chatd_over_its_own_tls() {
    let dir = TempDir(std::env::temp_dir().join(format!("chatd-test-{}-tls", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("x.db");
    let db = db.to_str().expect("temp paths are UTF-8");
    for proto in ["chat", "chat-json"] {
        // A server each: the names of one run are freed only as the server
        // reads the closes of its connections, which the next run could
        // overtake.
        let server = common::Server::start(&["--tls-self-signed", "--db", db, "--rate", "0"]);
        let addr = server.addr.to_string();
        let pid = server.pid().to_string();
        let (ok, out) = chat_bench(&[
            "--tls",
            "--proto",
            proto,
            "--addr",
            &addr,
            "--subs",
            "20",
            "--messages",
            "500",
            "--server-pid",
            &pid,
        ]);
        assert!(ok, "{proto}: {out}");
        assert!(out.contains("delivered=10000 lost=0"), "{proto}: {out}");
        assert!(out.contains(" tls=TLS"), "{proto}: {out}");
    }
}
