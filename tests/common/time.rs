//! Time checks for the integration tests: the UTC stamps chatd puts on
//! messages (JSON `ts`, the `[YYYY-MM-DD HH:MM]` of recorded text lines),
//! read back without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Seconds since 1970 now, by the system clock.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `s` starts with `shape`, where a `9` in `shape` stands for any
/// ASCII digit and every other byte for itself.
pub fn has_shape(s: &str, shape: &str) -> bool {
    s.len() >= shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, want)| match want {
            b'9' => c.is_ascii_digit(),
            _ => c == want,
        })
}

/// Seconds since 1970 of a UTC date and time; panics on an invalid one,
/// naming it `what`.
#[track_caller]
pub fn secs(y: i64, mo: i64, d: i64, h: i64, mi: i64, se: i64, what: &str) -> i64 {
    assert!(
        (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && se < 60,
        "{what} is not a valid time"
    );
    days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se
}

/// `ts` must be a string `YYYY-MM-DDTHH:MM:SSZ`, a valid time, and within
/// a minute of now (UTC).
#[track_caller]
pub fn check_ts(ts: &Value) {
    let s = ts
        .as_str()
        .unwrap_or_else(|| panic!("ts is not a string: {ts}"));
    assert!(
        s.len() == 20 && has_shape(s, "9999-99-99T99:99:99Z"),
        "ts {s:?} is not YYYY-MM-DDTHH:MM:SSZ"
    );
    let n = |from: usize, to: usize| s[from..to].parse::<i64>().unwrap();
    let at = secs(
        n(0, 4),
        n(5, 7),
        n(8, 10),
        n(11, 13),
        n(14, 16),
        n(17, 19),
        &format!("ts {s:?}"),
    );
    assert!((now_secs() - at).abs() <= 60, "ts {s:?} is not now (UTC)");
}
