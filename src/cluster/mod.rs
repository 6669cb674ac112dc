//! One chat across several nodes through NATS JetStream: the names of
//! the cluster's streams, buckets and subjects, and the encoding of what
//! goes through them. Plain data here; `link` is the helper thread that
//! talks to NATS.
//!
//! - Stream `CHATD_<cluster>`: room messages on `<cluster>.room.<room>`
//!   and direct messages on `<cluster>.dm.<addressee>` (lower-cased
//!   names, which are ASCII letters, digits, `_` and `-`). The stream's
//!   sequence numbers messages (`seq`), its creation names the lineage
//!   (`epoch`), and it keeps `--history-keep` per subject.
//! - Key-value buckets (streams made directly: `nats-server` 2.9 refuses
//!   the client's bucket creation): `<cluster>_names`, a name's holder and
//!   presence; `<cluster>_nodes`, each node's heartbeat; `<cluster>_meta`,
//!   the token secret every node signs with; `<cluster>_accounts`, every
//!   account with its hash, role and session generation;
//!   `<cluster>_moderation`, mutes, bans and room settings (see
//!   `moderation`, with the audit stream).

pub mod admin;
pub mod link;
pub mod moderation;

use serde::{Deserialize, Serialize};

use crate::chat::Presence;
use crate::wire::proto::{Status, Timestamp};

/// How this node joins a cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// NATS servers, `nats://host:port`.
    pub urls: Vec<String>,
    /// The cluster's name: nodes with the same one are one chat.
    pub name: String,
    /// This node's name; unique in the cluster.
    pub node: String,
    /// Messages kept per room (and per addressee) in the stream.
    pub history_keep: usize,
}

/// Whether `name` can name a cluster or a node: it is used in stream,
/// bucket and subject names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn stream_name(cluster: &str) -> String {
    format!("CHATD_{cluster}")
}

pub fn room_subject(cluster: &str, room: &str) -> String {
    format!("{cluster}.room.{}", room.to_ascii_lowercase())
}

pub fn direct_subject(cluster: &str, to: &str) -> String {
    format!("{cluster}.dm.{}", to.to_ascii_lowercase())
}

/// A message in the stream, as JSON.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// The room as its sender's node named it, or the addressee.
    #[serde(rename = "r")]
    pub to: String,
    #[serde(rename = "f")]
    pub from: String,
    #[serde(rename = "t")]
    pub text: String,
    pub ts: u64,
}

/// What a stream message is, from its subject.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Room,
    Direct,
}

/// The kind of a message on `subject` of `cluster`'s stream.
pub fn kind_of(cluster: &str, subject: &str) -> Option<Kind> {
    let rest = subject.strip_prefix(cluster)?.strip_prefix('.')?;
    if rest.starts_with("room.") {
        Some(Kind::Room)
    } else if rest.starts_with("dm.") {
        Some(Kind::Direct)
    } else {
        None
    }
}

/// An account as the accounts bucket holds it: every node's copy of it
/// (its database's row) follows this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    /// Argon2id, PHC string.
    pub hash: String,
    pub role: String,
    /// Session tokens of another generation are void.
    pub tokens: u32,
}

/// A presence entry, as JSON in the names bucket.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    name: String,
    node: String,
    room: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn encode_presence(p: &Presence) -> Vec<u8> {
    let e = Entry {
        name: p.name.to_string(),
        node: p.node.to_string(),
        room: p.room.to_string(),
        status: p.status.as_str().to_string(),
        note: p.note.as_deref().map(str::to_string),
    };
    serde_json::to_vec(&e).expect("plain strings encode")
}

/// A presence entry, or `None` if it is not one this version reads.
pub fn decode_presence(bytes: &[u8]) -> Option<Presence> {
    let e: Entry = serde_json::from_slice(bytes).ok()?;
    let valid = crate::wire::proto::valid_name;
    if !valid(&e.name) || !valid(&e.room) {
        return None;
    }
    Some(Presence {
        name: e.name.into(),
        node: e.node.into(),
        room: e.room.into(),
        status: Status::parse(&e.status).unwrap_or(Status::Online),
        note: e.note.map(Into::into),
    })
}

/// The node a presence entry names, without the rest.
pub fn node_of(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Node {
        node: String,
    }
    serde_json::from_slice::<Node>(bytes).ok().map(|n| n.node)
}

pub fn encode_said(to: &str, from: &str, text: &str, ts: Timestamp) -> Vec<u8> {
    let said = Said {
        to: to.to_string(),
        from: from.to_string(),
        text: text.to_string(),
        ts: ts.0,
    };
    serde_json::to_vec(&said).expect("plain strings encode")
}

