//! The recent messages of every room, in memory: what a user entering a
//! room receives, and what `/history` answers without touching the disk.
//! The database keeps up to `--history-keep` per room; this keeps only the
//! newest `cap`, and knows whether older ones exist beyond them.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::proto::{Name, Recorded, Timestamp};

/// Messages one room said, as they are stored: one line per message,
/// `seconds TAB sender TAB text LF` (text never holds a line feed), where
/// an empty `seconds` or `sender` is the previous line's: a burst from one
/// sender within a second stores little more than its text. The
/// loop writes them as messages are said and hands them to the storage
/// thread as plain bytes; sharing the messages themselves would make both
/// threads bump the same reference counts for every message.
#[derive(Debug, Default)]
pub struct Chunk {
    pub room: Name,
    pub lines: String,
    pub count: usize,
    /// The previous line's time and sender.
    last: Option<(u64, Name)>,
}

impl Chunk {
    pub fn new(room: Name) -> Chunk {
        Chunk {
            room,
            lines: String::new(),
            count: 0,
            last: None,
        }
    }

    /// Appends `m` as its line. Written by hand: `format!` machinery cost
    /// more than the rest of recording.
    pub fn push(&mut self, m: &Recorded) {
        let (same_ts, same_sender) = match &self.last {
            Some((ts, sender)) => (
                *ts == m.ts.0,
                std::sync::Arc::ptr_eq(sender, &m.sender) || **sender == *m.sender,
            ),
            None => (false, false),
        };
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        if !same_ts {
            let mut n = m.ts.0;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
        let lines = &mut self.lines;
        lines.reserve(digits.len() - i + m.sender.len() + m.text.len() + 3);
        for &d in &digits[i..] {
            lines.push(d as char);
        }
        lines.push('\t');
        if !same_sender {
            lines.push_str(&m.sender);
            self.last = Some((m.ts.0, m.sender.clone()));
        } else if !same_ts && let Some(last) = &mut self.last {
            last.0 = m.ts.0;
        }
        lines.push('\t');
        lines.push_str(&m.text);
        lines.push('\n');
        self.count += 1;
    }

    /// The messages of stored `lines`, oldest first; a damaged
    /// line is skipped.
    pub fn parse(lines: &str) -> Vec<Recorded> {
        let mut last: Option<(u64, Name)> = None;
        let mut out = Vec::new();
        for line in lines.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(ts), Some(sender), Some(text)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let ts = match (ts, &last) {
                ("", Some((ts, _))) => *ts,
                (ts, _) => match ts.parse() {
                    Ok(ts) => ts,
                    Err(_) => continue,
                },
            };
            let sender = match (sender, &last) {
                ("", Some((_, sender))) => sender.clone(),
                ("", None) => continue,
                (sender, _) => Name::from(sender),
            };
            last = Some((ts, sender.clone()));
            out.push(Recorded {
                sender,
                text: text.into(),
                ts: Timestamp(ts),
            });
        }
        out
    }
}

struct Tail {
    /// Newest last, at most `cap`.
    messages: VecDeque<Recorded>,
    /// Older messages of this room exist than those held.
    truncated: bool,
    /// A room with members refers to this tail; it is not dropped.
    users: usize,
}

/// Per-room tails, addressed by a slot a room keeps while it exists.
pub struct History {
    cap: usize,
    tails: Slab<Tail>,
    /// Lower-cased room name to its slot.
    slots: HashMap<Box<str>, usize>,
}

impl History {
    /// Keeps up to `cap` messages per room; 0 keeps none.
    pub fn new(cap: usize) -> History {
        History {
            cap,
            tails: Slab::new(),
            slots: HashMap::new(),
        }
    }

    /// Puts a room's recorded messages (oldest first) in place at start-up;
    /// `truncated` says older ones exist.
    pub fn load(&mut self, room: &str, messages: Vec<Recorded>, truncated: bool) {
        let slot = self.slot(room);
        let tail = &mut self.tails[slot];
        tail.users -= 1;
        let skip = messages.len().saturating_sub(self.cap);
        tail.truncated = truncated || skip > 0;
        tail.messages = messages.into_iter().skip(skip).collect();
    }

    /// The slot of `room`, created empty if needed. Every call must be
    /// matched by a `release` once the room is gone.
    pub fn slot(&mut self, room: &str) -> usize {
        let key = room.to_ascii_lowercase();
        let slot = match self.slots.get(key.as_str()) {
            Some(&slot) => slot,
            None => {
                let slot = self.tails.insert(Tail {
                    messages: VecDeque::new(),
                    truncated: false,
                    users: 0,
                });
                self.slots.insert(key.into(), slot);
                slot
            }
        };
        self.tails[slot].users += 1;
        slot
    }

    /// The room using `slot` is gone; an empty tail is dropped.
    pub fn release(&mut self, slot: usize) {
        let tail = &mut self.tails[slot];
        tail.users -= 1;
        if tail.users == 0 && tail.messages.is_empty() && !tail.truncated {
            self.tails.remove(slot);
            self.slots.retain(|_, s| *s != slot);
        }
    }

