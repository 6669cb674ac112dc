//! Recorded history over real TCP: what a user receives on entering a room
//! (text and JSON, `--history N`), `/history N` and the JSON `history`
//! request (beyond what memory keeps, too), `--history-keep` pruning and
//! recording nothing, history kept across a clean restart, and a database
//! left by `kill -9` holding a gap-free, duplicate-free prefix. Each test
//! runs its own `chatd` (PROTOCOL.md, "Accounts and recorded history").

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use common::json::{expect, message, recv, send};
use common::time::{check_ts, has_shape, now_secs, secs};
use common::{Client, Server, TempDb, WELCOME, joined, stop};

/// A recorded message shown in text: `[YYYY-MM-DD HH:MM] ` (UTC, this
/// minute or the one before, give or take clock reading) and then the
/// rest, which is returned.
#[track_caller]
fn recorded(line: &str) -> &str {
    assert!(
        has_shape(line, "[9999-99-99 99:99] "),
        "not a recorded message `[YYYY-MM-DD HH:MM] ...`: {line:?}"
    );
    let n = |from: usize, to: usize| line[from..to].parse::<i64>().unwrap();
    let at = secs(n(1, 5), n(6, 8), n(9, 11), n(12, 14), n(15, 17), 0, line);
    let now = now_secs();
    assert!(
        at <= now && now - at < 120,
        "{line:?} is not stamped with the current minute (UTC)"
    );
    &line[19..]
}

/// The next line must be the recorded message `want` (`<name> text`).
#[track_caller]
fn expect_recorded(c: &mut Client, want: &str) {
    let line = c.line();
    assert_eq!(recorded(&line), want, "in {line:?}");
}

/// Sends `/history N` (or `/history` if `n` is `None`) and returns the
/// messages listed, checking the header's count and the closing line.
#[track_caller]
fn history(c: &mut Client, n: Option<usize>) -> Vec<String> {
    match n {
        Some(n) => c.send(&format!("/history {n}")),
        None => c.send("/history"),
    }
    let header = c.expect_prefix("* history of #lobby: ");
    read_listing(c, &header)
}

/// Reads the messages announced by `header` and the closing line.
#[track_caller]
fn read_listing(c: &mut Client, header: &str) -> Vec<String> {
    let count = header
        .strip_prefix("* history of #lobby: ")
        .and_then(|rest| {
            rest.strip_suffix(" messages")
                .or(rest.strip_suffix(" message").filter(|n| *n == "1"))
        })
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("bad /history header {header:?}"));
    let lines: Vec<String> = (0..count)
        .map(|_| recorded(&c.line()).to_string())
        .collect();
    c.expect("* end of /history");
    lines
}

/// `<sender> text` for each of `texts`.
fn shown(sender: &str, texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| format!("<{sender}> {t}")).collect()
}

/// A barrier: once `c`'s `/who` is answered, every line it sent before has
/// been handled.
#[track_caller]
fn sync(c: &mut Client) {
    c.who();
}

/// `c` says `m00`, `m01`, ... (`n` messages); returns them once all have
/// been handled.
#[track_caller]
fn say_numbered(c: &mut Client, n: usize) -> Vec<String> {
    let texts: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    for t in &texts {
        c.send(t);
    }
    sync(c);
    texts
}

// ---- JSON ----

/// The next object must be the lobby's history holding exactly
/// `messages` (sender, text), oldest first, carrying `id` (or none).
#[track_caller]
fn expect_history(c: &mut Client, messages: &[(&str, &str)], id: Option<Value>) {
    let mut got = recv(c);
    let Some(list) = got["payload"]["messages"].as_array().cloned() else {
        panic!("no payload.messages array in {got}");
    };
    let mut stripped = Vec::new();
    for mut m in list {
        let ts = m
            .as_object_mut()
            .and_then(|o| o.remove("ts"))
            .unwrap_or_else(|| panic!("no ts in {m}"));
        check_ts(&ts);
        let seq = m.as_object_mut().and_then(|o| o.remove("seq"));
        assert!(seq.is_some_and(|s| s.is_u64()), "every item has its seq");
        stripped.push(m);
    }
    got["payload"]["messages"] = Value::Array(stripped);
    let mut want = json!({"type": "history", "payload": {
        "room": "lobby",
        "messages": messages
            .iter()
            .map(|(s, t)| json!({"sender": s, "text": t}))
            .collect::<Vec<_>>(),
    }});
    if let Some(id) = id {
        want["id"] = id;
    }
    assert_eq!(got, want, "unexpected history");
}

