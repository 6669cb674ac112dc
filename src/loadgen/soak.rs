//! The soak: many short connections, each of which connects (in JSON
//! mode) straight into the room `soak`, says one line there and quits, for rounds of a fixed number of
//! cycles, with the server's resident memory read after every round. A
//! server that creeps shows it round by round; one that holds a bounded
//! working set levels off. Loopback only; bounded in time.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::sys;
use super::{BenchError, io_err};

/// Connections in flight at once: enough to keep the server busy, few
/// enough not to overflow its listen backlog.
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// How the server's JSON error replies begin.
const REFUSAL: &str = r#"{"type":"error""#;
/// The room the soak's connections talk in.
pub const SOAK_ROOM: &str = "soak";
/// A cycle that has not ended after this long counts as failed.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct Soak {
    pub addr: SocketAddr,
    pub rounds: u32,
    pub cycles_per_round: u64,
    pub in_flight: usize,
    /// The whole soak stops after this long, whatever is left.
    pub timeout: Duration,
    pub server_pid: Option<u32>,
}

/// One round's outcome.
#[derive(Clone, Debug)]
pub struct Round {
    pub cycles: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// The server's RSS after the round, KiB.
    pub server_rss_kib: Option<u64>,
    /// Why the first failed cycle failed.
    pub first_failure: Option<String>,
}

/// One connection's cycle.
struct Cycle {
    socket: TcpStream,
    started: Instant,
    /// The script not yet written.
    script: Vec<u8>,
    written: usize,
    /// The server acknowledged its connect: only then does a close
    /// count as a cycle done (not a refusal such as `! server full`).
    joined: bool,
    /// The end of what was read, in case the marker spans two reads.
    tail: Vec<u8>,
}

/// Runs the soak, calling `report` after each round.
pub fn soak(s: &Soak, mut report: impl FnMut(u32, &Round)) -> Result<Vec<Round>, BenchError> {
    let deadline = Instant::now() + s.timeout;
    let mut poll = Poll::new().map_err(io_err("poll"))?;
    let mut events = Events::with_capacity(1024);
    let mut live: Slab<Cycle> = Slab::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut serial: u64 = 0;
    let mut rounds = Vec::new();
    for round in 0..s.rounds {
        let started = Instant::now();
        let (mut begun, mut done, mut failed) = (0u64, 0u64, 0u64);
        let mut first_failure: Option<String> = None;
        while done < s.cycles_per_round {
            if Instant::now() > deadline {
                return Err(BenchError::BadSetup(format!(
                    "the soak's time ran out in round {round}, {done} of {} cycles done",
                    s.cycles_per_round
                )));
            }
            while live.len() < s.in_flight && begun < s.cycles_per_round {
                begun += 1;
                serial += 1;
                if let Err(e) = start(&poll, &mut live, s.addr, serial) {
                    failed += 1;
                    done += 1;
                    first_failure.get_or_insert_with(|| format!("connect: {e}"));
                }
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .map_err(io_err("poll"))?;
            for event in events.iter() {
                let key = event.token().0;
                let Some(c) = live.get_mut(key) else { continue };
                match step(c, &mut buf) {
                    Ok(false) => {}
                    outcome => {
                        if let Err(e) = outcome {
                            failed += 1;
                            first_failure.get_or_insert_with(|| e.to_string());
                        }
                        done += 1;
                        let mut c = live.remove(key);
                        let _ = poll.registry().deregister(&mut c.socket);
                    }
                }
            }
            // Cycles the server never finished count as failures.
            let now = Instant::now();
            let stale: Vec<usize> = live
                .iter()
                .filter(|(_, c)| now.duration_since(c.started) > CYCLE_TIMEOUT)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                let mut c = live.remove(key);
                let _ = poll.registry().deregister(&mut c.socket);
                failed += 1;
                done += 1;
                first_failure
                    .get_or_insert_with(|| format!("not done after {} s", CYCLE_TIMEOUT.as_secs()));
            }
        }
        let r = Round {
            cycles: done,
            failed,
            elapsed: started.elapsed(),
            server_rss_kib: s
                .server_pid
                .and_then(|pid| sys::status_kib(pid, "VmRSS").ok()),
            first_failure,
        };
        report(round, &r);
        rounds.push(r);
    }
    Ok(rounds)
}

fn start(poll: &Poll, live: &mut Slab<Cycle>, addr: SocketAddr, serial: u64) -> io::Result<()> {
    let mut socket = TcpStream::connect(addr)?;
    let entry = live.vacant_entry();
    poll.registry().register(
        &mut socket,
        Token(entry.key()),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    // A name of its own (base 36 keeps it short), straight into a room of
    // the soak's own (JSON's connect names the room, so the connection
    // never passes through the lobby, where a load beside it may be
    // flooding), one line, and a quit.
    let name = format!("k{}", radix36(serial));
    let script = format!(
        concat!(
            r#"{{"type":"connect","payload":{{"name":"{name}","room":"{room}"}}}}"#,
            "\n",
            r#"{{"type":"message","payload":{{"text":"soak line from {name}"}}}}"#,
            "\n",
            r#"{{"type":"quit"}}"#,
            "\n"
        ),
        name = name,
        room = SOAK_ROOM
    )
    .into_bytes();
    entry.insert(Cycle {
        socket,
        started: Instant::now(),
        script,
        written: 0,
        joined: false,
        tail: Vec::new(),
    });
    Ok(())
}

/// Writes what is left of the script, reads and drops what came; true
/// once the server has closed.
fn step(c: &mut Cycle, buf: &mut [u8]) -> io::Result<bool> {
    while c.written < c.script.len() {
        match c.socket.write(&c.script[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // Not connected yet: the next writable event comes back here.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) => return Err(e),
        }
    }
    let marker = r#"{"type":"connect_ack""#;
    loop {
        match c.socket.read(buf) {
            Ok(0) if c.joined => return Ok(true),
            Ok(0) => {
                return Err(io::Error::other(
                    "closed before its connect was acknowledged",
                ));
            }
            Ok(n) => {
                if !c.joined {
                    c.tail.extend_from_slice(&buf[..n]);
                    c.joined = memchr::memmem::find(&c.tail, marker.as_bytes()).is_some();
                    // Refused (busy, say): the server keeps the connection
                    // open for another try, so the cycle ends here.
                    if !c.joined
                        && let Some(at) = memchr::memmem::find(&c.tail, REFUSAL.as_bytes())
                    {
                        let end = (at + 120).min(c.tail.len());
                        let said = String::from_utf8_lossy(&c.tail[at..end]).into_owned();
                        return Err(io::Error::other(format!("refused: {said}")));
                    }
                    let keep = c.tail.len().saturating_sub(REFUSAL.len().max(marker.len()));
                    c.tail.drain(..keep);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

fn radix36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_short_and_distinct() {
        assert_eq!(super::radix36(0), "0");
        assert_eq!(super::radix36(35), "z");
        assert_eq!(super::radix36(36), "10");
        // Two million cycles fit in five digits.
        assert!(super::radix36(2_000_000).len() <= 5);
    }
}
