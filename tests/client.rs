//! `chat-client` in pipe mode, run as a binary against a real `chatd` (or
//! a fake server where chatd would never send what the test needs):
//! conversations, local commands, exit codes, hostile bytes, scripts.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use common::proc::Proc;
use common::{Client, Server, TIMEOUT, TempPath, WELCOME, accept, chat_client_path, fake_server};

/// A transcript file's lines without their `YYYY-MM-DD HH:MM:SS ` times,
/// checking that each has one.
#[track_caller]
fn untimed(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let b = l.as_bytes();
            let timed = b.len() > 20
                && b[..19].iter().enumerate().all(|(i, c)| match i {
                    4 | 7 => *c == b'-',
                    10 => *c == b' ',
                    13 | 16 => *c == b':',
                    _ => c.is_ascii_digit(),
                })
                && b[19] == b' ';
            assert!(timed, "no time on transcript line {l:?}");
            l[20..].to_string()
        })
        .collect()
}

#[test]
fn two_piped_clients_converse() {
    let server = Server::start(&[]);
    let mut alice = Proc::login(&server, "alice");
    // `localhost` may resolve to ::1 first; the client tries each address.
    let port = server.addr.port().to_string();
    let mut bob = Proc::spawn(&["--name", "bob", "localhost", &port]);
    bob.expect(WELCOME);
    bob.expect_prefix("* you joined #lobby as bob (2 users here)");
    alice.expect("* bob has joined #lobby");

    alice.send("hi bob,  spaces kept ");
    bob.expect("<alice> hi bob,  spaces kept ");
    bob.send("@alice psst");
    bob.send("//slash is literal");
    // Also the barrier: alice's own message was not echoed to her stdout.
    alice.expect("*bob* psst");
    alice.expect("<bob> /slash is literal");
    alice.send("/nick alicia");
    alice.expect("* you are now known as alicia");
    bob.expect("* alice is now known as alicia");

    bob.close_stdin();
    bob.expect("* goodbye");
    alice.expect("* bob has quit");
    let (status, rest, stderr) = bob.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert!(rest.is_empty(), "{rest:?}");

    alice.send("/quit see you");
    alice.expect("* goodbye (see you)");
    let (status, _, stderr) = alice.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn save_writes_the_transcript_and_clear_empties_it() {
    let server = Server::start(&[]);
    let (first, second, log) = (
        TempPath::new("save-1"),
        TempPath::new("save-2"),
        TempPath::new("save-log"),
    );
    let mut alice = Proc::connect(&server, &["--log", log.as_str()]);
    alice.expect(WELCOME);
    alice.send("alice");
    let joined = alice.expect_prefix("* you joined #lobby as alice");
    let mut bob = server.login("bob");
    alice.expect("* bob has joined #lobby");
    alice.send("first");
    bob.expect("<alice> first");
    bob.send("reply");
    alice.expect("<bob> reply");

    alice.send(&format!("/save {}", first.as_str()));
    alice.expect(&format!("-- saved 5 lines to {}", first.as_str()));
    // Our own line is in the transcript, as `<NAME> text`.
    let before = [
        WELCOME,
        joined.as_str(),
        "* bob has joined #lobby",
        "<alice> first",
        "<bob> reply",
    ];
    assert_eq!(untimed(first.lines()), before);

    alice.send("/clear");
    alice.send("/save");
    alice.expect("-- usage: /save FILE");
    bob.send("after clear");
    alice.expect("<bob> after clear");
    alice.send(&format!("/save {}", second.as_str()));
    alice.expect(&format!("-- saved 2 lines to {}", second.as_str()));
    assert_eq!(
        untimed(second.lines()),
        ["-- usage: /save FILE", "<bob> after clear"]
    );
    alice.send("/save /nonexistent-dir/x");
    let err = alice.expect_prefix("-- cannot save to /nonexistent-dir/x: ");
    assert!(err.contains("No such file"), "{err}");

    alice.send("/quit");
    alice.expect("* goodbye");
    let (status, _, _) = alice.wait();
    assert!(status.success());
    // The log keeps everything, /clear or not, as it happened.
    let logged = untimed(log.lines());
    assert_eq!(logged[..5], before);
    assert_eq!(
        logged[5..],
        [
            format!("-- saved 5 lines to {}", first.as_str()),
            "-- usage: /save FILE".to_string(),
            "<bob> after clear".to_string(),
            format!("-- saved 2 lines to {}", second.as_str()),
            err,
            "* goodbye".to_string(),
        ]
    );
}

#[test]
fn help_lists_local_commands_then_the_servers() {
    let server = Server::start(&[]);
    let mut alice = Proc::login(&server, "alice");
    alice.send("/help");
    alice.expect("-- local commands:");
    for cmd in ["/save FILE", "/clear", "/quit [REASON]", "/help"] {
        let line = alice.expect_prefix("--   ");
        assert!(line.contains(cmd), "{line:?} should describe {cmd}");
    }
    let server_help = alice.expect_prefix("*   ");
    assert!(server_help.contains("TEXT"), "{server_help}");
}

#[test]
fn a_refused_connection_is_exit_1_with_a_clear_message() {
    // A port that was free a moment ago and has no listener now.
    let port = fake_server().local_addr().unwrap().port().to_string();
    let p = Proc::spawn(&["127.0.0.1", &port]);
    let (status, out, stderr) = p.wait();
    assert_eq!(status.code(), Some(1));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        stderr,
        format!("Unable to connect to 127.0.0.1:{port}: Connection refused\n")
    );
}

