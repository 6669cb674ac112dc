//! The vocabulary of the wire: commands (client to server), events (server
//! to client), protocol errors, names, times and statuses. The text-mode
//! codec is `wire::text`; its entry points are re-exported here. Knows
//! nothing of sockets or of who receives what.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use crate::wire::text::{USAGE_NICK, encode_text, parse_secret, parse_text};

/// A user or room name as others see it. Shared, because one name is
/// copied into every event about that user.
pub type Name = Arc<str>;

/// Longest user or room name, in characters (all ASCII).
pub const MAX_NAME_LEN: usize = 32;
/// Longest status note, in characters; a longer one is refused, not cut.
pub const MAX_NOTE_CHARS: usize = 64;
/// The room every user enters first; it always exists.
pub const LOBBY: &str = "lobby";
/// Shortest and longest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest room topic, in characters; a longer one is refused.
pub const MAX_TOPIC_CHARS: usize = 300;
/// Most messages one `/history` may ask for, and how many it gets by
/// default.
pub const MAX_HISTORY: usize = 1000;
pub const DEFAULT_HISTORY: usize = 20;

/// Whether `password` has an acceptable length; it is otherwise taken
/// exactly as sent.
pub fn check_password(password: &str) -> Result<(), ProtoError> {
    match password.chars().count() {
        n if n < MIN_PASSWORD_CHARS => Err(ProtoError::PasswordTooShort),
        n if n > MAX_PASSWORD_CHARS => Err(ProtoError::PasswordTooLong),
        _ => Ok(()),
    }
}

/// Whether `s` is a valid user or room name: 1–32 ASCII letters, digits,
/// `_` or `-`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a connection speaks, chosen by its first non-blank line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One line per event with a prefix: for people and for `chat-client`.
    Text = 0,
    /// One JSON object per line, both ways.
    Json = 1,
    /// JSON mode over a WebSocket: one object per text message.
    WebSocket = 2,
}

impl Mode {
    /// The mode a connection's first non-blank line chooses.
    pub fn of_first_line(line: &str) -> Mode {
        if line.trim_start().starts_with('{') {
            Mode::Json
        } else {
            Mode::Text
        }
    }
}

/// Wall-clock time in whole seconds since 1970-01-01 UTC, as messages are
/// stamped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_secs())
    }

    /// `2026-11-21 14:02`, as text mode shows recorded messages.
    pub fn minutes(self) -> Minutes {
        Minutes(self)
    }

    /// Year, month, day, hour, minute, second (UTC).
    pub fn parts(self) -> (i64, u32, u32, u64, u64, u64) {
        let (y, m, d) = civil_from_days((self.0 / 86_400) as i64);
        let rem = self.0 % 86_400;
        (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
    }
}

/// RFC 3339 in UTC: `2026-11-21T14:02:07Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.parts();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// A timestamp shown to the minute, as text-mode history lines show it.
pub struct Minutes(Timestamp);

impl fmt::Display for Minutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, _) = self.0.parts();
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}")
    }
}

/// Year, month, day of the proleptic Gregorian calendar for a count of days
/// since 1970-01-01 (Howard Hinnant's days-to-civil algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (era * 400 + yoe + i64::from(m <= 2), m, d)
}

/// Bad input is echoed in errors; this keeps the echo to 40 characters.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Removes C0 controls (except TAB), DEL and C1 controls, so that no
/// terminal escape or forged line reaches another user. Borrows when there
/// is nothing to remove, which is the common case.
pub fn strip_controls(s: &str) -> Cow<'_, str> {
    // 0xC2 leads the UTF-8 encoding of U+0080..=U+00BF, which holds C1.
    let suspect = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f || b == 0xc2;
    if !s.bytes().any(suspect) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().filter(|&c| !is_control(c)).collect())
}

fn is_control(c: char) -> bool {
    c != '\t' && (c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c))
}

/// A user's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Online,
    Away,
    Busy,
    /// A registered user nobody is logged in as; never set by a user.
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }

    /// Parses a status word, ignoring case.
    pub fn parse(word: &str) -> Option<Status> {
        [Status::Online, Status::Away, Status::Busy]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(word))
    }
}

/// What an account may do. Guests (unregistered names) are always `User`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    #[default]
    User,
    Moderator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role word, ignoring case.
    pub fn parse(word: &str) -> Option<Role> {
        [Role::User, Role::Moderator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(word))
    }

    /// Moderators and admins may moderate.
    pub fn moderates(self) -> bool {
        self >= Role::Moderator
    }
}

