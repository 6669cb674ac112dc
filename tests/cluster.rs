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

/// Waits (at most 10 s) until `/who` on `c`'s node lists `name`; no join
/// notice for `name` comes to `c` after this.
#[track_caller]
fn sees(c: &mut Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = format!("*   {name} ");
    while !listing(c, "/who", "* end of /who")
        .iter()
        .any(|l| l.starts_with(&entry))
    {
        assert!(Instant::now() < deadline, "{name} never seen");
        thread::sleep(Duration::from_millis(20));
    }
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
    // Presence travels apart from messages: bob may hear alice arrive
    // after his own login; /who shows when his node knows her.
    sees(&mut bob, "alice");
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

/// The node's answer to `GET /healthz` on its chat port, whole.
fn healthz(server: &Server) -> String {
    let mut c = server.connect();
    c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    String::from_utf8_lossy(&c.read_to_eof()).into_owned()
}

/// `/healthz` asked every 50 ms until its answer starts with `status`
/// (for at most 10 s); that answer.
#[track_caller]
fn healthz_until(server: &Server, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = healthz(server);
        if health.starts_with(status) {
            return health;
        }
        assert!(Instant::now() < deadline, "never {status}; last:\n{health}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A JSON `/history` of `count` on `c`: (sender, text, seq), oldest first.
#[track_caller]
fn history(c: &mut Client, count: usize) -> Vec<(String, String, u64)> {
    send(
        c,
        &json!({"type": "history", "payload": {"count": count}, "id": "h"}),
    );
    loop {
        let v = recv(c);
        if v["type"] == "history" && v["id"] == "h" {
            return v["payload"]["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    (
                        m["sender"].as_str().unwrap().to_string(),
                        m["text"].as_str().unwrap().to_string(),
                        m["seq"].as_u64().unwrap(),
                    )
                })
                .collect();
        }
    }
}

#[test]
fn writers_on_three_nodes_flooding_one_room_leave_one_order_everywhere() {
    const EACH: usize = 300;
    let nats = Nats::start();
    let nodes: Vec<Server> = (1..=3)
        .map(|i| node(&nats, &format!("n{i}"), &[]))
        .collect();
    let mut readers: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| json_user(n, json!({"name": format!("reader{i}")})).0)
        .collect();
    let mut writers: Vec<Client> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| user(n, &format!("w{i}")))
        .collect();
    let sending: Vec<thread::JoinHandle<Client>> = writers
        .drain(..)
        .enumerate()
        .map(|(i, mut w)| {
            thread::spawn(move || {
                for k in 0..EACH {
                    w.send(&format!("w{i} says {k}"));
                }
                w
            })
        })
        .collect();
    let seen: Vec<Vec<(String, String, u64)>> = readers
        .iter_mut()
        .map(|r| (0..3 * EACH).map(|_| next_message(r)).collect())
        .collect();
    let _writers: Vec<Client> = sending.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s, &seen[0], "reader {i} saw another order");
        assert!(s.windows(2).all(|w| w[0].2 < w[1].2), "seq grows");
        for w in 0..3 {
            let mine: Vec<&str> = s
                .iter()
                .filter(|m| m.0 == format!("w{w}"))
                .map(|m| m.1.as_str())
                .collect();
            let sent: Vec<String> = (0..EACH).map(|k| format!("w{w} says {k}")).collect();
            assert_eq!(mine, sent, "w{w}'s messages, each once, in order");
        }
    }
    // Every node's history holds the same messages with the same seq.
    for r in readers.iter_mut() {
        assert_eq!(history(r, 1000), seen[0]);
    }
}

