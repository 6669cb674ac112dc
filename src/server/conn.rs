//! One connection: its socket, its stack of input layers (detection, TLS,
//! lines), output queue, rate budget and closing state. Knows no chat
//! rules; the server decides what to queue.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use socket2::{SockRef, TcpKeepalive};

use crate::server::stack::Stack;
use crate::wire::proto::{CloseReason, Mode};

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the peer is declared dead: with the two above,
/// a silent peer is found within about two minutes.
pub const KEEPALIVE_PROBES: u32 = 6;
/// Sent data unacknowledged for this long ends the connection. Keepalive
/// does not probe while data is in flight, so this covers that case.
pub const USER_TIMEOUT: Duration = Duration::from_secs(120);

/// Sets the options every client socket gets: no Nagle delay (the server
/// batches its own writes) and dead-peer detection.
pub fn configure_socket(socket: &TcpStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let sock = SockRef::from(socket);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

/// Bytes waiting to be written: bytes of its own, then a range of the
/// turn's shared log (broadcast bytes encoded once for every recipient).
/// The range lives only within one loop turn: what is not written by the
/// turn's flush is copied into the connection's own bytes (`settle`).
/// Holds no allocation while empty.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes of `buf` before this were written already.
    pos: usize,
    /// `shared_start..shared_end` of the log comes after `buf`.
    shared_start: usize,
    shared_end: usize,
}

impl OutBuf {
    /// Bytes owed, own and shared.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos + self.shared_end - self.shared_start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends bytes of its own, after whatever is owed already.
    pub fn push(&mut self, log: &[u8], data: &[u8]) {
        self.settle(log);
        self.append(data);
    }

    /// Appends `log[start..end]`. A range that continues the one held just
    /// extends it, so a run of broadcasts costs no copy at all.
    pub fn push_shared(&mut self, log: &[u8], start: usize, end: usize) {
        if start == end {
            return;
        }
        if self.shared_end == start && self.shared_start < self.shared_end {
            self.shared_end = end;
            return;
        }
        self.settle(log);
        self.shared_start = start;
        self.shared_end = end;
    }

    /// Copies the shared range into its own bytes, before the log is
    /// cleared or a different log applies.
    pub fn settle(&mut self, log: &[u8]) {
        let (start, end) = (self.shared_start, self.shared_end);
        // Always reset: an empty range must not keep indices into a log
        // that will be cleared.
        self.shared_start = 0;
        self.shared_end = 0;
        if start < end {
            self.append(&log[start..end]);
        }
    }

