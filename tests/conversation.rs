//! Chat behaviour over real TCP, in text mode: messages, direct messages,
//! the handshake, rooms, statuses, renames, quitting and the announce limit.
//! Each test runs its own `chatd` and reads like a conversation.

mod common;

use std::thread;

use common::{Client, Server, WELCOME};

/// Checks the body of a `/help` listing: one indented line per command,
/// every command there.
#[track_caller]
fn check_help(body: &[String]) {
    assert!(body.iter().all(|l| l.starts_with("*   ")), "{body:#?}");
    for cmd in [
        "/msg", "/nick", "/join", "/rooms", "/who", "/users", "/status", "/quit", "/help",
    ] {
        let n = body.iter().filter(|l| l.contains(cmd)).count();
        assert!(n >= 1, "/help does not mention {cmd}: {body:#?}");
    }
}

#[test]
fn ten_clients_chat_and_each_message_reaches_the_nine_others_in_order() {
    const USERS: usize = 10;
    const MESSAGES: usize = 20;
    let server = Server::start(&[]);
    let names: Vec<String> = (0..USERS).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let clients = server.login_all(&refs);

    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                let mut batch = String::new();
                for k in 0..MESSAGES {
                    batch += &format!("message {k} from c{i}\n");
                }
                // The barrier: the answer to /who comes after any echo of
                // this client's own messages would have.
                batch += "/who\n";
                c.send_raw(batch.as_bytes());
                let mut lines = Vec::new();
                let (mut messages, mut who_done) = (0, false);
                while messages < (USERS - 1) * MESSAGES || !who_done {
                    let l = c.line();
                    if l.starts_with('<') {
                        messages += 1;
                    } else if l == "* end of /who" {
                        who_done = true;
                    }
                    lines.push(l);
                }
                // Kept open until every thread is done, so nobody sees a
                // disconnect notice.
                (c, lines)
            })
        })
        .collect();
    let results: Vec<(Client, Vec<String>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut want_who = vec![format!("* users in #lobby: {USERS}")];
    want_who.extend(names.iter().map(|n| format!("*   {n} online")));
    want_who.push("* end of /who".into());
    for (i, (_, lines)) in results.iter().enumerate() {
        let me = format!("c{i}");
        let mut per_sender: Vec<Vec<String>> = vec![Vec::new(); USERS];
        let mut others = Vec::new();
        for l in lines {
            match l.strip_prefix('<').and_then(|r| r.split_once("> ")) {
                Some((from, text)) => {
                    assert_ne!(from, me, "{me} received its own message: {l:?}");
                    let j: usize = from[1..].parse().unwrap();
                    per_sender[j].push(text.to_string());
                }
                None => others.push(l.clone()),
            }
        }
        assert_eq!(others, want_who, "{me}: lines other than messages");
        for (j, got) in per_sender.iter().enumerate() {
            let want: Vec<String> = if j == i {
                Vec::new()
            } else {
                (0..MESSAGES)
                    .map(|k| format!("message {k} from c{j}"))
                    .collect()
            };
            assert_eq!(got, &want, "{me}: messages from c{j}");
        }
    }
}

#[test]
fn direct_messages_in_three_spellings_reach_only_their_target() {
    let server = Server::start(&[]);
    let mut c = server.login_all(&["alice", "bob", "carol"]);
    let (alice, rest) = c.split_first_mut().unwrap();
    let (bob, rest) = rest.split_first_mut().unwrap();
    let carol = &mut rest[0];

    alice.send("/msg bob one");
    alice.send("@bob two  words ");
    alice.send("@bob:three");
    alice.send("@BOB four");
    alice.send("@nobody hi");
    // Also the barrier: alice got nothing back for her direct messages.
    alice.expect("! no such user: nobody");
    alice.send("/msg ghost hi");
    alice.expect("! no such user: ghost");
    alice.send("@bob");
    alice.expect("! usage: /msg NAME TEXT (or @NAME TEXT)");
    bob.expect_lines(&[
        "*alice* one",
        "*alice* two  words ",
        "*alice* three",
        "*alice* four",
    ]);
    bob.send("@alice:got them");
    alice.expect("*bob* got them");

    alice.send("back to the room");
    // The barrier for carol: nothing direct reached her first.
    carol.expect("<alice> back to the room");
    bob.expect("<alice> back to the room");
}

