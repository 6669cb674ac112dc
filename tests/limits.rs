//! One test per row of PROTOCOL.md's "Limits and bad input" table, plus
//! fairness: what the server does with over-long, invalid, hostile, idle,
//! too many, too fast, too slow, half-closed and reset clients.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, TIMEOUT, WELCOME};

#[test]
fn a_ten_megabyte_line_gets_one_error_and_is_never_buffered() {
    const MAX: usize = 100;
    const HUGE: usize = 10 * 1024 * 1024;
    let server = Server::start(&["--max-line", "100"]);
    let (mut a, mut b) = server.pair();
    let too_long = "! line too long (over 100 bytes), discarded";

    // The longest line allowed, with CRLF, and one byte more.
    let exact = "x".repeat(MAX);
    a.send(&format!("{exact}\r"));
    b.expect(&format!("<a> {exact}"));
    a.send(&format!("{exact}y\r"));
    a.expect(too_long);
    a.send(&format!("{exact}y"));
    a.expect(too_long);

    let before = server.peak_rss();
    let chunk = vec![b'z'; 64 * 1024];
    let mut sent = 0;
    while sent < HUGE {
        a.send_raw(&chunk);
        sent += chunk.len();
    }
    a.send_raw(b"\nafter\n");
    a.expect(too_long);
    b.expect("<a> after");
    assert_eq!(
        a.who(),
        [
            "* users in #lobby: 2",
            "*   a online",
            "*   b online",
            "* end of /who"
        ],
        "exactly one error for the huge line, and a is still served"
    );
    let growth = server.peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {growth} bytes");
    assert!(
        growth < 2 * 1024 * 1024,
        "peak RSS grew by {growth} bytes while a {HUGE}-byte line was discarded"
    );
}

#[test]
fn invalid_utf8_is_refused_and_the_connection_stays() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send_raw(b"caf\xe9 latin-1\n");
    a.expect("! line is not valid UTF-8, discarded");
    a.send_raw(b"\xff\xfe\n");
    a.expect("! line is not valid UTF-8, discarded");
    a.send("caf\u{e9} utf-8");
    b.expect("<a> caf\u{e9} utf-8");
}

#[test]
fn control_characters_are_removed_before_anyone_sees_the_text() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send("hi \x1b[31mred\x07");
    b.expect("<a> hi [31mred");
    a.send("c1:\u{85}\u{9b}2J end\u{7f}");
    b.expect("<a> c1:2J end");
    a.send("forged\r<b> line");
    b.expect("<a> forged<b> line");
    a.send("tab\tkept, \u{a0}nbsp kept");
    b.expect("<a> tab\tkept, \u{a0}nbsp kept");
    a.send("@b \x1b]0;title\x07psst");
    b.expect("*a* ]0;titlepsst");
    a.send("/away \x1b[2Jlunch");
    a.expect("* you are now away ([2Jlunch)");
    b.expect("* a is now away ([2Jlunch)");

    // In a name too.
    let mut c = server.connect();
    c.expect(WELCOME);
    c.send("c\x1b\x07arol");
    c.expect("* you joined #lobby as carol (3 users here); /help lists the commands");
    a.expect("* carol has joined #lobby");
    b.expect("* carol has joined #lobby");
}

#[test]
fn empty_and_blank_lines_are_ignored() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send_raw(b"\n\r\n   \n\t \t\r\n\x07\x1b\n");
    a.send("real");
    // The barriers: the first line after the blanks is the real one, and a
    // was not answered either.
    b.expect("<a> real");
    assert_eq!(
        a.who(),
        [
            "* users in #lobby: 2",
            "*   a online",
            "*   b online",
            "* end of /who"
        ]
    );
    // Inner and trailing spaces are kept.
    a.send("  two  spaces  ");
    b.expect("<a>   two  spaces  ");
}

