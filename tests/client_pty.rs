//! `chat-client` in a pseudo-terminal, as a person uses it: the test types
//! on the master side and reads the screen through a terminal emulator
//! (vt100), while other users talk over real TCP.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use unicode_width::UnicodeWidthStr;

use common::{Server, TIMEOUT, accept, chat_client_path, fake_server};

const ROWS: u16 = 20;
const COLS: u16 = 60;

/// What the client has drawn so far.
struct Seen {
    parser: vt100::Parser,
    /// Every byte the client wrote to the terminal.
    raw: Vec<u8>,
}

/// `chat-client` running on the slave side of a pseudo-terminal.
struct Pty {
    master: File,
    child: Child,
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

fn nz(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).expect("a size is not zero")
}

#[track_caller]
fn check(rc: libc::c_int, what: &str) {
    assert!(
        rc >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
}

fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize; the descriptor is open.
    check(
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
        "TIOCSWINSZ",
    );
}

/// Opens a pseudo-terminal pair, both ends close-on-exec so that no other
/// test's child holds them open.
fn open_pty() -> (File, OwnedFd) {
    // SAFETY: plain calls on a descriptor this function owns; ptsname_r
    // writes a NUL-terminated name into the buffer it is given.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        check(master, "posix_openpt");
        let master = File::from_raw_fd(master);
        check(libc::grantpt(master.as_raw_fd()), "grantpt");
        check(libc::unlockpt(master.as_raw_fd()), "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        check(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            "ptsname_r",
        );
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        check(slave, "open the pty slave");
        (master, OwnedFd::from_raw_fd(slave))
    }
}

