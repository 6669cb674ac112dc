//! The vocabulary of the wire: commands (client to server), events (server
//! to client), protocol errors, and the text-mode codec. Knows nothing of
//! sockets or of who receives what.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

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
    },
    /// The last N recorded messages of the user's room.
    History(usize),
    /// Register the current name with this password (exactly as sent).
    Register(&'a str),
    Passwd {
        old: &'a str,
        new: &'a str,
    },
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
            ProtoError::PasswordRequired(_) | ProtoError::WrongPassword(_) => "bad_password",
            ProtoError::AlreadyRegistered(_) => "already_registered",
            ProtoError::PasswordTooShort => "password_too_short",
            ProtoError::ServerBusy => "server_busy",
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
        }
    }
}

impl std::error::Error for ProtoError {}

/// Usage strings, shared by the parser and `/help`.
pub const USAGE_NICK: &str = "/nick NAME";
const USAGE_MSG: &str = "/msg NAME TEXT (or @NAME TEXT)";
const USAGE_JOIN: &str = "/join ROOM";
const USAGE_STATUS: &str = "/status online|away|busy [NOTE]";
const USAGE_HISTORY: &str = "/history [N] (N from 1 to 1000)";
const USAGE_REGISTER: &str = "/register PASSWORD";
const USAGE_PASSWD: &str = "/passwd OLD NEW";

/// `/register` and `/passwd` read their passwords from the line as it came,
/// before control characters are removed: a password is taken exactly as
/// sent. `None` if `raw` is neither command.
pub fn parse_secret(raw: &str) -> Option<Result<Command<'_>, ProtoError>> {
    let rest = raw.strip_prefix('/')?;
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (word, args) = rest.split_at(end);
    // One separator is dropped; everything after it is the argument.
    let args = args.chars().next().map_or(args, |c| &args[c.len_utf8()..]);
    if word.eq_ignore_ascii_case("register") {
        if args.is_empty() {
            return Some(Err(ProtoError::Usage(USAGE_REGISTER)));
        }
        return Some(Ok(Command::Register(args)));
    }
    if word.eq_ignore_ascii_case("passwd") {
        // OLD is one word; NEW is the rest after one space, spaces and all.
        return Some(match args.split_once(' ') {
            Some((old, new)) if !old.is_empty() && !new.is_empty() => {
                Ok(Command::Passwd { old, new })
            }
            _ => Err(ProtoError::Usage(USAGE_PASSWD)),
        });
    }
    None
}

/// Parses one text-mode line. The line has had its terminator and control
/// characters removed and is not blank.
pub fn parse_text(line: &str) -> Result<Command<'_>, ProtoError> {
    if let Some(literal) = line.strip_prefix("//") {
        // `//text` is the message `/text`: keep one slash.
        return Ok(Command::Say(&line[line.len() - literal.len() - 1..]));
    }
    if let Some(rest) = line.strip_prefix('/') {
        return parse_slash(rest);
    }
    if let Some(rest) = line.strip_prefix('@') {
        let end = rest
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (to, text) = (&rest[..end], rest[end..].strip_prefix(':'));
        let text = text.unwrap_or(&rest[end..]).trim_start();
        if to.is_empty() || text.trim().is_empty() {
            return Err(ProtoError::Usage(USAGE_MSG));
        }
        return Ok(Command::Msg { to, text });
    }
    Ok(Command::Say(line))
}

/// Splits off the first whitespace-separated word; the rest keeps its inner
/// and trailing spaces.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// One argument word, or a usage error when it is missing or not alone.
fn one_word<'a>(args: &'a str, usage: &'static str) -> Result<&'a str, ProtoError> {
    let (word, rest) = split_word(args);
    if word.is_empty() || !rest.trim().is_empty() {
        return Err(ProtoError::Usage(usage));
    }
    Ok(word)
}