#[test]
fn the_server_going_away_is_exit_1() {
    let mut server = Server::start(&[]);
    let mut alice = Proc::login(&server, "alice");
    server.signal(libc::SIGTERM);
    alice.expect("* server is shutting down");
    // stdin stays open: alice did not quit, the server left.
    let (status, stderr) = alice.wait_with_stdin_open();
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr, "Disconnected from chat server\n");
    server.wait_exit(TIMEOUT);

    // Killed outright, with no notice: the same.
    let server = Server::start(&[]);
    let mut alice = Proc::login(&server, "alice");
    drop(server);
    let (status, stderr) = alice.wait_with_stdin_open();
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr, "Disconnected from chat server\n");
}

#[test]
fn hostile_bytes_from_the_server_never_reach_stdout() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut p = Proc::spawn(&["127.0.0.1", &port]);
    let mut server = accept(&fake);
    let long = "y".repeat(100_000);
    let mut evil = Vec::new();
    evil.extend_from_slice(b"<eve> \x1b[2J\x1b[H\x1b]0;owned\x07 wipe\n");
    evil.extend_from_slice(b"* c1 \xc2\x9b31m and raw \x9b31m and \xc2\x85 NEL\n");
    evil.extend_from_slice(b"<eve> cr\roverwrite bs\x08\x08 del\x7f nul\x00 tab\tok\r\n");
    evil.extend_from_slice("*eve* rtl \u{202e}txt.exe\n".as_bytes());
    evil.extend_from_slice(format!("<eve> {long}\n").as_bytes());
    evil.extend_from_slice(b"! last line, no LF \x1b[31m");
    server.send_raw(&evil);
    server.shutdown_write();

    let mut lines = Vec::new();
    for _ in 0..6 {
        lines.push(p.raw_line());
    }
    for line in &lines {
        let bad = line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        assert!(!bad, "a control byte reached stdout: {line:?}");
        let text = String::from_utf8(line.clone()).expect("UTF-8");
        let c1 = text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c));
        assert!(!c1, "a C1 control reached stdout: {text:?}");
    }
    let text: Vec<String> = lines
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    assert_eq!(text[0], "<eve> ^[[2J^[[H^[]0;owned^G wipe");
    assert_eq!(
        text[1],
        "* c1 <U+009B>31m and raw \u{fffd}31m and <U+0085> NEL"
    );
    assert_eq!(text[2], "<eve> cr^Moverwrite bs^H^H del^? nul^@ tab\tok");
    assert_eq!(text[3], "*eve* rtl <U+202E>txt.exe");
    // Far longer than chatd's --max-line, and shown whole.
    assert_eq!(text[4], format!("<eve> {long}"));
    assert_eq!(text[5], "! last line, no LF ^[[31m");
    let (status, rest, stderr) = p.wait();
    assert_eq!(status.code(), Some(1));
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(stderr, "Disconnected from chat server\n");
}

