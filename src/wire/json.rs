//! The JSON-lines codec: one object per line, both ways. Requests decode to
//! the same `Command`s as text lines; events encode to the objects JSON
//! clients read. The serde wire structs are private: the rest of the crate
//! sees only `decode`, `Request`, `Rejected` and `encode`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
pub use serde_json::value::RawValue;

use crate::wire::proto::{
    BanInfo, Command, DEFAULT_HISTORY, Event, Info, MAX_HISTORY, ModEvent, ModKind, Notice,
    NoticeKind, ProtoError, Recorded, Role, RoomInfo, Since, Status, Timestamp, UserInfo,
    WhoisInfo, clip, strip_controls,
};
use crate::wire::text::MAX_SANCTION_SECS;

/// The protocol version `connect_ack` announces.
pub const VERSION: u32 = 1;

/// A request's `id`, echoed as sent (a JSON string or number).
pub type RequestId = Box<RawValue>;

/// A request that decoded: its id, if any, and what it asks.
#[derive(Debug)]
pub struct Request {
    pub id: Option<RequestId>,
    body: Body,
}

/// A line that did not decode: the one error it earns, and the request id
/// when one could be read.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<RequestId>,
    pub error: ProtoError,
}

/// Payloads after decoding, control characters already removed.
#[derive(Debug)]
enum Body {
    Connect {
        name: String,
        room: Option<String>,
        password: Option<String>,
        token: Option<String>,
        since: Option<(u64, String)>,
    },
    JoinSince {
        room: String,
        since: (u64, String),
    },
    HistoryBefore {
        count: usize,
        before: u64,
    },
    Logout,
    Message {
        text: String,
    },
    Direct {
        to: String,
        text: String,
    },
    Join {
        room: String,
    },
    Nick {
        name: String,
    },
    Status {
        status: Status,
        note: Option<String>,
    },
    Who,
    Users,
    Rooms,
    Quit {
        reason: Option<String>,
    },
    History {
        count: usize,
    },
    Register {
        password: String,
    },
    Passwd {
        old: String,
        new: String,
    },
    Kick {
        name: String,
        reason: Option<String>,
    },
    Mute {
        name: String,
        secs: Option<u64>,
        reason: Option<String>,
    },
    Unmute {
        name: String,
    },
    Ban {
        target: String,
        secs: Option<u64>,
        reason: Option<String>,
    },
    Unban {
        target: String,
    },
    Bans,
    Topic {
        text: Option<String>,
    },
    Moderate {
        on: bool,
    },
    Wall {
        text: String,
    },
    Whois {
        name: String,
    },
    SetRole {
        name: String,
        role: Role,
    },
}

impl Request {
    /// What the request asks, as the chat understands it. Message text is
    /// literal: a leading `/` is not a command here.
    pub fn command(&self) -> Command<'_> {
        match &self.body {
            Body::Connect {
                name,
                room,
                password,
                token,
                since,
            } => Command::Connect {
                name,
                room: room.as_deref(),
                password: password.as_deref(),
                token: token.as_deref(),
                since: since
                    .as_ref()
                    .map(|(seq, epoch)| Since { seq: *seq, epoch }),
            },
            Body::JoinSince {
                room,
                since: (seq, epoch),
            } => Command::JoinSince {
                room,
                since: Since { seq: *seq, epoch },
            },
            Body::HistoryBefore { count, before } => Command::HistoryBefore {
                count: *count,
                before: *before,
            },
            Body::Logout => Command::Logout,
            Body::Message { text } => Command::Say(text),
            Body::Direct { to, text } => Command::Msg { to, text },
            Body::Join { room } => Command::Join(room),
            Body::Nick { name } => Command::Nick(name),
            Body::Status { status, note } => Command::Status {
                status: *status,
                note: note.as_deref(),
            },
            Body::Who => Command::Who,
            Body::Users => Command::Users,
            Body::Rooms => Command::Rooms,
            Body::Quit { reason } => Command::Quit(reason.as_deref()),
            Body::History { count } => Command::History(*count),
            Body::Register { password } => Command::Register(password),
            Body::Passwd { old, new } => Command::Passwd { old, new },
            Body::Kick { name, reason } => Command::Kick {
                name,
                reason: reason.as_deref(),
            },
            Body::Mute { name, secs, reason } => Command::Mute {
                name,
                secs: *secs,
                reason: reason.as_deref(),
            },
            Body::Unmute { name } => Command::Unmute(name),
            Body::Ban {
                target,
                secs,
                reason,
            } => Command::Ban {
                target,
                secs: *secs,
                reason: reason.as_deref(),
            },
            Body::Unban { target } => Command::Unban(target),
            Body::Bans => Command::Bans,
            Body::Topic { text } => Command::Topic(text.as_deref()),
            Body::Moderate { on } => Command::Moderate(*on),
            Body::Wall { text } => Command::Wall(text),
            Body::Whois { name } => Command::Whois(name),
            Body::SetRole { name, role } => Command::SetRole { name, role: *role },
        }
    }
}

