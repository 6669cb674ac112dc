//! `chatd backup` and `chatd check` on real files: a backup taken while
//! senders flood a running server holds a gap-free prefix of the room's
//! history and passes the check; an existing DEST is never replaced; a
//! damaged copy, a gap in the history, an unusable password hash and a
//! file that is not a database are each named (PROTOCOL.md, "Running it").

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chatd::chat::history::Chunk;
use chatd::store::Store;
use chatd::wire::proto::Timestamp;
use rusqlite::{Connection, OpenFlags};

use common::{Server, TIMEOUT, TempDb, TempPath, chatd_path, wait_child};

/// Users flooding the lobby at once.
const SENDERS: usize = 4;
/// Each sender's lines per second: heavy traffic, whose batches the
/// server commits every few milliseconds (unlimited senders fill its
/// backlog and it commits rarely, in huge batches).
const RATE: &str = "2000";
/// Lines written to the socket at a time by each sender.
const BURST: usize = 50;
/// Lobby messages stored before the backup starts: it is taken mid-flood.
const STORED_BEFORE: u64 = 2_000;
/// The longest a backup may take; the flood lasts until it ends.
const BACKUP_LIMIT: Duration = Duration::from_secs(30);
/// The flood never outlasts this, whatever happens to the test.
const FLOOD_LIMIT: Duration = Duration::from_secs(120);
/// Chunks of older history in another room, and their messages, so that
/// the copy takes many steps (tens of megabytes) while the server commits.
const ARCHIVE_CHUNKS: usize = 200;
const ARCHIVE_LINES: usize = 1_000;
/// Keeps every message: the history compared is never pruned.
const KEEP: &str = "1000000000";

/// Runs `chatd ARGS` to its end; returns its status, stdout and stderr.
#[track_caller]
fn chatd(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(chatd_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chatd");
    // Both outputs are a few lines: they fit in the pipes until the exit.
    let status = wait_child(&mut child, limit);
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
    let _ = child.stderr.take().expect("piped").read_to_string(&mut err);
    (status, out, err)
}

/// The chatd database at `path`, with `chunks` chunks of `lines` messages
/// in #archive and one account.
fn make_db(path: &str, chunks: usize, lines: usize) {
    let mut store = Store::open(path, usize::MAX).expect("create the database");
    let hash = chatd::store::password::hash(
        "password1",
        chatd::store::password::Cost {
            memory_kib: 64,
            passes: 1,
        },
    )
    .expect("hash");
    store
        .add_account("keeper", &hash, Timestamp(1_700_000_000))
        .expect("account");
    let sender = "keeper".into();
    for c in 0..chunks {
        let first = (c * lines) as u64;
        let mut chunk = Chunk::with_capacity("archive".into(), 0, first);
        for i in 0..lines {
            let text = format!("archived message {c}/{i} with some words to make it longer");
            chunk.push(Timestamp(1_700_000_000 + i as u64), &sender, &text);
        }
        store.record(&[chunk]).expect("record");
    }
}

/// Opens a database file for reading only, as a test's eyes.
fn open_ro(path: &str) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"))
}

/// The lobby's recorded messages as (sender, text), oldest first, from
/// chunks that must be numbered from 0 without gaps.
fn lobby(db: &Connection) -> Vec<(String, String)> {
    let mut stmt = db
        .prepare(
            "SELECT first, count, lines FROM chunks
             WHERE room = (SELECT id FROM rooms WHERE key = 'lobby') ORDER BY id",
        )
        .expect("query");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("query");
    let mut out = Vec::new();
    for row in rows {
        let (first, count, lines) = row.expect("row");
        assert_eq!(first, out.len() as i64, "chunks numbered without gaps");
        let messages = Chunk::parse(&lines, 0);
        assert_eq!(messages.len() as i64, count, "a chunk holds its count");
        out.extend(
            messages
                .into_iter()
                .map(|m| (m.sender.to_string(), m.text.to_string())),
        );
    }
    out
}

/// Lobby messages stored in the live database so far.
fn stored(db: &Connection) -> u64 {
    db.query_row(
        "SELECT coalesce(sum(count), 0) FROM chunks
         WHERE room = (SELECT id FROM rooms WHERE key = 'lobby')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| n as u64)
}

