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
                self.choose_name(conn, &name, room.as_deref(), None, out);
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
                self.accounts.insert(key.clone(), name.clone());
                self.user_mut(conn).account = Some(key);
                out.send(conn, Event::Info(Info::Registered { name }));
            }
            (Wait::Register { name }, Outcome::AlreadyRegistered) => {
                self.accounts
                    .insert(name.to_ascii_lowercase().into(), name.clone());
                out.send(conn, error(ProtoError::AlreadyRegistered(name.to_string())));
            }
            (Wait::Passwd { name }, Outcome::Done) => {
                self.throttle.succeeded(&name.to_ascii_lowercase());
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
            (Wait::Entering { room, name }, Outcome::History(messages)) => {
                if !self.history.has(&room) {
                    let older = messages.len() >= self.history.cap();
                    self.history.load(&room, messages, older);
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
            (Wait::History { room }, Outcome::History(messages)) => out.send(
                conn,
                Event::History {
                    room,
                    messages,
                    listing: true,
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
                self.choose_name(conn, strip_hash(name), None, None, out)
            }
            Command::Connect {
                name,
                room,
                password,
            } => self.choose_name(
                conn,
                strip_hash(name),
                room.map(strip_hash),
                Some(password.unwrap_or("")),
                out,
            ),
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
        if let Some(registered) = self.accounts.get(name.to_ascii_lowercase().as_str()) {
            let name = registered.clone();
            return match password {
                None => self.ask_password(conn, name, out),
                Some("") => refuse(ProtoError::PasswordRequired(name.to_string()), out),
                Some(password) => self.login(conn, name, room, password, false, out),
            };
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
        if let Some(r) = room.as_deref().filter(|r| self.needs_load(r)) {
            let wait = Wait::Entering {
                room: r.into(),
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
        self.user_mut(conn).name = Some(name.clone());
        let id = match room {
            Some(r) => self.room_id(&r),
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
        let own = self
            .user(conn)
            .and_then(|u| u.account.as_deref())
            .is_some_and(|a| *a == *key);
        match self.names.get(key.as_str()) {
            Some(&holder) if holder != conn => Err(ProtoError::NameTaken(name.to_string())),
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
