//! `chatd check`: verifies a database, read-only, beside a running server
//! or not. SQLite's own `integrity_check` (every page and index, not just
//! the quicker `quick_check`), then what the schema promises and SQLite
//! cannot know: a schema version this build reads, each room's chunks
//! numbered without gaps or overlaps, each chunk holding as many intact
//! lines as it says, names stored under their lower-cased keys, and
//! password hashes that are Argon2id PHC strings.

use std::path::Path;

use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::{SCHEMA_VERSION, open_reader, password};
use crate::wire::proto::Role;

/// Most problems `integrity_check` reports (its own default is 100).
const MAX_INTEGRITY_ERRORS: u32 = 100;
/// Most problems reported in all; past it, only how many more there were.
/// A badly damaged file would otherwise print one per chunk.
pub const MAX_PROBLEMS: usize = 1000;

/// What a sound database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub accounts: u64,
    pub rooms: u64,
    pub messages: u64,
}

/// Problems found, one sentence each, in the order they were found.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: Vec<String>,
    /// Problems found past `MAX_PROBLEMS`, not listed.
    pub more: usize,
}

impl Problems {
    fn add(&mut self, problem: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Checks the database at `path` without changing it.
pub fn check(path: &Path) -> Result<Summary, Problems> {
    let mut problems = Problems::default();
    if !path.exists() {
        problems.add(format!("no database at {}", path.display()));
        return Err(problems);
    }
    let db = match open_reader(path) {
        Ok(db) => db,
        Err(e) => {
            problems.add(format!("cannot open it: {e}"));
            return Err(problems);
        }
    };
    // One read transaction: every count and check sees the same commit,
    // whatever a running server writes meanwhile (WAL lets it go on).
    if let Err(e) = db.execute_batch("BEGIN") {
        problems.add(format!("cannot read it: {e}"));
        return Err(problems);
    }
    // Reading the header is where a file that is not a database fails;
    // nothing else is worth trying then.
    let version: i64 = match db.query_row("PRAGMA user_version", [], |r| r.get(0)) {
        Ok(v) => v,
        Err(e) => {
            problems.add(format!("cannot read it: {e}"));
            return Err(problems);
        }
    };
    integrity(&db, &mut problems);
    if version != SCHEMA_VERSION {
        // Tables of another version may mean something else: the rest of
        // the checks would only add noise.
        problems.add(match version {
            0 => "schema version 0: not a chatd database (no schema)".to_string(),
            1 | 2 => {
                format!("schema version {version}: an older chatd's; starting chatd upgrades it")
            }
            v => format!("schema version {v} is not one this chatd knows ({SCHEMA_VERSION})"),
        });
        return Err(problems);
    }
    let summary = Summary {
        accounts: accounts(&db, &mut problems),
        rooms: rooms(&db, &mut problems),
        messages: chunks(&db, &mut problems),
    };
    if problems.is_empty() {
        Ok(summary)
    } else {
        Err(problems)
    }
}

fn integrity(db: &Connection, problems: &mut Problems) {
    let rows = db
        .prepare(&format!("PRAGMA integrity_check({MAX_INTEGRITY_ERRORS})"))
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {}
        Ok(rows) => {
            // A row may hold several lines, under a heading naming the
            // database ("*** in database main ***"): one problem a line.
            for line in rows.iter().flat_map(|r| r.lines()) {
                if !line.starts_with("***") && !line.trim().is_empty() {
                    problems.add(format!("integrity: {line}"));
                }
            }
        }
        Err(e) => problems.add(format!("integrity: cannot run the check: {e}")),
    }
    let rows = db.prepare("PRAGMA foreign_key_check").and_then(|mut s| {
        s.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()
    });
    match rows {
        Ok(rows) => {
            for (table, rowid, parent) in rows {
                let row = rowid.map_or_else(|| "a row".to_string(), |id| format!("row {id}"));
                problems.add(format!(
                    "integrity: {row} of {table} refers to a missing row of {parent}"
                ));
            }
        }
        Err(e) => problems.add(format!("integrity: cannot check references: {e}")),
    }
}

/// Checks every account; returns how many there are.
fn accounts(db: &Connection, problems: &mut Problems) -> u64 {
    let mut n = 0;
    let result = db
        .prepare("SELECT key, name, hash, role FROM accounts ORDER BY key")
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            while let Some(row) = rows.next()? {
                n += 1;
                let (key, name) = (text(row.get_ref(0)?), text(row.get_ref(1)?));
                let hash = text(row.get_ref(2)?);
                let role = text(row.get_ref(3)?);
                let who = format!("account {}", name.as_deref().unwrap_or(&key_shown(&key)));
                if let Some(p) = key_problem(&who, &key, &name) {
                    problems.add(p);
                }
                match role {
                    Ok(role) if Role::parse(&role).is_some_and(|r| r.as_str() == role) => {}
                    Ok(role) => problems.add(format!("{who}: unknown role {role:?}")),
                    Err(e) => problems.add(format!("{who}: role {e}")),
                }
                match hash {
                    Err(e) => problems.add(format!("{who}: password hash {e}")),
                    Ok(hash) => {
                        if let Err(e) = password::check_phc(&hash) {
                            problems.add(format!("{who}: password hash unusable: {e}"));
                        }
                    }
                }
            }
            Ok(())
        });
    if let Err(e) = result {
        problems.add(format!("cannot read accounts: {e}"));
    }
    n
}

