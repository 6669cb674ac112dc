//! Moderation from the other nodes of a cluster: mutes, bans and room
//! settings as the cluster's moderation bucket holds them. Each entry is
//! the state of its target; applying one twice changes nothing. This
//! node's own entries come back too and are applied silently (they settle
//! which of two changes made at once on two nodes holds); entries from
//! other nodes are told to the users here they concern, as the node that
//! made them told its own.

use super::{Change, Chat, Cidr, Event, ModEvent, ModKind, Name, Outbox, RoomSettings};
use super::{Sanction, SanctionKind};

impl Chat {
    /// Applies a moderation entry from the cluster; `mine` if this node
    /// made it.
    pub fn remote_moderation(&mut self, change: Change, mine: bool, out: &mut Outbox) {
        match change {
            Change::Sanction {
                kind,
                target,
                sanction,
            } => {
                if sanction.active(self.clock) {
                    self.remote_sanction(kind, target, sanction, mine, out);
                } else {
                    self.remote_lift(kind, &target, mine, out);
                }
            }
            Change::Lift { kind, target } => self.remote_lift(kind, &target, mine, out),
            Change::Room { room, settings, by } => {
                self.remote_room_settings(room, settings, by, mine, out)
            }
            Change::Role { .. } | Change::Tokens { .. } | Change::Audit(_) => {}
        }
    }

    fn remote_sanction(
        &mut self,
        kind: SanctionKind,
        target: Name,
        sanction: Sanction,
        mine: bool,
        out: &mut Outbox,
    ) {
        let key: Box<str> = target.to_ascii_lowercase().into();
        let m = &mut self.moderation;
        let event = |kind| ModEvent {
            kind,
            name: Some(target.clone()),
            by: sanction.by.clone(),
            reason: sanction.reason.clone(),
            you: false,
        };
        match (kind, target.parse::<Cidr>()) {
            (SanctionKind::Mute, _) => {
                if m.mutes.get(&key) == Some(&sanction) {
                    return;
                }
                m.mutes.insert(key.clone(), sanction.clone());
                if let (false, Some(&t)) = (mine, self.names.get(&key)) {
                    let until = sanction.until;
                    self.tell_target(t, None, &event(ModKind::Mute { until }), out);
                }
            }
            (SanctionKind::Ban, Ok(net)) => {
                if m.net_bans.iter().any(|b| *b == (net, sanction.clone())) {
                    return;
                }
                m.net_bans.retain(|(n, _)| *n != net);
                m.net_bans.push((net, sanction.clone()));
                if !mine {
                    let hit = self.reached_by(&net);
                    let until = sanction.until;
                    self.banish(&hit, &target, None, &event(ModKind::Ban { until }), out);
                }
            }
            (SanctionKind::Ban, Err(_)) => {
                if m.name_bans.get(&key).is_some_and(|(_, s)| *s == sanction) {
                    return;
                }
                m.name_bans
                    .insert(key.clone(), (target.clone(), sanction.clone()));
                if let (false, Some(&t)) = (mine, self.names.get(&key)) {
                    let until = sanction.until;
                    self.banish(&[t], &target, None, &event(ModKind::Ban { until }), out);
                }
            }
        }
    }

    fn remote_lift(&mut self, kind: SanctionKind, target: &Name, mine: bool, out: &mut Outbox) {
        let key: Box<str> = target.to_ascii_lowercase().into();
        let m = &mut self.moderation;
        match (kind, target.parse::<Cidr>()) {
            (SanctionKind::Mute, _) => {
                let Some(was) = m.mutes.remove(&key) else {
                    return;
                };
                if let (false, true, Some(&t)) =
                    (mine, was.active(self.clock), self.names.get(&key))
                {
                    let event = ModEvent {
                        kind: ModKind::Unmute,
                        name: Some(target.clone()),
                        by: was.by,
                        reason: None,
                        you: false,
                    };
                    self.tell_target(t, None, &event, out);
                }
            }
            (SanctionKind::Ban, Ok(net)) => m.net_bans.retain(|(n, _)| *n != net),
            (SanctionKind::Ban, Err(_)) => {
                m.name_bans.remove(&key);
            }
        }
    }