/// One line from a client, understood. Borrows from the line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A plain line: a message to the room, or the name while none is chosen.
    Say(&'a str),
    Nick(&'a str),
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Join(&'a str),
    Rooms,
    Who,
    Users,
    Help,
    Status {
        status: Status,
        note: Option<&'a str>,
    },
    Quit(Option<&'a str>),
    /// JSON mode's explicit handshake: a name, the room to enter (`None`
    /// for the lobby) and the password if the name is registered.
    Connect {
        name: &'a str,
        room: Option<&'a str>,
        password: Option<&'a str>,
        /// A session token instead of the password.
        token: Option<&'a str>,
        /// The last message seen in `room`, to resume after it.
        since: Option<Since<'a>>,
    },
    /// JSON mode's `join` with `since`: enter `room`, resuming after it.
    JoinSince {
        room: &'a str,
        since: Since<'a>,
    },
    /// JSON mode's `history` with `before`: `count` messages before it.
    HistoryBefore {
        count: usize,
        before: u64,
    },
    /// End the session tokens of the user's account.
    Logout,
    /// The last N recorded messages of the user's room.
    History(usize),
    /// Register the current name with this password (exactly as sent).
    Register(&'a str),
    Passwd {
        old: &'a str,
        new: &'a str,
    },
    /// Moderation: send NAME to the lobby (out, from the lobby).
    Kick {
        name: &'a str,
        reason: Option<&'a str>,
    },
    /// Refuse NAME's messages, for `secs` seconds or until lifted.
    Mute {
        name: &'a str,
        secs: Option<u64>,
        reason: Option<&'a str>,
    },
    Unmute(&'a str),
    /// Refuse a name, an address or an address range.
    Ban {
        target: &'a str,
        secs: Option<u64>,
        reason: Option<&'a str>,
    },
    Unban(&'a str),
    Bans,
    /// Without text: show the room's topic; with text: set it.
    Topic(Option<&'a str>),
    /// Only moderators speak in the room (`true`) or everyone (`false`).
    Moderate(bool),
    /// Admins: a notice to every connected user.
    Wall(&'a str),
    Whois(&'a str),
    /// Admins: set the role of a registered name.
    SetRole {
        name: &'a str,
        role: Role,
    },
}

/// The last message a client saw in a room (`seq`), and the lineage of
/// the history it was told (`epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Since<'a> {
    pub seq: u64,
    pub epoch: &'a str,
}

/// Why a connection ends. The room hears this as the reason of a
/// `disconnect` (or `quit`), and the close log line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Quit,
    HandshakeTimeout,
    PeerClosed,
    Reset,
    NetworkError,
    TooSlow,
    Shutdown,
    /// The same account logged in from another connection.
    Replaced,
    /// Three wrong passwords.
    WrongPassword,
    /// The TLS handshake or a TLS record failed.
    TlsFailed,
    /// The TLS handshake did not end within the handshake timeout.
    TlsTimeout,
    /// A plain connection from outside `--allow-plain` under
    /// `--require-tls`.
    PlainRefused,
    /// An HTTP request was answered (the answer ends the connection).
    Http,
    /// A WebSocket frame broke the protocol.
    WebSocketError,
    /// Kicked from the lobby by a moderator.
    Kicked,
    /// Banned by a moderator, or connecting from a banned address.
    Banned,
    /// More connections from its address than `--max-per-ip`.
    TooManyFromAddress,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Quit => "quit",
            CloseReason::HandshakeTimeout => "no name chosen in time",
            CloseReason::PeerClosed => "connection closed",
            CloseReason::Reset => "connection reset",
            CloseReason::NetworkError => "network error",
            CloseReason::TooSlow => "too slow, output limit exceeded",
            CloseReason::Shutdown => "server shutdown",
            CloseReason::Replaced => "logged in from another connection",
            CloseReason::WrongPassword => "wrong password",
            CloseReason::TlsFailed => "TLS failed",
            CloseReason::TlsTimeout => "TLS handshake not completed in time",
            CloseReason::PlainRefused => "plain text refused, TLS required",
            CloseReason::Http => "HTTP request answered",
            CloseReason::WebSocketError => "WebSocket protocol error",
            CloseReason::Kicked => "kicked",
            CloseReason::Banned => "banned",
            CloseReason::TooManyFromAddress => "too many connections from one address",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invalid line or command. The connection stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    LineTooLong {
        max: usize,
    },
    InvalidUtf8,
    UnknownCommand(String),
    /// A known command with missing or malformed arguments; holds the usage.
    Usage(&'static str),
    NameInvalid(String),
    NameTaken(String),
    RoomInvalid(String),
    NoSuchUser(String),
    NoteTooLong,
    /// A command other than a name, `/help` or `/quit` before a name is chosen.
    NotNamed,
    HandshakeTimeout {
        secs: u64,
    },
    /// JSON mode: the line is not a JSON object; holds the parser's reason.
    BadJson(String),
    /// JSON mode: a `type` this server does not know.
    UnknownType(String),
    /// JSON mode: the object's fields are missing or of the wrong kind.
    BadPayload(String),
    /// JSON mode: a request other than `connect` before `connect`.
    NotConnected,
    /// JSON mode: a second `connect`.
    AlreadyConnected,
    /// A registered name asked for without its password (JSON mode).
    PasswordRequired(String),
    WrongPassword(String),
    AlreadyRegistered(String),
    /// `/passwd` from a user who does not hold a registered name.
    NotRegistered(String),
    PasswordTooShort,
    PasswordTooLong,
    /// Too many password checks are waiting, or the database failed.
    ServerBusy,
    /// A session token that does not work (expired, revoked, forged).
    TokenRefused(String),
    /// Not allowed for this user; holds why.
    Forbidden(String),
    /// A room message in a moderated room from a user who does not moderate.
    Moderated(String),
    /// The user's messages are refused until then (or until lifted).
    Muted {
        until: Option<Timestamp>,
    },
    /// The connection's address is banned.
    AddressBanned {
        until: Option<Timestamp>,
    },
    /// The name is banned.
    NameBanned {
        name: String,
        until: Option<Timestamp>,
    },
    /// `--require-account`: guests may read but not speak.
    AccountRequired,
    /// `--registration closed`.
    RegistrationClosed,
    /// `--register-rate` reached for the address.
    TooManyRegistrations {
        minutes: u64,
    },
    /// `--max-per-ip` reached for the address.
    TooManyConnections,
    /// `/unmute` or `/unban` of someone who is not; holds what to say.
    NotSanctioned(String),
    /// A topic over `MAX_TOPIC_CHARS`.
    TopicTooLong,
}

impl ProtoError {
    /// The machine-readable code, as JSON mode spells it.
    pub fn code(&self) -> &'static str {
        match self {
            ProtoError::LineTooLong { .. } => "line_too_long",
            ProtoError::InvalidUtf8 => "invalid_utf8",
            ProtoError::UnknownCommand(_) => "unknown_command",
            ProtoError::Usage(_)
            | ProtoError::NoteTooLong
            | ProtoError::BadPayload(_)
            | ProtoError::AlreadyConnected
            | ProtoError::NotRegistered(_)
            | ProtoError::PasswordTooLong => "bad_payload",
            ProtoError::PasswordRequired(_)
            | ProtoError::WrongPassword(_)
            | ProtoError::TokenRefused(_) => "bad_password",
            ProtoError::AlreadyRegistered(_) => "already_registered",
            ProtoError::PasswordTooShort => "password_too_short",
            ProtoError::ServerBusy => "server_busy",
            ProtoError::Forbidden(_) | ProtoError::Moderated(_) => "forbidden",
            ProtoError::Muted { .. } => "muted",
            ProtoError::AddressBanned { .. } | ProtoError::NameBanned { .. } => "banned",
            ProtoError::AccountRequired => "account_required",
            ProtoError::RegistrationClosed => "registration_closed",
            ProtoError::TooManyRegistrations { .. } => "too_many_registrations",
            ProtoError::TooManyConnections => "too_many_connections",
            ProtoError::NotSanctioned(_) | ProtoError::TopicTooLong => "bad_payload",
            ProtoError::BadJson(_) => "bad_json",
            ProtoError::UnknownType(_) => "unknown_type",
            ProtoError::NameInvalid(_) => "name_invalid",
            ProtoError::NameTaken(_) => "name_taken",
            ProtoError::RoomInvalid(_) => "room_invalid",
            ProtoError::NoSuchUser(_) => "no_such_user",
            ProtoError::NotNamed
            | ProtoError::HandshakeTimeout { .. }
            | ProtoError::NotConnected => "not_connected",
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::LineTooLong { max } => {
                write!(f, "line too long (over {max} bytes), discarded")
            }
            ProtoError::InvalidUtf8 => f.write_str("line is not valid UTF-8, discarded"),
            ProtoError::UnknownCommand(cmd) => {
                write!(f, "unknown command /{cmd}, /help lists the commands")
            }
            ProtoError::Usage(usage) => write!(f, "usage: {usage}"),
            ProtoError::NameInvalid(name) => write!(
                f,
                "invalid name \"{name}\": use 1-{MAX_NAME_LEN} letters, digits, _ or -"
            ),
            ProtoError::NameTaken(name) => write!(f, "name \"{name}\" is taken, choose another"),
            ProtoError::RoomInvalid(room) => write!(
                f,
                "invalid room \"{room}\": use 1-{MAX_NAME_LEN} letters, digits, _ or -"
            ),
            ProtoError::NoSuchUser(name) => write!(f, "no such user: {name}"),
            ProtoError::NoteTooLong => {
                write!(f, "status note too long (over {MAX_NOTE_CHARS} characters)")
            }
            ProtoError::NotNamed => f.write_str("choose a name first (/help for help)"),
            ProtoError::HandshakeTimeout { secs } => write!(f, "no name chosen within {secs} s"),
            ProtoError::BadJson(why) => write!(f, "not a JSON object: {why}"),
            ProtoError::UnknownType(t) => write!(f, "unknown type \"{t}\""),
            ProtoError::BadPayload(why) => f.write_str(why),
            ProtoError::NotConnected => f.write_str("send connect first"),
            ProtoError::AlreadyConnected => f.write_str("already connected"),
            ProtoError::PasswordRequired(name) => {
                write!(f, "{name} is registered: a password is needed")
            }
            ProtoError::WrongPassword(name) => write!(f, "wrong password for {name}"),
            ProtoError::TokenRefused(name) => {
                write!(
                    f,
                    "the session token for {name} no longer works: log in again"
                )
            }
            ProtoError::AlreadyRegistered(name) => write!(f, "{name} is already registered"),
            ProtoError::NotRegistered(name) => {
                write!(f, "{name} is not registered (/register PASSWORD)")
            }
            ProtoError::PasswordTooShort => write!(
                f,
                "password too short: use {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"
            ),
            ProtoError::PasswordTooLong => write!(
                f,
                "password too long: use {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters"
            ),
            ProtoError::ServerBusy => f.write_str("server busy, try again in a moment"),
            ProtoError::Forbidden(why) => write!(f, "not allowed: {why}"),
            ProtoError::Moderated(room) => {
                write!(f, "#{room} is moderated: only moderators may speak")
            }
            ProtoError::Muted { until } => write!(f, "you are muted{}", Until(*until)),
            ProtoError::AddressBanned { until } => {
                write!(f, "you are banned from this server{}", Until(*until))
            }
            ProtoError::NameBanned { name, until } => {
                write!(f, "{name} is banned{}, choose another name", Until(*until))
            }
            ProtoError::AccountRequired => f.write_str("register or log in to speak"),
            ProtoError::RegistrationClosed => {
                f.write_str("registration is closed: an operator creates accounts")
            }
            ProtoError::TooManyRegistrations { minutes } => write!(
                f,
                "too many registrations from your address: try again in {minutes} {}",
                if *minutes == 1 { "minute" } else { "minutes" }
            ),
            ProtoError::TooManyConnections => f.write_str("too many connections from your address"),
            ProtoError::NotSanctioned(what) => f.write_str(what),
            ProtoError::TopicTooLong => {
                write!(f, "topic too long (over {MAX_TOPIC_CHARS} characters)")
            }
        }
    }
}

impl std::error::Error for ProtoError {}

/// ` until 2026-12-06T10:00:00Z`, or nothing for `None`.
pub struct Until(pub Option<Timestamp>);

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, " until {t}"),
            None => Ok(()),
        }
    }
}

/// A user as listings show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: Name,
    pub status: Status,
    pub note: Option<Name>,
    pub role: Role,
}

/// A room as `/rooms` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomInfo {
    pub name: Name,
    pub users: usize,
}

/// A room message as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub sender: Name,
    pub text: Arc<str>,
    pub ts: Timestamp,
    /// Its number in the room: grows with every message recorded there.
    pub seq: u64,
}