#[derive(Deserialize)]
struct ConnectIn {
    name: String,
    room: Option<String>,
    /// Taken exactly as sent: passwords are not cleaned.
    password: Option<String>,
    token: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
}

/// `since` needs its `epoch`.
fn since(since: Option<u64>, epoch: Option<String>) -> Result<Option<(u64, String)>, ProtoError> {
    match (since, epoch) {
        (None, _) => Ok(None),
        (Some(seq), Some(epoch)) => Ok(Some((seq, epoch))),
        (Some(_), None) => Err(ProtoError::BadPayload(
            "\"since\" needs the \"epoch\" it was told".into(),
        )),
    }
}

#[derive(Deserialize)]
struct JoinIn {
    room: String,
    since: Option<u64>,
    epoch: Option<String>,
}

#[derive(Deserialize)]
struct HistoryIn {
    count: Option<u64>,
    before: Option<u64>,
}

#[derive(Deserialize)]
struct RegisterIn {
    password: String,
}

#[derive(Deserialize)]
struct PasswdIn {
    old: String,
    new: String,
}

#[derive(Deserialize)]
struct TextIn {
    text: String,
}

#[derive(Deserialize)]
struct DirectIn {
    to: String,
    text: String,
}

#[derive(Deserialize)]
struct NameIn {
    name: String,
}

#[derive(Deserialize)]
struct StatusIn {
    status: String,
    note: Option<String>,
}