/// Polls `cond` until it holds, failing after `TIMEOUT`.
#[track_caller]
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {TIMEOUT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends numbered messages (`s{k} {i}`) as fast as the server reads them
/// until `stop`, reading everything it is sent on another thread; returns
/// how many it sent.
fn flood(server: &Server, k: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    let name = format!("s{k}");
    let c = server.login(&name);
    let mut out = c.stream().try_clone().expect("clone the socket");
    let mut drain = c.stream().try_clone().expect("clone the socket");
    thread::spawn(move || {
        let mut sink = [0u8; 64 * 1024];
        while matches!(drain.read(&mut sink), Ok(n) if n > 0) {}
    });
    thread::spawn(move || {
        let _keep = c;
        let started = Instant::now();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_LIMIT {
            let mut burst = String::new();
            for _ in 0..BURST {
                burst.push_str(&format!("{name} {i}\n"));
                i += 1;
            }
            if out.write_all(burst.as_bytes()).is_err() {
                break;
            }
        }
        let _ = out.shutdown(Shutdown::Write);
        i
    })
}

#[test]
fn a_backup_during_a_flood_holds_a_gap_free_prefix_and_passes_the_check() {
    let db = TempDb::new("flood");
    make_db(db.as_str(), ARCHIVE_CHUNKS, ARCHIVE_LINES);
    let dest = TempDb::new("flood-copy");
    let mut server = Server::start(&["--db", db.as_str(), "--rate", RATE, "--history-keep", KEEP]);
    let live = open_ro(db.as_str());

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|k| flood(&server, k, stop.clone()))
        .collect();
    wait_for("the flood stored", || stored(&live) >= STORED_BEFORE);

    let before = stored(&live);
    let (status, out, err) = chatd(
        &["backup", dest.as_str(), "--db", db.as_str()],
        BACKUP_LIMIT,
    );
    let after = stored(&live);
    assert!(status.success(), "backup failed: {status}\n{out}\n{err}");
    // The server committed while the backup ran (without a snapshot held
    // throughout, each such commit would start the copy over).
    assert!(after > before, "no commit during the backup ({before})");
    assert!(
        out.starts_with(&format!("backed up {} to {}: ", db.as_str(), dest.as_str()))
            && out.contains(" 1 accounts, 2 rooms, "),
        "{out}"
    );
    // The flood went on after the snapshot: the server commits past it.
    let copy = open_ro(dest.as_str());
    let in_copy = stored(&copy);
    assert!(
        (before..=after).contains(&in_copy),
        "{before} {in_copy} {after}"
    );
    wait_for("messages stored after the backup", || {
        stored(&live) > in_copy
    });
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<usize> = senders
        .into_iter()
        .map(|s| s.join().expect("a sender"))
        .collect();
    drop(live);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "chatd exited with {status}");

    let (status, out, err) = chatd(&["check", "--db", dest.as_str()], TIMEOUT);
    assert!(status.success(), "check of the copy failed: {out}\n{err}");
    assert!(out.starts_with("ok: 1 accounts, 2 rooms, "), "{out}");

    // The copy: each sender's messages from its first, none missing or
    // repeated, and the whole is the start of the server's final history.
    let copied = lobby(&copy);
    assert!(copied.len() as u64 >= STORED_BEFORE, "{}", copied.len());
    let mut next = [0usize; SENDERS];
    for (sender, text) in &copied {
        let k: usize = sender[1..].parse().expect("a sender's name");
        assert_eq!(*text, format!("{sender} {}", next[k]), "in order, no gap");
        next[k] += 1;
    }
    for k in 0..SENDERS {
        assert!(
            next[k] <= sent[k],
            "s{k}: {} copied, {} sent",
            next[k],
            sent[k]
        );
    }
    let all = lobby(&open_ro(db.as_str()));
    assert!(
        copied.len() < all.len(),
        "{} of {}",
        copied.len(),
        all.len()
    );
    assert!(all[..copied.len()] == copied[..], "a prefix of the history");
    let archived: i64 = copy
        .query_row(
            "SELECT sum(count) FROM chunks WHERE room = (SELECT id FROM rooms WHERE key = 'archive')",
            [],
            |r| r.get(0),
        )
        .expect("archive");
    assert_eq!(archived as usize, ARCHIVE_CHUNKS * ARCHIVE_LINES);
}