/// What happened to a user, told to their room and to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    Join,
    Leave,
    Quit { reason: Option<Box<str>> },
    Nick { old: Name },
    Status { status: Status, note: Option<Name> },
    Disconnect { reason: CloseReason },
}

/// A notice about `name` in `room`; `you` is set on the copy sent to the
/// user who acted, which text mode words in the second person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub name: Name,
    pub room: Name,
    pub you: bool,
    /// On the mover's own `Join`: the topic of the room entered.
    pub topic: Option<Name>,
}

/// A moderation event: what was done, to whom, by whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModKind {
    /// Sent from `room` to the lobby (or out, from the lobby).
    Kick {
        room: Name,
    },
    Mute {
        until: Option<Timestamp>,
    },
    Unmute,
    Ban {
        until: Option<Timestamp>,
    },
    Unban,
    Topic {
        room: Name,
        topic: Name,
    },
    Moderate {
        room: Name,
        on: bool,
    },
    /// A notice to everyone; `room` is the recipient's room.
    Wall {
        room: Name,
        text: Name,
    },
    Role {
        role: Role,
    },
}

/// A moderation notification. `name` is who it is about (the target as
/// given for bans; `None` for topic, moderate and wall); `you` is set on
/// the copy sent to that user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModEvent {
    pub kind: ModKind,
    pub name: Option<Name>,
    pub by: Name,
    pub reason: Option<Name>,
    pub you: bool,
}

