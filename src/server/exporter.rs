//! The `--metrics-listen` HTTP listener: `GET /metrics` and `GET /healthz`
//! on plain blocking sockets, served by threads of its own so that the
//! health check answers even while the event loop is stuck. One request
//! per connection, and small bounds on all a client controls: the size of
//! the request head, the time to send it, and the connections at once.
//! `/metrics` asks the loop for its counters (through a channel and the
//! loop's waker) and gives up after `SCRAPE_TIMEOUT`; `/healthz` reads only
//! the loop's heartbeat and the storage backlog.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Waker;

use crate::cluster::link::LinkState;
use crate::server::metrics::{CONTENT_TYPE, Heartbeat, ScrapeRequest};
use crate::store::backend::{BacklogProbe, MAX_BACKLOG};

/// The longest request head (request line and headers) taken; a longer
/// one is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once; one more is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 4;
/// How long one read or write on a connection may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client has to send its whole request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long `/metrics` waits for the loop's counters before answering 503.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// A loop that has not turned for this long is reported unhealthy. The
/// loop turns at least every `HEARTBEAT_EVERY` while this listener runs.
pub const LOOP_STALL: Duration = Duration::from_secs(5);
/// After answering, input still arriving is read and dropped (up to this
/// much, for up to `DRAIN_TIME`) before the close, so that unread input
/// does not make the close a reset that destroys the answer.
pub const DRAIN_LIMIT: usize = 64 * 1024;
pub const DRAIN_TIME: Duration = Duration::from_millis(200);
/// After an accept error such as running out of descriptors, accepting
/// pauses this long instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the HTTP threads hold of the server: a way to ask the loop for a
/// scrape, its heartbeat, and the storage backlog.
#[derive(Clone)]
pub struct MetricsHandle {
    requests: Sender<ScrapeRequest>,
    waker: Arc<Waker>,
    heartbeat: Arc<Heartbeat>,
    backlog: BacklogProbe,
    cluster: Option<Arc<LinkState>>,
}

impl MetricsHandle {
    pub(super) fn new(
        requests: Sender<ScrapeRequest>,
        waker: Arc<Waker>,
        heartbeat: Arc<Heartbeat>,
        backlog: BacklogProbe,
        cluster: Option<Arc<LinkState>>,
    ) -> MetricsHandle {
        MetricsHandle {
            requests,
            waker,
            heartbeat,
            backlog,
            cluster,
        }
    }

    /// The loop's metrics as text, or why there are none.
    pub fn scrape(&self, limit: Duration) -> Result<String, &'static str> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.requests
            .send(tx)
            .map_err(|_| "the event loop has stopped")?;
        self.waker
            .wake()
            .map_err(|_| "cannot wake the event loop")?;
        rx.recv_timeout(limit)
            .map_err(|_| "the event loop did not answer in time")
    }

    /// `Ok` if healthy, else the reason: the loop stalled, or storage so
    /// far behind that the loop reads no client with input.
    pub fn health(&self) -> Result<(), String> {
        let age = self.heartbeat.age(Instant::now());
        if age >= LOOP_STALL {
            return Err(format!("loop: no turn for {:.1} s", age.as_secs_f64()));
        }
        if self.backlog.is_behind() {
            return Err(format!(
                "storage: behind, {} bytes waiting to be stored (limit {MAX_BACKLOG}); clients are not read",
                self.backlog.bytes()
            ));
        }
        if let Some(link) = &self.cluster {
            link.health()?;
        }
        Ok(())
    }
}

/// Serves `listener` on a thread of its own for the rest of the process.
pub fn spawn(listener: TcpListener, handle: MetricsHandle) -> io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || accept_loop(listener, handle))?;
    Ok(())
}

