//! One chat across several nodes, as the chat sees it. Part of `Chat`;
//! no network here: the server's cluster link carries what this asks for.
//!
//! - A room message said here is not delivered here: it is shared
//!   (`Output::Share`) and comes back, numbered by the cluster's one
//!   order, through `remote_room`, which every node runs alike. So every
//!   node delivers and records the same messages in the same order with
//!   the same `seq`.
//! - A direct message to a user of another node is shared; one for a user
//!   here comes in through `remote_direct`.
//! - A name is claimed cluster-wide (a `Job::Claim`) before its user is
//!   told they are in. The users of other nodes are known from their
//!   presence entries (`remote_presence`), which `/who`, `/users`,
//!   `/rooms`, direct messages and the name checks consult.
//! - What this node's users look like is handed out by `take_presence`
//!   once per turn, for the names whose presence changed.

use std::sync::Arc;

use super::*;

/// What this node tells the other nodes.
#[derive(Debug)]
pub enum Shared {
    Room {
        room: Name,
        from: Name,
        text: Arc<str>,
        ts: Timestamp,
    },
    Direct {
        to: Name,
        from: Name,
        text: Arc<str>,
        ts: Timestamp,
    },
}

/// A named user as every node sees it: who holds the name, on which node,
/// where, and how they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub name: Name,
    pub node: Name,
    pub room: Name,
    pub status: Status,
    pub note: Option<Name>,
}

/// The cluster as this node's chat knows it.
pub(super) struct Remote {
    /// This node's name in presence entries.
    node: Name,
    /// The users of other nodes, by lower-cased name.
    users: HashMap<Box<str>, Presence>,
    /// Users of other nodes per lower-cased room name.
    rooms: HashMap<Box<str>, (Name, usize)>,
    /// Lower-cased names whose presence changed since `take_presence`.
    changed: Vec<Box<str>>,
    /// Names claimed for connections not named yet.
    claimed: HashMap<Box<str>, ConnId>,
    /// Rooms made only to record a message from another node; dropped at
    /// the end of the turn if still empty.
    transient: Vec<usize>,
}

impl Chat {
    /// Makes this chat one node of a cluster, named `node`.
    pub fn join_cluster(&mut self, node: &str) {
        self.cluster = Some(Box::new(Remote {
            node: node.into(),
            users: HashMap::new(),
            rooms: HashMap::new(),
            changed: Vec::new(),
            claimed: HashMap::new(),
            transient: Vec::new(),
        }));
    }

    /// This node's name, in a cluster.
    pub fn node(&self) -> Option<Name> {
        self.cluster.as_ref().map(|r| r.node.clone())
    }

    pub fn in_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Sets the history's lineage: in a cluster, the stream's.
    pub fn set_epoch(&mut self, epoch: &str) {
        self.epoch = epoch.into();
    }

    /// Notes that the presence of `key` (lower-cased) must be told.
    pub(super) fn presence_changed(&mut self, key: &str) {
        if let Some(remote) = self.cluster.as_deref_mut() {
            remote.changed.push(key.into());
        }
    }

    /// Whether `key` is held by a user of another node.
    pub(super) fn held_elsewhere(&self, key: &str) -> bool {
        self.cluster
            .as_deref()
            .is_some_and(|r| r.users.contains_key(key))
    }

    /// The presence to tell for each name that changed since the last
    /// call: `None` gives the name up.
    pub fn take_presence(&mut self) -> Vec<(Box<str>, Option<Presence>)> {
        let Some(remote) = self.cluster.as_deref_mut() else {
            return Vec::new();
        };
        let mut changed = std::mem::take(&mut remote.changed);
        changed.sort_unstable();
        changed.dedup();
        let mut told = Vec::with_capacity(changed.len());
        for key in changed {
            let presence = match self.names.get(&key) {
                Some(&conn) => self.presence_of(conn),
                None if self.cluster.as_ref().unwrap().claimed.contains_key(&key) => continue,
                None => None,
            };
            told.push((key, presence));
        }
        told
    }

    fn presence_of(&self, conn: ConnId) -> Option<Presence> {
        let user = self.user(conn)?;
        Some(Presence {
            name: user.name.clone()?,
            node: self.cluster.as_ref()?.node.clone(),
            room: self.rooms[user.room].name.clone(),
            status: user.status,
            note: user.note.clone(),
        })
    }