#[test]
fn a_client_resumes_on_another_node_with_exactly_what_it_missed() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    let (mut bob, ack) = json_user(&n1, json!({"name": "bob"}));
    let epoch = ack["payload"]["epoch"].as_str().unwrap().to_string();
    alice.send("before");
    let (_, _, last) = next_message(&mut bob);
    drop(bob);
    // bob's node saw him go; alice learns it through her own node.
    alice
        .read_until(|l| l.starts_with("* bob has left") || l.starts_with("* bob has disconnected"));
    let missed: Vec<String> = (0..50).map(|i| format!("missed {i}")).collect();
    // A third user reads them live, to know they went round.
    let (mut carol, _) = json_user(&n2, json!({"name": "carol"}));
    for m in &missed {
        alice.send(m);
    }
    for _ in &missed {
        next_message(&mut carol);
    }
    let mut bob = n2.connect();
    let started = Instant::now();
    send(
        &mut bob,
        &json!({"type": "connect", "payload": {"name": "bob", "since": last, "epoch": epoch}}),
    );
    bob.expect(WELCOME);
    let ack = recv(&mut bob);
    assert_eq!(
        ack["payload"]["epoch"],
        epoch.as_str(),
        "one epoch everywhere"
    );
    let resumed = recv(&mut bob);
    let took = started.elapsed();
    assert_eq!(resumed["type"], "history", "{resumed}");
    let texts: Vec<&str> = resumed["payload"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, missed, "exactly the missed messages");
    eprintln!("resume of 50 missed messages on another node: {took:?}");
}

#[test]
fn a_killed_node_s_users_are_gone_within_ten_seconds_and_their_names_free() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let mut n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    let _bob = user(&n2, "bob");
    let _carol = user(&n2, "carol");
    alice.read_until(|l| l == "* carol has joined #lobby");
    let killed = Instant::now();
    n2.signal(libc::SIGKILL);
    n2.wait_exit(Duration::from_secs(5));
    let mut gone = HashSet::new();
    while gone.len() < 2 {
        let l = wait_line(&mut alice, Duration::from_secs(10), |l| {
            l.starts_with("* bob ") || l.starts_with("* carol ")
        });
        gone.insert(l.split(' ').nth(1).unwrap().to_string());
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("a killed node's users shown gone after {took:?}");
    assert_eq!(
        listing(&mut alice, "/who", "* end of /who"),
        ["* users in #lobby: 1", "*   alice online"]
    );
    // Their names are free on the surviving node.
    let mut bob = n1.connect();
    bob.send("bob");
    bob.expect(WELCOME);
    bob.expect_prefix("* you joined #lobby as bob");
}

#[test]
fn a_login_on_another_node_replaces_a_dead_node_s_connection_at_once() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let mut n2 = node(&nats, "n2", &[]);
    let mut bob = user(&n2, "bob");
    bob.send("/register bob-pass-1");
    bob.expect("* bob is now registered: log in with this password from now on");
    n2.signal(libc::SIGKILL);
    n2.wait_exit(Duration::from_secs(5));
    // Long before the node is found dead (5 s without a heartbeat), the
    // right password takes the name over.
    let started = Instant::now();
    let (_bob, answer) = log_in(&n1, "bob", "bob-pass-1");
    assert!(answer.starts_with("* you joined #lobby as bob"), "{answer}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    eprintln!("a login replacing a dead node's connection took {took:?}");
}

#[test]
fn a_node_taken_for_dead_that_comes_back_brings_its_users_back() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    let mut bob = user(&n2, "bob");
    sees(&mut alice, "bob");
    sees(&mut bob, "alice");
    // Frozen past the heartbeat timeout, as a node cut off from NATS is.
    n2.signal(libc::SIGSTOP);
    wait_line(&mut alice, Duration::from_secs(10), |l| {
        l.starts_with("* bob has disconnected")
    });
    n2.signal(libc::SIGCONT);
    // Its user is still connected to it: the name is claimed again, and
    // everyone sees him back.
    wait_line(&mut alice, Duration::from_secs(10), |l| {
        l == "* bob has joined #lobby"
    });
    bob.send("back");
    assert_eq!(
        wait_line(&mut alice, Duration::from_secs(10), |l| l.starts_with('<')),
        "<bob> back"
    );
    // The frozen node does not take the others for dead in turn.
    let who = listing(&mut bob, "/who", "* end of /who");
    assert_eq!(who[0], "* users in #lobby: 2", "{who:?}");
    // And the name is his: nobody else may take it.
    let mut other = n1.connect();
    other.send("bob");
    other.expect(WELCOME);
    other.expect("! name \"bob\" is taken, choose another");
}

