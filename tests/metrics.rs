//! `--metrics-listen`: the counters of `/metrics` against a scripted
//! conversation, `/healthz` while storage is held back, and the HTTP
//! listener's answers to what it does not serve. Real server, real HTTP
//! over TCP, a timeout on every read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, TIMEOUT, TempDb, WELCOME};

/// Password hashing cheap enough for tests.
const FAST: [&str; 4] = ["--argon2-memory", "64", "--argon2-passes", "1"];

/// The storage backlog past which chatd stops reading clients.
const MAX_BACKLOG: f64 = 16.0 * 1024.0 * 1024.0;

/// Starts chatd with `--metrics-listen 127.0.0.1:0` and `args`; returns it
/// and the metrics address it logged.
fn start(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--metrics-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let line = server.wait_log("metrics on ");
    let addr = line
        .rsplit_once("metrics on ")
        .and_then(|(_, a)| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (server, addr)
}

/// One HTTP exchange: sends `request` as it is and reads the answer to
/// EOF. Returns the status, the head and the body.
#[track_caller]
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request)
        .unwrap_or_else(|e| panic!("cannot send the request: {e}"));
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .unwrap_or_else(|e| panic!("no whole answer within {TIMEOUT:?}: {e}"));
    let answer = String::from_utf8(answer).expect("an answer in UTF-8");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {answer:?}"));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_string(), body.to_string())
}

#[track_caller]
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: chatd\r\n\r\n").as_bytes(),
    )
}

/// The body of a successful `/metrics`.
#[track_caller]
fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}\n\n{body}");
    body
}

/// The value of `series` (name and labels exactly as rendered) in `text`.
#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Scrapes until `pred` holds for the text, failing after `TIMEOUT`.
#[track_caller]
fn scrape_until(addr: SocketAddr, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let text = scrape(addr);
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}; last:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A flood line of t's, `len` bytes as the room sees it with its LF.
fn flood_line(k: usize, len: usize) -> String {
    let mut m = format!("{k:08} ");
    while m.len() + "<t> \n".len() < len {
        m.push('m');
    }
    m
}