/// Checks every room's row; returns how many there are.
fn rooms(db: &Connection, problems: &mut Problems) -> u64 {
    let mut n = 0;
    let result = db
        .prepare("SELECT id, key, name FROM rooms ORDER BY id")
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            while let Some(row) = rows.next()? {
                n += 1;
                let id: i64 = row.get(0)?;
                let (key, name) = (text(row.get_ref(1)?), text(row.get_ref(2)?));
                if let Some(p) = key_problem(&format!("room {id}"), &key, &name) {
                    problems.add(p);
                }
            }
            Ok(())
        });
    if let Err(e) = result {
        problems.add(format!("cannot read rooms: {e}"));
    }
    n
}

/// Checks every room's chunks, in the order they were stored; returns how
/// many messages they hold.
fn chunks(db: &Connection, problems: &mut Problems) -> u64 {
    let mut messages: u64 = 0;
    let result = db
        .prepare(
            "SELECT c.room, r.name, c.id, c.first, c.count, c.lines
             FROM chunks c LEFT JOIN rooms r ON r.id = c.room ORDER BY c.room, c.id",
        )
        .and_then(|mut s| {
            let mut rows = s.query([])?;
            let mut room: Option<(i64, Sequence)> = None;
            while let Some(row) = rows.next()? {
                let room_id: i64 = row.get(0)?;
                if room.as_ref().is_none_or(|(id, _)| *id != room_id) {
                    let name = match row.get::<_, Option<String>>(1) {
                        Ok(Some(name)) => format!("#{name}"),
                        _ => format!("room {room_id}"),
                    };
                    room = Some((room_id, Sequence::new(name)));
                }
                let Some((_, seq)) = room.as_mut() else {
                    continue;
                };
                let chunk = Stored {
                    id: row.get(2)?,
                    first: row.get(3)?,
                    count: row.get(4)?,
                };
                messages = messages.saturating_add(chunk.count.max(0).unsigned_abs());
                for p in seq.next(chunk, text(row.get_ref(5)?)) {
                    problems.add(p);
                }
            }
            Ok(())
        });
    if let Err(e) = result {
        problems.add(format!("cannot read history: {e}"));
    }
    messages
}

/// A text column's value, or what is wrong with it (damage can leave
/// bytes that are not UTF-8, or another type).
fn text(v: ValueRef<'_>) -> Result<String, String> {
    match v {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| "is not valid UTF-8".to_string()),
        ValueRef::Null => Err("is missing (NULL)".into()),
        _ => Err("is not text".into()),
    }
}