#[test]
fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut a = server.login("a");
    let start = Instant::now();
    let mut silent = server.connect();
    silent.expect(WELCOME);
    silent.expect("! no name chosen within 1 s");
    silent.expect_eof();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    server.wait_log("closed: no name chosen in time");
    // A named user is not subject to it, and heard nothing.
    assert_eq!(
        a.who(),
        ["* users in #lobby: 1", "*   a online", "* end of /who"]
    );
}

#[test]
fn past_max_clients_a_newcomer_is_refused_until_someone_leaves() {
    let server = Server::start(&["--max-clients", "2"]);
    let mut a = server.login("a");
    // b has not chosen a name yet, but counts.
    let mut b = server.connect();
    b.expect(WELCOME);
    let mut refused = server.connect();
    refused.expect("! server full");
    refused.expect_eof();
    server.wait_log("server full (--max-clients 2)");

    b.send("b");
    b.expect("* you joined #lobby as b (2 users here); /help lists the commands");
    a.expect("* b has joined #lobby");
    let mut refused = server.connect();
    refused.expect("! server full");
    refused.expect_eof();

    // b leaves; once the room is told, its place is free.
    drop(b);
    a.expect("* b has disconnected (connection closed)");
    let mut c = server.login("c");
    a.expect("* c has joined #lobby");
    c.send("in at last");
    a.expect("<c> in at last");
}

/// Sends `count` numbered lines from `a` in one write and returns how long
/// until `b` had them all, checking that they arrive complete and in order.
fn burst(a: &mut Client, b: &mut Client, count: usize) -> Duration {
    let mut batch = String::new();
    for k in 0..count {
        batch += &format!("line {k}\n");
    }
    let start = Instant::now();
    a.send_raw(batch.as_bytes());
    for k in 0..count {
        b.expect(&format!("<a> line {k}"));
    }
    let took = start.elapsed();
    // Nothing came back to the sender.
    assert_eq!(
        a.who(),
        [
            "* users in #lobby: 2",
            "*   a online",
            "*   b online",
            "* end of /who"
        ]
    );
    took
}

#[test]
fn a_client_over_its_rate_is_slowed_down_not_dropped() {
    let server = Server::start(&["--rate", "50"]);
    let (mut a, mut b) = server.pair();
    // A burst of 100 lines goes at once; the other 50 at 50 a second.
    let took = burst(&mut a, &mut b, 150);
    assert!(
        took >= Duration::from_millis(900),
        "150 lines at --rate 50 took only {took:?}: no back-pressure"
    );
    assert!(took < Duration::from_secs(5), "150 lines took {took:?}");
}

#[test]
fn rate_zero_is_unlimited() {
    let server = Server::start(&["--rate", "0"]);
    let (mut a, mut b) = server.pair();
    let took = burst(&mut a, &mut b, 150);
    assert!(
        took < Duration::from_millis(800),
        "150 lines at --rate 0 took {took:?}"
    );
}

#[test]
fn blank_and_discarded_lines_count_against_the_rate() {
    let server = Server::start(&["--rate", "50"]);
    let (mut a, mut b) = server.pair();
    // 90 blank and 10 invalid lines use up the burst of 100 (the name took
    // one), so the 25 messages after them come at 50 a second.
    let mut batch = b"\n \t\n".repeat(45);
    batch.extend_from_slice(&b"\xff\n".repeat(10));
    for k in 0..25 {
        batch.extend_from_slice(format!("line {k}\n").as_bytes());
    }
    let start = Instant::now();
    a.send_raw(&batch);
    for k in 0..25 {
        b.expect(&format!("<a> line {k}"));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "blank and invalid lines did not count: 25 messages after them took {took:?}"
    );
    for _ in 0..10 {
        a.expect("! line is not valid UTF-8, discarded");
    }
}

