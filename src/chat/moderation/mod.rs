//! Moderation: what moderators and admins may do (kick, mute, ban, topic,
//! moderated rooms, wall, roles), `/whois`, the limits on registering,
//! and the changes and audit records handed out to be stored. Part of
//! `Chat`; the loop and the wire formats know nothing of roles.

use std::collections::VecDeque;
use std::fmt;

use super::*;
use crate::wire::cidr::Cidr;
use crate::wire::proto::{BanInfo, MAX_TOPIC_CHARS, ModEvent, ModKind, WhoisInfo};

/// The window of `--register-rate`.
pub const REGISTER_WINDOW_SECS: u64 = 3600;
/// Who a change made with `chatd accounts role` is said to be by.
pub const OPERATOR: &str = "operator";

/// A mute or a ban: until when (`None`: until lifted), by whom, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sanction {
    pub until: Option<Timestamp>,
    pub by: Name,
    pub reason: Option<Name>,
}

impl Sanction {
    fn active(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanctionKind {
    Mute,
    Ban,
}

impl SanctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Mute => "mute",
            SanctionKind::Ban => "ban",
        }
    }

    pub fn parse(s: &str) -> Option<SanctionKind> {
        match s {
            "mute" => Some(SanctionKind::Mute),
            "ban" => Some(SanctionKind::Ban),
            _ => None,
        }
    }
}

/// A room's settings, kept by its name while it has no members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomSettings {
    pub topic: Option<Name>,
    pub moderated: bool,
}

/// One moderation action, as the audit keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub ts: Timestamp,
    pub by: Name,
    pub action: &'static str,
    pub target: Name,
    pub reason: Option<Name>,
}

impl fmt::Display for AuditEntry {
    /// `TS BY ACTION TARGET [REASON]`, as `chatd audit` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.ts, self.by, self.action, self.target)?;
        match &self.reason {
            Some(r) => write!(f, " {r}"),
            None => Ok(()),
        }
    }
}

/// A change for the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Role {
        name: Name,
        role: Role,
    },
    /// Set (or replace) a mute or ban of `target`: a name, or an address
    /// range written as `Cidr` shows it.
    Sanction {
        kind: SanctionKind,
        target: Name,
        sanction: Sanction,
    },
    Lift {
        kind: SanctionKind,
        target: Name,
    },
    Room {
        room: Name,
        settings: RoomSettings,
        /// Who changed them (told to the room's members on other nodes).
        by: Name,
    },
    Audit(AuditEntry),
    /// The account's session tokens are now of this generation.
    Tokens {
        name: Name,
        generation: u32,
    },
}

/// What the database holds of moderation, read at start-up.
#[derive(Clone, Debug, Default)]
pub struct ModState {
    pub sanctions: Vec<(SanctionKind, Name, Sanction)>,
    pub rooms: Vec<(Name, RoomSettings)>,
}

/// Mutes, bans, room settings and recent registrations.
#[derive(Default)]
pub(super) struct Moderation {
    /// Lower-cased name to its mute.
    mutes: HashMap<Box<str>, Sanction>,
    /// Lower-cased name to the name as banned and its ban.
    name_bans: HashMap<Box<str>, (Name, Sanction)>,
    net_bans: Vec<(Cidr, Sanction)>,
    /// Lower-cased room name to its settings, for rooms with any set.
    rooms: HashMap<Box<str>, (Name, RoomSettings)>,
    /// Registrations per address within the last hour.
    registrations: HashMap<IpAddr, VecDeque<Timestamp>>,
}

impl Moderation {
    /// The end of the ban on `addr` (`Some(None)`: untimed), if banned.
    pub(super) fn address_ban(&self, addr: IpAddr, now: Timestamp) -> Option<Option<Timestamp>> {
        if self.net_bans.is_empty() {
            return None;
        }
        self.net_bans
            .iter()
            .find(|(net, s)| s.active(now) && net.contains(addr))
            .map(|(_, s)| s.until)
    }