#[derive(Deserialize)]
struct QuitIn {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct KickIn {
    name: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct MuteIn {
    name: String,
    seconds: Option<u64>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct BanIn {
    target: String,
    seconds: Option<u64>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct TargetIn {
    target: String,
}

#[derive(Deserialize)]
struct TopicIn {
    text: Option<String>,
}

#[derive(Deserialize)]
struct ModerateIn {
    on: bool,
}

#[derive(Deserialize)]
struct RoleIn {
    name: String,
    role: String,
}

/// Decodes one line from a JSON-mode client. `connected` says whether it
/// has sent a successful `connect`; before that only `connect` is served.
pub fn decode(line: &str, connected: bool) -> Result<Request, Rejected> {
    // Fields are kept as raw JSON text: an id is echoed exactly as sent
    // (a number too big for 64 bits included), and each payload is parsed
    // once, straight into its own struct.
    let bad_json = |why: String| Rejected {
        id: None,
        error: ProtoError::BadJson(why),
    };
    if !line.trim_start().starts_with('{') {
        return Err(bad_json("expected an object".into()));
    }
    let envelope: EnvelopeIn<'_> =
        serde_json::from_str(line).map_err(|e| bad_json(e.to_string()))?;
    let id = match envelope.id {
        None => None,
        Some(raw)
            if raw
                .get()
                .starts_with(['"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
        {
            Some(raw.to_owned())
        }
        Some(_) => return Err(bad(None, "\"id\" must be a string or a number")),
    };
    let kind: Cow<'_, str> = match envelope.kind.map(|raw| serde_json::from_str(raw.get())) {
        Some(Ok(kind)) => kind,
        Some(Err(_)) => return Err(bad(id, "\"type\" must be a string")),
        None => return Err(bad(id, "missing \"type\"")),
    };
    let reject = |error| Rejected {
        id: id.clone(),
        error,
    };
    if !connected && kind != "connect" {
        return Err(reject(ProtoError::NotConnected));
    }
    let payload = match envelope.payload.map(RawValue::get) {
        None => "{}",
        Some(p) if p.starts_with('{') => p,
        Some(_) => return Err(bad(id, "\"payload\" must be an object")),
    };
    let body = match body(&kind, payload) {
        Ok(body) => body,
        Err(error) => return Err(reject(error)),
    };
    if connected && matches!(body, Body::Connect { .. }) {
        return Err(reject(ProtoError::AlreadyConnected));
    }
    Ok(Request { id, body })
}

/// The outer object of a request. Other fields are ignored; a `null`
/// field counts as absent.
#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

fn bad(id: Option<RequestId>, why: &str) -> Rejected {
    Rejected {
        id,
        error: ProtoError::BadPayload(why.to_string()),
    }
}

/// The payload of a `kind` request, its strings cleaned.
fn body(kind: &str, payload: &str) -> Result<Body, ProtoError> {
    fn parse<T: for<'de> Deserialize<'de>>(kind: &str, payload: &str) -> Result<T, ProtoError> {
        serde_json::from_str(payload)
            .map_err(|e| ProtoError::BadPayload(format!("bad {kind} payload: {e}")))
    }
    Ok(match kind {
        "connect" => {
            let p: ConnectIn = parse(kind, payload)?;
            Body::Connect {
                name: clean(p.name),
                room: p.room.map(clean),
                password: p.password,
                token: p.token,
                since: since(p.since, p.epoch)?,
            }
        }
        "message" => {
            let p: TextIn = parse(kind, payload)?;
            Body::Message {
                text: non_blank_text(p.text)?,
            }
        }
        "direct" => {
            let p: DirectIn = parse(kind, payload)?;
            Body::Direct {
                to: clean(p.to),
                text: non_blank_text(p.text)?,
            }
        }
        "join" => {
            let p: JoinIn = parse(kind, payload)?;
            match since(p.since, p.epoch)? {
                Some(since) => Body::JoinSince {
                    room: clean(p.room),
                    since,
                },
                None => Body::Join {
                    room: clean(p.room),
                },
            }
        }
        "logout" => Body::Logout,
        "nick" => Body::Nick {
            name: clean(parse::<NameIn>(kind, payload)?.name),
        },
        "status" => {
            let p: StatusIn = parse(kind, payload)?;
            let status = Status::parse(&p.status).ok_or_else(|| {
                ProtoError::BadPayload("\"status\" must be online, away or busy".into())
            })?;
            Body::Status {
                status,
                note: optional(p.note),
            }
        }
        "who" => Body::Who,
        "users" => Body::Users,
        "rooms" => Body::Rooms,
        "quit" => Body::Quit {
            reason: optional(parse::<QuitIn>(kind, payload)?.reason),
        },
        "history" => {
            let p: HistoryIn = parse(kind, payload)?;
            let count = match p.count {
                None => DEFAULT_HISTORY,
                Some(n @ 1..=1000) => n as usize,
                Some(_) => {
                    return Err(ProtoError::BadPayload(format!(
                        "\"count\" must be from 1 to {MAX_HISTORY}"
                    )));
                }
            };
            match p.before {
                Some(before) => Body::HistoryBefore { count, before },
                None => Body::History { count },
            }
        }
        "register" => Body::Register {
            password: parse::<RegisterIn>(kind, payload)?.password,
        },
        "passwd" => {
            let p: PasswdIn = parse(kind, payload)?;
            Body::Passwd {
                old: p.old,
                new: p.new,
            }
        }
        "kick" => {
            let p: KickIn = parse(kind, payload)?;
            Body::Kick {
                name: clean(p.name),
                reason: optional(p.reason),
            }
        }
        "mute" => {
            let p: MuteIn = parse(kind, payload)?;
            Body::Mute {
                name: clean(p.name),
                secs: seconds(p.seconds)?,
                reason: optional(p.reason),
            }
        }
        "unmute" => Body::Unmute {
            name: clean(parse::<NameIn>(kind, payload)?.name),
        },
        "ban" => {
            let p: BanIn = parse(kind, payload)?;
            Body::Ban {
                target: clean(p.target),
                secs: seconds(p.seconds)?,
                reason: optional(p.reason),
            }
        }
        "unban" => Body::Unban {
            target: clean(parse::<TargetIn>(kind, payload)?.target),
        },
        "bans" => Body::Bans,
        "topic" => Body::Topic {
            text: optional(parse::<TopicIn>(kind, payload)?.text),
        },
        "moderate" => Body::Moderate {
            on: parse::<ModerateIn>(kind, payload)?.on,
        },
        "wall" => Body::Wall {
            text: non_blank_text(parse::<TextIn>(kind, payload)?.text)?,
        },
        "whois" => Body::Whois {
            name: clean(parse::<NameIn>(kind, payload)?.name),
        },
        "role" => {
            let p: RoleIn = parse(kind, payload)?;
            let role = Role::parse(&p.role).ok_or_else(|| {
                ProtoError::BadPayload("\"role\" must be user, moderator or admin".into())
            })?;
            Body::SetRole {
                name: clean(p.name),
                role,
            }
        }
        other => return Err(ProtoError::UnknownType(clip(other))),
    })
}

/// A mute's or ban's `seconds`: absent for untimed, else 1 to ten years.
fn seconds(secs: Option<u64>) -> Result<Option<u64>, ProtoError> {
    match secs {
        None => Ok(None),
        Some(s @ 1..=MAX_SANCTION_SECS) => Ok(Some(s)),
        Some(_) => Err(ProtoError::BadPayload(format!(
            "\"seconds\" must be from 1 to {MAX_SANCTION_SECS}"
        ))),
    }
}

/// Control characters removed (a `\n` in a JSON string included), so that
/// nothing a JSON user sends can forge a line or an escape for a text user.
fn clean(s: String) -> String {
    match strip_controls(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(clean) => clean,
    }
}

fn non_blank_text(s: String) -> Result<String, ProtoError> {
    let s = clean(s);
    if s.trim().is_empty() {
        return Err(ProtoError::BadPayload("\"text\" must not be empty".into()));
    }
    Ok(s)
}

/// A note or reason: cleaned, trimmed, and `None` when blank.
fn optional(s: Option<String>) -> Option<String> {
    s.map(clean)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Every object the server sends: `type`, `payload`, and the `id` of the
/// request it answers.
#[derive(Serialize)]
struct Envelope<'a, P> {
    #[serde(rename = "type")]
    kind: &'static str,
    payload: P,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
}

struct Ts(Timestamp);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct ConnectAck<'a> {
    message: &'static str,
    name: &'a str,
    room: &'a str,
    version: u32,
    /// Only when the room has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    epoch: &'a str,
    /// Only for a registered user.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

/// A moderation notification: `name` and `by` always (`name` null where
/// nobody is its subject), the rest where they apply.
#[derive(Serialize)]
struct ModerationOut<'a> {
    message: String,
    event: &'static str,
    name: Option<&'a str>,
    by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// Present (null when untimed) on mutes and bans.
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<Option<Ts>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

#[derive(Serialize)]
struct TopicOut<'a> {
    room: &'a str,
    topic: Option<&'a str>,
}

#[derive(Serialize)]
struct BanOut<'a> {
    target: &'a str,
    until: Option<Ts>,
    by: &'a str,
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct BansOut<'a> {
    bans: Vec<BanOut<'a>>,
}

#[derive(Serialize)]
struct WhoisOut<'a> {
    name: &'a str,
    status: &'static str,
    note: Option<&'a str>,
    room: Option<&'a str>,
    registered: bool,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<Ts>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    sender: &'a str,
    room: &'a str,
    text: &'a str,
    ts: Ts,
    /// Only for a recorded message.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

#[derive(Serialize)]
struct DirectOut<'a> {
    sender: &'a str,
    text: &'a str,
    ts: Ts,
}

#[derive(Serialize)]
struct NotificationOut<'a> {
    message: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Present (possibly null) exactly when `status` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<Option<&'a str>>,
    /// On the mover's own `join`, when the room has a topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    /// On `register`: the session token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

impl<'a> NotificationOut<'a> {
    fn new(event: &'static str, message: String) -> Self {
        NotificationOut {
            message,
            event,
            name: None,
            room: None,
            old: None,
            reason: None,
            status: None,
            note: None,
            topic: None,
            token: None,
        }
    }
}

#[derive(Serialize)]
struct UserOut<'a> {
    name: &'a str,
    status: &'static str,
    note: Option<&'a str>,
    /// Only when not `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

fn users_out(users: &[UserInfo]) -> Vec<UserOut<'_>> {
    users
        .iter()
        .map(|u| UserOut {
            name: &u.name,
            status: u.status.as_str(),
            note: u.note.as_deref(),
            role: (u.role != Role::User).then_some(u.role.as_str()),
        })
        .collect()
}

#[derive(Serialize)]
struct WhoOut<'a> {
    room: &'a str,
    users: Vec<UserOut<'a>>,
}

