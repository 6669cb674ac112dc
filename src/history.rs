//! The recent messages of every room, in memory: what a user entering a
//! room receives, and what `/history` answers without touching the disk.
//! The database keeps up to `--history-keep` per room; this keeps only the
//! newest `cap`, and knows whether older ones exist beyond them.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::proto::Recorded;

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

    fn msg(room: &str, text: &str) -> Recorded {
        Recorded {
            room: room.into(),
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
    fn zero_cap_keeps_nothing() {
        let mut h = History::new(0);
        let s = h.slot("lobby");
        h.record(s, msg("lobby", "x"));
        assert_eq!(texts(h.recent(s, 5)), Some(vec![]));
    }
}
