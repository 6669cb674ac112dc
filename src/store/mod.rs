//! The database: accounts and recorded room messages in SQLite. Used only
//! from the storage thread (and by the operator commands, each with its
//! own connection); the event loop never waits on it.
//!
//! Messages are stored in chunks: everything one room said between two
//! commits is one row, one message per line (`ts TAB sender TAB text`;
//! text never holds a line feed), with the room's sequence number of its
//! first message. A row per message cost SQLite about two microseconds
//! each, more than the whole broadcast to a small room; a chunk costs a
//! few bytes of formatting per message.
//!
//! WAL mode: readers (an operator listing accounts) never block the
//! writer, and a transaction is either wholly in the log or not at all, so
//! a crash leaves a prefix of the batches committed, without gaps or
//! duplicates. `synchronous = NORMAL` keeps commits cheap: they survive
//! the process being killed; a power cut may lose the last ones.

pub mod backend;
pub mod backup;
pub mod check;
pub mod moderation;
pub mod password;

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::chat::history::Chunk;
use crate::wire::proto::{Name, Recorded, Role, Timestamp};

/// The schema this build writes; `PRAGMA user_version` holds it.
pub const SCHEMA_VERSION: i64 = 3;
/// How long a statement waits for another connection's lock (an operator
/// command writing while the server runs) before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE accounts (
    key     TEXT PRIMARY KEY,   -- the name, lower-cased: names ignore case
    name    TEXT NOT NULL,      -- as registered
    hash    TEXT NOT NULL,      -- Argon2id, PHC string
    created INTEGER NOT NULL,   -- seconds since 1970, UTC
    role    TEXT NOT NULL DEFAULT 'user',  -- user, moderator or admin
    token_gen INTEGER NOT NULL DEFAULT 0   -- session tokens of another are void
) WITHOUT ROWID;
CREATE TABLE rooms (
    id   INTEGER PRIMARY KEY,
    key  TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);
CREATE TABLE chunks (
    id    INTEGER PRIMARY KEY,  -- in the order they were stored
    room  INTEGER NOT NULL REFERENCES rooms(id),
    first INTEGER NOT NULL,     -- the room's sequence number of the first line
    count INTEGER NOT NULL,     -- lines
    lines TEXT NOT NULL         -- per message: seconds TAB sender TAB text LF
);
CREATE INDEX chunks_by_room ON chunks(room, id);
";

