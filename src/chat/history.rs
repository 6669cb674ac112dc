//! The recent messages of every room, in memory: what a user entering a
//! room receives, and what `/history` answers without touching the disk.
//! The database keeps up to `--history-keep` per room; this keeps only the
//! newest `cap`, and knows whether older ones exist beyond them.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::wire::proto::{Name, Recorded, Timestamp};

/// Messages one room said, as they are stored: one line per message,
/// `seconds TAB sender TAB text LF` (text never holds a line feed), where
/// an empty `seconds` or `sender` is the previous line's: a burst from one
/// sender within a second stores little more than its text. The loop
/// writes them as messages are said and hands them to the storage thread
/// as plain bytes; sharing the messages themselves would make both threads
/// bump the same reference counts for every message. The in-memory
/// history takes only the newest lines of each chunk (`fold`), so a busy
/// room costs one line of formatting per message and nothing more.
#[derive(Debug, Default)]
pub struct Chunk {
    pub room: Name,
    pub lines: String,
    pub count: usize,
    /// The room's number (`seq`) of the first line.
    pub first: u64,
    /// Where the time or the sender changed: the line's byte offset, its
    /// time and its sender. The last one holds for the lines after it.
    marks: Vec<(usize, u64, Name)>,
    /// Lines already handed to the in-memory history.
    folded: usize,
}

impl Chunk {
    pub fn new(room: Name) -> Chunk {
        Chunk::with_capacity(room, 0, 0)
    }

    /// A chunk with room for `bytes` of lines, so that a busy room's chunk
    /// is not copied over and over as it grows.
    pub fn with_capacity(room: Name, bytes: usize, first: u64) -> Chunk {
        Chunk {
            room,
            lines: String::with_capacity(bytes),
            count: 0,
            first,
            marks: Vec::new(),
            folded: 0,
        }
    }

    /// The memory this chunk holds, which is what waiting to be stored
    /// costs: its allocations, not just the text in them (a chunk starts
    /// as big as the room's last one, so one message can hold kilobytes).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Chunk>()
            + self.lines.capacity()
            + self.marks.capacity() * std::mem::size_of::<(usize, u64, Name)>()
    }

    /// Appends a message as its line. Written by hand: `format!`
    /// machinery cost more than the rest of recording.
    pub fn push(&mut self, ts: Timestamp, sender: &Name, text: &str) {
        let (same_ts, same_sender) = match self.marks.last() {
            Some((_, t, s)) => (
                *t == ts.0,
                std::sync::Arc::ptr_eq(s, sender) || **s == **sender,
            ),
            None => (false, false),
        };
        if !(same_ts && same_sender) {
            self.marks.push((self.lines.len(), ts.0, sender.clone()));
        }
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        if !same_ts {
            let mut n = ts.0;
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
        lines.reserve(digits.len() - i + sender.len() + text.len() + 3);
        for &d in &digits[i..] {
            lines.push(d as char);
        }
        lines.push('\t');
        if !same_sender {
            lines.push_str(sender);
        }
        lines.push('\t');
        lines.push_str(text);
        lines.push('\n');
        self.count += 1;
    }

    /// The newest `n` lines not handed out before, oldest first, and
    /// whether older unhanded lines were passed over. Everything up to
    /// now counts as handed out afterwards.
    pub fn fold(&mut self, n: usize) -> (Vec<Recorded>, bool) {
        let new = self.count - self.folded;
        let k = new.min(n);
        self.folded = self.count;
        let mut starts = Vec::with_capacity(k);
        let mut end = self.lines.len();
        for _ in 0..k {
            // `end` is just past a line's LF.
            let start = self.lines[..end - 1].rfind('\n').map_or(0, |i| i + 1);
            starts.push(start);
            end = start;
        }
        let first_seq = self.first + (self.count - k) as u64;
        let messages = starts
            .iter()
            .rev()
            .enumerate()
            .filter_map(|(i, &start)| {
                let line = self.lines[start..].split('\n').next()?;
                let text = line.splitn(3, '\t').nth(2)?;
                let at = self.marks.partition_point(|m| m.0 <= start);
                let (_, ts, sender) = self.marks.get(at.checked_sub(1)?)?;
                Some(Recorded {
                    sender: sender.clone(),
                    text: text.into(),
                    ts: Timestamp(*ts),
                    seq: first_seq + i as u64,
                })
            })
            .collect();
        (messages, new > k)
    }

    /// The messages of stored `lines`, oldest first, numbered from
    /// `first`; a damaged line is skipped (its number with it).
    pub fn parse(lines: &str, first: u64) -> Vec<Recorded> {
        let mut last: Option<(u64, Name)> = None;
        let mut out = Vec::new();
        for (i, line) in lines.lines().enumerate() {
            let seq = first + i as u64;
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
                seq,
            });
        }
        out
    }
}