    /// Asks the cluster for `name` before `conn` takes it; `takeover` for
    /// an account whose password (or token) was right, which replaces a
    /// holder anywhere.
    pub(super) fn claim(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        rename: bool,
        out: &mut Outbox,
    ) {
        let key = name.to_ascii_lowercase();
        let takeover = self.user(conn).and_then(|u| u.account.as_deref()) == Some(&*key);
        let user = self.user(conn).expect("a claim for a present user");
        let place = match &room {
            Some(r) => r.clone(),
            None if user.name.is_some() => self.rooms[user.room].name.clone(),
            None => LOBBY.into(),
        };
        let wait = Wait::Claim {
            name: name.clone(),
            room,
            rename,
        };
        self.hand_out(conn, wait, out, |ticket| Job::Claim {
            ticket,
            name,
            room: place,
            takeover,
        });
    }

    /// Whether `conn` holds a claim on `key` (or needs none: no cluster).
    pub(super) fn has_claim(&self, conn: ConnId, key: &str) -> bool {
        match self.cluster.as_deref() {
            None => true,
            Some(r) => r.claimed.get(key) == Some(&conn) || self.names.get(key) == Some(&conn),
        }
    }

    /// A claim was granted: `conn` holds `key` until it is named (or
    /// gone, when the name is given up again).
    pub(super) fn claim_granted(&mut self, conn: Option<ConnId>, key: &str) {
        if let Some(remote) = self.cluster.as_deref_mut() {
            match conn {
                Some(conn) => {
                    remote.claimed.insert(key.into(), conn);
                }
                None => remote.changed.push(key.into()),
            }
        }
    }

    /// `conn` was named, or left: its claim is settled.
    pub(super) fn settle_claim(&mut self, conn: ConnId) {
        if let Some(remote) = self.cluster.as_deref_mut()
            && !remote.claimed.is_empty()
        {
            let mut gone = Vec::new();
            remote.claimed.retain(|key, c| {
                if *c == conn {
                    gone.push(key.clone());
                }
                *c != conn
            });
            remote.changed.extend(gone);
        }
    }

    /// A room message in the cluster's order, numbered `seq`: delivered
    /// to the room's members here (but its sender) and recorded.
    pub fn remote_room(
        &mut self,
        seq: u64,
        room: &str,
        from: &str,
        text: &str,
        ts: Timestamp,
        out: &mut Outbox,
    ) {
        if !valid_name(room) || self.cluster.is_none() {
            return;
        }
        let known = self
            .room_ids
            .contains_key(room.to_ascii_lowercase().as_str());
        let id = self.room_id(room);
        if !known && let Some(remote) = self.cluster.as_deref_mut() {
            remote.transient.push(id);
        }
        let from: Name = from.into();
        let text: Arc<str> = text.into();
        let seq = (self.cfg.history_keep > 0).then(|| self.record_at(id, seq, &from, &text, ts));
        self.counts.room_messages += 1;
        let sender = self.names.get(from.to_ascii_lowercase().as_str()).copied();
        let r = &self.rooms[id];
        let event = Event::Message {
            from,
            room: r.name.clone(),
            text,
            ts,
            seq,
        };
        out.send_all(
            r.members.iter().copied().filter(|&m| Some(m) != sender),
            event,
        );
    }

    /// A direct message from another node: delivered if its addressee is
    /// here.
    pub fn remote_direct(
        &mut self,
        to: &str,
        from: &str,
        text: &str,
        ts: Timestamp,
        out: &mut Outbox,
    ) {
        if let Some(&target) = self.names.get(to.to_ascii_lowercase().as_str()) {
            self.counts.direct_messages += 1;
            let event = Event::Direct {
                from: from.into(),
                text: text.into(),
                ts,
            };
            out.send(target, event);
        }
    }

