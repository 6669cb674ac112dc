//! Rooms and routing: what a named user's commands do, entering and
//! leaving rooms (reading a room's history first if memory lacks it),
//! announcements within the announce limit, listings. Part of `Chat`.

use super::*;

impl Chat {
    /// Whether entering `room` needs its recent history from the database
    /// first: it has no members and memory holds no history for it.
    pub(super) fn needs_load(&self, room: &str) -> bool {
        self.cfg.history_keep > 0
            && !self
                .room_ids
                .contains_key(room.to_ascii_lowercase().as_str())
            && !self.history.has(room)
    }

    /// Whether `conn`, resuming after a `seq` of this epoch, needs the
    /// database for what it missed in `room`: memory does not hold it all.
    pub(super) fn resume_needs_load(&mut self, conn: ConnId, room: &str) -> bool {
        let Some(seq) = self
            .user(conn)
            .and_then(|u| u.resume.as_deref())
            .filter(|r| r.same_epoch)
            .map(|r| r.seq)
        else {
            return false;
        };
        if self.cfg.history_keep == 0 {
            return false;
        }
        if let Some(&id) = self.room_ids.get(room.to_ascii_lowercase().as_str()) {
            self.fold(id);
        }
        self.history
            .slot_of(room)
            .is_none_or(|slot| self.history.after(slot, seq, MAX_RESUME).is_none())
    }

    pub(super) fn load_then_enter(&mut self, conn: ConnId, wait: Wait, out: &mut Outbox) {
        let Wait::Entering { room, .. } = &wait else {
            unreachable!("only entering waits for a room's history")
        };
        let resume = self
            .user(conn)
            .and_then(|u| u.resume.as_deref())
            .filter(|r| r.same_epoch)
            .map(|r| r.seq);
        let room = room.clone();
        let (count, after) = match resume {
            Some(seq) => (MAX_RESUME, Some(seq)),
            None => (self.history.cap(), None),
        };
        self.hand_out(conn, wait, out, |ticket| Job::History {
            ticket,
            room,
            count,
            after,
            before: None,
        });
    }

    /// Sends `conn` the recent history of its room (JSON users always get
    /// the object, possibly empty): the newest `--history`, or, resuming,
    /// exactly what it missed.
    pub(super) fn replay(&mut self, conn: ConnId, out: &mut Outbox) {
        let id = self.user(conn).expect("present user").room;
        self.fold(id);
        let resume = self.user_mut(conn).resume.take();
        let room = &self.rooms[id];
        let slot = room.history;
        // Never more than are kept, so memory holds them all (but after a
        // SIGHUP raised --history, until the room has that many again).
        let n = self.cfg.history.min(self.cfg.history_keep);
        let (messages, truncated) = match resume.map(|r| *r) {
            None => (self.history.newest(slot, n), false),
            Some(r) if !r.same_epoch => (self.history.newest(slot, n), true),
            Some(Resume {
                seq,
                fetched: Some(mut fetched),
                ..
            }) => {
                // The database's part, then what was said since it was
                // read; if memory no longer reaches back that far, the
                // client is told it missed more.
                let from = fetched.last().map_or(seq, |m| m.seq);
                let gap = match self.history.after(slot, from, MAX_RESUME) {
                    Some((newer, more)) => {
                        fetched.extend(newer);
                        more
                    }
                    None => true,
                };
                let skip = fetched.len().saturating_sub(MAX_RESUME);
                (fetched.split_off(skip), gap || skip > 0)
            }
            Some(r) => self
                .history
                .after(slot, r.seq, MAX_RESUME)
                .unwrap_or_else(|| (self.history.newest(slot, n), true)),
        };
        out.send(
            conn,
            Event::History {
                room: room.name.clone(),
                messages,
                listing: false,
                truncated,
            },
        );
    }