fn non_blank(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn parse_slash(rest: &str) -> Result<Command<'_>, ProtoError> {
    let (word, args) = split_word(rest);
    let status = |status| {
        Ok(Command::Status {
            status,
            note: non_blank(args),
        })
    };
    match word.to_ascii_lowercase().as_str() {
        "help" => Ok(Command::Help),
        "nick" => one_word(args, USAGE_NICK).map(Command::Nick),
        "msg" => {
            let (to, text) = split_word(args);
            if to.is_empty() || text.trim().is_empty() {
                return Err(ProtoError::Usage(USAGE_MSG));
            }
            Ok(Command::Msg { to, text })
        }
        "join" => one_word(args, USAGE_JOIN).map(Command::Join),
        "rooms" => Ok(Command::Rooms),
        "who" => Ok(Command::Who),
        "users" => Ok(Command::Users),
        "status" => {
            let (word, note) = split_word(args);
            match Status::parse(word) {
                Some(status) => Ok(Command::Status {
                    status,
                    note: non_blank(note),
                }),
                None => Err(ProtoError::Usage(USAGE_STATUS)),
            }
        }
        "away" => status(Status::Away),
        "busy" => status(Status::Busy),
        "back" => Ok(Command::Status {
            status: Status::Online,
            note: None,
        }),
        "quit" => Ok(Command::Quit(non_blank(args))),
        "history" => match non_blank(args) {
            None => Ok(Command::History(DEFAULT_HISTORY)),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_HISTORY).contains(&n) => Ok(Command::History(n)),
                _ => Err(ProtoError::Usage(USAGE_HISTORY)),
            },
        },
        // Reached only when the line had no argument at all.
        "register" => Err(ProtoError::Usage(USAGE_REGISTER)),
        "passwd" => Err(ProtoError::Usage(USAGE_PASSWD)),
        _ => Err(ProtoError::UnknownCommand(word.to_string())),
    }
}

/// A user as listings show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: Name,
    pub status: Status,
    pub note: Option<Name>,
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
    },
    Message {
        from: Name,
        room: Name,
        /// Shared with the history, which records the same text.
        text: Arc<str>,
        ts: Timestamp,
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
    },
    /// The name is registered: the next text line is its password.
    PasswordPrompt {
        name: Name,
    },
    Shutdown,
    Error(ProtoError),
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
    /// `/register` succeeded.
    Registered { name: Name },
    /// `/passwd` succeeded.
    PasswordChanged { name: Name },
}

/// The lines of `/help`: command, then what it does.
const HELP: &[(&str, &str)] = &[
    (
        "TEXT",
        "say TEXT to your room (//TEXT sends a line starting with /)",
    ),
    (USAGE_MSG, "send a direct message"),
    (USAGE_NICK, "change your name"),
    (
        "/join ROOM",
        "leave your room and enter ROOM, creating it if needed",
    ),
    ("/rooms", "list rooms and their sizes"),
    ("/who", "list the members of your room"),
    ("/users", "list every user"),
    (
        USAGE_STATUS,
        "set your status (also /away, /busy [NOTE], /back)",
    ),
    (USAGE_HISTORY, "show recent messages of your room"),
    (USAGE_REGISTER, "register your name (8-256 characters)"),
    (USAGE_PASSWD, "change your password"),
    ("/quit [REASON]", "leave the chat"),
    ("/help", "this list"),
];