    pub(super) fn name_ban(&self, key: &str, now: Timestamp) -> Option<Option<Timestamp>> {
        self.name_bans
            .get(key)
            .filter(|(_, s)| s.active(now))
            .map(|(_, s)| s.until)
    }

    /// The end of `key`'s mute, if muted. The common case, nobody muted,
    /// costs one length check.
    pub(super) fn mute(&self, key: &str, now: Timestamp) -> Option<Option<Timestamp>> {
        if self.mutes.is_empty() {
            return None;
        }
        self.mutes
            .get(key)
            .filter(|s| s.active(now))
            .map(|s| s.until)
    }

    pub(super) fn room(&self, key: &str) -> Option<&RoomSettings> {
        self.rooms.get(key).map(|(_, s)| s)
    }

    /// Counts a registration from `addr` now, or says in how many minutes
    /// the next one is allowed.
    fn register(&mut self, addr: IpAddr, rate: u32, now: Timestamp) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let recent = self.registrations.entry(addr).or_default();
        while recent
            .front()
            .is_some_and(|t| t.0 + REGISTER_WINDOW_SECS <= now.0)
        {
            recent.pop_front();
        }
        if recent.len() >= rate as usize {
            let free_at = recent[0].0 + REGISTER_WINDOW_SECS;
            return Err(free_at.saturating_sub(now.0).div_ceil(60).max(1));
        }
        recent.push_back(now);
        // Addresses that have not registered within the hour are dropped
        // now and then, so the table follows recent registrations.
        if self.registrations.len() > 4096 {
            self.registrations
                .retain(|_, r| r.back().is_some_and(|t| t.0 + REGISTER_WINDOW_SECS > now.0));
        }
        Ok(())
    }

    fn active_bans(&self, now: Timestamp) -> Vec<BanInfo> {
        let info = |target: Name, s: &Sanction| BanInfo {
            target,
            until: s.until,
            by: s.by.clone(),
            reason: s.reason.clone(),
        };
        let mut names: Vec<BanInfo> = self
            .name_bans
            .values()
            .filter(|(_, s)| s.active(now))
            .map(|(name, s)| info(name.clone(), s))
            .collect();
        names.sort_unstable_by(|a, b| cmp_ignore_case(&a.target, &b.target));
        names.extend(
            self.net_bans
                .iter()
                .filter(|(_, s)| s.active(now))
                .map(|(net, s)| info(net.to_string().into(), s)),
        );
        names
    }
}

/// What a ban is of.
enum BanTarget {
    Name(Name),
    Net(Cidr),
}

impl BanTarget {
    fn parse(target: &str) -> Result<BanTarget, ProtoError> {
        if let Ok(net) = target.parse::<Cidr>() {
            return Ok(BanTarget::Net(net));
        }
        if valid_name(target) {
            return Ok(BanTarget::Name(target.into()));
        }
        Err(ProtoError::BadPayload(format!(
            "\"{}\" is not a name, an address or an address range",
            clip(target)
        )))
    }

    /// How the ban is stored and listed: the name as given, or the range.
    fn shown(&self) -> Name {
        match self {
            BanTarget::Name(name) => name.clone(),
            BanTarget::Net(net) => net.to_string().into(),
        }
    }
}

fn forbidden(why: &str) -> ProtoError {
    ProtoError::Forbidden(why.to_string())
}