impl Pty {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (master, slave) = open_pty();
        set_size(&master, ROWS, COLS);
        let mut cmd = Command::new(chat_client_path());
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave))
            .stderr(Stdio::null());
        // SAFETY: setsid and ioctl are async-signal-safe. The client gets
        // the terminal as its controlling one, so a resize signals it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("cannot start chat-client");
        let seen = Arc::new((
            Mutex::new(Seen {
                parser: vt100::Parser::new(nz(ROWS), nz(COLS), 0),
                raw: Vec::new(),
            }),
            Condvar::new(),
        ));
        let mut reader = master.try_clone().expect("dup master");
        let sink = seen.clone();
        thread::spawn(move || {
            let mut buf = [0; 4096];
            // EIO once the client has exited and the slave is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                let (lock, grew) = &*sink;
                let mut seen = lock.lock().unwrap_or_else(|e| e.into_inner());
                seen.parser.process(&buf[..n]);
                seen.raw.extend_from_slice(&buf[..n]);
                grew.notify_all();
            }
        });
        Pty {
            master,
            child,
            seen,
        }
    }

    /// Types `keys` as a person would.
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
    }

    /// Waits until the screen satisfies `pred` (described by `what`).
    #[track_caller]
    fn wait_screen(&self, what: &str, mut pred: impl FnMut(&vt100::Screen) -> bool) {
        self.wait_for(what, |seen| pred(seen.parser.screen()));
    }

    /// Waits until what was drawn satisfies `pred`.
    #[track_caller]
    fn wait_for(&self, what: &str, mut pred: impl FnMut(&Seen) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        let (lock, grew) = &*self.seen;
        let mut seen = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !pred(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let rows = screen_rows(seen.parser.screen());
                drop(seen);
                panic!("the screen never showed {what} within {TIMEOUT:?}; it shows {rows:#?}");
            }
            seen = grew
                .wait_timeout(seen, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for a row that reads exactly `want` (trailing blanks aside).
    #[track_caller]
    fn wait_row(&self, want: &str) {
        self.wait_screen(&format!("the row {want:?}"), |s| {
            screen_rows(s).iter().any(|r| r == want)
        });
    }

    /// Waits for the cursor's row to read `want`, with the cursor at its
    /// end (trailing spaces in `want` count for the cursor only).
    #[track_caller]
    fn wait_input(&self, want: &str) {
        let width = u16::try_from(want.width()).expect("a short line");
        self.wait_screen(&format!("the input {want:?}"), |s| {
            let (row, col) = s.cursor_position();
            let rows = screen_rows(s);
            rows.get(usize::from(row))
                .is_some_and(|r| r == want.trim_end())
                && col == width
        });
    }

    /// Waits until the client has written more than `len` bytes in all.
    #[track_caller]
    fn wait_output_past(&self, len: usize) {
        self.wait_for("more output", |seen| seen.raw.len() > len);
    }

    fn rows(&self) -> Vec<String> {
        let seen = self.seen.0.lock().unwrap_or_else(|e| e.into_inner());
        screen_rows(seen.parser.screen())
    }

    fn raw(&self) -> Vec<u8> {
        let seen = self.seen.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.raw.clone()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        common::wait_child(&mut self.child, TIMEOUT)
    }

    /// The terminal's local flags, as the client left them.
    fn lflag(&self) -> libc::tcflag_t {
        // SAFETY: an all-zero termios is valid; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: on Linux the master reports the pair's settings.
        check(
            unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut t) },
            "tcgetattr",
        );
        t.c_lflag
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screen_rows(s: &vt100::Screen) -> Vec<String> {
    s.rows(0, COLS).map(|r| r.trim_end().to_string()).collect()
}

const LEFT: &str = "\x1b[D";
const END: &str = "\x1b[F";
const UP: &str = "\x1b[A";

#[test]
fn a_line_being_typed_survives_an_incoming_message() {
    let server = Server::start(&[]);
    let mut bob = server.login("bob");
    let port = server.addr.port().to_string();
    let mut pty = Pty::spawn(&["--name", "alice", "127.0.0.1", &port], &[]);
    bob.expect("* alice has joined #lobby");
    pty.wait_input("alice> ");
    let cooked = libc::ICANON | libc::ECHO;
    assert_eq!(pty.lflag() & cooked, 0, "raw mode while running");

    pty.type_keys("héllo wor");
    pty.wait_input("alice> héllo wor");
    bob.send("interrupting you");
    pty.wait_row("<bob> interrupting you");
    // The half-typed line is still there, below the message, cursor and all.
    pty.wait_input("alice> héllo wor");

    pty.type_keys(&format!("ld 世界{LEFT}{LEFT}!x\x7f{END}?\r"));
    bob.expect("<alice> héllo world !世界?");
    pty.wait_input("alice> ");
    let rows = pty.rows();
    let at = |want: &str| rows.iter().position(|r| r == want);
    let (theirs, ours) = (
        at("<bob> interrupting you"),
        at("<alice> héllo world !世界?"),
    );
    assert!(theirs.is_some() && ours > theirs, "{rows:#?}");

    // Names have colours, and bob's is the same each time.
    let seen = pty.seen.0.lock().unwrap();
    let row = theirs.unwrap() as u16;
    let name = seen.parser.screen().cell(row, 1).unwrap().fgcolor();
    assert_ne!(name, vt100::Color::Default);
    assert_eq!(
        seen.parser.screen().cell(row, 6).unwrap().fgcolor(),
        vt100::Color::Default
    );
    drop(seen);

    // Ctrl-C quits politely and gives the terminal back as it was.
    pty.type_keys("\x03");
    bob.expect("* alice has quit");
    assert!(pty.wait_exit().success());
    assert_eq!(pty.lflag() & cooked, cooked, "terminal restored");
}

#[test]
fn passwords_never_appear_on_screen_or_in_history() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut pty = Pty::spawn(&["127.0.0.1", &port], &[]);
    let mut server = accept(&fake);
    // Short enough not to wrap.
    server.send("* welcome; choose a name:");
    pty.wait_row("* welcome; choose a name:");
    pty.wait_input("name> ");
    pty.type_keys("alice\r");
    server.expect("alice");
    server.send("* password for alice:");
    pty.wait_input("password for alice (not shown): ");
    pty.type_keys("hunter22 secret\r");
    server.expect("hunter22 secret");
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    pty.wait_input("alice> ");

    pty.type_keys("/register correct-horse-9");
    // Only the command word shows; the cursor waits after it.
    pty.wait_input("alice> /register ");
    pty.type_keys("\r");
    server.expect("/register correct-horse-9");
    pty.type_keys("/passwd a-old-pass b-new-pass\r");
    server.expect("/passwd a-old-pass b-new-pass");
    pty.type_keys("hello\r");
    server.expect("hello");
    pty.wait_row("<alice> hello");
    // History holds what was sent, secrets left out, and nothing from
    // before the name was accepted (it might have been a password).
    pty.type_keys(UP);
    pty.wait_input("alice> hello");
    pty.type_keys(&format!("{UP}{UP}x"));
    pty.wait_input("alice> hellox");

    pty.type_keys("\x03");
    server.expect("/quit");
    drop(server);
    assert!(pty.wait_exit().success());
    let raw = String::from_utf8_lossy(&pty.raw()).into_owned();
    for secret in ["hunter22", "correct-horse", "a-old-pass", "b-new-pass"] {
        assert!(!raw.contains(secret), "{secret} reached the screen");
    }
}

