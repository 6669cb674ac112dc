//! Naming and logins: choosing a name before the handshake ends, password
//! questions and checks (handed out as jobs, answered later, slowed by
//! the throttle), replacing an older connection, and the answers of jobs.
//! Part of `Chat`; no sockets, no bytes.

use super::*;

impl Chat {
    /// The outcome of a job handed out earlier. Outcomes for connections
    /// that have gone since are dropped.
    pub fn job_done(&mut self, ticket: Ticket, outcome: Outcome, out: &mut Outbox) {
        let conn = ticket.conn;
        if let Some((key, addr)) = self.checking.remove(&(conn.0, ticket.serial)) {
            self.throttle.ended(&key, addr);
        }
        // An account found missing is nobody's any more, whether or not
        // the connection that asked is still here.
        if let Outcome::NoAccount = outcome
            && let Some(Some(user)) = self.users.get(conn.0)
            && user.serial == ticket.serial
            && let Some(Wait::Login { name, .. } | Wait::Passwd { name }) = &user.wait
        {
            let key: Box<str> = name.to_ascii_lowercase().into();
            self.accounts.remove(&key);
            self.release_claims(&key);
        }
        let here = self.users.get(conn.0).and_then(Option::as_ref);
        if let Outcome::Claimed { key, ok: true } = &outcome
            && here.is_none_or(|u| u.serial != ticket.serial || u.gone)
        {
            // Nobody here to take it: given up again.
            self.claim_granted(None, key);
        }
        let Some(user) = self.users.get_mut(conn.0).and_then(Option::as_mut) else {
            return;
        };
        if user.serial != ticket.serial || user.gone {
            return;
        }
        let Some(wait) = user.wait.take() else { return };
        let addr = user.addr;
        let error = |e| Event::Error(e);
        match (wait, outcome) {
            (Wait::Login { name, room, .. }, Outcome::Done) => {
                let key = name.to_ascii_lowercase();
                self.throttle.succeeded(&key);
                self.counts.logins_succeeded += 1;
                self.logged_in(conn, name, room, key.into(), out);
            }
            (Wait::Login { name, room, .. }, Outcome::NoAccount) => {
                // Deleted by an operator since: the name is free to take.
                self.choose_name(conn, &name, room.as_deref(), None, None, out);
            }
            (Wait::Login { name, prompted, .. }, Outcome::WrongPassword) => {
                self.defer_wrong(conn, addr, name, true, prompted)
            }
            (Wait::Login { name, prompted, .. }, _) => {
                self.counts.logins_busy += 1;
                out.send(conn, error(ProtoError::ServerBusy));
                if prompted {
                    self.ask_password(conn, name, out);
                }
            }
            (Wait::Register { name }, Outcome::Done) => {
                let key: Box<str> = name.to_ascii_lowercase().into();
                self.accounts.entry(key.clone()).or_insert(Account {
                    name: name.clone(),
                    role: Role::User,
                    tokens: 0,
                });
                let token = self.token_for(&key);
                self.user_mut(conn).account = Some(key);
                out.send(conn, Event::Info(Info::Registered { name, token }));
            }
            (Wait::Register { name }, Outcome::AlreadyRegistered) => {
                self.accounts
                    .entry(name.to_ascii_lowercase().into())
                    .or_insert(Account {
                        name: name.clone(),
                        role: Role::User,
                        tokens: 0,
                    });
                out.send(conn, error(ProtoError::AlreadyRegistered(name.to_string())));
            }
            (Wait::Passwd { name }, Outcome::Done) => {
                let key = name.to_ascii_lowercase();
                self.throttle.succeeded(&key);
                // Sessions signed in with the old password end.
                self.end_tokens(&key, out);
                out.send(conn, Event::Info(Info::PasswordChanged { name }));
            }
            (Wait::Passwd { name }, Outcome::WrongPassword) => {
                self.defer_wrong(conn, addr, name, false, false)
            }
            (Wait::Passwd { name }, Outcome::NoAccount) => {
                self.accounts.remove(name.to_ascii_lowercase().as_str());
                self.user_mut(conn).account = None;
                out.send(conn, error(ProtoError::NotRegistered(name.to_string())));
            }
            (
                Wait::Entering { room, name },
                outcome @ (Outcome::History(_) | Outcome::Resumed { .. }),
            ) => {
                let resume = self.users[conn.0]
                    .as_mut()
                    .and_then(|u| u.resume.as_deref_mut())
                    .filter(|r| r.same_epoch);
                match (resume, outcome) {
                    (Some(r), Outcome::Resumed { messages, next }) => {
                        // What the database had after the client's `seq`;
                        // memory learns the room from it if it must, its
                        // numbering from the database, never the client.
                        if !self.history.has(&room) {
                            let older = messages.first().is_none_or(|m| m.seq > 0);
                            self.history.load_after(&room, &messages, older, next);
                        }
                        r.fetched = Some(messages);
                    }
                    (_, Outcome::History(messages)) if !self.history.has(&room) => {
                        let older = messages.len() >= self.history.cap();
                        self.history.load(&room, messages, older);
                    }
                    _ => {}
                }
                match name {
                    None => self.move_to(conn, &room, out),
                    // Someone may have taken the name meanwhile.
                    Some(name) => match self.check_name_free(conn, &name) {
                        Ok(()) => self.enter_named(conn, name, Some(room), out),
                        Err(e) => {
                            out.send(conn, error(e));
                            out.send(conn, Event::AskName);
                        }
                    },
                }
            }
            (Wait::Entering { name: Some(_), .. }, _) => {
                out.send(conn, error(ProtoError::ServerBusy));
                out.send(conn, Event::AskName);
            }
            (Wait::Claim { name, room, rename }, Outcome::Claimed { key, ok: true }) => {
                self.claim_granted(Some(conn), &key);
                let current = self.user(conn).and_then(|u| u.name.clone());
                match current {
                    Some(old) if rename => self.rename(conn, &old, &name, out),
                    _ => self.take_name(conn, name, room, out),
                }
            }
            (Wait::Claim { name, rename, .. }, outcome) => {
                let e = match outcome {
                    Outcome::Claimed { .. } => ProtoError::NameTaken(name.to_string()),
                    _ => ProtoError::ServerBusy,
                };
                out.send(conn, error(e));
                if !rename {
                    out.send(conn, Event::AskName);
                }
            }
            (Wait::History { room }, Outcome::History(messages)) => out.send(
                conn,
                Event::History {
                    room,
                    messages,
                    listing: true,
                    truncated: false,
                },
            ),
            (_, _) => out.send(conn, error(ProtoError::ServerBusy)),
        }
    }

