//! The server's life: many connections at once, shutdown on SIGTERM and
//! SIGINT, what it logs (and what it must not), a closed stderr, running out
//! of file descriptors, and its command line.

mod common;

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, Stderr, TIMEOUT, WELCOME, chatd_path, wait_child};

/// Longest a shutdown may take, by the protocol.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn a_thousand_connections_all_named_and_all_hear_one_broadcast() {
    const N: usize = 1000;
    // All from one address: no per-address limit.
    let server = Server::start(&["--announce-limit", "0", "--max-per-ip", "0"]);
    let mut clients: Vec<Client> = (0..N).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("u{i}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(WELCOME);
        c.expect_prefix(&format!("* you joined #lobby as u{i} ("));
    }
    clients[0].send("hello all");
    // Next for everyone: the lobby is above the announce limit, so no
    // join notices came first.
    for c in &mut clients[1..] {
        c.expect("<u0> hello all");
    }
    clients[0].send("/rooms");
    clients[0].expect_lines(&["* rooms: 1", &format!("*   #lobby {N}"), "* end of /rooms"]);
}

/// Logs in a client with a tiny receive buffer that will never read again.
fn login_deaf(server: &Server, name: &str) -> Client {
    let mut c = Client::connect_small_rcvbuf(server.addr, 4096);
    c.expect(WELCOME);
    c.send(name);
    c.expect_prefix(&format!("* you joined #lobby as {name} ("));
    c
}