fn key_shown(key: &Result<String, String>) -> String {
    match key {
        Ok(k) => k.clone(),
        Err(_) => "(unreadable)".into(),
    }
}

/// Names ignore case: each is stored under its lower-cased form, the
/// key every lookup uses. Another key makes the row unreachable.
fn key_problem(
    who: &str,
    key: &Result<String, String>,
    name: &Result<String, String>,
) -> Option<String> {
    match (key, name) {
        (Err(e), _) => Some(format!("{who}: key {e}")),
        (_, Err(e)) => Some(format!("{who}: name {e}")),
        (Ok(key), Ok(name)) if *key != name.to_ascii_lowercase() => Some(format!(
            "{who}: stored under key {key:?}, not its lower-cased name"
        )),
        _ => None,
    }
}

/// A chunk's numbers as stored.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub id: i64,
    /// The room's sequence number of its first message.
    pub first: i64,
    /// Its messages (lines).
    pub count: i64,
}

/// One room's chunks, fed in the order they were stored (by id). The
/// schema's promise: each chunk starts where the previous one ended, so
/// the room's messages are numbered without gaps or repeats. Pruning
/// deletes whole chunks from the oldest end only, so the first chunk left
/// may start anywhere at or above 0.
#[derive(Debug)]
pub struct Sequence {
    room: String,
    /// The previous chunk's id and the number just past its last message.
    prev: Option<(i64, i64)>,
}

impl Sequence {
    /// A room named `room` in problem reports (`#lobby`).
    pub fn new(room: String) -> Sequence {
        Sequence { room, prev: None }
    }

    /// Checks the next chunk and its `lines`; returns its problems.
    pub fn next(&mut self, chunk: Stored, lines: Result<String, String>) -> Vec<String> {
        let Stored { id, first, count } = chunk;
        let at = format!("{}: chunk {id}", self.room);
        let mut problems = Vec::new();
        if first < 0 || count < 0 {
            problems.push(format!(
                "{at}: impossible numbers (first {first}, count {count})"
            ));
        }
        match self.prev {
            Some((prev, end)) if first > end => problems.push(format!(
                "{at}: gap: messages {end} to {} are missing between chunks {prev} and {id}",
                first - 1
            )),
            Some((prev, end)) if first < end => problems.push(format!(
                "{at}: overlap: starts at message {first}, but chunk {prev} ends at {}",
                end - 1
            )),
            _ => {}
        }
        // Whatever is wrong here, the next chunk is checked against this
        // one's end: one damaged chunk is one problem, not two.
        self.prev = Some((id, first.saturating_add(count.max(0))));
        match lines {
            Err(e) => problems.push(format!("{at}: lines {e}")),
            Ok(lines) => {
                if let Some(p) = lines_problem(&lines, count) {
                    problems.push(format!("{at}: {p}"));
                }
            }
        }
        problems
    }
}