/// A ban as `/bans` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo {
    pub target: Name,
    pub until: Option<Timestamp>,
    pub by: Name,
    pub reason: Option<Name>,
}

/// What `/whois` tells. `address` and `since` only for moderators, and
/// only of a connected user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoisInfo {
    pub name: Name,
    pub status: Status,
    pub note: Option<Name>,
    pub room: Option<Name>,
    pub registered: bool,
    pub role: Role,
    pub address: Option<std::net::IpAddr>,
    pub since: Option<Timestamp>,
}

/// Something the server tells a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Sent on connect, before the mode is known.
    Welcome,
    /// The question again, after a bad or taken name.
    AskName,
    /// A name was accepted and the user entered `room`.
    Connected {
        name: Name,
        room: Name,
        users: usize,
        topic: Option<Name>,
        /// The history's lineage (JSON `epoch`).
        epoch: Name,
        /// A session token, for a registered user (JSON only).
        token: Option<Box<str>>,
    },
    Message {
        from: Name,
        room: Name,
        /// Shared with the history, which records the same text.
        text: Arc<str>,
        ts: Timestamp,
        /// Its number in the room, when it is recorded.
        seq: Option<u64>,
    },
    Direct {
        from: Name,
        text: Box<str>,
        ts: Timestamp,
    },
    Notice(Notice),
    /// An answer to a request that changes nothing.
    Info(Info),
    Who {
        room: Name,
        users: Vec<UserInfo>,
    },
    Users {
        users: Vec<UserInfo>,
    },
    Rooms {
        rooms: Vec<RoomInfo>,
    },
    Help {
        named: bool,
    },
    /// Recorded messages of `room`, oldest first: on entering it, or as
    /// the answer to `/history` (`listing`).
    History {
        room: Name,
        messages: Vec<Recorded>,
        listing: bool,
        /// More were asked for (missed since a `since`) than are sent, or
        /// the `since` was of another epoch.
        truncated: bool,
    },
    /// The name is registered: the next text line is its password.
    PasswordPrompt {
        name: Name,
    },
    Shutdown,
    Error(ProtoError),
    Moderation(ModEvent),
    /// The answer to `/topic` without text.
    Topic {
        room: Name,
        topic: Option<Name>,
    },
    Bans {
        bans: Vec<BanInfo>,
    },
    Whois(WhoisInfo),
}