#[test]
fn nats_stopping_for_a_while_loses_nothing_and_doubles_nothing() {
    let mut nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    let (mut bob, _) = json_user(&n2, json!({"name": "bob"}));
    alice.send("before");
    assert_eq!(next_message(&mut bob).1, "before");
    nats.stop();
    // Said while NATS is away: held in order, in the node.
    let during: Vec<String> = (0..20).map(|i| format!("during {i}")).collect();
    for m in &during {
        alice.send(m);
    }
    // The connections stay; the node says it has no link.
    alice.send("/help");
    alice.read_until(|l| l == "* end of /help");
    // The node learns of the loss when its NATS connection drops.
    let health = healthz_until(&n1, "HTTP/1.1 503");
    assert!(health.contains("cluster: no link to NATS"), "{health}");
    // No name can be claimed meanwhile: a newcomer hears so at once.
    let mut dave = n1.connect();
    dave.send("dave");
    dave.expect(WELCOME);
    dave.expect("! server busy, try again in a moment");
    // Longer than a node may stay silent (5 s): an outage of NATS is
    // nobody's death.
    thread::sleep(Duration::from_secs(6));
    nats.resume();
    healthz_until(&n1, "HTTP/1.1 200");
    dave.expect("* choose a name:");
    dave.send("dave");
    dave.expect_prefix("* you joined #lobby as dave");
    alice.send("after");
    let got: Vec<String> = (0..21).map(|_| next_message(&mut bob).1).collect();
    let mut want = during.clone();
    want.push("after".into());
    assert_eq!(got, want, "in order, each once");
    // Nothing more comes: no message twice.
    alice.send("last");
    assert_eq!(next_message(&mut bob).1, "last");
    let all: Vec<String> = history(&mut bob, 100).into_iter().map(|m| m.1).collect();
    let mut want = vec!["before".to_string()];
    want.extend(during);
    want.extend(["after".to_string(), "last".to_string()]);
    assert_eq!(all, want);
    // Everyone is still there for everyone, and nobody was said gone.
    let who = listing(&mut alice, "/who", "* end of /who");
    assert_eq!(who[0], "* users in #lobby: 3", "{who:?}");
    let seen = listing(&mut alice, "/help", "* end of /help");
    assert!(!seen.iter().any(|l| l.contains("bob has")), "{seen:?}");
}