/// A stream message's `Nats-Msg-Id`: its origin (a node's name and this
/// run of it), its number from that origin (1, 2, ...), and which sending
/// of it this is. Every sending is stored; `Sequencer` keeps one.
pub fn message_id(origin: &str, n: u64, attempt: u64) -> String {
    format!("{origin}-{n}-{attempt}")
}

/// The origin and number of a `message_id`.
pub fn parse_message_id(id: &str) -> Option<(&str, u64)> {
    let mut parts = id.rsplitn(3, '-');
    parts.next()?.parse::<u64>().ok()?;
    let n = parts.next()?.parse().ok()?;
    let origin = parts.next().filter(|o| !o.is_empty())?;
    Some((origin, n))
}

/// Which stream messages are delivered: each origin's in the order it
/// numbered them, each once. A sending that overtook a lost one (the
/// connection broke with it in the socket, and the NATS client sent what
/// it still had queued after reconnecting) and a second sending of one
/// delivered already are skipped; the origin sends everything not
/// acknowledged again, in order. Every node applies this to the same
/// stream, so every node delivers the same messages in the same order.
#[derive(Debug, Default)]
pub struct Sequencer {
    next: std::collections::HashMap<String, u64>,
}

impl Sequencer {
    /// Whether message `n` of `origin` is delivered. An origin not seen
    /// yet starts where its first message is.
    pub fn admit(&mut self, origin: &str, n: u64) -> bool {
        match self.next.get_mut(origin) {
            Some(next) if n == *next => {
                *next += 1;
                true
            }
            Some(_) => false,
            None => {
                self.next.insert(origin.to_string(), n + 1);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_their_origin_and_number() {
        let id = message_id("node-1-ab12", 42, 3);
        assert_eq!(parse_message_id(&id), Some(("node-1-ab12", 42)));
        assert_eq!(parse_message_id("42-3"), None);
        assert_eq!(parse_message_id("n-x-3"), None);
        assert_eq!(parse_message_id(""), None);
    }

    #[test]
    fn each_origin_is_delivered_in_its_order_once_whatever_overtook() {
        let mut s = Sequencer::default();
        // a's 1 and 2 arrive; then 4 and 5 overtake a lost 3; b goes on.
        let arrived = [
            ("a", 1),
            ("a", 2),
            ("a", 4),
            ("b", 7),
            ("a", 5),
            // a sends everything not acknowledged again: 3, 4, 5.
            ("a", 3),
            ("a", 4),
            ("b", 8),
            ("a", 5),
            // and a second sending of one delivered already.
            ("a", 5),
            ("a", 6),
        ];
        let delivered: Vec<(&str, u64)> = arrived
            .into_iter()
            .filter(|&(o, n)| s.admit(o, n))
            .collect();
        assert_eq!(
            delivered,
            [
                ("a", 1),
                ("a", 2),
                ("b", 7),
                ("a", 3),
                ("a", 4),
                ("b", 8),
                ("a", 5),
                ("a", 6)
            ]
        );
    }

    #[test]
    fn subjects_name_their_kind_and_ignore_case() {
        assert_eq!(room_subject("c1", "Lobby"), "c1.room.lobby");
        assert_eq!(direct_subject("c1", "Bob"), "c1.dm.bob");
        assert_eq!(kind_of("c1", "c1.room.lobby"), Some(Kind::Room));
        assert_eq!(kind_of("c1", "c1.dm.bob"), Some(Kind::Direct));
        assert_eq!(kind_of("c1", "c2.dm.bob"), None);
        assert_eq!(kind_of("c1", "c1x.dm.bob"), None);
        assert!(valid_name("chatd-2_a") && !valid_name("a.b") && !valid_name(""));
    }

    #[test]
    fn presence_and_messages_round_trip() {
        let p = Presence {
            name: "Alice".into(),
            node: "n1".into(),
            room: "side".into(),
            status: Status::Busy,
            note: Some("in a meeting".into()),
        };
        let bytes = encode_presence(&p);
        assert_eq!(decode_presence(&bytes), Some(p));
        assert_eq!(node_of(&bytes).as_deref(), Some("n1"));
        assert_eq!(decode_presence(b"{\"name\":\"a b\"}"), None);
        assert_eq!(decode_presence(b"not json"), None);
        let said = encode_said("lobby", "alice", "hi \"there\"\t", Timestamp(7));
        let back: Said = serde_json::from_slice(&said).unwrap();
        assert_eq!(back.text, "hi \"there\"\t");
        assert_eq!((back.to.as_str(), back.ts), ("lobby", 7));
    }
}
