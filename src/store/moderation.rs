//! Moderation in the database: roles, mutes and bans, room settings, and
//! the audit of every action. Written by the storage thread as the chat
//! hands out changes, read at start-up and by the operator's commands.

use rusqlite::params;

use super::{Error, Store, ctx};
use crate::chat::moderation::{AuditEntry, Change, ModState, RoomSettings, Sanction, SanctionKind};
use crate::wire::proto::{Name, Role, Timestamp};

/// Who changes made outside the chat (`chatd accounts`) are by.
pub use crate::chat::moderation::OPERATOR;

impl Store {
    /// Stores one change from the chat.
    pub fn apply(&self, change: &Change) -> Result<(), Error> {
        match change {
            Change::Role { name, role } => self.set_role(name, *role).map(|_| ()),
            Change::Sanction {
                kind,
                target,
                sanction,
            } => self
                .db
                .prepare_cached(
                    "INSERT OR REPLACE INTO sanctions (kind, key, target, until, by, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        kind.as_str(),
                        target.to_ascii_lowercase(),
                        &**target,
                        sanction.until.map(|t| t.0 as i64),
                        &*sanction.by,
                        sanction.reason.as_deref(),
                    ])
                })
                .map(|_| ())
                .map_err(ctx("cannot store a sanction")),
            Change::Lift { kind, target } => self
                .db
                .prepare_cached("DELETE FROM sanctions WHERE kind = ?1 AND key = ?2")
                .and_then(|mut s| s.execute(params![kind.as_str(), target.to_ascii_lowercase()]))
                .map(|_| ())
                .map_err(ctx("cannot lift a sanction")),
            Change::Room { room, settings, .. } => {
                let key = room.to_ascii_lowercase();
                let result = if *settings == RoomSettings::default() {
                    self.db
                        .prepare_cached("DELETE FROM room_settings WHERE key = ?1")
                        .and_then(|mut s| s.execute([key]))
                } else {
                    self.db
                        .prepare_cached(
                            "INSERT OR REPLACE INTO room_settings (key, name, topic, moderated)
                             VALUES (?1, ?2, ?3, ?4)",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                key,
                                &**room,
                                settings.topic.as_deref(),
                                settings.moderated
                            ])
                        })
                };
                result
                    .map(|_| ())
                    .map_err(ctx("cannot store room settings"))
            }
            Change::Audit(entry) => self.add_audit(entry),
            Change::Tokens { name, generation } => self
                .db
                .prepare_cached("UPDATE accounts SET token_gen = ?2 WHERE key = ?1")
                .and_then(|mut s| s.execute(params![name.to_ascii_lowercase(), generation]))
                .map(|_| ())
                .map_err(ctx("cannot end sessions")),
        }
    }

    /// Sets the role of the account `name` (any case); false if there is
    /// no such account.
    pub fn set_role(&self, name: &str, role: Role) -> Result<bool, Error> {
        self.db
            .prepare_cached("UPDATE accounts SET role = ?2 WHERE key = ?1")
            .and_then(|mut s| s.execute(params![name.to_ascii_lowercase(), role.as_str()]))
            .map(|n| n == 1)
            .map_err(ctx("cannot set a role"))
    }

    pub fn add_audit(&self, e: &AuditEntry) -> Result<(), Error> {
        self.db
            .prepare_cached(
                "INSERT INTO audit (ts, by, action, target, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    e.ts.0 as i64,
                    &*e.by,
                    e.action,
                    &*e.target,
                    e.reason.as_deref()
                ])
            })
            .map(|_| ())
            .map_err(ctx("cannot record an audit entry"))
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT ts, by, action, target, reason FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(ctx("cannot read the audit"))?;
        let rows = stmt
            .query_map([limit.min(i64::MAX as usize) as i64], |r| {
                let action: String = r.get(2)?;
                Ok(AuditEntry {
                    ts: Timestamp(r.get::<_, i64>(0)?.max(0) as u64),
                    by: Name::from(r.get::<_, String>(1)?),
                    action: known_action(&action),
                    target: Name::from(r.get::<_, String>(3)?),
                    reason: r.get::<_, Option<String>>(4)?.map(Name::from),
                })
            })
            .map_err(ctx("cannot read the audit"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("cannot read the audit"))
    }

    /// Mutes and bans still in force at `now`, and room settings. Those
    /// over are deleted.
    pub fn moderation(&self, now: Timestamp) -> Result<ModState, Error> {
        self.db
            .execute(
                "DELETE FROM sanctions WHERE until IS NOT NULL AND until <= ?1",
                [now.0 as i64],
            )
            .map_err(ctx("cannot drop sanctions that are over"))?;
        let mut state = ModState::default();
        let mut stmt = self
            .db
            .prepare("SELECT kind, target, until, by, reason FROM sanctions ORDER BY kind, key")
            .map_err(ctx("cannot read sanctions"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Name::from(r.get::<_, String>(1)?),
                    Sanction {
                        until: r
                            .get::<_, Option<i64>>(2)?
                            .map(|t| Timestamp(t.max(0) as u64)),
                        by: Name::from(r.get::<_, String>(3)?),
                        reason: r.get::<_, Option<String>>(4)?.map(Name::from),
                    },
                ))
            })
            .map_err(ctx("cannot read sanctions"))?;
        for row in rows {
            let (kind, target, sanction) = row.map_err(ctx("cannot read sanctions"))?;
            if let Some(kind) = SanctionKind::parse(&kind) {
                state.sanctions.push((kind, target, sanction));
            }
        }
        let mut stmt = self
            .db
            .prepare("SELECT name, topic, moderated FROM room_settings ORDER BY key")
            .map_err(ctx("cannot read room settings"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Name::from(r.get::<_, String>(0)?),
                    RoomSettings {
                        topic: r.get::<_, Option<String>>(1)?.map(Name::from),
                        moderated: r.get(2)?,
                    },
                ))
            })
            .map_err(ctx("cannot read room settings"))?;
        for row in rows {
            state
                .rooms
                .push(row.map_err(ctx("cannot read room settings"))?);
        }
        Ok(state)
    }
}