/// What is wrong with a chunk's `lines` that claims `count` messages:
/// each is `seconds TAB sender TAB text LF`, where an empty seconds or
/// sender repeats the previous line's, so the first line has both.
fn lines_problem(lines: &str, count: i64) -> Option<String> {
    if !lines.is_empty() && !lines.ends_with('\n') {
        return Some("last line has no line end (cut short)".into());
    }
    let mut n: i64 = 0;
    for line in lines.lines() {
        n += 1;
        let mut fields = line.splitn(3, '\t');
        let (Some(ts), Some(sender), Some(_text)) = (fields.next(), fields.next(), fields.next())
        else {
            return Some(format!("line {n} is not seconds, sender and text"));
        };
        if n == 1 && (ts.is_empty() || sender.is_empty()) {
            return Some("first line lacks its time or sender".into());
        }
        if !ts.is_empty() && ts.parse::<u64>().is_err() {
            return Some(format!("line {n} has a bad time {ts:?}"));
        }
    }
    (n != count).then(|| format!("says {count} messages but holds {n} lines"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Problems of chunks given as (id, first, count), each holding
    /// `count` good lines.
    fn room(chunks: &[(i64, i64, i64)]) -> Vec<String> {
        let mut seq = Sequence::new("#lobby".into());
        chunks
            .iter()
            .flat_map(|&(id, first, count)| {
                let lines = "1700000000\talice\thi\n".repeat(count.max(0) as usize);
                seq.next(Stored { id, first, count }, Ok(lines))
            })
            .collect()
    }

    #[test]
    fn contiguous_chunks_pass_wherever_pruning_left_the_start() {
        assert!(room(&[]).is_empty());
        assert!(room(&[(1, 0, 3), (2, 3, 1), (5, 4, 10)]).is_empty());
        // The oldest chunks were pruned: the first left starts later.
        assert!(room(&[(40, 1200, 5), (41, 1205, 2)]).is_empty());
    }

    #[test]
    fn a_gap_names_the_missing_messages() {
        let p = room(&[(1, 0, 3), (2, 5, 1)]);
        assert_eq!(
            p,
            ["#lobby: chunk 2: gap: messages 3 to 4 are missing between chunks 1 and 2"]
        );
    }

    #[test]
    fn an_overlap_or_a_repeat_is_found() {
        let p = room(&[(1, 0, 3), (2, 2, 2)]);
        assert_eq!(
            p,
            ["#lobby: chunk 2: overlap: starts at message 2, but chunk 1 ends at 2"]
        );
        // The same chunk numbers twice (a batch stored again).
        let p = room(&[(1, 0, 3), (2, 3, 2), (3, 3, 2)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("chunk 3: overlap"), "{p:?}");
        // Going backwards is an overlap too.
        let p = room(&[(1, 10, 3), (2, 0, 3)]);
        assert!(p[0].contains("chunk 2: overlap"), "{p:?}");
    }

    #[test]
    fn one_bad_chunk_is_one_problem_and_later_ones_follow_it() {
        // Chunk 2 is misplaced; chunk 3 follows it, so only 2 is named.
        let p = room(&[(1, 0, 3), (2, 7, 2), (3, 9, 1)]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("chunk 2: gap"), "{p:?}");
    }

    #[test]
    fn impossible_numbers_are_named() {
        let p = room(&[(1, -4, 2)]);
        assert!(p[0].contains("impossible numbers"), "{p:?}");
    }

    #[test]
    fn lines_must_match_the_count_and_the_format() {
        let mut seq = Sequence::new("#r".into());
        let s = |count| Stored {
            id: 1,
            first: 0,
            count,
        };
        // Time and sender left empty repeat the previous line's.
        let good = "1700000000\talice\thi\n\t\tagain\n1700000001\t\tlater\n";
        assert!(seq.next(s(3), Ok(good.into())).is_empty());
        let mut seq = Sequence::new("#r".into());
        assert!(seq.next(s(2), Ok(good.into()))[0].contains("says 2 messages but holds 3 lines"));
        for (lines, want) in [
            ("1700000000\talice\thi", "cut short"),
            ("\talice\thi\n", "lacks its time or sender"),
            ("1700000000\talice\thi\nbroken\n", "line 2 is not"),
            ("1700000000\talice\thi\nx\t\thi\n", "bad time"),
        ] {
            let mut seq = Sequence::new("#r".into());
            let p = seq.next(s(2), Ok(lines.into()));
            assert!(p.len() == 1 && p[0].contains(want), "{lines:?}: {p:?}");
        }
        let mut seq = Sequence::new("#r".into());
        let p = seq.next(s(1), Err("is not valid UTF-8".into()));
        assert_eq!(p, ["#r: chunk 1: lines is not valid UTF-8"]);
    }

    #[test]
    fn keys_must_be_the_lower_cased_names() {
        let ok = |s: &str| Ok(s.to_string());
        assert_eq!(key_problem("room 1", &ok("rust"), &ok("Rust")), None);
        let p = key_problem("room 1", &ok("Rust"), &ok("Rust")).unwrap();
        assert!(p.contains("not its lower-cased name"), "{p}");
    }
}
