//! The web client (web/) in a real headless Chromium, driven over
//! WebDriver by Debian's chromedriver, against the real chatd: room
//! messages between two pages and a text user, direct messages with
//! unread counts, markup shown as text, a server restart the page resumes
//! from without gap or duplicate, paging back through the history, an
//! account's token across a reload and sign-out, and a phone-sized window
//! (PROTOCOL.md, "HTTP, WebSocket and the web client", "Resuming without
//! gaps"). Chromium and chromedriver must be installed (.ci/run does):
//! without them these tests fail, they do not pass silently.
//!
//! The tests run one at a time (each starts one or two browsers; the CI
//! machine has two cores), and every wait has a deadline.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Server, Stderr, TempDb, stop};
use webdriver::{Browser, ENTER};

/// One browser test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    webdriver::require_browser();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fast password hashing for the tests that register.
const FAST: [&str; 4] = ["--argon2-memory", "64", "--argon2-passes", "1"];

const WIDE: (u32, u32) = (1024, 768);

/// A browser for `user` in this test; a failing test leaves
/// `target/browser-screenshots/<test>-<user>.png`.
fn browser(user: &str) -> Browser {
    browser_sized(user, WIDE)
}

fn browser_sized(user: &str, (width, height): (u32, u32)) -> Browser {
    let current = thread::current();
    let test = current
        .name()
        .unwrap_or("browser")
        .rsplit("::")
        .next()
        .unwrap_or("browser");
    Browser::start(&format!("{test}-{user}"), width, height)
}

/// The selector of the element with `data-testid` `id`.
fn t(id: &str) -> String {
    format!("[data-testid={id}]")
}

