//! A flood past a member who never reads: one user sends numbered lines
//! while another reads every one, until the server drops the silent one
//! as too slow. What the limits and metrics tests both need.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{Client, TIMEOUT};

/// How the flood went.
pub struct Flood {
    /// Lines `t` sent (all of which `r` received, in order).
    pub sent: usize,
    /// The reader, given back.
    pub reader: Client,
    /// How often `r` was told `notice`.
    pub notices: usize,
}

/// `t` sends `text(k)` for k = 0, 1, ... in batches of `batch`; `r`, in
/// the same room, must read each as `<t> TEXT`, in order, and may fall at
/// most `lag` lines behind (so it never nears its own output limit). The
/// flood stops once `r` reads `notice` (the silent member dropped), then
/// `t` says `done` and every line is checked to have arrived. Fails if
/// more than `max` lines go out first, or if `r` stops receiving.
#[track_caller]
pub fn until_dropped(
    t: &mut Client,
    mut r: Client,
    notice: &'static str,
    text: fn(usize) -> String,
    (batch, lag, max): (usize, usize, usize),
) -> Flood {
    let received = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let reader = {
        let (received, dropped) = (received.clone(), dropped.clone());
        thread::spawn(move || {
            let (mut next, mut notices) = (0, 0);
            loop {
                let l = r.line();
                if l == notice {
                    notices += 1;
                    dropped.store(true, Ordering::SeqCst);
                    continue;
                }
                if l == "<t> done" {
                    return (r, next, notices);
                }
                let want = format!("<t> {}", text(next));
                assert!(l == want, "r: message {next} wrong or missing; got {l:?}");
                next += 1;
                received.store(next, Ordering::SeqCst);
            }
        })
    };
    let mut sent = 0;
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            sent < max,
            "the silent member was not dropped after {sent} messages"
        );
        let mut lines = String::new();
        for k in sent..sent + batch {
            lines.push_str(&text(k));
            lines.push('\n');
        }
        t.send_raw(lines.as_bytes());
        sent += batch;
        let deadline = Instant::now() + TIMEOUT;
        while received.load(Ordering::SeqCst) + lag < sent && !dropped.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "r stopped receiving");
            thread::sleep(Duration::from_millis(1));
        }
    }
    t.send("done");
    let (reader, got, notices) = reader.join().expect("the reader thread");
    assert_eq!(got, sent, "r received every message");
    Flood {
        sent,
        reader,
        notices,
    }
}