/// Moderation, added in version 2 (a version 1 database gains it, and the
/// accounts their roles, when first opened).
const MODERATION_SCHEMA: &str = "
CREATE TABLE sanctions (
    kind    TEXT NOT NULL,      -- mute or ban
    key     TEXT NOT NULL,      -- the target lower-cased: a name or a range
    target  TEXT NOT NULL,      -- as shown
    until   INTEGER,            -- seconds since 1970, UTC; NULL: until lifted
    by      TEXT NOT NULL,
    reason  TEXT,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE room_settings (
    key       TEXT PRIMARY KEY, -- the room's name, lower-cased
    name      TEXT NOT NULL,
    topic     TEXT,
    moderated INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY, -- in the order the actions were taken
    ts     INTEGER NOT NULL,
    by     TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT
);
";

/// Resuming and sessions, added in version 3: the history's epoch and
/// the secret that signs session tokens.
const IDENTITY_SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// From version 1 to 2.
const UPGRADE_1: &str = "ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT 'user';";
/// From version 2 to 3.
const UPGRADE_2: &str = "ALTER TABLE accounts ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0;";

/// What the store knows of a room's messages without asking SQLite.
#[derive(Clone, Copy, Default, Debug)]
struct Count {
    stored: usize,
    next: i64,
}

/// An error with what was being done.
pub type Error = String;

fn ctx(what: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| format!("{what}: {e}")
}

/// An open database.
pub struct Store {
    db: Connection,
    /// Messages kept per room; 0 keeps none.
    keep: usize,
    /// Lower-cased room name to its row id.
    room_ids: HashMap<Box<str>, i64>,
    /// Per room id: messages stored, and the sequence number of the next.
    counts: HashMap<i64, Count>,
    /// A batch failed: `room_ids` and `counts` may be wrong until read
    /// again from the database.
    stale: bool,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, or in memory for
    /// `:memory:`. Checks that it is writable and of a known schema.
    pub fn open(path: &str, keep: usize) -> Result<Store, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = Connection::open_with_flags(path, flags).map_err(ctx("cannot open"))?;
        db.busy_timeout(BUSY_TIMEOUT)
            .map_err(ctx("cannot configure"))?;
        if db.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err("cannot write to it (read-only)".into());
        }
        // Reading the header is where a file that is not a database fails.
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ctx("cannot read it"))?;
        if version == 0 {
            // Chunks are tens of kilobytes at busy times: bigger pages
            // mean fewer overflow pages and fewer writes per byte.
            db.execute_batch("PRAGMA page_size = 16384")
                .map_err(ctx("cannot configure"))?;
        }
        db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(ctx("cannot switch to WAL mode"))?;
        db.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 2500")
            .map_err(ctx("cannot configure"))?;
        match version {
            0 => {
                let tx = db.unchecked_transaction().map_err(ctx("cannot write"))?;
                tx.execute_batch(SCHEMA)
                    .and_then(|()| tx.execute_batch(MODERATION_SCHEMA))
                    .and_then(|()| tx.execute_batch(IDENTITY_SCHEMA))
                    .map_err(ctx("cannot create the schema"))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(ctx("cannot create the schema"))?;
                tx.commit().map_err(ctx("cannot create the schema"))?;
            }
            1 | 2 => {
                let tx = db.unchecked_transaction().map_err(ctx("cannot write"))?;
                let from_1 = if version == 1 {
                    tx.execute_batch(UPGRADE_1)
                        .and_then(|()| tx.execute_batch(MODERATION_SCHEMA))
                } else {
                    Ok(())
                };
                from_1
                    .and_then(|()| tx.execute_batch(UPGRADE_2))
                    .and_then(|()| tx.execute_batch(IDENTITY_SCHEMA))
                    .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
                    .and_then(|()| tx.commit())
                    .map_err(ctx("cannot upgrade the schema"))?;
            }
            SCHEMA_VERSION => {
                // Proves the file writable now rather than at the first
                // message: takes the write lock and lets it go.
                db.execute_batch("BEGIN IMMEDIATE; COMMIT")
                    .map_err(ctx("cannot write to it"))?;
            }
            v => {
                return Err(format!(
                    "schema version {v} is not one this chatd knows ({SCHEMA_VERSION})"
                ));
            }
        }
        let mut store = Store {
            db,
            keep,
            room_ids: HashMap::new(),
            counts: HashMap::new(),
            stale: false,
        };
        store.load_rooms()?;
        Ok(store)
    }

    fn load_rooms(&mut self) -> Result<(), Error> {
        let mut stmt = self
            .db
            .prepare(
                "SELECT r.id, r.key, coalesce(sum(c.count), 0), coalesce(max(c.first + c.count), 0)
                 FROM rooms r LEFT JOIN chunks c ON c.room = r.id GROUP BY r.id",
            )
            .map_err(ctx("cannot read rooms"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(ctx("cannot read rooms"))?;
        for row in rows {
            let (id, key, stored, next) = row.map_err(ctx("cannot read rooms"))?;
            self.room_ids.insert(key.into(), id);
            let stored = stored.max(0) as usize;
            self.counts.insert(id, Count { stored, next });
        }
        Ok(())
    }

    /// Registered names, in the case they were registered in, with their
    /// roles.
    pub fn account_names(&self) -> Result<Vec<(Name, Role)>, Error> {
        self.accounts()
            .map(|v| v.into_iter().map(|(name, _, role)| (name, role)).collect())
    }

    /// Registered names with when they were registered and their roles, by
    /// name. A role this chatd does not know reads as `user`.
    pub fn accounts(&self) -> Result<Vec<(Name, Timestamp, Role)>, Error> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT name, created, role FROM accounts ORDER BY key")
            .map_err(ctx("cannot list accounts"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Name::from(r.get::<_, String>(0)?),
                    Timestamp(r.get::<_, i64>(1)?.max(0) as u64),
                    Role::parse(&r.get::<_, String>(2)?).unwrap_or_default(),
                ))
            })
            .map_err(ctx("cannot list accounts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("cannot list accounts"))
    }

    /// The session-token generation of the account `name` (any case).
    pub fn token_generation(&self, name: &str) -> Result<Option<u32>, Error> {
        self.db
            .prepare_cached("SELECT token_gen FROM accounts WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([name.to_ascii_lowercase()], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|g| g.map(|g| g.clamp(0, i64::from(u32::MAX)) as u32))
            .map_err(ctx("cannot read an account"))
    }

    /// Each account's session-token generation.
    pub fn token_generations(&self) -> Result<Vec<(Name, u32)>, Error> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT name, token_gen FROM accounts")
            .map_err(ctx("cannot list accounts"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    Name::from(r.get::<_, String>(0)?),
                    r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                ))
            })
            .map_err(ctx("cannot list accounts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(ctx("cannot list accounts"))
    }

    /// Where this node's history of the cluster's stream `epoch` ends (0:
    /// nothing yet). History of another stream (one made again since) is
    /// dropped: its numbers mean nothing in this one.
    pub fn cluster_cursor(&mut self, epoch: &str) -> Result<u64, Error> {
        let read = |db: &Connection, key: &str| -> Result<Option<String>, Error> {
            db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(ctx("cannot read the cluster cursor"))
        };
        if read(&self.db, "cluster_epoch")?.as_deref() == Some(epoch) {
            let cursor = read(&self.db, "cluster_cursor")?;
            return Ok(cursor.and_then(|c| c.parse().ok()).unwrap_or(0));
        }
        let tx = self.db.transaction().map_err(ctx("cannot reset history"))?;
        tx.execute_batch("DELETE FROM chunks; DELETE FROM rooms;")
            .and_then(|()| {
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('cluster_epoch', ?1), \
                     ('cluster_cursor', '0')",
                    [epoch],
                )
            })
            .map_err(ctx("cannot reset history"))?;
        tx.commit().map_err(ctx("cannot reset history"))?;
        self.room_ids.clear();
        self.counts.clear();
        Ok(0)
    }

    /// The history's epoch and the token secret, made on first use: a new
    /// database is a new epoch.
    pub fn identity(&self) -> Result<(String, Vec<u8>), Error> {
        let read = |key: &str| -> Result<Option<String>, Error> {
            self.db
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(ctx("cannot read the epoch"))
        };
        let fresh = |key: &str, bytes: usize| -> Result<String, Error> {
            let mut value = vec![0u8; bytes];
            crate::crypto::random(&mut value);
            let value = crate::crypto::hex(&value);
            self.db
                .execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                )
                .map_err(ctx("cannot store the epoch"))?;
            Ok(read(key)?.unwrap_or(value))
        };
        let epoch = match read("epoch")? {
            Some(e) => e,
            None => fresh("epoch", 8)?,
        };
        let secret = match read("token_secret")? {
            Some(s) => s,
            None => fresh("token_secret", 32)?,
        };
        Ok((epoch, secret.into_bytes()))
    }

    /// The stored hash of the account `name` (any case).
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, Error> {
        self.db
            .prepare_cached("SELECT hash FROM accounts WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([name.to_ascii_lowercase()], |r| r.get(0))
                    .optional()
            })
            .map_err(ctx("cannot read an account"))
    }

    /// Creates the account; false if the name is registered already. Its
    /// session tokens start at a random generation, so a token of an
    /// earlier account of the same name (deleted since) never works.
    pub fn add_account(&self, name: &str, hash: &str, now: Timestamp) -> Result<bool, Error> {
        self.add_account_with(name, hash, now, fresh_generation())
    }

    /// As `add_account`, with its tokens' generation given (a cluster's
    /// nodes all use the one the account was registered with).
    pub fn add_account_with(
        &self,
        name: &str,
        hash: &str,
        now: Timestamp,
        generation: u32,
    ) -> Result<bool, Error> {
        self.db
            .prepare_cached(
                "INSERT INTO accounts (key, name, hash, created, token_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    name.to_ascii_lowercase(),
                    name,
                    hash,
                    now.0 as i64,
                    generation
                ])
            })
            .map(|n| n == 1)
            .map_err(ctx("cannot create an account"))
    }

    /// Replaces the account's hash, ending its sessions (their tokens);
    /// false if there is no such account.
    pub fn set_password_hash(&self, name: &str, hash: &str) -> Result<bool, Error> {
        self.db
            .prepare_cached(
                "UPDATE accounts SET hash = ?2, token_gen = token_gen + 1 WHERE key = ?1",
            )
            .and_then(|mut s| s.execute(params![name.to_ascii_lowercase(), hash]))
            .map(|n| n == 1)
            .map_err(ctx("cannot change a password"))
    }

    /// Makes this database's copy of a cluster's account what the cluster
    /// says (`None`: deleted).
    pub fn mirror_account(
        &self,
        key: &str,
        record: Option<&crate::cluster::AccountRecord>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let Some(r) = record else {
            return self.delete_account(key).map(|_| ());
        };
        self.db
            .prepare_cached(
                "INSERT INTO accounts (key, name, hash, created, role, token_gen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO UPDATE
                 SET name = ?2, hash = ?3, role = ?5, token_gen = ?6",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.name.to_ascii_lowercase(),
                    r.name,
                    r.hash,
                    now.0 as i64,
                    r.role,
                    r.tokens
                ])
            })
            .map(|_| ())
            .map_err(ctx("cannot copy an account"))
    }

    /// The account's hash, role and token generation.
    pub fn account_record(&self, name: &str) -> Result<Option<(String, String, u32)>, Error> {
        self.db
            .query_row(
                "SELECT hash, role, token_gen FROM accounts WHERE key = ?1",
                [name.to_ascii_lowercase()],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, i64>(2)?.clamp(0, i64::from(u32::MAX)) as u32,
                    ))
                },
            )
            .optional()
            .map_err(ctx("cannot read an account"))
    }

    /// Deletes the account; false if there is no such account.
    pub fn delete_account(&self, name: &str) -> Result<bool, Error> {
        self.db
            .prepare_cached("DELETE FROM accounts WHERE key = ?1")
            .and_then(|mut s| s.execute([name.to_ascii_lowercase()]))
            .map(|n| n == 1)
            .map_err(ctx("cannot delete an account"))
    }

    /// Changes whenever another connection commits (an operator command):
    /// a cheap way to notice that accounts may have changed.
    pub fn data_version(&self) -> Result<i64, Error> {
        self.db
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(ctx("cannot read the data version"))
    }

    /// Stores `chunks` in one transaction, in order, a row each; then
    /// prunes rooms that went well past `keep` (a
    /// tenth over, so that pruning is not per message).
    pub fn record(&mut self, chunks: &[Chunk]) -> Result<(), Error> {
        self.record_upto(chunks, None)
    }

    /// As `record`, and in the same transaction notes `cursor`, the last
    /// position of the cluster's stream these chunks hold: a restart goes
    /// on from there, with nothing missed and nothing twice.
    pub fn record_upto(&mut self, chunks: &[Chunk], cursor: Option<u64>) -> Result<(), Error> {
        if (self.keep == 0 || chunks.is_empty()) && cursor.is_none() {
            return Ok(());
        }
        if self.stale {
            // What this store believed of rooms and counts was lost with a
            // rolled-back batch: read it again before numbering more.
            self.room_ids.clear();
            self.counts.clear();
            self.load_rooms()?;
            self.stale = false;
        }
        let stored = self.try_record(chunks, cursor);
        self.stale = stored.is_err();
        stored
    }

    fn try_record(&mut self, chunks: &[Chunk], cursor: Option<u64>) -> Result<(), Error> {
        let tx = self
            .db
            .transaction()
            .map_err(ctx("cannot record messages"))?;
        if let Some(cursor) = cursor {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('cluster_cursor', ?1)",
                [cursor.to_string()],
            )
            .map_err(ctx("cannot record the cluster cursor"))?;
        }
        let mut touched = Vec::new();
        let chunks = if self.keep == 0 { &[][..] } else { chunks };
        for chunk in chunks {
            let id = room_id(&tx, &mut self.room_ids, &chunk.room)?;
            let c = self.counts.entry(id).or_default();
            // The chat numbers messages (it tells clients their `seq`).
            let first = i64::try_from(chunk.first).unwrap_or(i64::MAX);
            tx.prepare_cached(
                "INSERT INTO chunks (room, first, count, lines) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![id, first, chunk.count as i64, chunk.lines]))
            .map_err(ctx("cannot record messages"))?;
            c.next = first + chunk.count as i64;
            c.stored += chunk.count;
            if c.stored > self.keep.saturating_add(self.keep / 10) {
                touched.push(id);
            }
        }
        for id in touched {
            prune(&tx, &mut self.counts, self.keep, id)?;
        }
        tx.commit().map_err(ctx("cannot record messages"))
    }

    /// Prunes every room to `keep` (at shutdown): whole chunks only, so up
    /// to one chunk more may stay; reads never return more than `keep`.
    pub fn prune_all(&mut self) -> Result<(), Error> {
        if self.keep == 0 {
            // Recording is off for this run; what earlier runs kept stays.
            return Ok(());
        }
        let rooms: Vec<i64> = self
            .counts
            .iter()
            .filter(|&(_, c)| c.stored > self.keep)
            .map(|(&id, _)| id)
            .collect();
        if rooms.is_empty() {
            return Ok(());
        }
        let tx = self.db.transaction().map_err(ctx("cannot prune history"))?;
        for room in rooms {
            prune(&tx, &mut self.counts, self.keep, room)?;
        }
        tx.commit().map_err(ctx("cannot prune history"))
    }

    /// The newest `n` messages of `room` (any case), oldest first; never
    /// more than `keep`, whatever pruning has not yet removed.
    pub fn recent(&self, room: &str, n: usize) -> Result<Vec<Recorded>, Error> {
        let n = n.min(self.keep);
        let Some(&id) = self.room_ids.get(room.to_ascii_lowercase().as_str()) else {
            return Ok(Vec::new());
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .db
            .prepare_cached("SELECT first, lines FROM chunks WHERE room = ?1 ORDER BY id DESC")
            .map_err(ctx("cannot read history"))?;
        let mut rows = stmt.query([id]).map_err(ctx("cannot read history"))?;
        let mut newest_first = Vec::new();
        while newest_first.len() < n {
            let Some(row) = rows.next().map_err(ctx("cannot read history"))? else {
                break;
            };
            let first: i64 = row.get(0).map_err(ctx("cannot read history"))?;
            let lines: String = row.get(1).map_err(ctx("cannot read history"))?;
            let mut chunk = Chunk::parse(&lines, first.max(0) as u64);
            while newest_first.len() < n {
                match chunk.pop() {
                    Some(m) => newest_first.push(m),
                    None => break,
                }
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// The number the next message recorded in `room` gets (0 if none
    /// ever was).
    pub fn next_seq(&self, room: &str) -> u64 {
        self.room_ids
            .get(room.to_ascii_lowercase().as_str())
            .and_then(|id| self.counts.get(id))
            .map_or(0, |c| c.next.max(0) as u64)
    }

    /// Messages of `room` by number, oldest first: with `after`, those
    /// after it (the newest `n`, and one more if there are more, so the
    /// caller knows); with `before`, the newest `n` before it.
    pub fn numbered(
        &self,
        room: &str,
        after: Option<u64>,
        before: Option<u64>,
        n: usize,
    ) -> Result<Vec<Recorded>, Error> {
        let Some(&id) = self.room_ids.get(room.to_ascii_lowercase().as_str()) else {
            return Ok(Vec::new());
        };
        let want = if after.is_some() { n + 1 } else { n };
        let mut stmt = self
            .db
            .prepare_cached("SELECT first, lines FROM chunks WHERE room = ?1 ORDER BY id DESC")
            .map_err(ctx("cannot read history"))?;
        let mut rows = stmt.query([id]).map_err(ctx("cannot read history"))?;
        let mut newest_first = Vec::new();
        'chunks: while newest_first.len() < want {
            let Some(row) = rows.next().map_err(ctx("cannot read history"))? else {
                break;
            };
            let first: i64 = row.get(0).map_err(ctx("cannot read history"))?;
            let lines: String = row.get(1).map_err(ctx("cannot read history"))?;
            for m in Chunk::parse(&lines, first.max(0) as u64).into_iter().rev() {
                if after.is_some_and(|a| m.seq <= a) {
                    break 'chunks;
                }
                if before.is_some_and(|b| m.seq >= b) {
                    continue;
                }
                newest_first.push(m);
                if newest_first.len() == want {
                    break 'chunks;
                }
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Every room with recorded messages (by lower-cased name): its newest
    /// `n` (oldest first), and whether it has older ones. For the in-memory history at start.
    pub fn tails(&self, n: usize) -> Result<Vec<(Name, Vec<Recorded>, bool)>, Error> {
        let mut out = Vec::new();
        for (key, id) in &self.room_ids {
            let total = self.counts.get(id).map_or(0, |c| c.stored).min(self.keep);
            if total == 0 {
                continue;
            }
            let messages = self.recent(key, n)?;
            if !messages.is_empty() {
                let older = total > messages.len();
                out.push((Name::from(&**key), messages, older));
            }
        }
        Ok(out)
    }
}

/// Deletes the chunks of `room` that hold only messages older than its
/// newest `keep`. A room's chunks are in id order and their messages in
/// sequence order, so those are its oldest chunks: they are walked from
/// the oldest through the index and deleted as one id range, and the
/// count kept is lowered by what went. Scanning the room's every chunk
/// (twice, to recount) cost the storage thread all its time in a soak
/// of one-message chunks.
fn prune(
    tx: &rusqlite::Transaction<'_>,
    counts: &mut HashMap<i64, Count>,
    keep: usize,
    room: i64,
) -> Result<(), Error> {
    let c = counts.entry(room).or_default();
    let oldest_kept = c
        .next
        .saturating_sub(i64::try_from(keep).unwrap_or(i64::MAX));
    let (mut last, mut gone) = (None, 0usize);
    {
        let mut oldest = tx
            .prepare_cached(
                "SELECT id, first + count, count FROM chunks WHERE room = ?1 ORDER BY id",
            )
            .map_err(ctx("cannot prune history"))?;
        let mut rows = oldest.query([room]).map_err(ctx("cannot prune history"))?;
        while let Some(row) = rows.next().map_err(ctx("cannot prune history"))? {
            let (id, end, count): (i64, i64, i64) = (
                row.get(0).map_err(ctx("cannot prune history"))?,
                row.get(1).map_err(ctx("cannot prune history"))?,
                row.get(2).map_err(ctx("cannot prune history"))?,
            );
            if end > oldest_kept {
                break;
            }
            last = Some(id);
            gone += count.max(0) as usize;
        }
    }
    if let Some(last) = last {
        tx.prepare_cached("DELETE FROM chunks WHERE room = ?1 AND id <= ?2")
            .and_then(|mut s| s.execute(params![room, last]))
            .map_err(ctx("cannot prune history"))?;
    }
    c.stored = c.stored.saturating_sub(gone);
    Ok(())
}

/// A connection to the existing database at `path` that only reads, for
/// the operator's `check` and `backup`. Read-write underneath when
/// allowed, with writes refused (`query_only`): a read-only connection
/// cannot remove the WAL files it creates beside a database no server has
/// open, and they would be left owned by whoever ran the command.
pub fn open_reader(path: &std::path::Path) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = match Connection::open_with_flags(path, flags) {
        Ok(db) => db,
        // Permission to read only: that is all that is needed.
        Err(_) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
    };
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "query_only", true)?;
    Ok(db)
}

/// The id of `room`, creating its row the first time.
fn room_id(
    tx: &rusqlite::Transaction<'_>,
    ids: &mut HashMap<Box<str>, i64>,
    room: &str,
) -> Result<i64, Error> {
    let key = room.to_ascii_lowercase();
    if let Some(&id) = ids.get(key.as_str()) {
        return Ok(id);
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO rooms (key, name) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET name = name RETURNING id",
        )
        .and_then(|mut s| s.query_row([&key, room], |r| r.get(0)))
        .map_err(ctx("cannot record a room"))?;
    ids.insert(key.into(), id);
    Ok(id)
}

/// A random token generation for a new account: a name deleted and
/// registered again does not revive the old account's tokens.
pub fn fresh_generation() -> u32 {
    let mut generation = [0u8; 4];
    crate::crypto::random(&mut generation);
    u32::from_le_bytes(generation) >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message from alice in `room`.
    fn msg(room: &Name, text: &str) -> (Name, Recorded) {
        let m = Recorded {
            sender: "alice".into(),
            text: text.into(),
            ts: Timestamp(1_700_000_000),
            seq: 0,
        };
        (room.clone(), m)
    }

    thread_local! {
        /// Each room's next number, as the chat would assign it.
        static NEXT: std::cell::RefCell<HashMap<String, u64>> = Default::default();
    }

    /// One chunk per message, numbered on per room (across calls).
    fn chunks(batch: &[(Name, Recorded)]) -> Vec<Chunk> {
        batch
            .iter()
            .map(|(room, m)| {
                let first = NEXT.with(|n| {
                    let mut n = n.borrow_mut();
                    let next = n.entry(room.to_ascii_lowercase()).or_insert(0);
                    *next += 1;
                    *next - 1
                });
                let mut c = Chunk::with_capacity(room.clone(), 0, first);
                c.push(m.ts, &m.sender, &m.text);
                c
            })
            .collect()
    }

    fn texts(v: &[Recorded]) -> Vec<&str> {
        v.iter().map(|m| &*m.text).collect()
    }

    #[test]
    fn accounts_ignore_case_and_keep_theirs() {
        let s = Store::open(":memory:", 10).unwrap();
        assert!(s.add_account("Alice", "h1", Timestamp(5)).unwrap());
        assert!(!s.add_account("ALICE", "h2", Timestamp(6)).unwrap());
        assert_eq!(s.password_hash("alice").unwrap().as_deref(), Some("h1"));
        assert_eq!(
            s.account_names().unwrap(),
            vec![(Name::from("Alice"), Role::User)]
        );
        assert!(s.set_password_hash("aLICE", "h3").unwrap());
        assert_eq!(s.password_hash("Alice").unwrap().as_deref(), Some("h3"));
        assert!(!s.set_password_hash("bob", "h").unwrap());
        let generation = s.token_generation("alice").unwrap();
        assert!(s.delete_account("alice").unwrap());
        assert!(!s.delete_account("alice").unwrap());
        assert_eq!(s.password_hash("alice").unwrap(), None);
        // The name registered again: the old account's tokens stay void.
        assert!(s.add_account("alice", "h4", Timestamp(7)).unwrap());
        assert_ne!(s.token_generation("alice").unwrap(), generation);
    }

    #[test]
    fn history_per_room_pruned_to_keep() {
        let mut s = Store::open(":memory:", 5).unwrap();
        let (lobby, rust): (Name, Name) = ("lobby".into(), "Rust".into());
        let batch: Vec<(Name, Recorded)> = (0..20)
            .map(|i| msg(if i % 2 == 0 { &lobby } else { &rust }, &i.to_string()))
            .collect();
        s.record(&chunks(&batch)).unwrap();
        assert_eq!(texts(&s.recent("LOBBY", 3).unwrap()), ["14", "16", "18"]);
        // Never more than keep, pruned or not yet.
        assert_eq!(s.recent("rust", 100).unwrap().len(), 5);
        // The room keeps the case it was first recorded in.
        let name: String =
            s.db.query_row("SELECT name FROM rooms WHERE key = 'rust'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(name, "Rust");
        // Chunks go whole, once newer ones make them entirely old.
        let more: Vec<(Name, Recorded)> = (0..10).map(|i| msg(&lobby, &format!("x{i}"))).collect();
        s.record(&chunks(&more)).unwrap();
        s.prune_all().unwrap();
        let chunks: i64 = s
            .db
            .query_row(
                "SELECT count(*) FROM chunks WHERE room = (SELECT id FROM rooms WHERE key = 'lobby')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        // One chunk per message here: the five newest stay.
        assert_eq!(chunks, 5);
        assert_eq!(
            texts(&s.recent("lobby", 9).unwrap()),
            ["x5", "x6", "x7", "x8", "x9"]
        );
        assert!(s.recent("nowhere", 5).unwrap().is_empty());
        // Over many prunes of chunks of every size, the count kept in
        // memory stays what the table holds.
        let mut next = 30;
        for round in 0..200 {
            let mut c = Chunk::with_capacity(lobby.clone(), 0, next);
            next += round % 4 + 1;
            for i in 0..(round % 4 + 1) {
                c.push(
                    Timestamp(1_700_000_000),
                    &"bob".into(),
                    &format!("{round}.{i}"),
                );
            }
            s.record(&[c]).unwrap();
        }
        s.prune_all().unwrap();
        let (id, in_table): (i64, i64) = s
            .db
            .query_row(
                "SELECT room, sum(count) FROM chunks WHERE room = (SELECT id FROM rooms WHERE key = 'lobby')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(s.counts[&id].stored as i64, in_table);
        assert!((5..5 + 4).contains(&in_table), "{in_table} kept");
    }

    #[test]
    fn reopening_finds_what_was_stored() {
        let dir = std::env::temp_dir().join(format!("chatd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reopen.db");
        let path = path.to_str().unwrap();
        let _ = std::fs::remove_file(path);
        let room: Name = "lobby".into();
        {
            let mut s = Store::open(path, 100).unwrap();
            s.add_account("bob", "h", Timestamp(1)).unwrap();
            s.record(&chunks(&[
                msg(&room, "a"),
                msg(&room, "b"),
                msg(&room, "c"),
            ]))
            .unwrap();
        }
        let s = Store::open(path, 100).unwrap();
        assert_eq!(
            s.account_names().unwrap(),
            vec![(Name::from("bob"), Role::User)]
        );
        let tails = s.tails(2).unwrap();
        assert_eq!(tails.len(), 1);
        assert_eq!(texts(&tails[0].1), ["b", "c"]);
        assert!(tails[0].2, "an older message exists");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = std::env::temp_dir().join(format!("chatd-store-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("junk.db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let e = Store::open(path.to_str().unwrap(), 10).err().unwrap();
        assert!(e.contains("not a database"), "{e}");
        let e = Store::open(dir.join("no/such/dir.db").to_str().unwrap(), 10)
            .err()
            .unwrap();
        assert!(e.contains("cannot open"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