    fn append(&mut self, data: &[u8]) {
        let would_grow = self.buf.len() + data.len() > self.buf.capacity();
        if self.pos > 0 && (would_grow || self.pos >= self.buf.len() / 2) {
            // Written bytes are dropped before the buffer grows, so its size
            // follows what is unsent (which --max-outbuf bounds), not what
            // went through it.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// One write of everything owed (own and shared bytes together). What
    /// is left of the shared range is then settled, so nothing refers to
    /// the log after this. Frees the buffer once it is all out.
    pub fn write_to(&mut self, w: &mut impl Write, log: &[u8]) -> io::Result<usize> {
        let own = &self.buf[self.pos..];
        let shared = &log[self.shared_start..self.shared_end];
        let result = if own.is_empty() {
            w.write(shared)
        } else if shared.is_empty() {
            w.write(own)
        } else {
            w.write_vectored(&[io::IoSlice::new(own), io::IoSlice::new(shared)])
        };
        if let Ok(n) = result {
            let from_own = n.min(own.len());
            self.pos += from_own;
            self.shared_start += n - from_own;
        }
        self.settle(log);
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
        result
    }

    /// What is owed, in order: its own bytes, then its range of `log`.
    /// For a layer (TLS) that takes all of it at once, then `clear`.
    pub fn parts<'a>(&'a self, log: &'a [u8]) -> [&'a [u8]; 2] {
        [
            &self.buf[self.pos..],
            &log[self.shared_start..self.shared_end],
        ]
    }

    /// Drops everything pending, for a connection that is being cut off.
    pub fn clear(&mut self) {
        *self = OutBuf::default();
    }
}

/// A token bucket: `rate` lines a second, bursts up to twice that.
#[derive(Debug)]
pub struct Budget {
    tokens: f32,
    at: Instant,
}

impl Budget {
    pub fn new(rate: u32, now: Instant) -> Budget {
        Budget {
            tokens: 2.0 * rate as f32,
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f32();
        self.tokens = (self.tokens + elapsed * rate as f32).min(2.0 * rate as f32);
        self.at = now;
    }

    /// Whether one more line may be taken now.
    pub fn has_token(&mut self, rate: u32, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= 1.0
    }

    /// Takes `lines` tokens; the budget may go below zero, and then the
    /// wait for the next line is longer.
    pub fn spend(&mut self, lines: u32) {
        self.tokens -= lines as f32;
    }

    /// How long until one token is there.
    pub fn wait(&self, rate: u32) -> Duration {
        Duration::from_secs_f32(((1.0 - self.tokens) / rate as f32).max(0.001))
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    /// Closing politely: flush what is owed, send FIN, then wait (bounded)
    /// for the peer's FIN so that unread input cannot turn into a reset
    /// that destroys what was just sent.
    Draining {
        fin_sent: bool,
    },
    /// To be removed after this loop turn.
    Dead,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub socket: TcpStream,
    pub peer: SocketAddr,
    /// Unique over the server's life, unlike the slab key; names the
    /// connection in logs and tells a reused key's timers apart.
    pub serial: u64,
    pub stack: Stack,
    /// Plaintext owed, in the connection's mode (encrypted at the flush
    /// when the stack has TLS).
    pub out: OutBuf,
    pub budget: Budget,
    pub state: State,
    pub reason: Option<CloseReason>,
    /// The socket may hold unread bytes (it was readable and not drained).
    pub readable: bool,
    /// epoll said the peer closed its side (or the socket failed). Reading
    /// must then go on to EOF even after a short read: that close came with
    /// an edge already consumed, and no new one will report it.
    pub hup: bool,
    /// The peer sent FIN.
    pub eof: bool,
    /// Not reading until its timer: out of rate budget.
    pub paused: bool,
    /// When this connection's one timer fires (rate pause or close deadline).
    pub timer: Option<Instant>,
    /// Chosen by the first non-blank line; until then replies are text.
    pub mode: Option<Mode>,
    pub in_ready: bool,
    /// On the list of connections not read while storage catches up.
    pub in_held: bool,
    /// Its timer is the TLS handshake's deadline (not the welcome's).
    pub handshake_deadline: bool,
    pub in_dirty: bool,
    /// The id of the JSON request the chat is waiting on a job for (a
    /// password check, a history query), echoed on its answer.
    pub reply_id: Option<crate::wire::json::RequestId>,
    /// The chat has been told of it (`Server::greet`).
    pub greeted: bool,
    /// An HTTP request head being read: the head so far.
    pub http: Option<Box<Vec<u8>>>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Conn {
    /// The mode its output is encoded in: text until the first line
    /// chooses.
    pub fn out_mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Text)
    }

    /// Bytes owed to the peer: plaintext queued and ciphertext waiting
    /// inside the TLS layer. `--max-outbuf` bounds it.
    pub fn owed(&self) -> usize {
        self.out.len() + self.stack.tls_pending()
    }

    pub fn new(socket: TcpStream, peer: SocketAddr, serial: u64, budget: Budget) -> Conn {
        Conn {
            socket,
            peer,
            serial,
            stack: Stack::default(),
            out: OutBuf::default(),
            budget,
            state: State::Open,
            reason: None,
            readable: true,
            hup: false,
            eof: false,
            paused: false,
            timer: None,
            mode: None,
            in_ready: false,
            in_held: false,
            handshake_deadline: false,
            in_dirty: false,
            reply_id: None,
            greeted: false,
            http: None,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes per call.
    struct Narrow {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.write(&all)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn outbuf_keeps_order_across_partial_writes_and_frees_when_done() {
        let mut out = OutBuf::default();
        let mut w = Narrow {
            got: Vec::new(),
            room: 3,
        };
        out.push(&[], b"hello ");
        assert_eq!(out.write_to(&mut w, &[]).unwrap(), 3);
        out.push(&[], b"world\n");
        while !out.is_empty() {
            out.write_to(&mut w, &[]).unwrap();
        }
        assert_eq!(w.got, b"hello world\n");
        assert_eq!(out.buf.capacity(), 0);
        w.room = 0;
        out.push(&[], b"x");
        assert!(out.write_to(&mut w, &[]).is_err());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn outbuf_size_follows_what_is_unsent_for_a_slow_reader() {
        // A reader taking a little less than is queued each time: written
        // bytes must not pile up at the front of the buffer.
        let mut out = OutBuf::default();
        let mut w = Narrow {
            got: Vec::new(),
            room: 60 * 1024,
        };
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1000 {
            out.push(&[], &chunk);
            out.write_to(&mut w, &[]).unwrap();
            w.got.clear();
            let bound = 2 * (out.len() + chunk.len());
            assert!(
                out.buf.capacity() <= bound,
                "{} held for {} unsent",
                out.buf.capacity(),
                out.len()
            );
        }
        assert_eq!(out.len(), 1000 * 4 * 1024);
    }

    #[test]
    fn shared_ranges_join_up_and_keep_their_place_among_own_bytes() {
        let log = b"<a> 1\n<a> 2\n<b> 3\n".to_vec();
        let mut out = OutBuf::default();
        out.push_shared(&log, 0, 6);
        out.push_shared(&log, 6, 12);
        assert_eq!((out.buf.len(), out.len()), (0, 12), "a run is not copied");
        out.push(&log, b"* own\n");
        out.push_shared(&log, 12, 18);
        // Some of it goes out; the rest is settled before the log is gone.
        let mut w = Narrow {
            got: Vec::new(),
            room: 14,
        };
        assert_eq!(out.write_to(&mut w, &log).unwrap(), 14);
        assert_eq!((out.shared_start, out.shared_end), (0, 0));
        w.room = 100;
        out.write_to(&mut w, &[]).unwrap();
        assert_eq!(w.got, b"<a> 1\n<a> 2\n* own\n<b> 3\n");
        assert!(out.is_empty());
        // Own bytes and a shared range go out in one vectored write.
        out.push(&log, b"x\n");
        out.push_shared(&log, 0, 6);
        w.got.clear();
        assert_eq!(out.write_to(&mut w, &log).unwrap(), 8);
        assert_eq!(w.got, b"x\n<a> 1\n");
        assert_eq!(out.buf.capacity(), 0);
        // A range written out entirely leaves nothing that points into the
        // log, which the next turn starts empty.
        out.push_shared(&log, 6, 12);
        out.write_to(&mut w, &log).unwrap();
        out.push(&[], b"y\n");
        out.write_to(&mut w, &[]).unwrap();
        assert!(w.got.ends_with(b"<a> 2\ny\n"));
        // An event that encodes to nothing in this mode leaves no range.
        out.push_shared(&log, 12, 12);
        assert!(out.is_empty());
        assert_eq!((out.shared_start, out.shared_end), (0, 0));
    }

    #[test]
    fn budget_allows_a_burst_of_twice_the_rate_then_refills() {
        let t0 = Instant::now();
        let mut b = Budget::new(10, t0);
        let mut taken = 0;
        while b.has_token(10, t0) {
            b.spend(1);
            taken += 1;
        }
        assert_eq!(taken, 20);
        let wait = b.wait(10);
        let ms = wait.as_secs_f64() * 1000.0;
        assert!(
            (99.0..=101.0).contains(&ms),
            "one token takes 100 ms, not {ms}"
        );
        assert!(!b.has_token(10, t0 + wait / 2));
        assert!(b.has_token(10, t0 + wait));
        b.refill(10, t0 + Duration::from_secs(100));
        assert_eq!(b.tokens, 20.0, "never more than the burst");
        // An expensive reply puts the budget in debt: a longer wait.
        b.spend(50);
        let ms = b.wait(10).as_secs_f64() * 1000.0;
        assert!(
            (3099.0..=3101.0).contains(&ms),
            "31 tokens short: 3.1 s, not {ms} ms"
        );
    }

    #[test]
    fn client_sockets_get_nodelay_and_keepalive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let socket = TcpStream::from_std(accepted);
        configure_socket(&socket).unwrap();
        let sock = SockRef::from(&socket);
        assert!(socket.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
