//! `chat-client`: the terminal client. One `mio` loop is the one place
//! where the socket, the user's input and the screen meet; the pieces it
//! drives are socket-free and tested alone: [`session`] (what lines mean,
//! our name, secrets), [`editor`] (keys and the line being typed),
//! [`screen`] (drawing), [`transcript`] (for `/save` and `--log`), plus
//! [`term`] (raw mode, restored on every way out), and [`tls`] (trust and
//! the TLS layer over the socket, with `--tls`).
//!
//! Two modes, chosen at start: **terminal mode** when both stdin and stdout
//! are terminals (raw mode, line editor, colours unless `NO_COLOR` is set),
//! and **pipe mode** otherwise (lines in, lines out, no escapes at all).
//!
//! stdin is read by a small thread that hands chunks to the loop through a
//! bounded channel and a `mio::Waker`: epoll refuses regular files and
//! `/dev/null`, and setting `O_NONBLOCK` on a terminal would change it for
//! the shell too. Signals (resize, interrupt) wake the loop the same way.

pub mod editor;
pub mod screen;
pub mod session;
pub mod term;
pub mod tls;
pub mod transcript;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::net::ToSocketAddrs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
use signal_hook::iterator::Signals;

use editor::{Editor, Key, KeyDecoder, Outcome};
use memchr::memchr;
use screen::{Prompt, Screen, Style};
use session::{Action, Entered, LOCAL_HELP, Session, Shown};
use transcript::Transcript;

/// Server host when none is given.
pub const DEFAULT_HOST: &str = "localhost";
/// Server port when none is given.
pub const DEFAULT_PORT: u16 = 5000;
/// How long each resolved address is tried before the next.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After `/quit` (or the end of piped input), the client waits for the
/// server to close; once everything is sent, it stops waiting and exits 0
/// when this long passes with nothing read or written.
pub const QUIT_WAIT: Duration = Duration::from_secs(3);
/// While input is still unsent after `/quit` (or the end of piped input),
/// the client waits this long for the server to take any of it before it
/// gives up and exits 1.
pub const QUIT_STALL: Duration = Duration::from_secs(30);
/// An incoming line longer than this is shown in pieces of this size as
/// it arrives, rather than held without bound; nothing is dropped.
pub const MAX_INCOMING_LINE: usize = 1 << 20;
/// A piped stdin line longer than this is passed to the server as it
/// comes rather than held (the server answers `line too long`).
pub const MAX_PIPE_LINE: usize = 1 << 20;
/// Unsent bytes at which entered lines wait (and, in a pipe, stdin is not
/// read) until the server reads more: a big script waits in the pipe, not
/// in memory.
const MAX_UNSENT: usize = 256 * 1024;
/// Socket bytes read per loop turn, so a flood still lets keys through.
const READ_BUDGET: usize = 256 * 1024;
/// Size of one stdin read, and how many may wait in the channel.
const STDIN_CHUNK: usize = 16 * 1024;
const STDIN_QUEUE: usize = 8;

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// What the binary was asked to do.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// Sent as the first line, instead of typing it at the server's prompt.
    pub name: Option<String>,
    /// A file to append the transcript to as it happens.
    pub log: Option<PathBuf>,
    /// TLS, and whom to trust for the server's identity; `None` is plain
    /// text.
    pub tls: Option<tls::Trust>,
}