impl Chat {
    /// Mutes, bans and room settings from the database, at start-up.
    /// Those already over are left out.
    pub fn load_moderation(&mut self, state: ModState) {
        let now = self.clock;
        for (kind, target, sanction) in state.sanctions {
            if !sanction.active(now) {
                continue;
            }
            let key: Box<str> = target.to_ascii_lowercase().into();
            match (kind, target.parse::<Cidr>()) {
                (SanctionKind::Mute, _) => {
                    self.moderation.mutes.insert(key, sanction);
                }
                (SanctionKind::Ban, Ok(net)) => self.moderation.net_bans.push((net, sanction)),
                (SanctionKind::Ban, Err(_)) => {
                    self.moderation.name_bans.insert(key, (target, sanction));
                }
            }
        }
        for (room, settings) in state.rooms {
            let key: Box<str> = room.to_ascii_lowercase().into();
            if let Some(&id) = self.room_ids.get(&key) {
                self.rooms[id].topic = settings.topic.clone();
                self.rooms[id].moderated = settings.moderated;
            }
            self.moderation.rooms.insert(key, (room, settings));
        }
    }

    /// The role `conn` acts with: its account's, if it holds the name of
    /// the account it proved; guests are users.
    pub(super) fn role_of(&self, conn: ConnId) -> Role {
        let Some(user) = self.user(conn) else {
            return Role::User;
        };
        match (&user.name, &user.account) {
            (Some(name), Some(account)) if name.eq_ignore_ascii_case(account) => {
                self.accounts.get(&**account).map_or(Role::User, |a| a.role)
            }
            _ => Role::User,
        }
    }

    /// The role of the account named `key` (lower-cased), if registered.
    fn account_role(&self, key: &str) -> Role {
        self.accounts.get(key).map_or(Role::User, |a| a.role)
    }

    /// Whether `conn`, named `key`, may say something to a room (`room`)
    /// or, with `room` `None`, to a user.
    pub(super) fn may_speak(
        &self,
        conn: ConnId,
        key: &str,
        room: Option<usize>,
    ) -> Result<(), ProtoError> {
        if let Some(until) = self.moderation.mute(key, self.clock) {
            return Err(ProtoError::Muted { until });
        }
        if self.cfg.require_account
            && self
                .user(conn)
                .and_then(|u| u.account.as_deref())
                .is_none_or(|a| a != key)
        {
            return Err(ProtoError::AccountRequired);
        }
        if let Some(r) = room.map(|r| &self.rooms[r])
            && r.moderated
            && !self.role_of(conn).moderates()
        {
            return Err(ProtoError::Moderated(r.name.to_string()));
        }
        Ok(())
    }

    /// Whether `conn` may register now: registration is open and its
    /// address has not reached `--register-rate`. Counts it if so.
    pub(super) fn may_register(&mut self, conn: ConnId) -> Result<(), ProtoError> {
        if !self.cfg.registration_open {
            return Err(ProtoError::RegistrationClosed);
        }
        let addr = self.user(conn).expect("present user").addr;
        self.moderation
            .register(addr, self.cfg.register_rate, self.clock)
            .map_err(|minutes| ProtoError::TooManyRegistrations { minutes })
    }

    /// A moderation command from the named user `conn`.
    pub(super) fn moderation_command(&mut self, conn: ConnId, cmd: Command<'_>, out: &mut Outbox) {
        let result = match cmd {
            Command::Kick { name, reason } => self.kick(conn, name, reason, out),
            Command::Mute { name, secs, reason } => self.mute(conn, name, secs, reason, out),
            Command::Unmute(name) => self.unmute(conn, name, out),
            Command::Ban {
                target,
                secs,
                reason,
            } => self.ban(conn, target, secs, reason, out),
            Command::Unban(target) => self.unban(conn, target, out),
            Command::Bans => self.require(conn, Role::Moderator, "list bans").map(|()| {
                let bans = self.moderation.active_bans(self.clock);
                out.send(conn, Event::Bans { bans });
            }),
            Command::Topic(text) => self.topic(conn, text, out),
            Command::Moderate(on) => self.set_moderated(conn, on, out),
            Command::Wall(text) => self.wall(conn, text, out),
            Command::Whois(name) => self.whois(conn, name, out),
            Command::SetRole { name, role } => self.set_role(conn, name, role, out),
            _ => unreachable!("rooms::command passes moderation commands only"),
        };
        if let Err(e) = result {
            out.send(conn, Event::Error(e));
        }
    }