#[derive(Serialize)]
struct UsersOut<'a> {
    users: Vec<UserOut<'a>>,
}

#[derive(Serialize)]
struct RoomOut<'a> {
    name: &'a str,
    users: usize,
}

#[derive(Serialize)]
struct RoomsOut<'a> {
    rooms: Vec<RoomOut<'a>>,
}

#[derive(Serialize)]
struct HistoryOut<'a> {
    room: &'a str,
    messages: Vec<RecordedOut<'a>>,
    /// Only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Serialize)]
struct RecordedOut<'a> {
    sender: &'a str,
    text: &'a str,
    ts: Ts,
    seq: u64,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'static str,
    message: &'a str,
}

/// Appends the JSON line for `event` (none for the events that only text
/// mode has: the welcome, the name question, `/help`), echoing `id`.
pub fn encode(event: &Event, id: Option<&RawValue>, buf: &mut Vec<u8>) {
    let mut put = |kind: &'static str, payload: &dyn ErasedPayload| {
        payload.write(kind, id, buf);
    };
    match event {
        Event::Welcome | Event::AskName | Event::Help { .. } | Event::PasswordPrompt { .. } => {}
        Event::Connected {
            name,
            room,
            topic,
            epoch,
            token,
            ..
        } => put(
            "connect_ack",
            &ConnectAck {
                message: "Connected to the room.",
                name,
                room,
                version: VERSION,
                topic: topic.as_deref(),
                epoch,
                token: token.as_deref(),
            },
        ),
        Event::Message {
            from,
            room,
            text,
            ts,
            seq,
        } => put(
            "message",
            &MessageOut {
                sender: from,
                room,
                text,
                ts: Ts(*ts),
                seq: *seq,
            },
        ),
        Event::Direct { from, text, ts } => put(
            "direct",
            &DirectOut {
                sender: from,
                text,
                ts: Ts(*ts),
            },
        ),
        Event::Notice(n) => put("notification", &notification(n)),
        Event::Info(info) => put("notification", &info_notification(info)),
        Event::Who { room, users } => put(
            "who",
            &WhoOut {
                room,
                users: users_out(users),
            },
        ),
        Event::Users { users } => put(
            "users",
            &UsersOut {
                users: users_out(users),
            },
        ),
        Event::Rooms { rooms } => put(
            "rooms",
            &RoomsOut {
                rooms: rooms
                    .iter()
                    .map(|RoomInfo { name, users }| RoomOut {
                        name,
                        users: *users,
                    })
                    .collect(),
            },
        ),
        Event::History {
            room,
            messages,
            truncated,
            ..
        } => put(
            "history",
            &HistoryOut {
                room,
                messages: messages
                    .iter()
                    .map(|m: &Recorded| RecordedOut {
                        sender: &m.sender,
                        text: &m.text,
                        ts: Ts(m.ts),
                        seq: m.seq,
                    })
                    .collect(),
                truncated: *truncated,
            },
        ),
        Event::Shutdown => put(
            "notification",
            &NotificationOut::new("shutdown", "The server is shutting down.".into()),
        ),
        Event::Error(e) => put(
            "error",
            &ErrorOut {
                code: e.code(),
                message: &e.to_string(),
            },
        ),
        Event::Moderation(m) => put("notification", &moderation(m)),
        Event::Topic { room, topic } => put(
            "topic",
            &TopicOut {
                room,
                topic: topic.as_deref(),
            },
        ),
        Event::Bans { bans } => put(
            "bans",
            &BansOut {
                bans: bans
                    .iter()
                    .map(|b: &BanInfo| BanOut {
                        target: &b.target,
                        until: b.until.map(Ts),
                        by: &b.by,
                        reason: b.reason.as_deref(),
                    })
                    .collect(),
            },
        ),
        Event::Whois(w) => put("whois", &whois(w)),
    }
}

