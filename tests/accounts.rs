//! Accounts over real TCP: registering, logging in (text and JSON) with
//! its delays and its three strikes, changing a password, a login that
//! replaces an older connection, registered names held while their owner is
//! away, accounts surviving a restart, slow password checks kept off the
//! event loop, the operator's `chatd accounts` commands beside a running
//! server, and a database that cannot be used. Each test runs its own
//! `chatd` (PROTOCOL.md, "Accounts and recorded history").

mod common;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::json::{expect, expect_error, message, recv, send};
use common::{
    Client, Server, TIMEOUT, TempDb, TempPath, WELCOME, chatd_path, joined, stop, wait_child,
    wait_with_stderr,
};

/// The base delay of a wrong password in these tests, in seconds.
const DELAY: &str = "0.05";
const DELAY_MIN: Duration = Duration::from_millis(50);

/// Flags that keep hashing and wrong-password delays short.
const FAST: [&str; 6] = [
    "--login-delay",
    DELAY,
    "--argon2-memory",
    "64",
    "--argon2-passes",
    "1",
];

/// Flags that make a password hash slow (hundreds of milliseconds) and
/// leave room for one job in the queue of password checks.
const SLOW: [&str; 6] = [
    "--argon2-memory",
    "65536",
    "--argon2-passes",
    "12",
    "--auth-queue",
    "1",
];

/// `FAST` plus `more`.
fn fast<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut args = FAST.to_vec();
    args.extend_from_slice(more);
    args
}

fn registered(name: &str) -> String {
    format!("* {name} is now registered: log in with this password from now on")
}

/// Registers `c`'s current name `name` with `password`.
#[track_caller]
fn register(c: &mut Client, name: &str, password: &str) {
    c.send(&format!("/register {password}"));
    c.expect(&registered(name));
}

/// Says `/quit` and reads the goodbye and the close.
#[track_caller]
fn quit(c: &mut Client) {
    c.send("/quit");
    c.expect("* goodbye");
    c.expect_eof();
}

/// A new text connection that has chosen the registered `name` and been
/// asked for its password (shown as `shown`).
#[track_caller]
fn prompted(server: &Server, name: &str, shown: &str) -> Client {
    // Speaking first: the welcome then comes at once, not after the
    // server's 250 ms wait for a silent client.
    let mut c = server.connect();
    c.send(name);
    c.expect(WELCOME);
    c.expect(&format!("* password for {shown}:"));
    c
}

/// Sends a wrong password at the prompt; the answer must come after at
/// least the base delay, then the prompt again (or, if `last`, the close).
#[track_caller]
fn wrong(c: &mut Client, name: &str, password: &str, last: bool) {
    let t = Instant::now();
    c.send(password);
    c.expect(&format!("! wrong password for {name}"));
    let took = t.elapsed();
    assert!(
        took >= DELAY_MIN,
        "a wrong password was answered after {took:?}, before the {DELAY_MIN:?} delay"
    );
    if last {
        c.expect_eof();
    } else {
        c.expect(&format!("* password for {name}:"));
    }
}

/// Reads a `* ` listing that ends with `* end of /CMD`, header included.
#[track_caller]
fn listing(c: &mut Client, cmd: &str) -> Vec<String> {
    c.send(&format!("/{cmd}"));
    let end = format!("* end of /{cmd}");
    let mut lines = c.read_until(|l| l == end);
    lines.push(end);
    lines
}

/// The whole `/users` listing of `users` (each `NAME online` or
/// `NAME offline`, in the order shown): header, lines and closing line.
fn users_listing(users: &[&str]) -> Vec<String> {
    let mut lines = vec![format!("* users: {}", users.len())];
    lines.extend(users.iter().map(|u| format!("*   {u}")));
    lines.push("* end of /users".to_string());
    lines
}

fn connect_req(name: &str, password: Option<&str>, id: Value) -> Value {
    let payload = match password {
        Some(p) => json!({"name": name, "password": p}),
        None => json!({ "name": name }),
    };
    json!({"type": "connect", "payload": payload, "id": id})
}

/// Reads `connect_ack` for `name` in the lobby and the history after it,
/// both with `id`.
#[track_caller]
fn expect_ack(c: &mut Client, name: &str, id: Value) {
    // `expect` reads the history after a `connect_ack` as well.
    expect(
        c,
        json!({"type": "connect_ack", "payload": {
            "message": "Connected to the room.", "name": name, "room": "lobby", "version": 1,
        }, "id": id}),
    );
}