/// The audit's action words, as the chat writes them.
const ACTIONS: [&str; 10] = [
    "kick", "mute", "unmute", "ban", "unban", "topic", "moderate", "wall", "role", "unknown",
];

pub fn known_action(action: &str) -> &'static str {
    ACTIONS
        .iter()
        .find(|a| **a == action)
        .copied()
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open(":memory:", 100).unwrap()
    }

    fn sanction(until: Option<u64>) -> Sanction {
        Sanction {
            until: until.map(Timestamp),
            by: "mod".into(),
            reason: Some("spam".into()),
        }
    }

    #[test]
    fn sanctions_are_kept_replaced_lifted_and_dropped_when_over() {
        let s = store();
        let mute = |target: &str, until| Change::Sanction {
            kind: SanctionKind::Mute,
            target: target.into(),
            sanction: sanction(until),
        };
        s.apply(&mute("Bob", None)).unwrap();
        s.apply(&mute("bob", Some(100))).unwrap();
        s.apply(&mute("carol", Some(50))).unwrap();
        s.apply(&Change::Sanction {
            kind: SanctionKind::Ban,
            target: "10.0.0.0/8".into(),
            sanction: sanction(None),
        })
        .unwrap();
        let state = s.moderation(Timestamp(60)).unwrap();
        let targets: Vec<(SanctionKind, &str, Option<Timestamp>)> = state
            .sanctions
            .iter()
            .map(|(k, t, s)| (*k, &**t, s.until))
            .collect();
        assert_eq!(
            targets,
            vec![
                (SanctionKind::Ban, "10.0.0.0/8", None),
                (SanctionKind::Mute, "bob", Some(Timestamp(100))),
            ],
            "one mute per name, the later kept; carol's is over"
        );
        s.apply(&Change::Lift {
            kind: SanctionKind::Mute,
            target: "BOB".into(),
        })
        .unwrap();
        assert_eq!(s.moderation(Timestamp(60)).unwrap().sanctions.len(), 1);
    }

    #[test]
    fn room_settings_and_roles_and_the_audit() {
        let s = store();
        let settings = RoomSettings {
            topic: Some("Rust".into()),
            moderated: true,
        };
        let room = |settings: &RoomSettings| Change::Room {
            room: "Rust".into(),
            settings: settings.clone(),
            by: "mod".into(),
        };
        s.apply(&room(&settings)).unwrap();
        assert_eq!(
            s.moderation(Timestamp(0)).unwrap().rooms,
            vec![(Name::from("Rust"), settings)]
        );
        s.apply(&room(&RoomSettings::default())).unwrap();
        assert!(s.moderation(Timestamp(0)).unwrap().rooms.is_empty());

        s.add_account("Alice", "hash", Timestamp(0)).unwrap();
        assert!(s.set_role("alice", Role::Admin).unwrap());
        assert!(!s.set_role("nobody", Role::Admin).unwrap());
        assert_eq!(
            s.account_names().unwrap(),
            vec![(Name::from("Alice"), Role::Admin)]
        );

        for (ts, action) in [(1, "kick"), (2, "ban")] {
            s.apply(&Change::Audit(AuditEntry {
                ts: Timestamp(ts),
                by: "alice".into(),
                action,
                target: "bob".into(),
                reason: None,
            }))
            .unwrap();
        }
        let audit = s.audit(10).unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[0].to_string(), "1970-01-01T00:00:02Z alice ban bob");
    }
}
