//! chatd under systemd's `Type=notify`, with the test as the service
//! manager: a datagram socket named by NOTIFY_SOCKET receives READY=1
//! once chatd listens, RELOADING=1 (with MONOTONIC_USEC) and READY=1
//! around a SIGHUP, and STOPPING=1 at shutdown (PROTOCOL.md, "Running
//! it").

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::{Server, Stderr, TIMEOUT, TempPath, chatd_path};

/// Largest notification read; chatd's are a few dozen bytes.
const MAX_DATAGRAM: usize = 4096;

/// The listening end of NOTIFY_SOCKET, removed with the test.
struct Manager {
    socket: UnixDatagram,
    path: TempPath,
}

impl Manager {
    fn new(tag: &str) -> Manager {
        let path = TempPath::new(&format!("{tag}.notify"));
        let socket = UnixDatagram::bind(&path.0).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        Manager { socket, path }
    }

    /// The next notification's `KEY=value` lines.
    #[track_caller]
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification within {TIMEOUT:?}: {e}"));
        String::from_utf8(buf[..n].to_vec())
            .expect("notifications are text")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The monotonic clock now, in microseconds, as systemd reads it.
fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1_000
}

#[test]
fn ready_reloading_and_stopping_reach_the_service_manager() {
    let manager = Manager::new("sd");
    let mut cmd = Command::new(chatd_path());
    cmd.args(["--listen", "127.0.0.1:0", "--db", ":memory:"])
        .env("NOTIFY_SOCKET", manager.path.as_str());
    let mut server = Server::spawn(cmd, Stderr::Read);

    assert_eq!(manager.next(), ["READY=1"]);
    // Ready means listening: a client gets in.
    let mut c = server.login("alice");

    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let reloading = manager.next();
    let after = monotonic_usec();
    assert_eq!(reloading.first().map(String::as_str), Some("RELOADING=1"));
    let usec: i128 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC {usec} not within the signal's {before}..={after}"
    );
    assert_eq!(manager.next(), ["READY=1"]);
    // Still serving after the reload.
    c.send("/who");
    c.expect_prefix("* users in #lobby");

    server.signal(libc::SIGTERM);
    assert_eq!(manager.next(), ["STOPPING=1"]);
    c.read_until(|l| l == "* server is shutting down");
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "chatd exited with {status}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
    // The variable is removed, whatever the test runner inherited.
    let mut cmd = Command::new(chatd_path());
    cmd.args(["--listen", "127.0.0.1:0", "--db", ":memory:"])
        .env_remove("NOTIFY_SOCKET");
    let mut server = Server::spawn(cmd, Stderr::Read);
    server.signal(libc::SIGHUP);
    server.wait_log("SIGHUP");
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "chatd exited with {status}");
    assert!(
        !server.log().iter().any(|l| l.contains("systemd")),
        "{:#?}",
        server.log()
    );
}