#[test]
fn past_its_bound_a_node_without_nats_stops_reading_its_senders() {
    let mut nats = Nats::start();
    let metrics = ["--rate", "0", "--metrics-listen", "127.0.0.1:0"];
    let n1 = node(&nats, "n1", &metrics);
    let n2 = node(&nats, "n2", &[]);
    // Its own threads answer /healthz there even while nobody is read.
    let line = n1.wait_log("metrics on ");
    let at: std::net::SocketAddr = line
        .rsplit_once("metrics on ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap();
    let get = |path: &str| {
        let mut c = Client::connect(at);
        c.send_raw(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        String::from_utf8_lossy(&c.read_to_eof()).into_owned()
    };
    let health = || get("/healthz");
    let mut alice = user(&n1, "alice");
    let (mut bob, _) = json_user(&n2, json!({"name": "bob"}));
    nats.stop();
    // More than the 10,000 a node holds for NATS, in one burst.
    let total = 10_100;
    let burst: String = (0..total).map(|i| format!("m{i}\n")).collect();
    alice.send_raw(burst.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health().contains("10001 messages waiting") {
        assert!(Instant::now() < deadline, "never held: {}", health());
        thread::sleep(Duration::from_millis(50));
    }
    // It stays there: the rest waits in the socket, unread.
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(50));
        let now = health();
        assert!(now.contains("10001 messages waiting"), "{now}");
    }
    let metrics = get("/metrics");
    for line in [
        "chatd_cluster_link_up 0",
        "chatd_cluster_outgoing_waiting 10001",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    alice.send("/help");
    nats.resume();
    // Everything goes out, once, in order, and the sender is read again.
    for i in 0..total {
        assert_eq!(next_message(&mut bob).1, format!("m{i}"));
    }
    alice.read_until(|l| l == "* end of /help");
    // Every sending acknowledged in the end (after a reconnection what was
    // not acknowledged goes again; the copies are skipped by the readers).
    let wanted = [
        "chatd_cluster_link_up 1",
        "chatd_cluster_outgoing_waiting 0",
        "chatd_cluster_slow_consumer_total 0",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = get("/metrics");
        if wanted.iter().all(|w| metrics.lines().any(|l| l == *w)) {
            break;
        }
        assert!(Instant::now() < deadline, "{wanted:?}:\n{metrics}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_stops_with_an_error_if_nats_lost_the_cluster_s_stream() {
    let mut nats = Nats::start();
    let mut n1 = node(&nats, "n1", &[]);
    let mut alice = user(&n1, "alice");
    nats.wipe();
    nats.resume();
    // Its clients are told the server stops, and it exits with an error
    // naming why; restarted, it would join the stream as it is now.
    alice.read_until(|l| l == "* server is shutting down");
    let status = n1.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{status}");
    n1.wait_log("the stream CHATD_chatd is gone");
    let again = node(&nats, "n1", &[]);
    let mut bob = user(&again, "bob");
    bob.send("/who");
    bob.expect("* users in #lobby: 1");
}

#[test]
fn chatd_without_its_nats_stops_at_start() {
    use std::process::{Command, Stdio};
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut child = Command::new(common::chatd_path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--db",
            ":memory:",
            "--cluster",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatd");
    let (status, stderr) = common::wait_with_stderr(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach NATS at"), "{stderr}");
}

#[test]
fn a_restarted_node_catches_up_its_history_from_the_stream() {
    let nats = Nats::start();
    let db = TempDb::new("cluster-restart");
    let n1 = node(&nats, "n1", &[]);
    let mut n2 = node(&nats, "n2", &["--db", db.as_str()]);
    let mut alice = user(&n1, "alice");
    let (mut bob, _) = json_user(&n2, json!({"name": "bob"}));
    for i in 0..10 {
        alice.send(&format!("first {i}"));
    }
    for _ in 0..10 {
        next_message(&mut bob);
    }
    drop(bob);
    n2.signal(libc::SIGTERM);
    n2.wait_exit(Duration::from_secs(10));
    // Said while the node is down.
    let (mut carol, _) = json_user(&n1, json!({"name": "carol"}));
    for i in 0..10 {
        alice.send(&format!("second {i}"));
    }
    for _ in 0..10 {
        next_message(&mut carol);
    }
    let whole = history(&mut carol, 100);
    assert_eq!(whole.len(), 20);
    let n2 = node(&nats, "n2", &["--db", db.as_str()]);
    let (mut bob, _) = json_user(&n2, json!({"name": "bob"}));
    // The restarted node reads on from its cursor: once caught up, its
    // history is the same.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = history(&mut bob, 100);
        if h == whole {
            break;
        }
        assert!(Instant::now() < deadline, "history stayed {h:?}");
        thread::sleep(Duration::from_millis(100));
    }
    n2.wait_log("history from stream position 11");
}

/// Waits until `server` asks `name` for a password (its copy of the
/// cluster's accounts has it), and answers `password`; returns the line
/// that follows.
#[track_caller]
fn log_in(server: &Server, name: &str, password: &str) -> (Client, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = server.connect();
        c.send(name);
        c.expect(WELCOME);
        let l = c.line();
        if l == format!("* password for {name}:") {
            c.send(password);
            let answer = c.line();
            return (c, answer);
        }
        assert!(Instant::now() < deadline, "{name} stayed unregistered: {l}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_account_registered_on_one_node_logs_in_on_another() {
    let nats = Nats::start();
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let mut alice = user(&n1, "alice");
    alice.send("/register first-pass1");
    alice.expect("* alice is now registered: log in with this password from now on");
    alice.send("/quit");
    alice.read_until(|l| l.starts_with("* you have quit") || l.starts_with("* goodbye"));
    let (mut alice, answer) = log_in(&n2, "alice", "first-pass1");
    assert!(
        answer.starts_with("* you joined #lobby as alice"),
        "{answer}"
    );
    // Registering the same name on the other node is refused.
    let mut other = user(&n1, "eve");
    other.send("/nick alice");
    other.expect("! name \"alice\" is taken, choose another");
    // A new password applies everywhere; the old one no longer works.
    alice.send("/passwd first-pass1 second-pass2");
    alice.read_until(|l| l == "* password changed for alice");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, answer) = log_in(&n1, "alice", "first-pass1");
        if answer == "! wrong password for alice" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old password still works: {answer}"
        );
    }
    // The right one on the other node replaces the connection here.
    let (_again, answer) = log_in(&n1, "alice", "second-pass2");
    assert!(
        answer.starts_with("* you joined #lobby as alice"),
        "{answer}"
    );
    let rest = String::from_utf8(alice.read_to_eof()).unwrap();
    assert!(
        rest.ends_with("* you have disconnected (logged in from another connection)\n"),
        "{rest}"
    );
}

/// `chatd ARGS` against the cluster in `nats`, `stdin` given; its stdout,
/// after asserting it succeeded.
#[track_caller]
fn operator(nats: &Nats, args: &[&str], stdin: &str) -> String {
    let url = nats.url();
    let mut all = vec!["--cluster", url.as_str()];
    all.extend_from_slice(args);
    let out = common::operator_command(&all, stdin);
    assert!(
        out.status.success(),
        "chatd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn roles_mutes_bans_and_topics_apply_on_every_node() {
    let nats = Nats::start();
    // The operator's commands act on the cluster's accounts in NATS.
    operator(&nats, &["accounts", "add", "mo"], "mo-secret\n");
    operator(&nats, &["accounts", "role", "mo", "moderator"], "");
    let listed = operator(&nats, &["accounts", "list"], "");
    assert_eq!(listed, "mo\tmoderator\n");
    let n1 = node(&nats, "n1", &[]);
    let n2 = node(&nats, "n2", &[]);
    let (mut mo, answer) = log_in(&n2, "mo", "mo-secret");
    assert!(answer.starts_with("* you joined #lobby as mo"), "{answer}");
    let mut bob = user(&n1, "bob");
    sees(&mut mo, "bob");
    // A moderator on one node mutes a user on another.
    mo.send("/mute bob 600 flood");
    bob.read_until(|l| l.starts_with("* you were muted by mo"));
    bob.send("hi");
    bob.expect_prefix("! you are muted until ");
    // A topic set on one node reaches the room's members on the other.
    mo.send("/topic house rules");
    bob.read_until(|l| l == "* mo set the topic of #lobby: house rules");
    let mut carol = user(&n1, "carol");
    carol.read_until(|l| l == "* topic of #lobby: house rules");
    // A ban ends the connection on the other node, and holds there.
    mo.send("/ban bob spam");
    bob.read_until(|l| l == "* you were banned by mo (spam)");
    bob.expect_eof();
    let mut again = n1.connect();
    again.send("bob");
    again.expect(WELCOME);
    again.expect("! bob is banned, choose another name");
    // Every node's actions are in the cluster's audit, newest first.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = operator(&nats, &["audit"], "");
        let actions: Vec<&str> = audit
            .lines()
            .map(|l| l.split(' ').nth(2).unwrap_or(""))
            .collect();
        if actions == ["ban", "topic", "mute", "role"] {
            break;
        }
        assert!(Instant::now() < deadline, "audit: {audit}");
        thread::sleep(Duration::from_millis(50));
    }
    // A node started now learns who is here, the bans and the topics.
    let n3 = node(&nats, "n3", &[]);
    let mut dan = user(&n3, "dan");
    sees(&mut dan, "carol");
    sees(&mut dan, "mo");
    // (What a new node reads of the buckets arrives apart from presence:
    // asked again until there.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        dan.send("/topic");
        let topic = wait_line(&mut dan, Duration::from_secs(5), |l| l.contains("topic"));
        if topic == "* topic of #lobby: house rules" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no topic on the new node: {topic:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    loop {
        let mut again = n3.connect();
        again.send("bob");
        again.expect(WELCOME);
        let answer = again.line();
        if answer == "! bob is banned, choose another name" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob not banned on the new node: {answer}"
        );
        again.send("/quit");
        thread::sleep(Duration::from_millis(50));
    }
    // A role set by the operator reaches its holder on a running node.
    operator(&nats, &["accounts", "role", "mo", "user"], "");
    mo.read_until(|l| l.starts_with("* you are now a user"));
}
