//! One chat across several nodes (PROTOCOL.md, "One chat across several
//! nodes"), with a real `nats-server` (JetStream) per test on a free
//! loopback port, and real chatd processes as the nodes.

mod common;

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::json::{recv, send};
use common::nats::{Nats, node};
use common::{Client, Server, TempDb, WELCOME};

/// Reads `c` until a line satisfies `pred`, for at most `limit`.
#[track_caller]
fn wait_line(c: &mut Client, limit: Duration, mut pred: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let l = c.line();
        if pred(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "no such line within {limit:?}");
    }
}

/// A text user named `name` on `server`, in the lobby.
#[track_caller]
fn user(server: &Server, name: &str) -> Client {
    server.login(name)
}

/// Sends a command and returns its listing up to `end`.
#[track_caller]
fn listing(c: &mut Client, command: &str, end: &str) -> Vec<String> {
    c.send(command);
    let mut lines = c.read_until(|l| l == end);
    // Notices may come before the listing starts.
    let start = lines
        .iter()
        .position(|l| !l.contains(" has joined ") && !l.contains(" has left "))
        .unwrap_or(0);
    lines.drain(..start);
    lines
}

/// Repeats a listing until `pred` holds of it (news from other nodes
/// takes a moment), for at most 5 s; returns it.
#[track_caller]
fn eventually(
    c: &mut Client,
    command: &str,
    end: &str,
    mut pred: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = listing(c, command, end);
        if pred(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "{command} stayed {lines:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A JSON user: `connect` with `payload`; returns the client and its ack.
#[track_caller]
fn json_user(server: &Server, payload: Value) -> (Client, Value) {
    let mut c = server.connect();
    send(&mut c, &json!({"type": "connect", "payload": payload}));
    c.expect(WELCOME);
    let ack = recv(&mut c);
    assert_eq!(ack["type"], "connect_ack", "{ack}");
    let history = recv(&mut c);
    assert_eq!(history["type"], "history", "{history}");
    (c, ack)
}

/// The next `message` object's (from, text, seq), skipping others.
#[track_caller]
fn next_message(c: &mut Client) -> (String, String, u64) {
    loop {
        let v = recv(c);
        if v["type"] == "message" {
            let p = &v["payload"];
            return (
                p["sender"].as_str().unwrap().to_string(),
                p["text"].as_str().unwrap().to_string(),
                p["seq"].as_u64().expect("a seq"),
            );
        }
    }
}

#[test]
fn two_nodes_are_one_chat_in_both_modes() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    let mut bob = user(&n2, "bob");
    alice.expect("* bob has joined #lobby");
    // Text mode, both ways: nobody receives their own message.
    alice.send("hello from one");
    bob.expect("<alice> hello from one");
    bob.send("hello from two");
    alice.expect("<bob> hello from two");
    // JSON mode on the second node reads the first node's text user.
    let (mut carol, _) = json_user(&n2, json!({"name": "carol"}));
    alice.expect("* carol has joined #lobby");
    bob.expect("* carol has joined #lobby");
    alice.send("to all");
    bob.expect("<alice> to all");
    let (from, text, _) = next_message(&mut carol);
    assert_eq!((from.as_str(), text.as_str()), ("alice", "to all"));
    send(
        &mut carol,
        &json!({"type": "message", "payload": {"text": "json here"}}),
    );
    alice.expect("<carol> json here");
    bob.expect("<carol> json here");
    // Direct messages cross nodes; a name nobody holds is an error.
    alice.send("@bob:psst");
    bob.expect("*alice* psst");
    bob.send("@Alice:back");
    alice.expect("*bob* back");
    alice.send("@nobody:hi");
    alice.expect("! no such user: nobody");
    // Listings count everyone.
    assert_eq!(
        listing(&mut alice, "/who", "* end of /who"),
        [
            "* users in #lobby: 3",
            "*   alice online",
            "*   bob online",
            "*   carol online"
        ]
    );
    bob.send("/join side");
    bob.expect_prefix("* you joined #side");
    alice.expect("* bob has left #lobby");
    carol.line();
    assert_eq!(
        listing(&mut alice, "/rooms", "* end of /rooms"),
        ["* rooms: 2", "*   #lobby 2", "*   #side 1"]
    );
    bob.send("/status busy lunch");
    bob.expect_prefix("* you are now busy");
    let users = eventually(&mut alice, "/users", "* end of /users", |u| {
        u.contains(&"*   bob busy: lunch".to_string())
    });
    assert_eq!(users[0], "* users: 3");
    // A name held on one node is refused on the other, in any case.
    let mut again = n1.connect();
    again.send("BOB");
    again.expect(WELCOME);
    again.expect("! name \"BOB\" is taken, choose another");
    again.expect("* choose a name:");
    // Once given up, it is free everywhere.
    bob.send("/quit");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        again.send("bob");
        let l = again.line();
        if l.starts_with("* you joined #lobby as bob") {
            break;
        }
        assert_eq!(l, "! name \"bob\" is taken, choose another");
        again.expect("* choose a name:");
        assert!(Instant::now() < deadline, "bob's name stayed taken");
        thread::sleep(Duration::from_millis(50));
    }
}