#[test]
fn handshake_accepts_three_name_forms_and_refuses_bad_or_taken_names() {
    let server = Server::start(&[]);
    let mut alice = server.login("alice");

    let mut c = server.connect();
    c.expect(WELCOME);
    c.send("/who");
    c.expect("! choose a name first (/help for help)");
    c.send("/help");
    c.expect("* first choose a name: type it alone on a line (or /nick NAME)");
    let help = c.read_until(|l| l == "* end of /help");
    check_help(&help);
    c.send("/frob");
    c.expect("! unknown command /frob, /help lists the commands");
    c.send("bad name");
    c.expect("! invalid name \"bad name\": use 1-32 letters, digits, _ or -");
    c.expect("* choose a name:");
    let long = "x".repeat(33);
    c.send(&long);
    c.expect(&format!(
        "! invalid name \"{long}\": use 1-32 letters, digits, _ or -"
    ));
    c.expect("* choose a name:");
    c.send("ALICE");
    c.expect("! name \"ALICE\" is taken, choose another");
    c.expect("* choose a name:");
    c.send("#bob");
    c.expect("* you joined #lobby as bob (2 users here); /help lists the commands");
    alice.expect("* bob has joined #lobby");

    let mut d = server.connect();
    d.expect(WELCOME);
    d.send("/nick Carol");
    d.expect("* you joined #lobby as Carol (3 users here); /help lists the commands");
    alice.expect("* Carol has joined #lobby");
    c.expect("* Carol has joined #lobby");

    let max = "y".repeat(32);
    let mut e = server.connect();
    e.expect(WELCOME);
    e.send(&max);
    e.expect(&format!(
        "* you joined #lobby as {max} (4 users here); /help lists the commands"
    ));
    alice.expect(&format!("* {max} has joined #lobby"));
    e.send("/quit");
    e.expect("* goodbye");
    e.expect_eof();
    alice.expect(&format!("* {max} has quit"));

    for quit in ["/quit", "/QUIT not staying"] {
        let mut q = server.connect();
        q.expect(WELCOME);
        q.send(quit);
        q.expect("* goodbye");
        q.expect_eof();
    }
    // Nobody heard of the unnamed quitters, and they are in no listing.
    let who = alice.who();
    assert_eq!(
        who,
        [
            "* users in #lobby: 3",
            "*   alice online",
            "*   bob online",
            "*   Carol online",
            "* end of /who",
        ]
    );
}

