//! `chatd backup`: a consistent copy of a database, taken while a server
//! may be writing to it, through SQLite's online backup API.
//!
//! The copy is one snapshot: a read transaction is held on the source for
//! the whole backup. In WAL mode that never blocks the server's writer (it
//! only keeps checkpoints from passing the snapshot, so the WAL grows for
//! the duration); without it, each commit by the server would restart the
//! backup from its first page, and under steady traffic it would never
//! end. Every commit is a whole batch of chunks, so a snapshot holds each
//! room's history up to some message with nothing missing before it.
//!
//! The copy is written beside DEST under another name and moved into
//! place only once complete and on disk: a file named DEST is always a
//! whole backup.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use super::{BUSY_TIMEOUT, Error, SCHEMA_VERSION, open_reader};

/// Pages copied per step: 1.6 MB at chatd's 16 KiB pages. Between steps
/// the source's lock is released and the copier pauses, so that the
/// server's writer and its disk are never starved for long.
const STEP_PAGES: i32 = 100;
/// The pause between steps.
const STEP_PAUSE: Duration = Duration::from_millis(5);

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub accounts: u64,
    pub rooms: u64,
    pub messages: u64,
}

/// Copies the chatd database at `src` to the new file `dest`.
pub fn backup(src: &Path, dest: &Path) -> Result<Copied, Error> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(exists(dest));
    }
    if !src.exists() {
        return Err(format!("no database at {} (use --db PATH)", src.display()));
    }
    let source = open_source(src)?;
    let partial = Partial::claim(dest)?;
    let copied = copy(&source, &partial.path)?;
    drop(source);
    partial.publish(dest)?;
    let bytes = fs::metadata(dest)
        .map_err(|e| format!("cannot read {}: {e}", dest.display()))?
        .len();
    Ok(Copied { bytes, ..copied })
}

fn exists(dest: &Path) -> Error {
    format!("{} exists; choose a new path", dest.display())
}

/// Opens `src` for reading and checks that it is a chatd database.
fn open_source(src: &Path) -> Result<Connection, Error> {
    let db = open_reader(src).map_err(|e| format!("cannot open {}: {e}", src.display()))?;
    // Reading the header is where a file that is not a database fails.
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    if version != SCHEMA_VERSION {
        return Err(format!(
            "{} is not a chatd database this chatd knows (schema version {version}, \
             expected {SCHEMA_VERSION})",
            src.display()
        ));
    }
    Ok(db)
}

/// Copies `source` into the empty file at `to`; returns what it holds
/// (all but the size).
fn copy(source: &Connection, to: &Path) -> Result<Copied, Error> {
    let mut dest =
        Connection::open(to).map_err(|e| format!("cannot open {}: {e}", to.display()))?;
    // The snapshot: a read transaction that the backup's steps find open
    // and so leave open (see the top of this file).
    source
        .execute_batch("BEGIN")
        .and_then(|()| source.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())))
        .map_err(|e| format!("cannot read the database: {e}"))?;
    {
        let backup = Backup::new(source, &mut dest).map_err(|e| format!("cannot back up: {e}"))?;
        let mut blocked_since: Option<Instant> = None;
        loop {
            match backup.step(STEP_PAGES) {
                Ok(StepResult::Done) => break,
                Ok(StepResult::More) => blocked_since = None,
                Ok(StepResult::Busy | StepResult::Locked) => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > BUSY_TIMEOUT {
                        return Err(format!(
                            "cannot back up: the database stayed locked for {BUSY_TIMEOUT:?}"
                        ));
                    }
                }
                Ok(_) => return Err("cannot back up: unexpected step result".into()),
                Err(e) => return Err(format!("cannot back up: {e}")),
            }
            thread::sleep(STEP_PAUSE);
        }
    }
    source
        .execute_batch("COMMIT")
        .map_err(|e| format!("cannot end the read: {e}"))?;
    // The copy carries the source's WAL flag; a rollback journal makes it
    // one self-contained file (chatd switches it back to WAL when it
    // opens it).
    dest.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
        .map_err(|e| format!("cannot finish the copy: {e}"))?;
    let count = |sql: &str| -> Result<u64, Error> {
        dest.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0).unsigned_abs())
            .map_err(|e| format!("cannot read the copy: {e}"))
    };
    let copied = Copied {
        bytes: 0,
        accounts: count("SELECT count(*) FROM accounts")?,
        rooms: count("SELECT count(*) FROM rooms")?,
        messages: count("SELECT coalesce(sum(count), 0) FROM chunks")?,
    };
    dest.close()
        .map_err(|(_, e)| format!("cannot close the copy: {e}"))?;
    Ok(copied)
}

/// The file a backup is written to before it is complete, beside DEST (so
/// that moving it into place is a rename on one file system); removed
/// unless published.
struct Partial {
    path: PathBuf,
    published: bool,
}

impl Partial {
    /// Creates the empty file (an empty file is an empty database).
    fn claim(dest: &Path) -> Result<Partial, Error> {
        let mut name = dest
            .file_name()
            .ok_or_else(|| format!("{} is not a file name", dest.display()))?
            .to_os_string();
        name.push(format!(".partial-{}", std::process::id()));
        let path = dest.with_file_name(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Partial {
            path,
            published: false,
        })
    }

    /// Flushes the copy to disk and gives it DEST's name, unless DEST has
    /// appeared meanwhile: a hard link fails rather than replace a file.
    fn publish(mut self, dest: &Path) -> Result<(), Error> {
        let on_disk = |path: &Path| File::open(path).and_then(|f| f.sync_all());
        on_disk(&self.path).map_err(|e| format!("cannot flush {}: {e}", self.path.display()))?;
        match fs::hard_link(&self.path, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists(dest)),
            Err(e) => return Err(format!("cannot create {}: {e}", dest.display())),
        }
        self.published = true;
        let _ = fs::remove_file(&self.path);
        // The new name is durable once its directory is.
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        on_disk(dir).map_err(|e| format!("cannot flush {}: {e}", dir.display()))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
            // Files SQLite may have left beside it.
            for suffix in ["-journal", "-wal", "-shm"] {
                let mut beside = self.path.clone().into_os_string();
                beside.push(suffix);
                let _ = fs::remove_file(beside);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::history::Chunk;
    use crate::store::Store;
    use crate::wire::proto::Timestamp;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("chatd-backup-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn copies_and_refuses_to_overwrite() {
        let d = dir("unit");
        let src = d.join("src.db");
        {
            let mut s = Store::open(src.to_str().unwrap(), 100).unwrap();
            s.add_account("bob", "h", Timestamp(1)).unwrap();
            let mut c = Chunk::new("lobby".into());
            c.push(Timestamp(5), &"bob".into(), "hi");
            c.push(Timestamp(5), &"bob".into(), "again");
            s.record(&[c]).unwrap();
        }
        let dest = d.join("copy.db");
        let copied = backup(&src, &dest).unwrap();
        assert_eq!(
            (copied.accounts, copied.rooms, copied.messages),
            (1, 1, 2),
            "{copied:?}"
        );
        assert!(copied.bytes > 0);
        // Nothing but the copy is left beside it.
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("copy"))
            .collect();
        assert_eq!(names, ["copy.db"]);
        let e = backup(&src, &dest).unwrap_err();
        assert!(e.ends_with("exists; choose a new path"), "{e}");
        let e = backup(&d.join("none.db"), &d.join("x.db")).unwrap_err();
        assert!(e.contains("no database at"), "{e}");
        assert!(!d.join("x.db").exists());
        let _ = fs::remove_dir_all(&d);
    }
}