/// A new JSON connection as `name` in the lobby: `connect_ack` and then
/// the history, which must hold `messages`, both carrying `id`.
#[track_caller]
fn json_connect(server: &Server, name: &str, id: Value, messages: &[(&str, &str)]) -> Client {
    let mut c = server.connect();
    c.expect(WELCOME);
    send(
        &mut c,
        &json!({"type": "connect", "payload": {"name": name}, "id": id}),
    );
    let mut ack = recv(&mut c);
    let epoch = ack["payload"]
        .as_object_mut()
        .and_then(|p| p.remove("epoch"));
    assert!(
        epoch.is_some_and(|e| e.is_string()),
        "connect_ack has its epoch"
    );
    assert_eq!(
        ack,
        json!({"type": "connect_ack", "payload": {
            "message": "Connected to the room.", "name": name, "room": "lobby", "version": 1,
        }, "id": id})
    );
    expect_history(&mut c, messages, Some(id));
    c
}

/// The next object must be the notification that `name` joined the lobby.
#[track_caller]
fn expect_joined(c: &mut Client, name: &str) {
    assert_eq!(
        recv(c),
        json!({"type": "notification", "payload": {
            "message": format!("{name} has joined the room."),
            "event": "join", "name": name, "room": "lobby",
        }})
    );
}

/// A new text connection choosing `name`, read up to `* you joined`.
#[track_caller]
fn enter(server: &Server, name: &str, users: usize) -> Client {
    let mut c = server.connect();
    c.expect(WELCOME);
    c.send(name);
    c.expect(&joined(name, users));
    c
}

#[test]
fn entering_the_lobby_replays_its_recent_messages_oldest_first() {
    let server = Server::start(&[]);
    let mut alice = server.login("alice");
    // Nothing said yet: an empty history.
    let mut dora = json_connect(&server, "dora", json!("d"), &[]);
    alice.expect("* dora has joined #lobby");
    alice.send("one");
    alice.send("two  with  spaces ");
    expect(&mut dora, message("alice", "lobby", "one"));
    expect(&mut dora, message("alice", "lobby", "two  with  spaces "));
    send(
        &mut dora,
        &json!({"type": "message", "payload": {"text": "three"}}),
    );
    alice.expect("<dora> three");

    // Text: right after `* you joined`, in order, then live traffic.
    let mut bob = enter(&server, "bob", 3);
    expect_recorded(&mut bob, "<alice> one");
    expect_recorded(&mut bob, "<alice> two  with  spaces ");
    expect_recorded(&mut bob, "<dora> three");
    alice.expect("* bob has joined #lobby");
    expect_joined(&mut dora, "bob");
    alice.send("live");
    bob.expect("<alice> live");
    expect(&mut dora, message("alice", "lobby", "live"));

    // JSON: the history object after connect_ack, with its id.
    let _erin = json_connect(
        &server,
        "erin",
        json!(5),
        &[
            ("alice", "one"),
            ("alice", "two  with  spaces "),
            ("dora", "three"),
            ("alice", "live"),
        ],
    );
    alice.expect("* erin has joined #lobby");
    bob.expect("* erin has joined #lobby");
    expect_joined(&mut dora, "erin");
    // Direct messages are not recorded.
    bob.send("/msg alice not for the record");
    alice.expect("*bob* not for the record");
    assert_eq!(
        history(&mut bob, None),
        [
            "<alice> one",
            "<alice> two  with  spaces ",
            "<dora> three",
            "<alice> live"
        ]
    );
}

#[test]
fn history_on_entering_is_limited_by_the_flag() {
    let server = Server::start(&["--history", "2"]);
    let mut alice = server.login("alice");
    for t in ["first", "second", "third"] {
        alice.send(t);
    }
    sync(&mut alice);
    let mut bob = enter(&server, "bob", 2);
    expect_recorded(&mut bob, "<alice> second");
    expect_recorded(&mut bob, "<alice> third");
    alice.expect("* bob has joined #lobby");
    alice.send("fourth");
    bob.expect("<alice> fourth");
    let _carol = json_connect(
        &server,
        "carol",
        json!("c"),
        &[("alice", "third"), ("alice", "fourth")],
    );
    bob.expect("* carol has joined #lobby");
    // /history is not limited by it.
    assert_eq!(
        history(&mut bob, Some(10)),
        shown("alice", &["first", "second", "third", "fourth"])
    );
}