fn whois(w: &WhoisInfo) -> WhoisOut<'_> {
    WhoisOut {
        name: &w.name,
        status: w.status.as_str(),
        note: w.note.as_deref(),
        room: w.room.as_deref(),
        registered: w.registered,
        role: w.role.as_str(),
        address: w.address.map(|a| a.to_canonical().to_string()),
        since: w.since.map(Ts),
    }
}

/// A moderation notification; its `message` is the text-mode line's words.
fn moderation(m: &ModEvent) -> ModerationOut<'_> {
    let mut text = Vec::new();
    crate::wire::text::encode_text(&Event::Moderation(m.clone()), &mut text);
    let message = String::from_utf8_lossy(&text);
    let message = message.trim_end().trim_start_matches("* ").to_string();
    let mut out = ModerationOut {
        message,
        event: "",
        name: m.name.as_deref(),
        by: &m.by,
        room: None,
        reason: m.reason.as_deref(),
        until: None,
        topic: None,
        on: None,
        role: None,
    };
    match &m.kind {
        ModKind::Kick { room } => {
            out.event = "kick";
            out.room = Some(room);
        }
        ModKind::Mute { until } => {
            out.event = "mute";
            out.until = Some(until.map(Ts));
        }
        ModKind::Unmute => out.event = "unmute",
        ModKind::Ban { until } => {
            out.event = "ban";
            out.until = Some(until.map(Ts));
        }
        ModKind::Unban => out.event = "unban",
        ModKind::Topic { room, topic } => {
            out.event = "topic";
            out.room = Some(room);
            out.topic = Some(topic);
        }
        ModKind::Moderate { room, on } => {
            out.event = "moderate";
            out.room = Some(room);
            out.on = Some(*on);
        }
        ModKind::Wall { room, text } => {
            out.event = "wall";
            out.room = Some(room);
            out.message = text.to_string();
        }
        ModKind::Role { role } => {
            out.event = "role";
            out.role = Some(role.as_str());
        }
    }
    out
}

/// The room's notification; the user who acted gets the same object.
fn notification(n: &Notice) -> NotificationOut<'_> {
    let who = &*n.name;
    let (event, message) = match &n.kind {
        NoticeKind::Join => ("join", format!("{who} has joined the room.")),
        NoticeKind::Leave => ("leave", format!("{who} has left the room.")),
        NoticeKind::Quit { reason: Some(r) } => ("quit", format!("{who} has quit ({r}).")),
        NoticeKind::Quit { reason: None } => ("quit", format!("{who} has quit.")),
        NoticeKind::Nick { old } => ("nick", format!("{old} is now known as {who}.")),
        NoticeKind::Status {
            status,
            note: Some(note),
        } => (
            "status",
            format!("{who} is now {} ({note}).", status.as_str()),
        ),
        NoticeKind::Status { status, note: None } => {
            ("status", format!("{who} is now {}.", status.as_str()))
        }
        NoticeKind::Disconnect { reason } => {
            ("disconnect", format!("{who} has disconnected ({reason})."))
        }
    };
    let mut out = NotificationOut::new(event, message);
    out.name = Some(who);
    out.room = Some(&n.room);
    match &n.kind {
        NoticeKind::Quit { reason } => out.reason = reason.as_deref(),
        NoticeKind::Nick { old } => out.old = Some(old),
        NoticeKind::Status { status, note } => {
            out.status = Some(status.as_str());
            out.note = Some(note.as_deref());
        }
        NoticeKind::Disconnect { reason } => out.reason = Some(reason.as_str()),
        NoticeKind::Join if n.you => out.topic = n.topic.as_deref(),
        NoticeKind::Join | NoticeKind::Leave => {}
    }
    out
}

/// A request that changed nothing still gets an answer: the notification
/// of the state it asked for.
fn info_notification(info: &Info) -> NotificationOut<'_> {
    match info {
        Info::AlreadyInRoom { name, room } => {
            let mut out = NotificationOut::new("join", "You are already in the room.".into());
            out.name = Some(name);
            out.room = Some(room);
            out
        }
        Info::AlreadyNamed { name } => {
            let mut out = NotificationOut::new("nick", format!("You are already known as {name}."));
            out.name = Some(name);
            out.old = Some(name);
            out
        }
        Info::Goodbye => NotificationOut::new("quit", "Goodbye.".into()),
        Info::Registered { name, token } => {
            let mut out = NotificationOut::new("register", format!("{name} is now registered."));
            out.name = Some(name);
            out.token = token.as_deref();
            out
        }
        Info::LoggedOut => NotificationOut::new(
            "logout",
            "Signed out: this session's tokens no longer work.".into(),
        ),
        Info::PasswordChanged { name } => {
            let mut out = NotificationOut::new("passwd", format!("Password changed for {name}."));
            out.name = Some(name);
            out
        }
    }
}