#[test]
fn a_big_listing_costs_budget_in_proportion_to_its_size() {
    // 300 users with 32-character names make /users about 13 KB, which
    // --rate charges as 1 + 13 KB / 4 KiB = 4 lines.
    let server = Server::start(&["--rate", "4", "--announce-limit", "0", "--max-per-ip", "0"]);
    let mut asker = server.login("asker");
    let _crowd: Vec<Client> = (1..300)
        .map(|i| server.login(&format!("{i:0>32}")))
        .collect();
    let start = Instant::now();
    asker.send_raw(&b"/users\n".repeat(5));
    for _ in 0..5 {
        let listing = asker.read_until(|l| l == "* end of /users");
        assert_eq!(listing[0], "* users: 300");
        assert_eq!(listing.len(), 301);
    }
    let took = start.elapsed();
    // Charged one line each, the five would fit the burst of 8 and come at
    // once; charged by size, the last three wait for the budget to refill.
    assert!(
        took >= Duration::from_millis(1500),
        "five 13 KB listings at --rate 4 took only {took:?}"
    );
}

#[test]
fn a_client_that_never_reads_is_dropped_and_nobody_else_suffers() {
    const MSG_LEN: usize = 1000;
    const MAX_BYTES: usize = 40 * 1024 * 1024;
    const BATCH: usize = 16;
    const LAG: usize = 32;
    let server = Server::start(&["--max-outbuf", "65536", "--rate", "0"]);
    let mut c = server.login_all(&["t", "r"]).into_iter();
    let (mut t, mut r) = (c.next().unwrap(), c.next().unwrap());
    let mut s = Client::connect_small_rcvbuf(server.addr, 4096);
    s.expect(WELCOME);
    s.send("s");
    s.expect("* you joined #lobby as s (3 users here); /help lists the commands");
    t.expect("* s has joined #lobby");
    r.expect("* s has joined #lobby");
    // From here on s reads nothing.

    let notice = "* s has disconnected (too slow, output limit exceeded)";
    // t writes as fast as r keeps up, until s is dropped. r may lag at most
    // LAG messages plus a batch, less than --max-outbuf, so whatever the
    // kernel buffers, r itself never nears the limit.
    let common::flood::Flood {
        sent,
        notices,
        reader: _r,
    } = common::flood::until_dropped(
        &mut t,
        r,
        notice,
        |k| message(k, MSG_LEN)[4..].to_string(),
        (BATCH, LAG, MAX_BYTES / MSG_LEN),
    );
    assert_eq!(notices, 1);
    server.wait_log("over --max-outbuf");
    eprintln!("s was dropped after t sent {} KiB", sent * MSG_LEN / 1024);

    // The sender is unaffected: told once, still served.
    t.expect(notice);
    assert_eq!(
        t.who(),
        [
            "* users in #lobby: 2",
            "*   r online",
            "*   t online",
            "* end of /who"
        ]
    );
    // s got a prefix of the stream, then EOF.
    let bytes = s.read_to_eof();
    let text = String::from_utf8_lossy(&bytes);
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    for (k, l) in complete.lines().enumerate() {
        assert!(l == message(k, MSG_LEN), "s: line {k} is {l:?}");
    }
}

/// Message `k` as the room sees it from t, `len` bytes in all.
fn message(k: usize, len: usize) -> String {
    let mut m = format!("<t> {k:08} ");
    while m.len() < len {
        m.push('m');
    }
    m
}

/// After `a` sent `/who\nhello` and half-closed: the room gets the last
/// line and the disconnect, `a` its listing and then EOF.
#[track_caller]
fn last_line_then_disconnect(a: &mut Client, b: &mut Client) {
    b.expect("<a> hello");
    b.expect("* a has disconnected (connection closed)");
    a.expect_lines(&[
        "* users in #lobby: 2",
        "*   a online",
        "*   b online",
        "* end of /who",
    ]);
    a.expect_eof();
}

#[test]
fn after_a_half_close_every_line_is_handled_and_what_is_owed_is_sent() {
    let server = Server::start(&[]);
    let (mut a, mut b) = server.pair();
    a.send_raw(b"/who\nhello");
    a.shutdown_write();
    last_line_then_disconnect(&mut a, &mut b);
    let line = server.wait_log("closed: connection closed");
    assert!(line.contains("(a)"), "{line}");
}