    pub(super) fn command(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        let user = self.user(conn).expect("handle_line checked the user");
        let name = user.name.clone().expect("named users only");
        let room = user.room;
        match cmd {
            Command::Say(text) => {
                if let Err(e) = self.may_speak(conn, &name.to_ascii_lowercase(), Some(room)) {
                    return out.send(conn, Event::Error(e));
                }
                let text: std::sync::Arc<str> = text.into();
                if self.in_cluster() {
                    // Delivered when it comes back in the cluster's order.
                    let shared = Shared::Room {
                        room: self.rooms[room].name.clone(),
                        from: name,
                        text,
                        ts: self.clock,
                    };
                    return out.share(shared);
                }
                let seq = (self.cfg.history_keep > 0).then(|| self.record(room, &name, &text));
                self.counts.room_messages += 1;
                let r = &self.rooms[room];
                let event = Event::Message {
                    from: name,
                    room: r.name.clone(),
                    text,
                    ts: self.clock,
                    seq,
                };
                out.send_all(r.members.iter().copied().filter(|&m| m != conn), event);
            }
            Command::History(n) => self.list_history(conn, room, n, None, out),
            Command::HistoryBefore { count, before } => {
                self.list_history(conn, room, count, Some(before), out)
            }
            Command::JoinSince {
                room: target,
                since,
            } => {
                let same_epoch = since.epoch == &*self.epoch;
                self.user_mut(conn).resume = Some(Box::new(Resume {
                    seq: since.seq,
                    same_epoch,
                    fetched: None,
                }));
                self.join(conn, strip_hash(target), out);
                // Not entered (already there, or a bad name): nothing to resume.
                if !self.is_waiting(conn) {
                    self.user_mut(conn).resume = None;
                }
            }
            Command::Logout => {
                let key = name.to_ascii_lowercase();
                if self.user(conn).and_then(|u| u.account.as_deref()) == Some(&*key) {
                    self.end_tokens(&key, out);
                }
                out.send(conn, Event::Info(Info::LoggedOut));
            }
            Command::Register(password) => {
                if self
                    .accounts
                    .contains_key(name.to_ascii_lowercase().as_str())
                {
                    let e = ProtoError::AlreadyRegistered(name.to_string());
                    return out.send(conn, Event::Error(e));
                }
                if let Err(e) = check_password(password) {
                    return out.send(conn, Event::Error(e));
                }
                if let Err(e) = self.may_register(conn) {
                    return out.send(conn, Event::Error(e));
                }
                let wait = Wait::Register { name: name.clone() };
                self.hand_out(conn, wait, out, |ticket| Job::Register {
                    ticket,
                    name,
                    password: password.to_string(),
                });
            }
            Command::Passwd { old, new } => {
                let key = name.to_ascii_lowercase();
                let own = self.user(conn).and_then(|u| u.account.as_deref()) == Some(&*key);
                if !own || !self.accounts.contains_key(key.as_str()) {
                    let e = ProtoError::NotRegistered(name.to_string());
                    return out.send(conn, Event::Error(e));
                }
                if let Err(e) = check_password(new) {
                    return out.send(conn, Event::Error(e));
                }
                let wait = Wait::Passwd { name: name.clone() };
                self.hand_out(conn, wait, out, |ticket| Job::Passwd {
                    ticket,
                    name,
                    old: old.to_string(),
                    new: new.to_string(),
                });
            }
            Command::Msg { to, text } => match self.names.get(to.to_ascii_lowercase().as_str()) {
                Some(_) if let Err(e) = self.may_speak(conn, &name.to_ascii_lowercase(), None) => {
                    out.send(conn, Event::Error(e))
                }
                Some(&target) => {
                    self.counts.direct_messages += 1;
                    out.send(
                        target,
                        Event::Direct {
                            from: name,
                            text: text.into(),
                            ts: self.clock,
                        },
                    )
                }
                None => match self.remote_user(to.to_ascii_lowercase().as_str()) {
                    Some(_)
                        if let Err(e) = self.may_speak(conn, &name.to_ascii_lowercase(), None) =>
                    {
                        out.send(conn, Event::Error(e))
                    }
                    Some(to) => {
                        let ts = self.clock;
                        let text = text.into();
                        out.share(Shared::Direct {
                            to,
                            from: name,
                            text,
                            ts,
                        })
                    }
                    None => out.send(conn, Event::Error(ProtoError::NoSuchUser(clip(to)))),
                },
            },
            Command::Nick(new) => self.rename(conn, &name, strip_hash(new), out),
            Command::Join(target) => self.join(conn, strip_hash(target), out),
            Command::Rooms => {
                let mut rooms: Vec<RoomInfo> = self
                    .rooms
                    .iter()
                    .map(|(_, r)| RoomInfo {
                        name: r.name.clone(),
                        users: r.members.len() + self.remote_members(&r.name.to_ascii_lowercase()),
                    })
                    .chain(self.remote_rooms())
                    .collect();
                rooms.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
                out.send(conn, Event::Rooms { rooms });
            }
            Command::Who => {
                let r = &self.rooms[room];
                let mut users = self.user_infos(r.members.iter().copied());
                if self.in_cluster() {
                    users.extend(self.remote_infos(Some(&r.name)));
                    users.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
                }
                out.send(
                    conn,
                    Event::Who {
                        room: r.name.clone(),
                        users,
                    },
                );
            }
            Command::Users => {
                let mut users = self.user_infos(self.names.values().copied());
                users.extend(self.remote_infos(None));
                users.extend(
                    self.accounts
                        .iter()
                        .filter(|(key, _)| {
                            !self.names.contains_key(*key) && !self.held_elsewhere(key)
                        })
                        .map(|(_, a)| UserInfo {
                            name: a.name.clone(),
                            status: Status::Offline,
                            note: None,
                            role: a.role,
                        }),
                );
                users.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
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
                self.presence_changed(&name.to_ascii_lowercase());
                self.announce(conn, NoticeKind::Status { status, note }, true, out);
            }
            Command::Quit(reason) => {
                let reason = reason.map(Into::into);
                self.announce(conn, NoticeKind::Quit { reason }, true, out);
                self.remove(conn);
                self.user_mut(conn).gone = true;
                out.close(conn, CloseReason::Quit);
            }
            cmd @ (Command::Kick { .. }
            | Command::Mute { .. }
            | Command::Unmute(_)
            | Command::Ban { .. }
            | Command::Unban(_)
            | Command::Bans
            | Command::Topic(_)
            | Command::Moderate(_)
            | Command::Wall(_)
            | Command::Whois(_)
            | Command::SetRole { .. }) => self.moderation_command(conn, cmd, out),
        }
    }

