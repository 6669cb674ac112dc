//! Moderation shared across the cluster: mutes, bans and room settings
//! in the key-value bucket `<cluster>_moderation`, one key per target
//! (`mute.<hex>`, `ban.<hex>`, `room.<hex>`, the hex of the lower-cased
//! name or address range, since bucket keys cannot hold `:` or `#`), and
//! the audit on the stream `CHATD_<cluster>_AUDIT`. Roles and session
//! generations travel in the account records. Plain data here.

use serde::{Deserialize, Serialize};

use crate::chat::moderation::{AuditEntry, Change, RoomSettings, Sanction, SanctionKind};
use crate::wire::proto::Timestamp;

/// Audit entries kept in the cluster's audit stream.
pub const AUDIT_KEEP: i64 = 100_000;

pub fn bucket_name(cluster: &str) -> String {
    format!("{cluster}_moderation")
}

pub fn audit_stream(cluster: &str) -> String {
    format!("{}_AUDIT", super::stream_name(cluster))
}

pub fn audit_subject(cluster: &str) -> String {
    format!("{cluster}.audit")
}

/// A moderation entry as JSON: who set it (which node), and the state.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    node: String,
    /// The target as shown (a name, an address range, a room).
    target: String,
    /// A mute or ban that was lifted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    lifted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    moderated: bool,
}

fn key(prefix: &str, target: &str) -> String {
    let lower = target.to_ascii_lowercase();
    format!("{prefix}.{}", crate::crypto::hex(lower.as_bytes()))
}

/// The bucket key and value for a change the cluster shares, made by
/// `node`; `None` for changes that travel otherwise (roles, tokens in the
/// account records; the audit on its stream).
pub fn encode(node: &str, change: &Change) -> Option<(String, Vec<u8>)> {
    let blank = |target: &str| Entry {
        node: node.to_string(),
        target: target.to_string(),
        lifted: false,
        until: None,
        by: String::new(),
        reason: None,
        topic: None,
        moderated: false,
    };
    let (key, entry) = match change {
        Change::Sanction {
            kind,
            target,
            sanction,
        } => (
            key(kind.as_str(), target),
            Entry {
                until: sanction.until.map(|t| t.0),
                by: sanction.by.to_string(),
                reason: sanction.reason.as_deref().map(str::to_string),
                ..blank(target)
            },
        ),
        Change::Lift { kind, target } => (
            key(kind.as_str(), target),
            Entry {
                lifted: true,
                ..blank(target)
            },
        ),
        Change::Room { room, settings, by } => (
            key("room", room),
            Entry {
                topic: settings.topic.as_deref().map(str::to_string),
                moderated: settings.moderated,
                by: by.to_string(),
                ..blank(room)
            },
        ),
        Change::Role { .. } | Change::Tokens { .. } | Change::Audit(_) => return None,
    };
    Some((key, serde_json::to_vec(&entry).expect("plain data encodes")))
}

/// A bucket entry back as (the node that made it, the change), or `None`
/// if it is not one this version reads.
pub fn decode(key: &str, value: &[u8]) -> Option<(String, Change)> {
    let e: Entry = serde_json::from_slice(value).ok()?;
    let (prefix, _) = key.split_once('.')?;
    let target = e.target.as_str().into();
    let change = match (prefix, e.lifted) {
        ("room", _) => Change::Room {
            room: target,
            settings: RoomSettings {
                topic: e.topic.map(Into::into),
                moderated: e.moderated,
            },
            by: e.by.into(),
        },
        (kind, true) => Change::Lift {
            kind: SanctionKind::parse(kind)?,
            target,
        },
        (kind, false) => Change::Sanction {
            kind: SanctionKind::parse(kind)?,
            target,
            sanction: Sanction {
                until: e.until.map(Timestamp),
                by: e.by.into(),
                reason: e.reason.map(Into::into),
            },
        },
    };
    Some((e.node, change))
}

#[derive(Serialize, Deserialize)]
struct Audited {
    ts: u64,
    by: String,
    action: String,
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub fn encode_audit(e: &AuditEntry) -> Vec<u8> {
    serde_json::to_vec(&Audited {
        ts: e.ts.0,
        by: e.by.to_string(),
        action: e.action.to_string(),
        target: e.target.to_string(),
        reason: e.reason.as_deref().map(str::to_string),
    })
    .expect("plain data encodes")
}

pub fn decode_audit(bytes: &[u8]) -> Option<AuditEntry> {
    let a: Audited = serde_json::from_slice(bytes).ok()?;
    Some(AuditEntry {
        ts: Timestamp(a.ts),
        by: a.by.into(),
        action: crate::store::moderation::known_action(&a.action),
        target: a.target.into(),
        reason: a.reason.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_through_the_bucket_and_come_back_the_same() {
        let changes = [
            Change::Sanction {
                kind: SanctionKind::Ban,
                target: "10.0.0.0/8".into(),
                sanction: Sanction {
                    until: Some(Timestamp(99)),
                    by: "mod".into(),
                    reason: Some("spam".into()),
                },
            },
            Change::Sanction {
                kind: SanctionKind::Mute,
                target: "Eve".into(),
                sanction: Sanction {
                    until: None,
                    by: "admin".into(),
                    reason: None,
                },
            },
            Change::Lift {
                kind: SanctionKind::Mute,
                target: "Eve".into(),
            },
            Change::Room {
                room: "Dev".into(),
                settings: RoomSettings {
                    topic: Some("ship it".into()),
                    moderated: true,
                },
                by: "mod".into(),
            },
            Change::Room {
                room: "dev".into(),
                settings: RoomSettings::default(),
                by: "mod".into(),
            },
        ];
        for change in changes {
            let (key, value) = encode("n1", &change).expect("shared");
            assert!(
                key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'),
                "{key}"
            );
            assert_eq!(decode(&key, &value), Some(("n1".to_string(), change)));
        }
        // A mute and a ban of one name, or a name in two cases, share
        // nothing and one key respectively.
        let mute = |t: &str| Change::Lift {
            kind: SanctionKind::Mute,
            target: t.into(),
        };
        let ban = Change::Lift {
            kind: SanctionKind::Ban,
            target: "eve".into(),
        };
        assert_eq!(
            encode("a", &mute("Eve")).unwrap().0,
            encode("b", &mute("eve")).unwrap().0
        );
        assert_ne!(
            encode("a", &mute("eve")).unwrap().0,
            encode("a", &ban).unwrap().0
        );
        assert!(
            encode(
                "a",
                &Change::Tokens {
                    name: "eve".into(),
                    generation: 1
                }
            )
            .is_none()
        );
        assert_eq!(decode("mute.00", b"not json"), None);
        assert_eq!(decode("odd.00", br#"{"node":"a","target":"x"}"#), None);
    }

    #[test]
    fn an_audit_entry_goes_through_the_stream_and_comes_back() {
        let e = AuditEntry {
            ts: Timestamp(5),
            by: "mod".into(),
            action: "ban",
            target: "eve".into(),
            reason: Some("spam".into()),
        };
        let back = decode_audit(&encode_audit(&e)).unwrap();
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(
            decode_audit(br#"{"ts":1,"by":"x","action":"nonsense","target":"y"}"#)
                .unwrap()
                .action,
            "unknown"
        );
    }
}
