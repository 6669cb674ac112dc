//! Rough whole-server figures: memory per idle named connection, and
//! deliveries per second when one client broadcasts to many in one room.
//! Runs the release `chatd` binary as a separate process on loopback, so
//! its RSS and CPU time are its own.
//!
//! cargo bench --bench fanout                  # both, default sizes
//! cargo bench --bench fanout -- idle 10000
//! cargo bench --bench fanout -- broadcast 1000 20000
//!
//! Every run is bounded: it gives up after `LIMIT` and stops the server.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

const LIMIT: Duration = Duration::from_secs(120);
/// Message text length; with `<pub> ` and LF a delivery is 64 bytes.
const TEXT_LEN: usize = 57;
/// The publisher stays at most this many messages ahead of the average
/// subscriber, so the run measures throughput, not queue growth.
const WINDOW: u64 = 1000;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chatd");
        let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line).expect("read chatd stderr") == 0 {
                panic!("chatd exited before listening");
            }
            if let Some(at) = line.find("listening on ") {
                break line[at + 13..].trim().parse().expect("address");
            }
        };
        // Keep its log flowing so it never has to drop lines.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Server { child, addr }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("status field")
    }

    /// User plus system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc stat");
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and chooses `name`, returning once the server said we joined.
fn login(addr: SocketAddr, name: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{name}\n").as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    // Byte at a time: nothing past the joined line may be consumed here.
    loop {
        s.read_exact(&mut byte).expect("login reply");
        seen.push(byte[0]);
        if byte[0] == b'\n' {
            if seen.starts_with(b"* you joined") {
                return s;
            }
            if seen.starts_with(b"!") {
                panic!("login {name}: {}", String::from_utf8_lossy(&seen));
            }
            seen.clear();
        }
    }
}

/// Reads whatever is waiting on every socket, without blocking.
fn drain_all(socks: &mut [TcpStream]) {
    let mut buf = [0u8; 4096];
    for s in socks.iter_mut() {
        s.set_nonblocking(true).unwrap();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}

fn sockstat() -> String {
    std::fs::read_to_string("/proc/net/sockstat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .unwrap_or("")
        .to_string()
}

fn idle(n: usize) {
    let server = Server::start(&["--rate", "0", "--max-clients", "40000"]);
    let before = server.status_kib("VmRSS:");
    let sock_before = sockstat();
    let started = Instant::now();
    let mut socks: Vec<TcpStream> = (0..n)
        .map(|i| {
            assert!(started.elapsed() < LIMIT, "idle: too slow to connect");
            login(server.addr, &format!("u{i}"))
        })
        .collect();
    // Everything the server queued (join notices) is read, twice over a
    // short pause, so its output buffers are empty when RSS is sampled.
    for _ in 0..2 {
        drain_all(&mut socks);
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = server.status_kib("VmRSS:");
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "idle: {n} named connections in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("idle: server RSS {before} KiB -> {after} KiB: {per:.0} bytes per connection");
    println!("idle: kernel sockets before: {sock_before}");
    println!("idle: kernel sockets after:  {}", sockstat());
}

fn broadcast(subs: usize, messages: u64) {
    let server = Server::start(&[
        "--rate",
        "0",
        "--max-clients",
        "40000",
        "--announce-limit",
        "0",
    ]);
    let mut socks: Vec<mio::net::TcpStream> = (0..subs)
        .map(|i| {
            let s = login(server.addr, &format!("s{i}"));
            s.set_nonblocking(true).unwrap();
            mio::net::TcpStream::from_std(s)
        })
        .collect();
    let mut publisher = login(server.addr, "pub");
    // Small batched writes must not wait for delayed ACKs.
    publisher.set_nodelay(true).unwrap();
    let total = subs as u64 * messages;
    let delivered = Arc::new(AtomicU64::new(0));

    let progress = delivered.clone();
    let sender = std::thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(TEXT_LEN));
        let batch = line.repeat(100);
        let mut sent = 0u64;
        let started = Instant::now();
        while sent < messages {
            let behind = sent.saturating_sub(progress.load(Ordering::Relaxed) / subs as u64);
            if behind > WINDOW {
                if started.elapsed() > LIMIT {
                    return;
                }
                std::thread::yield_now();
                continue;
            }
            let k = (messages - sent).min(100);
            publisher
                .write_all(&batch.as_bytes()[..k as usize * line.len()])
                .expect("publish");
            sent += k;
        }
        // Keep the socket open until the readers are done.
        let _ = publisher.read(&mut [0u8; 1]);
    });

    let mut poll = Poll::new().unwrap();
    for (i, s) in socks.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE)
            .unwrap();
    }
    let cpu0 = server.cpu();
    let t0 = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < total && t0.elapsed() < LIMIT {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            let s = &mut socks[ev.token().0];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => panic!("subscriber {} was disconnected", ev.token().0),
                    Ok(n) => {
                        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                        got += lines;
                        delivered.fetch_add(lines, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    let cpu = server.cpu() - cpu0;
    let rss = server.status_kib("VmHWM:");
    drop(server);
    let _ = sender.join();
    assert_eq!(got, total, "broadcast: deliveries lost or run timed out");
    println!(
        "broadcast: 1 -> {subs} subscribers, {messages} messages of 64 bytes: {total} deliveries in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "broadcast: {:.2} M deliveries/s, server CPU {:.0} ns per delivery, server peak RSS {} MiB",
        total as f64 / elapsed.as_secs_f64() / 1e6,
        cpu.as_nanos() as f64 / total as f64,
        rss / 1024
    );
}

fn main() {
    // Ten thousand clients need ten thousand descriptors here too.
    if let Err(e) = chatd::server::raise_fd_limit() {
        eprintln!("cannot raise the open-files limit: {e}");
    }
    // cargo bench passes --bench; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num = |i: usize, default: u64| {
        args.get(i)
            .map(|a| a.parse().expect("a number"))
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("idle") => idle(num(1, 10_000) as usize),
        Some("broadcast") => broadcast(num(1, 1000) as usize, num(2, 20_000)),
        None => {
            idle(10_000);
            broadcast(1000, 20_000);
        }
        Some(other) => panic!("unknown measurement {other}: use idle or broadcast"),
    }
}