    /// `/history`: the newest `count` messages of `room` (before `seq`
    /// `before`, when given), from memory if it holds them, else from the
    /// database.
    fn list_history(
        &mut self,
        conn: ConnId,
        room: usize,
        count: usize,
        before: Option<u64>,
        out: &mut Outbox,
    ) {
        self.fold(room);
        let count = count.min(self.cfg.history_keep);
        let r = &self.rooms[room];
        let held = match before {
            None => self.history.recent(r.history, count),
            Some(seq) => self.history.before(r.history, seq, count),
        };
        match held {
            Some(messages) => out.send(
                conn,
                Event::History {
                    room: r.name.clone(),
                    messages,
                    listing: true,
                    truncated: false,
                },
            ),
            None => {
                let room = r.name.clone();
                let wait = Wait::History { room: room.clone() };
                self.hand_out(conn, wait, out, |ticket| Job::History {
                    ticket,
                    room,
                    count,
                    after: None,
                    before,
                });
            }
        }
    }

    pub(super) fn rename(&mut self, conn: ConnId, old: &Name, new: &str, out: &mut Outbox) {
        if let Err(e) = self.check_name_free(conn, new) {
            out.send(conn, Event::Error(e));
            return;
        }
        if **old == *new {
            let name = old.clone();
            out.send(conn, Event::Info(Info::AlreadyNamed { name }));
            return;
        }
        if !self.has_claim(conn, &new.to_ascii_lowercase()) {
            return self.claim(conn, new.into(), None, true, out);
        }
        self.names.remove(old.to_ascii_lowercase().as_str());
        self.names.insert(new.to_ascii_lowercase().into(), conn);
        self.settle_claim(conn);
        self.presence_changed(&old.to_ascii_lowercase());
        self.presence_changed(&new.to_ascii_lowercase());
        self.user_mut(conn).name = Some(new.into());
        self.announce(conn, NoticeKind::Nick { old: old.clone() }, true, out);
    }

    pub(super) fn join(&mut self, conn: ConnId, target: &str, out: &mut Outbox) {
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
        if self.needs_load(target) || self.resume_needs_load(conn, target) {
            let wait = Wait::Entering {
                room: target.into(),
                name: None,
            };
            return self.load_then_enter(conn, wait, out);
        }
        self.move_to(conn, target, out);
    }