/// The same, made deterministic: the rate limit holds `a`'s input while its
/// last line and its FIN arrive, so the server finds both already waiting
/// when it reads again (instead of the FIN arriving in an event of its own).
#[test]
fn a_half_close_that_arrives_with_the_last_line_is_still_seen() {
    let server = Server::start(&["--rate", "4"]);
    let (mut a, mut b) = server.pair();
    // The name took one of the 8 burst tokens: 7 lines go now, then the
    // server stops reading a for a quarter of a second per line.
    let first: String = (1..=8).map(|k| format!("l{k}\n")).collect();
    a.send_raw(first.as_bytes());
    for k in 1..=7 {
        b.expect(&format!("<a> l{k}"));
    }
    a.send_raw(b"/who\nhello");
    a.shutdown_write();
    b.expect("<a> l8");
    last_line_then_disconnect(&mut a, &mut b);
}

#[test]
fn a_reset_connection_is_told_to_the_room() {
    let server = Server::start(&[]);
    let (a, mut b) = server.pair();
    socket2::SockRef::from(a.stream())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(a);
    b.expect("* a has disconnected (connection reset)");
    assert_eq!(
        b.who(),
        ["* users in #lobby: 1", "*   b online", "* end of /who"]
    );
}

#[test]
fn one_busy_sender_cannot_keep_the_loop_to_itself() {
    const ROUNDS: usize = 50;
    const MAX_STREAM: usize = 100 * 1024 * 1024;
    let server = Server::start(&["--rate", "0"]);
    let mut c = server.login_all(&["a", "b", "z"]).into_iter();
    let (mut a, mut b, mut z) = (c.next().unwrap(), c.next().unwrap(), c.next().unwrap());
    z.send("/join stream");
    z.expect("* you joined #stream");
    a.expect("* z has left #lobby");
    b.expect("* z has left #lobby");

    // z streams one endless line as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let streamed = Arc::new(AtomicUsize::new(0));
    let streamer = {
        let (stop, streamed) = (stop.clone(), streamed.clone());
        let mut out = z.stream().try_clone().unwrap();
        thread::spawn(move || {
            let chunk = vec![b'z'; 64 * 1024];
            while streamed.load(Ordering::SeqCst) < MAX_STREAM && !stop.load(Ordering::SeqCst) {
                out.write_all(&chunk).unwrap();
                streamed.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    // The conversation starts once the stream is under way.
    let deadline = Instant::now() + TIMEOUT;
    while streamed.load(Ordering::SeqCst) < 1024 * 1024 {
        assert!(Instant::now() < deadline, "z could not stream");
        thread::sleep(Duration::from_millis(1));
    }

    let before = streamed.load(Ordering::SeqCst);
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for k in 0..ROUNDS {
        let t = Instant::now();
        a.send(&format!("ping {k}"));
        b.expect(&format!("<a> ping {k}"));
        b.send(&format!("pong {k}"));
        a.expect(&format!("<b> pong {k}"));
        slowest = slowest.max(t.elapsed());
    }
    let total = start.elapsed();
    let during = streamed.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    streamer.join().unwrap();
    eprintln!("slowest round trip {slowest:?}, all {total:?}, z streamed {during} bytes meanwhile");
    assert!(
        during > 0 || before >= MAX_STREAM,
        "z was not streaming during the conversation"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "slowest round trip {slowest:?} while z streamed {during} bytes"
    );
    assert!(
        total < Duration::from_secs(5),
        "{ROUNDS} round trips took {total:?}"
    );

    z.send("\n/who");
    z.expect_lines(&[
        "! line too long (over 4096 bytes), discarded",
        "* users in #stream: 1",
        "*   z online",
        "* end of /who",
    ]);
}