/// A new JSON connection logged in as `name`.
#[track_caller]
fn json_login(server: &Server, name: &str, password: Option<&str>) -> Client {
    let mut c = server.connect();
    c.expect(WELCOME);
    send(&mut c, &connect_req(name, password, json!("login")));
    expect_ack(&mut c, name, json!("login"));
    c
}

/// Runs `chatd accounts ARGS --db DB`, with `stdin` as its input.
fn accounts(db: &TempDb, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(chatd_path())
        .arg("accounts")
        .args(args)
        .args(["--db", db.as_str()])
        .args(["--argon2-memory", "64", "--argon2-passes", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chatd accounts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    // Little output: the pipes cannot fill before it exits.
    let status = wait_child(&mut child, TIMEOUT);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn text_login_asks_the_password_delays_wrong_ones_and_closes_after_three() {
    // At debug level, the most a log says: passwords never appear at all.
    let server = Server::start(&fast(&["-v"]));
    let mut alice = server.login("alice");
    alice.send("/register short");
    alice.expect("! password too short: use 8-256 characters");
    // The rest of the line, exactly: the spaces around it are part of it.
    register(&mut alice, "alice", " open sesame ");
    alice.send("/register something else");
    alice.expect("! alice is already registered");
    quit(&mut alice);

    // Case is ignored; the name is shown as registered.
    let mut alice = prompted(&server, "ALICE", "alice");
    // Trimmed is not the same password.
    wrong(&mut alice, "alice", "open sesame", false);
    alice.send(" open sesame ");
    alice.expect(&joined("alice", 1));

    // Three wrong guesses from another connection: closed. The account's
    // holder is not disturbed.
    let mut guesser = prompted(&server, "alice", "alice");
    wrong(&mut guesser, "alice", "guess one", false);
    // Too short to be anyone's password: still wrong, still delayed.
    wrong(&mut guesser, "alice", "short", false);
    wrong(&mut guesser, "alice", "guess three", true);
    alice.send("/rooms");
    alice.expect_lines(&["* rooms: 1", "*   #lobby 1", "* end of /rooms"]);

    // The log has come as far as the guesser's close, and holds none of
    // the passwords sent.
    server.wait_log("closed: wrong password");
    let log = server.log();
    for secret in ["open sesame", "guess one", "guess three"] {
        assert!(
            !log.iter().any(|l| l.contains(secret)),
            "{secret:?} in the log: {log:#?}"
        );
    }
}

#[test]
fn json_login_needs_the_password_and_closes_after_three_wrong() {
    let server = Server::start(&FAST);
    let mut jay = json_login(&server, "Jay", None);
    send(
        &mut jay,
        &json!({"type": "register", "payload": {"password": "jays password"}, "id": 1}),
    );
    expect(
        &mut jay,
        json!({"type": "notification", "payload": {
            "event": "register", "message": "Jay is now registered.", "name": "Jay",
        }, "id": 1}),
    );
    send(&mut jay, &json!({"type": "quit"}));
    expect(
        &mut jay,
        json!({"type": "notification", "payload": {
            "event": "quit", "message": "Jay has quit.", "name": "Jay", "room": "lobby",
        }}),
    );
    jay.expect_eof();

    let mut jay = server.connect();
    jay.expect(WELCOME);
    // No password for a registered name: refused at once, still open.
    send(&mut jay, &connect_req("jay", None, json!("a")));
    expect_error(&mut jay, "bad_password", Some(json!("a")));
    // A wrong one: refused after the delay.
    let t = Instant::now();
    send(
        &mut jay,
        &connect_req("jay", Some("not jays password"), json!("b")),
    );
    expect_error(&mut jay, "bad_password", Some(json!("b")));
    assert!(t.elapsed() >= DELAY_MIN, "answered after {:?}", t.elapsed());
    // The right one: in, with the name as registered.
    send(
        &mut jay,
        &connect_req("jay", Some("jays password"), json!("c")),
    );
    expect_ack(&mut jay, "Jay", json!("c"));

    let mut guesser = server.connect();
    guesser.expect(WELCOME);
    for i in 0..3 {
        send(
            &mut guesser,
            &connect_req("Jay", Some(&format!("guess number {i}")), json!(i)),
        );
        expect_error(&mut guesser, "bad_password", Some(json!(i)));
    }
    guesser.expect_eof();
    // Jay is still there.
    send(&mut jay, &json!({"type": "rooms", "id": "r"}));
    expect(
        &mut jay,
        json!({"type": "rooms", "payload": {"rooms": [{"name": "lobby", "users": 1}]}, "id": "r"}),
    );
}

#[test]
fn passwd_replaces_the_password_in_text_and_json() {
    let server = Server::start(&FAST);
    let mut bob = server.login("bob");
    bob.send("/passwd whatever1 whatever2");
    bob.expect("! bob is not registered (/register PASSWORD)");
    register(&mut bob, "bob", "firstpass1");
    // OLD is checked (and a wrong one is delayed like a login).
    let t = Instant::now();
    bob.send("/passwd notmypass new password 2");
    bob.expect("! wrong password for bob");
    assert!(t.elapsed() >= DELAY_MIN, "answered after {:?}", t.elapsed());
    bob.send("/passwd firstpass1 new password 2");
    bob.expect("* password changed for bob");
    bob.send("/passwd firstpass1 x");
    bob.expect("! password too short: use 8-256 characters");
    quit(&mut bob);

    let mut bob = prompted(&server, "bob", "bob");
    wrong(&mut bob, "bob", "firstpass1", false);
    bob.send("new password 2");
    bob.expect(&joined("bob", 1));

    // JSON, with an id on the answer.
    let mut jo = json_login(&server, "jo", None);
    bob.expect("* jo has joined #lobby");
    send(
        &mut jo,
        &json!({"type": "register", "payload": {"password": "jo first pass"}}),
    );
    expect(
        &mut jo,
        json!({"type": "notification", "payload": {
            "event": "register", "message": "jo is now registered.", "name": "jo",
        }}),
    );
    send(
        &mut jo,
        &json!({"type": "passwd", "payload": {"old": "jo first pass", "new": "jo second pass"}, "id": 9}),
    );
    expect(
        &mut jo,
        json!({"type": "notification", "payload": {
            "event": "passwd", "message": "Password changed for jo.", "name": "jo",
        }, "id": 9}),
    );
    send(&mut jo, &json!({"type": "quit"}));
    recv(&mut jo);
    jo.expect_eof();
    bob.expect("* jo has quit");

    let mut jo = server.connect();
    jo.expect(WELCOME);
    send(&mut jo, &connect_req("jo", Some("jo first pass"), json!(1)));
    expect_error(&mut jo, "bad_password", Some(json!(1)));
    send(
        &mut jo,
        &connect_req("jo", Some("jo second pass"), json!(2)),
    );
    expect_ack(&mut jo, "jo", json!(2));
    bob.expect("* jo has joined #lobby");
}

#[test]
fn logging_in_again_replaces_the_older_connection() {
    let server = Server::start(&FAST);
    let (mut alice, mut bob) = server.pair();
    register(&mut alice, "a", "alices password");

    // A second login with the right password: the first is told and
    // closed, the room sees it go and come back.
    let mut again = prompted(&server, "a", "a");
    again.send("alices password");
    again.expect(&joined("a", 2));
    alice.expect("* you have disconnected (logged in from another connection)");
    alice.expect_eof();
    bob.expect_lines(&[
        "* a has disconnected (logged in from another connection)",
        "* a has joined #lobby",
    ]);
    bob.send("/who");
    bob.expect_lines(&[
        "* users in #lobby: 2",
        "*   a online",
        "*   b online",
        "* end of /who",
    ]);

    // An older connection whose owner is gone (it reads nothing and says
    // nothing, like a dead peer): a JSON login replaces it as well.
    let mut json = json_login(&server, "a", Some("alices password"));
    bob.expect_lines(&[
        "* a has disconnected (logged in from another connection)",
        "* a has joined #lobby",
    ]);
    again.expect("* you have disconnected (logged in from another connection)");
    again.expect_eof();
    bob.send("hello a");
    expect(&mut json, message("b", "lobby", "hello a"));
}

#[test]
fn a_registered_name_is_held_while_its_owner_is_away() {
    let server = Server::start(&FAST);
    let (mut alice, mut bob) = server.pair();
    register(&mut alice, "a", "alices password");

    // Someone else cannot take it, in any case.
    bob.send("/nick a");
    bob.expect("! name \"a\" is taken, choose another");
    bob.send("/nick A");
    bob.expect("! name \"A\" is taken, choose another");

    // Its owner can leave it and come back without a password.
    alice.send("/nick alicia");
    alice.expect("* you are now known as alicia");
    bob.expect("* a is now known as alicia");
    assert_eq!(
        listing(&mut bob, "users"),
        users_listing(&["a offline", "alicia online", "b online"])
    );
    bob.send("/nick a");
    bob.expect("! name \"a\" is taken, choose another");
    alice.send("/nick a");
    alice.expect("* you are now known as a");
    bob.expect("* alicia is now known as a");

    // Gone: shown offline.
    quit(&mut alice);
    bob.expect("* a has quit");
    assert_eq!(
        listing(&mut bob, "users"),
        users_listing(&["a offline", "b online"])
    );

    // At the password prompt, /nick chooses another name instead.
    let mut c = prompted(&server, "a", "a");
    c.send("/nick carol");
    c.expect(&joined("carol", 2));
    bob.expect("* carol has joined #lobby");
    // A JSON connect without the password does not get the name either.
    let mut j = server.connect();
    j.expect(WELCOME);
    send(&mut j, &connect_req("a", None, json!(1)));
    expect_error(&mut j, "bad_password", Some(json!(1)));
    assert_eq!(
        listing(&mut bob, "users"),
        users_listing(&["a offline", "b online", "carol online"])
    );
}

#[test]
fn accounts_and_history_survive_a_restart() {
    let db = TempDb::new("accounts-restart");
    let args = fast(&["--db", db.as_str()]);
    let server = Server::start(&args);
    let (mut alice, mut bob) = server.pair();
    register(&mut alice, "a", "alices password");
    alice.send("said before the restart");
    bob.expect("<a> said before the restart");
    stop(server, vec![alice, bob]);

    let server = Server::start(&args);
    let mut bob = server.connect();
    bob.expect(WELCOME);
    bob.send("b");
    bob.expect(&joined("b", 1));
    let line = bob.line();
    assert!(
        line.starts_with('[') && line.ends_with("] <a> said before the restart"),
        "expected the recorded message, got {line:?}"
    );
    assert_eq!(
        listing(&mut bob, "users"),
        users_listing(&["a offline", "b online"])
    );
    let mut alice = prompted(&server, "a", "a");
    wrong(&mut alice, "a", "not the password", false);
    alice.send("alices password");
    alice.expect(&joined("a", 2));
    bob.expect("* a has joined #lobby");
}

#[test]
fn a_slow_password_check_does_not_hold_up_the_chat_and_a_full_queue_is_busy() {
    let server = Server::start(&[&["--login-delay", DELAY], &SLOW[..]].concat());
    let mut carol = server.login("carol");
    let t = Instant::now();
    register(&mut carol, "carol", "carols password");
    let hash_time = t.elapsed();
    assert!(
        hash_time >= Duration::from_millis(300),
        "hashing took only {hash_time:?}: too fast for this test to mean anything"
    );
    quit(&mut carol);

    let (mut a, mut b) = server.pair();
    let mut carol = prompted(&server, "carol", "carol");
    let t0 = Instant::now();
    carol.send("carols password");
    // While it is being checked, the others talk, each waiting for the
    // other's line.
    for i in 0..20 {
        a.send(&format!("ping {i}"));
        b.expect(&format!("<a> ping {i}"));
        b.send(&format!("pong {i}"));
        a.expect(&format!("<b> pong {i}"));
    }
    let exchange = t0.elapsed();
    assert!(
        !carol.has_input(),
        "carol's login was answered before the {exchange:?} exchange ended"
    );

    // Another login while the one check is under way: busy, in JSON and
    // in text (asked again).
    let mut j = server.connect();
    send(
        &mut j,
        &json!({"type": "connect", "payload": {"name": "carol", "password": "carols password"}}),
    );
    j.expect(WELCOME);
    expect_error(&mut j, "server_busy", None);
    let mut t = prompted(&server, "carol", "carol");
    t.send("carols password");
    t.expect("! server busy, try again in a moment");
    t.expect("* password for carol:");
    assert!(
        !carol.has_input(),
        "carol's check ended before the busy answers: they prove nothing"
    );

    carol.expect(&joined("carol", 3));
    let check = t0.elapsed();
    a.expect("* carol has joined #lobby");
    b.expect("* carol has joined #lobby");
    eprintln!("hash {hash_time:?}, check {check:?}, exchange of 40 lines {exchange:?}");
    assert!(
        exchange * 2 < check,
        "the exchange took {exchange:?}, the check {check:?}"
    );
}

#[test]
fn a_busy_answer_carries_its_request_id_and_the_connection_is_read_again() {
    let server = Server::start(&SLOW);
    let mut alice = server.login("alice");
    let mut jim = json_login(&server, "jim", None);
    let mut tom = server.login("tom");
    jim.expect_prefix(r#"{"type":"notification","payload":{"message":"tom has joined"#);
    alice.read_until(|l| l == "* tom has joined #lobby");

    // One slow job takes the whole queue.
    let t = Instant::now();
    alice.send("/register alices password");
    // Round trips after it: by their answers, the loop has read alice's
    // line (it is in the same turn at the latest).
    send(&mut jim, &json!({"type": "rooms", "id": "x"}));
    assert_eq!(recv(&mut jim)["id"], "x");
    tom.send("/rooms");
    tom.expect_lines(&["* rooms: 1", "*   #lobby 3", "* end of /rooms"]);

    send(
        &mut jim,
        &json!({"type": "register", "payload": {"password": "jims password"}, "id": "r"}),
    );
    tom.send("/register toms password");
    tom.expect("! server busy, try again in a moment");
    // Both must still be served while alice's hash runs.
    send(&mut jim, &json!({"type": "rooms", "id": "y"}));
    tom.send("/rooms");
    alice.expect(&registered("alice"));
    let hashing = t.elapsed();
    assert!(
        tom.has_input(),
        "tom's /rooms after a busy answer was not answered within {hashing:?}: \
         the connection is no longer read"
    );
    tom.expect_lines(&["* rooms: 1", "*   #lobby 3", "* end of /rooms"]);
    let busy = recv(&mut jim);
    assert_eq!(busy["payload"]["code"], "server_busy", "{busy}");
    assert!(
        jim.has_input(),
        "jim's rooms request after a busy answer was not answered within {hashing:?}: \
         the connection is no longer read"
    );
    assert_eq!(
        busy.get("id"),
        Some(&json!("r")),
        "the busy error does not carry its request's id: {busy}"
    );
    assert_eq!(recv(&mut jim)["id"], "y");
}

#[test]
fn operator_commands_work_beside_a_running_server() {
    let db = TempDb::new("accounts-operator");
    let server = Server::start(&fast(&["--db", db.as_str()]));
    let mut olga = server.login("olga");
    register(&mut olga, "olga", "olgas first");
    quit(&mut olga);
    let mut bob = server.login("bob");

    let out = accounts(&db, &["list"], "");
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.lines().any(|l| l.starts_with("olga\tregistered ")),
        "olga not listed: {listed:?}"
    );
    assert_eq!(listed.lines().count(), 1, "{listed:?}");

    // A new password from stdin, used at the next login.
    let out = accounts(&db, &["passwd", "olga"], "olgas second\n");
    assert!(out.status.success(), "passwd failed: {}", text(&out.stderr));
    let mut olga = prompted(&server, "olga", "olga");
    wrong(&mut olga, "olga", "olgas first", false);
    olga.send("olgas second");
    olga.expect(&joined("olga", 2));
    bob.expect("* olga has joined #lobby");
    quit(&mut olga);
    bob.expect("* olga has quit");

    let out = accounts(&db, &["delete", "nobody"], "");
    assert!(
        !out.status.success(),
        "deleting a missing account succeeded"
    );
    let out = accounts(&db, &["delete", "olga"], "");
    assert!(out.status.success(), "delete failed: {}", text(&out.stderr));
    let out = accounts(&db, &["list"], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "", "still listed after delete");

    // The server notices within about a second.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let users = listing(&mut bob, "users");
        if !users.iter().any(|l| l == "*   olga offline") {
            assert_eq!(users, users_listing(&["bob online"]));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "olga still offline-registered {TIMEOUT:?} after delete"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The name is free: no password asked.
    let _olga = server.login("olga");
    bob.expect("* olga has joined #lobby");
}

/// Starts chatd on `db` and returns its exit status and stderr; it must
/// exit by itself.
fn start_failing(db: &str) -> (ExitStatus, String) {
    let mut child = Command::new(chatd_path())
        .args(["--listen", "127.0.0.1:0", "--db", db])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chatd");
    wait_with_stderr(&mut child, TIMEOUT)
}

#[test]
fn a_database_that_cannot_be_used_stops_the_start() {
    let missing_dir = std::env::temp_dir()
        .join(format!("chatd-test-{}-no-such-dir", std::process::id()))
        .join("chatd.db");
    let not_a_db = TempPath::new("not-a-database");
    std::fs::write(&not_a_db.0, "this is a text file, not SQLite\n".repeat(200)).unwrap();
    for path in [missing_dir.to_str().unwrap(), not_a_db.as_str()] {
        let (status, stderr) = start_failing(path);
        assert!(!status.success(), "chatd --db {path} exited with {status}");
        assert!(
            stderr.contains("cannot use database"),
            "stderr for --db {path}: {stderr:?}"
        );
        assert!(
            !stderr.contains("listening on"),
            "listened anyway: {stderr:?}"
        );
    }
    // The file was left alone.
    assert_eq!(
        std::fs::read_to_string(&not_a_db.0).unwrap(),
        "this is a text file, not SQLite\n".repeat(200)
    );
}
