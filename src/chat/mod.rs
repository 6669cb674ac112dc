//! `Chat`: users, rooms (indexed both ways and kept in step), statuses,
//! accounts, recent history, and who receives which event. In: connect, a
//! line, a finished job, disconnect, tick(now). Out: an `Outbox` of "send
//! this event to these connections", "close this one" and "run this job"
//! (a password check, a registration, a history query), plus the messages
//! to record. No sockets, no bytes, no modes, no disk, no clock of its own.
//!
//! One `Chat`, its parts in files by what they own: this file has the
//! types, the state, and what comes in (connect, a line, a command,
//! disconnect, tick); `naming` the name step and logins; `rooms` named
//! users' commands, rooms and announcements; `accounts` the registered
//! names; `recording` what is stored; `history` and `throttle` the
//! in-memory history and the wrong-password delays.

mod accounts;
pub mod history;
mod naming;
mod recording;
mod rooms;
pub mod throttle;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::chat::history::{Chunk, History};
use crate::chat::throttle::Throttle;
use crate::wire::proto::{
    CloseReason, Command, DEFAULT_HISTORY, Event, Info, LOBBY, MAX_NOTE_CHARS, Name, Notice,
    NoticeKind, ProtoError, Recorded, RoomInfo, Status, Timestamp, USAGE_NICK, UserInfo,
    check_password, clip, parse_secret, parse_text, strip_controls, valid_name,
};

/// The most a room's next chunk is made ready for in advance.
const CHUNK_HINT_MAX: usize = 1 << 20;

/// Handshake deadlines queued before the settled ones (users already
/// named or gone) are dropped; see `Chat::forget_settled_deadlines`.
pub const DEADLINES_SETTLE_AT: usize = 1024;
/// Wrong passwords in a row after which a connection is closed.
pub const MAX_PASSWORD_FAILURES: u8 = 3;

/// What the chat has done, for operators (`server::metrics` renders it).
/// Plain integers: the chat runs on the loop and is read only there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Room messages accepted (said to a room, whoever was in it).
    pub room_messages: u64,
    /// Direct messages accepted (to a user who was there).
    pub direct_messages: u64,
    /// Passwords checked and found right at a login.
    pub logins_succeeded: u64,
    /// Passwords found wrong at a login.
    pub logins_failed: u64,
    /// Logins held back by the wrong-password throttle before their check
    /// (counted once each; the check then counts as success or failure).
    pub logins_throttled: u64,
    /// Logins answered `server_busy` (too many checks waiting, or storage
    /// failing).
    pub logins_busy: u64,
}

/// Identifies a connection; the server's slab key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

/// Rules of the chat that an operator can set.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Joins, leaves, quits, renames and status changes are announced only
    /// in rooms of at most this many members; larger rooms stay quiet.
    pub announce_limit: usize,
    /// A connection that has not chosen a name by then is told so and closed.
    pub handshake_timeout: Duration,
    /// Recorded messages a user receives on entering a room.
    pub history: usize,
    /// Messages recorded per room; 0 records none.
    pub history_keep: usize,
    /// The delay before a first wrong password is answered; it doubles
    /// with each further failure of the account or the address.
    pub login_delay: Duration,
    /// Rooms without members whose recent history stays in memory; past
    /// that, the longest unused is read from the database when entered.
    pub idle_rooms: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            announce_limit: 100,
            handshake_timeout: Duration::from_secs(30),
            history: DEFAULT_HISTORY,
            history_keep: 10_000,
            login_delay: Duration::from_millis(500),
            idle_rooms: 10_000,
        }
    }
}

impl ChatConfig {
    /// Messages per room kept in memory: enough for every join and for a
    /// default `/history`, never more than are recorded.
    pub fn history_cap(&self) -> usize {
        self.history.max(DEFAULT_HISTORY).min(self.history_keep)
    }
}

/// Names the connection (and which of its lives) a job's answer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub conn: ConnId,
    serial: u64,
}

/// Work that must not block the loop: password hashing and the disk.
/// Its `Debug` leaves passwords out, so no log line can carry one.
pub enum Job {
    /// Check `password` against the account `name`.
    Login {
        ticket: Ticket,
        name: Name,
        password: String,
    },
    /// Create the account `name`.
    Register {
        ticket: Ticket,
        name: Name,
        password: String,
    },
    /// Change the password of `name` if `old` is right.
    Passwd {
        ticket: Ticket,
        name: Name,
        old: String,
        new: String,
    },
    /// The newest `count` recorded messages of `room`.
    History {
        ticket: Ticket,
        room: Name,
        count: usize,
    },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Login { ticket, name, .. } => write!(f, "Login({name}, {ticket:?})"),
            Job::Register { ticket, name, .. } => write!(f, "Register({name}, {ticket:?})"),
            Job::Passwd { ticket, name, .. } => write!(f, "Passwd({name}, {ticket:?})"),
            Job::History {
                ticket,
                room,
                count,
            } => write!(f, "History({room}, {count}, {ticket:?})"),
        }
    }
}

impl Job {
    pub fn ticket(&self) -> Ticket {
        match self {
            Job::Login { ticket, .. }
            | Job::Register { ticket, .. }
            | Job::Passwd { ticket, .. }
            | Job::History { ticket, .. } => *ticket,
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// The password was right (login), or it was changed (passwd), or the
    /// account was created (register).
    Done,
    WrongPassword,
    /// The account does not exist (any more).
    NoAccount,
    AlreadyRegistered,
    History(Vec<Recorded>),
    /// Not run: too many jobs waiting, or the database failed.
    Busy,
}

/// What the chat asks of the connection layer.
pub enum Output<'a> {
    Send {
        event: &'a Event,
        to: &'a [ConnId],
    },
    /// Flush what is queued for `conn`, then close it.
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    /// Run `job` off the loop and hand its outcome to `Chat::job_done`.
    Job(Job),
}

enum Action {
    Send {
        event: Event,
        start: usize,
        end: usize,
    },
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    Job(Job),
}

/// Events with their recipients, in order. Recipient lists share one
/// buffer that keeps its capacity, so a broadcast allocates no list.
#[derive(Default)]
pub struct Outbox {
    recipients: Vec<ConnId>,
    actions: Vec<Action>,
}

impl Outbox {
    pub fn send(&mut self, to: ConnId, event: Event) {
        self.send_all([to], event);
    }

    pub fn send_all(&mut self, to: impl IntoIterator<Item = ConnId>, event: Event) {
        let start = self.recipients.len();
        self.recipients.extend(to);
        let end = self.recipients.len();
        if end > start {
            self.actions.push(Action::Send { event, start, end });
        }
    }

    pub fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.actions.push(Action::Close { conn, reason });
    }