/// The connection indicator's state: connected, connecting,
/// reconnecting or disconnected.
fn conn_state(b: &Browser) -> String {
    b.script(
        "return document.querySelector('[data-testid=conn-state]').dataset.state",
        vec![],
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

#[track_caller]
fn wait_connected(b: &Browser) {
    wait_connected_for(b, webdriver::WAIT);
}

#[track_caller]
fn wait_connected_for(b: &Browser, limit: Duration) {
    b.wait_script_for(
        limit,
        "the page to be connected",
        "const s = document.querySelector('[data-testid=conn-state]');
         const chat = document.getElementById('chat-view');
         return s.dataset.state === 'connected' && !chat.hidden;",
        vec![],
    );
}

/// Opens the page and signs in as `name` (with `password` if given),
/// with the keyboard: the name field has the focus, Enter submits.
#[track_caller]
fn sign_in(b: &Browser, addr: SocketAddr, name: &str, password: Option<&str>) {
    b.goto(&format!("http://{addr}/"));
    b.find(&t("signin-name"));
    b.wait_script(
        "the name field to have the focus",
        "return document.activeElement === document.querySelector('[data-testid=signin-name]')",
        vec![],
    );
    if let Some(p) = password {
        b.send_keys(&t("signin-password"), p);
    }
    b.send_keys(&t("signin-name"), &format!("{name}{ENTER}"));
    wait_connected(b);
    let me = b.text(&t("me-name"));
    assert_eq!(me, name, "the page shows who is signed in");
}

/// Types `text` into the message box and presses Send.
#[track_caller]
fn say(b: &Browser, text: &str) {
    b.send_keys(&t("message-input"), text);
    b.click(&t("send-button"));
    b.wait_script(
        "the message box to empty",
        "return document.querySelector('[data-testid=message-input]').value === ''",
        vec![],
    );
}

/// The messages the list shows now: (seq, sender, text).
fn messages(b: &Browser) -> Vec<(Option<u64>, String, String)> {
    let v = b.script(
        "return [...document.querySelectorAll(
             '[data-testid=message-list] [data-testid=message]')].map(li => [
             li.dataset.seq === undefined ? null : Number(li.dataset.seq),
             li.dataset.sender,
             li.querySelector('[data-testid=message-text]').textContent])",
        vec![],
    );
    v.as_array()
        .expect("an array of messages")
        .iter()
        .map(|m| {
            (
                m[0].as_u64(),
                m[1].as_str().unwrap_or_default().to_string(),
                m[2].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the list shows a message from `sender` reading `text`.
#[track_caller]
fn wait_message(b: &Browser, sender: &str, text: &str) {
    wait_message_for(b, webdriver::WAIT, sender, text);
}

#[track_caller]
fn wait_message_for(b: &Browser, limit: Duration, sender: &str, text: &str) {
    b.wait_script_for(
        limit,
        &format!("a message from {sender}: {text:?}"),
        "const [sender, text] = arguments;
         return [...document.querySelectorAll(
             '[data-testid=message-list] [data-testid=message]')].some(li =>
             li.dataset.sender === sender &&
             li.querySelector('[data-testid=message-text]').textContent === text);",
        vec![json!(sender), json!(text)],
    );
}

/// How many times the list shows `text`.
fn count_text(b: &Browser, text: &str) -> usize {
    messages(b).iter().filter(|(_, _, t)| t == text).count()
}

/// The names in the people list.
fn who(b: &Browser) -> Vec<String> {
    let v = b.script(
        "return [...document.querySelectorAll('[data-testid=who-entry]')]
             .map(li => li.dataset.name + ':' + li.dataset.status)",
        vec![],
    );
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Waits for the people list to be exactly `want` (`name:status`).
#[track_caller]
fn wait_who(b: &Browser, want: &[&str]) {
    let deadline = Instant::now() + webdriver::WAIT;
    loop {
        let have = who(b);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] people list: want {want:?}, have {have:?}",
            b.label
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A DM conversation's unread badge: None when hidden or absent.
fn unread(b: &Browser, peer: &str) -> Option<String> {
    let v = b.script(
        "const li = document.querySelector(
             `[data-testid=dm-entry][data-peer=\"${arguments[0]}\"]`);
         if (!li) return null;
         const badge = li.querySelector('[data-testid=dm-unread]');
         return badge && !badge.hidden ? badge.textContent : null;",
        vec![json!(peer)],
    );
    v.as_str().map(str::to_string)
}

/// Fails on any error in the page's console since the last look: an
/// uncaught exception, a Content-Security-Policy violation, a failed
/// load. Only the missing favicon (the server serves three files) is
/// expected.
#[track_caller]
fn assert_clean_console(b: &Browser) {
    let errors: Vec<String> = b
        .console_log()
        .into_iter()
        .filter(|l| l.starts_with("SEVERE") || l.starts_with("WARNING"))
        .filter(|l| !l.contains("/favicon.ico"))
        .collect();
    assert!(
        errors.is_empty(),
        "[{}] console errors: {errors:#?}",
        b.label
    );
}

/// Which conversation the list shows: `room:NAME` or `dm:NAME`.
fn conversation(b: &Browser) -> String {
    b.script(
        "return document.querySelector('[data-testid=message-list]').dataset.conversation",
        vec![],
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

#[test]
fn two_pages_and_a_text_user_talk_in_one_room() {
    let _serial = serial();
    let server = Server::start(&[]);
    let mut carol = server.login("carol");
    let alice = browser("alice");
    let bob = browser("bob");
    sign_in(&alice, server.addr, "alice", None);
    carol.read_until(|l| l == "* alice has joined #lobby");
    sign_in(&bob, server.addr, "bob", None);
    carol.read_until(|l| l == "* bob has joined #lobby");
    wait_who(&alice, &["alice:online", "bob:online", "carol:online"]);

    // A page to the other page and the text user; shown to its sender at once.
    say(&alice, "hello from alice");
    wait_message(&alice, "alice", "hello from alice");
    wait_message(&bob, "alice", "hello from alice");
    carol.read_until(|l| l == "<alice> hello from alice");

    // The other page, with Enter instead of the button.
    bob.send_keys(&t("message-input"), &format!("hi from bob{ENTER}"));
    wait_message(&alice, "bob", "hi from bob");
    wait_message(&bob, "bob", "hi from bob");
    carol.read_until(|l| l == "<bob> hi from bob");

    // The text user to both pages.
    carol.send("hey from carol");
    wait_message(&alice, "carol", "hey from carol");
    wait_message(&bob, "carol", "hey from carol");

    for (b, me) in [(&alice, "alice"), (&bob, "bob")] {
        for text in ["hello from alice", "hi from bob", "hey from carol"] {
            assert_eq!(count_text(b, text), 1, "[{}] {text:?} once", b.label);
        }
        // Others' messages carry their seq; a page's own has none until a
        // history returns it.
        for (seq, sender, text) in &messages(b) {
            if sender != me {
                assert!(seq.is_some(), "[{}] no seq on {text:?}", b.label);
            }
        }
    }

    // Status: bob goes away with a note; alice's list says so.
    bob.script(
        "document.querySelector('[data-testid=status-select]').value = 'away'",
        vec![],
    );
    bob.send_keys(&t("status-note"), "lunch");
    bob.click(&t("status-set"));
    wait_who(&alice, &["alice:online", "bob:away", "carol:online"]);
    carol.read_until(|l| l == "* bob is now away (lunch)");

    // The room list has the lobby with its three people; a new room is
    // created by joining it, and the text user sees bob leave.
    alice.wait_script(
        "the lobby in the room list with 3 people",
        "const li = document.querySelector('[data-testid=room-entry][data-room=lobby]');
         return li && li.querySelector('[data-testid=room-size]').textContent === '3';",
        vec![],
    );
    bob.send_keys(&t("join-room"), &format!("rust{ENTER}"));
    bob.wait_script(
        "bob in #rust",
        "return document.querySelector('[data-testid=view-title]').textContent === '#rust'",
        vec![],
    );
    carol.read_until(|l| l == "* bob has left #lobby");
    wait_who(&alice, &["alice:online", "carol:online"]);
    carol.send("only the lobby hears this");
    wait_message(&alice, "carol", "only the lobby hears this");
    assert_eq!(count_text(&bob, "only the lobby hears this"), 0);
    assert_clean_console(&alice);
    assert_clean_console(&bob);
}

#[test]
fn direct_messages_have_their_own_conversation_and_unread_count() {
    let _serial = serial();
    let server = Server::start(&[]);
    let mut carol = server.login("carol");
    let alice = browser("alice");
    let bob = browser("bob");
    sign_in(&alice, server.addr, "alice", None);
    sign_in(&bob, server.addr, "bob", None);
    carol.read_until(|l| l == "* bob has joined #lobby");

    // Alice opens a conversation with bob by name and writes twice.
    alice.send_keys(&t("dm-to"), &format!("bob{ENTER}"));
    alice.wait_until("alice's conversation with bob", |b| {
        (conversation(b) == "dm:bob").then_some(())
    });
    say(&alice, "psst bob");
    wait_message(&alice, "alice", "psst bob");
    bob.wait_until("an unread count of 1 from alice", |b| {
        (unread(b, "alice").as_deref() == Some("1")).then_some(())
    });
    say(&alice, "are you there?");
    bob.wait_until("an unread count of 2 from alice", |b| {
        (unread(b, "alice").as_deref() == Some("2")).then_some(())
    });
    bob.wait_script(
        "the unread count in the title",
        "return document.title.startsWith('(2)')",
        vec![],
    );
    // Not in the room's view, and the room heard nothing.
    assert_eq!(conversation(&bob), "room:lobby");
    assert_eq!(count_text(&bob, "psst bob"), 0);
    carol.send("/rooms");
    let lines = carol.read_until(|l| l == "* end of /rooms");
    assert!(
        lines.iter().all(|l| !l.contains("psst")),
        "carol heard the DM: {lines:?}"
    );

    // Bob opens it: both lines, in order, and the count is gone.
    bob.click("[data-testid=dm-entry][data-peer=alice] button");
    bob.wait_until("bob's conversation with alice", |b| {
        (conversation(b) == "dm:alice").then_some(())
    });
    let got: Vec<(String, String)> = messages(&bob).into_iter().map(|(_, s, t)| (s, t)).collect();
    assert_eq!(
        got,
        [
            ("alice".to_string(), "psst bob".to_string()),
            ("alice".to_string(), "are you there?".to_string())
        ]
    );
    assert_eq!(unread(&bob, "alice"), None);

    // Bob answers; alice is looking at the conversation, so no count.
    say(&bob, "yes, here");
    wait_message(&alice, "bob", "yes, here");
    assert_eq!(unread(&alice, "bob"), None);

    // A DM from the text user makes a conversation of its own.
    carol.send("/msg alice from carol");
    alice.wait_until("an unread count of 1 from carol", |b| {
        (unread(b, "carol").as_deref() == Some("1")).then_some(())
    });
    assert_eq!(
        count_text(&alice, "from carol"),
        0,
        "not in bob's conversation"
    );
    alice.click("[data-testid=dm-entry][data-peer=carol] button");
    wait_message(&alice, "carol", "from carol");
    say(&alice, "hello carol");
    carol.read_until(|l| l == "*alice* hello carol");

    // Back to the room.
    alice.click(&t("back-to-room"));
    alice.wait_until("alice back in the lobby", |b| {
        (conversation(b) == "room:lobby").then_some(())
    });
    assert_clean_console(&alice);
    assert_clean_console(&bob);
}

#[test]
fn markup_in_a_message_is_shown_as_text() {
    let _serial = serial();
    let server = Server::start(&[]);
    let mut carol = server.login("carol");
    let alice = browser("alice");
    let bob = browser("bob");
    sign_in(&alice, server.addr, "alice", None);
    sign_in(&bob, server.addr, "bob", None);
    carol.read_until(|l| l == "* bob has joined #lobby");

    let img = "<img src=x onerror=alert(1)>";
    let flag = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";
    let bold = "<b>bold</b> & <i>&amp;</i>";
    say(&alice, img);
    say(&alice, flag);
    carol.send(bold);
    for b in [&alice, &bob] {
        wait_message(b, "alice", img);
        wait_message(b, "alice", flag);
        wait_message(b, "carol", bold);
        let v = b.script(
            "const list = document.querySelector('[data-testid=message-list]');
             return {
                 elements: list.querySelectorAll('img, script, b, i').length,
                 pwned: window.__pwned === undefined ? null : window.__pwned,
                 texts: [...list.querySelectorAll('[data-testid=message-text]')]
                     .map(e => e.textContent),
             };",
            vec![],
        );
        assert_eq!(
            v["elements"], 0,
            "[{}] markup became elements: {v}",
            b.label
        );
        assert_eq!(v["pwned"], Value::Null, "[{}] a script ran: {v}", b.label);
        assert_eq!(v["texts"], json!([img, flag, bold]), "[{}]", b.label);
        // No alert is open (WebDriver answers `no such alert`).
        let alert = b.command("GET", "/alert/text", None);
        assert!(alert.is_err(), "[{}] an alert is open: {alert:?}", b.label);
    }
    carol.read_until(|l| l == format!("<alice> {img}"));

    // Names and notes are text too, in the people list.
    bob.send_keys(&t("status-note"), "<u>away</u>");
    bob.click(&t("status-set"));
    alice.wait_script(
        "bob's note in the people list",
        "const n = document.querySelector('[data-testid=who-entry][data-name=bob] [data-testid=who-note]');
         return n && n.textContent === '<u>away</u>' && !document.querySelector('[data-testid=who-list] u');",
        vec![],
    );
    assert_clean_console(&alice);
    assert_clean_console(&bob);
}

/// Starts chatd on `port` (0 for any) with the database `db`.
fn start_on(db: &TempDb, port: u16, more: &[&str]) -> Server {
    let mut cmd = Command::new(common::chatd_path());
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", db.as_str()])
        .args(more);
    Server::spawn(cmd, Stderr::Read)
}

#[test]
fn the_page_reconnects_after_a_restart_and_resumes_without_gap_or_duplicate() {
    let _serial = serial();
    let db = TempDb::new("browser-resume");
    // A short replay: a page that did not resume would miss messages.
    let more = ["--history", "3"];
    let server = start_on(&db, 0, &more);
    let port = server.addr.port();
    let addr = server.addr;
    let mut carol = server.login("carol");
    let alice = browser("alice");
    sign_in(&alice, addr, "alice", None);
    carol.read_until(|l| l == "* alice has joined #lobby");
    for i in 1..=3 {
        carol.send(&format!("m{i}"));
    }
    wait_message(&alice, "carol", "m3");
    say(&alice, "from alice before");
    carol.read_until(|l| l == "<alice> from alice before");

    // SIGTERM: every client is told, the server exits 0.
    stop(server, vec![carol]);
    alice.wait_until("the page to notice the server is gone", |b| {
        (conn_state(b) != "connected").then_some(())
    });
    wait_message(&alice, "carol", "m3");

    // A new server on the same port and database. The page is held off
    // the network meanwhile, so carol surely speaks while it is away.
    alice.set_offline(true);
    let server = start_on(&db, port, &more);
    let mut carol = server.login("carol");
    for i in 4..=10 {
        carol.send(&format!("m{i}"));
    }
    carol.send("/rooms");
    carol.read_until(|l| l == "* end of /rooms");
    // Its retries fail meanwhile (the first comes after 0.5 s or so).
    thread::sleep(Duration::from_millis(1500));
    assert_ne!(conn_state(&alice), "connected", "the page was held offline");
    let who = carol.who();
    assert!(
        !who.iter().any(|l| l.contains("alice")),
        "alice is not back yet: {who:?}"
    );

    // Back on the network, the page comes back by itself (within its
    // backoff, at most 10 s) and resumes.
    alice.set_offline(false);
    wait_connected_for(&alice, Duration::from_secs(25));
    wait_message(&alice, "carol", "m10");
    // Live again.
    carol.send("m11");
    wait_message(&alice, "carol", "m11");
    say(&alice, "from alice after");
    carol.read_until(|l| l == "<alice> from alice after");
    carol.send("m12");
    wait_message(&alice, "carol", "m12");

    let got = messages(&alice);
    let texts: Vec<&str> = got.iter().map(|(_, _, t)| t.as_str()).collect();
    let mut want: Vec<String> = (1..=3).map(|i| format!("m{i}")).collect();
    want.push("from alice before".into());
    want.extend((4..=11).map(|i| format!("m{i}")));
    want.push("from alice after".into());
    want.push("m12".into());
    assert_eq!(texts, want, "every message once, in order: {got:?}");
    // Carol's all carry their seq, growing; alice's own message from
    // before the restart came back in the resumed history with its seq.
    let seqs: Vec<u64> = got.iter().filter_map(|(s, _, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs grow, no duplicate: {seqs:?}"
    );
    for (seq, sender, text) in &got {
        if sender == "carol" {
            assert!(seq.is_some(), "{text:?} has no seq");
        }
    }
    alice.wait_until("the connection indicator to say connected", |b| {
        (b.text(&t("conn-state")) == "connected").then_some(())
    });
}

#[test]
fn older_messages_page_back_to_the_beginning() {
    let _serial = serial();
    let server = Server::start(&["--history", "5", "--rate", "0"]);
    let mut carol = server.login("carol");
    for i in 0..130 {
        carol.send(&format!("old {i}"));
    }
    carol.send("/rooms");
    carol.read_until(|l| l == "* end of /rooms");
    let alice = browser("alice");
    sign_in(&alice, server.addr, "alice", None);
    wait_message(&alice, "carol", "old 129");
    assert_eq!(messages(&alice).len(), 5, "the replay holds 5");
    let mut clicks = 0;
    loop {
        let disabled = alice.script(
            "return document.querySelector('[data-testid=load-older]').disabled",
            vec![],
        );
        if disabled == true {
            break;
        }
        let before = messages(&alice).len();
        alice.click(&t("load-older"));
        alice.wait_until("an older page", |b| {
            let disabled = b.script(
                "return document.querySelector('[data-testid=load-older]').disabled",
                vec![],
            );
            (messages(b).len() > before || disabled == true).then_some(())
        });
        clicks += 1;
        assert!(clicks < 10, "paging does not end");
    }
    let got = messages(&alice);
    let texts: Vec<String> = got.iter().map(|(_, _, t)| t.clone()).collect();
    let want: Vec<String> = (0..130).map(|i| format!("old {i}")).collect();
    assert_eq!(texts, want, "the whole history once, in order");
    let seqs: Vec<u64> = got.iter().map(|(s, _, _)| s.expect("a seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The transcript is a download of these lines; clearing empties the view.
    let href = alice.script(
        "let url = null;
         const orig = HTMLAnchorElement.prototype.click;
         HTMLAnchorElement.prototype.click = function () {
             url = this.href + ' ' + this.download;
         };
         document.querySelector('[data-testid=save-transcript]').click();
         HTMLAnchorElement.prototype.click = orig;
         return url;",
        vec![],
    );
    let href = href.as_str().expect("a download link").to_string();
    assert!(href.starts_with("blob:"), "{href}");
    assert!(href.ends_with(".txt"), "{href}");
    alice.click(&t("clear-view"));
    alice.wait_until("an empty view", |b| messages(b).is_empty().then_some(()));
    carol.send("after the clear");
    wait_message(&alice, "carol", "after the clear");
    assert_eq!(messages(&alice).len(), 1);
}

#[test]
fn a_registered_name_stays_signed_in_across_a_reload_until_sign_out() {
    let _serial = serial();
    let server = Server::start(&FAST);
    let alice = browser("alice");
    sign_in(&alice, server.addr, "alice", None);
    assert_eq!(alice.text(&t("me-guest")), "guest");
    alice.send_keys(&t("register-password"), "correct horse");
    alice.click(&t("register-button"));
    alice.wait_until("alice registered", |b| {
        (b.text(&t("me-guest")) == "registered").then_some(())
    });
    let stored = alice.script("return localStorage.getItem('chatd.session')", vec![]);
    let stored: Value = serde_json::from_str(stored.as_str().expect("a stored session")).unwrap();
    assert!(stored["token"].is_string(), "a token is stored: {stored}");
    assert!(
        !stored.to_string().contains("correct horse"),
        "never the password"
    );

    // A reload signs in again with the token, no password asked.
    alice.refresh();
    wait_connected(&alice);
    assert_eq!(alice.text(&t("me-name")), "alice");
    assert_eq!(alice.text(&t("me-guest")), "registered");
    say(&alice, "back after a reload");

    // Sign out: the token is revoked and forgotten, the form is back.
    let token = stored["token"].as_str().unwrap().to_string();
    alice.click(&t("sign-out"));
    alice.wait_script(
        "the sign-in form",
        "return !document.getElementById('signin-view').hidden &&
             localStorage.getItem('chatd.session') === null",
        vec![],
    );
    alice.refresh();
    alice.find(&t("signin-name"));
    assert_eq!(conn_state(&alice), "disconnected");
    // The old token no longer works.
    let mut c = server.connect();
    c.send(
        &json!({"type": "connect", "payload": {"name": "alice", "token": token}, "id": 1})
            .to_string(),
    );
    c.read_until(|l| l.contains("\"bad_password\""));

    // A registered name needs its password.
    alice.send_keys(&t("signin-name"), &format!("alice{ENTER}"));
    alice.wait_script(
        "the password question",
        "return document.querySelector('[data-testid=signin-error]').textContent.includes('password')",
        vec![],
    );
    sign_in(&alice, server.addr, "alice", Some("correct horse"));
    assert_eq!(alice.text(&t("me-guest")), "registered");
}

#[test]
fn a_phone_sized_window_has_no_horizontal_scroll() {
    let _serial = serial();
    let server = Server::start(&[]);
    let phone = browser_sized("phone", (375, 800));
    let fits = "return {
        inner: window.innerWidth,
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
    };";
    let check = |when: &str| {
        let v = phone.script(fits, vec![]);
        let inner = v["inner"].as_u64().unwrap();
        assert_eq!(inner, 375, "the viewport is phone-sized: {v}");
        assert!(
            v["doc"].as_u64().unwrap() <= inner && v["body"].as_u64().unwrap() <= inner,
            "{when}: wider than the window: {v}"
        );
    };
    phone.goto(&format!("http://{}/", server.addr));
    phone.find(&t("signin-name"));
    check("the sign-in form");
    sign_in(&phone, server.addr, "pat", None);
    check("the chat");
    say(&phone, &"x".repeat(400));
    say(
        &phone,
        "https://example.invalid/a/very/long/path/without/any/break/whatsoever/0123456789",
    );
    check("long lines");
    // The message box and Send are on screen.
    let v = phone.script(
        "const r = document.querySelector('[data-testid=send-button]').getBoundingClientRect();
         return r.right <= window.innerWidth && r.bottom <= window.innerHeight && r.width > 0;",
        vec![],
    );
    assert_eq!(v, true, "the Send button is on screen");
    // The menu opens the rooms and people, still within the width.
    phone.click(&t("menu-toggle"));
    phone.wait_script(
        "the people list on screen",
        "const r = document.querySelector('[data-testid=who-list]').getBoundingClientRect();
         return r.width > 0 && r.right <= window.innerWidth;",
        vec![],
    );
    check("the menu");
    phone.click(&t("menu-toggle"));
    check("the menu closed");
    assert_clean_console(&phone);
}

#[test]
fn more_missed_than_one_history_holds_is_filled_page_by_page() {
    let _serial = serial();
    let db = TempDb::new("browser-truncated");
    let more = ["--rate", "0"];
    let server = start_on(&db, 0, &more);
    let port = server.addr.port();
    let mut carol = server.login("carol");
    let alice = browser("alice");
    sign_in(&alice, server.addr, "alice", None);
    carol.send("first");
    wait_message(&alice, "carol", "first");
    stop(server, vec![carol]);
    alice.wait_until("the page to notice the server is gone", |b| {
        (conn_state(b) != "connected").then_some(())
    });

    // 1500 messages while the page is away: a history after `since`
    // holds the newest 1000, marked truncated; the page pages back for
    // the rest.
    alice.set_offline(true);
    let server = start_on(&db, port, &more);
    let mut carol = server.login("carol");
    for i in 0..1500 {
        carol.send(&format!("missed {i}"));
    }
    carol.send("/rooms");
    carol.read_until(|l| l == "* end of /rooms");
    alice.set_offline(false);
    wait_connected_for(&alice, Duration::from_secs(25));
    wait_message(&alice, "carol", "missed 1499");
    alice.wait_until("all 1501 messages", |b| {
        (messages(b).len() >= 1501).then_some(())
    });
    let got = messages(&alice);
    let texts: Vec<String> = got.iter().map(|(_, _, t)| t.clone()).collect();
    let mut want = vec!["first".to_string()];
    want.extend((0..1500).map(|i| format!("missed {i}")));
    assert!(
        texts == want,
        "not every message once, in order: {} shown",
        texts.len()
    );
    let seqs: Vec<u64> = got.iter().map(|(s, _, _)| s.expect("a seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs grow");
}