/// Why the client stopped other than by the user quitting. The binary
/// prints it and exits 1.
#[derive(Debug)]
pub enum ClientError {
    Connect {
        target: String,
        reason: String,
    },
    /// The server closed the connection and the user had not quit.
    Disconnected,
    Log {
        path: PathBuf,
        source: io::Error,
    },
    /// After the user quit, the server took nothing for `QUIT_STALL`
    /// while this many bytes of input were still unsent.
    GaveUp {
        unsent: usize,
    },
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// TLS could not be set up, or the server failed its check.
    Tls(tls::TlsError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { target, reason } => {
                write!(f, "Unable to connect to {target}: {reason}")
            }
            ClientError::Disconnected => f.write_str("Disconnected from chat server"),
            ClientError::Log { path, source } => write!(
                f,
                "Unable to open log file {}: {}",
                path.display(),
                describe(source)
            ),
            ClientError::Io { what, source } => write!(f, "{what} failed: {}", describe(source)),
            ClientError::GaveUp { unsent } => write!(
                f,
                "Gave up: the server took no input for {} s; {unsent} bytes were not sent",
                QUIT_STALL.as_secs()
            ),
            ClientError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {}

/// An I/O error as a person reads it: without the `(os error N)` tail.
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Connects, talks until the user quits (`Ok`) or something ends the
/// session (`Err`). The terminal is restored before this returns.
pub fn run(cfg: &Config) -> Result<(), ClientError> {
    let log = match &cfg.log {
        Some(path) => Some(open_log(path).map_err(|source| ClientError::Log {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    // Before connecting: a bad CA file or host name costs no connection.
    let connector = match &cfg.tls {
        Some(trust) => Some(tls::Connector::new(trust, &cfg.host).map_err(ClientError::Tls)?),
        None => None,
    };
    let stream = connect(&cfg.host, cfg.port)?;
    let tls = match &connector {
        Some(c) => Some(c.start().map_err(ClientError::Tls)?),
        None => None,
    };
    let terminal = term::is_tty(0) && term::is_tty(1);
    let io_err = |what| move |source| ClientError::Io { what, source };
    // Raw mode first: the guard must outlive the loop and be dropped last.
    let raw = if terminal {
        Some(term::RawMode::enter(0).map_err(io_err("setting up the terminal"))?)
    } else {
        None
    };
    let mut client =
        Client::new(stream, tls, terminal, log).map_err(io_err("starting the event loop"))?;
    if let Some(name) = &cfg.name {
        // The first line is the name; the server has not asked yet, but
        // it reads it the same way.
        client.enter_line(name.clone());
    }
    let result = client.run();
    client.finish();
    drop(raw);
    result
}

fn open_log(path: &PathBuf) -> io::Result<File> {
    // Private: the transcript holds direct messages.
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Tries every address `host` resolves to, in order.
fn connect(host: &str, port: u16) -> Result<std::net::TcpStream, ClientError> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let fail = |reason: String| ClientError::Connect {
        target: target.clone(),
        reason,
    };
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(describe(&e)))?;
    let mut last = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(fail(match last {
        Some(e) => describe(&e),
        None => "the name resolves to no address".to_string(),
    }))
}

/// What the stdin thread hands over.
enum StdinMsg {
    Data(Vec<u8>),
    Eof,
}

/// Set by the signal thread, read by the loop.
#[derive(Default)]
struct Flags {
    resized: AtomicBool,
    interrupts: AtomicUsize,
}

/// Terminal-mode state.
struct Tty {
    editor: Editor,
    decoder: KeyDecoder,
    screen: Screen,
    /// Lines to show this turn, drawn together above the input.
    pending: Vec<Shown>,
    /// The prompt last drawn; a new one means a redraw.
    prompt: Prompt,
    /// The input line changed this turn.
    dirty: bool,
}

/// Lines from the server, split on LF, with no cap on what is shown.
#[derive(Default)]
struct Incoming {
    buf: Vec<u8>,
    /// Bytes at the front already handed out.
    start: usize,
    /// Bytes after `start` already searched for LF.
    scanned: usize,
}

impl Incoming {
    fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next line (or piece of an over-long one), without LF or CR.
    fn next_line(&mut self) -> Option<&[u8]> {
        let pending = &self.buf[self.start..];
        if let Some(i) = memchr(b'\n', &pending[self.scanned..]) {
            let begin = self.start;
            let lf = begin + self.scanned + i;
            self.start = lf + 1;
            self.scanned = 0;
            let line = &self.buf[begin..lf];
            return Some(line.strip_suffix(b"\r").unwrap_or(line));
        }
        self.scanned = pending.len();
        // One byte past the cap is needed to see where a character ends.
        if pending.len() <= MAX_INCOMING_LINE {
            return None;
        }
        // Cut before a UTF-8 continuation byte, so no character is split.
        let mut cut = MAX_INCOMING_LINE;
        while cut > MAX_INCOMING_LINE - 4 && pending[cut] & 0xc0 == 0x80 {
            cut -= 1;
        }
        let begin = self.start;
        self.start += cut;
        self.scanned = 0;
        Some(&self.buf[begin..begin + cut])
    }

    /// What is left when the server closes: a last line without LF.
    fn rest(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        (self.start, self.scanned) = (0, 0);
        (!rest.is_empty()).then_some(rest)
    }
}

struct Client {
    poll: Poll,
    socket: mio::net::TcpStream,
    /// With `--tls`, every byte to and from `socket` goes through this.
    tls: Option<tls::TlsStream>,
    stdin: Receiver<StdinMsg>,
    stdin_open: bool,
    flags: Arc<Flags>,
    session: Session,
    transcript: Transcript,
    log: Option<File>,
    incoming: Incoming,
    /// Bytes for the server; `sent` of them are written.
    unsent: Vec<u8>,
    sent: usize,
    /// Pipe mode: a stdin line not yet complete, and whether an over-long
    /// one is being passed on as it comes.
    pipe_line: Vec<u8>,
    pipe_passthrough: bool,
    tty: Option<Box<Tty>>,
    /// Bytes for stdout this turn.
    out: Vec<u8>,
    /// stdout was closed by its reader (`| head -1`): nothing more is
    /// written there.
    stdout_gone: bool,
    /// The socket may hold more than this turn's budget read.
    more_to_read: bool,
    server_closed: bool,
    /// Piped input has ended: quit once every line is sent.
    input_ended: bool,
    /// The user quit (or input ended); we wait for the server to close.
    user_quit: bool,
    /// Once everything queued is written, close our side instead of
    /// sending `/quit`: a line sent at a password question would be taken
    /// as the password.
    close_after_unsent: bool,
    /// Quit again while waiting: leave now.
    leave_now: bool,
    /// Last byte read from or written to the socket.
    last_activity: Instant,
}

impl Client {
    fn new(
        stream: std::net::TcpStream,
        tls: Option<tls::TlsStream>,
        terminal: bool,
        log: Option<File>,
    ) -> io::Result<Client> {
        stream.set_nonblocking(true)?;
        // Lines are typed one at a time: send each at once.
        stream.set_nodelay(true)?;
        let mut socket = mio::net::TcpStream::from_std(stream);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::sync_channel(STDIN_QUEUE);
        spawn_stdin_reader(tx, waker.clone())?;
        let flags = Arc::new(Flags::default());
        spawn_signal_watcher(flags.clone(), waker)?;
        let tty = terminal.then(|| {
            let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            let (width, height) = terminal_size();
            Box::new(Tty {
                editor: Editor::new(),
                decoder: KeyDecoder::new(),
                screen: Screen::new(width, height, colour),
                pending: Vec::new(),
                prompt: Prompt {
                    text: String::new(),
                    style: Style::default(),
                },
                dirty: true,
            })
        });
        Ok(Client {
            poll,
            socket,
            tls,
            stdin: rx,
            stdin_open: true,
            flags,
            session: Session::new(),
            transcript: Transcript::new(),
            log,
            incoming: Incoming::default(),
            unsent: Vec::new(),
            sent: 0,
            pipe_line: Vec::new(),
            pipe_passthrough: false,
            tty,
            out: Vec::new(),
            stdout_gone: false,
            more_to_read: true,
            server_closed: false,
            input_ended: false,
            user_quit: false,
            close_after_unsent: false,
            leave_now: false,
            last_activity: Instant::now(),
        })
    }

    fn run(&mut self) -> Result<(), ClientError> {
        let mut events = Events::with_capacity(16);
        loop {
            self.flush_socket();
            self.take_stdin();
            self.flush_socket();
            if self.server_closed
                && let Some(rest) = self.incoming.rest()
            {
                let shown = self.session.on_server_line(&rest);
                self.show(shown);
                self.take_entered();
            }
            self.render()?;
            // Drawing may have quit (stdout closed): send the `/quit` now.
            self.flush_socket();
            if self.server_closed {
                // A failed check ends in its own words, even after quitting.
                if let Some(failure) = self.tls.as_mut().and_then(tls::TlsStream::take_failure) {
                    return Err(ClientError::Tls(failure));
                }
                return if self.user_quit {
                    Ok(())
                } else {
                    Err(ClientError::Disconnected)
                };
            }
            if self.leave_now {
                return Ok(());
            }
            let timeout = if self.more_to_read {
                Some(Duration::ZERO)
            } else if self.user_quit || self.input_ended {
                let unsent = self.unsent_input();
                match quit_wait(self.last_activity.elapsed(), unsent > 0) {
                    QuitWait::For(left) => Some(left),
                    QuitWait::Done => return Ok(()),
                    QuitWait::GiveUp => return Err(ClientError::GaveUp { unsent }),
                }
            } else {
                None
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ClientError::Io {
                        what: "waiting for events",
                        source,
                    });
                }
            }
            // Any news from the socket (data, FIN, error, or room to
            // write) is worth one read; a read that finds nothing is cheap.
            // The waker needs nothing here: stdin and signals are looked
            // at every turn.
            if events.iter().any(|e| e.token() == SOCKET) {
                self.more_to_read = true;
            }
            if self.more_to_read {
                self.read_socket();
            }
            self.take_signals();
        }
    }

    /// Restores the screen before the terminal leaves raw mode.
    fn finish(&mut self) {
        if let Some(tty) = &mut self.tty {
            tty.screen.finish(&mut self.out);
        }
        // Nothing more can be done about a failing stdout at exit.
        let _ = self.write_out();
    }

    fn read_socket(&mut self) {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            if total >= READ_BUDGET {
                break;
            }
            let read = match &mut self.tls {
                Some(tls) => tls.read(&mut self.socket, &mut buf),
                None => self.socket.read(&mut buf),
            };
            match read {
                Ok(0) => {
                    self.server_closed = true;
                    self.more_to_read = false;
                    break;
                }
                Ok(n) => {
                    total += n;
                    self.last_activity = Instant::now();
                    self.incoming.push(&buf[..n]);
                    while let Some(line) = self.incoming.next_line() {
                        let shown = self.session.on_server_line(line);
                        self.show(shown);
                        // The line may be the answer held input waited for.
                        self.take_entered();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.more_to_read = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // Reset or a network error: the server is gone.
                    self.server_closed = true;
                    self.more_to_read = false;
                    break;
                }
            }
        }
    }

    fn flush_socket(&mut self) {
        // TLS records already made (the handshake, the tail of a write)
        // go before anything new.
        if let Some(tls) = &mut self.tls {
            match tls.flush(&mut self.socket) {
                Ok(0) => {}
                Ok(_) => self.last_activity = Instant::now(),
                // As a failed write below: the reading side tells.
                Err(_) => {
                    self.unsent.clear();
                    self.sent = 0;
                    self.more_to_read = true;
                    return;
                }
            }
        }
        while self.sent < self.unsent.len() {
            let data = &self.unsent[self.sent..];
            let written = match &mut self.tls {
                Some(tls) => tls.write(&mut self.socket, data),
                None => self.socket.write(data),
            };
            match written {
                Ok(n) => {
                    self.sent += n;
                    self.last_activity = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The reading side will tell what happened, after
                    // showing whatever the server sent before it went.
                    self.unsent.clear();
                    self.sent = 0;
                    self.more_to_read = true;
                    return;
                }
            }
        }
        if self.sent == self.unsent.len() {
            self.unsent.clear();
            self.sent = 0;
            if self.close_after_unsent && self.ready_to_shut_down() {
                self.close_after_unsent = false;
                let _ = self.socket.shutdown(std::net::Shutdown::Write);
            }
        } else if self.sent >= MAX_UNSENT {
            self.unsent.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Whether our side of the connection may be shut: always in plain
    /// text; with TLS once close_notify and every record before it are on
    /// the socket (a later turn tries again).
    fn ready_to_shut_down(&mut self) -> bool {
        match &mut self.tls {
            Some(tls) => tls.close(&mut self.socket),
            None => true,
        }
    }

    fn send(&mut self, line: &str) {
        self.send_raw(line.as_bytes());
        self.unsent.push(b'\n');
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.unsent.extend_from_slice(bytes);
    }

    /// Input bytes not yet taken by the server: unsent, held, or (before
    /// the end of piped input has led to `/quit`) at least the `/quit`.
    fn unsent_input(&self) -> usize {
        let held = self.session.held_bytes();
        let quit = if self.user_quit { 0 } else { "/quit\n".len() };
        let in_tls = self.tls.as_ref().map_or(0, tls::TlsStream::in_flight);
        self.unsent.len() - self.sent + held + quit + in_tls
    }

    /// Whether the server is so far behind that entered lines wait.
    fn backed_up(&self) -> bool {
        self.unsent.len() - self.sent >= MAX_UNSENT
    }

    /// Takes input from the stdin thread. In a pipe, nothing more is read
    /// while the server is far behind or lines wait for its answer: a big
    /// script waits in the pipe, not in memory. Keys are always read, so
    /// editing, Ctrl-C and Ctrl-D work at once; only entered lines wait.
    fn take_stdin(&mut self) {
        self.take_entered();
        loop {
            let piped = self.tty.is_none();
            let wait =
                piped && (self.backed_up() || self.session.has_held() || self.session.is_waiting());
            if !self.stdin_open || wait {
                return;
            }
            let msg = match self.stdin.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => StdinMsg::Eof,
            };
            match msg {
                StdinMsg::Data(bytes) if self.tty.is_some() => self.on_keys(&bytes),
                StdinMsg::Data(bytes) => {
                    if !self.user_quit {
                        self.on_piped(&bytes);
                    }
                }
                StdinMsg::Eof => {
                    self.stdin_open = false;
                    if !self.user_quit {
                        // A last line without LF is still a line.
                        let rest = std::mem::take(&mut self.pipe_line);
                        if !rest.is_empty() {
                            self.piped_line(rest);
                        }
                        self.input_ended = true;
                        self.take_entered();
                    }
                }
            }
        }
    }

    fn on_keys(&mut self, bytes: &[u8]) {
        let mut keys = Vec::new();
        if let Some(tty) = &mut self.tty {
            tty.decoder.feed(bytes, &mut keys);
        }
        for key in keys {
            if self.user_quit {
                // Only a second Ctrl-C matters now.
                self.leave_now |= key == Key::Interrupt;
                continue;
            }
            let Some(tty) = &mut self.tty else { return };
            match tty.editor.handle(key) {
                Outcome::Unchanged => {}
                Outcome::Changed => tty.dirty = true,
                Outcome::Submit(line) => {
                    tty.dirty = true;
                    self.enter_line(line);
                }
                Outcome::Quit => self.quit(None),
            }
        }
    }

    fn on_piped(&mut self, bytes: &[u8]) {
        let mut buf = std::mem::take(&mut self.pipe_line);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(i) = memchr(b'\n', &buf[start..]) {
            let line = buf[start..start + i].to_vec();
            start += i + 1;
            if std::mem::take(&mut self.pipe_passthrough) {
                // The end of an over-long line already passed on.
                self.send_raw(&line);
                self.send_raw(b"\n");
            } else {
                self.piped_line(line);
            }
            if self.user_quit {
                // Nothing after /quit is sent.
                return;
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_PIPE_LINE {
            self.send_raw(&buf);
            buf.clear();
            self.pipe_passthrough = true;
        }
        self.pipe_line = buf;
    }

    fn piped_line(&mut self, mut line: Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        match String::from_utf8(line) {
            Ok(line) => self.enter_line(line),
            // Not ours to judge: the server answers invalid UTF-8.
            Err(e) => {
                self.send_raw(e.as_bytes());
                self.send_raw(b"\n");
            }
        }
    }

    /// A line the user entered, typed or piped. It waits while the server
    /// has not answered our name or password, or is far behind.
    fn enter_line(&mut self, line: String) {
        self.session.enter(line);
        self.take_entered();
    }

    /// Acts on entered lines whose turn has come; at the end of piped
    /// input, quits once none is left.
    fn take_entered(&mut self) {
        while !self.user_quit && !self.backed_up() {
            let Some(entered) = self.session.next_entered() else {
                break;
            };
            self.act(entered);
        }
        if self.input_ended && !self.session.has_held() && !self.session.is_waiting() {
            self.quit(None);
        }
    }

    fn act(&mut self, entered: Entered) {
        if entered.remember
            && let Some(tty) = &mut self.tty
        {
            tty.editor.remember(&entered.line);
        }
        match entered.action {
            Action::Nothing => {}
            Action::Send { line, echo, .. } => {
                self.send(&line);
                if let Some(echo) = echo {
                    self.show(echo);
                }
            }
            Action::Save(path) => self.save(&path),
            Action::Clear => {
                self.transcript.clear();
                if let Some(tty) = &mut self.tty {
                    tty.pending.clear();
                    tty.screen.clear(&mut self.out, &tty.editor, &tty.prompt);
                }
            }
            Action::Help => {
                self.show(Shown::local("local commands:"));
                for (cmd, what) in LOCAL_HELP {
                    self.show(Shown::local(format!("  {cmd:<16} {what}")));
                }
                self.send("/help");
            }
            Action::Quit(line) => self.quit(Some(&line)),
            Action::Usage(usage) => self.show(Shown::local_error(usage)),
        }
    }

    /// Sends `/quit` (or `line`) once, then waits for the server to close.
    fn quit(&mut self, line: Option<&str>) {
        if self.user_quit {
            return;
        }
        self.user_quit = true;
        self.session.drop_held();
        if self.session.password_for().is_some() || self.session.is_waiting() {
            self.close_after_unsent = true;
        } else {
            self.send(line.unwrap_or("/quit"));
        }
        self.last_activity = Instant::now();
    }

    fn save(&mut self, path: &str) {
        match self.save_to(path) {
            Ok(n) => self.show(Shown::local(format!("saved {n} lines to {path}"))),
            Err(why) => self.show(Shown::local_error(format!("cannot save to {path}: {why}"))),
        }
    }

    /// Writes the transcript to `path`, a regular file. Nothing here may
    /// block the loop: a FIFO with no reader would wait forever to open,
    /// so it is opened without waiting and anything but a regular file is
    /// refused before a byte is written. So is the `--log` file, which
    /// `/save` would otherwise cut short.
    fn save_to(&self, path: &str) -> Result<usize, String> {
        const NOT_REGULAR: &str = "not a regular file";
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // A FIFO no one reads.
                Some(libc::ENXIO) => NOT_REGULAR.to_string(),
                _ => describe(&e),
            })?;
        let meta = file.metadata().map_err(|e| describe(&e))?;
        if !meta.is_file() {
            return Err(NOT_REGULAR.to_string());
        }
        if let Some(log) = &self.log
            && let Ok(log) = log.metadata()
            && (log.dev(), log.ino()) == (meta.dev(), meta.ino())
        {
            return Err("it is the --log file".to_string());
        }
        let write = || {
            file.set_len(0)?;
            let mut w = BufWriter::new(&file);
            let n = self.transcript.write_to(&mut w)?;
            w.flush()?;
            Ok(n)
        };
        write().map_err(|e: io::Error| describe(&e))
    }

    /// Shows a line: into the transcript and the log, then on screen (in
    /// a pipe, only what did not come from our own input).
    fn show(&mut self, shown: Shown) {
        let now = SystemTime::now();
        self.transcript.push(now, &shown.text);
        if let Some(log) = &mut self.log
            && let Err(e) = log.write_all(transcript::format_line(now, &shown.text).as_bytes())
        {
            self.log = None;
            self.show(Shown::local_error(format!(
                "cannot write the log, logging stopped: {}",
                describe(&e)
            )));
        }
        match &mut self.tty {
            Some(tty) => tty.pending.push(shown),
            None if shown.kind.is_own() => {}
            None => {
                self.out.extend_from_slice(shown.text.as_bytes());
                self.out.push(b'\n');
            }
        }
    }

    fn prompt(&self) -> Prompt {
        if let Some(name) = self.session.password_for() {
            return Prompt {
                text: format!("password for {name} (not shown): "),
                style: Style {
                    bold: true,
                    ..Style::default()
                },
            };
        }
        if self.session.is_waiting() {
            return Prompt {
                text: "waiting for the server (typing not shown): ".to_string(),
                style: Style {
                    dim: true,
                    ..Style::default()
                },
            };
        }
        match self.session.name() {
            Some(name) => Prompt {
                text: format!("{name}> "),
                style: Style {
                    bold: true,
                    ..screen::name_style(name)
                },
            },
            None => Prompt {
                text: "name> ".to_string(),
                style: Style {
                    bold: true,
                    ..Style::default()
                },
            },
        }
    }

    /// Draws what this turn changed and writes it to stdout.
    fn render(&mut self) -> Result<(), ClientError> {
        let prompt = self.prompt();
        if let Some(tty) = &mut self.tty {
            // While our name or password awaits an answer, what is typed
            // may be the answer to a password question on its way.
            let secret = self.session.password_for().is_some() || self.session.is_waiting();
            tty.editor.set_secret(secret);
            if !tty.pending.is_empty() || tty.dirty || tty.prompt != prompt {
                tty.prompt = prompt;
                tty.screen
                    .show(&mut self.out, &tty.pending, &tty.editor, &tty.prompt);
                tty.pending.clear();
                tty.dirty = false;
            }
        }
        match self.write_out() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                // Whoever reads our output has seen enough: a quiet end of
                // the session, as if input had ended.
                self.stdout_gone = true;
                self.quit(None);
                Ok(())
            }
            result => result.map_err(|source| ClientError::Io {
                what: "writing to standard output",
                source,
            }),
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.stdout_gone {
            self.out.clear();
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        let result = stdout.write_all(&self.out).and_then(|()| stdout.flush());
        self.out.clear();
        result
    }

    fn take_signals(&mut self) {
        if self.flags.resized.swap(false, Ordering::Relaxed)
            && let Some(tty) = &mut self.tty
        {
            let (width, height) = terminal_size();
            tty.screen
                .resize(&mut self.out, width, height, &tty.editor, &tty.prompt);
        }
        let interrupts = self.flags.interrupts.swap(0, Ordering::Relaxed);
        if interrupts > 0 {
            self.leave_now |= self.user_quit || interrupts > 1;
            self.quit(None);
        }
    }
}

/// The terminal's size, or a common one when it does not say.
fn terminal_size() -> (usize, usize) {
    term::size(1).unwrap_or((screen::DEFAULT_WIDTH, screen::DEFAULT_HEIGHT))
}

/// What the loop does after the user quit, given how long nothing was
/// read or written and whether input is still unsent.
#[derive(Debug, PartialEq, Eq)]
enum QuitWait {
    /// Wait for the server at most this much longer.
    For(Duration),
    /// Everything is sent and the server has gone quiet: leave.
    Done,
    /// The server has taken nothing for too long: leave, saying so.
    GiveUp,
}

/// The silence timer runs only once everything is sent: a server slow to
/// read gets a much longer bound, and lines are not dropped silently.
fn quit_wait(quiet_for: Duration, unsent: bool) -> QuitWait {
    let limit = if unsent { QUIT_STALL } else { QUIT_WAIT };
    match limit.checked_sub(quiet_for) {
        Some(left) if !left.is_zero() => QuitWait::For(left),
        _ if unsent => QuitWait::GiveUp,
        _ => QuitWait::Done,
    }
}

fn spawn_stdin_reader(tx: SyncSender<StdinMsg>, waker: Arc<Waker>) -> io::Result<()> {
    thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0; STDIN_CHUNK];
        loop {
            let msg = match stdin.read(&mut buf) {
                Ok(0) => StdinMsg::Eof,
                Ok(n) => StdinMsg::Data(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An unreadable stdin ends input like EOF does.
                Err(_) => StdinMsg::Eof,
            };
            let eof = matches!(msg, StdinMsg::Eof);
            // Blocks while the loop is behind: back-pressure on stdin.
            if tx.send(msg).is_err() {
                return;
            }
            // A failed wake means the loop is gone.
            if waker.wake().is_err() || eof {
                return;
            }
        }
    })?;
    Ok(())
}

fn spawn_signal_watcher(flags: Arc<Flags>, waker: Arc<Waker>) -> io::Result<()> {
    let mut signals = Signals::new([SIGWINCH, SIGINT, SIGTERM, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGWINCH {
                    flags.resized.store(true, Ordering::Relaxed);
                } else {
                    flags.interrupts.fetch_add(1, Ordering::Relaxed);
                }
                if waker.wake().is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(inc: &mut Incoming) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(l) = inc.next_line() {
            out.push(l.to_vec());
        }
        out
    }

    #[test]
    fn incoming_lines_split_on_lf_and_drop_a_cr() {
        let mut inc = Incoming::default();
        inc.push(b"one\r\ntw");
        assert_eq!(lines(&mut inc), [b"one".to_vec()]);
        inc.push(b"o\nthree");
        assert_eq!(lines(&mut inc), [b"two".to_vec()]);
        assert_eq!(inc.rest(), Some(b"three".to_vec()));
        assert_eq!(inc.rest(), None);
    }

    #[test]
    fn over_long_incoming_lines_come_in_pieces_on_character_boundaries() {
        let mut inc = Incoming::default();
        let mut long = vec![b'x'; MAX_INCOMING_LINE - 1];
        long.extend_from_slice("é".as_bytes());
        inc.push(&long);
        let mut got = lines(&mut inc);
        inc.push(b"tail\n");
        got.extend(lines(&mut inc));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_INCOMING_LINE - 1);
        assert_eq!(got[1], "étail".as_bytes());
    }

    #[test]
    fn exactly_the_cap_without_lf_waits_for_more() {
        let mut inc = Incoming::default();
        inc.push(&vec![b'z'; MAX_INCOMING_LINE]);
        assert_eq!(lines(&mut inc), Vec::<Vec<u8>>::new());
        inc.push(b"!");
        let got = lines(&mut inc);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_INCOMING_LINE);
        assert_eq!(inc.rest(), Some(b"!".to_vec()));
    }

    #[test]
    fn after_quitting_the_silence_timer_waits_for_unsent_input() {
        let s = Duration::from_secs;
        assert_eq!(quit_wait(s(0), false), QuitWait::For(QUIT_WAIT));
        assert_eq!(quit_wait(s(1), false), QuitWait::For(s(2)));
        assert_eq!(quit_wait(s(3), false), QuitWait::Done);
        // A server that stops reading for a while with lines still unsent
        // is waited for, far longer than the silence timer...
        assert_eq!(quit_wait(s(3), true), QuitWait::For(s(27)));
        assert_eq!(quit_wait(s(29), true), QuitWait::For(s(1)));
        // ...but not for ever, and not silently.
        assert_eq!(quit_wait(s(30), true), QuitWait::GiveUp);
        assert_eq!(
            ClientError::GaveUp { unsent: 12 }.to_string(),
            "Gave up: the server took no input for 30 s; 12 bytes were not sent"
        );
    }

    #[test]
    fn errors_read_as_the_issue_words_them() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = ClientError::Connect {
            target: "localhost:5000".into(),
            reason: describe(&refused),
        };
        assert_eq!(
            e.to_string(),
            "Unable to connect to localhost:5000: Connection refused"
        );
        assert_eq!(
            ClientError::Disconnected.to_string(),
            "Disconnected from chat server"
        );
    }
}