    pub fn job(&mut self, job: Job) {
        self.actions.push(Action::Job(job));
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Hands every output to `f` in order and empties the box.
    pub fn drain(&mut self, mut f: impl FnMut(Output<'_>)) {
        for action in self.actions.drain(..) {
            match action {
                Action::Send { event, start, end } => f(Output::Send {
                    event: &event,
                    to: &self.recipients[start..end],
                }),
                Action::Close { conn, reason } => f(Output::Close { conn, reason }),
                Action::Job(job) => f(Output::Job(job)),
            }
        }
        self.recipients.clear();
    }
}

struct User {
    /// Tells this connection's handshake deadline from an older one's.
    serial: u64,
    /// `None` while the user is choosing a name.
    name: Option<Name>,
    /// Quit or timed out: waiting for the connection layer to close it.
    gone: bool,
    room: usize,
    /// Index in `rooms[room].members`, for O(1) removal.
    pos: usize,
    status: Status,
    note: Option<Name>,
    addr: IpAddr,
    /// The account (lower-cased) this connection proved it owns, by its
    /// password or by registering it; it may come back to that name.
    account: Option<Box<str>>,
    wait: Option<Wait>,
    /// Wrong passwords so far while logging in.
    failures: u8,
}

/// What a connection is waiting for.
enum Wait {
    /// Text mode: its next line is the password for `name`.
    Password {
        name: Name,
    },
    /// A job is out; its input waits for the outcome.
    Login {
        name: Name,
        room: Option<Name>,
        /// Asked at the text-mode password question (asked again on
        /// failure), not in a JSON `connect`.
        prompted: bool,
    },
    Register {
        name: Name,
    },
    Passwd {
        name: Name,
    },
    History {
        room: Name,
    },
    /// Entering `room`, whose recent history is being read from the
    /// database first: a named user's `/join`, or taking `name` with it.
    Entering {
        room: Name,
        name: Option<Name>,
    },
    /// A wrong password, answered by `due_answer` once its delay is over.
    Wrong {
        name: Name,
        login: bool,
        prompted: bool,
    },
    /// A password that may not be checked yet: the account or address
    /// failed recently. `due_answer` sends it for checking in its turn.
    Queued {
        name: Name,
        room: Option<Name>,
        prompted: bool,
        password: String,
    },
}

struct Room {
    name: Name,
    members: Vec<ConnId>,
    /// The room's slot in `history`.
    history: usize,
    /// Its chunk in `Chat::records`: (batch, index).
    chunk: Option<(u64, usize)>,
    /// The size of its last chunk: the next one starts that big.
    chunk_hint: usize,
}

/// The state of the chat.
pub struct Chat {
    cfg: ChatConfig,
    users: Vec<Option<User>>,
    /// Lower-cased name to its holder.
    names: HashMap<Box<str>, ConnId>,
    rooms: Slab<Room>,
    /// Lower-cased room name to its key in `rooms`.
    room_ids: HashMap<Box<str>, usize>,
    lobby: usize,
    /// Handshake deadlines in connect order; the timeout is fixed, so this
    /// is also deadline order. Entries of connections that chose a name or
    /// left are dropped in batches (`forget_settled_deadlines`), so the
    /// queue follows the connections still choosing, not the connection
    /// rate times the timeout.
    deadlines: VecDeque<(Instant, ConnId, u64)>,
    /// Queue length after the last batch of dropping settled entries.
    deadlines_kept: usize,
    next_serial: u64,
    shutting_down: bool,
    /// The wall clock, as last passed in; stamps messages.
    clock: Timestamp,
    /// The monotonic clock, as last passed in; times password answers.
    now: Instant,
    /// Registered names: lower-cased to the case they were registered in.
    accounts: HashMap<Box<str>, Name>,
    throttle: Throttle,
    /// Wrong-password answers waiting out their delay.
    answers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Password checks under way, by connection and serial: the account
    /// and address they count against.
    checking: HashMap<(usize, u64), (Box<str>, IpAddr)>,
    history: History,
    /// Messages recorded since the last `take_records`, per room in the
    /// order the rooms first spoke.
    records: Vec<Chunk>,
    /// The room (its key in `rooms`) of each chunk in `records`.
    record_rooms: Vec<usize>,
    /// The memory `records` holds (`Chunk::weight`), which bounds what
    /// waits to be stored.
    record_bytes: usize,
    /// Counts `take_records` calls: a room's `chunk` is valid only in the
    /// batch it was made in.
    batch: u64,
    counts: Counts,
}

/// Orders names as listings show them, ignoring ASCII case, without
/// allocating a lower-cased copy of each.
fn cmp_ignore_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

fn strip_hash(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('#').unwrap_or(s)
}

impl Chat {
    pub fn new(cfg: ChatConfig) -> Chat {
        let mut history = History::new(cfg.history_cap(), cfg.idle_rooms.max(1));
        let mut rooms = Slab::new();
        let lobby = rooms.insert(Room {
            name: LOBBY.into(),
            members: Vec::new(),
            history: history.slot(LOBBY),
            chunk: None,
            chunk_hint: 0,
        });
        let mut room_ids = HashMap::new();
        room_ids.insert(LOBBY.into(), lobby);
        Chat {
            throttle: Throttle::new(cfg.login_delay),
            now: Instant::now(),
            accounts: HashMap::new(),
            answers: BinaryHeap::new(),
            checking: HashMap::new(),
            history,
            records: Vec::new(),
            record_rooms: Vec::new(),
            record_bytes: 0,
            batch: 0,
            counts: Counts::default(),
            cfg,
            users: Vec::new(),
            names: HashMap::new(),
            rooms,
            room_ids,
            lobby,
            deadlines: VecDeque::new(),
            deadlines_kept: 0,
            next_serial: 0,
            shutting_down: false,
            clock: Timestamp::default(),
        }
    }

    /// Takes new rules while running (SIGHUP): announce limit, name
    /// deadline (for connections from now on), history sent on entering a
    /// room, and the wrong-password delay. `history_keep` and `idle_rooms`
    /// stay as they were: the store prunes to the first.
    pub fn set_config(&mut self, cfg: ChatConfig) {
        self.cfg = ChatConfig {
            history_keep: self.cfg.history_keep,
            idle_rooms: self.cfg.idle_rooms,
            ..cfg
        };
        self.throttle.set_base(self.cfg.login_delay);
        self.history.set_cap(self.cfg.history_cap());
    }

    /// A new connection from `addr`: it is welcomed and must choose a name
    /// in time.
    pub fn connect(&mut self, conn: ConnId, addr: IpAddr, now: Instant, out: &mut Outbox) {
        let serial = self.next_serial;
        self.next_serial += 1;
        if self.users.len() <= conn.0 {
            self.users.resize_with(conn.0 + 1, || None);
        }
        self.users[conn.0] = Some(User {
            serial,
            name: None,
            gone: false,
            room: self.lobby,
            pos: 0,
            status: Status::Online,
            note: None,
            addr,
            account: None,
            wait: None,
            failures: 0,
        });
        self.add_deadline(now + self.cfg.handshake_timeout, conn, serial);
        if self.deadlines.len() > DEADLINES_SETTLE_AT.max(2 * self.deadlines_kept) {
            self.forget_settled_deadlines();
        }
        out.send(conn, Event::Welcome);
    }

    /// Queues a handshake deadline in deadline order: at the back while
    /// the timeout stays the same, before later ones after it was made
    /// shorter (SIGHUP).
    fn add_deadline(&mut self, at: Instant, conn: ConnId, serial: u64) {
        let i = self.deadlines.partition_point(|d| d.0 <= at);
        self.deadlines.insert(i, (at, conn, serial));
    }

    /// Drops the deadlines of connections that are named or gone, and the
    /// queue's spare room. Runs once the queue has doubled since the last
    /// time, so each entry costs O(1) over its life.
    fn forget_settled_deadlines(&mut self) {
        let users = &self.users;
        self.deadlines.retain(|&(_, conn, serial)| {
            users
                .get(conn.0)
                .and_then(Option::as_ref)
                .is_some_and(|u| u.serial == serial && u.name.is_none() && !u.gone)
        });
        self.deadlines_kept = self.deadlines.len();
        self.deadlines.shrink_to(2 * self.deadlines_kept);
    }

    /// Sets the clocks: the wall clock stamps messages, the monotonic one
    /// times password answers.
    pub fn set_clock(&mut self, wall: Timestamp, now: Instant) {
        self.clock = wall;
        self.now = now;
    }

    /// One text-mode line from `conn`, as it came (terminator removed).
    /// A password is taken exactly as sent; everything else has its
    /// control characters removed, and a blank line is ignored.
    pub fn handle_line(&mut self, conn: ConnId, raw: &str, out: &mut Outbox) {
        let Some(user) = self.users.get_mut(conn.0).and_then(Option::as_mut) else {
            return;
        };
        if user.gone || raw.is_empty() {
            return;
        }
        if let Some(Wait::Password { name }) = &user.wait {
            let name = name.clone();
            user.wait = None;
            // `/nick OTHER` goes back to choosing a name.
            if let Ok(Command::Nick(other)) = parse_text(&strip_controls(raw)) {
                return self.choose_name(conn, strip_hash(other), None, None, out);
            }
            return self.login(conn, name, None, raw, true, out);
        }
        let parsed = match parse_secret(raw) {
            Some(parsed) => parsed,
            None => {
                let line = strip_controls(raw);
                if line.trim().is_empty() {
                    return;
                }
                match parse_text(&line) {
                    Ok(cmd) => return self.handle(conn, cmd, out),
                    Err(e) => Err(e),
                }
            }
        };
        match parsed {
            Ok(cmd) => self.handle(conn, cmd, out),
            Err(e) => {
                // Before a name is chosen, `/nick` without a usable name
                // is a bad name like any other: the question comes again.
                let choosing = self
                    .user(conn)
                    .is_some_and(|u| u.name.is_none() && u.wait.is_none());
                let bad_name = e == ProtoError::Usage(USAGE_NICK);
                out.send(conn, Event::Error(e));
                if choosing && bad_name {
                    out.send(conn, Event::AskName);
                }
            }
        }
    }

    /// Whether `conn` waits for a job or a delayed answer; its input is
    /// not read meanwhile, so its lines keep their order.
    pub fn is_waiting(&self, conn: ConnId) -> bool {
        self.user(conn)
            .is_some_and(|u| !matches!(u.wait, None | Some(Wait::Password { .. })))
    }

    /// One command from `conn`, in either mode. Commands from unknown or
    /// departing connections are ignored.
    pub fn handle(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        let Some(user) = self.user(conn) else { return };
        if user.gone {
            return;
        }
        if user.name.is_some() {
            self.command(conn, cmd, out)
        } else {
            self.naming(conn, cmd, out)
        }
    }

    /// Whether `conn` has chosen a name (JSON mode: has connected).
    pub fn is_named(&self, conn: ConnId) -> bool {
        self.user(conn).is_some_and(|u| u.name.is_some())
    }

    /// The connection is gone. Its room is told, unless it already said
    /// goodbye. Returns the name it had, for the log.
    pub fn disconnect(
        &mut self,
        conn: ConnId,
        reason: CloseReason,
        out: &mut Outbox,
    ) -> Option<Name> {
        let user = self.user(conn)?;
        let (name, gone) = (user.name.clone(), user.gone);
        if name.is_some() && !gone {
            if !self.shutting_down {
                self.announce(conn, NoticeKind::Disconnect { reason }, false, out);
            }
            self.remove(conn);
        }
        self.users[conn.0] = None;
        name
    }

    /// Closes connections that chose no name in time.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(&(deadline, conn, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let secs = self.cfg.handshake_timeout.as_secs();
            if let Some(user) = self.users.get_mut(conn.0).and_then(Option::as_mut)
                && user.serial == serial
                && user.name.is_none()
                && !user.gone
            {
                if !matches!(user.wait, None | Some(Wait::Password { .. })) {
                    // It answered; the server owes it the verdict (a
                    // password check may wait its turn). The question
                    // comes again with a new deadline.
                    let again = now + self.cfg.handshake_timeout;
                    self.add_deadline(again, conn, serial);
                    continue;
                }
                user.gone = true;
                out.send(conn, Event::Error(ProtoError::HandshakeTimeout { secs }));
                out.close(conn, CloseReason::HandshakeTimeout);
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|d| d.0)
    }

    /// Tells everyone the server is going down; from now on departures are
    /// not announced.
    pub fn shutdown(&mut self, out: &mut Outbox) {
        self.shutting_down = true;
        let present = self
            .users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.as_ref().filter(|u| !u.gone).map(|_| ConnId(i)));
        out.send_all(present, Event::Shutdown);
    }

