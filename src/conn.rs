//! One connection: its socket, pending input, output queue, rate budget and
//! closing state. Knows no chat rules; the server decides what to queue.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use socket2::{SockRef, TcpKeepalive};

use crate::lines::LineBuf;
use crate::proto::{CloseReason, Mode};

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

/// Bytes waiting to be written. Holds no allocation while empty.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    /// Bytes before this were written already.
    pos: usize,
}

impl OutBuf {
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, data: &[u8]) {
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

    /// One write of everything pending. Frees the buffer once it is all out.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let n = w.write(&self.buf[self.pos..])?;
        self.pos += n;
        if self.pos == self.buf.len() {
            self.clear();
        }
        Ok(n)
    }

    /// Drops everything pending, for a connection that is being cut off.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.pos = 0;
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
    pub lines: LineBuf,
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
    pub in_dirty: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Conn {
    pub fn new(socket: TcpStream, peer: SocketAddr, serial: u64, budget: Budget) -> Conn {
        Conn {
            socket,
            peer,
            serial,
            lines: LineBuf::default(),
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
            in_dirty: false,
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
        out.push(b"hello ");
        assert_eq!(out.write_to(&mut w).unwrap(), 3);
        out.push(b"world\n");
        while !out.is_empty() {
            out.write_to(&mut w).unwrap();
        }
        assert_eq!(w.got, b"hello world\n");
        assert_eq!(out.buf.capacity(), 0);
        w.room = 0;
        out.push(b"x");
        assert!(out.write_to(&mut w).is_err());
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
            out.push(&chunk);
            out.write_to(&mut w).unwrap();
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