    /// A wrong password is answered once its delay is over.
    pub(super) fn defer_wrong(
        &mut self,
        conn: ConnId,
        addr: IpAddr,
        name: Name,
        login: bool,
        prompted: bool,
    ) {
        if login {
            self.counts.logins_failed += 1;
        }
        let delay = self
            .throttle
            .failed(&name.to_ascii_lowercase(), addr, self.now);
        let user = self.user_mut(conn);
        user.wait = Some(Wait::Wrong {
            name,
            login,
            prompted,
        });
        let serial = user.serial;
        self.answers
            .push(Reverse((self.now + delay, conn.0, serial)));
    }

    /// Answers one wrong password whose delay is over, if any; returns the
    /// connection answered.
    pub fn due_answer(&mut self, now: Instant, out: &mut Outbox) -> Option<ConnId> {
        // A queued check that comes due is judged against this time.
        self.now = self.now.max(now);
        while let Some(&Reverse((at, key, serial))) = self.answers.peek() {
            if at > now {
                return None;
            }
            self.answers.pop();
            let conn = ConnId(key);
            let Some(user) = self.users.get_mut(key).and_then(Option::as_mut) else {
                continue;
            };
            if user.serial != serial || user.gone {
                continue;
            }
            let (name, login, prompted) = match user.wait.take() {
                Some(Wait::Wrong {
                    name,
                    login,
                    prompted,
                }) => (name, login, prompted),
                Some(Wait::Queued {
                    name,
                    room,
                    prompted,
                    password,
                }) => {
                    // Its turn has come: check it now (or wait again,
                    // already counted as throttled).
                    self.check_login(conn, name, room, &password, prompted, out);
                    return Some(conn);
                }
                other => {
                    user.wait = other;
                    continue;
                }
            };
            out.send(
                conn,
                Event::Error(ProtoError::WrongPassword(name.to_string())),
            );
            if login {
                user.failures += 1;
                if user.failures >= MAX_PASSWORD_FAILURES {
                    user.gone = true;
                    out.close(conn, CloseReason::WrongPassword);
                } else if prompted {
                    self.ask_password(conn, name, out);
                }
            }
            return Some(conn);
        }
        None
    }

    /// When `due_answer` next has something to do.
    pub fn next_answer(&self) -> Option<Instant> {
        self.answers.peek().map(|r| r.0.0)
    }

