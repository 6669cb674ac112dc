//! The config file on a real server: what wins over what, what stops
//! chatd at start, what SIGHUP changes (and what it only reports), and the
//! JSON log format.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server, TIMEOUT, TempDb, TempPath, chatd_path, wait_with_stderr};

/// A config file holding `text`, removed when dropped.
fn config(tag: &str, text: &str) -> TempPath {
    let path = TempPath::new(&format!("{tag}.toml"));
    write(&path, text);
    path
}

fn write(path: &TempPath, text: &str) {
    std::fs::write(&path.0, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.as_str()));
}

/// Runs chatd with `args` on a free port, expecting it to stop at once;
/// returns its exit code and what it wrote to stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(chatd_path())
        .args(["--listen", "127.0.0.1:0", "--db", ":memory:"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chatd");
    let (status, stderr) = wait_with_stderr(&mut child, TIMEOUT);
    (status.code(), stderr)
}

/// `to` reads the message `from` (named `name`) sends now, and nothing
/// before it: whatever `to` was to be told before has been told.
#[track_caller]
fn barrier((name, from): (&str, &mut Client), to: &mut Client, text: &str) {
    from.send(text);
    to.expect(&format!("<{name}> {text}"));
}

#[test]
fn the_file_beats_defaults_and_flags_beat_the_file() {
    let file = config("precedence", "max-line = 10\n");
    let long = "0123456789abcde";
    let too_long = "! line too long (over 10 bytes), discarded";

    let server = Server::start(&["--config", file.as_str()]);
    let mut a = server.login("a");
    a.send(long);
    a.expect(too_long);
    drop(a);

    // Given on the command line, even at its default value, a flag wins.
    let server = Server::start(&["--config", file.as_str(), "--max-line", "4096"]);
    let (mut a, mut b) = server.pair();
    a.send(long);
    b.expect(&format!("<a> {long}"));
}

#[test]
fn the_example_file_starts_a_server() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/chatd.toml");
    let server = Server::start(&["--config", example]);
    let (mut a, mut b) = server.pair();
    a.send("hello");
    b.expect("<a> hello");
}

#[test]
fn an_unknown_key_stops_chatd_naming_file_line_and_key() {
    let file = config("unknown", "max-line = 100\n\nmax-lin = 10\n");
    let (code, stderr) = refused(&["--config", file.as_str()]);
    assert_eq!(code, Some(1), "{stderr}");
    let want = format!(
        "chatd: config {}:3: unknown key \"max-lin\" (did you mean \"max-line\"?)",
        file.as_str()
    );
    assert_eq!(stderr.trim_end(), want);
}

#[test]
fn a_bad_value_stops_chatd_naming_file_line_and_key() {
    let file = config("bad-value", "rate = 5\nannounce-limit = -3\n");
    let (code, stderr) = refused(&["--config", file.as_str()]);
    assert_eq!(code, Some(1), "{stderr}");
    let want = format!(
        "chatd: config {}:2: key \"announce-limit\": expected a whole number from 0 to 4294967295",
        file.as_str()
    );
    assert_eq!(stderr.trim_end(), want);
}

/// Time forty lines may take when nothing paces them (paced, at one a
/// second, they would take forty seconds).
const UNPACED: Duration = Duration::from_secs(5);

#[test]
fn sighup_changes_the_rate_for_new_lines() {
    let file = config("rate", "rate = 1\n");
    let server = Server::start(&["--config", file.as_str()]);
    let (mut a, mut b) = server.pair();
    // One line a second, bursts of two; the name took one: four lines
    // take at least two seconds.
    let start = Instant::now();
    for i in 0..4 {
        a.send(&format!("paced {i}"));
    }
    for i in 0..4 {
        b.expect(&format!("<a> paced {i}"));
    }
    let paced = start.elapsed();
    assert!(paced >= Duration::from_millis(1500), "not paced: {paced:?}");

    write(&file, "rate = 0\n");
    server.signal(libc::SIGHUP);
    server.wait_log("config: rate 1 -> 0");
    // At one a second these would take forty.
    let start = Instant::now();
    for i in 0..40 {
        a.send(&format!("free {i}"));
    }
    for i in 0..40 {
        b.expect(&format!("<a> free {i}"));
        let free = start.elapsed();
        assert!(free < UNPACED, "still paced: line {i} after {free:?}");
    }
}

#[test]
fn sighup_changes_the_announce_limit() {
    let file = config("announce", "announce-limit = 1\n");
    let server = Server::start(&["--config", file.as_str()]);
    let mut a = server.login("a");
    let mut b = server.login("b");
    // Two in the lobby, over the limit: a hears of b's message, not of
    // b's coming.
    barrier(("b", &mut b), &mut a, "quiet");

    write(&file, "announce-limit = 100\n");
    server.signal(libc::SIGHUP);
    server.wait_log("config: announce-limit 1 -> 100");
    let _c = server.login("c");
    a.expect("* c has joined #lobby");
    b.expect("* c has joined #lobby");
}

#[test]
fn a_restart_only_key_is_reported_and_a_bad_file_changes_nothing() {
    let file = config("restart", "history-keep = 100\nannounce-limit = 1\n");
    let server = Server::start(&["--config", file.as_str()]);

    write(&file, "history-keep = 200\nannounce-limit = 1\n");
    server.signal(libc::SIGHUP);
    server.wait_log("config: history-keep 100 -> 200 needs a restart");

    write(&file, "announce-limit = 100\nmax-line = 0\n");
    server.signal(libc::SIGHUP);
    let warning = server.wait_log("keeping the current settings");
    let want = format!(
        "SIGHUP: config {}:2: key \"max-line\": expected a whole number from 1 to 4294967295",
        file.as_str()
    );
    assert!(warning.contains(&want), "{warning}");
    // The announce limit is still 1: b's coming is not announced.
    let mut a = server.login("a");
    let mut b = server.login("b");
    barrier(("b", &mut b), &mut a, "still quiet");
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("config: announce-limit")),
        "{:#?}",
        server.log()
    );
}

#[test]
fn a_flag_keeps_its_value_when_the_file_is_read_again() {
    let file = config("flag-wins", "announce-limit = 1\n");
    let server = Server::start(&["--config", file.as_str(), "--announce-limit", "1"]);
    write(&file, "announce-limit = 100\n");
    server.signal(libc::SIGHUP);
    server.wait_log("read again: nothing changed");
    let mut a = server.login("a");
    let mut b = server.login("b");
    barrier(("b", &mut b), &mut a, "quiet still");
}

#[test]
fn json_log_lines_parse_and_keep_what_scripts_look_for() {
    let db = TempDb::new("config-json");
    let server = Server::start(&[
        "--log-format",
        "json",
        "--tls-self-signed",
        "--db",
        db.as_str(),
    ]);
    let _a = server.login("a");
    server.wait_log("conn #0 from");
    let mut msgs = Vec::new();
    for line in server.log() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let field = |k: &str| {
            v.get(k)
                .and_then(|f| f.as_str())
                .unwrap_or_else(|| panic!("no string {k:?} in {line}"))
                .to_string()
        };
        let ts = field("ts");
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        assert_eq!(field("level"), "INFO", "{line}");
        msgs.push(field("msg"));
    }
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("listening on 127.0.0.1:")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("TLS: made a self-signed certificate") && m.contains("SHA-256")),
        "{msgs:#?}"
    );
}
