//! `Chat`: users, rooms (indexed both ways and kept in step), statuses, and
//! who receives which event. In: connect, a line, disconnect, tick(now).
//! Out: an `Outbox` of "send this event to these connections" and "close
//! this one". No sockets, no bytes, no modes, no clock of its own.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::proto::{
    CloseReason, Command, Event, Info, LOBBY, MAX_NOTE_CHARS, Name, Notice, NoticeKind, ProtoError,
    RoomInfo, Status, Timestamp, UserInfo, clip, parse_text, valid_name,
};

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
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            announce_limit: 100,
            handshake_timeout: Duration::from_secs(30),
        }
    }
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
}

struct Room {
    name: Name,
    members: Vec<ConnId>,
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
    /// is also deadline order.
    deadlines: VecDeque<(Instant, ConnId, u64)>,
    next_serial: u64,
    shutting_down: bool,
    /// The wall clock, as last passed in; stamps messages.
    clock: Timestamp,
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
        let mut rooms = Slab::new();
        let lobby = rooms.insert(Room {
            name: LOBBY.into(),
            members: Vec::new(),
        });
        let mut room_ids = HashMap::new();
        room_ids.insert(LOBBY.into(), lobby);
        Chat {
            cfg,
            users: Vec::new(),
            names: HashMap::new(),
            rooms,
            room_ids,
            lobby,
            deadlines: VecDeque::new(),
            next_serial: 0,
            shutting_down: false,
            clock: Timestamp::default(),
        }
    }

    /// A new connection: it is welcomed and must choose a name in time.
    pub fn connect(&mut self, conn: ConnId, now: Instant, out: &mut Outbox) {
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
        });
        self.deadlines
            .push_back((now + self.cfg.handshake_timeout, conn, serial));
        out.send(conn, Event::Welcome);
    }

    /// Sets the wall clock that stamps messages from now on.
    pub fn set_clock(&mut self, now: Timestamp) {
        self.clock = now;
    }

    /// One text-mode line from `conn`: terminator and control characters
    /// removed, not blank.
    pub fn handle_line(&mut self, conn: ConnId, line: &str, out: &mut Outbox) {
        match parse_text(line) {
            Ok(cmd) => self.handle(conn, cmd, out),
            Err(e) if self.user(conn).is_some_and(|u| !u.gone) => out.send(conn, Event::Error(e)),
            Err(_) => {}
        }
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

    fn naming(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        match cmd {
            Command::Say(name) | Command::Nick(name) => {
                self.choose_name(conn, strip_hash(name), None, out)
            }
            Command::Connect { name, room } => {
                self.choose_name(conn, strip_hash(name), room.map(strip_hash), out)
            }
            Command::Help => out.send(conn, Event::Help { named: false }),
            Command::Quit(_) => {
                self.user_mut(conn).gone = true;
                out.send(conn, Event::Info(Info::Goodbye));
                out.close(conn, CloseReason::Quit);
            }
            _ => out.send(conn, Event::Error(ProtoError::NotNamed)),
        }
    }

    /// Takes `name` and enters `room` (the lobby if `None`), or says why
    /// not and asks again.
    fn choose_name(&mut self, conn: ConnId, name: &str, room: Option<&str>, out: &mut Outbox) {
        let checked = self.check_name_free(conn, name).and_then(|()| match room {
            Some(r) if !valid_name(r) => Err(ProtoError::RoomInvalid(clip(r))),
            _ => Ok(()),
        });
        if let Err(e) = checked {
            out.send(conn, Event::Error(e));
            out.send(conn, Event::AskName);
            return;
        }
        let name: Name = name.into();
        self.names.insert(name.to_ascii_lowercase().into(), conn);
        self.user_mut(conn).name = Some(name.clone());
        let id = match room {
            Some(r) => self.room_id(r),
            None => self.lobby,
        };
        self.enter(conn, id);
        let room = &self.rooms[id];
        out.send(
            conn,
            Event::Connected {
                name,
                room: room.name.clone(),
                users: room.members.len(),
            },
        );
        self.announce(conn, NoticeKind::Join, false, out);
    }

    /// Whether `conn` may take `name`: valid, and not held by another user.
    fn check_name_free(&self, conn: ConnId, name: &str) -> Result<(), ProtoError> {
        if !valid_name(name) {
            return Err(ProtoError::NameInvalid(clip(name)));
        }
        match self.names.get(name.to_ascii_lowercase().as_str()) {
            Some(&holder) if holder != conn => Err(ProtoError::NameTaken(name.to_string())),
            _ => Ok(()),
        }
    }

    fn command(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        let user = self.user(conn).expect("handle_line checked the user");
        let name = user.name.clone().expect("named users only");
        let room = user.room;
        match cmd {
            Command::Say(text) => {
                let r = &self.rooms[room];
                let event = Event::Message {
                    from: name,
                    room: r.name.clone(),
                    text: text.into(),
                    ts: self.clock,
                };
                out.send_all(r.members.iter().copied().filter(|&m| m != conn), event);
            }
            Command::Msg { to, text } => match self.names.get(to.to_ascii_lowercase().as_str()) {
                Some(&target) => out.send(
                    target,
                    Event::Direct {
                        from: name,
                        text: text.into(),
                        ts: self.clock,
                    },
                ),
                None => out.send(conn, Event::Error(ProtoError::NoSuchUser(clip(to)))),
            },
            Command::Nick(new) => self.rename(conn, &name, strip_hash(new), out),
            Command::Join(target) => self.join(conn, strip_hash(target), out),
            Command::Rooms => {
                let mut rooms: Vec<RoomInfo> = self
                    .rooms
                    .iter()
                    .map(|(_, r)| RoomInfo {
                        name: r.name.clone(),
                        users: r.members.len(),
                    })
                    .collect();
                rooms.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
                out.send(conn, Event::Rooms { rooms });
            }
            Command::Who => {
                let r = &self.rooms[room];
                let users = self.user_infos(r.members.iter().copied());
                out.send(
                    conn,
                    Event::Who {
                        room: r.name.clone(),
                        users,
                    },
                );
            }
            Command::Users => {
                let users = self.user_infos(self.names.values().copied());
                out.send(conn, Event::Users { users });
            }
            Command::Help => out.send(conn, Event::Help { named: true }),
            Command::Connect { .. } => out.send(conn, Event::Error(ProtoError::AlreadyConnected)),
            Command::Status { status, note } => {
                if note.is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
                    out.send(conn, Event::Error(ProtoError::NoteTooLong));
                    return;
                }
                let note: Option<Name> = note.map(Into::into);
                let user = self.user_mut(conn);
                user.status = status;
                user.note = note.clone();
                self.announce(conn, NoticeKind::Status { status, note }, true, out);
            }
            Command::Quit(reason) => {
                let reason = reason.map(Into::into);
                self.announce(conn, NoticeKind::Quit { reason }, true, out);
                self.remove(conn);
                self.user_mut(conn).gone = true;
                out.close(conn, CloseReason::Quit);
            }
        }
    }

    fn rename(&mut self, conn: ConnId, old: &Name, new: &str, out: &mut Outbox) {
        if let Err(e) = self.check_name_free(conn, new) {
            out.send(conn, Event::Error(e));
            return;
        }
        if **old == *new {
            let name = old.clone();
            out.send(conn, Event::Info(Info::AlreadyNamed { name }));
            return;
        }
        self.names.remove(old.to_ascii_lowercase().as_str());
        self.names.insert(new.to_ascii_lowercase().into(), conn);
        self.user_mut(conn).name = Some(new.into());
        self.announce(conn, NoticeKind::Nick { old: old.clone() }, true, out);
    }

    fn join(&mut self, conn: ConnId, target: &str, out: &mut Outbox) {
        if !valid_name(target) {
            out.send(conn, Event::Error(ProtoError::RoomInvalid(clip(target))));
            return;
        }
        let key = target.to_ascii_lowercase();
        let current = self.user(conn).expect("named user").room;
        if self.room_ids.get(key.as_str()) == Some(&current) {
            let info = Info::AlreadyInRoom {
                name: self
                    .user(conn)
                    .and_then(|u| u.name.clone())
                    .expect("named user"),
                room: self.rooms[current].name.clone(),
            };
            out.send(conn, Event::Info(info));
            return;
        }
        self.announce(conn, NoticeKind::Leave, false, out);
        self.leave_room(conn);
        let id = self.room_id(target);
        self.enter(conn, id);
        self.announce(conn, NoticeKind::Join, true, out);
    }

    /// The room named `name` (valid), created if it does not exist.
    fn room_id(&mut self, name: &str) -> usize {
        let key = name.to_ascii_lowercase();
        if let Some(&id) = self.room_ids.get(key.as_str()) {
            return id;
        }
        let id = self.rooms.insert(Room {
            name: name.into(),
            members: Vec::new(),
        });
        self.room_ids.insert(key.into(), id);
        id
    }

    /// Tells `conn`'s room what happened to it (if the room is small enough)
    /// and, if `tell_actor`, the user too, who is always told.
    fn announce(&self, conn: ConnId, kind: NoticeKind, tell_actor: bool, out: &mut Outbox) {
        let user = self.user(conn).expect("announce of a present user");
        let room = &self.rooms[user.room];
        let notice = Notice {
            kind,
            name: user.name.clone().expect("announce of a named user"),
            room: room.name.clone(),
            you: false,
        };
        if room.members.len() <= self.cfg.announce_limit {
            let others = room.members.iter().copied().filter(|&m| m != conn);
            out.send_all(others, Event::Notice(notice.clone()));
        }
        if tell_actor {
            out.send(
                conn,
                Event::Notice(Notice {
                    you: true,
                    ..notice
                }),
            );
        }
    }

    fn user_infos(&self, conns: impl Iterator<Item = ConnId>) -> Vec<UserInfo> {
        let mut users: Vec<UserInfo> = conns
            .filter_map(|c| self.user(c))
            .filter_map(|u| {
                Some(UserInfo {
                    name: u.name.clone()?,
                    status: u.status,
                    note: u.note.clone(),
                })
            })
            .collect();
        users.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
        users
    }

    fn enter(&mut self, conn: ConnId, room: usize) {
        let members = &mut self.rooms[room].members;
        let pos = members.len();
        members.push(conn);
        let user = self.user_mut(conn);
        user.room = room;
        user.pos = pos;
    }

    /// Takes a named user out of its room and out of the name index.
    fn remove(&mut self, conn: ConnId) {
        if let Some(name) = &self.user(conn).expect("present user").name {
            self.names.remove(name.to_ascii_lowercase().as_str());
        }
        self.leave_room(conn);
    }

    /// Takes `conn` out of its room, dropping the room if it empties and is
    /// not the lobby.
    fn leave_room(&mut self, conn: ConnId) {
        let user = self.user(conn).expect("present user");
        let (room, pos) = (user.room, user.pos);
        let members = &mut self.rooms[room].members;
        members.swap_remove(pos);
        if let Some(&moved) = members.get(pos) {
            self.user_mut(moved).pos = pos;
        }
        if self.rooms[room].members.is_empty() && room != self.lobby {
            let gone = self.rooms.remove(room);
            self.room_ids
                .remove(gone.name.to_ascii_lowercase().as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encode_text;
    use std::collections::BTreeMap;

    /// Drives a `Chat` and shows what each connection would read, as text.
    struct Script {
        chat: Chat,
        out: Outbox,
        now: Instant,
        next: usize,
        closed: Vec<(ConnId, CloseReason)>,
    }

    impl Script {
        fn new() -> Script {
            Script::with(ChatConfig::default())
        }

        fn with(cfg: ChatConfig) -> Script {
            Script {
                chat: Chat::new(cfg),
                out: Outbox::default(),
                now: Instant::now(),
                next: 0,
                closed: Vec::new(),
            }
        }

        /// Collects what the outbox holds, per recipient, as text lines.
        fn take(&mut self) -> BTreeMap<usize, Vec<String>> {
            let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            let closed = &mut self.closed;
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
            });
            seen
        }

        fn open(&mut self) -> ConnId {
            let c = ConnId(self.next);
            self.next += 1;
            self.chat.connect(c, self.now, &mut self.out);
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
        let connect = |name, room| Command::Connect { name, room };
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
}