fn accept_loop(listener: TcpListener, handle: MetricsHandle) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                debug!("metrics: accept failed: {e}");
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            finish(stream, &answer(503, "text/plain", "busy\n"));
            continue;
        }
        let (handle, done) = (handle.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                serve(stream, &handle);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            warn!("metrics: cannot start a thread: {e}");
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One request on `stream`, answered and closed.
fn serve(mut stream: TcpStream, handle: &MetricsHandle) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let reply = match read_head(&mut stream) {
        Err(HeadError::TooLarge) => answer(431, "text/plain", "request head too large\n"),
        Err(HeadError::Closed) => return,
        Ok(head) => match parse(&head) {
            Request::Get(Route::Metrics) => match handle.scrape(SCRAPE_TIMEOUT) {
                Ok(text) => answer(200, CONTENT_TYPE, &text),
                Err(why) => answer(503, "text/plain", &format!("{why}\n")),
            },
            Request::Get(Route::Healthz) => match handle.health() {
                Ok(()) => answer(200, "text/plain", "ok\n"),
                Err(why) => answer(503, "text/plain", &format!("{why}\n")),
            },
            Request::NotFound => answer(404, "text/plain", "not found\n"),
            Request::WrongMethod => answer(405, "text/plain", "only GET\n"),
            Request::Bad => answer(400, "text/plain", "bad request\n"),
        },
    };
    finish(stream, &reply);
}

/// Writes `reply`, then closes politely: FIN, and input read and dropped
/// for a moment so the peer sees the answer rather than a reset.
fn finish(mut stream: TcpStream, reply: &[u8]) {
    if stream.write_all(reply).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DRAIN_TIME));
    let deadline = Instant::now() + DRAIN_TIME;
    let (mut buf, mut drained) = ([0u8; 4096], 0);
    while drained < DRAIN_LIMIT && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

enum HeadError {
    TooLarge,
    /// The client closed, stalled past the deadline, or failed.
    Closed,
}

/// Reads up to the blank line that ends the request head.
fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if Instant::now() >= deadline {
            return Err(HeadError::Closed);
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Where the head ends (after its blank line), if it has, within
/// `MAX_HEAD`. Bare LF line ends are taken too.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let within = &bytes[..bytes.len().min(MAX_HEAD)];
    let crlf = memchr::memmem::find(within, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(within, b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    Get(Route),
    NotFound,
    WrongMethod,
    Bad,
}

/// What a request head asks for. Only the request line matters; the
/// headers are skipped. A query string is ignored.
fn parse(head: &[u8]) -> Request {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if method.is_empty() || !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        _ => return Request::NotFound,
    };
    if method != "GET" {
        return Request::WrongMethod;
    }
    Request::Get(route)
}

/// A whole response; the connection closes after it.
fn answer(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let get = |t: &str| parse(format!("GET {t} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(get("/metrics"), Request::Get(Route::Metrics));
        assert_eq!(get("/healthz"), Request::Get(Route::Healthz));
        assert_eq!(get("/metrics?x=1"), Request::Get(Route::Metrics));
        assert_eq!(get("/"), Request::NotFound);
        assert_eq!(get("/metricsx"), Request::NotFound);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::WrongMethod
        );
        assert_eq!(parse(b"HEAD /healthz HTTP/1.0\n\n"), Request::WrongMethod);
        assert_eq!(parse(b"DELETE /nope HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET  /metrics HTTP/1.1\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"\xff /metrics HTTP/1.1\r\n\r\n"), Request::Bad);
    }

    #[test]
    fn a_head_ends_at_its_blank_line_within_the_limit() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        let mut long = vec![b'a'; MAX_HEAD];
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head_end(&long), None);
    }

    #[test]
    fn answers_say_their_length_and_close() {
        let a = String::from_utf8(answer(405, "text/plain", "only GET\n")).unwrap();
        assert!(a.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{a}");
        assert!(a.contains("\r\nContent-Length: 9\r\n"), "{a}");
        assert!(a.contains("\r\nAllow: GET\r\n"), "{a}");
        assert!(a.contains("\r\nConnection: close\r\n\r\nonly GET\n"), "{a}");
    }
}
