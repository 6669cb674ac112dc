//! The transcript: every line shown this session, with the time it was
//! shown, for `/save` and `--log`. Holds text only; writing files is the
//! caller's business.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most bytes of text the transcript keeps. Past it the oldest lines are
/// dropped (and `/save` says how many), so a client left running for weeks
/// does not grow without bound; `--log` keeps everything.
pub const MAX_TRANSCRIPT_BYTES: usize = 64 << 20;

#[derive(Debug)]
struct Entry {
    time: SystemTime,
    text: String,
}

#[derive(Debug, Default)]
pub struct Transcript {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Lines dropped from the front since the last clear.
    dropped: usize,
}

impl Transcript {
    pub fn new() -> Transcript {
        Transcript::default()
    }

    pub fn push(&mut self, time: SystemTime, text: &str) {
        self.bytes += text.len();
        self.entries.push_back(Entry {
            time,
            text: text.to_string(),
        });
        while self.bytes > MAX_TRANSCRIPT_BYTES {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.text.len();
            self.dropped += 1;
        }
    }

    pub fn clear(&mut self) {
        *self = Transcript::default();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes every line as `format_line` does; returns how many.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<usize> {
        if self.dropped > 0 {
            writeln!(
                w,
                "({} earlier lines dropped to bound memory)",
                self.dropped
            )?;
        }
        for e in &self.entries {
            w.write_all(format_line(e.time, &e.text).as_bytes())?;
        }
        Ok(self.entries.len())
    }
}

/// One transcript line as files hold it: local time, text, LF.
pub fn format_line(time: SystemTime, text: &str) -> String {
    format!("{} {text}\n", format_time(time))
}

/// `YYYY-MM-DD HH:MM:SS` in local time (UTC if the zone cannot be known).
pub fn format_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: an all-zero `tm` is a valid value (integers and, on glibc, a
    // null zone-name pointer); localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // thread-safe variant and keeps no pointer to them.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    if !ok {
        return format_utc(secs);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// The UTC fallback, from days since the epoch to a civil date.
fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a
    // year; eras are 400-year cycles of 146 097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_269_727), "2026-11-21 14:02:07");
    }

    #[test]
    fn local_times_have_the_shape() {
        let t = format_time(UNIX_EPOCH + Duration::from_secs(1_795_269_727));
        let b = t.as_bytes();
        assert_eq!(b.len(), 19, "{t}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16]),
            (b'-', b'-', b' ', b':', b':')
        );
    }

    #[test]
    fn saves_lines_with_times_and_clears() {
        let mut t = Transcript::new();
        let at = UNIX_EPOCH + Duration::from_secs(1_795_269_727);
        t.push(at, "<bob> hi");
        t.push(at, "* bob has quit");
        let mut out = Vec::new();
        assert_eq!(t.write_to(&mut out).unwrap(), 2);
        let stamp = format_time(at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{stamp} <bob> hi\n{stamp} * bob has quit\n")
        );
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn the_oldest_lines_go_first_past_the_cap() {
        let mut t = Transcript::new();
        let big = "x".repeat(MAX_TRANSCRIPT_BYTES / 2);
        t.push(UNIX_EPOCH, &big);
        t.push(UNIX_EPOCH, &big);
        t.push(UNIX_EPOCH, "last");
        assert_eq!(t.len(), 2);
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        assert!(out.starts_with(b"(1 earlier lines dropped"));
        assert!(out.ends_with(b" last\n"));
    }
}