#[test]
fn metrics_count_what_the_conversation_did() {
    const LINE: usize = 1000;
    const BATCH: usize = 16;
    let mut args = FAST.to_vec();
    args.extend(["--login-delay", "2", "--rate", "0", "--max-outbuf", "65536"]);
    // No history replay on entering a room: every line read is live.
    args.extend(["--history", "0"]);
    let (server, maddr) = start(&args);

    // Three users talk: 2 room messages to 2 others each, 1 direct.
    let mut c = server.login_all(&["a", "b", "c"]).into_iter();
    let (mut a, mut b, mut c) = (c.next().unwrap(), c.next().unwrap(), c.next().unwrap());
    a.send("hello");
    b.expect("<a> hello");
    c.expect("<a> hello");
    b.send("hi");
    a.expect("<b> hi");
    c.expect("<b> hi");
    a.send("/msg c psst");
    c.expect("*a* psst");

    // c registers and quits; d gives a wrong password for c, while e waits
    // at the password prompt to give the right one during d's delay.
    c.send("/register sekret-pass");
    c.expect("* c is now registered: log in with this password from now on");
    c.send("/quit");
    c.expect("* goodbye");
    let prompted = || {
        let mut x = server.connect();
        x.expect(WELCOME);
        x.send("c");
        x.expect("* password for c:");
        x
    };
    let (mut d, mut e) = (prompted(), prompted());
    d.send("not-the-password");
    // Counted when found wrong: from then on, for 2 s, logins for c wait.
    scrape_until(maddr, "a login failure", |t| {
        value(t, "chatd_logins_total{result=\"failure\"}") == 1.0
    });
    e.send("sekret-pass");
    e.expect_prefix("* you joined #lobby as c (");
    d.expect("! wrong password for c");
    d.expect("* password for c:");

    // t floods #flood; r reads it all; s reads nothing and is dropped.
    let mut x = server.login_all(&["t", "r"]).into_iter();
    let (mut t, mut r) = (x.next().unwrap(), x.next().unwrap());
    let mut s = Client::connect_small_rcvbuf(server.addr, 4096);
    s.expect(WELCOME);
    s.send("s");
    s.expect_prefix("* you joined #lobby as s (");
    t.expect("* s has joined #lobby");
    r.expect("* s has joined #lobby");
    t.send("/join #flood");
    t.expect("* you joined #flood");
    r.expect("* t has left #lobby");
    s.expect("* t has left #lobby");
    r.send("/join #flood");
    r.expect("* you joined #flood");
    t.expect("* r has joined #flood");
    s.expect("* r has left #lobby");
    s.send("/join #flood");
    s.expect("* you joined #flood");
    t.expect("* s has joined #flood");
    r.expect("* s has joined #flood");

    let notice = "* s has disconnected (too slow, output limit exceeded)";
    // r stays close behind, far under its own output limit.
    // r stays connected: the counts below include it.
    let common::flood::Flood {
        sent, reader: _r, ..
    } = common::flood::until_dropped(
        &mut t,
        r,
        notice,
        |k| flood_line(k, LINE),
        (BATCH, 2 * BATCH, 40_000),
    );
    t.expect(notice);

    // What s was queued: what reached its socket, plus what was still
    // owed when it was dropped (the log says how much).
    let owed_line = server.wait_log("over --max-outbuf");
    let owed: usize = owed_line
        .split_once("over --max-outbuf (")
        .and_then(|(_, rest)| rest.split_once(" bytes unsent"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {owed_line:?}"));
    let got_by_s = s.read_to_eof().len();
    assert_eq!(
        (got_by_s + owed) % LINE,
        0,
        "s was queued whole messages ({got_by_s} received, {owed} owed)"
    );
    let to_s = (got_by_s + owed) / LINE;
    assert!(to_s > 0 && to_s < sent, "s was queued {to_s} of {sent}");

    let text = scrape(maddr);
    let messages = 2 + 1 + sent + 1;
    let deliveries = 2 * 2 + 1 + (sent + 1) + to_s;
    let want = [
        ("chatd_messages_total", messages as f64),
        ("chatd_direct_messages_total", 1.0),
        ("chatd_deliveries_total", deliveries as f64),
        ("chatd_logins_total{result=\"success\"}", 1.0),
        ("chatd_logins_total{result=\"failure\"}", 1.0),
        ("chatd_logins_total{result=\"throttled\"}", 1.0),
        ("chatd_logins_total{result=\"busy\"}", 0.0),
        ("chatd_disconnects_total{reason=\"too_slow\"}", 1.0),
        ("chatd_disconnects_total{reason=\"quit\"}", 1.0),
        ("chatd_disconnects_total{reason=\"wrong_password\"}", 0.0),
        // a, b, c (logged in as e), t, r.
        ("chatd_users", 5.0),
        ("chatd_rooms", 2.0),
        // The same five and d, at its password prompt.
        ("chatd_connections{mode=\"text\",transport=\"plain\"}", 6.0),
        ("chatd_connections{mode=\"json\",transport=\"plain\"}", 0.0),
        ("chatd_connections{mode=\"text\",transport=\"tls\"}", 0.0),
    ];
    for (series, v) in want {
        assert_eq!(value(&text, series), v, "{series} in:\n{text}");
    }
    // t sent the flood without the "<t> " that r received it with.
    let flood_in = (sent * (LINE - 4)) as f64;
    let flood_out = (sent * LINE + got_by_s) as f64;
    assert!(
        value(&text, "chatd_received_bytes_total") > flood_in,
        "{text}"
    );
    assert!(value(&text, "chatd_sent_bytes_total") > flood_out, "{text}");
    assert!(value(&text, "chatd_loop_turn_seconds_count") > 0.0);
    assert_eq!(
        value(&text, "chatd_loop_turn_seconds_count"),
        value(&text, "chatd_loop_turn_seconds_bucket{le=\"+Inf\"}")
    );
    assert!(text.contains("# TYPE chatd_loop_turn_seconds histogram\n"));
    assert!(text.contains("# TYPE chatd_deliveries_total counter\n"));

    let (_, head, _) = get(maddr, "/metrics");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "{head}"
    );
}

#[test]
fn healthz_is_ok_then_unavailable_while_storage_is_held_back() {
    const LEN: usize = 60_000;
    // 24 MB: past the backlog limit with room to spare.
    const MESSAGES: usize = 400;
    let db = TempDb::new("metrics-behind");
    let (server, maddr) = start(&["--db", db.as_str(), "--rate", "0", "--max-line", "65536"]);
    let (status, _, body) = get(maddr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // Another connection holds the database's write lock: every write of
    // the storage thread waits (5 s at a time) and the backlog grows.
    let lock = rusqlite::Connection::open(db.as_str()).expect("open the database");
    lock.execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");

    let mut w = server.login("w");
    w.send("/join #big");
    w.expect("* you joined #big");
    let writer = thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(LEN));
        for _ in 0..MESSAGES {
            w.send_raw(line.as_bytes());
        }
        w
    });

    let deadline = Instant::now() + TIMEOUT;
    let (status, _, body) = loop {
        let answer = get(maddr, "/healthz");
        if answer.0 != 200 {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed ok while storage was held"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("storage: behind"), "{body}");
    // The loop itself still answers, and holds the writer.
    let text = scrape(maddr);
    assert!(
        value(&text, "chatd_storage_backlog_bytes") > MAX_BACKLOG,
        "{text}"
    );
    assert_eq!(value(&text, "chatd_storage_held_connections"), 1.0);

    // Let go: storage catches up, the writer is read again, health is back.
    lock.execute_batch("ROLLBACK").expect("let go of the lock");
    drop(lock);
    let mut w = writer.join().expect("the writer finished");
    let deadline = Instant::now() + 2 * TIMEOUT;
    while get(maddr, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "/healthz never came back");
        thread::sleep(Duration::from_millis(20));
    }
    // Every message was taken.
    w.send("/quit");
    w.expect("* goodbye");
    let text = scrape_until(maddr, "all messages counted", |t| {
        value(t, "chatd_messages_total") == MESSAGES as f64
    });
    assert_eq!(value(&text, "chatd_storage_held_connections"), 0.0);
}