/// A payload of any of the types above, so `encode` can hand each to one
/// closure (`Serialize` itself cannot be a trait object).
trait ErasedPayload {
    fn write(&self, kind: &'static str, id: Option<&RawValue>, buf: &mut Vec<u8>);
}

impl<P: Serialize> ErasedPayload for P {
    fn write(&self, kind: &'static str, id: Option<&RawValue>, buf: &mut Vec<u8>) {
        let envelope = Envelope {
            kind,
            payload: self,
            id,
        };
        // Serialising these structs into a Vec cannot fail: every map key
        // is a string and no Serialize impl here returns an error. Were it
        // to fail, no half line may stay in a log shared by many.
        let before = buf.len();
        match serde_json::to_writer(&mut *buf, &envelope) {
            Ok(()) => buf.push(b'\n'),
            Err(_) => buf.truncate(before),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::{CloseReason, Name};
    use proptest::prelude::*;
    use serde_json::Value;

    fn ok(line: &str, connected: bool) -> Request {
        decode(line, connected).unwrap_or_else(|r| panic!("{line}: {:?}", r.error))
    }

    fn code(line: &str, connected: bool) -> &'static str {
        match decode(line, connected) {
            Ok(r) => panic!("{line} decoded to {:?}", r.command()),
            Err(r) => r.error.code(),
        }
    }

    fn one_line(event: &Event, id: Option<&str>) -> Value {
        let raw = id.map(|id| RawValue::from_string(id.to_string()).unwrap());
        let mut buf = Vec::new();
        encode(event, raw.as_deref(), &mut buf);
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn requests_decode_to_commands() {
        let r = ok(
            r#"{"type":"connect","payload":{"name":"Alice","room":"General","password":"x"}}"#,
            false,
        );
        assert_eq!(
            r.command(),
            Command::Connect {
                name: "Alice",
                room: Some("General"),
                password: Some("x"),
                token: None,
                since: None,
            }
        );
        let r = ok(
            r#"{"type":"connect","payload":{"name":"Al","token":"t","since":41,"epoch":"e1"}}"#,
            false,
        );
        assert_eq!(
            r.command(),
            Command::Connect {
                name: "Al",
                room: None,
                password: None,
                token: Some("t"),
                since: Some(Since {
                    seq: 41,
                    epoch: "e1"
                }),
            }
        );
        assert_eq!(
            code(
                r#"{"type":"connect","payload":{"name":"Al","since":41}}"#,
                false
            ),
            "bad_payload"
        );
        let r = ok(
            r#"{"type":"join","payload":{"room":"r","since":3,"epoch":"e"}}"#,
            true,
        );
        assert_eq!(
            r.command(),
            Command::JoinSince {
                room: "r",
                since: Since { seq: 3, epoch: "e" }
            }
        );
        let r = ok(
            r#"{"type":"history","payload":{"before":30,"count":5}}"#,
            true,
        );
        assert_eq!(
            r.command(),
            Command::HistoryBefore {
                count: 5,
                before: 30
            }
        );
        assert_eq!(ok(r#"{"type":"logout"}"#, true).command(), Command::Logout);
        let r = ok(r#"{"type":"connect","payload":{"name":"Al"}}"#, false);
        assert_eq!(
            r.command(),
            Command::Connect {
                name: "Al",
                room: None,
                password: None,
                token: None,
                since: None,
            }
        );
        let r = ok(r#"{"type":"history"}"#, true);
        assert_eq!(r.command(), Command::History(20));
        let r = ok(r#"{"type":"history","payload":{"count":1000}}"#, true);
        assert_eq!(r.command(), Command::History(1000));
        // Passwords are kept exactly: spaces and controls included.
        let r = ok(
            r#"{"type":"register","payload":{"password":" pass\tword "}}"#,
            true,
        );
        assert_eq!(r.command(), Command::Register(" pass\tword "));
        let r = ok(
            r#"{"type":"passwd","payload":{"old":"a b","new":"c d e f g h"}}"#,
            true,
        );
        assert_eq!(
            r.command(),
            Command::Passwd {
                old: "a b",
                new: "c d e f g h"
            }
        );
        let cases = [
            (
                r#"{"type":"message","payload":{"text":"/quit"}}"#,
                Command::Say("/quit"),
            ),
            (
                r#"{"type":"direct","payload":{"to":"Bob","text":"psst"}}"#,
                Command::Msg {
                    to: "Bob",
                    text: "psst",
                },
            ),
            (
                r#"{"type":"join","payload":{"room":"random"}}"#,
                Command::Join("random"),
            ),
            (
                r#"{"type":"nick","payload":{"name":"Alicia"}}"#,
                Command::Nick("Alicia"),
            ),
            (
                r#"{"type":"status","payload":{"status":"BUSY","note":" in a meeting "}}"#,
                Command::Status {
                    status: Status::Busy,
                    note: Some("in a meeting"),
                },
            ),
            (
                r#"{"type":"status","payload":{"status":"online","note":null}}"#,
                Command::Status {
                    status: Status::Online,
                    note: None,
                },
            ),
            (r#"{"type":"who"}"#, Command::Who),
            (r#"{"type":"users","payload":null}"#, Command::Users),
            (r#"{"type":"rooms","payload":{}}"#, Command::Rooms),
            (r#"{"type":"quit"}"#, Command::Quit(None)),
            (
                r#"{"type":"quit","payload":{"reason":"bye"}}"#,
                Command::Quit(Some("bye")),
            ),
        ];
        for (line, cmd) in cases {
            assert_eq!(ok(line, true).command(), cmd, "{line}");
        }
    }

    #[test]
    fn controls_inside_strings_are_removed_and_the_rest_kept_exactly() {
        let line = r#"{"type":"message","payload":{"text":"a\nb\r\u001b[31mc\u009b \"q\" \\ é 日本 🦀\tt"}}"#;
        assert_eq!(
            ok(line, true).command(),
            Command::Say("ab[31mc \"q\" \\ é 日本 🦀\tt")
        );
        let line = r#"{"type":"message","payload":{"text":"\n\u0007 "}}"#;
        assert_eq!(code(line, true), "bad_payload");
    }

    #[test]
    fn each_rejection_has_its_code() {
        assert_eq!(code("[1]", true), "bad_json");
        assert_eq!(code("{bad", true), "bad_json");
        assert_eq!(code(r#"{"type":"who"} x"#, true), "bad_json");
        assert_eq!(code(r#"{"type":"frob"}"#, true), "unknown_type");
        // Account requests need their fields; a count out of range is
        // refused.
        for missing in ["register", "passwd"] {
            let line = format!(r#"{{"type":"{missing}","payload":{{}}}}"#);
            assert_eq!(code(&line, true), "bad_payload");
        }
        for count in ["0", "1001", "-1", "2.5", "\"5\""] {
            let line = format!(r#"{{"type":"history","payload":{{"count":{count}}}}}"#);
            assert_eq!(code(&line, true), "bad_payload", "{count}");
        }
        assert_eq!(code(r#"{"payload":{}}"#, true), "bad_payload");
        assert_eq!(code(r#"{"type":7}"#, true), "bad_payload");
        assert_eq!(code(r#"{"type":"join"}"#, true), "bad_payload");
        assert_eq!(
            code(r#"{"type":"join","payload":{"room":5}}"#, true),
            "bad_payload"
        );
        assert_eq!(
            code(r#"{"type":"join","payload":[1]}"#, true),
            "bad_payload"
        );
        assert_eq!(
            code(r#"{"type":"status","payload":{"status":"asleep"}}"#, true),
            "bad_payload"
        );
        assert_eq!(code(r#"{"type":"who"}"#, false), "not_connected");
        assert_eq!(code(r#"{"type":"quit"}"#, false), "not_connected");
        assert_eq!(code(r#"{"type":"history"}"#, false), "not_connected");
        assert_eq!(code(r#"{"type":"frob"}"#, false), "not_connected");
        assert_eq!(
            code(r#"{"type":"connect","payload":{"name":"a"}}"#, true),
            "bad_payload"
        );
        assert_eq!(code(r#"{"type":"connect"}"#, false), "bad_payload");
    }

    #[test]
    fn ids_are_echoed_when_they_are_strings_or_numbers() {
        let id = |line: &str| match decode(line, true) {
            Ok(r) => r.id.map(|id| id.get().to_string()),
            Err(r) => r.id.map(|id| id.get().to_string()),
        };
        assert_eq!(
            id(r#"{"type":"who","id":"a\"1"}"#).as_deref(),
            Some(r#""a\"1""#)
        );
        assert_eq!(id(r#"{"type":"who","id":12.5}"#).as_deref(), Some("12.5"));
        assert_eq!(id(r#"{"type":"nope","id":3}"#).as_deref(), Some("3"));
        assert_eq!(id(r#"{"type":"who"}"#), None);
        assert_eq!(id(r#"{"type":"who","id":null}"#), None);
        let big = "123456789012345678901234567890e-3";
        let line = format!(r#"{{"type":"who","id":{big}}}"#);
        assert_eq!(id(&line).as_deref(), Some(big), "echoed as sent");
        let r = decode(r#"{"type":"who","id":[1]}"#, true).unwrap_err();
        assert_eq!((r.id.is_none(), r.error.code()), (true, "bad_payload"));
    }

    #[test]
    fn events_encode_as_the_protocol_shows() {
        let name: Name = "Alice".into();
        let room: Name = "General".into();
        let ack = Event::Connected {
            name: name.clone(),
            room: room.clone(),
            users: 3,
            topic: None,
            epoch: "e1".into(),
            token: Some("v1.alice.9.0.ab".into()),
        };
        assert_eq!(
            one_line(&ack, Some(r#""c1""#)),
            serde_json::json!({"type":"connect_ack","payload":{"message":"Connected to the room.","name":"Alice","room":"General","version":1,"epoch":"e1","token":"v1.alice.9.0.ab"},"id":"c1"})
        );
        let msg = Event::Message {
            from: name.clone(),
            room: room.clone(),
            text: "Hello, \"everyone\"! é".into(),
            ts: Timestamp(1_795_271_527),
            seq: Some(7),
        };
        assert_eq!(
            one_line(&msg, None),
            serde_json::json!({"type":"message","payload":{"sender":"Alice","room":"General","text":"Hello, \"everyone\"! é","ts":"2026-11-21T14:32:07Z","seq":7}})
        );
        let notice = |kind| {
            Event::Notice(Notice {
                kind,
                name: name.clone(),
                room: room.clone(),
                you: false,
                topic: None,
            })
        };
        assert_eq!(
            one_line(&notice(NoticeKind::Join), None),
            serde_json::json!({"type":"notification","payload":{"message":"Alice has joined the room.","event":"join","name":"Alice","room":"General"}})
        );
        let status = notice(NoticeKind::Status {
            status: Status::Busy,
            note: None,
        });
        assert_eq!(
            one_line(&status, None)["payload"],
            serde_json::json!({"message":"Alice is now busy.","event":"status","name":"Alice","room":"General","status":"busy","note":null})
        );
        let nick = notice(NoticeKind::Nick { old: "Al".into() });
        assert_eq!(one_line(&nick, None)["payload"]["old"], "Al");
        let quit = notice(NoticeKind::Quit { reason: None });
        assert!(one_line(&quit, None)["payload"].get("reason").is_none());
        let gone = notice(NoticeKind::Disconnect {
            reason: CloseReason::TooSlow,
        });
        assert_eq!(one_line(&gone, None)["payload"]["event"], "disconnect");
        let err = Event::Error(ProtoError::NameTaken("Alice".into()));
        assert_eq!(
            one_line(&err, Some("7")),
            serde_json::json!({"type":"error","payload":{"code":"name_taken","message":"name \"Alice\" is taken, choose another"},"id":7})
        );
        let mut buf = Vec::new();
        encode(&Event::Welcome, None, &mut buf);
        encode(&Event::AskName, None, &mut buf);
        assert!(buf.is_empty(), "text-only events have no JSON form");
    }

    /// A JSON object (as text) built from a few request-shaped parts.
    fn request_like() -> impl Strategy<Value = String> {
        let kinds = prop::sample::select(vec![
            "connect", "message", "direct", "join", "nick", "status", "who", "users", "rooms",
            "quit", "history", "x",
        ]);
        let value = prop_oneof![
            Just("null".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just("[]".to_string()),
            Just("{}".to_string()),
        ];
        let field = prop::sample::select(vec![
            "name", "room", "text", "to", "status", "note", "reason", "password",
        ]);
        (
            kinds,
            prop::collection::vec((field, value.clone()), 0..4),
            prop::option::of(value),
        )
            .prop_map(|(kind, fields, id)| {
                let payload: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                let id = id.map(|v| format!(",\"id\":{v}")).unwrap_or_default();
                format!(
                    "{{\"type\":\"{kind}\",\"payload\":{{{}}}{id}}}",
                    payload.join(",")
                )
            })
    }

    /// Decoding never panics; a rejected line yields exactly one JSON
    /// error object, and an accepted one a command.
    fn check(line: &str, connected: bool) -> Result<(), TestCaseError> {
        match decode(line, connected) {
            Ok(r) => {
                let _ = r.command();
            }
            Err(r) => {
                let mut buf = Vec::new();
                encode(&Event::Error(r.error), r.id.as_deref(), &mut buf);
                prop_assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
                let v: Value = serde_json::from_slice(&buf)
                    .map_err(|e| TestCaseError::fail(format!("error line is not JSON: {e}")))?;
                prop_assert_eq!(&v["type"], "error");
                prop_assert!(v["payload"]["code"].as_str().is_some_and(|c| !c.is_empty()));
                prop_assert!(
                    v["payload"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty())
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in "\\PC{0,80}", connected: bool) {
            check(&line, connected)?;
        }

        #[test]
        fn request_shaped_objects_never_panic(line in request_like(), connected: bool) {
            check(&line, connected)?;
        }

        #[test]
        fn mutated_requests_never_panic(
            line in request_like(),
            cut in 0usize..200,
            insert in prop::sample::select(vec!["", "{", "}", "\"", ",", ":", "\\", "\\u0000", "\u{1b}", "[", "null"]),
            connected: bool,
        ) {
            let mut chars: Vec<char> = line.chars().collect();
            let at = cut.min(chars.len());
            chars.splice(at..at, insert.chars());
            if cut % 3 == 0 && at < chars.len() {
                chars.remove(at);
            }
            let line: String = chars.into_iter().collect();
            check(&line, connected)?;
        }
    }
}