    pub fn record(&mut self, slot: usize, message: Recorded) {
        if self.cap == 0 {
            return;
        }
        let tail = &mut self.tails[slot];
        if tail.messages.len() == self.cap {
            tail.messages.pop_front();
            tail.truncated = true;
        }
        tail.messages.push_back(message);
    }

    /// The newest `n` messages of the room at `slot`, oldest first, if
    /// memory holds them all (else the database must answer).
    pub fn recent(&self, slot: usize, n: usize) -> Option<Vec<Recorded>> {
        let tail = &self.tails[slot];
        if n > tail.messages.len() && tail.truncated {
            return None;
        }
        let skip = tail.messages.len().saturating_sub(n);
        Some(tail.messages.iter().skip(skip).cloned().collect())
    }

    /// Rooms with a tail; for tests and stats.
    pub fn rooms(&self) -> usize {
        self.tails.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Timestamp;

    fn msg(_room: &str, text: &str) -> Recorded {
        Recorded {
            sender: "alice".into(),
            text: text.into(),
            ts: Timestamp(0),
        }
    }

    fn texts(v: Option<Vec<Recorded>>) -> Option<Vec<String>> {
        v.map(|v| v.iter().map(|m| m.text.to_string()).collect())
    }

    #[test]
    fn keeps_the_newest_and_knows_when_it_cannot_answer() {
        let mut h = History::new(3);
        let s = h.slot("Rust");
        for t in ["1", "2"] {
            h.record(s, msg("Rust", t));
        }
        // Everything ever recorded is held: any n can be answered.
        assert_eq!(texts(h.recent(s, 10)), Some(vec!["1".into(), "2".into()]));
        for t in ["3", "4"] {
            h.record(s, msg("Rust", t));
        }
        assert_eq!(
            texts(h.recent(s, 3)),
            Some(vec!["2".into(), "3".into(), "4".into()])
        );
        assert_eq!(texts(h.recent(s, 1)), Some(vec!["4".into()]));
        // "1" was dropped: only the database can answer 4.
        assert_eq!(texts(h.recent(s, 4)), None);
    }

    #[test]
    fn slots_ignore_case_and_outlive_their_room_when_not_empty() {
        let mut h = History::new(5);
        let a = h.slot("Rust");
        let b = h.slot("rust");
        assert_eq!(a, b);
        h.release(b);
        h.record(a, msg("Rust", "kept"));
        h.release(a);
        assert_eq!(h.rooms(), 1);
        let again = h.slot("RUST");
        assert_eq!(texts(h.recent(again, 5)), Some(vec!["kept".into()]));
        // An empty room leaves nothing behind.
        let e = h.slot("empty");
        h.release(e);
        assert_eq!(h.rooms(), 1);
    }

    #[test]
    fn loaded_tails_know_what_is_older() {
        let mut h = History::new(2);
        h.load("lobby", vec![msg("lobby", "a"), msg("lobby", "b")], true);
        let s = h.slot("lobby");
        assert_eq!(texts(h.recent(s, 2)), Some(vec!["a".into(), "b".into()]));
        assert_eq!(texts(h.recent(s, 3)), None);
        h.load(
            "x",
            vec![msg("x", "1"), msg("x", "2"), msg("x", "3")],
            false,
        );
        let x = h.slot("x");
        assert_eq!(texts(h.recent(x, 2)), Some(vec!["2".into(), "3".into()]));
        assert_eq!(texts(h.recent(x, 3)), None);
    }

    #[test]
    fn chunks_round_trip_their_lines() {
        let room: Name = "lobby".into();
        let mut c = Chunk::new(room.clone());
        let a = Recorded {
            ts: Timestamp(1_763_733_727),
            text: "tabs\tstay".into(),
            ..msg("lobby", "")
        };
        let b = Recorded {
            ts: Timestamp(0),
            ..msg("lobby", "second")
        };
        let c2 = Recorded {
            sender: "bob".into(),
            ..b.clone()
        };
        let c3 = Recorded {
            text: "again".into(),
            ..c2.clone()
        };
        for m in [&a, &b, &c2, &c3] {
            c.push(m);
        }
        assert_eq!(c.count, 4);
        // Repeated times and senders are left out.
        assert_eq!(
            c.lines,
            "1763733727\talice\ttabs\tstay\n0\t\tsecond\n\tbob\tsecond\n\t\tagain\n"
        );
        let mut damaged = c.lines.clone();
        damaged.push_str("x\tno\n");
        assert_eq!(Chunk::parse(&damaged), vec![a, b, c2, c3]);
        // A damaged first line cannot lend its sender.
        assert_eq!(Chunk::parse("5\t\torphan\n"), vec![]);
    }

    #[test]
    fn zero_cap_keeps_nothing() {
        let mut h = History::new(0);
        let s = h.slot("lobby");
        h.record(s, msg("lobby", "x"));
        assert_eq!(texts(h.recent(s, 5)), Some(vec![]));
    }
}
