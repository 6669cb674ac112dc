//! The load generator behind `chat-bench` and the loopback benchmark: one
//! `mio` loop that opens N subscribers and one publisher to a chatd or
//! Redis server, publishes stamped messages with a bounded window, counts
//! and times every delivery, and reports throughput, latency, losses and
//! what the run cost (its own CPU, the machine's, the server's). Also
//! opens N idle named connections and reports what they cost the server.
//! Loopback use only; every wait is bounded by a deadline.
//!
//! The bytes on the wire live in [`wire`], the percentiles in [`hist`], the
//! kernel's counters in [`sys`], the TLS client in [`tls`], the soak of
//! short connections in [`soak`].

pub mod hist;
pub mod soak;
pub mod sys;
pub mod tls;
pub mod wire;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memchr::{memchr, memchr_iter};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use hist::Histogram;
use sys::{MachineCpu, TcpSockets};
use tls::TlsStream;
use wire::{LoginReply, Proto};

/// Bytes per delivery on the wire, framing included, unless told.
pub const DEFAULT_SIZE: usize = 64;
/// How far the publisher may run ahead of the slowest subscriber, in
/// messages: enough to batch, bounded so the run measures throughput and
/// not queue growth.
pub const DEFAULT_WINDOW: u64 = 1000;
/// The longest any setup or run may take before it gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections in the middle of logging in at once: more would overflow a
/// server's listen backlog and make clients wait a second to retry.
pub const CONNECT_WAVE: usize = 200;
/// Bytes read from one socket per call.
pub const READ_BUF: usize = 256 * 1024;
/// The publisher writes at most this many bytes of messages per call.
pub const PUBLISH_BATCH: usize = 16 * 1024;
/// An idle run counts the server's queues as drained after this long with
/// nothing arriving.
pub const QUIET: Duration = Duration::from_millis(500);
/// A line longer than this (no delivery is) is dropped as it arrives,
/// so a chatty server cannot make the tool's memory grow.
pub const MAX_LINE: usize = 64 * 1024;
/// Longest sleep in a poll, so deadlines are noticed.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Setup {
    pub addr: SocketAddr,
    /// Where the publisher connects, if not to `addr`: another node of a
    /// cluster, so that every message crosses between nodes.
    pub pub_addr: Option<SocketAddr>,
    pub proto: Proto,
    /// Subscriber connections (idle connections for `idle`).
    pub subs: usize,
    /// Bytes per delivery on the wire.
    pub size: usize,
    /// Messages the publisher may be ahead of the slowest subscriber.
    pub window: u64,
    /// Bound on the setup, and separately on each run.
    pub timeout: Duration,
    /// The server's process id, to report its CPU time and memory.
    pub server_pid: Option<u32>,
    /// Connect over TLS with this configuration ([`tls::client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Setup {
    pub fn new(addr: SocketAddr, proto: Proto, subs: usize) -> Setup {
        Setup {
            addr,
            pub_addr: None,
            proto,
            subs,
            size: DEFAULT_SIZE,
            window: DEFAULT_WINDOW,
            timeout: DEFAULT_TIMEOUT,
            server_pid: None,
            tls: None,
        }
    }
}

