//! A `log::Log` that writes to stderr from a thread of its own, so that
//! logging can neither block the event loop (a stderr pipe nobody reads)
//! nor bring the server down (a closed stderr pipe). Lines that do not fit
//! the bounded queue are counted and reported, not waited for.
//!
//! simple_logger would be the usual choice, but it writes with `eprintln!`,
//! which panics when stderr is a closed pipe.
//!
//! Lines are text (`2026-12-06T04:11:21.304Z INFO  listening on ...`) or,
//! for log collectors, one JSON object each (`{"ts":..,"level":..,"msg":..}`).
//! The level can change while running (SIGHUP); the format cannot, so a
//! collector never sees it switch mid-stream.

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

/// How each log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL message`, for people.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `msg`.
    Json,
}

/// One line in the JSON format; the fields in the order people read them.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    ts: &'a str,
    level: &'a str,
    msg: &'a str,
}

struct StderrLogger {
    format: LogFormat,
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

/// Installs the logger at `level`, writing `format`. Errors if a logger
/// is already set.
pub fn init(level: LevelFilter, format: LogFormat) -> Result<(), log::SetLoggerError> {
    let (tx, rx) = sync_channel(LOG_QUEUE);
    let logger = LOGGER.get_or_init(|| StderrLogger {
        format,
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

/// Changes the level from now on (from any thread).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
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
            let note = format!("{dropped} log lines dropped: stderr is slow");
            self.send(Msg::Line(format_line(
                self.format,
                &stamp,
                log::Level::Warn,
                &note,
            )));
        }
        let line = format_line(self.format, &stamp, level, &args.to_string());
        self.send(Msg::Line(line));
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
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.write(record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

/// One log line in `format`, with its line end.
pub fn format_line(format: LogFormat, stamp: &str, level: log::Level, msg: &str) -> String {
    match format {
        LogFormat::Text => format!("{stamp} {level:<5} {msg}\n"),
        LogFormat::Json => {
            let line = JsonLine {
                ts: stamp,
                level: level.as_str(),
                msg,
            };
            // Serializing three strings cannot fail; an empty object is
            // still one line if it somehow did.
            let mut json = serde_json::to_string(&line).unwrap_or_else(|_| "{}".into());
            json.push('\n');
            json
        }
    }
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
    fn lines_in_either_format() {
        let stamp = "2026-12-06T04:11:21.304Z";
        assert_eq!(
            format_line(
                LogFormat::Text,
                stamp,
                log::Level::Info,
                "listening on 127.0.0.1:5000"
            ),
            "2026-12-06T04:11:21.304Z INFO  listening on 127.0.0.1:5000\n"
        );
        assert_eq!(
            format_line(
                LogFormat::Json,
                stamp,
                log::Level::Warn,
                "a \"quote\"\nand\tmore"
            ),
            "{\"ts\":\"2026-12-06T04:11:21.304Z\",\"level\":\"WARN\",\
             \"msg\":\"a \\\"quote\\\"\\nand\\tmore\"}\n"
        );
    }

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