#[test]
fn a_script_of_many_lines_is_all_delivered_before_the_client_exits() {
    const LINES: usize = 200;
    let server = Server::start(&["--rate", "0"]);
    let mut bob = server.login("bob");
    let script = TempPath::new("script");
    let mut text = String::from("alice\n");
    for i in 0..LINES {
        text += &format!("line {i} of the script \n");
    }
    // The last line has no LF: it is still a line.
    text += "//the end";
    std::fs::write(&script.0, &text).unwrap();

    // A regular file as stdin: epoll would refuse it.
    let file = std::fs::File::open(&script.0).unwrap();
    let p = Proc::spawn_with(&["127.0.0.1", &server.addr.port().to_string()], file.into());
    bob.expect("* alice has joined #lobby");
    for i in 0..LINES {
        bob.expect(&format!("<alice> line {i} of the script "));
    }
    bob.expect("<alice> /the end");
    bob.expect("* alice has quit");
    let (status, out, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(out.first().map(String::as_str), Some(WELCOME));
    assert_eq!(out.last().map(String::as_str), Some("* goodbye"));
    assert_eq!(
        out.len(),
        3,
        "own lines are not repeated on stdout: {out:?}"
    );
}

#[test]
fn dev_null_as_stdin_connects_and_quits() {
    let server = Server::start(&[]);
    let port = server.addr.port().to_string();
    let p = Proc::spawn_with(&["127.0.0.1", &port], Stdio::null());
    let (status, out, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(out, [WELCOME, "* goodbye"]);
}

#[test]
fn passwords_are_sent_but_never_shown_logged_or_saved() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let (log, saved) = (TempPath::new("pw-log"), TempPath::new("pw-save"));
    let mut p = Proc::spawn(&["--log", log.as_str(), "127.0.0.1", &port]);
    let mut server = accept(&fake);
    server.send(WELCOME);
    p.expect(WELCOME);
    p.send("alice");
    server.expect("alice");
    server.send("* password for alice:");
    p.expect("* password for alice:");
    p.send(" hunter2 hunter2 ");
    server.expect(" hunter2 hunter2 ");
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    p.expect_prefix("* you joined #lobby as alice");
    p.send("/register correct-horse-42");
    server.expect("/register correct-horse-42");
    p.send("/passwd correct-horse-42 battery-staple-7");
    server.expect("/passwd correct-horse-42 battery-staple-7");
    p.send("now a message");
    server.expect("now a message");
    p.send(&format!("/save {}", saved.as_str()));
    p.expect_prefix("-- saved 4 lines to ");
    p.send("/quit");
    server.expect("/quit");
    drop(server);
    let (status, out, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");

    let saved = saved.lines().join("\n");
    let logged = log.lines().join("\n");
    let out = out.join("\n");
    for secret in ["hunter2", "correct-horse", "battery-staple"] {
        for (what, text) in [("saved", &saved), ("logged", &logged), ("stdout", &out)] {
            assert!(!text.contains(secret), "{secret} was {what}: {text}");
        }
    }
    // The message after them is kept, under our name.
    assert!(saved.ends_with("<alice> now a message"), "{saved}");
}

/// Quitting at a password question must not send `/quit`: the server
/// would take it as the password. The client closes its side instead.
#[test]
fn quitting_at_a_password_question_sends_no_line() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut p = Proc::spawn(&["127.0.0.1", &port]);
    let mut server = accept(&fake);
    server.send(WELCOME);
    p.expect(WELCOME);
    p.send("alice");
    server.expect("alice");
    server.send("* password for alice:");
    p.expect("* password for alice:");
    // The end of piped input is a quit.
    p.close_stdin();
    server.expect_eof();
    drop(server);
    let (status, _, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");
}

/// A client whose stdin is a pipe the test never writes or closes still
/// sees everything the server sends.
#[test]
fn incoming_lines_are_printed_while_stdin_is_silent() {
    let server = Server::start(&[]);
    let mut alice = Proc::login(&server, "alice");
    let mut bob: Client = server.login("bob");
    alice.expect("* bob has joined #lobby");
    for i in 0..5 {
        bob.send(&format!("m{i}"));
        alice.expect(&format!("<bob> m{i}"));
    }
}

/// A script that logs in with a password, sent all at once: each line is
/// taken only once the server has answered the one before, so the
/// password lines are known to be passwords and never shown as messages.
#[test]
fn a_whole_script_with_passwords_keeps_them_secret() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let (log, saved) = (
        TempPath::new("pw-script-log"),
        TempPath::new("pw-script-save"),
    );
    let mut p = Proc::spawn(&["--log", log.as_str(), "127.0.0.1", &port]);
    let mut server = accept(&fake);
    server.send(WELCOME);
    p.expect(WELCOME);
    p.send_raw(
        format!(
            "alice\nhunter22pw\nsecond-try-pw\nhello\n/save {}\n",
            saved.as_str()
        )
        .as_bytes(),
    );
    p.close_stdin();
    server.expect("alice");
    server.send("* password for alice:");
    server.expect("hunter22pw");
    server.send("! wrong password");
    server.send("* password for alice:");
    server.expect("second-try-pw");
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    server.expect("hello");
    // /save is local; then the end of input.
    server.expect("/quit");
    server.send("* goodbye");
    drop(server);
    let (status, out, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");

    let saved = untimed(saved.lines());
    let logged = untimed(log.lines());
    for (what, text) in [("saved", &saved), ("logged", &logged), ("stdout", &out)] {
        for secret in ["hunter22pw", "second-try-pw"] {
            assert!(
                !text.iter().any(|l| l.contains(secret)),
                "{secret} was {what}: {text:#?}"
            );
        }
    }
    assert_eq!(saved.last().map(String::as_str), Some("<alice> hello"));
    assert!(logged.contains(&"<alice> hello".to_string()), "{logged:#?}");
}

/// `/save` never blocks the client, and never writes over the log.
#[test]
fn save_refuses_fifos_devices_and_the_log_file() {
    let server = Server::start(&[]);
    let (log, fifo) = (TempPath::new("save-refuse-log"), TempPath::new("save-fifo"));
    let mut p = Proc::connect(&server, &["--log", log.as_str()]);
    p.expect(WELCOME);
    p.send("alice");
    p.expect_prefix("* you joined #lobby as alice");

    let c_path = std::ffi::CString::new(fifo.as_str()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // No one reads the FIFO: opening it to write would wait forever.
    p.send(&format!("/save {}", fifo.as_str()));
    p.expect(&format!(
        "-- cannot save to {}: not a regular file",
        fifo.as_str()
    ));
    // A reader makes no difference: a FIFO is still refused.
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo.0)
        .unwrap();
    p.send(&format!("/save {}", fifo.as_str()));
    p.expect(&format!(
        "-- cannot save to {}: not a regular file",
        fifo.as_str()
    ));
    drop(reader);
    p.send("/save /dev/null");
    p.expect("-- cannot save to /dev/null: not a regular file");

    p.send(&format!("/save {}", log.as_str()));
    p.expect(&format!(
        "-- cannot save to {}: it is the --log file",
        log.as_str()
    ));
    p.send("/quit");
    p.expect("* goodbye");
    let (status, _, stderr) = p.wait();
    assert!(status.success(), "{status:?} {stderr}");
    // The log is whole: it starts with the welcome.
    assert_eq!(untimed(log.lines())[0], WELCOME);
}

/// A reader that stops early (`chat-client ... | head -1`) ends the
/// session quietly: `/quit` to the server, exit 0, nothing on stderr.
#[test]
fn stdout_closed_by_its_reader_is_a_quiet_quit() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut child = Command::new(chat_client_path())
        .args(["--name", "alice", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chat-client");
    let mut server = accept(&fake);
    server.expect("alice");
    server.send(WELCOME);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim_end(), WELCOME);
    drop(stdout);
    // The next line cannot be written: the client leaves.
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    server.expect("/quit");
    server.send("* goodbye");
    drop(server);
    let (status, stderr) = common::wait_with_stderr(&mut child, TIMEOUT);
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(stderr, "");
}
