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
    /// to be stored.
    pub(super) fn record(&mut self, room: usize, sender: &Name, text: &str) {
        let r = &mut self.rooms[room];
        let i = match r.chunk {
            Some((batch, i)) if batch == self.batch => i,
            _ => {
                let chunk = Chunk::with_capacity(r.name.clone(), r.chunk_hint);
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
        chunk.push(self.clock, sender, text);
        // Capacities only grow, so this never goes below zero.
        self.record_bytes += chunk.weight() - before;
    }
}
