//! Resuming without gaps, over real TCP in JSON mode: `seq` and `epoch`,
//! `since` after a disconnect (from memory, from the database, across a
//! restart, and from another epoch), `before` paging, and session tokens:
//! login, expiry, and revocation by a new password and by logout
//! (PROTOCOL.md, "Resuming without gaps").

mod common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::json::{expect_error, recv, send};
use common::{Client, Server, TempDb, WELCOME, stop};

const FAST: [&str; 4] = ["--argon2-memory", "64", "--argon2-passes", "1"];

fn start(db: &TempDb, more: &[&str]) -> Server {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--db", db.as_str()]);
    args.extend_from_slice(more);
    Server::start(&args)
}

/// Connects over JSON with `payload`; returns the client, its
/// `connect_ack` and the `history` after it.
#[track_caller]
fn connect(server: &Server, payload: Value) -> (Client, Value, Value) {
    let mut c = server.connect();
    send(
        &mut c,
        &json!({"type": "connect", "payload": payload, "id": "c"}),
    );
    c.expect(WELCOME);
    let ack = recv(&mut c);
    assert_eq!(ack["type"], "connect_ack", "{ack}");
    let history = recv(&mut c);
    assert_eq!(history["type"], "history", "{history}");
    (c, ack, history)
}

/// The texts and seqs of a history object.
fn items(history: &Value) -> Vec<(String, u64)> {
    history["payload"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["text"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The next message's text and seq.
#[track_caller]
fn message(c: &mut Client) -> (String, u64) {
    loop {
        let v = recv(c);
        if v["type"] == "message" {
            return (
                v["payload"]["text"].as_str().unwrap().to_string(),
                v["payload"]["seq"]
                    .as_u64()
                    .expect("a recorded message's seq"),
            );
        }
    }
}

/// `alice` (text) says `texts`, then reads her own `/history 1` back, so
/// every line was handled when it returns.
fn say(alice: &mut Client, texts: impl IntoIterator<Item = String>) {
    for t in texts {
        alice.send(&t);
    }
    alice.send("/rooms");
    alice.read_until(|l| l == "* end of /rooms");
}

#[test]
fn since_sends_exactly_what_was_missed_from_memory_or_the_database() {
    let db = TempDb::new("resume-since");
    let server = start(&db, &[]);
    let mut alice = server.login("alice");
    let (mut bob, ack, _) = connect(&server, json!({"name": "bob"}));
    let epoch = ack["payload"]["epoch"].as_str().unwrap().to_string();
    alice.expect("* bob has joined #lobby");
    say(&mut alice, (0..3).map(|i| format!("seen {i}")));
    let mut last = 0;
    for i in 0..3 {
        let (text, seq) = message(&mut bob);
        assert_eq!(text, format!("seen {i}"));
        assert!(i == 0 || seq > last, "seq grows");
        last = seq;
    }
    drop(bob);
    alice.expect("* bob has disconnected (connection closed)");
    // A few missed: memory holds them.
    say(&mut alice, (0..5).map(|i| format!("missed {i}")));
    let since = json!({"name": "bob", "since": last, "epoch": epoch});
    let (bob, _, history) = connect(&server, since.clone());
    let got = items(&history);
    let texts: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        ["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"]
    );
    assert!(got.iter().all(|(_, s)| *s > last));
    assert!(history["payload"].get("truncated").is_none(), "{history}");
    drop(bob);
    alice.read_until(|l| l == "* bob has disconnected (connection closed)");

    // More than memory holds (20): the database answers, still exactly.
    let upto = got.last().unwrap().1;
    say(&mut alice, (0..60).map(|i| format!("long gone {i}")));
    let since = json!({"name": "bob", "since": upto, "epoch": epoch});
    let (_bob, _, history) = connect(&server, since);
    let got = items(&history);
    assert_eq!(got.len(), 60, "{history}");
    for (i, (text, seq)) in got.iter().enumerate() {
        assert_eq!(text, &format!("long gone {i}"));
        assert_eq!(*seq, upto + 1 + i as u64, "consecutive numbers");
    }
}

#[test]
fn resuming_across_a_restart_and_from_another_epoch() {
    let db = TempDb::new("resume-restart");
    let server = start(&db, &[]);
    let mut alice = server.login("alice");
    let (mut bob, ack, _) = connect(&server, json!({"name": "bob", "room": "lobby"}));
    let epoch = ack["payload"]["epoch"].as_str().unwrap().to_string();
    say(&mut alice, ["before".to_string()]);
    let (_, last) = message(&mut bob);
    drop(bob);
    say(&mut alice, ["while away 1".to_string()]);
    stop(server, vec![alice]);

    let server = start(&db, &[]);
    let mut alice = server.login("alice");
    say(&mut alice, ["while away 2".to_string()]);
    let (_bob, ack, history) = connect(
        &server,
        json!({"name": "bob", "since": last, "epoch": epoch}),
    );
    assert_eq!(
        ack["payload"]["epoch"], epoch,
        "the same database, the same epoch"
    );
    let texts: Vec<String> = items(&history).into_iter().map(|(t, _)| t).collect();
    assert_eq!(texts, ["while away 1", "while away 2"]);

    // Another epoch (a new database): the usual replay, marked.
    let (_carol, _, history) = connect(
        &server,
        json!({"name": "carol", "since": last, "epoch": "not-this-one"}),
    );
    assert_eq!(history["payload"]["truncated"], true, "{history}");
    assert!(!items(&history).is_empty());
}

#[test]
fn before_pages_back_through_the_whole_history() {
    let db = TempDb::new("resume-before");
    let server = start(&db, &[]);
    let mut alice = server.login("alice");
    say(&mut alice, (0..45).map(|i| format!("m{i}")));
    let (mut bob, _, history) = connect(&server, json!({"name": "bob"}));
    let mut seen: Vec<(String, u64)> = items(&history);
    assert_eq!(seen.len(), 20);
    loop {
        let oldest = seen[0].1;
        send(
            &mut bob,
            &json!({"type": "history", "payload": {"before": oldest, "count": 10}, "id": oldest}),
        );
        let page = recv(&mut bob);
        assert_eq!(page["id"], oldest, "{page}");
        let got = items(&page);
        if got.is_empty() {
            break;
        }
        assert!(got.last().unwrap().1 < oldest);
        seen.splice(0..0, got);
    }
    let texts: Vec<String> = seen.iter().map(|(t, _)| t.clone()).collect();
    let want: Vec<String> = (0..45).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want, "every message once, in order");
}

/// Registers `name` over JSON; returns the connection and its token.
fn register(server: &Server, name: &str, password: &str) -> (Client, String) {
    let (mut c, ack, _) = connect(server, json!({"name": name}));
    assert!(
        ack["payload"].get("token").is_none(),
        "a guest gets no token"
    );
    send(
        &mut c,
        &json!({"type": "register", "payload": {"password": password}, "id": "r"}),
    );
    let done = recv(&mut c);
    assert_eq!(done["payload"]["event"], "register", "{done}");
    let token = done["payload"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    (c, token)
}

#[test]
fn tokens_log_in_without_the_password_until_revoked_or_expired() {
    let db = TempDb::new("resume-tokens");
    let server = start(&db, &["--token-ttl", "3"]);
    let (first, token) = register(&server, "tess", "tess password");
    drop(first);
    // The token instead of the password; the answer carries a new one.
    let (c, ack, _) = connect(&server, json!({"name": "tess", "token": token}));
    let fresh = ack["payload"]["token"]
        .as_str()
        .expect("a new token")
        .to_string();
    drop(c);
    // A forged or foreign token is bad_password and no attempt.
    for bad in [
        token.replace("tess", "bob"),
        format!("{token}0"),
        "x".into(),
    ] {
        let mut c = server.connect();
        send(
            &mut c,
            &json!({"type": "connect", "payload": {"name": "tess", "token": bad}, "id": 1}),
        );
        c.expect(WELCOME);
        expect_error(&mut c, "bad_password", Some(json!(1)));
    }
    // A password login gets one too.
    let (mut c, ack, _) = connect(
        &server,
        json!({"name": "tess", "password": "tess password"}),
    );
    assert!(ack["payload"]["token"].is_string());
    // Logout: this session's tokens stop working, the connection stays.
    send(&mut c, &json!({"type": "logout", "id": "out"}));
    let out = recv(&mut c);
    assert_eq!(
        (&out["payload"]["event"], &out["id"]),
        (&json!("logout"), &json!("out"))
    );
    send(&mut c, &json!({"type": "who"}));
    assert_eq!(recv(&mut c)["type"], "who");
    drop(c);
    let mut refused = server.connect();
    send(
        &mut refused,
        &json!({"type": "connect", "payload": {"name": "tess", "token": fresh}}),
    );
    refused.expect(WELCOME);
    expect_error(&mut refused, "bad_password", None);

    // A new password ends the tokens made before it.
    let (mut c, ack, _) = connect(
        &server,
        json!({"name": "tess", "password": "tess password"}),
    );
    let before_passwd = ack["payload"]["token"].as_str().unwrap().to_string();
    send(
        &mut c,
        &json!({"type": "passwd", "payload": {"old": "tess password", "new": "another one"}}),
    );
    assert_eq!(recv(&mut c)["payload"]["event"], "passwd");
    drop(c);
    let mut refused = server.connect();
    send(
        &mut refused,
        &json!({"type": "connect", "payload": {"name": "tess", "token": before_passwd}}),
    );
    refused.expect(WELCOME);
    expect_error(&mut refused, "bad_password", None);

    // Tokens survive a restart, and expire on time.
    let (c, ack, _) = connect(&server, json!({"name": "tess", "password": "another one"}));
    let made = Instant::now();
    let token = ack["payload"]["token"].as_str().unwrap().to_string();
    drop(c);
    stop(server, vec![]);
    let server = start(&db, &["--token-ttl", "3"]);
    let (c, _, _) = connect(&server, json!({"name": "tess", "token": token}));
    drop(c);
    thread::sleep((made + Duration::from_secs(4)).saturating_duration_since(Instant::now()));
    let mut late = server.connect();
    send(
        &mut late,
        &json!({"type": "connect", "payload": {"name": "tess", "token": token}}),
    );
    late.expect(WELCOME);
    expect_error(&mut late, "bad_password", None);
}

#[test]
fn a_clients_since_never_sets_a_rooms_numbering() {
    let db = TempDb::new("resume-huge-since");
    let server = start(&db, &[]);
    let (mut bob, ack, _) = connect(&server, json!({"name": "bob"}));
    let epoch = ack["payload"]["epoch"].clone();
    // A room nobody has spoken in, entered "after" the largest number.
    send(
        &mut bob,
        &json!({"type": "join", "payload": {"room": "fresh", "since": u64::MAX, "epoch": epoch}}),
    );
    let joined = recv(&mut bob);
    assert_eq!(joined["payload"]["event"], "join", "{joined}");
    let history = recv(&mut bob);
    assert!(items(&history).is_empty(), "{history}");
    let mut alice = server.login("alice");
    alice.send("/join fresh");
    alice.read_until(|l| l == "* you joined #fresh");
    say(&mut alice, ["first words".to_string()]);
    assert_eq!(message(&mut bob), ("first words".to_string(), 0));
}
