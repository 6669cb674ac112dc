//! JSON mode over real TCP: the exchanges of PROTOCOL.md's "JSON mode"
//! section, every error code reachable today, request ids, JSON and text
//! users in one room, what control characters become, rooms kept apart, and
//! how the first line picks a connection's mode. Each test runs its own
//! `chatd` and reads like a conversation; every line received is parsed and
//! compared as a whole object (a message's `ts` is checked, then removed).

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::json::{expect, expect_error, expect_history, message, send};
use common::{Client, Server, WELCOME};

/// A new JSON client connected as `name` in `room` (the lobby if `None`),
/// which must be shown as spelled here.
#[track_caller]
fn json_connect(server: &Server, name: &str, room: Option<&str>) -> Client {
    let mut c = server.connect();
    // Until the mode is known, the server speaks text.
    c.expect(WELCOME);
    let payload = match room {
        Some(r) => json!({"name": name, "room": r}),
        None => json!({ "name": name }),
    };
    send(&mut c, &json!({"type": "connect", "payload": payload}));
    expect(
        &mut c,
        json!({"type": "connect_ack", "payload": {
            "message": "Connected to the room.",
            "name": name,
            "room": room.unwrap_or("lobby"),
            "version": 1,
        }}),
    );
    c
}

/// A direct message as a JSON client receives it (without its `ts`).
fn direct(sender: &str, text: &str) -> Value {
    json!({"type": "direct", "payload": {"sender": sender, "text": text}})
}

/// A join or leave notification.
fn moved(event: &str, name: &str, room: &str) -> Value {
    let message = match event {
        "join" => format!("{name} has joined the room."),
        "leave" => format!("{name} has left the room."),
        other => panic!("not a move: {other}"),
    };
    json!({"type": "notification", "payload": {
        "message": message, "event": event, "name": name, "room": room,
    }})
}

/// `v` with `"id": id` added, as the answer to a request with that id.
fn with_id(mut v: Value, id: Value) -> Value {
    v["id"] = id;
    v
}