#[test]
fn history_n_lists_the_last_n_even_beyond_what_memory_keeps() {
    // With --history 1, memory keeps the last 20: older ones come from
    // the database.
    let server = Server::start(&["--history", "1"]);
    let mut alice = server.login("alice");
    let texts = say_numbered(&mut alice, 30);
    let all: Vec<&str> = texts.iter().map(String::as_str).collect();

    let mut bob = enter(&server, "bob", 2);
    expect_recorded(&mut bob, "<alice> m29");
    alice.expect("* bob has joined #lobby");
    assert_eq!(history(&mut bob, Some(50)), shown("alice", &all));
    assert_eq!(history(&mut bob, Some(30)), shown("alice", &all));
    assert_eq!(history(&mut bob, Some(25)), shown("alice", &all[5..]));
    assert_eq!(history(&mut bob, None), shown("alice", &all[10..]));
    assert_eq!(history(&mut bob, Some(3)), shown("alice", &all[27..]));
    bob.send("/history 1");
    bob.expect("* history of #lobby: 1 message");
    expect_recorded(&mut bob, "<alice> m29");
    bob.expect("* end of /history");
    for bad in ["/history 0", "/history 1001", "/history lots"] {
        bob.send(bad);
        bob.expect_prefix("! usage: /history");
    }

    let mut jo = json_connect(&server, "jo", json!(1), &[("alice", "m29")]);
    alice.expect("* jo has joined #lobby");
    bob.expect("* jo has joined #lobby");
    let pairs =
        |from: usize| -> Vec<(&str, &str)> { all[from..].iter().map(|t| ("alice", *t)).collect() };
    send(
        &mut jo,
        &json!({"type": "history", "payload": {"count": 50}, "id": 7}),
    );
    expect_history(&mut jo, &pairs(0), Some(json!(7)));
    send(
        &mut jo,
        &json!({"type": "history", "payload": {"count": 3}, "id": "s"}),
    );
    expect_history(&mut jo, &pairs(27), Some(json!("s")));
    // Without a count: 20.
    send(&mut jo, &json!({"type": "history", "id": "d"}));
    expect_history(&mut jo, &pairs(10), Some(json!("d")));
    // Later messages are in it too, in order.
    alice.send("m30");
    bob.expect("<alice> m30");
    expect(&mut jo, message("alice", "lobby", "m30"));
    send(
        &mut jo,
        &json!({"type": "history", "payload": {"count": 1000}}),
    );
    let mut with_m30 = pairs(0);
    with_m30.push(("alice", "m30"));
    expect_history(&mut jo, &with_m30, None);
}

#[test]
fn history_zero_sends_nothing_on_entering() {
    let server = Server::start(&["--history", "0"]);
    let mut alice = server.login("alice");
    alice.send("old one");
    sync(&mut alice);
    let mut bob = enter(&server, "bob", 2);
    alice.expect("* bob has joined #lobby");
    alice.send("new one");
    // The very next line is live.
    bob.expect("<alice> new one");
    // JSON still gets the (empty) history object.
    let mut carol = json_connect(&server, "carol", json!("c"), &[]);
    alice.expect("* carol has joined #lobby");
    bob.expect("* carol has joined #lobby");
    alice.send("newer");
    bob.expect("<alice> newer");
    expect(&mut carol, message("alice", "lobby", "newer"));
    // It was all recorded.
    assert_eq!(
        history(&mut bob, None),
        shown("alice", &["old one", "new one", "newer"])
    );
}

#[test]
fn history_keep_prunes_to_the_last_n_across_a_restart() {
    let db = TempDb::new("history-keep");
    let args = ["--db", db.as_str(), "--history-keep", "5"];
    let server = Server::start(&args);
    let mut alice = server.login("alice");
    let texts = say_numbered(&mut alice, 12);
    let all: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(history(&mut alice, Some(100)), shown("alice", &all[7..]));

    stop(server, vec![alice]);

    let server = Server::start(&args);
    let mut bob = enter(&server, "bob", 1);
    for t in &all[7..] {
        expect_recorded(&mut bob, &format!("<alice> {t}"));
    }
    assert_eq!(history(&mut bob, Some(100)), shown("alice", &all[7..]));
    // Still pruned as more come in.
    bob.send("m12");
    sync(&mut bob);
    let mut want = shown("alice", &all[8..]);
    want.push("<bob> m12".into());
    assert_eq!(history(&mut bob, Some(100)), want);
}