#[test]
fn backup_never_replaces_an_existing_file() {
    let db = TempDb::new("exists");
    make_db(db.as_str(), 1, 10);
    let dest = TempPath::new("exists-copy.db");
    fs::write(&dest.0, "precious").expect("write");
    let (status, out, err) = chatd(&["backup", dest.as_str(), "--db", db.as_str()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert_eq!(
        err.trim_end(),
        format!("chatd: {} exists; choose a new path", dest.as_str())
    );
    assert_eq!(fs::read(&dest.0).expect("read"), b"precious");
    // No half backup lies beside it.
    let dir = dest.0.parent().expect("a directory");
    let name = dest.0.file_name().expect("a name").to_string_lossy();
    let partial = fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
        });
    assert!(!partial);
    // Nor is a missing database made up.
    let missing = TempPath::new("missing.db");
    let fresh = TempPath::new("missing-copy.db");
    let (status, _, err) = chatd(
        &["backup", fresh.as_str(), "--db", missing.as_str()],
        TIMEOUT,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("no database at"), "{err}");
    assert!(!missing.0.exists() && !fresh.0.exists());
}

/// Backs up a fresh database of a few megabytes and checks the copy.
fn sound_copy(tag: &str) -> (TempDb, TempDb) {
    let db = TempDb::new(tag);
    make_db(db.as_str(), 40, ARCHIVE_LINES);
    let copy = TempDb::new(&format!("{tag}-copy"));
    let (status, out, err) = chatd(&["backup", copy.as_str(), "--db", db.as_str()], TIMEOUT);
    assert!(status.success(), "{out}\n{err}");
    let (status, out, err) = chatd(&["check", "--db", copy.as_str()], TIMEOUT);
    assert!(status.success(), "{out}\n{err}");
    assert_eq!(out, "ok: 1 accounts, 1 rooms, 40000 messages\n");
    (db, copy)
}

#[test]
fn check_names_a_damaged_page() {
    let (_db, copy) = sound_copy("damaged");
    // A page's worth of 0xff in the middle of the file: whatever page it
    // hits (b-tree or overflow), its structure no longer holds.
    let len = fs::metadata(&copy.0.0).expect("size").len();
    const PAGE: u64 = 16 * 1024;
    let at = (len / 2) / PAGE * PAGE;
    let mut f = OpenOptions::new()
        .write(true)
        .open(&copy.0.0)
        .expect("open");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&[0xff; PAGE as usize]).expect("write");
    drop(f);
    let (status, out, err) = chatd(&["check", "--db", copy.as_str()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert!(out.lines().any(|l| l.starts_with("integrity: ")), "{out}");
    assert!(err.contains("problem"), "{err}");
}

#[test]
fn check_names_a_gap_and_an_unusable_hash() {
    let (_db, copy) = sound_copy("gap");
    {
        let db = Connection::open(copy.as_str()).expect("open");
        db.execute(
            "DELETE FROM chunks WHERE id = (SELECT id FROM chunks ORDER BY id LIMIT 1 OFFSET 10)",
            [],
        )
        .expect("delete a chunk");
        db.execute("UPDATE accounts SET hash = 'hunter2'", [])
            .expect("spoil a hash");
    }
    let (status, out, err) = chatd(&["check", "--db", copy.as_str()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("account keeper: password hash unusable: not a PHC string")),
        "{out}"
    );
    assert!(
        lines.contains(
            &"#archive: chunk 12: gap: messages 10000 to 10999 are missing between chunks 10 and 12"
        ),
        "{out}"
    );
    assert!(err.contains("2 problems found"), "{err}");
}

#[test]
fn check_refuses_a_file_that_is_not_a_database() {
    let junk = TempPath::new("junk.db");
    fs::write(&junk.0, vec![b'x'; 64 * 1024]).expect("write");
    let (status, out, err) = chatd(&["check", "--db", junk.as_str()], TIMEOUT);
    assert_eq!(status.code(), Some(1), "{out}\n{err}");
    assert_eq!(out, "cannot read it: file is not a database\n");
    let missing = TempPath::new("nothing.db");
    let (status, out, _) = chatd(&["check", "--db", missing.as_str()], TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert!(out.starts_with("no database at "), "{out}");
    assert!(!missing.0.exists(), "check creates nothing");
}
