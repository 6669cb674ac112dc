//! Roles and moderation over real TCP, in text and JSON mode: kicks,
//! mutes and bans (by name and by address range, clients spread over
//! 127.0.0.x), moderated rooms, topics, walls, whois, roles set by the
//! operator beside a running server, the audit, and what survives a
//! restart (PROTOCOL.md, "Roles and moderation").

mod common;

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::json::{expect_error, recv, send};
use common::{Client, Dial, Server, TIMEOUT, TempDb, WELCOME, stop};

/// Flags that keep hashing and wrong-password delays short.
const FAST: [&str; 6] = [
    "--login-delay",
    "0.05",
    "--argon2-memory",
    "64",
    "--argon2-passes",
    "1",
];

/// Runs `chatd --db DB ARGS` (an operator command) with `stdin`.
fn chatd(db: &TempDb, args: &[&str], stdin: &str) -> Output {
    let mut all = vec!["--db", db.as_str()];
    all.extend_from_slice(args);
    common::operator_command(&all, stdin)
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "chatd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An account `name` (password `name-secret`) with `role`.
fn account(db: &TempDb, name: &str, role: &str) {
    ok(&chatd(db, &["accounts", "add", name], &secret(name)));
    if role != "user" {
        ok(&chatd(db, &["accounts", "role", name, role], ""));
    }
}

fn secret(name: &str) -> String {
    format!("{name}-secret\n")
}

/// A database with the admin `ada` and the moderator `mo`.
fn staff_db(tag: &str) -> TempDb {
    let db = TempDb::new(tag);
    // The database is created by the first command.
    account(&db, "ada", "admin");
    account(&db, "mo", "moderator");
    db
}

fn start(db: &TempDb, more: &[&str]) -> Server {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--db", db.as_str()]);
    args.extend_from_slice(more);
    Server::start(&args)
}

/// Logs in to the account `name` from `ip`, in text mode.
#[track_caller]
fn staff(server: &Server, ip: &str, name: &str) -> Client {
    let mut c = server.connect_with(Dial::from(ip));
    c.send(name);
    c.expect(WELCOME);
    c.expect(&format!("* password for {name}:"));
    c.send(secret(name).trim_end());
    c.expect_prefix(&format!("* you joined #lobby as {name} ("));
    c
}

/// A guest `name` from `ip`, in the lobby.
#[track_caller]
fn guest(server: &Server, ip: &str, name: &str) -> Client {
    let mut c = server.connect_with(Dial::from(ip));
    c.send(name);
    c.expect(WELCOME);
    c.expect_prefix(&format!("* you joined #lobby as {name} ("));
    c
}

/// Reads until `want` (skipping other lines, such as joins).
#[track_caller]
fn see(c: &mut Client, want: &str) {
    c.read_until(|l| l == want);
}

/// Reads until a line starting with `prefix`; returns it.
#[track_caller]
fn see_prefix(c: &mut Client, prefix: &str) -> String {
    loop {
        let line = c.line();
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// Moves `c` to `room`, reading its own join line and the history.
#[track_caller]
fn join(c: &mut Client, room: &str) {
    c.send(&format!("/join {room}"));
    see(c, &format!("* you joined #{room}"));
}

#[test]
fn a_moderator_kicks_mutes_and_bans_by_name_in_text_mode() {
    let db = staff_db("mod-text");
    let server = start(&db, &[]);
    let mut mo = staff(&server, "127.0.0.1", "mo");
    let mut bob = guest(&server, "127.0.0.2", "bob");
    let mut carol = guest(&server, "127.0.0.3", "carol");
    for c in [&mut bob, &mut carol] {
        join(c, "rust");
    }
    see(&mut bob, "* carol has joined #rust");

    // Not allowed for a user; a moderator cannot act on an admin.
    bob.send("/kick carol");
    bob.expect("! not allowed: only moderators and admins may kick");
    let ada = staff(&server, "127.0.0.1", "ada");
    mo.send("/kick ada");
    see(&mut mo, "! not allowed: a moderator cannot act on an admin");
    mo.send("/kick nobody");
    mo.expect("! no such user: nobody");

    // A kick from #rust sends bob to the lobby; the room, bob and the
    // moderator are told.
    mo.send("/kick bob spamming links");
    mo.expect("* bob was kicked from #rust by mo (spamming links)");
    carol.expect("* bob was kicked from #rust by mo (spamming links)");
    bob.expect("* you were kicked from #rust by mo (spamming links)");
    bob.expect("* you joined #lobby");
    mo.expect("* bob has joined #lobby");

    // Muted: room and direct messages are refused, and the others hear
    // nothing; a reconnect under the same name does not escape it.
    join(&mut bob, "rust");
    see(&mut carol, "* bob has joined #rust");
    mo.send("/mute bob flooding");
    see(&mut mo, "* bob was muted by mo (flooding)");
    bob.expect("* you were muted by mo (flooding)");
    carol.expect("* bob was muted by mo (flooding)");
    bob.send("hello?");
    bob.expect("! you are muted");
    bob.send("@carol psst");
    bob.expect("! you are muted");
    bob.send("/quit");
    bob.expect("* goodbye");
    see(&mut carol, "* bob has quit");
    let mut bob = guest(&server, "127.0.0.2", "bob");
    bob.send("still here");
    bob.expect("! you are muted");
    mo.send("/unmute bob");
    see(&mut mo, "* bob was unmuted by mo");
    bob.expect("* you were unmuted by mo");
    join(&mut bob, "rust");
    see(&mut carol, "* bob has joined #rust");
    bob.send("thanks");
    carol.expect("<bob> thanks");

    // Kicked from the lobby means out; banned by name means out, and the
    // name refused at the name step, before any password question.
    mo.send("/kick carol");
    see(&mut mo, "* carol was kicked from #rust by mo");
    carol.expect("* you were kicked from #rust by mo");
    carol.expect("* you joined #lobby");
    mo.send("/kick carol bye");
    see(&mut mo, "* carol was kicked from #lobby by mo (bye)");
    carol.expect("* you were kicked from #lobby by mo (bye)");
    carol.expect_eof();

    mo.send("/ban bob");
    see(&mut mo, "* bob was banned by mo");
    see(&mut bob, "* you were banned by mo");
    bob.expect_eof();
    let mut again = server.connect_with(Dial::from("127.0.0.2"));
    again.send("Bob");
    again.expect(WELCOME);
    again.expect("! Bob is banned, choose another name");
    again.expect("* choose a name:");
    again.send("bobby");
    again.expect_prefix("* you joined #lobby as bobby (");
    drop(ada);
}

#[test]
fn bans_by_address_range_refuse_at_connect_until_lifted() {
    let db = staff_db("mod-net");
    let server = start(&db, &[]);
    let mut mo = staff(&server, "127.0.0.1", "mo");
    let mut bob = guest(&server, "127.0.0.2", "bob");
    let mut pending = server.connect_with(Dial::from("127.0.0.2"));
    pending.expect(WELCOME);
    let mut carol = guest(&server, "127.0.0.3", "carol");

    mo.send("/ban 127.0.0.1/8");
    see(&mut mo, "! not allowed: that range holds your own address");
    mo.send("/ban not/a/range");
    see(
        &mut mo,
        "! \"not/a/range\" is not a name, an address or an address range",
    );
    mo.send("/ban 127.0.0.2/32 600 spam");
    let line = see_prefix(&mut mo, "* 127.0.0.2/32 was banned by mo until ");
    assert!(line.ends_with("Z (spam)"), "{line}");
    let bob_saw = see_prefix(&mut bob, "* you were banned by mo until ");
    assert!(bob_saw.ends_with("Z (spam)"), "{bob_saw}");
    bob.expect_eof();
    pending.expect_prefix("! you are banned from this server until ");
    pending.expect_eof();
    see(&mut carol, "* bob has disconnected (banned)");

    // A banned address is refused at connect; others are not.
    let mut refused = server.connect_with(Dial::from("127.0.0.2"));
    refused.expect_prefix("! you are banned from this server until ");
    refused.expect_eof();
    let _dave = guest(&server, "127.0.0.4", "dave");

    mo.send("/bans");
    see(&mut mo, "* bans: 1");
    let listed = mo.expect_prefix("*   127.0.0.2/32 by mo until ");
    assert!(listed.ends_with(" (spam)"), "{listed}");
    mo.expect("* end of /bans");
    carol.send("/bans");
    see(
        &mut carol,
        "! not allowed: only moderators and admins may list bans",
    );

    mo.send("/unban 127.0.0.2");
    mo.expect("* 127.0.0.2/32 was unbanned by mo");
    mo.send("/unban 127.0.0.2");
    mo.expect("! 127.0.0.2 is not banned");
    guest(&server, "127.0.0.2", "bob");
}

/// Logs in over JSON from `ip`; the password when `name` has an account.
#[track_caller]
fn json_user(server: &Server, ip: &str, name: &str, password: bool) -> Client {
    let mut c = server.connect_with(Dial::from(ip));
    let mut payload = json!({"name": name});
    if password {
        payload["password"] = json!(secret(name).trim_end());
    }
    send(&mut c, &json!({"type": "connect", "payload": payload}));
    c.expect(WELCOME);
    let ack = recv(&mut c);
    assert_eq!(ack["type"], "connect_ack", "{ack}");
    let history = recv(&mut c);
    assert_eq!(history["type"], "history", "{history}");
    c
}

/// The next object that is not a join, leave or disconnect notification,
/// or history.
#[track_caller]
fn next(c: &mut Client) -> Value {
    loop {
        let v = recv(c);
        let event = &v["payload"]["event"];
        let joined = v["type"] == "notification"
            && (event == "join" || event == "leave" || event == "disconnect");
        if !joined && v["type"] != "history" {
            return v;
        }
    }
}

#[test]
fn json_moderation_carries_ids_and_the_contracts_fields() {
    let db = staff_db("mod-json");
    let server = start(&db, &[]);
    let mut mo = json_user(&server, "127.0.0.1", "mo", true);
    let mut bob = json_user(&server, "127.0.0.2", "bob", false);

    send(
        &mut bob,
        &json!({"type": "kick", "payload": {"name": "mo"}, "id": 1}),
    );
    expect_error(&mut bob, "forbidden", Some(json!(1)));

    send(
        &mut mo,
        &json!({"type": "mute", "payload": {"name": "bob", "seconds": 60, "reason": "flood"}, "id": "m1"}),
    );
    let told = next(&mut mo);
    assert_eq!(told["id"], "m1", "{told}");
    let p = &told["payload"];
    assert_eq!(
        (&p["event"], &p["name"], &p["by"], &p["reason"]),
        (&json!("mute"), &json!("bob"), &json!("mo"), &json!("flood")),
        "{told}"
    );
    assert!(
        p["until"].as_str().is_some_and(|u| u.ends_with('Z')),
        "{told}"
    );
    let bob_told = next(&mut bob);
    assert_eq!(bob_told["payload"]["event"], "mute", "{bob_told}");
    assert!(bob_told.get("id").is_none(), "{bob_told}");

    send(
        &mut bob,
        &json!({"type": "message", "payload": {"text": "hi"}, "id": 2}),
    );
    expect_error(&mut bob, "muted", Some(json!(2)));

    send(
        &mut mo,
        &json!({"type": "topic", "payload": {"text": "be kind"}, "id": 3}),
    );
    let topic = next(&mut mo);
    assert_eq!(topic["id"], 3, "{topic}");
    assert_eq!(topic["payload"]["event"], "topic", "{topic}");
    assert_eq!(topic["payload"]["name"], Value::Null, "{topic}");
    assert_eq!(topic["payload"]["room"], "lobby", "{topic}");
    assert_eq!(topic["payload"]["topic"], "be kind", "{topic}");
    assert_eq!(next(&mut bob)["payload"]["event"], "topic");
    send(&mut bob, &json!({"type": "topic", "id": 4}));
    let shown = next(&mut bob);
    assert_eq!(
        shown,
        json!({"type": "topic", "payload": {"room": "lobby", "topic": "be kind"}, "id": 4})
    );

    send(
        &mut mo,
        &json!({"type": "whois", "payload": {"name": "bob"}, "id": 5}),
    );
    let whois = next(&mut mo);
    assert_eq!(whois["type"], "whois", "{whois}");
    assert_eq!(whois["payload"]["address"], "127.0.0.2", "{whois}");
    assert_eq!(whois["payload"]["registered"], false, "{whois}");
    send(
        &mut bob,
        &json!({"type": "whois", "payload": {"name": "mo"}, "id": 6}),
    );
    let whois = next(&mut bob);
    assert_eq!(whois["payload"]["role"], "moderator", "{whois}");
    assert!(whois["payload"].get("address").is_none(), "{whois}");

    send(&mut mo, &json!({"type": "who", "id": 7}));
    let who = next(&mut mo);
    let users = who["payload"]["users"].as_array().unwrap();
    let mo_entry = users.iter().find(|u| u["name"] == "mo").unwrap();
    let bob_entry = users.iter().find(|u| u["name"] == "bob").unwrap();
    assert_eq!(mo_entry["role"], "moderator", "{who}");
    assert!(bob_entry.get("role").is_none(), "{who}");

    send(
        &mut mo,
        &json!({"type": "ban", "payload": {"target": "bob", "reason": "x"}, "id": 8}),
    );
    let ban = next(&mut mo);
    assert_eq!(ban["id"], 8, "{ban}");
    assert_eq!(ban["payload"]["until"], Value::Null, "{ban}");
    assert_eq!(next(&mut bob)["payload"]["event"], "ban");
    bob.expect_eof();
    let mut again = server.connect_with(Dial::from("127.0.0.5"));
    send(
        &mut again,
        &json!({"type": "connect", "payload": {"name": "bob"}, "id": 9}),
    );
    again.expect(WELCOME);
    expect_error(&mut again, "banned", Some(json!(9)));

    send(
        &mut mo,
        &json!({"type": "wall", "payload": {"text": "down at 5"}, "id": 10}),
    );
    expect_error(&mut mo, "forbidden", Some(json!(10)));

    // A kick, and a ban of an address range, in JSON.
    let mut carol = json_user(&server, "127.0.0.3", "carol", false);
    send(
        &mut carol,
        &json!({"type": "join", "payload": {"room": "rust"}}),
    );
    recv(&mut carol);
    recv(&mut carol);
    send(
        &mut mo,
        &json!({"type": "kick", "payload": {"name": "carol", "reason": "off topic"}, "id": 11}),
    );
    let kick = next(&mut mo);
    assert_eq!(
        (
            &kick["id"],
            &kick["payload"]["event"],
            &kick["payload"]["room"]
        ),
        (&json!(11), &json!("kick"), &json!("rust")),
        "{kick}"
    );
    let told = recv(&mut carol);
    assert_eq!(told["payload"]["event"], "kick", "{told}");
    assert_eq!(told["payload"]["reason"], "off topic", "{told}");
    let moved = recv(&mut carol);
    assert_eq!(
        (&moved["payload"]["event"], &moved["payload"]["room"]),
        (&json!("join"), &json!("lobby")),
        "{moved}"
    );
    send(
        &mut mo,
        &json!({"type": "ban", "payload": {"target": "127.0.0.3", "seconds": 60}, "id": 12}),
    );
    let ban = next(&mut mo);
    assert_eq!(ban["payload"]["name"], "127.0.0.3/32", "{ban}");
    assert!(ban["payload"]["until"].is_string(), "{ban}");
    loop {
        let v = recv(&mut carol);
        if v["payload"]["event"] == "ban" {
            break;
        }
    }
    carol.expect_eof();
    let mut refused = server.connect_with(Dial::from("127.0.0.3"));
    refused.expect_prefix("! you are banned from this server until ");
    refused.expect_eof();
}

#[test]
fn a_moderated_room_hears_only_moderators_and_a_wall_reaches_every_room() {
    let db = staff_db("mod-room");
    let server = start(&db, &["--announce-limit", "0"]);
    let mut ada = staff(&server, "127.0.0.1", "ada");
    let mut mo = staff(&server, "127.0.0.1", "mo");
    let mut bob = guest(&server, "127.0.0.2", "bob");
    let mut carol = guest(&server, "127.0.0.3", "carol");
    join(&mut mo, "class");
    join(&mut bob, "class");

    mo.send("/moderate on");
    mo.expect("* mo made #class moderated: only moderators may speak");
    bob.expect("* mo made #class moderated: only moderators may speak");
    bob.send("can I ask?");
    bob.expect("! #class is moderated: only moderators may speak");
    bob.send("@mo can I ask?");
    mo.expect("*bob* can I ask?");
    mo.send("quiet please");
    bob.expect("<mo> quiet please");
    bob.send("/moderate off");
    bob.expect("! not allowed: only moderators and admins may moderate a room");

    mo.send("/wall hi");
    mo.expect("! not allowed: only admins may send a wall");
    ada.send("/wall server restarts at 5");
    for c in [&mut ada, &mut mo, &mut bob, &mut carol] {
        c.expect("* wall from ada: server restarts at 5");
    }

    // An admin may act on a moderator; the role shows in listings.
    ada.send("/role bob moderator");
    ada.expect("! no such user: bob");
    ada.send("/role mo user");
    ada.expect("* mo is now a user (set by ada)");
    mo.expect("* you are now a user (set by ada)");
    mo.send("/moderate off");
    mo.expect("! not allowed: only moderators and admins may moderate a room");
    ada.send("/users");
    see(&mut ada, "*   ada online (admin)");
    ada.expect("*   bob online");
}

#[test]
fn moderation_survives_a_restart_and_timed_ones_end_on_time() {
    let db = staff_db("mod-restart");
    let server = start(&db, &[]);
    let mut mo = staff(&server, "127.0.0.1", "mo");
    let bob = guest(&server, "127.0.0.2", "bob");
    join(&mut mo, "rust");
    mo.send("/topic Rust, be kind");
    mo.expect("* mo set the topic of #rust: Rust, be kind");
    mo.send("/moderate on");
    see(
        &mut mo,
        "* mo made #rust moderated: only moderators may speak",
    );
    mo.send("/mute bob 3 cool down");
    let muted_at = Instant::now();
    see_prefix(&mut mo, "* bob was muted by mo until ");
    mo.send("/ban carol");
    see(&mut mo, "* carol was banned by mo");
    mo.send("/ban dave 3");
    see_prefix(&mut mo, "* dave was banned by mo until ");
    stop(server, vec![mo, bob]);

    let server = start(&db, &[]);
    let mut bob = guest(&server, "127.0.0.2", "bob");
    bob.send("hi");
    bob.expect_prefix("! you are muted until ");
    let mut carol = server.connect_with(Dial::from("127.0.0.3"));
    carol.send("carol");
    carol.expect(WELCOME);
    carol.expect("! carol is banned, choose another name");
    carol.expect("* choose a name:");
    carol.send("dave");
    carol.expect_prefix("! dave is banned until ");
    // The room kept its topic and moderation while nobody was in it.
    bob.send("/join rust");
    bob.expect("* you joined #rust");
    bob.expect("* topic of #rust: Rust, be kind");
    bob.send("/topic");
    bob.expect("* topic of #rust: Rust, be kind");
    // The mute ends three seconds after it was given, restart or not.
    let ends = muted_at + Duration::from_secs(4);
    thread::sleep(ends.saturating_duration_since(Instant::now()));
    bob.send("x");
    bob.expect("! #rust is moderated: only moderators may speak");
    bob.send("/join lobby");
    see(&mut bob, "* you joined #lobby");
    // So does the ban of dave, given at the same time.
    let mut dave = guest(&server, "127.0.0.4", "dave");
    bob.send("free again");
    see(&mut dave, "<bob> free again");

    let out = ok(&chatd(&db, &["audit"], ""));
    let lines: Vec<&str> = out.lines().collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l.split(' ').nth(2).unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["ban", "ban", "mute", "moderate", "topic", "role", "role"],
        "{out}"
    );
    assert!(
        lines[1].ends_with("Z mo ban carol"),
        "newest first, TS BY ACTION TARGET: {out}"
    );
    assert!(
        lines[2].contains(" mo mute bob (until ") && lines[2].ends_with("cool down"),
        "{out}"
    );
    assert!(lines[6].ends_with(" operator role ada admin"), "{out}");
}

#[test]
fn the_operator_sets_roles_beside_a_running_server() {
    let db = staff_db("mod-operator");
    account(&db, "pat", "user");
    let server = start(&db, &[]);
    let mut pat = staff(&server, "127.0.0.1", "pat");
    let mut bob = guest(&server, "127.0.0.2", "bob");
    pat.send("/kick bob");
    see(
        &mut pat,
        "! not allowed: only moderators and admins may kick",
    );

    ok(&chatd(&db, &["accounts", "role", "pat", "moderator"], ""));
    // Noticed within about a second.
    pat.expect("* you are now a moderator (set by operator)");
    pat.send("/kick bob");
    see(&mut pat, "* bob was kicked from #lobby by pat");
    bob.read_until(|l| l == "* you were kicked from #lobby by pat");
    bob.expect_eof();

    let listed = ok(&chatd(&db, &["accounts", "list"], ""));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("pat\tregistered ") && l.ends_with("\tmoderator")),
        "{listed}"
    );
    let bad = chatd(&db, &["accounts", "role", "pat", "king"], "");
    assert!(!bad.status.success());
    let bad = chatd(&db, &["accounts", "role", "nobody", "admin"], "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no account named nobody"));
}