    pub(super) fn naming(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        match cmd {
            Command::Say(name) | Command::Nick(name) => {
                self.choose_name(conn, strip_hash(name), None, None, None, out)
            }
            Command::Connect {
                name,
                room,
                password,
                token,
                since,
            } => {
                let epoch = self.epoch.clone();
                self.user_mut(conn).resume = since.map(|s| {
                    Box::new(Resume {
                        seq: s.seq,
                        same_epoch: s.epoch == &*epoch,
                        fetched: None,
                    })
                });
                self.choose_name(
                    conn,
                    strip_hash(name),
                    room.map(strip_hash),
                    Some(password.unwrap_or("")),
                    token,
                    out,
                )
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
    /// not and asks again. A registered name needs its password: the JSON
    /// `connect` brings it (`password` is `Some`, empty if missing); in
    /// text mode the user is asked for it.
    pub(super) fn choose_name(
        &mut self,
        conn: ConnId,
        name: &str,
        room: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
        out: &mut Outbox,
    ) {
        let refuse = |e, out: &mut Outbox| {
            out.send(conn, Event::Error(e));
            out.send(conn, Event::AskName);
        };
        if !valid_name(name) {
            return refuse(ProtoError::NameInvalid(clip(name)), out);
        }
        if let Some(r) = room.filter(|r| !valid_name(r)) {
            return refuse(ProtoError::RoomInvalid(clip(r)), out);
        }
        let room: Option<Name> = room.map(Into::into);
        let key = name.to_ascii_lowercase();
        if let Some(until) = self.moderation.name_ban(&key, self.clock) {
            let name = name.to_string();
            return refuse(ProtoError::NameBanned { name, until }, out);
        }
        if let Some(registered) = self.accounts.get(key.as_str()) {
            let name = registered.name.clone();
            if let Some(token) = token {
                // A session token: no password check, no throttle; one
                // that does not work is no attempt either.
                if self.token_works(&key, token) {
                    return self.logged_in(conn, name, room, key.into(), out);
                }
                let e = ProtoError::TokenRefused(name.to_string());
                return refuse(e, out);
            }
            return match password {
                None => self.ask_password(conn, name, out),
                Some("") => refuse(ProtoError::PasswordRequired(name.to_string()), out),
                Some(password) => self.login(conn, name, room, password, false, out),
            };
        }
        if token.is_some() {
            // A token for a name no longer registered (deleted since).
            return refuse(ProtoError::TokenRefused(name.to_string()), out);
        }
        if let Err(e) = self.check_name_free(conn, name) {
            return refuse(e, out);
        }
        self.take_name(conn, name.into(), room, out);
    }

    pub(super) fn ask_password(&mut self, conn: ConnId, name: Name, out: &mut Outbox) {
        self.user_mut(conn).wait = Some(Wait::Password { name: name.clone() });
        out.send(conn, Event::PasswordPrompt { name });
    }

    /// A login attempt with `password` for the registered `name`.
    pub(super) fn login(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        password: &str,
        prompted: bool,
        out: &mut Outbox,
    ) {
        if self.check_login(conn, name, room, password, prompted, out) {
            self.counts.logins_throttled += 1;
        }
    }

    /// Checks `password` for the registered `name` off the loop; a
    /// password of impossible length is wrong without being hashed.
    /// Returns true if the throttle made it wait instead.
    pub(super) fn check_login(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        password: &str,
        prompted: bool,
        out: &mut Outbox,
    ) -> bool {
        let addr = self.user_mut(conn).addr;
        if check_password(password).is_err() {
            self.defer_wrong(conn, addr, name, true, prompted);
            return false;
        }
        if let Some(at) = self
            .throttle
            .ready_at(&name.to_ascii_lowercase(), addr, self.now)
        {
            let user = self.user_mut(conn);
            user.wait = Some(Wait::Queued {
                name,
                room,
                prompted,
                password: password.to_string(),
            });
            let serial = user.serial;
            self.answers.push(Reverse((at, conn.0, serial)));
            return true;
        }
        let key: Box<str> = name.to_ascii_lowercase().into();
        self.throttle.began(&key, addr);
        let serial = self.user_mut(conn).serial;
        self.checking.insert((conn.0, serial), (key, addr));
        let wait = Wait::Login {
            name: name.clone(),
            room,
            prompted,
        };
        self.hand_out(conn, wait, out, |ticket| Job::Login {
            ticket,
            name,
            password: password.to_string(),
        });
        false
    }

    /// The password was right: an older connection holding the name is
    /// replaced (told and closed), and this one takes the name.
    pub(super) fn logged_in(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        key: Box<str>,
        out: &mut Outbox,
    ) {
        if let Some(&old) = self.names.get(&key)
            && old != conn
        {
            let reason = CloseReason::Replaced;
            self.announce(old, NoticeKind::Disconnect { reason }, true, out);
            self.remove(old);
            self.user_mut(old).gone = true;
            out.close(old, reason);
        }
        let user = self.user_mut(conn);
        user.account = Some(key);
        user.failures = 0;
        self.take_name(conn, name, room, out);
    }

    /// Names `conn` and enters `room` (the lobby if `None`): it is told
    /// where it is, receives the room's recent history, and the room is
    /// told it joined.
    pub(super) fn take_name(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        out: &mut Outbox,
    ) {
        if !self.has_claim(conn, &name.to_ascii_lowercase()) {
            return self.claim(conn, name, room, false, out);
        }
        let target = room.as_deref().unwrap_or(LOBBY);
        if self.needs_load(target) || self.resume_needs_load(conn, target) {
            let wait = Wait::Entering {
                room: target.into(),
                name: Some(name),
            };
            return self.load_then_enter(conn, wait, out);
        }
        self.enter_named(conn, name, room, out);
    }

    /// `take_name` once the room's history is in memory.
    pub(super) fn enter_named(
        &mut self,
        conn: ConnId,
        name: Name,
        room: Option<Name>,
        out: &mut Outbox,
    ) {
        self.names.insert(name.to_ascii_lowercase().into(), conn);
        self.settle_claim(conn);
        self.user_mut(conn).name = Some(name.clone());
        let id = match room {
            Some(r) => self.room_id(&r),
            None => self.lobby,
        };
        self.enter(conn, id);
        let key = name.to_ascii_lowercase();
        let own = self.user(conn).and_then(|u| u.account.as_deref()) == Some(&*key);
        let token = own.then(|| self.token_for(&key)).flatten();
        let room = &self.rooms[id];
        out.send(
            conn,
            Event::Connected {
                name,
                room: room.name.clone(),
                users: room.members.len() + self.remote_members(&room.name.to_ascii_lowercase()),
                topic: room.topic.clone(),
                epoch: self.epoch.clone(),
                token,
            },
        );
        self.replay(conn, out);
        self.announce(conn, NoticeKind::Join, false, out);
    }

    /// Whether `conn` may take `name`: valid, not held by another user,
    /// and not someone else's account.
    pub(super) fn check_name_free(&self, conn: ConnId, name: &str) -> Result<(), ProtoError> {
        if !valid_name(name) {
            return Err(ProtoError::NameInvalid(clip(name)));
        }
        let key = name.to_ascii_lowercase();
        if let Some(until) = self.moderation.name_ban(&key, self.clock) {
            let name = name.to_string();
            return Err(ProtoError::NameBanned { name, until });
        }
        let own = self
            .user(conn)
            .and_then(|u| u.account.as_deref())
            .is_some_and(|a| *a == *key);
        match self.names.get(key.as_str()) {
            Some(&holder) if holder != conn => Err(ProtoError::NameTaken(name.to_string())),
            None if !own && self.held_elsewhere(&key) => {
                Err(ProtoError::NameTaken(name.to_string()))
            }
            _ if self.accounts.contains_key(key.as_str()) && !own => {
                Err(ProtoError::NameTaken(name.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Hands out the job `make` builds, with `conn` waiting for its
    /// outcome as `wait` says.
    pub(super) fn hand_out(
        &mut self,
        conn: ConnId,
        wait: Wait,
        out: &mut Outbox,
        make: impl FnOnce(Ticket) -> Job,
    ) {
        let user = self.user_mut(conn);
        user.wait = Some(wait);
        let ticket = Ticket {
            conn,
            serial: user.serial,
        };
        out.job(make(ticket));
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::*;
    use super::*;

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
            token: None,
            since: None,
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

    #[test]
    fn tokens_work_until_the_account_or_its_generation_changes() {
        let mut s = with_alice();
        s.chat.set_identity("e1", b"the server's secret");
        let token = s.chat.token_for("alice").expect("a token").to_string();
        let connect = |s: &mut Script, token: &str| {
            let c = s.open();
            s.take();
            let cmd = Command::Connect {
                name: "Alice",
                room: None,
                password: None,
                token: Some(token),
                since: None,
            };
            s.chat.handle(c, cmd, &mut s.out);
            (c, s.take())
        };
        let (c, out) = connect(&mut s, &token);
        assert!(
            out[&c.0][0].starts_with("* you joined #lobby as Alice"),
            "{out:?}"
        );
        s.chat.disconnect(c, CloseReason::Quit, &mut s.out);
        s.take();
        // A new generation (a logout, a new password) ends it.
        s.chat.end_tokens("alice", &mut s.out);
        let (c, out) = connect(&mut s, &token);
        assert_eq!(
            out[&c.0],
            got(&[
                "! the session token for Alice no longer works: log in again",
                "* choose a name:"
            ])
        );
        // So does deleting the account: the name is not taken as a guest's.
        let token = s.chat.token_for("alice").expect("a token").to_string();
        s.chat.set_accounts([], &mut s.out);
        let (c, out) = connect(&mut s, &token);
        assert_eq!(
            out[&c.0][0],
            "! the session token for Alice no longer works: log in again"
        );
    }
}