struct Tail {
    /// The room's lower-cased name.
    key: Box<str>,
    /// Newest last, at most `cap`.
    messages: VecDeque<Recorded>,
    /// Older messages of this room exist than those held.
    truncated: bool,
    /// The number the room's next recorded message gets.
    next_seq: u64,
    /// A room with members refers to this tail; it is not dropped.
    users: usize,
    /// When it was last left by its last member (a count, not a time),
    /// or 0 while it has members.
    idle: u64,
}

/// Per-room tails, addressed by a slot a room keeps while it exists.
/// Tails of rooms nobody is in are kept up to `max_idle`, the longest
/// unused dropped first: rooms made and left again and again cannot grow
/// memory without bound, and a dropped room's history is read from the
/// database when someone enters it again.
pub struct History {
    cap: usize,
    tails: Slab<Tail>,
    /// Lower-cased room name to its slot.
    slots: HashMap<Box<str>, usize>,
    max_idle: usize,
    /// Idle tails, longest idle first, as (slot, its `idle` then); an
    /// entry whose tail has since been used again or dropped is stale.
    idle: VecDeque<(usize, u64)>,
    idle_count: usize,
    stamp: u64,
}

impl History {
    /// Keeps up to `cap` messages per room (0 keeps none), and the tails of
    /// at most `max_idle` rooms without members.
    pub fn new(cap: usize, max_idle: usize) -> History {
        History {
            cap,
            tails: Slab::new(),
            slots: HashMap::new(),
            max_idle,
            idle: VecDeque::new(),
            idle_count: 0,
            stamp: 0,
        }
    }

    /// The slot of `room` if memory holds its history.
    pub fn slot_of(&self, room: &str) -> Option<usize> {
        self.slots.get(room.to_ascii_lowercase().as_str()).copied()
    }

    /// Whether memory holds the history of `room` (any case): else it may
    /// still be in the database.
    pub fn has(&self, room: &str) -> bool {
        self.slots.contains_key(room.to_ascii_lowercase().as_str())
    }

    /// Puts a room's recorded messages (oldest first) in place, from the
    /// database; `truncated` says older ones exist.
    pub fn load(&mut self, room: &str, messages: Vec<Recorded>, truncated: bool) {
        let slot = self.slot(room);
        let tail = &mut self.tails[slot];
        let skip = messages.len().saturating_sub(self.cap);
        tail.truncated = truncated || skip > 0;
        if let Some(last) = messages.last() {
            tail.next_seq = tail.next_seq.max(last.seq + 1);
        }
        tail.messages = messages.into_iter().skip(skip).collect();
        self.release(slot);
    }

    /// Puts a room in place from what the database had after a resume's
    /// `seq` (oldest first): its newest messages, and `next`, the number
    /// the database says the room's next message gets.
    pub fn load_after(&mut self, room: &str, messages: &[Recorded], truncated: bool, next: u64) {
        let slot = self.slot(room);
        let tail = &mut self.tails[slot];
        let skip = messages.len().saturating_sub(self.cap);
        tail.truncated = truncated || skip > 0;
        tail.next_seq = tail
            .next_seq
            .max(next)
            .max(messages.last().map_or(0, |m| m.seq.saturating_add(1)));
        tail.messages = messages[skip..].iter().cloned().collect();
        self.release(slot);
    }

