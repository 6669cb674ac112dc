//! What the chat records: each turn's room messages as chunks for the
//! storage thread, and the newest of them folded into the in-memory
//! history. Part of `Chat`.

use super::*;

impl Chat {
    /// Recorded messages of `room` (oldest first) from the database, at
    /// start-up; `truncated` says older ones exist.
    pub fn load_history(&mut self, room: &str, messages: Vec<Recorded>, truncated: bool) {
        self.history.load(room, messages, truncated);
    }

    /// Takes the messages recorded since the last call, to be stored.
    pub fn take_records(&mut self) -> Vec<Chunk> {
        for room in std::mem::take(&mut self.record_rooms) {
            self.fold(room);
        }
        self.drop_transient_rooms();
        self.record_bytes = 0;
        self.batch += 1;
        std::mem::take(&mut self.records)
    }

    /// Brings the in-memory history of `room` up to date with the
    /// messages recorded this batch.
    pub(super) fn fold(&mut self, room: usize) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let Some((batch, i)) = r.chunk else { return };
        if batch != self.batch {
            return;
        }
        let chunk = &mut self.records[i];
        let (messages, skipped) = chunk.fold(self.history.cap());
        let hint = chunk.lines.len().min(CHUNK_HINT_MAX);
        self.history.extend(r.history, messages, skipped);
        if let Some(r) = self.rooms.get_mut(room) {
            r.chunk_hint = hint;
        }
    }

    /// How much memory `take_records` would hand over.
    pub fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    /// Keeps a room message in the room's recent history and in the batch
    /// to be stored; returns its number in the room.
    pub(super) fn record(&mut self, room: usize, sender: &Name, text: &str) -> u64 {
        let seq = self.history.take_seq(self.rooms[room].history);
        self.record_at(room, seq, sender, text, self.clock)
    }

    /// As `record`, numbered `seq` by the cluster's order (the numbers of
    /// one room may skip those of others) and stamped `ts`.
    pub(super) fn record_at(
        &mut self,
        room: usize,
        seq: u64,
        sender: &Name,
        text: &str,
        ts: Timestamp,
    ) -> u64 {
        self.history.set_next_seq(self.rooms[room].history, seq + 1);
        // A chunk numbers its lines one after another: a skip starts a
        // new one, once the last is in the in-memory history.
        let current = match self.rooms[room].chunk {
            Some((batch, i)) if batch == self.batch => {
                let c = &self.records[i];
                if c.first + c.count as u64 == seq {
                    Some(i)
                } else {
                    self.fold(room);
                    None
                }
            }
            _ => None,
        };
        let r = &mut self.rooms[room];
        let i = match current {
            Some(i) => i,
            None => {
                let chunk = Chunk::with_capacity(r.name.clone(), r.chunk_hint, seq);
                self.record_bytes += chunk.weight();
                self.records.push(chunk);
                self.record_rooms.push(room);
                let i = self.records.len() - 1;
                r.chunk = Some((self.batch, i));
                i
            }
        };
        let chunk = &mut self.records[i];
        let before = chunk.weight();
        chunk.push(ts, sender, text);
        // Capacities only grow, so this never goes below zero.
        self.record_bytes += chunk.weight() - before;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::super::script::*;
    use super::*;
    use crate::wire::proto::Since;

    #[test]
    fn history_is_replayed_on_entering_and_listed_on_request() {
        let mut s = Script::with(ChatConfig {
            history: 2,
            ..ChatConfig::default()
        });
        s.chat.set_clock(Timestamp(1_763_733_720), s.now);
        let a = s.user("alice");
        for t in ["one", "two", "three"] {
            s.say(a, t);
        }
        let records = s.chat.take_records();
        assert_eq!(records.len(), 1, "one chunk for the room");
        assert_eq!(records[0].count, 3);
        let b = s.open();
        let seen = s.say(b, "bob");
        assert_eq!(
            seen[&b.0][2..],
            got(&[
                "[2025-11-21 14:02] <alice> two",
                "[2025-11-21 14:02] <alice> three"
            ])
        );
        // 20 are kept in memory, the default /history.
        assert_eq!(
            s.say(b, "/history")[&b.0],
            got(&[
                "* history of #lobby: 3 messages",
                "[2025-11-21 14:02] <alice> one",
                "[2025-11-21 14:02] <alice> two",
                "[2025-11-21 14:02] <alice> three",
                "* end of /history"
            ])
        );
        // A room new to memory is looked up in the database first; an
        // empty history shows nothing in text.
        assert!(s.say(b, "/join side").is_empty());
        assert!(matches!(&s.jobs[..], [Job::History { count: 20, .. }]));
        assert_eq!(
            s.answer(Outcome::History(vec![]))[&b.0],
            got(&["* you joined #side"])
        );
    }

    #[test]
    fn a_room_dropped_from_memory_is_read_back_before_it_is_entered() {
        let mut s = Script::with(ChatConfig {
            idle_rooms: 1,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        let b = s.user("bob");
        for room in ["one", "two"] {
            s.say(a, &format!("/join {room}"));
            s.answer(Outcome::History(vec![]));
            s.say(a, &format!("said in {room}"));
        }
        s.say(a, "/join lobby");
        s.chat.take_records();
        // #two is still in memory: entered at once, with its history.
        let seen = s.say(b, "/join two");
        assert!(
            seen[&b.0].len() > 1 && seen[&b.0][1].ends_with("<alice> said in two"),
            "{seen:?}"
        );
        assert!(s.jobs.is_empty());
        // #one was dropped: b waits in #two until its history is read,
        // and meanwhile hears #two, not #one.
        assert!(s.say(b, "/join one").is_empty());
        assert!(s.chat.is_waiting(b));
        let record = Recorded {
            sender: "alice".into(),
            text: "said in one".into(),
            ts: Timestamp(0),
            seq: 0,
        };
        let seen = s.answer(Outcome::History(vec![record]));
        assert_eq!(seen[&b.0][0], "* you joined #one");
        assert!(seen[&b.0][1].ends_with("<alice> said in one"), "{seen:?}");
        assert!(!s.chat.is_waiting(b));
    }

    #[test]
    fn history_beyond_memory_is_a_job() {
        let mut s = Script::with(ChatConfig {
            history: 1,
            history_keep: 100,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        for i in 0..25 {
            s.say(a, &format!("m{i}"));
        }
        let seen = s.say(a, "/history 5");
        assert_eq!(seen[&a.0].len(), 7, "served from memory: {seen:?}");
        assert!(s.say(a, "/history 30").is_empty());
        assert!(s.chat.is_waiting(a));
        match &s.jobs[0] {
            Job::History { room, count, .. } => assert_eq!((&**room, *count), ("lobby", 30)),
            other => panic!("{other:?}"),
        }
        let seen = s.answer(Outcome::History(Vec::new()));
        assert_eq!(
            seen[&a.0],
            got(&["* history of #lobby: 0 messages", "* end of /history"])
        );
        assert!(!s.chat.is_waiting(a));
    }

    #[test]
    fn entering_shows_what_is_kept_when_fewer_are_kept_than_shown() {
        let mut s = Script::with(ChatConfig {
            history: 20,
            history_keep: 5,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        for i in 0..7 {
            s.say(a, &format!("m{i}"));
        }
        s.chat.take_records();
        let b = s.open();
        let seen = s.say(b, "bob");
        assert_eq!(seen[&b.0].len(), 2 + 5, "{seen:?}");
        assert!(seen[&b.0][2].ends_with("<alice> m2"));
        let seen = s.say(b, "/history 100");
        assert_eq!(seen[&b.0].len(), 2 + 5, "{seen:?}");
        assert!(s.jobs.is_empty(), "all kept ones are in memory");
    }

    #[test]
    fn nothing_is_recorded_with_history_keep_zero() {
        let mut s = Script::with(ChatConfig {
            history_keep: 0,
            ..ChatConfig::default()
        });
        let a = s.user("alice");
        s.say(a, "not kept");
        assert!(s.chat.take_records().is_empty());
        assert_eq!(
            s.say(a, "/history")[&a.0],
            got(&["* history of #lobby: 0 messages", "* end of /history"])
        );
    }

    #[test]
    fn a_resume_from_the_database_adds_what_was_said_while_it_was_read() {
        let mut s = Script::with(ChatConfig::default());
        s.chat.set_identity("e1", b"secret");
        let alice = s.user("alice");
        for i in 0..30 {
            s.say(alice, &format!("m{i}"));
        }
        // bob saw up to m2 (seq 2): memory holds only the newest 20.
        let bob = s.open();
        s.take();
        let cmd = Command::Connect {
            name: "bob",
            room: None,
            password: None,
            token: None,
            since: Some(Since {
                seq: 2,
                epoch: "e1",
            }),
        };
        s.chat.handle(bob, cmd, &mut s.out);
        s.take();
        assert!(matches!(&s.jobs[..], [Job::History { after: Some(2), .. }]));
        // Said while the database was read.
        s.say(alice, "late");
        let stored: Vec<Recorded> = (3..30)
            .map(|i| Recorded {
                sender: "alice".into(),
                text: format!("m{i}").into(),
                ts: Timestamp(0),
                seq: i,
            })
            .collect();
        let seen = s.answer(Outcome::Resumed {
            messages: stored,
            next: 30,
        });
        let lines = &seen[&bob.0];
        assert!(lines[0].starts_with("* you joined #lobby as bob"));
        let said: Vec<&str> = lines[1..]
            .iter()
            .filter_map(|l| l.split("> ").nth(1))
            .collect();
        let mut want: Vec<String> = (3..30).map(|i| format!("m{i}")).collect();
        want.push("late".into());
        assert_eq!(said, want, "every missed message once, in order");
    }
}