    /// `join` once the room's history is in memory.
    pub(super) fn move_to(&mut self, conn: ConnId, target: &str, out: &mut Outbox) {
        self.announce(conn, NoticeKind::Leave, false, out);
        // The new room first: leaving the old one may drop the history of
        // rooms nobody is in, which the new one may just have had read.
        let id = self.room_id(target);
        self.leave_room(conn);
        self.enter(conn, id);
        self.announce(conn, NoticeKind::Join, true, out);
        self.replay(conn, out);
    }

    /// The room named `name` (valid), created if it does not exist.
    pub(super) fn room_id(&mut self, name: &str) -> usize {
        let key = name.to_ascii_lowercase();
        if let Some(&id) = self.room_ids.get(key.as_str()) {
            return id;
        }
        let settings = self.moderation.room(&key).cloned().unwrap_or_default();
        let id = self.rooms.insert(Room {
            name: name.into(),
            members: Vec::new(),
            history: self.history.slot(name),
            chunk: None,
            chunk_hint: 0,
            topic: settings.topic,
            moderated: settings.moderated,
        });
        self.room_ids.insert(key.into(), id);
        id
    }

    /// Tells `conn`'s room what happened to it (if the room is small enough)
    /// and, if `tell_actor`, the user too, who is always told.
    pub(super) fn announce(
        &self,
        conn: ConnId,
        kind: NoticeKind,
        tell_actor: bool,
        out: &mut Outbox,
    ) {
        let user = self.user(conn).expect("announce of a present user");
        let room = &self.rooms[user.room];
        let topic = match kind {
            NoticeKind::Join if tell_actor => room.topic.clone(),
            _ => None,
        };
        let notice = Notice {
            kind,
            name: user.name.clone().expect("announce of a named user"),
            room: room.name.clone(),
            you: false,
            topic: None,
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
                    topic,
                    ..notice
                }),
            );
        }
    }

    pub(super) fn user_infos(&self, conns: impl Iterator<Item = ConnId>) -> Vec<UserInfo> {
        let mut users: Vec<UserInfo> = conns
            .filter_map(|c| Some((c, self.user(c)?)))
            .filter_map(|(c, u)| {
                Some(UserInfo {
                    name: u.name.clone()?,
                    status: u.status,
                    note: u.note.clone(),
                    role: self.role_of(c),
                })
            })
            .collect();
        users.sort_unstable_by(|a, b| cmp_ignore_case(&a.name, &b.name));
        users
    }

    pub(super) fn enter(&mut self, conn: ConnId, room: usize) {
        let members = &mut self.rooms[room].members;
        let pos = members.len();
        members.push(conn);
        let user = self.user_mut(conn);
        user.room = room;
        user.pos = pos;
        if self.cluster.is_some()
            && let Some(name) = self.user(conn).and_then(|u| u.name.clone())
        {
            self.presence_changed(&name.to_ascii_lowercase());
        }
    }

    /// Takes a named user out of its room and out of the name index.
    pub(super) fn remove(&mut self, conn: ConnId) {
        if let Some(name) = self.user(conn).expect("present user").name.clone() {
            let key = name.to_ascii_lowercase();
            self.names.remove(key.as_str());
            self.presence_changed(&key);
        }
        self.leave_room(conn);
    }

    /// Takes `conn` out of its room, dropping the room if it empties and is
    /// not the lobby.
    pub(super) fn leave_room(&mut self, conn: ConnId) {
        let user = self.user(conn).expect("present user");
        let (room, pos) = (user.room, user.pos);
        let members = &mut self.rooms[room].members;
        members.swap_remove(pos);
        if let Some(&moved) = members.get(pos) {
            self.user_mut(moved).pos = pos;
        }
        if self.rooms[room].members.is_empty() && room != self.lobby {
            // Its recent messages reach its history before the slot can go.
            self.fold(room);
            let gone = self.rooms.remove(room);
            self.room_ids
                .remove(gone.name.to_ascii_lowercase().as_str());
            self.history.release(gone.history);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::*;
    use super::*;

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