    /// The slot of `room`, created empty if needed. Every call must be
    /// matched by a `release` once the room is gone.
    pub fn slot(&mut self, room: &str) -> usize {
        let key = room.to_ascii_lowercase();
        let slot = match self.slots.get(key.as_str()) {
            Some(&slot) => slot,
            None => {
                let slot = self.tails.insert(Tail {
                    key: key.as_str().into(),
                    messages: VecDeque::new(),
                    truncated: false,
                    next_seq: 0,
                    users: 0,
                    idle: 0,
                });
                self.slots.insert(key.into(), slot);
                slot
            }
        };
        let tail = &mut self.tails[slot];
        if tail.idle != 0 {
            tail.idle = 0;
            self.idle_count -= 1;
        }
        tail.users += 1;
        slot
    }

    /// The room using `slot` is gone: an empty tail is dropped, another
    /// kept while few enough are.
    pub fn release(&mut self, slot: usize) {
        let tail = &mut self.tails[slot];
        tail.users -= 1;
        if tail.users > 0 {
            return;
        }
        if tail.messages.is_empty() && !tail.truncated {
            let gone = self.tails.remove(slot);
            self.slots.remove(&gone.key);
            return;
        }
        self.stamp += 1;
        tail.idle = self.stamp;
        self.idle.push_back((slot, self.stamp));
        self.idle_count += 1;
        while self.idle_count > self.max_idle {
            let Some((slot, stamp)) = self.idle.pop_front() else {
                break;
            };
            if self.tails.get(slot).is_some_and(|t| t.idle == stamp) {
                let gone = self.tails.remove(slot);
                self.slots.remove(&gone.key);
                self.idle_count -= 1;
            }
        }
        // Stale entries are dropped as they reach the front; this keeps
        // the queue from growing with rooms entered and left again.
        while self
            .idle
            .front()
            .is_some_and(|&(slot, stamp)| self.tails.get(slot).is_none_or(|t| t.idle != stamp))
        {
            self.idle.pop_front();
        }
    }