    /// `conn`'s name, if its role is at least `role`.
    fn require(&self, conn: ConnId, role: Role, what: &str) -> Result<(), ProtoError> {
        if self.role_of(conn) >= role {
            return Ok(());
        }
        let who = match role {
            Role::Admin => "admins",
            _ => "moderators and admins",
        };
        Err(forbidden(&format!("only {who} may {what}")))
    }

    fn actor(&self, conn: ConnId) -> Name {
        self.name_of(conn).cloned().expect("named user")
    }

    /// Whether `conn` may act on the user or account `key`: not on
    /// itself, and a moderator not on an admin.
    fn may_act_on(&self, conn: ConnId, key: &str) -> Result<(), ProtoError> {
        if self
            .name_of(conn)
            .is_some_and(|n| n.eq_ignore_ascii_case(key))
        {
            return Err(forbidden("not on yourself"));
        }
        let target_role = match self.names.get(key) {
            Some(&t) => self.role_of(t).max(self.account_role(key)),
            None => self.account_role(key),
        };
        if target_role == Role::Admin && self.role_of(conn) != Role::Admin {
            return Err(forbidden("a moderator cannot act on an admin"));
        }
        Ok(())
    }

    fn audit(
        &self,
        by: &Name,
        action: &'static str,
        target: Name,
        reason: Option<Name>,
        out: &mut Outbox,
    ) {
        out.store(Change::Audit(AuditEntry {
            ts: self.clock,
            by: by.clone(),
            action,
            target,
            reason,
        }));
    }

    /// Tells a moderation event about `target` (if connected) to it, to
    /// its room whatever the room's size, and to the actor, whose copy
    /// answers its request.
    fn tell(&self, actor: ConnId, target: Option<ConnId>, event: ModEvent, out: &mut Outbox) {
        if let Some(t) = target {
            self.tell_target(t, Some(actor), &event, out);
        }
        out.send(actor, Event::Moderation(event));
    }

    /// Tells a moderation event about `target` to it and to its room but
    /// the `actor`.
    fn tell_target(
        &self,
        target: ConnId,
        actor: Option<ConnId>,
        event: &ModEvent,
        out: &mut Outbox,
    ) {
        let Some(user) = self.user(target) else {
            return;
        };
        let members = &self.rooms[user.room].members;
        let others = members
            .iter()
            .copied()
            .filter(|&m| m != target && Some(m) != actor);
        out.send_all(others, Event::Moderation(event.clone()));
        let you = ModEvent {
            you: true,
            ..event.clone()
        };
        out.send(target, Event::Moderation(you));
    }

    /// Tells everyone in `room` but the actor, then the actor.
    fn tell_room(&self, actor: ConnId, room: usize, event: ModEvent, out: &mut Outbox) {
        let others = self.rooms[room].members.iter().copied();
        out.send_all(
            others.filter(|&m| m != actor),
            Event::Moderation(event.clone()),
        );
        out.send(actor, Event::Moderation(event));
    }

    fn target(&self, name: &str) -> Result<(Box<str>, ConnId), ProtoError> {
        let key: Box<str> = name.to_ascii_lowercase().into();
        match self.names.get(&key) {
            Some(&t) => Ok((key, t)),
            None => Err(ProtoError::NoSuchUser(clip(name))),
        }
    }