#[test]
fn connect_message_direct_and_listings_match_the_protocol_examples() {
    let server = Server::start(&[]);
    let mut alice = server.connect();
    alice.expect(WELCOME);
    // The example line as PROTOCOL.md writes it; the password of a name
    // that is not registered is ignored.
    alice.send(
        r#"{"type":"connect","payload":{"name":"Alice","room":"General","password":"optional"}}"#,
    );
    expect(
        &mut alice,
        json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Alice","room":"General","version":1}}),
    );

    // Rooms ignore case and are shown as their creator spelled them.
    let mut bob = server.connect();
    bob.expect(WELCOME);
    bob.send(r#"{"type":"connect","payload":{"name":"Bob","room":"general"}}"#);
    expect(
        &mut bob,
        json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Bob","room":"General","version":1}}),
    );
    expect(
        &mut alice,
        json!({"type":"notification","payload":{"message":"Bob has joined the room.","event":"join","name":"Bob","room":"General"}}),
    );

    alice.send(r#"{"type":"message","payload":{"text":"Hello, everyone!"}}"#);
    expect(&mut bob, message("Alice", "General", "Hello, everyone!"));
    // Never back to the sender: the next thing Alice reads is her answer.
    alice.send(r#"{"type":"who"}"#);
    expect(
        &mut alice,
        json!({"type":"who","payload":{"room":"General","users":[
            {"name":"Alice","status":"online","note":null},
            {"name":"Bob","status":"online","note":null},
        ]}}),
    );

    bob.send(r#"{"type":"direct","payload":{"to":"Alice","text":"psst"}}"#);
    expect(&mut alice, direct("Bob", "psst"));
    // Also Bob's barrier: he got nothing back for his direct message.
    bob.send(r#"{"type":"rooms"}"#);
    expect(
        &mut bob,
        json!({"type":"rooms","payload":{"rooms":[
            {"name":"General","users":2},
            {"name":"lobby","users":0},
        ]}}),
    );

    // A text user elsewhere is in the listings too; the default room is
    // the lobby.
    let mut carol = server.login("carol");
    let mut dan = json_connect(&server, "dan", None);
    carol.expect("* dan has joined #lobby");
    dan.send(r#"{"type":"users"}"#);
    expect(
        &mut dan,
        json!({"type":"users","payload":{"users":[
            {"name":"Alice","status":"online","note":null},
            {"name":"Bob","status":"online","note":null},
            {"name":"carol","status":"online","note":null},
            {"name":"dan","status":"online","note":null},
        ]}}),
    );
    dan.send(r#"{"type":"rooms"}"#);
    expect(
        &mut dan,
        json!({"type":"rooms","payload":{"rooms":[
            {"name":"General","users":2},
            {"name":"lobby","users":2},
        ]}}),
    );
    dan.send(r#"{"type":"who"}"#);
    expect(
        &mut dan,
        json!({"type":"who","payload":{"room":"lobby","users":[
            {"name":"carol","status":"online","note":null},
            {"name":"dan","status":"online","note":null},
        ]}}),
    );
}

#[test]
fn join_nick_and_status_notify_the_room_and_the_user_who_acted() {
    let server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", Some("General"));
    let mut bob = json_connect(&server, "Bob", Some("General"));
    expect(&mut alice, moved("join", "Bob", "General"));
    let mut carol = json_connect(&server, "Carol", None);

    // The mover gets the join notification; the old room a leave, the new
    // room a join.
    alice.send(r#"{"type":"join","payload":{"room":"random"}}"#);
    expect(&mut alice, moved("join", "Alice", "random"));
    expect_history(&mut alice, &json!("random"), None);
    expect(&mut bob, moved("leave", "Alice", "General"));
    carol.send(r##"{"type":"join","payload":{"room":"#RANDOM"}}"##);
    expect(&mut carol, moved("join", "Carol", "random"));
    expect_history(&mut carol, &json!("random"), None);
    expect(&mut alice, moved("join", "Carol", "random"));
    // Joining the room one is in changes nothing, and says so.
    carol.send(r#"{"type":"join","payload":{"room":"Random"}}"#);
    expect(
        &mut carol,
        json!({"type":"notification","payload":{"message":"You are already in the room.","event":"join","name":"Carol","room":"random"}}),
    );

    let nick = json!({"type":"notification","payload":{
        "message":"Alice is now known as Alicia.","event":"nick",
        "name":"Alicia","room":"random","old":"Alice",
    }});
    alice.send(r#"{"type":"nick","payload":{"name":"Alicia"}}"#);
    expect(&mut alice, nick.clone());
    expect(&mut carol, nick);

    let busy = json!({"type":"notification","payload":{
        "message":"Carol is now busy (in a meeting).","event":"status",
        "name":"Carol","room":"random","status":"busy","note":"in a meeting",
    }});
    carol.send(r#"{"type":"status","payload":{"status":"busy","note":"in a meeting"}}"#);
    expect(&mut carol, busy.clone());
    expect(&mut alice, busy);
    let away = json!({"type":"notification","payload":{
        "message":"Alicia is now away.","event":"status",
        "name":"Alicia","room":"random","status":"away","note":null,
    }});
    alice.send(r#"{"type":"status","payload":{"status":"away"}}"#);
    expect(&mut alice, away.clone());
    expect(&mut carol, away);

    // Bob, in General all along, heard none of it.
    bob.send(r#"{"type":"users"}"#);
    expect(
        &mut bob,
        json!({"type":"users","payload":{"users":[
            {"name":"Alicia","status":"away","note":null},
            {"name":"Bob","status":"online","note":null},
            {"name":"Carol","status":"busy","note":"in a meeting"},
        ]}}),
    );
    carol.send(r#"{"type":"who"}"#);
    expect(
        &mut carol,
        json!({"type":"who","payload":{"room":"random","users":[
            {"name":"Alicia","status":"away","note":null},
            {"name":"Carol","status":"busy","note":"in a meeting"},
        ]}}),
    );
}

#[test]
fn quit_tells_the_room_with_the_reason_and_closes() {
    let server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", Some("General"));
    let mut bob = json_connect(&server, "Bob", Some("General"));
    expect(&mut alice, moved("join", "Bob", "General"));
    let mut carol = json_connect(&server, "Carol", Some("General"));
    expect(&mut alice, moved("join", "Carol", "General"));
    expect(&mut bob, moved("join", "Carol", "General"));

    let bye = json!({"type":"notification","payload":{
        "message":"Alice has quit (bye).","event":"quit",
        "name":"Alice","room":"General","reason":"bye",
    }});
    alice.send(r#"{"type":"quit","payload":{"reason":"bye"}}"#);
    expect(&mut alice, bye.clone());
    alice.expect_eof();
    expect(&mut bob, bye.clone());
    expect(&mut carol, bye);

    // Without a reason there is no reason field.
    let quit = json!({"type":"notification","payload":{
        "message":"Bob has quit.","event":"quit","name":"Bob","room":"General",
    }});
    bob.send(r#"{"type":"quit"}"#);
    expect(&mut bob, quit.clone());
    bob.expect_eof();
    expect(&mut carol, quit);
    drop((alice, bob));

    // Once both connections are gone for good, no disconnect follows the
    // quits, and the names are free again.
    for name in ["Alice", "Bob"] {
        server.wait_log_where(&format!("({name}) ... closed: quit"), |l| {
            l.contains(&format!("({name}) 127.0.0.1:")) && l.contains("closed: quit")
        });
    }
    carol.send(r#"{"type":"who"}"#);
    expect(
        &mut carol,
        json!({"type":"who","payload":{"room":"General","users":[
            {"name":"Carol","status":"online","note":null},
        ]}}),
    );
    let _alice = json_connect(&server, "alice", Some("General"));
    expect(&mut carol, moved("join", "alice", "General"));
}

#[test]
fn a_json_client_that_just_closes_is_announced_as_disconnected() {
    let server = Server::start(&[]);
    let mut watcher = json_connect(&server, "Watcher", None);
    let mut text = server.login("text");
    expect(&mut watcher, moved("join", "text", "lobby"));

    let alice = json_connect(&server, "Alice", None);
    expect(&mut watcher, moved("join", "Alice", "lobby"));
    text.expect("* Alice has joined #lobby");
    drop(alice);
    expect(
        &mut watcher,
        json!({"type":"notification","payload":{
            "message":"Alice has disconnected (connection closed).","event":"disconnect",
            "name":"Alice","room":"lobby","reason":"connection closed",
        }}),
    );
    text.expect("* Alice has disconnected (connection closed)");

    // A half-close: the last line, without its LF, is still handled, the
    // client is closed, and the room told.
    let mut bob = json_connect(&server, "Bob", None);
    expect(&mut watcher, moved("join", "Bob", "lobby"));
    text.expect("* Bob has joined #lobby");
    bob.send_raw(br#"{"type":"message","payload":{"text":"last words"}}"#);
    bob.shutdown_write();
    expect(&mut watcher, message("Bob", "lobby", "last words"));
    text.expect("<Bob> last words");
    bob.expect_eof();
    expect(
        &mut watcher,
        json!({"type":"notification","payload":{
            "message":"Bob has disconnected (connection closed).","event":"disconnect",
            "name":"Bob","room":"lobby","reason":"connection closed",
        }}),
    );
    text.expect("* Bob has disconnected (connection closed)");
}

#[test]
fn shutdown_is_a_notification_to_every_json_client() {
    let mut server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", None);
    let mut bob = server.login("bob");
    expect(&mut alice, moved("join", "bob", "lobby"));
    // A JSON client that has not connected yet is in JSON mode too.
    let mut early = server.connect();
    early.expect(WELCOME);
    early.send(r#"{"type":"who"}"#);
    expect_error(&mut early, "not_connected", None);

    server.signal(libc::SIGTERM);
    let shutdown = json!({"type":"notification","payload":{
        "message":"The server is shutting down.","event":"shutdown",
    }});
    expect(&mut alice, shutdown.clone());
    alice.expect_eof();
    expect(&mut early, shutdown);
    early.expect_eof();
    bob.expect("* server is shutting down");
    bob.expect_eof();
    // Closed on our side too, so the server need not wait out its flush.
    drop((alice, early, bob));
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn every_error_code_comes_from_its_input_and_leaves_the_connection_open() {
    const MAX: usize = 1000;
    let server = Server::start(&["--rate", "0", "--max-line", "1000"]);
    let mut alice = server.login("alice");
    let mut c = server.connect();
    c.expect(WELCOME);

    // Before connect, every other request is not_connected, and the
    // connection keeps answering.
    for line in [
        r#"{"type":"message","payload":{"text":"hi"}}"#,
        r#"{"type":"direct","payload":{"to":"alice","text":"hi"}}"#,
        r#"{"type":"join","payload":{"room":"random"}}"#,
        r#"{"type":"nick","payload":{"name":"Bob"}}"#,
        r#"{"type":"status","payload":{"status":"busy"}}"#,
        r#"{"type":"who"}"#,
        r#"{"type":"users"}"#,
        r#"{"type":"rooms"}"#,
        r#"{"type":"quit","payload":{"reason":"bye"}}"#,
        r#"{"type":"history","payload":{"count":5}}"#,
        r#"{"type":"register","payload":{"password":"correct horse"}}"#,
        r#"{"type":"frob"}"#,
    ] {
        c.send(line);
        expect_error(&mut c, "not_connected", None);
    }
    // Connects that fail take no name and enter no room.
    let long = "x".repeat(33);
    for (line, code) in [
        ("{bad".to_string(), "bad_json"),
        (r#"{"type":"connect"}"#.into(), "bad_payload"),
        (r#"{"type":"connect","payload":{}}"#.into(), "bad_payload"),
        (
            r#"{"type":"connect","payload":{"name":5}}"#.into(),
            "bad_payload",
        ),
        (
            r#"{"type":"connect","payload":"Bob"}"#.into(),
            "bad_payload",
        ),
        (
            r#"{"type":"connect","payload":{"name":"Bob","room":7}}"#.into(),
            "bad_payload",
        ),
        (
            r#"{"type":"connect","payload":{"name":"bad name"}}"#.into(),
            "name_invalid",
        ),
        (
            r#"{"type":"connect","payload":{"name":""}}"#.into(),
            "name_invalid",
        ),
        (
            format!(r#"{{"type":"connect","payload":{{"name":"{long}"}}}}"#),
            "name_invalid",
        ),
        // Names ignore case, across modes: a text user holds "alice".
        (
            r#"{"type":"connect","payload":{"name":"ALICE"}}"#.into(),
            "name_taken",
        ),
        (
            r#"{"type":"connect","payload":{"name":"Bob","room":"b@d"}}"#.into(),
            "room_invalid",
        ),
        (
            r#"{"type":"connect","payload":{"name":"Bob","room":"no way"}}"#.into(),
            "room_invalid",
        ),
        (
            format!(r#"{{"type":"connect","payload":{{"name":"Bob","room":"{long}"}}}}"#),
            "room_invalid",
        ),
    ] {
        c.send(&line);
        expect_error(&mut c, code, None);
    }
    c.send(r#"{"type":"connect","payload":{"name":"Bob"}}"#);
    expect(
        &mut c,
        json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Bob","room":"lobby","version":1}}),
    );
    alice.expect("* Bob has joined #lobby");

    // A name held by a JSON user is taken as well.
    let mut other = server.connect();
    other.expect(WELCOME);
    other.send(r#"{"type":"connect","payload":{"name":"bob"}}"#);
    expect_error(&mut other, "name_taken", None);

    // Each error below is followed by a request that works.
    let mut probes = 0;
    let mut check = |c: &mut Client, line: &[u8], code: &str| {
        c.send_raw(line);
        c.send_raw(b"\n");
        expect_error(c, code, None);
        probes += 1;
        send(c, &json!({"type": "who", "id": probes}));
        expect(
            c,
            json!({"type":"who","id":probes,"payload":{"room":"lobby","users":[
                {"name":"alice","status":"online","note":null},
                {"name":"Bob","status":"online","note":null},
            ]}}),
        );
    };
    let nested = format!("{}{}", r#"{"a":"#.repeat(150), "}".repeat(151));
    for line in [
        "[1]",
        "{bad",
        r#""str""#,
        "1",
        "null",
        r#"{"type":"who"} x"#,
        nested.as_str(),
    ] {
        check(&mut c, line.as_bytes(), "bad_json");
    }
    check(&mut c, br#"{"type":"frob"}"#, "unknown_type");
    // The account codes, each from its input (tests/accounts.rs has the
    // rest of their story).
    for (line, code) in [
        (
            r#"{"type":"register","payload":{"password":"short"}}"#,
            "password_too_short",
        ),
        (r#"{"type":"register","payload":{}}"#, "bad_payload"),
        (r#"{"type":"history","payload":{"count":0}}"#, "bad_payload"),
        (
            r#"{"type":"passwd","payload":{"old":"correct horse","new":"battery staple"}}"#,
            "bad_payload",
        ),
    ] {
        check(&mut c, line.as_bytes(), code);
    }
    let too_long_note = "n".repeat(65);
    for line in [
        // The envelope.
        r#"{"payload":{"text":"x"}}"#.to_string(),
        r#"{"type":5}"#.into(),
        r#"{"type":"message","payload":"hi"}"#.into(),
        // Missing fields.
        r#"{"type":"message"}"#.into(),
        r#"{"type":"message","payload":{}}"#.into(),
        r#"{"type":"direct","payload":{"text":"x"}}"#.into(),
        r#"{"type":"join","payload":{}}"#.into(),
        r#"{"type":"nick"}"#.into(),
        r#"{"type":"status","payload":{"note":"x"}}"#.into(),
        // Fields of the wrong type; a quit that is not understood does not
        // quit.
        r#"{"type":"message","payload":{"text":5}}"#.into(),
        r#"{"type":"direct","payload":{"to":["alice"],"text":"x"}}"#.into(),
        r#"{"type":"join","payload":{"room":null}}"#.into(),
        r#"{"type":"nick","payload":{"name":{"n":1}}}"#.into(),
        r#"{"type":"status","payload":{"status":"away","note":false}}"#.into(),
        r#"{"type":"quit","payload":{"reason":5}}"#.into(),
        // Bad values.
        r#"{"type":"status","payload":{"status":"sleeping"}}"#.into(),
        format!(r#"{{"type":"status","payload":{{"status":"away","note":"{too_long_note}"}}}}"#),
        r#"{"type":"connect","payload":{"name":"Carl"}}"#.into(),
        r#"{"type":"message","payload":{"text":""}}"#.into(),
        r#"{"type":"message","payload":{"text":"   "}}"#.into(),
        r#"{"type":"message","payload":{"text":"\n\u0007\u009b"}}"#.into(),
        r#"{"type":"direct","payload":{"to":"alice","text":""}}"#.into(),
    ] {
        check(&mut c, line.as_bytes(), "bad_payload");
    }
    for line in [
        r#"{"type":"nick","payload":{"name":"bad name"}}"#.to_string(),
        r#"{"type":"nick","payload":{"name":""}}"#.into(),
        format!(r#"{{"type":"nick","payload":{{"name":"{long}"}}}}"#),
    ] {
        check(&mut c, line.as_bytes(), "name_invalid");
    }
    check(
        &mut c,
        br#"{"type":"nick","payload":{"name":"ALICE"}}"#,
        "name_taken",
    );
    for line in [
        r#"{"type":"join","payload":{"room":"b@d"}}"#.to_string(),
        r#"{"type":"join","payload":{"room":""}}"#.into(),
        r#"{"type":"join","payload":{"room":"no way"}}"#.into(),
        format!(r#"{{"type":"join","payload":{{"room":"{long}"}}}}"#),
    ] {
        check(&mut c, line.as_bytes(), "room_invalid");
    }
    check(
        &mut c,
        br#"{"type":"direct","payload":{"to":"nobody","text":"hi"}}"#,
        "no_such_user",
    );
    check(
        &mut c,
        b"{\"type\":\"message\",\"payload\":{\"text\":\"\xff\xfe\"}}",
        "invalid_utf8",
    );

    // The longest line allowed is a message; one byte more is an error,
    // and so is a 100 KB line (once).
    let prefix = r#"{"type":"message","payload":{"text":""#;
    let fill = "x".repeat(MAX - prefix.len() - 3);
    let longest = format!(r#"{prefix}{fill}"}}}}"#);
    assert_eq!(longest.len(), MAX);
    c.send(&longest);
    alice.expect(&format!("<Bob> {fill}"));
    let over = format!(r#"{prefix}{fill}x"}}}}"#);
    check(&mut c, over.as_bytes(), "line_too_long");
    let huge = format!(r#"{prefix}{}"}}}}"#, "y".repeat(100_000));
    check(&mut c, huge.as_bytes(), "line_too_long");

    // The longest note is fine (64 characters, 128 bytes).
    let note = "é".repeat(64);
    send(
        &mut c,
        &json!({"type":"status","payload":{"status":"away","note":note}}),
    );
    let away = json!({"type":"notification","payload":{
        "message":format!("Bob is now away ({note})."),"event":"status",
        "name":"Bob","room":"lobby","status":"away","note":note,
    }});
    expect(&mut c, away);
    // All the refused requests told alice nothing: her next lines are the
    // longest message (read above), the status change and this.
    alice.expect(&format!("* Bob is now away ({note})"));
    c.send(r#"{"type":"message","payload":{"text":"still Bob, still here"}}"#);
    alice.expect("<Bob> still Bob, still here");
    alice.send("hi Bob");
    expect(&mut c, message("alice", "lobby", "hi Bob"));
}

#[test]
fn request_ids_come_back_on_the_answer_and_only_there() {
    let server = Server::start(&["--rate", "0"]);
    let mut bob = json_connect(&server, "Bob", None);

    let mut alice = server.connect();
    alice.expect(WELCOME);
    // An error before connect carries the id.
    alice.send(r#"{"type":"who","id":"early"}"#);
    expect_error(&mut alice, "not_connected", Some(json!("early")));
    alice.send(r#"{"type":"connect","payload":{"name":"BOB"},"id":0}"#);
    expect_error(&mut alice, "name_taken", Some(json!(0)));
    alice.send(r#"{"type":"connect","payload":{"name":"Alice"},"id":"c-1"}"#);
    expect(
        &mut alice,
        json!({"type":"connect_ack","id":"c-1","payload":{"message":"Connected to the room.","name":"Alice","room":"lobby","version":1}}),
    );
    // The room's notification of the same connect has no id.
    expect(&mut bob, moved("join", "Alice", "lobby"));
    let mut dan = server.connect();
    dan.expect(WELCOME);
    dan.send(r#"{"id":1,"type":"connect","payload":{"name":"Dan","room":"side"}}"#);
    expect(
        &mut dan,
        json!({"type":"connect_ack","id":1,"payload":{"message":"Connected to the room.","name":"Dan","room":"side","version":1}}),
    );

    // Strings and numbers of every kind come back as they were.
    let who = json!({"type":"who","payload":{"room":"lobby","users":[
        {"name":"Alice","status":"online","note":null},
        {"name":"Bob","status":"online","note":null},
    ]}});
    for id in [
        json!(42),
        json!(-7),
        json!(2.5),
        json!(18446744073709551615u64),
        json!("w"),
        json!(""),
        json!("é \"q\" \\ 日本 🦀"),
    ] {
        send(&mut alice, &json!({"type":"who","id":id}));
        expect(&mut alice, with_id(who.clone(), id));
    }

    // A broadcast carries no id; the sender gets nothing back.
    alice.send(r#"{"type":"message","payload":{"text":"hi"},"id":"m1"}"#);
    expect(&mut bob, message("Alice", "lobby", "hi"));
    alice.send(r#"{"type":"direct","payload":{"to":"Bob","text":"psst"},"id":"d1"}"#);
    expect(&mut bob, direct("Alice", "psst"));

    // The mover's join notification carries the id; the old room's leave
    // and the new room's join do not.
    alice.send(r#"{"type":"join","payload":{"room":"side"},"id":"j"}"#);
    expect(
        &mut alice,
        with_id(moved("join", "Alice", "side"), json!("j")),
    );
    expect_history(&mut alice, &json!("side"), Some(&json!("j")));
    expect(&mut bob, moved("leave", "Alice", "lobby"));
    expect(&mut dan, moved("join", "Alice", "side"));
    let nick = json!({"type":"notification","payload":{
        "message":"Dan is now known as Daniel.","event":"nick",
        "name":"Daniel","room":"side","old":"Dan",
    }});
    dan.send(r#"{"type":"nick","payload":{"name":"Daniel"},"id":77}"#);
    expect(&mut dan, with_id(nick.clone(), json!(77)));
    expect(&mut alice, nick);

    // Errors after connect carry the id too.
    alice.send(r#"{"type":"frob","id":"e1"}"#);
    expect_error(&mut alice, "unknown_type", Some(json!("e1")));
    alice.send(r#"{"type":"message","payload":{},"id":3}"#);
    expect_error(&mut alice, "bad_payload", Some(json!(3)));
    alice.send(r#"{"type":"direct","payload":{"to":"ghost","text":"x"},"id":[]}"#);
    expect_error(&mut alice, "bad_payload", None);

    // An id that is neither a string nor a number makes the request
    // bad_payload, answered without an id, and the request is not done.
    for id in [json!([1]), json!({"n": 1}), json!(true), json!(false)] {
        let text = format!("not with id {id}");
        send(
            &mut alice,
            &json!({"type":"message","payload":{"text":text},"id":id}),
        );
        expect_error(&mut alice, "bad_payload", None);
    }
    // A null id is no id: the request is done and answered without one.
    alice.send(r#"{"type":"message","payload":{"text":"null id"},"id":null}"#);
    expect(&mut dan, message("Alice", "side", "null id"));
    alice.send(r#"{"type":"message","payload":{"text":"marker"}}"#);
    expect(&mut dan, message("Alice", "side", "marker"));
}

#[test]
fn a_number_id_beyond_64_bits_comes_back_as_the_same_number() {
    // "the reply or error it causes carries the same id": a client that
    // parses ids exactly (Python, serde_json with arbitrary_precision, any
    // bignum reader) must find its own id on the answer.
    let server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", None);
    let id = "123456789012345678901234567890";
    alice.send(&format!(r#"{{"type":"who","id":{id}}}"#));
    let line = alice.line();
    let echoed = line
        .split_once(r#""id":"#)
        .map(|(_, rest)| rest.trim_end_matches('}'))
        .unwrap_or_else(|| panic!("no id in {line:?}"));
    assert_eq!(echoed, id, "the id changed on the way back: {line}");
}

#[test]
fn the_actor_is_told_even_where_the_room_is_too_big_to_announce() {
    let server = Server::start(&["--announce-limit", "1"]);
    let mut alice = json_connect(&server, "Alice", None);
    let mut bob = json_connect(&server, "Bob", None);
    let busy = json!({"type":"notification","id":"s","payload":{
        "message":"Bob is now busy.","event":"status",
        "name":"Bob","room":"lobby","status":"busy","note":null,
    }});
    bob.send(r#"{"type":"status","payload":{"status":"busy"},"id":"s"}"#);
    expect(&mut bob, busy);
    bob.send(r#"{"type":"join","payload":{"room":"side"}}"#);
    expect(&mut bob, moved("join", "Bob", "side"));
    // Alice heard of neither Bob's arrival, nor his status, nor his leaving:
    // her next line is the answer to her own request.
    alice.send(r#"{"type":"users"}"#);
    expect(
        &mut alice,
        json!({"type":"users","payload":{"users":[
            {"name":"Alice","status":"online","note":null},
            {"name":"Bob","status":"busy","note":null},
        ]}}),
    );
}

#[test]
fn a_json_client_that_never_connects_is_told_in_json_and_closed() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    let mut c = server.connect();
    c.expect(WELCOME);
    c.send(r#"{"type":"connect","payload":{"name":"no good"}}"#);
    expect_error(&mut c, "name_invalid", None);
    expect(
        &mut c,
        json!({"type":"error","payload":{"code":"not_connected","message":"no name chosen within 1 s"}}),
    );
    c.expect_eof();
}

#[test]
fn json_and_text_users_share_a_room_each_in_their_own_format() {
    let server = Server::start(&["--rate", "0"]);
    let mut alice = server.login("alice");
    let mut bob = json_connect(&server, "Bob", None);
    alice.expect("* Bob has joined #lobby");

    alice.send("hi Bob");
    expect(&mut bob, message("alice", "lobby", "hi Bob"));
    bob.send(r#"{"type":"message","payload":{"text":"hi alice"}}"#);
    alice.expect("<Bob> hi alice");
    alice.send("@bob psst");
    expect(&mut bob, direct("alice", "psst"));
    bob.send(r#"{"type":"direct","payload":{"to":"ALICE","text":"psst back"}}"#);
    alice.expect("*Bob* psst back");

    // Status, both ways.
    alice.send("/away lunch");
    alice.expect("* you are now away (lunch)");
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"alice is now away (lunch).","event":"status",
            "name":"alice","room":"lobby","status":"away","note":"lunch",
        }}),
    );
    bob.send(r#"{"type":"status","payload":{"status":"busy"}}"#);
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"Bob is now busy.","event":"status",
            "name":"Bob","room":"lobby","status":"busy","note":null,
        }}),
    );
    alice.expect("* Bob is now busy");

    // Renames, both ways.
    alice.send("/nick alicia");
    alice.expect("* you are now known as alicia");
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"alice is now known as alicia.","event":"nick",
            "name":"alicia","room":"lobby","old":"alice",
        }}),
    );
    bob.send(r#"{"type":"nick","payload":{"name":"Bobby"}}"#);
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"Bob is now known as Bobby.","event":"nick",
            "name":"Bobby","room":"lobby","old":"Bob",
        }}),
    );
    alice.expect("* Bob is now known as Bobby");

    // Listings show both, each in its reader's format.
    bob.send(r#"{"type":"who"}"#);
    expect(
        &mut bob,
        json!({"type":"who","payload":{"room":"lobby","users":[
            {"name":"alicia","status":"away","note":"lunch"},
            {"name":"Bobby","status":"busy","note":null},
        ]}}),
    );
    assert_eq!(
        alice.who(),
        [
            "* users in #lobby: 2",
            "*   alicia away: lunch",
            "*   Bobby busy",
            "* end of /who",
        ]
    );

    // Leaving and joining, both ways.
    alice.send("/join side");
    alice.expect("* you joined #side");
    expect(&mut bob, moved("leave", "alicia", "lobby"));
    bob.send(r#"{"type":"join","payload":{"room":"SIDE"}}"#);
    expect(&mut bob, moved("join", "Bobby", "side"));
    expect_history(&mut bob, &json!("side"), None);
    alice.expect("* Bobby has joined #side");
    bob.send(r#"{"type":"join","payload":{"room":"lobby"}}"#);
    expect(&mut bob, moved("join", "Bobby", "lobby"));
    expect_history(&mut bob, &json!("lobby"), None);
    alice.expect("* Bobby has left #side");
    alice.send("/join lobby");
    alice.expect("* you joined #lobby");
    // The lobby's history, recorded from both modes, replayed as text.
    for want in ["] <alice> hi Bob", "] <Bob> hi alice"] {
        let line = alice.expect_prefix("[");
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    expect(&mut bob, moved("join", "alicia", "lobby"));

    // Quits, both ways.
    let mut carol = server.login("carol");
    carol.expect_prefix("[");
    carol.expect_prefix("[");
    alice.expect("* carol has joined #lobby");
    expect(&mut bob, moved("join", "carol", "lobby"));
    carol.send("/quit gone fishing");
    carol.expect("* goodbye (gone fishing)");
    carol.expect_eof();
    alice.expect("* carol has quit (gone fishing)");
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"carol has quit (gone fishing).","event":"quit",
            "name":"carol","room":"lobby","reason":"gone fishing",
        }}),
    );
    bob.send(r#"{"type":"quit","payload":{"reason":"bye"}}"#);
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"Bobby has quit (bye).","event":"quit",
            "name":"Bobby","room":"lobby","reason":"bye",
        }}),
    );
    bob.expect_eof();
    alice.expect("* Bobby has quit (bye)");
}

#[test]
fn control_characters_are_removed_and_everything_else_arrives_exactly() {
    let server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", None);
    let mut bob = json_connect(&server, "Bob", None);
    expect(&mut alice, moved("join", "Bob", "lobby"));
    let mut carol = server.login("carol");
    expect(&mut alice, moved("join", "carol", "lobby"));
    expect(&mut bob, moved("join", "carol", "lobby"));

    // LF, CR, an ANSI escape, a C1 control, NUL, BEL and DEL go; TAB stays.
    alice.send(
        r#"{"type":"message","payload":{"text":"one\ntwo\r\n\u001b[31mred\u009b\u0000\u0007\u007f end\tTAB"}}"#,
    );
    let clean = "onetwo[31mred end\tTAB";
    expect(&mut bob, message("Alice", "lobby", clean));
    carol.expect(&format!("<Alice> {clean}"));
    alice.send(r#"{"type":"direct","payload":{"to":"carol","text":"x\ny\u001b]0;title\u0007z"}}"#);
    carol.expect("*Alice* xy]0;titlez");
    alice.send(r#"{"type":"status","payload":{"status":"away","note":"out\n* to\u009b lunch"}}"#);
    carol.expect("* Alice is now away (out* to lunch)");
    expect(
        &mut bob,
        json!({"type":"notification","payload":{
            "message":"Alice is now away (out* to lunch).","event":"status",
            "name":"Alice","room":"lobby","status":"away","note":"out* to lunch",
        }}),
    );
    expect(
        &mut alice,
        json!({"type":"notification","payload":{
            "message":"Alice is now away (out* to lunch).","event":"status",
            "name":"Alice","room":"lobby","status":"away","note":"out* to lunch",
        }}),
    );
    // Nothing carol read was a forged line: the next one is this.
    bob.send(r#"{"type":"message","payload":{"text":"marker"}}"#);
    carol.expect("<Bob> marker");
    expect(&mut alice, message("Bob", "lobby", "marker"));

    // Quotes, backslashes and non-ASCII round-trip exactly, JSON to JSON
    // and to text, whether sent raw or escaped.
    let exact = "say \"hi\" \\ C:\\path é 日本 🦀 👩‍👩‍👧 tab\there  trailing ";
    send(
        &mut alice,
        &json!({"type":"message","payload":{"text":exact}}),
    );
    expect(&mut bob, message("Alice", "lobby", exact));
    carol.expect(&format!("<Alice> {exact}"));
    alice.send(r#"{"type":"message","payload":{"text":"\u00e9\u65e5\u672c\ud83e\udd80\/"}}"#);
    expect(&mut bob, message("Alice", "lobby", "é日本🦀/"));
    carol.expect("<Alice> é日本🦀/");

    // Text to JSON: exact too, controls removed there as well.
    carol.send(exact);
    expect(&mut alice, message("carol", "lobby", exact));
    expect(&mut bob, message("carol", "lobby", exact));
    carol.send_raw(b"a\x1b[2Jb\x07c\xc2\x9bd\x7fe\n");
    expect(&mut alice, message("carol", "lobby", "a[2Jbcde"));
    expect(&mut bob, message("carol", "lobby", "a[2Jbcde"));
}

#[test]
fn a_message_in_one_room_never_reaches_another() {
    let server = Server::start(&[]);
    let mut alice = json_connect(&server, "Alice", Some("General"));
    let mut bob = json_connect(&server, "Bob", Some("General"));
    expect(&mut alice, moved("join", "Bob", "General"));
    let mut carol = json_connect(&server, "Carol", None);
    let mut dave = server.login("dave");
    expect(&mut carol, moved("join", "dave", "lobby"));

    alice.send(r#"{"type":"message","payload":{"text":"General only"}}"#);
    expect(&mut bob, message("Alice", "General", "General only"));
    dave.send("lobby only");
    expect(&mut carol, message("dave", "lobby", "lobby only"));
    // The markers: the next thing each reads comes from its own room, so
    // the other room's message reached nobody here.
    carol.send(r#"{"type":"message","payload":{"text":"lobby marker"}}"#);
    dave.expect("<Carol> lobby marker");
    bob.send(r#"{"type":"message","payload":{"text":"General marker"}}"#);
    expect(&mut alice, message("Bob", "General", "General marker"));

    // Direct messages cross rooms, and only to their target.
    alice.send(r#"{"type":"direct","payload":{"to":"dave","text":"over here"}}"#);
    dave.expect("*Alice* over here");
    dave.send("@carol pssst");
    expect(&mut carol, direct("dave", "pssst"));
    carol.send(r#"{"type":"message","payload":{"text":"lobby again"}}"#);
    dave.expect("<Carol> lobby again");
    bob.send(r#"{"type":"message","payload":{"text":"General again"}}"#);
    expect(&mut alice, message("Bob", "General", "General again"));
}

#[test]
fn the_first_non_blank_line_picks_the_mode() {
    let server = Server::start(&["--rate", "0"]);
    let mut watcher = json_connect(&server, "Watcher", None);

    // Blank lines pick nothing; spaces and a tab before `{` still pick
    // JSON, and a CRLF ends the line like a LF.
    let mut spacey = server.connect();
    spacey.expect(WELCOME);
    spacey.send_raw(b"\n   \n\r\n\t\n");
    spacey.send_raw(b"  \t{\"type\":\"connect\",\"payload\":{\"name\":\"Spacey\"}}\r\n");
    expect(
        &mut spacey,
        json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Spacey","room":"lobby","version":1}}),
    );
    expect(&mut watcher, moved("join", "Spacey", "lobby"));
    // Once JSON, always JSON: a text command or a plain line is bad_json.
    for line in ["/who", "hello", "   "] {
        spacey.send(line);
    }
    expect_error(&mut spacey, "bad_json", None);
    expect_error(&mut spacey, "bad_json", None);
    spacey.send(r#"   {"type":"who"}"#);
    expect(
        &mut spacey,
        json!({"type":"who","payload":{"room":"lobby","users":[
            {"name":"Spacey","status":"online","note":null},
            {"name":"Watcher","status":"online","note":null},
        ]}}),
    );

    // Lines that pick no mode are answered in text; then `{` picks JSON.
    let mut late = server.connect();
    late.expect(WELCOME);
    late.send_raw(b"{\xff\n");
    late.expect("! line is not valid UTF-8, discarded");
    late.send(&format!("{{{}", " ".repeat(5000)));
    late.expect("! line too long (over 4096 bytes), discarded");
    late.send(r#"{"type":"connect","payload":{"name":"Late"}}"#);
    expect(
        &mut late,
        json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Late","room":"lobby","version":1}}),
    );
    expect(&mut watcher, moved("join", "Late", "lobby"));
    expect(&mut spacey, moved("join", "Late", "lobby"));

    // `hello` picks text; a later JSON line is then just a message.
    let mut text = server.connect();
    text.expect(WELCOME);
    text.send("");
    text.send("hello");
    text.expect("* you joined #lobby as hello (4 users here); /help lists the commands");
    for c in [&mut watcher, &mut spacey, &mut late] {
        expect(c, moved("join", "hello", "lobby"));
    }
    let request = r#"{"type":"who"}"#;
    text.send(request);
    for c in [&mut watcher, &mut spacey, &mut late] {
        expect(c, message("hello", "lobby", request));
    }
    assert_eq!(
        text.who(),
        [
            "* users in #lobby: 4",
            "*   hello online",
            "*   Late online",
            "*   Spacey online",
            "*   Watcher online",
            "* end of /who",
        ]
    );
    // And the JSON clients never saw it as anything else.
    watcher.send(r#"{"type":"message","payload":{"text":"marker"}}"#);
    text.expect("<Watcher> marker");
    expect(&mut spacey, message("Watcher", "lobby", "marker"));
    expect(&mut late, message("Watcher", "lobby", "marker"));
}