#[test]
fn sigterm_tells_everyone_flushes_what_it_can_and_exits_zero() {
    const FLOOD: usize = 6 * 1024 * 1024;
    let mut server = Server::start(&["--rate", "0"]);
    let mut c = server.login_all(&["f", "r"]).into_iter();
    let (mut f, mut r) = (c.next().unwrap(), c.next().unwrap());
    r.send("/join quiet");
    r.expect("* you joined #quiet");
    f.expect("* r has left #lobby");
    let _deaf = login_deaf(&server, "n");
    f.expect("* n has joined #lobby");

    // Pile up output for n, who does not read: more than its socket holds,
    // less than --max-outbuf.
    let line = format!("{}\n", "f".repeat(1023));
    let chunk = line.repeat(64);
    let mut sent = 0;
    while sent < FLOOD {
        f.send_raw(chunk.as_bytes());
        sent += chunk.len();
    }
    // The barrier: all of it was handled (and n is still there).
    assert_eq!(
        f.who(),
        [
            "* users in #lobby: 2",
            "*   f online",
            "*   n online",
            "* end of /who"
        ]
    );

    let start = Instant::now();
    server.signal(libc::SIGTERM);
    r.expect("* server is shutting down");
    r.expect_eof();
    f.expect("* server is shutting down");
    f.expect_eof();
    let status = server.wait_exit(SHUTDOWN_LIMIT);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(took < SHUTDOWN_LIMIT, "shutdown took {took:?}");
    server.wait_log("signal 15 received");
    server.wait_log("shutdown complete");
    // n was cut off with output still pending: it was owed more than the
    // flood, and less went out.
    let close = server.wait_log("(n) 127.0.0.1:");
    assert!(close.contains("closed: server shutdown;"), "{close}");
    let out: usize = close
        .rsplit_once(", ")
        .and_then(|(_, out)| out.strip_suffix(" out"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {close:?}"));
    assert!(
        out < FLOOD,
        "n was sent all {out} bytes: nothing was pending"
    );
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut server = Server::start(&["--rate", "0"]);
    let mut f = server.login("f");
    let _deaf = login_deaf(&server, "n");
    f.expect("* n has joined #lobby");
    // Enough pending output for n that the polite flush would wait out its
    // whole two seconds.
    let chunk = format!("{}\n", "f".repeat(1023)).repeat(64);
    for _ in 0..32 {
        f.send_raw(chunk.as_bytes());
    }
    assert_eq!(f.who().len(), 4, "the flood was handled");

    server.signal(libc::SIGTERM);
    f.expect("* server is shutting down");
    server.wait_log("shutting down: telling 2 connections");
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(SHUTDOWN_LIMIT);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(1), "exit status {status}");
    assert!(
        took < Duration::from_secs(1),
        "the second signal took {took:?}"
    );
    server.wait_log("received again, stopping without waiting");
}

#[test]
fn sigint_also_exits_zero() {
    let mut server = Server::start(&[]);
    let mut a = server.login("a");
    let start = Instant::now();
    server.signal(libc::SIGINT);
    a.expect("* server is shutting down");
    a.expect_eof();
    drop(a);
    let status = server.wait_exit(SHUTDOWN_LIMIT);
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(start.elapsed() < SHUTDOWN_LIMIT);
    server.wait_log("signal 2 received");
}

#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    let mut cmd = Command::new(chatd_path());
    cmd.args(["--listen", "127.0.0.1:0", "--db", ":memory:"]);
    let mut server = Server::spawn(cmd, Stderr::Close);
    let (mut a, mut b) = server.pair();
    // Each connection and each close is a log line written to the closed
    // pipe.
    for i in 0..20 {
        let name = format!("x{i}");
        let c = server.login(&name);
        a.expect(&format!("* {name} has joined #lobby"));
        b.expect(&format!("* {name} has joined #lobby"));
        drop(c);
        a.expect(&format!("* {name} has disconnected (connection closed)"));
        b.expect(&format!("* {name} has disconnected (connection closed)"));
    }
    a.send("still here");
    b.expect("<a> still here");
    b.send("me too");
    a.expect("<b> me too");

    server.signal(libc::SIGTERM);
    a.expect("* server is shutting down");
    b.expect("* server is shutting down");
    a.expect_eof();
    b.expect_eof();
    let status = server.wait_exit(SHUTDOWN_LIMIT);
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn a_stderr_nobody_reads_does_not_stall_the_server() {
    let mut cmd = Command::new(chatd_path());
    cmd.args(["--listen", "127.0.0.1:0", "--db", ":memory:"]);
    let server = Server::spawn(cmd, Stderr::Stall);
    let (mut a, mut b) = server.pair();
    // Each connection logs a line when it comes and one when it goes:
    // about 6000 lines, far more than the pipe and the log queue hold.
    for _ in 0..3000 {
        drop(server.connect());
    }
    // Accepts are in arrival order, so this login comes after them all.
    let mut late = server.login("late");
    a.expect("* late has joined #lobby");
    b.expect("* late has joined #lobby");
    late.send("after the flood");
    a.expect("<late> after the flood");
    b.expect("<late> after the flood");
    a.send("still chatting");
    b.expect("<a> still chatting");
}

#[test]
fn connects_and_closes_are_logged_but_message_text_is_not() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    let peer = a.stream().local_addr().unwrap().to_string();
    a.send("the password is swordfish");
    b.expect("<a> the password is swordfish");
    a.send("@b swordfish again");
    b.expect("*a* swordfish again");
    drop(a);
    b.expect("* a has disconnected (connection closed)");

    let connect = server.wait_log(&format!("from {peer}"));
    assert!(connect.contains("INFO"), "{connect}");
    let close = server.wait_log(&format!("(a) {peer} closed: "));
    assert!(
        close.contains("closed: connection closed;") && close.contains("bytes in"),
        "{close}"
    );
    // The close line was logged after the messages were handled.
    let log = server.log();
    assert!(
        log.iter().all(|l| !l.contains("swordfish")),
        "message text in the log: {log:#?}"
    );
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stops_the_chat() {
    const EXTRA: usize = 100;
    const KEEP: usize = 5;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 64; exec "$0" "$@""#)
        .arg(chatd_path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--db",
            ":memory:",
            "--history",
            "0",
        ]);
    let server = Server::spawn(cmd, Stderr::Read);
    server.wait_log("open-files limit is 64");
    let (mut a, mut b) = server.pair();

    // More connections than descriptors: those the server can hold are
    // welcomed, the others told it is full.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..EXTRA {
        let mut c = server.connect();
        let first = c.line();
        if first == WELCOME {
            held.push(c);
        } else {
            assert_eq!(first, "! server full", "extra connection {i}");
            c.expect_eof();
            refused += 1;
        }
    }
    assert!(
        refused > 0 && held.len() > KEEP,
        "{} welcomed, {refused} refused",
        held.len()
    );

    let (cpu0, wall0) = (server.cpu_time(), Instant::now());
    // A measurement window, not a wait for something to happen.
    thread::sleep(Duration::from_secs(1));
    let (cpu, wall) = (server.cpu_time() - cpu0, wall0.elapsed());
    assert!(
        cpu.as_secs_f64() < 0.5 * wall.as_secs_f64(),
        "the server used {cpu:?} of CPU in {wall:?} while out of descriptors"
    );

    a.send("still chatting");
    b.expect("<a> still chatting");
    b.send("me too");
    a.expect("<b> me too");
    // One of the held connections can still choose a name.
    held[0].send("x0");
    held[0].expect("* you joined #lobby as x0 (3 users here); /help lists the commands");
    a.expect("* x0 has joined #lobby");
    b.expect("* x0 has joined #lobby");

    // Once most of them are gone (the server logs each close after it
    // freed the descriptor), a newcomer gets in.
    let gone: Vec<String> = held[KEEP..]
        .iter()
        .map(|c| c.stream().local_addr().unwrap().to_string())
        .collect();
    held.truncate(KEEP);
    for peer in gone {
        server.wait_log(&format!("{peer} closed: "));
    }
    let mut c = server.login("c");
    a.expect("* c has joined #lobby");
    b.expect("* c has joined #lobby");
    c.send("got in");
    a.expect("<c> got in");
    b.expect("<c> got in");
    held[0].expect("* c has joined #lobby");
    held[0].expect("<c> got in");
}

#[test]
fn no_network_warning_on_loopback() {
    let server = Server::start(&[]);
    // The warning would be logged before this line.
    server.wait_log("listening on 127.0.0.1:");
    let log = server.log();
    assert!(
        !log.iter()
            .any(|l| l.contains("reachable") || l.contains("plain text")),
        "{log:#?}"
    );
}

#[test]
fn help_mentions_every_flag() {
    let mut child = Command::new(chatd_path())
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The help text fits the pipe, so the child can exit before it is read.
    let status = wait_child(&mut child, TIMEOUT);
    assert!(status.success(), "chatd --help: {status}");
    let mut help = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut help).unwrap();
    for flag in [
        "--listen",
        "--max-line",
        "--max-clients",
        "--handshake-timeout",
        "--rate",
        "--max-outbuf",
        "--announce-limit",
        "--db",
        "--history",
        "--history-keep",
        "--login-delay",
        "--argon2-memory",
        "--argon2-passes",
        "--auth-queue",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}
