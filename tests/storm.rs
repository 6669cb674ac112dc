//! A reconnect storm: 10,000 registered users come back with session
//! tokens right after a server restart, all at once, and every one is
//! logged in within 10 s (with Argon2id for each it would take minutes).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use chatd::crypto::Tokens;
use chatd::store::Store;
use chatd::store::password::{self, Cost};
use chatd::wire::proto::Timestamp;
use serde_json::{Value, json};

use common::json::recv;
use common::{Server, TIMEOUT, TempDb, WELCOME, stop};

const USERS: usize = 10_000;
const THREADS: usize = 8;
/// The contract's bound for all of them.
const LIMIT: Duration = Duration::from_secs(10);

fn start(db: &TempDb) -> Server {
    Server::start(&[
        "--db",
        db.as_str(),
        "--max-per-ip",
        "0",
        "--max-clients",
        "20000",
        "--register-rate",
        "0",
        "--argon2-memory",
        "64",
        "--argon2-passes",
        "1",
    ])
}

#[test]
fn ten_thousand_token_logins_after_a_restart() {
    chatd::server::raise_fd_limit().expect("raise the open-files limit");
    let db = TempDb::new("storm");
    // Some tokens from the server itself, as clients get them.
    let server = start(&db);
    let mut issued = Vec::new();
    for i in 0..10 {
        let name = format!("real{i}");
        let mut c = server.connect();
        let connect = json!({"type": "connect", "payload": {"name": name}});
        c.send(&connect.to_string());
        c.expect(WELCOME);
        recv(&mut c);
        recv(&mut c);
        let register = json!({"type": "register", "payload": {"password": "a password"}});
        c.send(&register.to_string());
        let done = loop {
            let v = recv(&mut c);
            if v["payload"]["event"] == "register" {
                break v;
            }
        };
        issued.push((name, done["payload"]["token"].as_str().unwrap().to_string()));
    }
    stop(server, vec![]);

    // The rest registered the same way would only take longer: they are
    // written to the database directly, with a real hash, and given
    // tokens made under the database's secret as the server makes them.
    {
        let store = Store::open(db.as_str(), 10_000).unwrap();
        let cost = Cost {
            memory_kib: 64,
            passes: 1,
        };
        let hash = password::hash("a password", cost).unwrap();
        let (_, secret) = store.identity().unwrap();
        let tokens = Tokens::new(&secret);
        let expires = Timestamp::now().0 + 3600;
        for i in issued.len()..USERS {
            let name = format!("user{i}");
            assert!(store.add_account(&name, &hash, Timestamp::now()).unwrap());
            let generation = store.token_generation(&name).unwrap().unwrap();
            issued.push((name.clone(), tokens.make(&name, expires, generation)));
        }
    }

    let server = start(&db);
    let addr = server.addr;
    let started = Instant::now();
    let per_thread = issued.len().div_ceil(THREADS);
    let workers: Vec<_> = issued
        .chunks(per_thread)
        .map(|part| {
            let part = part.to_vec();
            thread::spawn(move || {
                // Every request first, then every answer: the connections
                // are all open and waiting at once.
                let mut socks = Vec::with_capacity(part.len());
                for (name, token) in &part {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    let req = json!({"type": "connect", "payload": {"name": name, "token": token}});
                    s.write_all(format!("{req}\n").as_bytes()).unwrap();
                    socks.push(BufReader::new(s));
                }
                let mut back = Vec::new();
                for s in &mut socks {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        s.read_line(&mut line).expect("an answer");
                        if line.starts_with('{') {
                            break;
                        }
                    }
                    let v: Value = serde_json::from_str(&line).unwrap();
                    back.push(v);
                }
                (back, socks)
            })
        })
        .collect();
    let mut answers = Vec::new();
    let mut keep = Vec::new();
    for w in workers {
        let (back, socks) = w.join().unwrap();
        answers.extend(back);
        keep.push(socks);
    }
    let took = started.elapsed();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|v| v["type"] != "connect_ack")
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {}",
        refused.len(),
        refused[0]
    );
    assert_eq!(answers.len(), USERS);
    eprintln!("{USERS} token logins after a restart in {took:?}");
    assert!(took < LIMIT, "{USERS} token logins took {took:?}");
    drop(keep);
}