#[test]
fn history_keep_zero_records_nothing() {
    let db = TempDb::new("history-keep-zero");
    let server = Server::start(&["--db", db.as_str(), "--history-keep", "0"]);
    let mut alice = server.login("alice");
    alice.send("not kept");
    sync(&mut alice);
    assert_eq!(history(&mut alice, None), Vec::<String>::new());
    let mut bob = enter(&server, "bob", 2);
    alice.expect("* bob has joined #lobby");
    alice.send("live");
    bob.expect("<alice> live");
    let carol = json_connect(&server, "carol", json!(0), &[]);
    bob.expect("* carol has joined #lobby");
    assert_eq!(history(&mut bob, Some(1000)), Vec::<String>::new());

    // Nothing reached the file either.
    drop(carol);
    stop(server, vec![alice, bob]);
    let server = Server::start(&["--db", db.as_str()]);
    let mut dave = enter(&server, "dave", 1);
    assert_eq!(history(&mut dave, Some(1000)), Vec::<String>::new());
}

#[test]
fn after_kill_9_the_database_holds_a_gap_free_prefix() {
    const TOTAL: usize = 1000;
    const SEEN_BEFORE_KILL: usize = 100;
    // Long enough that storing them takes a while: the kill lands while
    // they are being written.
    let pad = "x".repeat(400);
    let text = |i: usize| format!("m{i:04} {pad}");
    let line = |i: usize| format!("<a> {}", text(i));

    let db = TempDb::new("history-kill");
    let mut server = Server::start(&["--db", db.as_str(), "--rate", "0"]);
    let (sender, mut listener) = server.pair();
    let mut out = sender.stream().try_clone().expect("clone the socket");
    let lines: Vec<String> = (0..TOTAL).map(|i| format!("{}\n", text(i))).collect();
    let writer = thread::spawn(move || {
        for chunk in lines.chunks(10) {
            // The server dies under it: a failed write ends the sending.
            if out.write_all(chunk.concat().as_bytes()).is_err() {
                break;
            }
        }
    });
    for i in 0..SEEN_BEFORE_KILL {
        listener.expect(&line(i));
    }
    // More than memory keeps, so this is answered from the database once
    // everything recorded before it is stored: then at least those are
    // committed. Live messages keep arriving meanwhile.
    listener.send("/history 1000");
    let mut live = SEEN_BEFORE_KILL;
    let header = loop {
        let got = listener.line();
        if got.starts_with("* history of #lobby: ") {
            break got;
        }
        assert_eq!(got, line(live), "live traffic out of order");
        live += 1;
    };
    let committed = read_listing(&mut listener, &header);
    assert!(
        committed.len() >= SEEN_BEFORE_KILL,
        "/history 1000 lists {} messages; {SEEN_BEFORE_KILL} were said before it",
        committed.len()
    );
    for (i, got) in committed.iter().enumerate() {
        assert_eq!(*got, line(i), "/history before the kill");
    }
    server.signal(libc::SIGKILL);
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(!status.success(), "chatd survived kill -9: {status}");
    writer.join().expect("the writer thread");
    drop((sender, listener, server));

    let server = Server::start(&[
        "--db",
        db.as_str(),
        "--history",
        "1000",
        "--history-keep",
        "10000",
        "--rate",
        "0",
    ]);
    let mut c = enter(&server, "c", 1);
    c.send("/history 1000");
    // On entering: what was stored, as recorded lines; then the listing.
    let mut replay = Vec::new();
    let header = loop {
        let got = c.line();
        if got.starts_with("* history of #lobby: ") {
            break got;
        }
        replay.push(recorded(&got).to_string());
    };
    let stored = read_listing(&mut c, &header);
    assert_eq!(replay, stored, "entering and /history disagree");
    let k = stored.len();
    eprintln!(
        "kill -9: {} listed as stored before it, {k} of {TOTAL} in the database after",
        committed.len()
    );
    for (i, got) in stored.iter().enumerate() {
        assert_eq!(
            *got,
            line(i),
            "message {i} of the {k} stored is not m{i:04}: a gap, a duplicate or a stray"
        );
    }
    assert!(
        k >= committed.len(),
        "{k} messages after kill -9, but {} were listed from the database before it",
        committed.len()
    );
}