/// Appends the text-mode line(s) for `event`, each ending in LF.
pub fn encode_text(event: &Event, buf: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail, so the results below are ignored.
    let mut line = |args: fmt::Arguments<'_>| {
        let _ = buf.write_fmt(args);
        buf.push(b'\n');
    };
    match event {
        Event::Message { from, text, .. } => {
            // The hot path of every broadcast: no formatting machinery.
            buf.reserve(from.len() + text.len() + 4);
            buf.push(b'<');
            buf.extend_from_slice(from.as_bytes());
            buf.extend_from_slice(b"> ");
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
        }
        Event::Welcome => line(format_args!(
            "* welcome to chatd; choose a name: 1-{MAX_NAME_LEN} letters, digits, _ or -"
        )),
        Event::AskName => line(format_args!("* choose a name:")),
        Event::Connected { name, room, users } => line(format_args!(
            "* you joined #{room} as {name} ({users} {} here); /help lists the commands",
            plural(*users, "user", "users")
        )),
        Event::Direct { from, text, .. } => line(format_args!("*{from}* {text}")),
        Event::Notice(n) => encode_notice(n, &mut line),
        Event::Info(Info::AlreadyInRoom { room, .. }) => {
            line(format_args!("* you are already in #{room}"))
        }
        Event::Info(Info::AlreadyNamed { name }) => {
            line(format_args!("* you are already known as {name}"))
        }
        Event::Info(Info::Goodbye) => line(format_args!("* goodbye")),
        Event::Info(Info::Registered { name }) => line(format_args!(
            "* {name} is now registered: log in with this password from now on"
        )),
        Event::Info(Info::PasswordChanged { name }) => {
            line(format_args!("* password changed for {name}"))
        }
        Event::History {
            room,
            messages,
            listing,
        } => {
            if *listing {
                let n = messages.len();
                let what = plural(n, "message", "messages");
                line(format_args!("* history of #{room}: {n} {what}"));
            }
            for m in messages {
                line(format_args!(
                    "[{}] <{}> {}",
                    m.ts.minutes(),
                    m.sender,
                    m.text
                ));
            }
            if *listing {
                line(format_args!("* end of /history"));
            }
        }
        Event::PasswordPrompt { name } => line(format_args!("* password for {name}:")),
        Event::Who { room, users } => {
            line(format_args!("* users in #{room}: {}", users.len()));
            for u in users {
                encode_user(u, &mut line);
            }
            line(format_args!("* end of /who"));
        }
        Event::Users { users } => {
            line(format_args!("* users: {}", users.len()));
            for u in users {
                encode_user(u, &mut line);
            }
            line(format_args!("* end of /users"));
        }
        Event::Rooms { rooms } => {
            line(format_args!("* rooms: {}", rooms.len()));
            for r in rooms {
                line(format_args!("*   #{} {}", r.name, r.users));
            }
            line(format_args!("* end of /rooms"));
        }
        Event::Help { named } => {
            if !*named {
                line(format_args!(
                    "* first choose a name: type it alone on a line (or /nick NAME)"
                ));
            }
            for (cmd, what) in HELP {
                line(format_args!("*   {cmd:<34} {what}"));
            }
            line(format_args!("* end of /help"));
        }
        Event::Shutdown => line(format_args!("* server is shutting down")),
        Event::Error(e) => line(format_args!("! {e}")),
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn encode_user(u: &UserInfo, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    match &u.note {
        Some(note) => line(format_args!("*   {} {}: {note}", u.name, u.status.as_str())),
        None => line(format_args!("*   {} {}", u.name, u.status.as_str())),
    }
}

fn encode_notice(n: &Notice, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    let (who, verb_is, verb_has) = if n.you {
        ("you", "are", "have")
    } else {
        (&*n.name, "is", "has")
    };
    let room = &n.room;
    match &n.kind {
        NoticeKind::Join if n.you => line(format_args!("* you joined #{room}")),
        NoticeKind::Join => line(format_args!("* {who} has joined #{room}")),
        NoticeKind::Leave if n.you => line(format_args!("* you left #{room}")),
        NoticeKind::Leave => line(format_args!("* {who} has left #{room}")),
        NoticeKind::Quit { reason } => match (n.you, reason) {
            (true, Some(r)) => line(format_args!("* goodbye ({r})")),
            (true, None) => line(format_args!("* goodbye")),
            (false, Some(r)) => line(format_args!("* {who} has quit ({r})")),
            (false, None) => line(format_args!("* {who} has quit")),
        },
        NoticeKind::Nick { .. } if n.you => line(format_args!("* you are now known as {}", n.name)),
        NoticeKind::Nick { old } => line(format_args!("* {old} is now known as {}", n.name)),
        NoticeKind::Status { status, note } => match note {
            Some(note) => line(format_args!(
                "* {who} {verb_is} now {} ({note})",
                status.as_str()
            )),
            None => line(format_args!("* {who} {verb_is} now {}", status.as_str())),
        },
        NoticeKind::Disconnect { reason } => {
            line(format_args!("* {who} {verb_has} disconnected ({reason})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(event: &Event) -> String {
        let mut buf = Vec::new();
        encode_text(event, &mut buf);
        String::from_utf8(buf).unwrap()
    }

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

    #[test]
    fn plain_lines_are_messages_kept_as_sent() {
        assert_eq!(parse_text("hello  all  "), Ok(Command::Say("hello  all  ")));
        assert_eq!(parse_text("  indented"), Ok(Command::Say("  indented")));
        assert_eq!(parse_text("//quit now"), Ok(Command::Say("/quit now")));
        assert_eq!(parse_text(" /quit"), Ok(Command::Say(" /quit")));
    }

    #[test]
    fn direct_messages_in_three_spellings() {
        let dm = Ok(Command::Msg {
            to: "bob",
            text: "hi there ",
        });
        assert_eq!(parse_text("/msg bob hi there "), dm);
        assert_eq!(parse_text("/MSG  bob   hi there "), dm);
        assert_eq!(parse_text("@bob hi there "), dm);
        assert_eq!(parse_text("@bob:hi there "), dm);
        assert_eq!(parse_text("@bob: hi there "), dm);
        for bad in ["/msg bob", "/msg", "@bob", "@bob:  ", "@ hi", "@:hi"] {
            assert_eq!(parse_text(bad), Err(ProtoError::Usage(USAGE_MSG)), "{bad}");
        }
    }

    #[test]
    fn commands_ignore_case_and_check_arguments() {
        assert_eq!(parse_text("/NICK bob"), Ok(Command::Nick("bob")));
        assert_eq!(parse_text("/nick"), Err(ProtoError::Usage(USAGE_NICK)));
        assert_eq!(parse_text("/nick a b"), Err(ProtoError::Usage(USAGE_NICK)));
        assert_eq!(parse_text("/join #rust"), Ok(Command::Join("#rust")));
        assert_eq!(parse_text("/join"), Err(ProtoError::Usage(USAGE_JOIN)));
        assert_eq!(parse_text("/rooms"), Ok(Command::Rooms));
        assert_eq!(parse_text("/Who"), Ok(Command::Who));
        assert_eq!(parse_text("/users"), Ok(Command::Users));
        assert_eq!(parse_text("/help me"), Ok(Command::Help));
        assert_eq!(parse_text("/quit"), Ok(Command::Quit(None)));
        assert_eq!(
            parse_text("/quit  gone fishing "),
            Ok(Command::Quit(Some("gone fishing")))
        );
        assert_eq!(
            parse_text("/frobnicate x"),
            Err(ProtoError::UnknownCommand("frobnicate".into()))
        );
        assert_eq!(parse_text("/"), Err(ProtoError::UnknownCommand("".into())));
    }

    #[test]
    fn account_commands_take_passwords_exactly_as_sent() {
        let secret = |l| parse_secret(l);
        assert_eq!(secret("hello"), None);
        assert_eq!(secret("/nick bob"), None);
        assert_eq!(
            secret("/register  pass word\t"),
            Some(Ok(Command::Register(" pass word\t")))
        );
        assert_eq!(
            secret("/REGISTER x\u{1b}yz"),
            Some(Ok(Command::Register("x\u{1b}yz")))
        );
        assert_eq!(
            secret("/register"),
            Some(Err(ProtoError::Usage(USAGE_REGISTER)))
        );
        assert_eq!(
            secret("/passwd old1 new one "),
            Some(Ok(Command::Passwd {
                old: "old1",
                new: "new one "
            }))
        );
        for bad in ["/passwd", "/passwd onlyone", "/passwd  leading"] {
            assert_eq!(
                secret(bad),
                Some(Err(ProtoError::Usage(USAGE_PASSWD))),
                "{bad}"
            );
        }
        assert_eq!(check_password("1234567"), Err(ProtoError::PasswordTooShort));
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(check_password(&"é".repeat(256)), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(257)).map_err(|e| e.code()),
            Err("bad_payload")
        );
    }

    #[test]
    fn history_takes_a_count_from_1_to_1000() {
        assert_eq!(parse_text("/history"), Ok(Command::History(20)));
        assert_eq!(parse_text("/HISTORY 1000"), Ok(Command::History(1000)));
        for bad in ["/history 0", "/history 1001", "/history x", "/history 5 6"] {
            assert_eq!(
                parse_text(bad),
                Err(ProtoError::Usage(USAGE_HISTORY)),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_and_its_short_forms() {
        let st = |status, note| Ok(Command::Status { status, note });
        assert_eq!(
            parse_text("/status BUSY in a meeting"),
            st(Status::Busy, Some("in a meeting"))
        );
        assert_eq!(parse_text("/status online"), st(Status::Online, None));
        assert_eq!(parse_text("/away lunch"), st(Status::Away, Some("lunch")));
        assert_eq!(parse_text("/busy"), st(Status::Busy, None));
        assert_eq!(parse_text("/back"), st(Status::Online, None));
        assert_eq!(
            parse_text("/status sleeping"),
            Err(ProtoError::Usage(USAGE_STATUS))
        );
        assert_eq!(parse_text("/status"), Err(ProtoError::Usage(USAGE_STATUS)));
    }

    #[test]
    fn text_encoding_of_each_prefix() {
        let n: Name = "alice".into();
        let room: Name = "lobby".into();
        let msg = Event::Message {
            from: n.clone(),
            room: room.clone(),
            text: "hi all".into(),
            ts: Timestamp(0),
        };
        assert_eq!(text(&msg), "<alice> hi all\n");
        assert_eq!(
            text(&Event::Direct {
                from: n.clone(),
                text: "psst".into(),
                ts: Timestamp(0),
            }),
            "*alice* psst\n"
        );
        let notice = |kind, you| {
            Event::Notice(Notice {
                kind,
                name: "bob".into(),
                room: room.clone(),
                you,
            })
        };
        assert_eq!(
            text(&notice(NoticeKind::Join, false)),
            "* bob has joined #lobby\n"
        );
        assert_eq!(
            text(&notice(NoticeKind::Join, true)),
            "* you joined #lobby\n"
        );
        let nick = NoticeKind::Nick { old: n.clone() };
        assert_eq!(
            text(&notice(nick.clone(), false)),
            "* alice is now known as bob\n"
        );
        assert_eq!(text(&notice(nick, true)), "* you are now known as bob\n");
        let quit = NoticeKind::Quit {
            reason: Some("bye".into()),
        };
        assert_eq!(text(&notice(quit, false)), "* bob has quit (bye)\n");
        let away = NoticeKind::Status {
            status: Status::Away,
            note: Some("lunch".into()),
        };
        assert_eq!(
            text(&notice(away.clone(), false)),
            "* bob is now away (lunch)\n"
        );
        assert_eq!(text(&notice(away, true)), "* you are now away (lunch)\n");
        let gone = NoticeKind::Disconnect {
            reason: CloseReason::Reset,
        };
        assert_eq!(
            text(&notice(gone, false)),
            "* bob has disconnected (connection reset)\n"
        );
        let taken = Event::Error(ProtoError::NameTaken("bob".into()));
        assert_eq!(text(&taken), "! name \"bob\" is taken, choose another\n");
    }

    #[test]
    fn listings_end_with_an_end_line() {
        let users = vec![
            UserInfo {
                name: "alice".into(),
                status: Status::Online,
                note: None,
            },
            UserInfo {
                name: "bob".into(),
                status: Status::Busy,
                note: Some("call".into()),
            },
        ];
        let who = text(&Event::Who {
            room: "lobby".into(),
            users,
        });
        assert_eq!(
            who,
            "* users in #lobby: 2\n*   alice online\n*   bob busy: call\n* end of /who\n"
        );
        let rooms = text(&Event::Rooms {
            rooms: vec![RoomInfo {
                name: "rust".into(),
                users: 3,
            }],
        });
        assert_eq!(rooms, "* rooms: 1\n*   #rust 3\n* end of /rooms\n");
        let help = text(&Event::Help { named: true });
        assert!(help.lines().all(|l| l.starts_with("* ")));
        assert!(help.ends_with("* end of /help\n"));
    }
}
