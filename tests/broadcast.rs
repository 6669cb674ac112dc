//! Broadcasts under pressure, over real TCP: several text and JSON users
//! flood one room while two readers with tiny receive buffers take the
//! stream slowly and keep asking for listings in between. The server
//! shares each broadcast's bytes between recipients and writes whatever a
//! socket takes, so these readers see partial writes, ranges copied into
//! their own buffers, and their own replies queued between broadcasts. Every
//! message must arrive once, whole, in its sender's order, and every reply
//! must arrive in one piece.

mod common;

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value;

use common::{Client, Server, WELCOME};

const TEXT_SENDERS: [&str; 3] = ["t0", "t1", "t2"];
const JSON_SENDERS: [&str; 2] = ["j0", "j1"];
const PER_SENDER: usize = 2000;
/// A reader asks for a listing after this many messages.
const ASK_EVERY: usize = 1000;
/// The readers' receive buffer: far less than what is sent to them.
const SMALL_RCVBUF: usize = 4096;
/// Padding that makes each reader's share (about 5 MB) more than the
/// kernel takes in at once, so writes to it are partial.
const PAD: usize = 500;

fn json_login(mut c: Client, name: &str) -> Client {
    c.expect(WELCOME);
    c.send(&format!(
        r#"{{"type":"connect","payload":{{"name":"{name}"}}}}"#
    ));
    let ack: Value = serde_json::from_str(&c.line()).expect("JSON");
    assert_eq!(ack["type"], "connect_ack", "{ack}");
    c
}

fn text_login(mut c: Client, name: &str) -> Client {
    c.expect(WELCOME);
    c.send(name);
    c.expect_prefix(&format!("* you joined #lobby as {name} ("));
    c
}

/// Counts one message from `sender` and checks it is the next one.
#[track_caller]
fn count(seen: &mut HashMap<String, usize>, sender: &str, text: &str) {
    let next = seen.entry(sender.to_string()).or_default();
    let want = format!("m{next} {}", "x".repeat(PAD));
    assert!(text == want, "from {sender}, out of order: {text:.20}...");
    *next += 1;
}

#[track_caller]
fn assert_all_seen(seen: &HashMap<String, usize>) {
    for name in TEXT_SENDERS.iter().chain(&JSON_SENDERS) {
        assert_eq!(seen.get(*name), Some(&PER_SENDER), "messages from {name}");
    }
}

#[test]
fn a_flood_reaches_slow_readers_whole_and_in_order_between_their_replies() {
    // The readers are read one after the other, and the senders not at
    // all, so each may be owed the whole flood at once.
    let server = Server::start(&["--rate", "0", "--max-outbuf", "67108864"]);
    let mut text_reader = text_login(
        Client::connect_small_rcvbuf(server.addr, SMALL_RCVBUF),
        "rt",
    );
    let mut json_reader = json_login(
        Client::connect_small_rcvbuf(server.addr, SMALL_RCVBUF),
        "rj",
    );
    let mut senders: Vec<Client> = TEXT_SENDERS
        .iter()
        .map(|n| text_login(server.connect(), n))
        .chain(JSON_SENDERS.iter().map(|n| json_login(server.connect(), n)))
        .collect();

    // Each sender's whole flood goes out in one write, so the server reads
    // from all of them in the same turns and interleaves their broadcasts.
    let pad = "x".repeat(PAD);
    let floods: Vec<String> = (0..senders.len())
        .map(|i| {
            let mut flood = String::new();
            for m in 0..PER_SENDER {
                if i < TEXT_SENDERS.len() {
                    flood.push_str(&format!("m{m} {pad}\n"));
                } else {
                    flood.push_str(&format!(
                        r#"{{"type":"message","payload":{{"text":"m{m} {pad}"}}}}"#
                    ));
                    flood.push('\n');
                }
            }
            flood
        })
        .collect();
    // Written from threads: a flood is more than a socket buffer holds,
    // and the server reads each sender a slice per turn.
    std::thread::scope(|scope| {
        for (sender, flood) in senders.iter().zip(&floods) {
            scope.spawn(move || {
                let mut socket = sender.stream();
                socket.write_all(flood.as_bytes()).expect("send the flood");
            });
        }
    });

    let total = PER_SENDER * (TEXT_SENDERS.len() + JSON_SENDERS.len());
    let users = 2 + senders.len();

    // The text reader: `<name> mN` lines, and a `/rooms` listing asked for
    // now and then, which must come as three consecutive lines.
    let mut seen = HashMap::new();
    let (mut got, mut asked, mut answered) = (0, 0, 0);
    while got < total || answered < asked {
        let line = text_reader.line();
        if let Some(rest) = line.strip_prefix('<') {
            let (sender, text) = rest.split_once("> ").expect("a message line");
            count(&mut seen, sender, text);
            got += 1;
            if got % ASK_EVERY == 0 {
                text_reader.send("/rooms");
                asked += 1;
            }
        } else if line == "* rooms: 1" {
            text_reader.expect(&format!("*   #lobby {users}"));
            text_reader.expect("* end of /rooms");
            answered += 1;
        } else {
            assert!(
                line.starts_with("* ") && line.contains(" has joined #lobby"),
                "{line}"
            );
        }
    }
    assert_all_seen(&seen);

    // The JSON reader: message objects, and `who` answers carrying the id
    // of their request.
    let mut seen = HashMap::new();
    let (mut got, mut asked, mut answered) = (0, 0, 0u64);
    while got < total || answered < asked {
        let line = json_reader.line();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
        match v["type"].as_str() {
            Some("message") => {
                let p = &v["payload"];
                let (sender, text) = (p["sender"].as_str(), p["text"].as_str());
                count(&mut seen, sender.expect("sender"), text.expect("text"));
                got += 1;
                if got % ASK_EVERY == 0 {
                    asked += 1;
                    json_reader.send(&format!(r#"{{"type":"who","id":{asked}}}"#));
                }
            }
            Some("who") => {
                answered += 1;
                assert_eq!(v["id"], answered, "answers in the order asked");
                let members = v["payload"]["users"].as_array().expect("users");
                assert_eq!(members.len(), users);
            }
            // Entering a room: the join, then the room's history.
            Some("history") => {}
            _ => assert_eq!(v["payload"]["event"], "join", "{line}"),
        }
    }
    assert_all_seen(&seen);

    // Nobody was dropped: a last message reaches both readers right away.
    senders[0].send("last");
    text_reader.expect("<t0> last");
    let last: Value = serde_json::from_str(&json_reader.line()).expect("JSON");
    assert_eq!(last["payload"]["text"], "last");
}