#[test]
fn a_resize_rewraps_the_input_and_no_color_means_none() {
    let server = Server::start(&[]);
    let mut bob = server.login("bob");
    let port = server.addr.port().to_string();
    let mut pty = Pty::spawn(&["--name", "al", "127.0.0.1", &port], &[("NO_COLOR", "1")]);
    bob.expect("* al has joined #lobby");
    pty.wait_input("al> ");
    bob.send("hi");
    pty.wait_row("<bob> hi");

    // The kernel signals the client (SIGWINCH) when the size changes.
    {
        let mut seen = pty.seen.0.lock().unwrap();
        seen.parser.set_size(nz(ROWS), nz(20));
    }
    let before = pty.raw().len();
    set_size(&pty.master, ROWS, 20);
    // The redraw at the new width is the only output to come: once it
    // is there, the client has seen the resize.
    pty.wait_output_past(before);
    // 4 + 26 columns: two rows at the new width, the cursor after them.
    pty.type_keys("abcdefghijklmnopqrstuvwxyz");
    pty.wait_screen("the input wrapped at 20 columns", |s| {
        let rows = screen_rows(s);
        let (row, col) = s.cursor_position();
        let row = usize::from(row);
        row >= 1
            && rows[row - 1] == "al> abcdefghijklmnop"
            && rows[row] == "qrstuvwxyz"
            && col == 10
    });
    pty.type_keys("\r");
    bob.expect("<al> abcdefghijklmnopqrstuvwxyz");

    let seen = pty.seen.0.lock().unwrap();
    let s = seen.parser.screen();
    for row in 0..ROWS {
        for col in 0..20 {
            let cell = s.cell(row, col).unwrap();
            assert_eq!(
                cell.fgcolor(),
                vt100::Color::Default,
                "colour at {row},{col}"
            );
        }
    }
}

/// With `--name`, a line typed before the server's password question
/// arrives is held, then sent as the password: never drawn, echoed or
/// kept in history.
#[test]
fn a_line_typed_ahead_of_the_password_question_stays_secret() {
    let fake = fake_server();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut pty = Pty::spawn(&["--name", "alice", "127.0.0.1", &port], &[]);
    let mut server = accept(&fake);
    server.expect("alice");
    pty.wait_input("waiting for the server (typing not shown): ");
    // Each key is handled before the screen is drawn again: once the
    // redraw after Enter is there, the line has been entered.
    let before = pty.raw().len();
    pty.type_keys("hunter22");
    pty.wait_output_past(before);
    let before = pty.raw().len();
    pty.type_keys("\r");
    pty.wait_output_past(before);

    server.send("* password for alice:");
    server.expect("hunter22");
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    pty.wait_input("alice> ");
    pty.type_keys(&format!("{UP}x"));
    pty.wait_input("alice> x");
    let rows = pty.rows();
    assert!(!rows.iter().any(|r| r.contains("hunter22")), "{rows:#?}");
    let raw = String::from_utf8_lossy(&pty.raw()).into_owned();
    assert!(!raw.contains("hunter22"), "the password reached the screen");
}

/// Keys are read even while the server reads nothing and lines pile up:
/// Ctrl-C still quits (twice: the first `/quit` cannot reach the server).
#[test]
fn ctrl_c_works_while_the_server_is_not_reading() {
    // A server that takes the name, then never reads again, with a small
    // receive buffer so the kernel holds less on its behalf.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(1).unwrap();
    let fake: std::net::TcpListener = socket.into();
    let port = fake.local_addr().unwrap().port().to_string();
    let mut pty = Pty::spawn(&["--name", "alice", "127.0.0.1", &port], &[]);
    let mut server = accept(&fake);
    server.expect("alice");
    server.send("* you joined #lobby as alice (1 user here); /help lists the commands");
    pty.wait_input("alice> ");

    // Far more than the kernel's socket buffers and the client's own
    // limit together, as commands (not echoed, so the screen stays calm).
    let line = format!("/x {}\r", "y".repeat(60_000));
    let mut master = pty.master.try_clone().unwrap();
    let typist = thread::spawn(move || {
        for _ in 0..100 {
            master.write_all(line.as_bytes()).unwrap();
        }
        master.write_all(b"\x03\x03").unwrap();
    });
    assert!(pty.wait_exit().success());
    typist.join().unwrap();
    drop(server);
}