    /// Named users present.
    pub fn user_count(&self) -> usize {
        self.names.len()
    }

    /// Rooms that exist: the lobby and every room with members.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// What the chat has done so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn name_of(&self, conn: ConnId) -> Option<&Name> {
        self.user(conn)?.name.as_ref()
    }

    fn user(&self, conn: ConnId) -> Option<&User> {
        self.users.get(conn.0)?.as_ref()
    }

    /// The user at `conn`. Only called for connections known to be present.
    fn user_mut(&mut self, conn: ConnId) -> &mut User {
        self.users[conn.0]
            .as_mut()
            .expect("caller checked the user exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::encode_text;
    use std::collections::BTreeMap;

    /// Drives a `Chat` and shows what each connection would read, as text.
    struct Script {
        chat: Chat,
        out: Outbox,
        now: Instant,
        next: usize,
        closed: Vec<(ConnId, CloseReason)>,
        jobs: Vec<Job>,
    }

    impl Script {
        /// Recording nothing: tests of history say so.
        fn new() -> Script {
            Script::with(ChatConfig {
                history_keep: 0,
                ..ChatConfig::default()
            })
        }

        fn with(cfg: ChatConfig) -> Script {
            Script {
                chat: Chat::new(cfg),
                out: Outbox::default(),
                now: Instant::now(),
                next: 0,
                closed: Vec::new(),
                jobs: Vec::new(),
            }
        }

        /// Collects what the outbox holds, per recipient, as text lines.
        fn take(&mut self) -> BTreeMap<usize, Vec<String>> {
            let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            let closed = &mut self.closed;
            let jobs = &mut self.jobs;
            self.out.drain(|o| match o {
                Output::Send { event, to } => {
                    let mut buf = Vec::new();
                    encode_text(event, &mut buf);
                    let text = String::from_utf8(buf).unwrap();
                    for c in to {
                        let lines = seen.entry(c.0).or_default();
                        lines.extend(text.lines().map(String::from));
                    }
                }
                Output::Close { conn, reason } => closed.push((conn, reason)),
                Output::Job(job) => jobs.push(job),
            });
            seen
        }

        /// Answers the oldest job handed out with `outcome`.
        fn answer(&mut self, outcome: Outcome) -> BTreeMap<usize, Vec<String>> {
            let job = self.jobs.remove(0);
            self.chat.job_done(job.ticket(), outcome, &mut self.out);
            self.take()
        }

        fn open(&mut self) -> ConnId {
            let c = ConnId(self.next);
            self.next += 1;
            let addr = IpAddr::from([127, 0, 0, 1]);
            self.chat.connect(c, addr, self.now, &mut self.out);
            c
        }

        /// A connection that has chosen `name`, with its welcome discarded.
        fn user(&mut self, name: &str) -> ConnId {
            let c = self.open();
            self.chat.handle_line(c, name, &mut self.out);
            self.take();
            c
        }

        fn say(&mut self, c: ConnId, line: &str) -> BTreeMap<usize, Vec<String>> {
            self.chat.handle_line(c, line, &mut self.out);
            self.take()
        }
    }

    fn got(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_message_reaches_every_other_member_and_not_the_sender() {
        let mut s = Script::new();
        let (a, b, c) = (s.user("a"), s.user("b"), s.user("c"));
        let seen = s.say(a, "hi");
        assert_eq!(seen.get(&b.0), Some(&got(&["<a> hi"])));
        assert_eq!(seen.get(&c.0), Some(&got(&["<a> hi"])));
        assert_eq!(seen.get(&a.0), None);
    }

    #[test]
    fn nick_without_a_usable_name_before_naming_asks_again() {
        let mut s = Script::new();
        let a = s.open();
        s.take();
        for line in ["/nick", "/nick a b"] {
            let seen = s.say(a, line);
            assert_eq!(
                seen[&a.0],
                got(&["! usage: /nick NAME", "* choose a name:"]),
                "{line}"
            );
        }
        // Once named, a usage error is just that.
        s.say(a, "alice");
        let seen = s.say(a, "/nick");
        assert_eq!(seen[&a.0], got(&["! usage: /nick NAME"]));
    }

    #[test]
    fn naming_handshake() {
        let mut s = Script::new();
        let a = s.open();
        assert!(s.take()[&a.0][0].starts_with("* welcome to chatd"));
        let seen = s.say(a, "not valid!");
        assert_eq!(
            seen[&a.0],
            got(&[
                "! invalid name \"not valid!\": use 1-32 letters, digits, _ or -",
                "* choose a name:"
            ])
        );
        assert_eq!(
            s.say(a, "/who")[&a.0],
            got(&["! choose a name first (/help for help)"])
        );
        assert!(s.say(a, "/help")[&a.0][0].starts_with("* first choose a name"));
        let seen = s.say(a, "#Alice");
        assert_eq!(
            seen[&a.0],
            got(&["* you joined #lobby as Alice (1 user here); /help lists the commands"])
        );
        let b = s.open();
        s.take();
        let seen = s.say(b, "ALICE");
        assert_eq!(seen[&b.0][0], "! name \"ALICE\" is taken, choose another");
        let seen = s.say(b, "/nick bob");
        assert_eq!(seen[&a.0], got(&["* bob has joined #lobby"]));
        assert!(seen[&b.0][0].contains("(2 users here)"));
    }

    #[test]
    fn connect_names_and_enters_a_room_in_one_step() {
        let mut s = Script::new();
        let a = s.user("alice");
        s.say(a, "/join General");
        let b = s.open();
        s.take();
        let connect = |name, room| Command::Connect {
            name,
            room,
            password: None,
        };
        s.chat
            .handle(b, connect("bob", Some("bad room")), &mut s.out);
        let seen = s.take();
        assert!(seen[&b.0][0].starts_with("! invalid room \"bad room\""));
        assert!(!s.chat.is_named(b), "a refused connect takes no name");
        s.chat
            .handle(b, connect("bob", Some("#general")), &mut s.out);
        let seen = s.take();
        assert_eq!(
            seen[&b.0],
            got(&["* you joined #General as bob (2 users here); /help lists the commands"])
        );
        assert_eq!(seen[&a.0], got(&["* bob has joined #General"]));
        assert!(s.chat.is_named(b));
        s.chat.handle(b, connect("bob", None), &mut s.out);
        assert_eq!(s.take()[&b.0], got(&["! already connected"]));
        let c = s.open();
        s.take();
        s.chat.handle(c, connect("BOB", None), &mut s.out);
        assert_eq!(s.take()[&c.0][0], "! name \"BOB\" is taken, choose another");
    }

    #[test]
    fn quit_before_a_name_closes() {
        let mut s = Script::new();
        let a = s.open();
        s.take();
        assert_eq!(s.say(a, "/quit")[&a.0], got(&["* goodbye"]));
        assert_eq!(s.closed, [(a, CloseReason::Quit)]);
        assert!(
            s.say(a, "alice").is_empty(),
            "a departing connection is ignored"
        );
    }

    #[test]
    fn direct_messages() {
        let mut s = Script::new();
        let (a, b, c) = (s.user("a"), s.user("Bob"), s.user("c"));
        for line in ["/msg bob psst", "@BOB psst", "@bob:psst"] {
            let seen = s.say(a, line);
            assert_eq!(seen.len(), 1, "{line}: only bob hears it");
            assert_eq!(seen[&b.0], got(&["*a* psst"]));
        }
        assert_eq!(
            s.say(a, "@nobody hi")[&a.0],
            got(&["! no such user: nobody"])
        );
        assert!(!s.say(c, "/msg a x").contains_key(&c.0));
    }

    #[test]
    fn rename_is_announced_and_frees_the_old_name() {
        let mut s = Script::new();
        let (a, b) = (s.user("alice"), s.user("bob"));
        let seen = s.say(a, "/nick Alicia");
        assert_eq!(seen[&a.0], got(&["* you are now known as Alicia"]));
        assert_eq!(seen[&b.0], got(&["* alice is now known as Alicia"]));
        assert_eq!(
            s.say(b, "/nick ALICIA")[&b.0],
            got(&["! name \"ALICIA\" is taken, choose another"])
        );
        assert_eq!(
            s.say(b, "/nick alice")[&b.0],
            got(&["* you are now known as alice"])
        );
        // A different case of one's own name is allowed.
        assert_eq!(
            s.say(a, "/nick alicia")[&a.0],
            got(&["* you are now known as alicia"])
        );
        assert_eq!(
            s.say(a, "/nick alicia")[&a.0],
            got(&["* you are already known as alicia"])
        );
        assert_eq!(s.say(b, "hi")[&a.0], got(&["<alice> hi"]));
    }

    #[test]
    fn rooms_keep_messages_apart() {
        let mut s = Script::new();
        let (a, b, c) = (s.user("a"), s.user("b"), s.user("c"));
        let seen = s.say(a, "/join #Rust");
        assert_eq!(seen[&a.0], got(&["* you joined #Rust"]));
        assert_eq!(seen[&b.0], got(&["* a has left #lobby"]));
        let seen = s.say(b, "/join rust");
        assert_eq!(
            seen[&a.0],
            got(&["* b has joined #Rust"]),
            "shown in its creator's case"
        );
        assert_eq!(seen[&c.0], got(&["* b has left #lobby"]));
        let seen = s.say(a, "in rust");
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&b.0]);
        assert_eq!(s.say(c, "in lobby").len(), 0, "c is alone in the lobby");
        assert_eq!(
            s.say(a, "/join RUST")[&a.0],
            got(&["* you are already in #Rust"])
        );
        assert!(s.say(a, "/join no way")[&a.0][0].starts_with("! usage: /join"));
        assert!(s.say(a, "/join bad!")[&a.0][0].starts_with("! invalid room \"bad!\""));
        let rooms = s.say(c, "/rooms");
        assert_eq!(
            rooms[&c.0],
            got(&[
                "* rooms: 2",
                "*   #lobby 1",
                "*   #Rust 2",
                "* end of /rooms"
            ])
        );
        // The last one out drops the room; the lobby stays.
        s.say(a, "/join lobby");
        s.say(b, "/join lobby");
        assert_eq!(
            s.say(c, "/rooms")[&c.0],
            got(&["* rooms: 1", "*   #lobby 3", "* end of /rooms"])
        );
        s.say(a, "/join rust");
        assert_eq!(
            s.say(a, "/who")[&a.0],
            got(&["* users in #rust: 1", "*   a online", "* end of /who"])
        );
    }

    #[test]
    fn statuses_show_in_listings() {
        let mut s = Script::new();
        let (a, b) = (s.user("a"), s.user("B"));
        let seen = s.say(b, "/away lunch");
        assert_eq!(seen[&b.0], got(&["* you are now away (lunch)"]));
        assert_eq!(seen[&a.0], got(&["* B is now away (lunch)"]));
        s.say(a, "/join other");
        s.say(a, "/status BUSY");
        assert_eq!(
            s.say(b, "/users")[&b.0],
            got(&[
                "* users: 2",
                "*   a busy",
                "*   B away: lunch",
                "* end of /users"
            ])
        );
        assert_eq!(s.say(b, "/back")[&b.0], got(&["* you are now online"]));
        let long = format!("/status away {}", "é".repeat(65));
        assert_eq!(
            s.say(b, &long)[&b.0],
            got(&["! status note too long (over 64 characters)"])
        );
        let ok = format!("/status away {}", "é".repeat(64));
        assert!(s.say(b, &ok)[&b.0][0].starts_with("* you are now away"));
    }

    #[test]
    fn quit_tells_the_room_with_the_reason() {
        let mut s = Script::new();
        let (a, b) = (s.user("a"), s.user("b"));
        let seen = s.say(a, "/quit gone fishing");
        assert_eq!(seen[&a.0], got(&["* goodbye (gone fishing)"]));
        assert_eq!(seen[&b.0], got(&["* a has quit (gone fishing)"]));
        assert_eq!(s.closed, [(a, CloseReason::Quit)]);
        // The name is free at once; the later disconnect is not announced.
        let seen = {
            let name = s.chat.disconnect(a, CloseReason::Quit, &mut s.out);
            assert_eq!(name.as_deref(), Some("a"));
            s.take()
        };
        assert!(seen.is_empty());
        let c = s.user("a");
        assert_eq!(s.say(b, "hi")[&c.0], got(&["<b> hi"]));
    }

    #[test]
    fn disconnect_is_announced_with_its_reason() {
        let mut s = Script::new();
        let (a, b) = (s.user("a"), s.user("b"));
        s.chat.disconnect(a, CloseReason::TooSlow, &mut s.out);
        assert_eq!(
            s.take()[&b.0],
            got(&["* a has disconnected (too slow, output limit exceeded)"])
        );
        assert_eq!(s.chat.user_count(), 1);
        assert_eq!(s.say(b, "/who")[&b.0][0], "* users in #lobby: 1");
    }

    #[test]
    fn a_new_announce_limit_applies_at_once() {
        let mut s = Script::with(ChatConfig {
            announce_limit: 2,
            ..ChatConfig::default()
        });
        let (a, b, c) = (s.user("a"), s.user("b"), s.user("c"));
        s.take();
        assert!(!s.say(c, "/away").contains_key(&a.0), "3 members: quiet");
        s.chat.set_config(ChatConfig {
            announce_limit: 100,
            ..ChatConfig::default()
        });
        assert_eq!(s.say(c, "/back")[&b.0], got(&["* c is now online"]));
    }

    #[test]
    fn big_rooms_stay_quiet_about_comings_and_goings() {
        let mut s = Script::with(ChatConfig {
            announce_limit: 3,
            ..ChatConfig::default()
        });
        let (a, b, c) = (s.user("a"), s.user("b"), s.user("c"));
        let d = s.open();
        s.take();
        let seen = s.say(d, "d");
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&d.0], "4 members: quiet");
        let seen = s.say(d, "/away");
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [&d.0],
            "the actor is always told"
        );
        assert_eq!(
            s.say(d, "hello")[&a.0],
            got(&["<d> hello"]),
            "messages always go out"
        );
        let seen = s.say(a, "/quit");
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&a.0]);
        // Three left: announcements again.
        assert_eq!(s.say(b, "/busy")[&c.0], got(&["* b is now busy"]));
    }

    #[test]
    fn handshake_timeout_closes_only_unnamed_connections() {
        let mut s = Script::new();
        let a = s.open();
        let b = s.open();
        s.say(b, "bob");
        s.take();
        let late = s.now + Duration::from_secs(30);
        assert_eq!(s.chat.next_deadline(), Some(late));
        s.chat.tick(late - Duration::from_millis(1), &mut s.out);
        assert!(s.take().is_empty());
        s.chat.tick(late, &mut s.out);
        let seen = s.take();
        assert_eq!(seen[&a.0], got(&["! no name chosen within 30 s"]));
        assert!(!seen.contains_key(&b.0));
        assert_eq!(s.closed, [(a, CloseReason::HandshakeTimeout)]);
        // A reused slot does not inherit the old deadline.
        s.chat
            .disconnect(a, CloseReason::HandshakeTimeout, &mut s.out);
        s.next = a.0;
        let again = s.open();
        assert_eq!(again, a);
        s.chat.tick(late + Duration::from_secs(1), &mut s.out);
        assert_eq!(s.take().len(), 1, "only the welcome");
    }

    #[test]
    fn deadlines_of_named_and_departed_connections_do_not_pile_up() {
        // Many short connections that name themselves and leave, as a busy
        // server sees them, and one that never chooses a name.
        let mut s = Script::new();
        let silent = s.open();
        for i in 0..20 * DEADLINES_SETTLE_AT {
            let c = s.user(&format!("u{i}"));
            s.chat.disconnect(c, CloseReason::Quit, &mut s.out);
            s.take();
            s.next = c.0;
        }
        assert!(
            s.chat.deadlines.len() <= 2 * DEADLINES_SETTLE_AT,
            "{} deadlines kept for one unnamed connection",
            s.chat.deadlines.len()
        );
        assert!(s.chat.deadlines.capacity() <= 4 * DEADLINES_SETTLE_AT);
        // The silent one still times out.
        s.chat.tick(s.now + Duration::from_secs(30), &mut s.out);
        s.take();
        assert_eq!(s.closed, [(silent, CloseReason::HandshakeTimeout)]);
    }

    #[test]
    fn a_shorter_handshake_timeout_applies_to_newcomers_at_once() {
        let mut s = Script::new();
        let early = s.open();
        s.chat.set_config(ChatConfig {
            handshake_timeout: Duration::from_secs(5),
            ..ChatConfig::default()
        });
        let late = s.open();
        // The newcomer's 5 s run out first, though it came second.
        s.chat.tick(s.now + Duration::from_secs(5), &mut s.out);
        s.take();
        assert_eq!(s.closed, [(late, CloseReason::HandshakeTimeout)]);
        s.chat.tick(s.now + Duration::from_secs(30), &mut s.out);
        s.take();
        assert_eq!(s.closed[1], (early, CloseReason::HandshakeTimeout));
    }

    #[test]
    fn shutdown_reaches_everyone_and_silences_departures() {
        let mut s = Script::new();
        let (a, b) = (s.user("a"), s.user("b"));
        let c = s.open();
        s.take();
        s.chat.shutdown(&mut s.out);
        let seen = s.take();
        for x in [a, b, c] {
            assert_eq!(seen[&x.0], got(&["* server is shutting down"]));
        }
        s.chat.disconnect(a, CloseReason::Shutdown, &mut s.out);
        assert!(s.take().is_empty());
    }

    #[test]
    fn unknown_commands_and_literal_slashes() {
        let mut s = Script::new();
        let (a, b) = (s.user("a"), s.user("b"));
        assert_eq!(
            s.say(a, "/dance")[&a.0],
            got(&["! unknown command /dance, /help lists the commands"])
        );
        assert_eq!(s.say(a, "//dance")[&b.0], got(&["<a> /dance"]));
        let help = s.say(a, "/help");
        assert_eq!(help[&a.0].last().unwrap(), "* end of /help");
    }

    #[test]
    fn room_membership_stays_consistent_under_churn() {
        // Members are removed by swapping; check every index stays right.
        let mut s = Script::new();
        let users: Vec<ConnId> = (0..20).map(|i| s.user(&format!("u{i}"))).collect();
        for (i, &u) in users.iter().enumerate() {
            if i % 3 == 0 {
                s.chat.disconnect(u, CloseReason::PeerClosed, &mut s.out);
            } else if i % 3 == 1 {
                s.say(u, "/join side");
            }
        }
        s.take();
        let seen = s.say(users[2], "x");
        let expect: Vec<usize> = (0..20).filter(|i| i % 3 == 2 && *i != 2).collect();
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expect);
        let seen = s.say(users[1], "y");
        let expect: Vec<usize> = (0..20).filter(|i| i % 3 == 1 && *i != 1).collect();
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expect);
    }

    /// A server whose chat knows `alice` is registered.
    fn with_alice() -> Script {
        let mut s = Script::with(ChatConfig {
            login_delay: Duration::from_millis(100),
            ..ChatConfig::default()
        });
        s.chat.set_accounts([Name::from("Alice")]);
        s
    }

    /// Lets every delayed wrong-password answer come due.
    fn due(s: &mut Script) -> BTreeMap<usize, Vec<String>> {
        s.now += Duration::from_secs(60);
        while s.chat.due_answer(s.now, &mut s.out).is_some() {}
        s.take()
    }

    #[test]
    fn counts_follow_messages_and_logins() {
        let mut s = with_alice();
        let (b, c) = (s.user("b"), s.user("c"));
        s.say(b, "hi");
        s.say(b, "/msg c yo");
        s.say(b, "/msg nobody there");
        s.say(c, "/join empty");
        s.answer(Outcome::History(Vec::new()));
        s.say(c, "to nobody");
        // A wrong password, then a right one during its delay: held back
        // first, then checked.
        let (x, y) = (s.open(), s.open());
        s.say(x, "alice");
        s.say(x, "wrong-password");
        s.answer(Outcome::WrongPassword);
        s.say(y, "alice");
        s.say(y, "right-password");
        assert!(s.jobs.is_empty(), "the right password waits its turn");
        due(&mut s);
        s.answer(Outcome::Done);
        assert_eq!(
            *s.chat.counts(),
            Counts {
                room_messages: 2,
                direct_messages: 1,
                logins_succeeded: 1,
                logins_failed: 1,
                logins_throttled: 1,
                logins_busy: 0,
            }
        );
        assert_eq!(s.chat.room_count(), 2);
    }

    #[test]
    fn a_registered_name_asks_for_its_password_and_three_wrong_close() {
        let mut s = with_alice();
        let c = s.open();
        s.take();
        assert_eq!(s.say(c, "alice")[&c.0], got(&["* password for Alice:"]));
        assert!(!s.chat.is_waiting(c), "waiting for a line, not a job");
        // The password is taken as sent, spaces and all.
        s.chat.handle_line(c, " wrong one ", &mut s.out);
        s.take();
        assert!(s.chat.is_waiting(c));
        match &s.jobs[0] {
            Job::Login { name, password, .. } => {
                assert_eq!((&**name, password.as_str()), ("Alice", " wrong one "));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            s.answer(Outcome::WrongPassword).is_empty(),
            "not before the delay"
        );
        assert!(s.chat.next_answer().is_some());
        assert_eq!(
            due(&mut s)[&c.0],
            got(&["! wrong password for Alice", "* password for Alice:"])
        );
        // Too short to be anyone's password: wrong without a job.
        s.say(c, "short");
        assert!(s.jobs.is_empty());
        assert_eq!(
            due(&mut s)[&c.0],
            got(&["! wrong password for Alice", "* password for Alice:"])
        );
        s.say(c, "still wrong");
        s.answer(Outcome::WrongPassword);
        assert_eq!(due(&mut s)[&c.0], got(&["! wrong password for Alice"]));
        assert_eq!(s.closed, [(c, CloseReason::WrongPassword)]);
    }

    #[test]
    fn wrong_answers_wait_longer_each_time() {
        let mut s = with_alice();
        let c = s.open();
        s.say(c, "alice");
        s.say(c, "wrongpass1");
        s.answer(Outcome::WrongPassword);
        let first = s.chat.next_answer().unwrap() - s.now;
        due(&mut s);
        s.say(c, "wrongpass2");
        s.answer(Outcome::WrongPassword);
        let second = s.chat.next_answer().unwrap() - s.now;
        assert!(second >= first * 2, "{first:?} then {second:?}");
    }

    #[test]
    fn the_right_password_replaces_an_older_connection() {
        let mut s = with_alice();
        let bob = s.user("bob");
        let old = s.open();
        s.say(old, "Alice");
        s.say(old, "right password");
        s.answer(Outcome::Done);
        let new = s.open();
        s.take();
        s.say(new, "ALICE");
        s.say(new, "right password");
        let seen = s.answer(Outcome::Done);
        assert_eq!(
            seen[&old.0],
            got(&["* you have disconnected (logged in from another connection)"])
        );
        assert_eq!(
            seen[&bob.0],
            got(&[
                "* Alice has disconnected (logged in from another connection)",
                "* Alice has joined #lobby"
            ])
        );
        assert!(seen[&new.0][0].starts_with("* you joined #lobby as Alice"));
        assert_eq!(s.closed, [(old, CloseReason::Replaced)]);
        assert_eq!(s.chat.name_of(new).map(|n| &**n), Some("Alice"));
    }

    #[test]
    fn accounts_hold_their_names_and_show_offline() {
        let mut s = with_alice();
        let bob = s.user("bob");
        // Someone else's account is taken even while nobody holds it.
        assert_eq!(
            s.say(bob, "/nick alice")[&bob.0],
            got(&["! name \"alice\" is taken, choose another"])
        );
        assert_eq!(
            s.say(bob, "/users")[&bob.0],
            got(&[
                "* users: 2",
                "*   Alice offline",
                "*   bob online",
                "* end of /users"
            ])
        );
        // A password sent to a JSON connect for a free name is ignored;
        // none for a registered one is refused.
        let j = s.open();
        s.take();
        let connect = |name, password| Command::Connect {
            name,
            room: None,
            password,
        };
        s.chat.handle(j, connect("alice", None), &mut s.out);
        assert_eq!(
            s.take()[&j.0],
            got(&[
                "! Alice is registered: a password is needed",
                "* choose a name:"
            ])
        );
        s.chat
            .handle(j, connect("carol", Some("anything")), &mut s.out);
        assert!(s.take()[&j.0][0].starts_with("* you joined #lobby as carol"));
        assert!(s.jobs.is_empty());
    }

    #[test]
    fn registering_then_leaving_and_coming_back_to_ones_name() {
        let mut s = Script::new();
        let c = s.user("dave");
        assert_eq!(
            s.say(c, "/register short")[&c.0],
            got(&["! password too short: use 8-256 characters"])
        );
        s.say(c, "/register  two  spaces ");
        match &s.jobs[0] {
            Job::Register { password, .. } => assert_eq!(password, " two  spaces "),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.answer(Outcome::Done)[&c.0],
            got(&["* dave is now registered: log in with this password from now on"])
        );
        assert_eq!(
            s.say(c, "/register again123")[&c.0],
            got(&["! dave is already registered"])
        );
        s.say(c, "/nick david");
        // Back to one's own account without a password.
        assert_eq!(
            s.say(c, "/nick Dave")[&c.0],
            got(&["* you are now known as Dave"])
        );
        // /passwd: the old one is checked off the loop.
        // OLD is one word; NEW is the rest, spaces and all.
        s.say(c, "/passwd oldpass1 new pass word ");
        match &s.jobs[0] {
            Job::Passwd { old, new, .. } => {
                assert_eq!((&**old, &**new), ("oldpass1", "new pass word "))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.answer(Outcome::Done)[&c.0],
            got(&["* password changed for Dave"])
        );
    }

    #[test]
    fn history_is_replayed_on_entering_and_listed_on_request() {
        let mut s = Script::with(ChatConfig {
            history: 2,
            ..ChatConfig::default()
        });
        s.chat.set_clock(Timestamp(1_763_733_720), s.now);
        let a = s.user("alice");
        for t in ["one", "two", "three"] {
            s.say(a, t);
        }
        let records = s.chat.take_records();
        assert_eq!(records.len(), 1, "one chunk for the room");
        assert_eq!(records[0].count, 3);
        let b = s.open();
        let seen = s.say(b, "bob");
        assert_eq!(
            seen[&b.0][2..],
            got(&[
                "[2025-11-21 14:02] <alice> two",
                "[2025-11-21 14:02] <alice> three"
            ])
        );
        // 20 are kept in memory, the default /history.
        assert_eq!(
            s.say(b, "/history")[&b.0],
            got(&[
                "* history of #lobby: 3 messages",
                "[2025-11-21 14:02] <alice> one",
                "[2025-11-21 14:02] <alice> two",
                "[2025-11-21 14:02] <alice> three",
                "* end of /history"
            ])
        );
        // A room new to memory is looked up in the database first; an
        // empty history shows nothing in text.
        assert!(s.say(b, "/join side").is_empty());
        assert!(matches!(&s.jobs[..], [Job::History { count: 20, .. }]));
        assert_eq!(
            s.answer(Outcome::History(vec![]))[&b.0],
            got(&["* you joined #side"])
        );
    }

    #[test]
    fn a_room_dropped_from_memory_is_read_back_before_it_is_entered() {
        let mut s = Script::with(ChatConfig {
            idle_rooms: 1,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        let b = s.user("bob");
        for room in ["one", "two"] {
            s.say(a, &format!("/join {room}"));
            s.answer(Outcome::History(vec![]));
            s.say(a, &format!("said in {room}"));
        }
        s.say(a, "/join lobby");
        s.chat.take_records();
        // #two is still in memory: entered at once, with its history.
        let seen = s.say(b, "/join two");
        assert!(
            seen[&b.0].len() > 1 && seen[&b.0][1].ends_with("<alice> said in two"),
            "{seen:?}"
        );
        assert!(s.jobs.is_empty());
        // #one was dropped: b waits in #two until its history is read,
        // and meanwhile hears #two, not #one.
        assert!(s.say(b, "/join one").is_empty());
        assert!(s.chat.is_waiting(b));
        let record = Recorded {
            sender: "alice".into(),
            text: "said in one".into(),
            ts: Timestamp(0),
        };
        let seen = s.answer(Outcome::History(vec![record]));
        assert_eq!(seen[&b.0][0], "* you joined #one");
        assert!(seen[&b.0][1].ends_with("<alice> said in one"), "{seen:?}");
        assert!(!s.chat.is_waiting(b));
    }

    #[test]
    fn history_beyond_memory_is_a_job() {
        let mut s = Script::with(ChatConfig {
            history: 1,
            history_keep: 100,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        for i in 0..25 {
            s.say(a, &format!("m{i}"));
        }
        let seen = s.say(a, "/history 5");
        assert_eq!(seen[&a.0].len(), 7, "served from memory: {seen:?}");
        assert!(s.say(a, "/history 30").is_empty());
        assert!(s.chat.is_waiting(a));
        match &s.jobs[0] {
            Job::History { room, count, .. } => assert_eq!((&**room, *count), ("lobby", 30)),
            other => panic!("{other:?}"),
        }
        let seen = s.answer(Outcome::History(Vec::new()));
        assert_eq!(
            seen[&a.0],
            got(&["* history of #lobby: 0 messages", "* end of /history"])
        );
        assert!(!s.chat.is_waiting(a));
    }

    #[test]
    fn entering_shows_what_is_kept_when_fewer_are_kept_than_shown() {
        let mut s = Script::with(ChatConfig {
            history: 20,
            history_keep: 5,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        for i in 0..7 {
            s.say(a, &format!("m{i}"));
        }
        s.chat.take_records();
        let b = s.open();
        let seen = s.say(b, "bob");
        assert_eq!(seen[&b.0].len(), 2 + 5, "{seen:?}");
        assert!(seen[&b.0][2].ends_with("<alice> m2"));
        let seen = s.say(b, "/history 100");
        assert_eq!(seen[&b.0].len(), 2 + 5, "{seen:?}");
        assert!(s.jobs.is_empty(), "all kept ones are in memory");
    }

    #[test]
    fn nothing_is_recorded_with_history_keep_zero() {
        let mut s = Script::with(ChatConfig {
            history_keep: 0,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        s.say(a, "not kept");
        assert!(s.chat.take_records().is_empty());
        assert_eq!(
            s.say(a, "/history")[&a.0],
            got(&["* history of #lobby: 0 messages", "* end of /history"])
        );
    }

    #[test]
    fn guesses_sent_in_parallel_wait_their_turn() {
        let mut s = with_alice();
        let a = s.open();
        let b = s.open();
        s.say(a, "alice");
        s.say(b, "alice");
        s.say(a, "wrongpass1");
        s.answer(Outcome::WrongPassword);
        // b's guess is not even checked until a's failure's delay is over.
        s.say(b, "wrongpass2");
        assert!(s.jobs.is_empty());
        assert!(s.chat.is_waiting(b));
        let later = s.now + Duration::from_secs(60);
        let mut answered = Vec::new();
        while let Some(c) = s.chat.due_answer(later, &mut s.out) {
            answered.push(c);
        }
        assert_eq!(answered, [a, b]);
        s.take();
        assert!(matches!(&s.jobs[..], [Job::Login { .. }]));
        assert!(s.chat.is_waiting(b), "now its check is out");
    }

    #[test]
    fn an_operator_deleting_an_account_frees_the_name_for_everyone() {
        let mut s = Script::new();
        let a = s.user("dave");
        s.say(a, "/register password1");
        s.answer(Outcome::Done);
        s.say(a, "/nick zed");
        s.chat.set_accounts([]);
        let b = s.user("dave");
        s.say(b, "/register newowner99");
        s.answer(Outcome::Done);
        s.say(b, "/nick bob");
        // a proved the old account, not this one.
        assert_eq!(
            s.say(a, "/nick dave")[&a.0],
            got(&["! name \"dave\" is taken, choose another"])
        );
    }

    #[test]
    fn a_name_freed_and_registered_again_before_any_poll_is_the_new_owners() {
        let mut s = Script::new();
        let a = s.user("dave");
        s.say(a, "/register password1");
        s.answer(Outcome::Done);
        s.say(a, "/nick zed");
        // The operator deletes dave; the first to learn of it is a login.
        let c = s.open();
        s.say(c, "dave");
        s.say(c, "any password");
        assert!(s.answer(Outcome::NoAccount)[&c.0][0].starts_with("* you joined"));
        s.say(c, "/register newowner9");
        s.chat.account_added(Name::from("dave"));
        s.answer(Outcome::Done);
        assert_eq!(
            s.say(a, "/nick dave")[&a.0],
            got(&["! name \"dave\" is taken, choose another"])
        );
        // And a registration finished for a connection gone by then is
        // known all the same.
        s.chat.account_added(Name::from("Erin"));
        let e = s.user("x");
        assert_eq!(
            s.say(e, "/nick erin")[&e.0],
            got(&["! name \"erin\" is taken, choose another"])
        );
    }

    #[test]
    fn a_password_waiting_its_turn_outlives_the_handshake_deadline() {
        let mut s = Script::with(ChatConfig {
            login_delay: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(4),
            ..ChatConfig::default()
        });
        s.chat.set_accounts([Name::from("dave")]);
        let a = s.open();
        s.say(a, "dave");
        s.say(a, "wrongpass1");
        s.answer(Outcome::WrongPassword);
        let b = s.open();
        s.say(b, "dave");
        s.say(b, "rightpass1");
        assert!(s.chat.is_waiting(b));
        s.chat.tick(s.now + Duration::from_secs(5), &mut s.out);
        let seen = s.take();
        assert!(
            !seen.contains_key(&b.0),
            "b waits for its verdict: {seen:?}"
        );
        assert!(!s.closed.iter().any(|(c, _)| *c == b));
    }

    #[test]
    fn queued_guesses_are_checked_one_at_a_time() {
        let mut s = with_alice();
        let first = s.open();
        s.say(first, "alice");
        s.say(first, "wrongpass0");
        s.answer(Outcome::WrongPassword);
        let guessers: Vec<ConnId> = (0..3)
            .map(|i| {
                let c = s.open();
                s.say(c, "alice");
                s.say(c, &format!("wrongpass{}", i + 1));
                c
            })
            .collect();
        assert!(s.jobs.is_empty());
        // Their turn comes: one check goes out, the others keep waiting.
        s.now += Duration::from_secs(60);
        while s.chat.due_answer(s.now, &mut s.out).is_some() {}
        s.take();
        assert_eq!(s.jobs.len(), 1, "{:?}", s.jobs);
        assert!(guessers.iter().all(|&c| s.chat.is_waiting(c)));
    }

    #[test]
    fn jobs_never_show_their_passwords() {
        let mut s = with_alice();
        let c = s.open();
        s.say(c, "alice");
        s.say(c, "hunter2hunter2");
        let shown = format!("{:?}", s.jobs[0]);
        assert!(shown.starts_with("Login(Alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn answers_for_a_connection_gone_since_are_dropped() {
        let mut s = with_alice();
        let c = s.open();
        s.say(c, "alice");
        s.say(c, "right password");
        let job = s.jobs.remove(0);
        s.chat.disconnect(c, CloseReason::PeerClosed, &mut s.out);
        // The same slot, a new connection.
        let again = c;
        s.chat
            .connect(again, IpAddr::from([127, 0, 0, 1]), s.now, &mut s.out);
        s.take();
        s.chat.job_done(job.ticket(), Outcome::Done, &mut s.out);
        assert!(s.take().is_empty());
        assert!(s.chat.name_of(again).is_none());
    }
}
