//! A `log::Log` that writes to stderr from a thread of its own, so that
//! logging can neither block the event loop (a stderr pipe nobody reads)
//! nor bring the server down (a closed stderr pipe). Lines that do not fit
//! the bounded queue are counted and reported, not waited for.
//!
//! simple_logger would be the usual choice, but it writes with `eprintln!`,
//! which panics when stderr is a closed pipe.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

use crate::wire::proto::Timestamp;

/// Log lines waiting for stderr at most; past this they are dropped.
pub const LOG_QUEUE: usize = 4096;

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

struct StderrLogger {
    level: LevelFilter,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

/// Installs the logger at `level`. Errors if a logger is already set.
pub fn init(level: LevelFilter) -> Result<(), log::SetLoggerError> {
    let (tx, rx) = sync_channel(LOG_QUEUE);
    let logger = LOGGER.get_or_init(|| StderrLogger {
        level,
        tx,
        dropped: AtomicU64::new(0),
    });
    log::set_logger(logger)?;
    log::set_max_level(level);
    std::thread::Builder::new()
        .name("log".into())
        .spawn(move || write_lines(rx))
        .map(drop)
        .unwrap_or_else(|e| eprintln!("chatd: cannot start the log thread: {e}"));
    Ok(())
}

/// Logs `message` at info level whatever the level set: for the few lines a
/// script depends on, such as `listening on ADDR`.
pub fn always(message: &str) {
    if let Some(logger) = LOGGER.get() {
        logger.write(log::Level::Info, &format_args!("{message}"));
    }
}

/// Waits (at most `timeout`) until every line logged so far was written.
pub fn flush(timeout: Duration) {
    let Some(logger) = LOGGER.get() else { return };
    let (ack_tx, ack_rx) = sync_channel(1);
    if logger.send(Msg::Flush(ack_tx)) {
        let _ = ack_rx.recv_timeout(timeout);
    }
}

fn write_lines(rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    for msg in rx {
        match msg {
            // Write errors (a closed pipe, a full disk) are ignored: there
            // is nowhere left to report them.
            Msg::Line(line) => {
                let _ = stderr.lock().write_all(line.as_bytes());
            }
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

impl StderrLogger {
    fn write(&self, level: log::Level, args: &std::fmt::Arguments<'_>) {
        let stamp = utc_timestamp(SystemTime::now());
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("{stamp} WARN  {dropped} log lines dropped: stderr is slow\n");
            self.send(Msg::Line(note));
        }
        self.send(Msg::Line(format!("{stamp} {level:<5} {args}\n")));
    }

    fn send(&self, msg: Msg) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.write(record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// `2026-11-21T14:02:07.123Z`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, m, d, h, mi, s) = Timestamp(since.as_secs()).parts();
    let ms = since.subsec_millis();
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs| utc_timestamp(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_271_527), "2026-11-21T14:32:07.000Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.000Z");
    }
}
