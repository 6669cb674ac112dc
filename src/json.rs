//! The JSON-lines codec: one object per line, both ways. Requests decode to
//! the same `Command`s as text lines; events encode to the objects JSON
//! clients read. The serde wire structs are private: the rest of the crate
//! sees only `decode`, `Request`, `Rejected` and `encode`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
pub use serde_json::value::RawValue;
use serde_json::value::to_raw_value;
use serde_json::{Map, Value};

use crate::proto::{
    Command, Event, Info, Notice, NoticeKind, ProtoError, RoomInfo, Status, Timestamp, UserInfo,
    strip_controls,
};

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
    },
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
}

impl Request {
    /// What the request asks, as the chat understands it. Message text is
    /// literal: a leading `/` is not a command here.
    pub fn command(&self) -> Command<'_> {
        match &self.body {
            Body::Connect { name, room } => Command::Connect {
                name,
                room: room.as_deref(),
            },
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
        }
    }
}

#[derive(Deserialize)]
struct ConnectIn {
    name: String,
    room: Option<String>,
    /// Accepted and ignored until accounts exist.
    #[allow(dead_code)]
    password: Option<String>,
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
struct RoomIn {
    room: String,
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

/// Decodes one line from a JSON-mode client. `connected` says whether it
/// has sent a successful `connect`; before that only `connect` is served.
pub fn decode(line: &str, connected: bool) -> Result<Request, Rejected> {
    let mut object: Map<String, Value> = serde_json::from_str(line).map_err(|e| Rejected {
        id: None,
        error: ProtoError::BadJson(e.to_string()),
    })?;
    let id = match object.remove("id") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => to_raw_value(&v).ok(),
        Some(_) => return Err(bad(None, "\"id\" must be a string or a number")),
    };
    let reject = |error| Rejected {
        id: id.clone(),
        error,
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(bad(id, "\"type\" must be a string")),
        None => return Err(bad(id, "missing \"type\"")),
    };
    if !connected && kind != "connect" && is_known(kind) {
        return Err(reject(ProtoError::NotConnected));
    }
    let payload = match object.get("payload") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad(id, "\"payload\" must be an object")),
    };
    let body = match body(kind, payload) {
        Ok(body) => body,
        Err(error) => return Err(reject(error)),
    };
    if connected && matches!(body, Body::Connect { .. }) {
        return Err(reject(ProtoError::AlreadyConnected));
    }
    Ok(Request { id, body })
}

fn is_known(kind: &str) -> bool {
    matches!(
        kind,
        "connect"
            | "message"
            | "direct"
            | "join"
            | "nick"
            | "status"
            | "who"
            | "users"
            | "rooms"
            | "quit"
    )
}

fn bad(id: Option<RequestId>, why: &str) -> Rejected {
    Rejected {
        id,
        error: ProtoError::BadPayload(why.to_string()),
    }
}

/// The payload of a `kind` request, its strings cleaned.
fn body(kind: &str, payload: Value) -> Result<Body, ProtoError> {
    fn parse<T: for<'de> Deserialize<'de>>(kind: &str, payload: Value) -> Result<T, ProtoError> {
        serde_json::from_value(payload)
            .map_err(|e| ProtoError::BadPayload(format!("bad {kind} payload: {e}")))
    }
    Ok(match kind {
        "connect" => {
            let p: ConnectIn = parse(kind, payload)?;
            Body::Connect {
                name: clean(p.name),
                room: p.room.map(clean),
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
        "join" => Body::Join {
            room: clean(parse::<RoomIn>(kind, payload)?.room),
        },
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
        other => return Err(ProtoError::UnknownType(clip(other))),
    })
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

/// An unknown type is echoed in the error; this keeps the echo short.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
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
}

#[derive(Serialize)]
struct MessageOut<'a> {
    sender: &'a str,
    room: &'a str,
    text: &'a str,
    ts: Ts,
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
        }
    }
}

#[derive(Serialize)]
struct UserOut<'a> {
    name: &'a str,
    status: &'static str,
    note: Option<&'a str>,
}

fn users_out(users: &[UserInfo]) -> Vec<UserOut<'_>> {
    users
        .iter()
        .map(|u| UserOut {
            name: &u.name,
            status: u.status.as_str(),
            note: u.note.as_deref(),
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
        Event::Welcome | Event::AskName | Event::Help { .. } => {}
        Event::Connected { name, room, .. } => put(
            "connect_ack",
            &ConnectAck {
                message: "Connected to the room.",
                name,
                room,
                version: VERSION,
            },
        ),
        Event::Message {
            from,
            room,
            text,
            ts,
        } => put(
            "message",
            &MessageOut {
                sender: from,
                room,
                text,
                ts: Ts(*ts),
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
    }
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
        // is a string and no Serialize impl here returns an error.
        if serde_json::to_writer(&mut *buf, &envelope).is_ok() {
            buf.push(b'\n');
        }
    }
}