    fn kick(
        &mut self,
        conn: ConnId,
        name: &str,
        reason: Option<&str>,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "kick")?;
        let (key, target) = self.target(name)?;
        self.may_act_on(conn, &key)?;
        let by = self.actor(conn);
        let user = self.user(target).expect("named user");
        let (room, name) = (user.room, user.name.clone().expect("named user"));
        let reason: Option<Name> = reason.map(Into::into);
        let event = ModEvent {
            kind: ModKind::Kick {
                room: self.rooms[room].name.clone(),
            },
            name: Some(name.clone()),
            by: by.clone(),
            reason: reason.clone(),
            you: false,
        };
        self.tell(conn, Some(target), event, out);
        self.audit(&by, "kick", name, reason, out);
        if room == self.lobby {
            self.remove(target);
            self.user_mut(target).gone = true;
            out.close(target, CloseReason::Kicked);
        } else {
            let lobby = self.lobby;
            self.leave_room(target);
            self.enter(target, lobby);
            self.announce(target, NoticeKind::Join, true, out);
            self.replay(target, out);
        }
        Ok(())
    }

    fn mute(
        &mut self,
        conn: ConnId,
        name: &str,
        secs: Option<u64>,
        reason: Option<&str>,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "mute")?;
        if !valid_name(name) {
            return Err(ProtoError::NameInvalid(clip(name)));
        }
        let key: Box<str> = name.to_ascii_lowercase().into();
        self.may_act_on(conn, &key)?;
        let target = self.names.get(&key).copied();
        let shown = target
            .and_then(|t| self.name_of(t).cloned())
            .unwrap_or_else(|| name.into());
        let sanction = Sanction {
            until: secs.map(|s| Timestamp(self.clock.0.saturating_add(s))),
            by: self.actor(conn),
            reason: reason.map(Into::into),
        };
        self.moderation.mutes.insert(key, sanction.clone());
        let event = ModEvent {
            kind: ModKind::Mute {
                until: sanction.until,
            },
            name: Some(shown.clone()),
            by: sanction.by.clone(),
            reason: sanction.reason.clone(),
            you: false,
        };
        self.tell(conn, target, event, out);
        self.audit(
            &sanction.by,
            "mute",
            shown.clone(),
            audit_reason(&sanction),
            out,
        );
        out.store(Change::Sanction {
            kind: SanctionKind::Mute,
            target: shown,
            sanction,
        });
        Ok(())
    }

    fn unmute(&mut self, conn: ConnId, name: &str, out: &mut Outbox) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "unmute")?;
        let key: Box<str> = name.to_ascii_lowercase().into();
        if self.moderation.mute(&key, self.clock).is_none() {
            self.moderation.mutes.remove(&key);
            return Err(ProtoError::NotSanctioned(format!(
                "{} is not muted",
                clip(name)
            )));
        }
        self.may_act_on(conn, &key)?;
        self.moderation.mutes.remove(&key);
        let target = self.names.get(&key).copied();
        let shown = target
            .and_then(|t| self.name_of(t).cloned())
            .unwrap_or_else(|| name.into());
        let by = self.actor(conn);
        let event = ModEvent {
            kind: ModKind::Unmute,
            name: Some(shown.clone()),
            by: by.clone(),
            reason: None,
            you: false,
        };
        self.tell(conn, target, event, out);
        self.audit(&by, "unmute", shown.clone(), None, out);
        out.store(Change::Lift {
            kind: SanctionKind::Mute,
            target: shown,
        });
        Ok(())
    }

    fn ban(
        &mut self,
        conn: ConnId,
        target: &str,
        secs: Option<u64>,
        reason: Option<&str>,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "ban")?;
        let what = BanTarget::parse(target)?;
        // Who the ban reaches now.
        let hit: Vec<ConnId> = match &what {
            BanTarget::Name(name) => {
                let key = name.to_ascii_lowercase();
                self.may_act_on(conn, &key)?;
                self.names.get(key.as_str()).copied().into_iter().collect()
            }
            BanTarget::Net(net) => {
                let me = self.user(conn).expect("present user");
                if net.contains(me.addr) {
                    return Err(forbidden("that range holds your own address"));
                }
                let hit = self.reached_by(net);
                if self.role_of(conn) != Role::Admin
                    && hit.iter().any(|&c| self.role_of(c) == Role::Admin)
                {
                    return Err(forbidden("a moderator cannot act on an admin"));
                }
                hit
            }
        };
        let shown = what.shown();
        let sanction = Sanction {
            until: secs.map(|s| Timestamp(self.clock.0.saturating_add(s))),
            by: self.actor(conn),
            reason: reason.map(Into::into),
        };
        let key: Box<str> = shown.to_ascii_lowercase().into();
        match what {
            BanTarget::Name(_) => {
                self.moderation
                    .name_bans
                    .insert(key, (shown.clone(), sanction.clone()));
            }
            BanTarget::Net(net) => {
                self.moderation.net_bans.retain(|(n, _)| *n != net);
                self.moderation.net_bans.push((net, sanction.clone()));
            }
        }
        let event = ModEvent {
            kind: ModKind::Ban {
                until: sanction.until,
            },
            name: Some(shown.clone()),
            by: sanction.by.clone(),
            reason: sanction.reason.clone(),
            you: false,
        };
        self.banish(&hit, &shown, Some(conn), &event, out);
        out.send(conn, Event::Moderation(event));
        self.audit(
            &sanction.by,
            "ban",
            shown.clone(),
            audit_reason(&sanction),
            out,
        );
        out.store(Change::Sanction {
            kind: SanctionKind::Ban,
            target: shown,
            sanction,
        });
        Ok(())
    }

    /// The connections from addresses in `net`.
    pub(super) fn reached_by(&self, net: &Cidr) -> Vec<ConnId> {
        self.users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                u.as_ref()
                    .filter(|u| !u.gone && net.contains(u.addr))
                    .map(|_| ConnId(i))
            })
            .collect()
    }

    /// Ends the connections a ban on `shown` reaches (`hit`), telling
    /// them, and their rooms but the `actor`, the ban.
    pub(super) fn banish(
        &mut self,
        hit: &[ConnId],
        shown: &Name,
        actor: Option<ConnId>,
        event: &ModEvent,
        out: &mut Outbox,
    ) {
        let by_name = hit.len() == 1 && self.name_of(hit[0]).is_some_and(|n| **n == **shown);
        for &c in hit {
            let Some(user) = self.user(c) else { continue };
            if user.name.is_none() {
                // Still choosing a name: told as a banned newcomer is.
                let until = match event.kind {
                    ModKind::Ban { until } => until,
                    _ => None,
                };
                out.send(c, Event::Error(ProtoError::AddressBanned { until }));
            } else if by_name {
                // Its room hears the ban itself, as for a kick.
                let members = &self.rooms[user.room].members;
                let others = members
                    .iter()
                    .copied()
                    .filter(|&m| m != c && Some(m) != actor);
                out.send_all(others, Event::Moderation(event.clone()));
                let you = ModEvent {
                    you: true,
                    ..event.clone()
                };
                out.send(c, Event::Moderation(you));
                self.remove(c);
            } else {
                // Reached by an address range: told the ban; its room
                // sees it leave, banned.
                let you = ModEvent {
                    you: true,
                    ..event.clone()
                };
                out.send(c, Event::Moderation(you));
                let reason = CloseReason::Banned;
                self.announce(c, NoticeKind::Disconnect { reason }, false, out);
                self.remove(c);
            }
            self.user_mut(c).gone = true;
            out.close(c, CloseReason::Banned);
        }
    }

    fn unban(&mut self, conn: ConnId, target: &str, out: &mut Outbox) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "unban")?;
        let shown = match BanTarget::parse(target)? {
            BanTarget::Name(name) => {
                let key = name.to_ascii_lowercase();
                match self.moderation.name_bans.remove(key.as_str()) {
                    Some((shown, s)) if s.active(self.clock) => shown,
                    _ => None.ok_or_else(|| not_banned(target))?,
                }
            }
            BanTarget::Net(net) => {
                let before = self.moderation.net_bans.len();
                let now = self.clock;
                let mut active = false;
                self.moderation.net_bans.retain(|(n, s)| {
                    let hit = *n == net;
                    active |= hit && s.active(now);
                    !hit
                });
                if self.moderation.net_bans.len() == before || !active {
                    return Err(not_banned(target));
                }
                net.to_string().into()
            }
        };
        let by = self.actor(conn);
        let event = ModEvent {
            kind: ModKind::Unban,
            name: Some(shown.clone()),
            by: by.clone(),
            reason: None,
            you: false,
        };
        out.send(conn, Event::Moderation(event));
        self.audit(&by, "unban", shown.clone(), None, out);
        out.store(Change::Lift {
            kind: SanctionKind::Ban,
            target: shown,
        });
        Ok(())
    }

    fn topic(
        &mut self,
        conn: ConnId,
        text: Option<&str>,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        let id = self.user(conn).expect("named user").room;
        let Some(text) = text else {
            let r = &self.rooms[id];
            out.send(
                conn,
                Event::Topic {
                    room: r.name.clone(),
                    topic: r.topic.clone(),
                },
            );
            return Ok(());
        };
        self.require(conn, Role::Moderator, "set the topic")?;
        if text.chars().count() > MAX_TOPIC_CHARS {
            return Err(ProtoError::TopicTooLong);
        }
        let topic: Name = text.into();
        self.rooms[id].topic = Some(topic.clone());
        let by = self.actor(conn);
        let room = self.rooms[id].name.clone();
        self.save_room(id, &by, out);
        let event = ModEvent {
            kind: ModKind::Topic {
                room: room.clone(),
                topic: topic.clone(),
            },
            name: None,
            by: by.clone(),
            reason: None,
            you: false,
        };
        self.tell_room(conn, id, event, out);
        self.audit(&by, "topic", format!("#{room}").into(), Some(topic), out);
        Ok(())
    }

    fn set_moderated(
        &mut self,
        conn: ConnId,
        on: bool,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        self.require(conn, Role::Moderator, "moderate a room")?;
        let id = self.user(conn).expect("named user").room;
        self.rooms[id].moderated = on;
        let by = self.actor(conn);
        self.save_room(id, &by, out);
        let room = self.rooms[id].name.clone();
        let event = ModEvent {
            kind: ModKind::Moderate {
                room: room.clone(),
                on,
            },
            name: None,
            by: by.clone(),
            reason: None,
            you: false,
        };
        self.tell_room(conn, id, event, out);
        let state: Name = if on { "on" } else { "off" }.into();
        self.audit(&by, "moderate", format!("#{room}").into(), Some(state), out);
        Ok(())
    }

    /// Keeps room `id`'s settings by its name, and has them stored.
    fn save_room(&mut self, id: usize, by: &Name, out: &mut Outbox) {
        let r = &self.rooms[id];
        let settings = RoomSettings {
            topic: r.topic.clone(),
            moderated: r.moderated,
        };
        let key: Box<str> = r.name.to_ascii_lowercase().into();
        if settings == RoomSettings::default() {
            self.moderation.rooms.remove(&key);
        } else {
            self.moderation
                .rooms
                .insert(key, (r.name.clone(), settings.clone()));
        }
        out.store(Change::Room {
            room: r.name.clone(),
            settings,
            by: by.clone(),
        });
    }

    fn wall(&mut self, conn: ConnId, text: &str, out: &mut Outbox) -> Result<(), ProtoError> {
        self.require(conn, Role::Admin, "send a wall")?;
        let by = self.actor(conn);
        let text: Name = text.into();
        for (_, room) in &self.rooms {
            let event = ModEvent {
                kind: ModKind::Wall {
                    room: room.name.clone(),
                    text: text.clone(),
                },
                name: None,
                by: by.clone(),
                reason: None,
                you: false,
            };
            let others = room.members.iter().copied().filter(|&m| m != conn);
            out.send_all(others, Event::Moderation(event));
        }
        let own = self.user(conn).expect("named user").room;
        let event = ModEvent {
            kind: ModKind::Wall {
                room: self.rooms[own].name.clone(),
                text: text.clone(),
            },
            name: None,
            by: by.clone(),
            reason: None,
            you: false,
        };
        out.send(conn, Event::Moderation(event));
        self.audit(&by, "wall", "*".into(), Some(text), out);
        Ok(())
    }

    fn whois(&mut self, conn: ConnId, name: &str, out: &mut Outbox) -> Result<(), ProtoError> {
        let key = name.to_ascii_lowercase();
        let sees_more = self.role_of(conn).moderates();
        let account = self.accounts.get(key.as_str());
        let info = match self.names.get(key.as_str()) {
            Some(&t) => {
                let user = self.user(t).expect("named user");
                WhoisInfo {
                    name: user.name.clone().expect("named user"),
                    status: user.status,
                    note: user.note.clone(),
                    room: Some(self.rooms[user.room].name.clone()),
                    registered: account.is_some(),
                    role: self.role_of(t),
                    address: sees_more.then_some(user.addr),
                    since: sees_more.then_some(user.since),
                }
            }
            None => match account {
                Some(a) => WhoisInfo {
                    name: a.name.clone(),
                    status: Status::Offline,
                    note: None,
                    room: None,
                    registered: true,
                    role: a.role,
                    address: None,
                    since: None,
                },
                None => return Err(ProtoError::NoSuchUser(clip(name))),
            },
        };
        out.send(conn, Event::Whois(info));
        Ok(())
    }

    fn set_role(
        &mut self,
        conn: ConnId,
        name: &str,
        role: Role,
        out: &mut Outbox,
    ) -> Result<(), ProtoError> {
        self.require(conn, Role::Admin, "set roles")?;
        let key: Box<str> = name.to_ascii_lowercase().into();
        let Some(shown) = self.accounts.get(&key).map(|a| a.name.clone()) else {
            return Err(ProtoError::NoSuchUser(clip(name)));
        };
        if self
            .name_of(conn)
            .is_some_and(|n| n.eq_ignore_ascii_case(&key))
        {
            return Err(forbidden("not on yourself"));
        }
        let account = self.accounts.get_mut(&key).expect("checked above");
        account.role = role;
        let by = self.actor(conn);
        self.role_changed(&key, role, by.clone(), Some(conn), out);
        self.audit(&by, "role", shown.clone(), Some(role.as_str().into()), out);
        out.store(Change::Role { name: shown, role });
        Ok(())
    }

    /// Tells the holder of account `key` (if connected) and the actor of
    /// a new role.
    pub(super) fn role_changed(
        &self,
        key: &str,
        role: Role,
        by: Name,
        actor: Option<ConnId>,
        out: &mut Outbox,
    ) {
        let shown = self.accounts.get(key).map(|a| a.name.clone());
        let holder = self
            .names
            .get(key)
            .copied()
            .filter(|&t| self.user(t).and_then(|u| u.account.as_deref()) == Some(key));
        let event = ModEvent {
            kind: ModKind::Role { role },
            name: shown,
            by,
            reason: None,
            you: false,
        };
        if let Some(t) = holder {
            let you = ModEvent {
                you: true,
                ..event.clone()
            };
            out.send(t, Event::Moderation(you));
        }
        if let Some(actor) = actor {
            out.send(actor, Event::Moderation(event));
        }
    }
}

/// What the audit says of a mute or ban beyond its target: its end and
/// its reason.
fn audit_reason(s: &Sanction) -> Option<Name> {
    match (&s.until, &s.reason) {
        (None, None) => None,
        (None, Some(r)) => Some(r.clone()),
        (Some(u), None) => Some(format!("(until {u})").into()),
        (Some(u), Some(r)) => Some(format!("(until {u}) {r}").into()),
    }
}

fn not_banned(target: &str) -> ProtoError {
    ProtoError::NotSanctioned(format!("{} is not banned", clip(target)))
}

mod remote;
#[cfg(test)]
mod tests;