#[test]
fn rooms_keep_messages_apart_and_listings_show_them() {
    // Replays of recorded history are tested in tests/history.rs.
    let server = Server::start(&["--history", "0"]);
    let mut c = server.login_all(&["alice", "bob", "carol"]);
    let [alice, bob, carol] = &mut c[..] else {
        unreachable!()
    };

    alice.send("/join Rust");
    alice.expect("* you joined #Rust");
    bob.expect("* alice has left #lobby");
    carol.expect("* alice has left #lobby");
    bob.send("/join #rust");
    bob.expect("* you joined #Rust");
    alice.expect("* bob has joined #Rust");
    carol.expect("* bob has left #lobby");

    alice.send("hi rust");
    bob.expect("<alice> hi rust");
    alice.send("@carol ping");
    // The barrier: the message to #Rust did not reach carol in #lobby.
    carol.expect("*alice* ping");
    carol.send("anyone?");
    carol.send("/rooms");
    carol.expect_lines(&[
        "* rooms: 2",
        "*   #lobby 1",
        "*   #Rust 2",
        "* end of /rooms",
    ]);
    assert_eq!(
        bob.who(),
        [
            "* users in #Rust: 2",
            "*   alice online",
            "*   bob online",
            "* end of /who",
        ],
        "and carol's lobby message did not reach #Rust"
    );
    alice.send("/users");
    alice.expect_lines(&[
        "* users: 3",
        "*   alice online",
        "*   bob online",
        "*   carol online",
        "* end of /users",
    ]);
    alice.send("/join RUST");
    alice.expect("* you are already in #Rust");
    alice.send("/join no way");
    alice.expect("! usage: /join ROOM");
    alice.send("/join b@d");
    alice.expect("! invalid room \"b@d\": use 1-32 letters, digits, _ or -");

    // Once empty, #Rust is gone.
    alice.send("/join lobby");
    alice.expect("* you joined #lobby");
    bob.expect("* alice has left #Rust");
    carol.expect("* alice has joined #lobby");
    bob.send("/join LOBBY");
    bob.expect("* you joined #lobby");
    alice.expect("* bob has joined #lobby");
    carol.expect("* bob has joined #lobby");
    carol.send("/rooms");
    carol.expect_lines(&["* rooms: 1", "*   #lobby 3", "* end of /rooms"]);

    // A room made again takes its new creator's case; the lobby stays
    // when everyone leaves it.
    bob.send("/join rust");
    bob.expect("* you joined #rust");
    alice.expect("* bob has left #lobby");
    carol.expect("* bob has left #lobby");
    alice.send("/join rust");
    alice.expect("* you joined #rust");
    bob.expect("* alice has joined #rust");
    carol.expect("* alice has left #lobby");
    carol.send("/join RUST");
    carol.expect("* you joined #rust");
    alice.expect("* carol has joined #rust");
    bob.expect("* carol has joined #rust");
    carol.send("/rooms");
    carol.expect_lines(&[
        "* rooms: 2",
        "*   #lobby 0",
        "*   #rust 3",
        "* end of /rooms",
    ]);
}

#[test]
fn status_changes_are_announced_and_shown_in_listings() {
    let server = Server::start(&[]);
    let mut c = server.login_all(&["alice", "bob"]);
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };

    alice.send("/status busy in a meeting");
    alice.expect("* you are now busy (in a meeting)");
    bob.expect("* alice is now busy (in a meeting)");
    assert_eq!(
        bob.who(),
        [
            "* users in #lobby: 2",
            "*   alice busy: in a meeting",
            "*   bob online",
            "* end of /who",
        ]
    );
    alice.send("/away");
    alice.expect("* you are now away");
    bob.expect("* alice is now away");
    alice.send("/away out to lunch");
    alice.expect("* you are now away (out to lunch)");
    bob.expect("* alice is now away (out to lunch)");
    bob.send("/users");
    bob.expect_lines(&[
        "* users: 2",
        "*   alice away: out to lunch",
        "*   bob online",
        "* end of /users",
    ]);
    alice.send("/back");
    alice.expect("* you are now online");
    bob.expect("* alice is now online");
    alice.send("/busy");
    alice.expect("* you are now busy");
    bob.expect("* alice is now busy");

    let too_long = "n".repeat(65);
    alice.send(&format!("/status away {too_long}"));
    alice.expect("! status note too long (over 64 characters)");
    alice.send("/status sleeping");
    alice.expect("! usage: /status online|away|busy [NOTE]");
    let longest = "n".repeat(64);
    alice.send(&format!("/STATUS Away {longest}"));
    alice.expect(&format!("* you are now away ({longest})"));
    // Next for bob: the refused changes told him nothing.
    bob.expect(&format!("* alice is now away ({longest})"));
    assert_eq!(
        bob.who(),
        [
            "* users in #lobby: 2",
            &format!("*   alice away: {longest}"),
            "*   bob online",
            "* end of /who",
        ]
    );
}