/// Answers to requests that change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    /// `/join` to the room the user is in.
    AlreadyInRoom { name: Name, room: Name },
    /// `/nick` to the user's own name.
    AlreadyNamed { name: Name },
    /// `/quit` before a name was chosen.
    Goodbye,
    /// `/register` succeeded; JSON carries the session token.
    Registered { name: Name, token: Option<Box<str>> },
    /// `logout`: the account's tokens no longer work.
    LoggedOut,
    /// `/passwd` succeeded.
    PasswordChanged { name: Name },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("alice"));
        assert!(valid_name("A-b_9"));
        assert!(valid_name(&"x".repeat(32)));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(!valid_name(""));
        assert!(!valid_name("al ice"));
        assert!(!valid_name("#alice"));
        assert!(!valid_name("älice"));
    }

    #[test]
    fn controls_are_stripped_and_clean_text_is_borrowed() {
        assert!(matches!(strip_controls("plain\ttext é"), Cow::Borrowed(_)));
        assert_eq!(strip_controls("a\x1b[31mred\x07\x7f"), "a[31mred");
        assert_eq!(strip_controls("c1:\u{85}\u{9b}2J end"), "c1:2J end");
        // U+00A0..U+00BF share the 0xC2 lead byte and are kept.
        assert_eq!(strip_controls("nbsp\u{a0}\u{bf}\u{85}"), "nbsp\u{a0}\u{bf}");
        assert_eq!(strip_controls("cr\rlf\n"), "crlf");
    }
}