/// Why a setup or run could not go on.
#[derive(Debug)]
pub enum BenchError {
    Io {
        what: String,
        source: io::Error,
    },
    /// The server answered a login with an error.
    Refused {
        name: String,
        reply: String,
    },
    /// The server closed a connection the run needed.
    Closed {
        name: String,
    },
    /// Connecting took longer than the timeout.
    Timeout {
        ready: usize,
        wanted: usize,
    },
    BadSetup(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Io { what, source } => write!(f, "{what}: {source}"),
            BenchError::Refused { name, reply } => write!(f, "{name} was refused: {reply}"),
            BenchError::Closed { name } => write!(f, "the server closed {name}"),
            BenchError::Timeout { ready, wanted } => {
                write!(
                    f,
                    "timed out with {ready} of {wanted} connections logged in"
                )
            }
            BenchError::BadSetup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BenchError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// A connection's transport. Plain is the socket itself, read and written
/// directly, so a run without TLS does exactly what it did before TLS.
enum Link {
    Plain(TcpStream),
    // Boxed: rustls's connection state is a kilobyte or so, and the plain
    // runs' peers should stay small.
    Tls(Box<TlsStream>),
}

impl Link {
    fn socket(&self) -> &TcpStream {
        match self {
            Link::Plain(socket) => socket,
            Link::Tls(tls) => &tls.socket,
        }
    }

    /// The negotiated TLS version and cipher suite, if this is TLS.
    fn tls_suite(&self) -> Option<String> {
        match self {
            Link::Plain(_) => None,
            Link::Tls(tls) => tls.describe(),
        }
    }
}

/// One client connection and the unfinished line it has read.
struct Peer {
    link: Link,
    input: Lines,
    hello_sent: bool,
    ready: bool,
}

/// Bytes to lines for one connection: the unfinished line so far, and
/// where its subscriber has got. Apart from the link so that reading one
/// and splitting into the other can borrow both.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    /// Discarding the rest of an over-long line.
    skipping: bool,
    /// The next sequence number this subscriber should receive.
    next_seq: u64,
    /// A WebSocket subscriber's frames, made lines first.
    ws: Option<Box<wire::Unframe>>,
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Lines {
    /// Calls `f` on each complete line in `data`, terminator removed,
    /// keeping an unfinished tail for the next call.
    fn lines(&mut self, data: &[u8], mut f: impl FnMut(&mut u64, &[u8])) {
        if let Some(ws) = self.ws.as_deref_mut() {
            let next_seq = &mut self.next_seq;
            ws.feed(data, &mut |line| f(next_seq, line));
            return;
        }
        self.split(data, &mut f);
    }

    fn split(&mut self, data: &[u8], f: &mut impl FnMut(&mut u64, &[u8])) {
        let mut rest = data;
        if !self.partial.is_empty() || self.skipping {
            let Some(end) = memchr(b'\n', rest) else {
                self.keep(rest);
                return;
            };
            self.keep(&rest[..end]);
            if !self.skipping {
                f(&mut self.next_seq, trim_cr(&self.partial));
            }
            self.partial.clear();
            self.skipping = false;
            rest = &rest[end + 1..];
        }
        let mut start = 0;
        for end in memchr_iter(b'\n', rest) {
            f(&mut self.next_seq, trim_cr(&rest[start..end]));
            start = end + 1;
        }
        self.keep(&rest[start..]);
    }

    fn keep(&mut self, tail: &[u8]) {
        if self.skipping {
            return;
        }
        if self.partial.len() + tail.len() > MAX_LINE {
            self.partial = Vec::new();
            self.skipping = true;
            return;
        }
        self.partial.extend_from_slice(tail);
    }
}

/// Reads what `socket` has into `buf`, handing each chunk to `f`. Returns
/// true at end of stream. Stops at a short read, since edge-triggered
/// polling reports anything that arrives after it, unless `hup` says the
/// peer's close was reported already and must be read to the end.
fn read_all(
    link: &mut Link,
    buf: &mut [u8],
    hup: bool,
    mut f: impl FnMut(&[u8]),
) -> io::Result<bool> {
    match link {
        Link::Plain(socket) => loop {
            match socket.read(buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    f(&buf[..n]);
                    if n < buf.len() && !hup {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        },
        Link::Tls(tls) => read_tls_all(tls, buf, f),
    }
}

/// `read_all` over TLS: to the end of the socket and of rustls's buffers,
/// whatever the length of each read (see [`TlsStream::read`]). Also sends
/// what the reads left rustls to send.
fn read_tls_all(tls: &mut TlsStream, buf: &mut [u8], mut f: impl FnMut(&[u8])) -> io::Result<bool> {
    loop {
        match tls.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn sub_name(i: usize) -> String {
    format!("s{i}")
}

/// Opens `n` connections with tokens from `first_token`, each sending
/// `hello(i)` and waiting for the server to accept it, a wave at a time.
#[allow(clippy::too_many_arguments)]
fn open(
    poll: &mut Poll,
    setup: &Setup,
    addr: SocketAddr,
    n: usize,
    first_token: usize,
    name: &dyn Fn(usize) -> String,
    hello: &dyn Fn(usize, &mut Vec<u8>),
    deadline: Instant,
) -> Result<Vec<Peer>, BenchError> {
    let mut peers: Vec<Peer> = Vec::with_capacity(n);
    let mut ready = 0;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    while ready < n {
        while peers.len() < n && peers.len() - ready < CONNECT_WAVE {
            let i = peers.len();
            let mut socket =
                TcpStream::connect(addr).map_err(io_err(format!("connect {}", name(i))))?;
            poll.registry()
                .register(
                    &mut socket,
                    Token(first_token + i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(io_err("register a connection"))?;
            let link = match &setup.tls {
                None => Link::Plain(socket),
                Some(config) => {
                    let mut tls = TlsStream::new(config, socket, addr)
                        .map_err(|e| BenchError::BadSetup(format!("TLS for {}: {e}", name(i))))?;
                    // rustls holds the hello until the handshake is done,
                    // and the first writable event sends the handshake.
                    out.clear();
                    hello(i, &mut out);
                    match tls.write(&out) {
                        Ok(k) if k == out.len() => {}
                        Ok(_) => return Err(BenchError::BadSetup("TLS buffer too small".into())),
                        Err(e) => return Err(io_err(format!("log in {}", name(i)))(e)),
                    }
                    Link::Tls(Box::new(tls))
                }
            };
            let mut probe = Vec::new();
            hello(i, &mut probe);
            let ws = wire::is_websocket_hello(&probe).then(Box::default);
            peers.push(Peer {
                hello_sent: matches!(link, Link::Tls(_)),
                link,
                input: Lines {
                    ws,
                    ..Lines::default()
                },
                ready: false,
            });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(BenchError::Timeout { ready, wanted: n });
        }
        poll.poll(&mut events, Some(POLL_SLICE.min(deadline - now)))
            .map_err(io_err("poll"))?;
        for event in events.iter() {
            let Some(i) = event.token().0.checked_sub(first_token) else {
                continue;
            };
            let Some(peer) = peers.get_mut(i) else {
                continue;
            };
            if let Link::Tls(tls) = &mut peer.link
                && event.is_writable()
            {
                tls.flush_some()
                    .map_err(io_err(format!("handshake {}", name(i))))?;
            }
            if !peer.hello_sent
                && event.is_writable()
                && let Link::Plain(socket) = &mut peer.link
            {
                out.clear();
                hello(i, &mut out);
                // A new socket's send buffer always has room for one short
                // line, so a short write means something is wrong.
                match socket.write(&out) {
                    Ok(k) if k == out.len() => peer.hello_sent = true,
                    Ok(_) => return Err(BenchError::Closed { name: name(i) }),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                        ) => {}
                    Err(e) => return Err(io_err(format!("log in {}", name(i)))(e)),
                }
            }
            if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                continue;
            }
            let mut reply = None;
            let hup = event.is_read_closed() || event.is_error();
            let mut chunks = Vec::new();
            let eof = read_all(&mut peer.link, &mut buf, hup, |d| {
                chunks.extend_from_slice(d)
            })
            .map_err(io_err(format!("read {}", name(i))))?;
            peer.input.lines(&chunks, |_, line| {
                if reply.is_none() {
                    reply = setup.proto.login_reply(line);
                }
            });
            match reply {
                Some(LoginReply::Accepted) if !peer.ready => {
                    peer.ready = true;
                    ready += 1;
                }
                Some(LoginReply::Refused(reply)) if !peer.ready => {
                    return Err(BenchError::Refused {
                        name: name(i),
                        reply,
                    });
                }
                _ => {}
            }
            if eof {
                return Err(BenchError::Closed { name: name(i) });
            }
        }
    }
    Ok(peers)
}

/// N subscribers and a publisher, logged in and in one room (or channel).
pub struct Fanout {
    setup: Setup,
    poll: Poll,
    events: Events,
    subs: Vec<Peer>,
    publisher: Peer,
    text_len: usize,
    /// The next sequence number to publish; runs continue the numbering.
    next_seq: u64,
    buf: Box<[u8]>,
    /// When the run's send times are counted from.
    epoch: Instant,
    /// The publisher's TLS version and cipher suite, if over TLS.
    tls: Option<String>,
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct RunStats {
    pub proto: Proto,
    pub subs: usize,
    pub messages: u64,
    pub size: usize,
    pub window: u64,
    pub send_rate: Option<f64>,
    /// From the first send to the last delivery (or the deadline).
    pub elapsed: Duration,
    pub delivered: u64,
    pub expected: u64,
    /// Messages a subscriber skipped: a later one came first.
    pub gaps: u64,
    /// Messages that came again or out of order.
    pub disorder: u64,
    /// Subscribers the server closed during the run.
    pub dropped: usize,
    pub timed_out: bool,
    /// Send to receive, in nanoseconds, for every delivery.
    pub latency: Histogram,
    /// This process's CPU time during the run.
    pub own_cpu: Duration,
    /// Percent of all CPUs busy during the run, everything included.
    pub machine_busy: f64,
    pub server_cpu: Option<Duration>,
    pub server_peak_rss_kib: Option<u64>,
    /// Redis PUBLISH replies naming fewer receivers than subscribers.
    pub short_replies: u64,
    /// The TLS cipher suite the publisher negotiated, if over TLS.
    pub tls: Option<String>,
}

/// The publisher's side of a run.
struct Sender {
    pending: Vec<u8>,
    written: usize,
    writable: bool,
    sent: u64,
    end: u64,
    short_replies: u64,
}

/// The subscribers' side of a run: what arrived, and how far every one of
/// them has got.
struct Tally {
    proto: Proto,
    subs: u32,
    first: u64,
    end: u64,
    /// Every message below this reached every subscriber.
    slowest: u64,
    /// How many subscribers have each message in flight, by sequence
    /// number modulo its length; O(1) per delivery, however many there are.
    reached: Vec<u32>,
    delivered: u64,
    gaps: u64,
    disorder: u64,
    latency: Histogram,
    now_ns: u64,
}

impl Tally {
    fn line(&mut self, next_seq: &mut u64, line: &[u8]) {
        let Some((seq, sent_ns)) = self.proto.delivery(line) else {
            return;
        };
        // A straggler from an earlier run that gave up.
        if seq < self.first || seq >= self.end {
            return;
        }
        if seq < *next_seq {
            self.disorder += 1;
            return;
        }
        self.gaps += seq - *next_seq;
        *next_seq = seq + 1;
        self.delivered += 1;
        self.latency.record(self.now_ns.saturating_sub(sent_ns));
        let mask = self.reached.len() as u64 - 1;
        if seq >= self.slowest {
            self.reached[(seq & mask) as usize] += 1;
        }
        while self.slowest < self.end && self.reached[(self.slowest & mask) as usize] >= self.subs {
            self.reached[(self.slowest & mask) as usize] = 0;
            self.slowest += 1;
        }
    }
}

impl Fanout {
    /// Connects `setup.subs` subscribers named `s0..`, then the publisher
    /// `pub`, and waits until the server has accepted every one.
    pub fn connect(setup: Setup) -> Result<Fanout, BenchError> {
        let text_len = setup
            .proto
            .text_len(setup.size)
            .map_err(BenchError::BadSetup)?;
        if setup.subs == 0 || setup.window == 0 {
            return Err(BenchError::BadSetup(
                "need at least one subscriber and a window of at least one".into(),
            ));
        }
        let mut poll = Poll::new().map_err(io_err("create a poll"))?;
        let deadline = Instant::now() + setup.timeout;
        let proto = setup.proto;
        let subs = open(
            &mut poll,
            &setup,
            setup.addr,
            setup.subs,
            0,
            &sub_name,
            &|i, out| proto.subscribe(&sub_name(i), out),
            deadline,
        )?;
        let publisher = open(
            &mut poll,
            &setup,
            setup.pub_addr.unwrap_or(setup.addr),
            1,
            setup.subs,
            &|_| wire::PUBLISHER.to_string(),
            &|_, out| proto.hello_publisher(out),
            deadline,
        )?
        .pop()
        .ok_or_else(|| BenchError::BadSetup("no publisher".into()))?;
        // Small batched writes must not wait for delayed ACKs.
        publisher
            .link
            .socket()
            .set_nodelay(true)
            .map_err(io_err("set TCP_NODELAY"))?;
        let tls = publisher.link.tls_suite();
        Ok(Fanout {
            tls,
            setup,
            poll,
            events: Events::with_capacity(1024),
            subs,
            publisher,
            text_len,
            next_seq: 0,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            epoch: Instant::now(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Publishes `messages` messages, as fast as the window allows or at
    /// `send_rate` per second, and waits until every subscriber has every
    /// one, a subscriber is dropped, or the timeout passes.
    pub fn run(&mut self, messages: u64, send_rate: Option<f64>) -> Result<RunStats, BenchError> {
        let setup = self.setup.clone();
        let n = self.subs.len();
        let first = self.next_seq;
        let end = first + messages;
        let ring = (setup.window as usize + 1).next_power_of_two();
        let mut tally = Tally {
            proto: setup.proto,
            subs: n as u32,
            first,
            end,
            slowest: first,
            reached: vec![0; ring],
            delivered: 0,
            gaps: 0,
            disorder: 0,
            latency: Histogram::default(),
            now_ns: 0,
        };
        let mut sender = Sender {
            pending: Vec::with_capacity(PUBLISH_BATCH + setup.size * 2),
            written: 0,
            writable: true,
            sent: first,
            end,
            short_replies: 0,
        };
        let expected = messages * n as u64;
        let mut dropped = 0;
        let mut timed_out = false;

        let server = setup.server_pid;
        let server_cpu0 = server.and_then(|pid| sys::process_cpu(pid).ok());
        let machine0 = MachineCpu::read().ok();
        let own0 = sys::own_cpu().ok();
        let start = Instant::now();
        let deadline = start + setup.timeout;
        let mut finished = start;

        while tally.delivered < expected {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                finished = now;
                break;
            }
            let due = self.publish(&mut sender, &tally, start, now, send_rate)?;
            let mut timeout = POLL_SLICE.min(deadline - now);
            if let Some(due) = due {
                timeout = timeout.min(due.saturating_duration_since(now));
            }
            self.poll
                .poll(&mut self.events, Some(timeout))
                .map_err(io_err("poll"))?;
            for event in self.events.iter() {
                let i = event.token().0;
                let hup = event.is_read_closed() || event.is_error();
                if i == n {
                    if event.is_writable() {
                        sender.writable = true;
                        // Records rustls could not write earlier raise no
                        // event of their own: this is their turn.
                        match &mut self.publisher.link {
                            Link::Plain(_) => {}
                            Link::Tls(tls) => tls.flush_some().map_err(io_err("publish"))?,
                        }
                    }
                    if event.is_readable() || hup {
                        let proto = setup.proto;
                        let Peer { link, input, .. } = &mut self.publisher;
                        let mut data = Vec::new();
                        let eof = read_all(link, &mut self.buf, hup, |d| data.extend_from_slice(d))
                            .map_err(io_err("read pub"))?;
                        input.lines(&data, |_, line| {
                            if let Some(k) = proto.publish_reply(line)
                                && k < n as u64
                            {
                                sender.short_replies += 1;
                            }
                        });
                        if eof {
                            return Err(BenchError::Closed {
                                name: wire::PUBLISHER.into(),
                            });
                        }
                    }
                    continue;
                }
                let Some(peer) = self.subs.get_mut(i) else {
                    continue;
                };
                let epoch = self.epoch;
                let buf = &mut self.buf;
                let Peer { link, input, .. } = peer;
                let result = match link {
                    Link::Plain(socket) => {
                        if !(event.is_readable() || hup) {
                            continue;
                        }
                        loop {
                            match socket.read(buf) {
                                Ok(0) => break Ok(true),
                                Ok(k) => {
                                    // One clock reading per read: everything in it
                                    // arrived by now.
                                    tally.now_ns = epoch.elapsed().as_nanos() as u64;
                                    input.lines(&buf[..k], |next, line| tally.line(next, line));
                                    if k < buf.len() && !hup {
                                        break Ok(false);
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) => break Err(e),
                            }
                        }
                    }
                    // Any event, writable ones included: the read also
                    // sends what rustls has queued. Deliveries are counted
                    // from the plaintext exactly as above, one clock
                    // reading per chunk handed out.
                    Link::Tls(tls) => read_tls_all(tls, buf, |data| {
                        tally.now_ns = epoch.elapsed().as_nanos() as u64;
                        input.lines(data, |next, line| tally.line(next, line));
                    }),
                };
                match result {
                    Ok(false) => {}
                    Ok(true) | Err(_) => dropped += 1,
                }
            }
            if tally.delivered >= expected || dropped > 0 {
                finished = Instant::now();
                break;
            }
        }
        if tally.delivered >= expected {
            finished = finished.max(start);
        }
        self.next_seq = sender.sent.max(end);
        let elapsed = finished.saturating_duration_since(start);
        let machine_busy = match (machine0, MachineCpu::read().ok()) {
            (Some(a), Some(b)) => a.busy_percent_until(&b),
            _ => 0.0,
        };
        let own_cpu = match (own0, sys::own_cpu().ok()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => Duration::ZERO,
        };
        let server_cpu = match (server, server_cpu0) {
            (Some(pid), Some(a)) => sys::process_cpu(pid).ok().map(|b| b.saturating_sub(a)),
            _ => None,
        };
        let server_peak_rss_kib = server.and_then(|pid| sys::status_kib(pid, "VmHWM").ok());
        Ok(RunStats {
            proto: setup.proto,
            subs: n,
            messages,
            size: setup.size,
            window: setup.window,
            send_rate,
            elapsed,
            delivered: tally.delivered,
            expected,
            gaps: tally.gaps,
            disorder: tally.disorder,
            dropped,
            timed_out,
            latency: tally.latency,
            own_cpu,
            machine_busy,
            server_cpu,
            server_peak_rss_kib,
            short_replies: sender.short_replies,
            tls: self.tls.clone(),
        })
    }

    /// Writes what the window and the rate allow. Returns when the next
    /// message falls due, if the rate is what holds it back.
    fn publish(
        &mut self,
        s: &mut Sender,
        tally: &Tally,
        start: Instant,
        now: Instant,
        rate: Option<f64>,
    ) -> Result<Option<Instant>, BenchError> {
        let proto = self.setup.proto;
        let per_write = (PUBLISH_BATCH / self.setup.size).max(1) as u64;
        loop {
            if s.written < s.pending.len() {
                if !s.writable {
                    return Ok(None);
                }
                let unsent = &s.pending[s.written..];
                let wrote = match &mut self.publisher.link {
                    Link::Plain(socket) => socket.write(unsent),
                    Link::Tls(tls) => tls.write_through(unsent),
                };
                match wrote {
                    Ok(k) => s.written += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        s.writable = false;
                        return Ok(None);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err("publish")(e)),
                }
                continue;
            }
            s.pending.clear();
            s.written = 0;
            let mut allowed = s.end.min(tally.slowest + self.setup.window);
            let mut due = None;
            if let Some(rate) = rate {
                let done = s.sent - tally.first;
                // The first message goes at once, message k at k / rate.
                let by_rate =
                    (now.saturating_duration_since(start).as_secs_f64() * rate) as u64 + 1;
                if done >= by_rate {
                    due = Some(start + Duration::from_secs_f64(done as f64 / rate));
                }
                allowed = allowed.min(tally.first + by_rate);
            }
            if s.sent >= allowed {
                return Ok(due.filter(|_| s.sent < s.end));
            }
            let k = (allowed - s.sent).min(per_write);
            let stamp = self.now_ns();
            for seq in s.sent..s.sent + k {
                proto.publish(seq, stamp, self.text_len, &mut s.pending);
            }
            s.sent += k;
        }
    }
}

impl RunStats {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    pub fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn messages_per_sec(&self) -> f64 {
        self.deliveries_per_sec() / self.subs.max(1) as f64
    }

    /// Server CPU time per delivery, in nanoseconds.
    pub fn server_ns_per_delivery(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        Some(cpu.as_nanos() as f64 / self.delivered.max(1) as f64)
    }

    /// Whether the run delivered everything, in order, to everyone.
    pub fn clean(&self) -> bool {
        self.lost() == 0 && self.gaps == 0 && self.disorder == 0 && self.dropped == 0
    }

    /// One line of `key=value` pairs for scripts.
    pub fn kv(&self) -> String {
        let mut s = format!(
            "mode=fanout proto={} subs={} messages={} size={} window={} rate={} \
             elapsed_s={:.3} delivered={} lost={} gaps={} disorder={} dropped={} timed_out={} \
             deliveries_per_s={:.0} messages_per_s={:.0} \
             p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1} \
             tool_cpu_s={:.3} machine_busy_pct={:.1}",
            self.proto,
            self.subs,
            self.messages,
            self.size,
            self.window,
            self.send_rate.map_or("max".to_string(), |r| format!("{r}")),
            self.elapsed.as_secs_f64(),
            self.delivered,
            self.lost(),
            self.gaps,
            self.disorder,
            self.dropped,
            self.timed_out,
            self.deliveries_per_sec(),
            self.messages_per_sec(),
            us(self.latency.percentile(0.50)),
            us(self.latency.percentile(0.90)),
            us(self.latency.percentile(0.99)),
            us(self.latency.max()),
            self.own_cpu.as_secs_f64(),
            self.machine_busy,
        );
        if let Some(cpu) = self.server_cpu {
            s += &format!(" server_cpu_s={:.3}", cpu.as_secs_f64());
        }
        if let Some(ns) = self.server_ns_per_delivery() {
            s += &format!(" server_ns_per_delivery={ns:.0}");
        }
        if let Some(kib) = self.server_peak_rss_kib {
            s += &format!(" server_peak_rss_kib={kib}");
        }
        if let Some(suite) = &self.tls {
            s += &format!(" tls={suite}");
        }
        s
    }
}

fn over_tls(suite: &Option<String>) -> String {
    suite
        .as_ref()
        .map_or(String::new(), |s| format!(" over TLS ({s})"))
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl fmt::Display for RunStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self
            .send_rate
            .map_or("as fast as the window allows".to_string(), |r| {
                format!("{r} messages/s")
            });
        writeln!(
            f,
            "{}{}: 1 publisher -> {} subscribers, {} messages of {} bytes per delivery, window {}, {rate}",
            self.proto,
            over_tls(&self.tls),
            self.subs,
            self.messages,
            self.size,
            self.window
        )?;
        writeln!(
            f,
            "  {} of {} deliveries in {:.3} s: {:.3} M deliveries/s, {:.0} messages/s",
            self.delivered,
            self.expected,
            self.elapsed.as_secs_f64(),
            self.deliveries_per_sec() / 1e6,
            self.messages_per_sec()
        )?;
        writeln!(
            f,
            "  latency send->receive: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.1} us",
            us(self.latency.percentile(0.50)),
            us(self.latency.percentile(0.90)),
            us(self.latency.percentile(0.99)),
            us(self.latency.max())
        )?;
        writeln!(
            f,
            "  lost {}, skipped {}, out of order {}, subscribers dropped {}{}",
            self.lost(),
            self.gaps,
            self.disorder,
            self.dropped,
            if self.timed_out { ", TIMED OUT" } else { "" }
        )?;
        if self.short_replies > 0 {
            writeln!(
                f,
                "  {} PUBLISH replies named fewer receivers than subscribers",
                self.short_replies
            )?;
        }
        write!(
            f,
            "  this tool used {:.2} s CPU ({:.0}% of one core); the machine was {:.0}% busy",
            self.own_cpu.as_secs_f64(),
            100.0 * self.own_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9),
            self.machine_busy
        )?;
        if let Some(cpu) = self.server_cpu {
            write!(
                f,
                "\n  server: {:.2} s CPU, {:.0} ns per delivery",
                cpu.as_secs_f64(),
                self.server_ns_per_delivery().unwrap_or(0.0)
            )?;
        }
        if let Some(kib) = self.server_peak_rss_kib {
            write!(f, ", peak RSS {:.1} MiB", kib as f64 / 1024.0)?;
        }
        Ok(())
    }
}

/// What N idle named connections cost.
#[derive(Clone, Debug)]
pub struct IdleStats {
    pub proto: Proto,
    pub conns: usize,
    pub setup_time: Duration,
    /// Server RSS before connecting and once every queue had drained.
    pub server_rss_kib: Option<(u64, u64)>,
    /// Machine-wide TCP sockets before and after; both ends of each
    /// loopback connection are counted.
    pub sockets: (TcpSockets, TcpSockets),
    /// The TLS cipher suite the connections negotiated, if over TLS.
    pub tls: Option<String>,
}

impl IdleStats {
    /// Server user-space memory per connection, in bytes.
    pub fn server_bytes_per_conn(&self) -> Option<f64> {
        let (before, after) = self.server_rss_kib?;
        Some(after.saturating_sub(before) as f64 * 1024.0 / self.conns.max(1) as f64)
    }

    /// Kernel socket buffer memory per connection, both ends, in bytes.
    pub fn kernel_bytes_per_conn(&self) -> f64 {
        let (a, b) = self.sockets;
        b.mem_pages.saturating_sub(a.mem_pages) as f64 * sys::page_size() as f64
            / self.conns.max(1) as f64
    }

    pub fn kv(&self) -> String {
        let mut s = format!(
            "mode=idle proto={} conns={} setup_s={:.2} kernel_tcp_mem_pages_before={} \
             kernel_tcp_mem_pages_after={} kernel_bytes_per_conn={:.0} tcp_inuse_after={}",
            self.proto,
            self.conns,
            self.setup_time.as_secs_f64(),
            self.sockets.0.mem_pages,
            self.sockets.1.mem_pages,
            self.kernel_bytes_per_conn(),
            self.sockets.1.in_use,
        );
        if let (Some((before, after)), Some(per)) =
            (self.server_rss_kib, self.server_bytes_per_conn())
        {
            s += &format!(
                " server_rss_before_kib={before} server_rss_after_kib={after} server_bytes_per_conn={per:.0}"
            );
        }
        if let Some(suite) = &self.tls {
            s += &format!(" tls={suite}");
        }
        s
    }
}

impl fmt::Display for IdleStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}{}: {} idle named connections, logged in in {:.2} s",
            self.proto,
            over_tls(&self.tls),
            self.conns,
            self.setup_time.as_secs_f64()
        )?;
        if let (Some((before, after)), Some(per)) =
            (self.server_rss_kib, self.server_bytes_per_conn())
        {
            writeln!(
                f,
                "  server RSS {before} KiB -> {after} KiB: {per:.0} bytes per connection (user space)"
            )?;
        }
        let (a, b) = self.sockets;
        write!(
            f,
            "  kernel TCP memory {} -> {} pages: {:.0} bytes per connection, both ends \
             ({} TCP sockets in use machine-wide)",
            a.mem_pages,
            b.mem_pages,
            self.kernel_bytes_per_conn(),
            b.in_use
        )
    }
}

/// Opens `setup.subs` named connections (`s0..`) that then say nothing,
/// waits until the server has sent them everything it queued (nothing for
/// `QUIET`), and measures what they cost; then closes them.
pub fn idle(setup: &Setup) -> Result<IdleStats, BenchError> {
    let proto = setup.proto;
    let rss = |pid: u32| sys::status_kib(pid, "VmRSS").ok();
    let rss_before = setup.server_pid.and_then(rss);
    let sockets_before = TcpSockets::read().unwrap_or_default();
    let mut poll = Poll::new().map_err(io_err("create a poll"))?;
    let start = Instant::now();
    let deadline = start + setup.timeout;
    let mut peers = open(
        &mut poll,
        setup,
        setup.addr,
        setup.subs,
        0,
        &sub_name,
        &|i, out| proto.name_only(&sub_name(i), out),
        deadline,
    )?;
    let setup_time = start.elapsed();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(BenchError::BadSetup(
                "the server kept sending to idle connections until the timeout".into(),
            ));
        }
        poll.poll(&mut events, Some(QUIET.min(deadline - now)))
            .map_err(io_err("poll"))?;
        if events.is_empty() {
            break;
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some(peer) = peers.get_mut(i) else {
                continue;
            };
            let hup = event.is_read_closed() || event.is_error();
            if read_all(&mut peer.link, &mut buf, hup, |_| {})
                .map_err(io_err(format!("read {}", sub_name(i))))?
            {
                return Err(BenchError::Closed { name: sub_name(i) });
            }
        }
    }
    let rss_after = setup.server_pid.and_then(rss);
    let sockets_after = TcpSockets::read().unwrap_or_default();
    let tls = peers.first().and_then(|p| p.link.tls_suite());
    drop(peers.drain(..));
    Ok(IdleStats {
        tls,
        proto,
        conns: setup.subs,
        setup_time,
        server_rss_kib: rss_before.zip(rss_after),
        sockets: (sockets_before, sockets_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(p: &mut Lines, data: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        p.lines(data, |_, l| {
            got.push(String::from_utf8_lossy(l).into_owned())
        });
        got
    }

    #[test]
    fn lines_span_reads_and_lose_their_terminators() {
        let mut p = Lines::default();
        assert_eq!(split(&mut p, b"one\r\ntw"), ["one"]);
        assert_eq!(split(&mut p, b"o"), Vec::<String>::new());
        assert_eq!(split(&mut p, b"\nthree\nfour"), ["two", "three"]);
        assert_eq!(split(&mut p, b"\n"), ["four"]);
    }

    #[test]
    fn an_over_long_line_is_dropped_not_kept() {
        let mut p = Lines::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert!(split(&mut p, &big).is_empty());
        assert!(p.partial.capacity() == 0 && p.skipping);
        assert_eq!(split(&mut p, b"xx\nnext\n"), ["next"]);
    }

    fn tally(subs: u32, first: u64, end: u64) -> Tally {
        Tally {
            proto: Proto::Chat,
            subs,
            first,
            end,
            slowest: first,
            reached: vec![0; 4],
            delivered: 0,
            gaps: 0,
            disorder: 0,
            latency: Histogram::default(),
            now_ns: 1000,
        }
    }

    fn delivery(seq: u64) -> Vec<u8> {
        let mut text = Vec::new();
        Proto::Chat.publish(seq, 10, wire::STAMP_LEN, &mut text);
        text.pop();
        [b"<pub> ".as_slice(), &text].concat()
    }

    #[test]
    fn the_window_follows_the_slowest_subscriber() {
        let mut t = tally(2, 0, 3);
        let (mut a, mut b) = (0, 0);
        t.line(&mut a, &delivery(0));
        t.line(&mut a, &delivery(1));
        assert_eq!(t.slowest, 0);
        t.line(&mut b, &delivery(0));
        assert_eq!(t.slowest, 1);
        t.line(&mut b, &delivery(1));
        assert_eq!((t.slowest, t.delivered), (2, 4));
        assert_eq!(t.latency.max(), 990);
        t.line(&mut a, b"* someone has joined #lobby");
        assert_eq!(t.delivered, 4);
    }

    #[test]
    fn skipped_and_repeated_messages_are_counted() {
        let mut t = tally(1, 0, 4);
        let mut a = 0;
        t.line(&mut a, &delivery(0));
        t.line(&mut a, &delivery(2));
        t.line(&mut a, &delivery(2));
        assert_eq!((t.delivered, t.gaps, t.disorder), (2, 1, 1));
        // A straggler from before this run is ignored.
        let mut t = tally(1, 10, 12);
        let mut a = 10;
        t.line(&mut a, &delivery(3));
        assert_eq!((t.delivered, t.disorder), (0, 0));
    }
}