    /// The presence entry of `key` changed on another node (`None`: the
    /// name was given up). Users here are told of comings, goings and
    /// statuses in their rooms; a user here whose name another node took
    /// over (the same account logging in there) is replaced.
    pub fn remote_presence(&mut self, key: &str, presence: Option<Presence>, out: &mut Outbox) {
        let Some(remote) = self.cluster.as_deref() else {
            return;
        };
        let node = remote.node.clone();
        if let Some(p) = &presence
            && p.node == node
        {
            return;
        }
        if presence.is_some()
            && let Some(&holder) = self.names.get(key)
        {
            let reason = CloseReason::Replaced;
            self.announce(holder, NoticeKind::Disconnect { reason }, true, out);
            self.remove(holder);
            self.user_mut(holder).gone = true;
            out.close(holder, reason);
            // The entry is the other node's now: nothing to give up.
            if let Some(remote) = self.cluster.as_deref_mut() {
                remote.changed.retain(|k| &**k != key);
            }
        }
        let remote = self.cluster.as_deref_mut().expect("checked above");
        let old = match presence.clone() {
            Some(p) => remote.users.insert(key.into(), p),
            None => remote.users.remove(key),
        };
        if let Some(o) = &old {
            let k = o.room.to_ascii_lowercase();
            if let Some(entry) = remote.rooms.get_mut(k.as_str()) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    remote.rooms.remove(k.as_str());
                }
            }
        }
        if let Some(p) = &presence {
            let entry = remote
                .rooms
                .entry(p.room.to_ascii_lowercase().into())
                .or_insert((p.room.clone(), 0));
            entry.1 += 1;
        }
        match (old, presence) {
            (None, Some(p)) => self.tell_news(&p.room, &p.name, NoticeKind::Join, out),
            (Some(o), None) => {
                let reason = CloseReason::PeerClosed;
                self.tell_news(&o.room, &o.name, NoticeKind::Disconnect { reason }, out)
            }
            (Some(o), Some(p)) if !o.room.eq_ignore_ascii_case(&p.room) => {
                self.tell_news(&o.room, &o.name, NoticeKind::Leave, out);
                self.tell_news(&p.room, &p.name, NoticeKind::Join, out);
            }
            (Some(o), Some(p)) if o.status != p.status || o.note != p.note => {
                let kind = NoticeKind::Status {
                    status: p.status,
                    note: p.note.clone(),
                };
                self.tell_news(&p.room, &p.name, kind, out)
            }
            _ => {}
        }
    }

    /// Tells the members here of `room` what happened to `name`, a user
    /// of another node, if the room is small enough.
    fn tell_news(&self, room: &str, name: &Name, kind: NoticeKind, out: &mut Outbox) {
        let key = room.to_ascii_lowercase();
        let Some(&id) = self.room_ids.get(key.as_str()) else {
            return;
        };
        let r = &self.rooms[id];
        if r.members.len() + self.remote_members(&key) > self.cfg.announce_limit {
            return;
        }
        let notice = Notice {
            kind,
            name: name.clone(),
            room: r.name.clone(),
            you: false,
            topic: None,
        };
        out.send_all(r.members.iter().copied(), Event::Notice(notice));
    }

    /// Users of other nodes in the room `key` (lower-cased).
    pub(super) fn remote_members(&self, key: &str) -> usize {
        self.cluster
            .as_deref()
            .and_then(|r| r.rooms.get(key))
            .map_or(0, |e| e.1)
    }

    /// Users of other nodes in `key`, as listings show them.
    pub(super) fn remote_infos(&self, room: Option<&str>) -> Vec<UserInfo> {
        let Some(remote) = self.cluster.as_deref() else {
            return Vec::new();
        };
        remote
            .users
            .iter()
            .filter(|(_, p)| room.is_none_or(|r| p.room.eq_ignore_ascii_case(r)))
            .map(|(key, p)| UserInfo {
                name: p.name.clone(),
                status: p.status,
                note: p.note.clone(),
                role: self.accounts.get(&**key).map_or(Role::User, |a| a.role),
            })
            .collect()
    }

    /// Rooms with users of other nodes only, as `/rooms` lists them.
    pub(super) fn remote_rooms(&self) -> impl Iterator<Item = RoomInfo> + '_ {
        self.cluster.iter().flat_map(move |remote| {
            remote
                .rooms
                .iter()
                .filter(|(key, _)| !self.room_ids.contains_key(*key))
                .map(|(_, (name, users))| RoomInfo {
                    name: name.clone(),
                    users: *users,
                })
        })
    }

    /// The holder of `key` on another node, for a direct message.
    pub(super) fn remote_user(&self, key: &str) -> Option<Name> {
        let remote = self.cluster.as_deref()?;
        remote.users.get(key).map(|p| p.name.clone())
    }

    /// Drops the rooms made only to record another node's message.
    pub(super) fn drop_transient_rooms(&mut self) {
        let Some(remote) = self.cluster.as_deref_mut() else {
            return;
        };
        if remote.transient.is_empty() {
            return;
        }
        for id in std::mem::take(&mut remote.transient) {
            if id != self.lobby
                && let Some(r) = self.rooms.get(id)
                && r.members.is_empty()
            {
                let gone = self.rooms.remove(id);
                self.room_ids
                    .remove(gone.name.to_ascii_lowercase().as_str());
                self.history.release(gone.history);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::*;
    use super::*;

    /// A node `n1` of a cluster, recording history.
    fn node() -> Script {
        let mut s = Script::with(ChatConfig::default());
        s.chat.join_cluster("n1");
        s.chat.set_clock(Timestamp(1_763_733_720), s.now);
        s
    }

    /// Names `c` `name` through a granted claim.
    fn named(s: &mut Script, name: &str) -> ConnId {
        let c = s.open();
        s.take();
        assert!(s.say(c, name).is_empty(), "nothing before the claim");
        let Job::Claim {
            name: claimed,
            room,
            takeover,
            ..
        } = &s.jobs[0]
        else {
            panic!("a claim first: {:?}", s.jobs)
        };
        assert_eq!((&**claimed, &**room, *takeover), (name, "lobby", false));
        let key = name.to_ascii_lowercase().into();
        s.answer(Outcome::Claimed { key, ok: true });
        c
    }

    fn remote(name: &str, node: &str, room: &str) -> Option<Presence> {
        Some(Presence {
            name: name.into(),
            node: node.into(),
            room: room.into(),
            status: Status::Online,
            note: None,
        })
    }

    #[test]
    fn a_name_is_claimed_before_its_user_is_in_and_refused_if_held() {
        let mut s = node();
        let c = s.open();
        s.take();
        s.say(c, "alice");
        let seen = s.answer(Outcome::Claimed {
            key: "alice".into(),
            ok: false,
        });
        assert_eq!(
            seen[&c.0],
            got(&[
                "! name \"alice\" is taken, choose another",
                "* choose a name:"
            ])
        );
        s.say(c, "alice");
        s.jobs.clear();
        // Held by a user of another node: refused without asking.
        s.chat
            .remote_presence("bob", remote("Bob", "n2", "lobby"), &mut s.out);
        s.take();
        assert_eq!(
            s.say(c, "bob")[&c.0][0],
            "! name \"bob\" is taken, choose another"
        );
        assert!(s.jobs.is_empty());
        let a = named(&mut s, "carol");
        assert_eq!(
            s.take_presence_keys(),
            vec![("carol".to_string(), Some("lobby".to_string()))]
        );
        s.say(a, "/quit");
        s.chat.disconnect(a, CloseReason::Quit, &mut s.out);
        assert_eq!(s.take_presence_keys(), vec![("carol".to_string(), None)]);
    }

    #[test]
    fn a_claim_answered_after_its_connection_left_is_given_up() {
        let mut s = node();
        let c = s.open();
        s.say(c, "alice");
        s.chat.disconnect(c, CloseReason::PeerClosed, &mut s.out);
        s.answer(Outcome::Claimed {
            key: "alice".into(),
            ok: true,
        });
        assert_eq!(s.take_presence_keys(), vec![("alice".to_string(), None)]);
    }

    #[test]
    fn room_messages_wait_for_the_clusters_order() {
        let mut s = node();
        let a = named(&mut s, "alice");
        let b = named(&mut s, "bob");
        assert!(
            s.say(a, "hello").is_empty(),
            "not delivered before it comes back"
        );
        assert!(
            matches!(&s.shared[..], [Shared::Room { room, text, .. }] if &**room == "lobby" && &**text == "hello")
        );
        // It comes back numbered by the stream; another room's message
        // took 7 in between.
        s.chat.remote_room(
            5,
            "lobby",
            "alice",
            "hello",
            Timestamp(1_763_733_720),
            &mut s.out,
        );
        s.chat.remote_room(
            6,
            "side",
            "carol",
            "elsewhere",
            Timestamp(1_763_733_720),
            &mut s.out,
        );
        s.chat.remote_room(
            8,
            "lobby",
            "carol",
            "again",
            Timestamp(1_763_733_720),
            &mut s.out,
        );
        let seen = s.take();
        assert_eq!(seen[&b.0], got(&["<alice> hello", "<carol> again"]));
        assert_eq!(seen[&a.0], got(&["<carol> again"]));
        let chunks = s.chat.take_records();
        let firsts: Vec<(String, u64, usize)> = chunks
            .iter()
            .map(|c| (c.room.to_string(), c.first, c.count))
            .collect();
        assert_eq!(
            firsts,
            vec![
                ("lobby".into(), 5, 1),
                ("side".into(), 6, 1),
                ("lobby".into(), 8, 1)
            ],
            "a skip in a room's numbers starts a new chunk"
        );
        // The room made only to record was dropped; its history stays.
        assert_eq!(s.chat.room_count(), 1);
        let listing = s.say(b, "/history");
        assert_eq!(listing[&b.0][0], "* history of #lobby: 2 messages");
    }

    #[test]
    fn users_of_other_nodes_count_and_are_announced() {
        let mut s = node();
        let a = named(&mut s, "alice");
        s.chat
            .remote_presence("bob", remote("Bob", "n2", "lobby"), &mut s.out);
        assert_eq!(s.take()[&a.0], got(&["* Bob has joined #lobby"]));
        s.chat
            .remote_presence("dave", remote("dave", "n3", "side"), &mut s.out);
        assert!(s.take().is_empty(), "not in alice's room");
        assert_eq!(
            s.say(a, "/who")[&a.0],
            got(&[
                "* users in #lobby: 2",
                "*   alice online",
                "*   Bob online",
                "* end of /who"
            ])
        );
        assert_eq!(
            s.say(a, "/rooms")[&a.0],
            got(&[
                "* rooms: 2",
                "*   #lobby 2",
                "*   #side 1",
                "* end of /rooms"
            ])
        );
        // Direct messages to them go to the cluster.
        assert!(s.say(a, "@bob:psst").is_empty());
        assert!(matches!(&s.shared[..], [Shared::Direct { to, .. }] if &**to == "Bob"));
        s.chat
            .remote_presence("bob", remote("Bob", "n2", "side"), &mut s.out);
        assert_eq!(s.take()[&a.0], got(&["* Bob has left #lobby"]));
        s.chat.remote_presence("dave", None, &mut s.out);
        assert_eq!(
            s.say(a, "/users")[&a.0],
            got(&[
                "* users: 2",
                "*   alice online",
                "*   Bob online",
                "* end of /users"
            ])
        );
        // This node's own entries are not users of another node.
        s.chat
            .remote_presence("alice", remote("alice", "n1", "lobby"), &mut s.out);
        assert!(s.take().is_empty());
        assert!(s.closed.is_empty());
    }

    #[test]
    fn another_node_taking_a_name_over_replaces_its_holder_here() {
        let mut s = node();
        let a = named(&mut s, "alice");
        let b = named(&mut s, "bob");
        s.take_presence_keys();
        s.chat
            .remote_presence("alice", remote("alice", "n2", "lobby"), &mut s.out);
        let seen = s.take();
        assert!(s.closed.contains(&(a, CloseReason::Replaced)));
        assert_eq!(seen[&b.0][1], "* alice has joined #lobby");
        // The entry is the other node's: this node does not give it up.
        s.chat.disconnect(a, CloseReason::Replaced, &mut s.out);
        assert!(s.take_presence_keys().iter().all(|(k, _)| k != "alice"));
        assert!(s.chat.remote_user("alice").is_some());
        assert_eq!(s.say(b, "/rooms")[&b.0][1], "*   #lobby 2");
    }

    impl Script {
        /// The names whose presence this node tells, with their rooms.
        fn take_presence_keys(&mut self) -> Vec<(String, Option<String>)> {
            self.chat
                .take_presence()
                .into_iter()
                .map(|(k, p)| (k.to_string(), p.map(|p| p.room.to_string())))
                .collect()
        }
    }
}