    /// Adds messages (oldest first) to the room at `slot`; `skipped` says
    /// older ones were left out, so memory no longer holds them all.
    pub fn extend(&mut self, slot: usize, messages: Vec<Recorded>, skipped: bool) {
        if skipped && self.cap > 0 {
            self.tails[slot].truncated = true;
        }
        for m in messages {
            self.record(slot, m);
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The number for the next message recorded in the room at `slot`.
    pub fn take_seq(&mut self, slot: usize) -> u64 {
        let tail = &mut self.tails[slot];
        tail.next_seq += 1;
        tail.next_seq - 1
    }

    /// Numbers the next message of `slot` `next` (a cluster numbers
    /// messages by its one order, skipping those of other rooms).
    pub fn set_next_seq(&mut self, slot: usize, next: u64) {
        self.tails[slot].next_seq = next;
    }

    /// The messages after `seq` (oldest first, at most `max`, the newest
    /// kept) if memory holds them all, with whether more than `max` were
    /// missed; `None` if older ones must come from the database.
    pub fn after(&self, slot: usize, seq: u64, max: usize) -> Option<(Vec<Recorded>, bool)> {
        let tail = &self.tails[slot];
        let held_from = tail.messages.front().map_or(tail.next_seq, |m| m.seq);
        if tail.truncated && held_from > seq.saturating_add(1) {
            return None;
        }
        let newer: Vec<&Recorded> = tail.messages.iter().filter(|m| m.seq > seq).collect();
        let skip = newer.len().saturating_sub(max);
        Some((
            newer[skip..].iter().map(|m| (*m).clone()).collect(),
            skip > 0,
        ))
    }

    /// The `count` messages just before `seq` (oldest first) if memory
    /// holds them (or holds all there are); `None` otherwise.
    pub fn before(&self, slot: usize, seq: u64, count: usize) -> Option<Vec<Recorded>> {
        let tail = &self.tails[slot];
        let older: Vec<&Recorded> = tail.messages.iter().filter(|m| m.seq < seq).collect();
        if older.len() < count && tail.truncated {
            return None;
        }
        let skip = older.len().saturating_sub(count);
        Some(older[skip..].iter().map(|m| (*m).clone()).collect())
    }

    /// Keeps up to `cap` messages per room from now on (SIGHUP). Tails
    /// over a lower cap are cut at once; under a higher one they grow as
    /// messages arrive (and `recent` sends to the database what memory
    /// does not hold yet).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
        for (_, tail) in &mut self.tails {
            if tail.messages.len() > cap {
                let cut = tail.messages.len() - cap;
                tail.messages.drain(..cut);
                tail.truncated = true;
            }
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
        Some(self.newest(slot, n))
    }

    /// The newest `n` messages memory holds of the room at `slot`, oldest
    /// first: fewer if it holds fewer, whatever the database has.
    pub fn newest(&self, slot: usize, n: usize) -> Vec<Recorded> {
        let tail = &self.tails[slot];
        let skip = tail.messages.len().saturating_sub(n);
        tail.messages.iter().skip(skip).cloned().collect()
    }

    /// Rooms with a tail; for tests and stats.
    pub fn rooms(&self) -> usize {
        self.tails.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_weighs_what_it_holds_not_just_its_text() {
        let room: Name = "lobby".into();
        let sender: Name = "alice".into();
        let mut chunk = Chunk::with_capacity(room, 8192, 0);
        let empty = chunk.weight();
        assert!(empty >= 8192, "its reserved room counts: {empty}");
        chunk.push(Timestamp(1), &sender, "hi");
        assert!(chunk.weight() >= empty, "weights only grow");
        assert!(chunk.lines.len() < 100 && chunk.weight() > 8192);
    }
    use crate::wire::proto::Timestamp;

    fn msg(_room: &str, text: &str) -> Recorded {
        Recorded {
            sender: "alice".into(),
            text: text.into(),
            ts: Timestamp(0),
            seq: 0,
        }
    }

    fn texts(v: Option<Vec<Recorded>>) -> Option<Vec<String>> {
        v.map(|v| v.iter().map(|m| m.text.to_string()).collect())
    }

    #[test]
    fn keeps_the_newest_and_knows_when_it_cannot_answer() {
        let mut h = History::new(3, 100);
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
    fn a_new_cap_cuts_at_once_and_grows_with_new_messages() {
        let mut h = History::new(3, 100);
        let s = h.slot("Rust");
        for t in ["1", "2", "3"] {
            h.record(s, msg("Rust", t));
        }
        h.set_cap(2);
        assert_eq!(texts(h.recent(s, 2)), Some(vec!["2".into(), "3".into()]));
        assert_eq!(texts(h.recent(s, 3)), None, "\"1\" is only in the database");
        h.record(s, msg("Rust", "4"));
        assert_eq!(texts(h.recent(s, 2)), Some(vec!["3".into(), "4".into()]));
        h.set_cap(4);
        h.record(s, msg("Rust", "5"));
        assert_eq!(texts(h.recent(s, 4)), None, "memory holds three");
        let held: Vec<String> = h.newest(s, 4).iter().map(|m| m.text.to_string()).collect();
        assert_eq!(held, ["3", "4", "5"]);
        h.record(s, msg("Rust", "6"));
        assert_eq!(texts(h.recent(s, 4)).map(|v| v.len()), Some(4));
    }

    #[test]
    fn slots_ignore_case_and_outlive_their_room_when_not_empty() {
        let mut h = History::new(5, 100);
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
        let mut h = History::new(2, 100);
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
        let (alice, bob): (Name, Name) = ("alice".into(), "bob".into());
        let m = |sender: &Name, text: &str, ts, seq| Recorded {
            sender: sender.clone(),
            text: text.into(),
            ts: Timestamp(ts),
            seq,
        };
        let all = [
            m(&alice, "tabs\tstay", 1_763_733_727, 0),
            m(&alice, "second", 0, 1),
            m(&bob, "second", 0, 2),
            m(&bob, "again", 0, 3),
        ];
        for r in &all {
            c.push(r.ts, &r.sender, &r.text);
        }
        assert_eq!(c.count, 4);
        // Repeated times and senders are left out.
        assert_eq!(
            c.lines,
            "1763733727\talice\ttabs\tstay\n0\t\tsecond\n\tbob\tsecond\n\t\tagain\n"
        );
        let mut damaged = c.lines.clone();
        damaged.push_str("x\tno\n");
        assert_eq!(Chunk::parse(&damaged, 0), all.to_vec());
        // Numbered from the chunk's first.
        assert_eq!(Chunk::parse(&c.lines, 10)[3].seq, 13);
        // A damaged first line cannot lend its sender.
        assert_eq!(Chunk::parse("5\t\torphan\n", 0), vec![]);
        // The newest lines come back whole, elided fields filled in.
        assert_eq!(c.fold(2), (all[2..].to_vec(), true));
        assert_eq!(c.fold(2), (vec![], false));
        c.push(Timestamp(0), &bob, "third");
        assert_eq!(c.fold(5), (vec![m(&bob, "third", 0, 4)], false));
    }

    #[test]
    fn a_folded_chunk_feeds_the_tail() {
        let mut h = History::new(3, 100);
        let s = h.slot("lobby");
        let mut c = Chunk::new("lobby".into());
        let alice: Name = "alice".into();
        for t in ["1", "2", "3", "4"] {
            c.push(Timestamp(9), &alice, t);
        }
        let (messages, skipped) = c.fold(h.cap());
        h.extend(s, messages, skipped);
        assert_eq!(
            texts(h.recent(s, 3)),
            Some(vec!["2".into(), "3".into(), "4".into()])
        );
        assert_eq!(texts(h.recent(s, 4)), None, "\"1\" is only stored");
    }

    #[test]
    fn rooms_nobody_is_in_are_kept_only_so_many() {
        let mut h = History::new(5, 2);
        let alice: Name = "alice".into();
        let m = |text: &str| Recorded {
            sender: alice.clone(),
            text: text.into(),
            ts: Timestamp(0),
            seq: 0,
        };
        for room in ["a", "b", "c"] {
            let s = h.slot(room);
            h.record(s, m(room));
            h.release(s);
        }
        // "a" was left longest ago.
        assert!(!h.has("a"));
        assert!(h.has("B") && h.has("c"));
        // Entering a room makes it busy; leaving it makes it the newest.
        let b = h.slot("b");
        h.release(b);
        let d = h.slot("d");
        h.record(d, m("d"));
        h.release(d);
        assert!(h.has("b") && h.has("d") && !h.has("c"));
        assert_eq!(h.rooms(), 2);
        // A room with members is never dropped.
        let busy = h.slot("busy");
        h.record(busy, m("x"));
        for room in ["e", "f", "g"] {
            let s = h.slot(room);
            h.record(s, m(room));
            h.release(s);
        }
        assert!(h.has("busy"));
        assert_eq!(texts(h.recent(busy, 1)), Some(vec!["x".into()]));
    }

    #[test]
    fn zero_cap_keeps_nothing() {
        let mut h = History::new(0, 100);
        let s = h.slot("lobby");
        h.record(s, msg("lobby", "x"));
        assert_eq!(texts(h.recent(s, 5)), Some(vec![]));
    }
}