#[test]
fn connections_per_address_are_limited() {
    let server = Server::start(&["--max-per-ip", "2"]);
    let mut first = guest(&server, "127.0.0.2", "a");
    let _second = server.connect_with(Dial::from("127.0.0.2"));
    let mut third = server.connect_with(Dial::from("127.0.0.2"));
    third.expect("! too many connections from your address");
    third.expect_eof();
    let _b = guest(&server, "127.0.0.3", "b");
    first.expect("* b has joined #lobby");
    first.send("/quit");
    first.expect("* goodbye");
    first.expect_eof();
    drop(first);
    // The freed place is taken again.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut c = server.connect_with(Dial::from("127.0.0.2"));
        c.send("c");
        match c.line().as_str() {
            WELCOME => break,
            "! too many connections from your address" if Instant::now() < deadline => {
                // The server has not reaped the quitter yet.
                thread::sleep(Duration::from_millis(20));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn guests_read_but_need_an_account_to_speak() {
    let server = Server::start(&[
        "--require-account",
        "--argon2-memory",
        "64",
        "--argon2-passes",
        "1",
    ]);
    let mut bob = guest(&server, "127.0.0.2", "bob");
    let mut carol = guest(&server, "127.0.0.3", "carol");
    see(&mut bob, "* carol has joined #lobby");
    carol.send("hello");
    carol.expect("! register or log in to speak");
    carol.send("@bob hello");
    carol.expect("! register or log in to speak");
    carol.send("/register carols-secret");
    carol.expect("* carol is now registered: log in with this password from now on");
    carol.send("hello");
    bob.expect("<carol> hello");
}

#[test]
fn closed_registration_and_the_registration_rate() {
    let db = TempDb::new("mod-registration");
    account(&db, "olga", "user");
    let server = start(&db, &["--registration", "closed"]);
    let mut bob = guest(&server, "127.0.0.2", "bob");
    bob.send("/register bobs-secret");
    bob.expect("! registration is closed: an operator creates accounts");
    // The operator's account works.
    let olga = staff(&server, "127.0.0.3", "olga");
    drop(olga);
    drop(server);

    let server = Server::start(&[
        "--register-rate",
        "1",
        "--argon2-memory",
        "64",
        "--argon2-passes",
        "1",
    ]);
    let mut a = guest(&server, "127.0.0.2", "a");
    a.send("/register a-secret-1");
    a.expect("* a is now registered: log in with this password from now on");
    let mut b = guest(&server, "127.0.0.2", "b");
    b.send("/register b-secret-1");
    b.expect("! too many registrations from your address: try again in 60 minutes");
    let mut c = guest(&server, "127.0.0.3", "c");
    c.send("/register c-secret-1");
    c.expect("* c is now registered: log in with this password from now on");
}

/// Polls `/metrics` at `addr` until a line is exactly `line`.
#[track_caller]
fn metrics_until(addr: &str, line: &str) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut s = std::net::TcpStream::connect(addr).expect("metrics");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: chatd\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "never {line:?}:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_persons_wrong_passwords_do_not_slow_another_login_from_the_same_address() {
    let db = TempDb::new("mod-throttle");
    account(&db, "ann", "user");
    account(&db, "ben", "user");
    // A long first delay: a login held back by ann's failure would show.
    let server = Server::start(&[
        "--db",
        db.as_str(),
        "--login-delay",
        "2",
        "--argon2-memory",
        "64",
        "--argon2-passes",
        "1",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = server.wait_log("metrics on ");
    let metrics = metrics
        .rsplit_once("metrics on ")
        .unwrap()
        .1
        .trim()
        .to_string();
    let mut ann = server.connect_with(Dial::from("127.0.0.2"));
    ann.send("ann");
    ann.expect(WELCOME);
    ann.expect("* password for ann:");
    ann.send("not-anns-password");
    // Found wrong (and counted against the address), not yet answered.
    metrics_until(&metrics, "chatd_logins_total{result=\"failure\"} 1");
    let started = Instant::now();
    let ben = staff(&server, "127.0.0.2", "ben");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "ben waited {took:?} behind ann's wrong password"
    );
    ann.expect("! wrong password for ann");
    drop(ben);
}