#[test]
fn the_listener_serves_only_get_of_its_two_paths() {
    let (_server, maddr) = start(&[]);
    let (status, _, body) = get(maddr, "/");
    assert_eq!((status, body.as_str()), (404, "not found\n"));
    assert_eq!(get(maddr, "/metrics/x").0, 404);
    let (status, head, _) = http(
        maddr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET"), "{head}");
    assert_eq!(http(maddr, b"DELETE /healthz HTTP/1.1\r\n\r\n").0, 405);
    assert_eq!(http(maddr, b"nonsense\r\n\r\n").0, 400);

    // A head over 8 KiB, in one header.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "y".repeat(9 * 1024)
    );
    assert_eq!(http(maddr, huge.as_bytes()).0, 431);
    // Endless header lines, never ending the head.
    let mut endless = b"GET /healthz HTTP/1.1\r\n".to_vec();
    while endless.len() < 32 * 1024 {
        endless.extend_from_slice(b"X-More: z\r\n");
    }
    assert_eq!(http(maddr, &endless).0, 431);

    // Still serving.
    assert_eq!(get(maddr, "/healthz?verbose").0, 200);
}

#[test]
fn idle_http_clients_cannot_take_more_than_their_share() {
    let (_server, maddr) = start(&[]);
    // Four connections that say nothing hold every slot.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect_timeout(&maddr, TIMEOUT).expect("connect"))
        .collect();
    let (status, _, body) = get(maddr, "/healthz");
    assert_eq!((status, body.as_str()), (503, "busy\n"));
    drop(idle);
    // Their threads end at the EOF; the next request is served.
    let deadline = Instant::now() + TIMEOUT;
    while get(maddr, "/healthz").0 != 200 {
        assert!(Instant::now() < deadline, "slots never freed");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_metrics_address_in_use_stops_chatd_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = std::process::Command::new(common::chatd_path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--db",
            ":memory:",
            "--metrics-listen",
            &addr,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chatd");
    let (status, stderr) = common::wait_with_stderr(&mut child, TIMEOUT);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (--metrics-listen)")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[test]
fn an_idle_server_stays_healthy_past_the_stall_limit() {
    // The loop would sleep in poll with nothing to do; with metrics on it
    // turns anyway, so its heartbeat does not make an idle server look
    // stuck. The stall limit is 5 s.
    let (_server, maddr) = start(&[]);
    thread::sleep(Duration::from_secs(6));
    let (status, _, body) = get(maddr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}
