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
//! names and their roles; `moderation` what moderators and admins do and
//! the limits on abuse; `recording` what is stored; `history` and
//! `throttle` the in-memory history and the wrong-password delays.

mod accounts;
mod cluster;
pub mod history;
pub mod moderation;
mod naming;
mod recording;
mod rooms;
#[cfg(test)]
mod script;
pub mod throttle;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::chat::cluster::Remote;
pub use crate::chat::cluster::{Presence, Shared};
use crate::chat::history::{Chunk, History};
use crate::chat::moderation::{Change, Moderation};
use crate::chat::throttle::Throttle;
use crate::wire::proto::{
    CloseReason, Command, DEFAULT_HISTORY, Event, Info, LOBBY, MAX_NOTE_CHARS, Name, Notice,
    NoticeKind, ProtoError, Recorded, Role, RoomInfo, Status, Timestamp, USAGE_NICK, UserInfo,
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
    /// Guests may read but not speak: room and direct messages need an
    /// account.
    pub require_account: bool,
    /// Whether `/register` is served; if not, an operator creates accounts.
    pub registration_open: bool,
    /// Registrations per address per hour; 0 for no limit.
    pub register_rate: u32,
    /// How long a session token works, in seconds.
    pub token_ttl: u64,
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
            require_account: false,
            registration_open: true,
            register_rate: 5,
            token_ttl: 30 * 86_400,
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
    /// The newest `count` recorded messages of `room` (after `after`, or
    /// before `before`, when given).
    History {
        ticket: Ticket,
        room: Name,
        count: usize,
        after: Option<u64>,
        before: Option<u64>,
    },
    /// Claim `name` across the cluster for `ticket`'s connection;
    /// `takeover` replaces a holder (the same account on another node).
    Claim {
        ticket: Ticket,
        name: Name,
        room: Name,
        takeover: bool,
    },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Login { ticket, name, .. } => write!(f, "Login({name}, {ticket:?})"),
            Job::Register { ticket, name, .. } => write!(f, "Register({name}, {ticket:?})"),
            Job::Passwd { ticket, name, .. } => write!(f, "Passwd({name}, {ticket:?})"),
            Job::Claim {
                ticket,
                name,
                room,
                takeover,
            } => write!(
                f,
                "Claim({name} in {room}, takeover {takeover}, {ticket:?})"
            ),
            Job::History {
                ticket,
                room,
                count,
                after,
                before,
            } => write!(
                f,
                "History({room}, {count}, after {after:?}, before {before:?}, {ticket:?})"
            ),
        }
    }
}

impl Job {
    pub fn ticket(&self) -> Ticket {
        match self {
            Job::Login { ticket, .. }
            | Job::Register { ticket, .. }
            | Job::Passwd { ticket, .. }
            | Job::History { ticket, .. }
            | Job::Claim { ticket, .. } => *ticket,
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
    /// A resume's query (`after`): the messages, and the number the
    /// room's next message gets, as the database knows it.
    Resumed {
        messages: Vec<Recorded>,
        next: u64,
    },
    /// A cluster-wide claim on the lower-cased name `key`: granted or
    /// refused (held elsewhere).
    Claimed {
        key: Box<str>,
        ok: bool,
    },
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
    /// Store a moderation change (nothing comes back).
    Store(Change),
    /// Tell the other nodes of the cluster.
    Share(Shared),
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
    Store(Change),
    Share(Shared),
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

    pub fn store(&mut self, change: Change) {
        self.actions.push(Action::Store(change));
    }

    pub fn share(&mut self, shared: Shared) {
        self.actions.push(Action::Share(shared));
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
                Action::Store(change) => f(Output::Store(change)),
                Action::Share(shared) => f(Output::Share(shared)),
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
    /// When the connection began (wall clock), for `/whois`.
    since: Timestamp,
    /// The account (lower-cased) this connection proved it owns, by its
    /// password or by registering it; it may come back to that name.
    account: Option<Box<str>>,
    wait: Option<Wait>,
    /// Wrong passwords so far while logging in.
    failures: u8,
    /// Entering a room after a `since`: what to send instead of the
    /// usual replay.
    resume: Option<Box<Resume>>,
}

/// A resume in progress: the client saw up to `seq` (of this history's
/// epoch if `same_epoch`); `fetched` holds what the database had after it.
struct Resume {
    seq: u64,
    same_epoch: bool,
    fetched: Option<Vec<Recorded>>,
}

/// Most messages a resume sends; more missed are marked truncated.
pub const MAX_RESUME: usize = 1000;

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
    /// A cluster-wide claim on `name` is out: to take it (entering
    /// `room`), or to be renamed to it.
    Claim {
        name: Name,
        room: Option<Name>,
        rename: bool,
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
    /// Shown on entering; kept by name in `Moderation` while empty.
    topic: Option<Name>,
    /// Only moderators and admins may speak.
    moderated: bool,
}

/// A registered name.
struct Account {
    /// As registered.
    name: Name,
    role: Role,
    /// Its session tokens' generation: a token of another does not work
    /// (raised at a password change and a logout).
    tokens: u32,
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
    /// Registered names, lower-cased, to the account.
    accounts: HashMap<Box<str>, Account>,
    /// The history's lineage, told to JSON clients for resuming.
    epoch: Name,
    /// Makes and checks session tokens; none until `set_identity`.
    tokens: Option<crate::crypto::Tokens>,
    moderation: Moderation,
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
    /// The other nodes, when this chat is one node of a cluster.
    cluster: Option<Box<Remote>>,
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
            topic: None,
            moderated: false,
        });
        let mut room_ids = HashMap::new();
        room_ids.insert(LOBBY.into(), lobby);
        Chat {
            throttle: Throttle::new(cfg.login_delay),
            now: Instant::now(),
            accounts: HashMap::new(),
            moderation: Moderation::default(),
            epoch: "".into(),
            tokens: None,
            answers: BinaryHeap::new(),
            checking: HashMap::new(),
            history,
            records: Vec::new(),
            record_rooms: Vec::new(),
            record_bytes: 0,
            batch: 0,
            counts: Counts::default(),
            cluster: None,
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
            since: self.clock,
            account: None,
            wait: None,
            failures: 0,
            resume: None,
        });
        if let Some(until) = self.moderation.address_ban(addr, self.clock) {
            let user = self.user_mut(conn);
            user.gone = true;
            out.send(conn, Event::Error(ProtoError::AddressBanned { until }));
            out.close(conn, CloseReason::Banned);
            return;
        }
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
                return self.choose_name(conn, strip_hash(other), None, None, None, out);
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
        self.settle_claim(conn);
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
    use super::script::*;
    use super::*;

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
    fn a_password_waiting_its_turn_outlives_the_handshake_deadline() {
        let mut s = Script::with(ChatConfig {
            login_delay: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(4),
            ..ChatConfig::default()
        });
        s.chat
            .set_accounts([(Name::from("dave"), Role::User)], &mut s.out);
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
    fn jobs_never_show_their_passwords() {
        let mut s = with_alice();
        let c = s.open();
        s.say(c, "alice");
        s.say(c, "hunter2hunter2");
        let shown = format!("{:?}", s.jobs[0]);
        assert!(shown.starts_with("Login(Alice"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