#[test]
fn renames_literal_slashes_and_unknown_commands() {
    let server = Server::start(&["--history", "0"]);
    let mut c = server.login_all(&["alice", "bob"]);
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };

    alice.send("/nick alicia");
    alice.expect("* you are now known as alicia");
    bob.expect("* alice is now known as alicia");
    bob.send("/nick ALICIA");
    bob.expect("! name \"ALICIA\" is taken, choose another");
    alice.send("/nick Alicia");
    alice.expect("* you are now known as Alicia");
    bob.expect("* alicia is now known as Alicia");
    alice.send("/nick Alicia");
    alice.expect("* you are already known as Alicia");
    alice.send("/nick bad!");
    alice.expect("! invalid name \"bad!\": use 1-32 letters, digits, _ or -");
    alice.send("/nick");
    alice.expect("! usage: /nick NAME");

    alice.send("//quit now");
    bob.expect("<Alicia> /quit now");
    alice.send("/frobnicate x");
    alice.expect("! unknown command /frobnicate, /help lists the commands");
    alice.send("/HELP");
    let help = alice.read_until(|l| l == "* end of /help");
    check_help(&help);

    // The old name is free again, and each name reaches its holder.
    let mut new_alice = server.login("alice");
    bob.expect("* alice has joined #lobby");
    alice.expect("* alice has joined #lobby");
    bob.send("@alice to the new one");
    bob.send("@Alicia to the old one");
    new_alice.expect("*bob* to the new one");
    alice.expect("*bob* to the old one");
}

#[test]
fn quit_with_a_reason_is_told_to_the_room_and_the_quitter() {
    let server = Server::start(&[]);
    let mut c = server.login_all(&["a", "b", "c"]).into_iter();
    let (mut a, mut b, mut c) = (c.next().unwrap(), c.next().unwrap(), c.next().unwrap());

    a.send("/quit gone fishing");
    a.expect("* goodbye (gone fishing)");
    a.expect_eof();
    b.expect("* a has quit (gone fishing)");
    c.expect("* a has quit (gone fishing)");
    b.send("/quit");
    b.expect("* goodbye");
    b.expect_eof();
    c.expect("* b has quit");
    drop((a, b));

    // Once both connections are gone for good, no disconnect notice
    // follows the quit notices.
    for name in ["a", "b"] {
        server.wait_log_where(&format!("({name}) ... closed: quit"), |l| {
            l.contains(&format!("({name}) 127.0.0.1:")) && l.contains("closed: quit")
        });
    }
    assert_eq!(
        c.who(),
        ["* users in #lobby: 1", "*   c online", "* end of /who"]
    );
}

#[test]
fn big_rooms_stay_quiet_about_joins_leaves_and_status_but_not_messages() {
    let server = Server::start(&["--announce-limit", "2", "--history", "0"]);
    let mut c = server.login_all(&["alice", "bob"]);
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };

    // A third member makes the lobby too big for join notices.
    let mut carol = server.login("carol");
    carol.send("hi all");
    alice.expect("<carol> hi all");
    bob.expect("<carol> hi all");
    bob.send("/away");
    bob.expect("* you are now away");
    bob.send("still here");
    alice.expect("<bob> still here");
    carol.expect("<bob> still here");

    // Leaving a room of three is quiet too; the mover is still told.
    carol.send("/join side");
    carol.expect("* you joined #side");
    // Now the lobby has two: announced again.
    bob.send("/back");
    bob.expect("* you are now online");
    alice.expect("* bob is now online");

    carol.send("/join lobby");
    carol.expect("* you joined #lobby");
    assert_eq!(
        alice.who(),
        [
            "* users in #lobby: 3",
            "*   alice online",
            "*   bob online",
            "*   carol online",
            "* end of /who",
        ]
    );
    alice.send("/quit bye");
    alice.expect("* goodbye (bye)");
    alice.expect_eof();
    // A quit from a room of three is quiet as well.
    let two = [
        "* users in #lobby: 2",
        "*   bob online",
        "*   carol online",
        "* end of /who",
    ];
    assert_eq!(bob.who(), two);
    assert_eq!(carol.who(), two);
}