    fn remote_room_settings(
        &mut self,
        room: Name,
        settings: RoomSettings,
        by: Name,
        mine: bool,
        out: &mut Outbox,
    ) {
        let key: Box<str> = room.to_ascii_lowercase().into();
        let m = &mut self.moderation;
        let before = m
            .rooms
            .get(&key)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        if before == settings {
            return;
        }
        if settings == RoomSettings::default() {
            m.rooms.remove(&key);
        } else {
            m.rooms
                .insert(key.clone(), (room.clone(), settings.clone()));
        }
        let Some(&id) = self.room_ids.get(&key) else {
            return;
        };
        let r = &mut self.rooms[id];
        r.topic = settings.topic.clone();
        r.moderated = settings.moderated;
        if mine {
            return;
        }
        let name = r.name.clone();
        let mut events = Vec::new();
        if let (true, Some(topic)) = (before.topic != settings.topic, settings.topic) {
            events.push(ModKind::Topic {
                room: name.clone(),
                topic,
            });
        }
        if before.moderated != settings.moderated {
            events.push(ModKind::Moderate {
                room: name,
                on: settings.moderated,
            });
        }
        for kind in events {
            let event = ModEvent {
                kind,
                name: None,
                by: by.clone(),
                reason: None,
                you: false,
            };
            let members = self.rooms[id].members.iter().copied();
            out.send_all(members, Event::Moderation(event));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::script::*;
    use super::*;
    use crate::chat::ChatConfig;
    use crate::wire::proto::CloseReason;
    use crate::wire::proto::Timestamp;

    #[test]
    fn entries_from_other_nodes_apply_and_are_told_once_and_ours_silently() {
        let mut s = Script::with(ChatConfig {
            history_keep: 0,
            ..ChatConfig::default()
        });
        s.chat.set_clock(Timestamp(1000), s.now);
        let bob = s.user("bob");
        let carol = s.user("carol");
        s.take();
        let mute = Change::Sanction {
            kind: SanctionKind::Mute,
            target: "Bob".into(),
            sanction: Sanction {
                until: None,
                by: "mo".into(),
                reason: Some("flood".into()),
            },
        };
        s.chat.remote_moderation(mute.clone(), false, &mut s.out);
        let out = s.take();
        assert_eq!(lines(&out, bob), got(&["* you were muted by mo (flood)"]));
        assert_eq!(lines(&out, carol), got(&["* Bob was muted by mo (flood)"]));
        // The same state again (a reconnection's replay) tells nobody.
        s.chat.remote_moderation(mute, false, &mut s.out);
        assert!(s.take().is_empty());
        let out = s.say(bob, "hi");
        assert!(lines(&out, carol).is_empty(), "muted here too");
        // Our own entries apply without a word: the user was told when
        // the command ran.
        let lift = Change::Lift {
            kind: SanctionKind::Mute,
            target: "bob".into(),
        };
        s.chat.remote_moderation(lift, true, &mut s.out);
        assert!(s.take().is_empty());
        assert_eq!(lines(&s.say(bob, "free"), carol), got(&["<bob> free"]));
        // Room settings reach the room's members here.
        let room = Change::Room {
            room: "lobby".into(),
            settings: RoomSettings {
                topic: Some("rules".into()),
                moderated: false,
            },
            by: "mo".into(),
        };
        s.chat.remote_moderation(room.clone(), false, &mut s.out);
        let out = s.take();
        let told = "* mo set the topic of #lobby: rules";
        assert_eq!(
            (lines(&out, bob), lines(&out, carol)),
            (got(&[told]), got(&[told]))
        );
        s.chat.remote_moderation(room, false, &mut s.out);
        assert!(s.take().is_empty());
        // A ban by name ends the connection here.
        let ban = Change::Sanction {
            kind: SanctionKind::Ban,
            target: "bob".into(),
            sanction: Sanction {
                until: None,
                by: "mo".into(),
                reason: None,
            },
        };
        s.chat.remote_moderation(ban, false, &mut s.out);
        let out = s.take();
        assert_eq!(lines(&out, carol), got(&["* bob was banned by mo"]));
        assert_eq!(s.closed, vec![(bob, CloseReason::Banned)]);
        // An expired sanction is a lifted one.
        let expired = Change::Sanction {
            kind: SanctionKind::Mute,
            target: "carol".into(),
            sanction: Sanction {
                until: Some(Timestamp(10)),
                by: "mo".into(),
                reason: None,
            },
        };
        s.chat.remote_moderation(expired, false, &mut s.out);
        assert!(s.take().is_empty());
        assert!(s.chat.moderation.mute("carol", Timestamp(5)).is_none());
    }
}
