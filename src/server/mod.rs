//! `Server`: the one `mio::Poll` loop. Accepts, reads, frames lines, hands
//! them to `Chat`, encodes each event once per mode, queues the bytes, and
//! flushes every connection with output once per turn (again only if
//! closing connections at the end of the turn give it more). No chat rules
//! live here.
//!
//! Each turn: poll; note which connections are readable or writable; accept
//! (bounded); fire due timers; serve the ready list, one bounded read per
//! connection; then reap dead connections (the one place a user is removed
//! and the room told) and flush everything queued, before sleeping again.
//! Removal waits for the end of the turn, so a slab key is never reused
//! while the turn still holds events for its old connection.

pub mod conn;
pub mod exporter;
pub mod logger;
pub mod metrics;
pub mod stack;
pub mod tls;
pub mod web;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use socket2::{Domain, Socket, Type};

use crate::chat::{
    Chat, ChatConfig, ConnId, Job, Outbox, Outcome, Output, Presence, Shared, Ticket,
};
use crate::cluster::Kind;
use crate::cluster::link::{FromLink, HOLD, Link};
use crate::server::conn::{Budget, Conn, State, configure_socket};
use crate::server::stack::{Phase, StackError, WELCOME_DELAY};
use crate::server::tls::{PLAIN_ALERT_HANDSHAKE_FAILURE, TlsConfig};
use crate::server::web::{After, Site};
use crate::store::Store;
use crate::store::backend::{Backend, Reply};
use crate::store::password::Cost;
use crate::wire::cidr::Cidr;
use crate::wire::json;
use crate::wire::lines::Line;
use crate::wire::proto::{CloseReason, Event, Mode, ProtoError, Status, Timestamp, encode_text};
use crate::wire::ws;

/// How often every WebSocket is pinged, so idle ones are found out and
/// kept open through middleboxes.
pub const WS_PING_EVERY: Duration = Duration::from_secs(25);

/// Default longest input line, in bytes without its terminator.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// Default most connections at once, named or not.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Connections one address may hold at once by default (0: no limit).
pub const DEFAULT_MAX_PER_IP: usize = 64;
/// What a connection past `--max-per-ip` is told before it is closed.
const TOO_MANY_LINE: &[u8] = b"! too many connections from your address\n";
/// Default lines per second a client may send (bursts of twice that).
pub const DEFAULT_RATE: u32 = 20;
/// Default most unsent output for one connection before it is dropped.
pub const DEFAULT_MAX_OUTBUF: usize = 8 * 1024 * 1024;

/// Bytes read from one connection per turn at most: a busy sender gets
/// this much, then everyone else gets a turn.
pub const READ_CHUNK: usize = 64 * 1024;
/// With `--rate` on, a reply to the client itself costs one more line of
/// budget per this many bytes. A 7-byte `/users` can produce hundreds of
/// kilobytes; charged as one line, a client could make the server do
/// unbounded work and queue unbounded output for it.
pub const REPLY_BYTES_PER_TOKEN: usize = 4096;
/// Connections accepted per turn at most, so a connection storm cannot
/// starve the clients already here.
pub const ACCEPT_BATCH: usize = 256;
/// After an accept error such as running out of file descriptors, accepting
/// pauses this long instead of retrying in a busy loop.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a closing connection may take to receive what it is owed.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// A turn's broadcast log keeps its allocation up to this size for the next
/// turn; a bigger one (after a burst) is shrunk to it.
pub const LOG_KEEP: usize = 4 * 1024 * 1024;
/// Backlog of not-yet-accepted connections the kernel keeps.
pub const LISTEN_BACKLOG: i32 = 4096;
/// Default most password checks waiting at once; more are `server_busy`.
pub const DEFAULT_AUTH_QUEUE: usize = 64;
/// How long the storage thread may take to store what is left at shutdown.
pub const STORE_FLUSH: Duration = Duration::from_millis(800);
/// Pending-timer capacity kept however few timers are pending.
pub const TIMERS_KEEP: usize = 1024;
/// CPU time per loop turn that TLS handshakes may take (reads that go
/// into a handshake; at least one a turn). A ClientHello costs the server
/// a key exchange and a signature, a few hundred microseconds: a thousand
/// clients reconnecting at once are served over many turns, and the users
/// already talking are served between them. A budget of time rather than
/// of handshakes holds on a slower machine too.
pub const HANDSHAKE_TIME_PER_TURN: Duration = Duration::from_millis(2);
/// Sent to a plain connection from outside `--allow-plain` when
/// `--require-tls` is on, whatever it would have spoken.
pub const REQUIRE_TLS_LINE: &[u8] = b"! this server requires TLS\n";

/// While clients wait for storage to catch up, the loop looks again at
/// least this often (the storage thread also wakes it).
pub const BACKLOG_RECHECK: Duration = Duration::from_millis(50);

/// While `--metrics-listen` is on, the loop turns at least this often
/// even with nothing to do, so its heartbeat shows it alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Limits and rules of one server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Longest input line in bytes, terminator excluded; a longer one is
    /// answered `line_too_long` and discarded as it arrives.
    pub max_line: usize,
    /// Most connections at once; a newcomer past it gets `! server full`.
    pub max_clients: usize,
    /// Most connections from one address at once, named or not; 0 for no
    /// limit.
    pub max_per_ip: usize,
    /// Lines per second per client, bursts of twice that; 0 is unlimited.
    /// A client over it is not read from until its budget refills.
    pub rate: u32,
    /// Most unsent output per connection; a client that lets more pile up
    /// is disconnected as too slow.
    pub max_outbuf: usize,
    pub chat: ChatConfig,
    /// The SQLite database of accounts and history; `:memory:` keeps
    /// nothing after the run.
    pub db: String,
    /// The Argon2id cost of new password hashes.
    pub hash_cost: Cost,
    /// Most password checks waiting at once.
    pub auth_queue: usize,
    /// The certificate for TLS clients; without it a ClientHello is
    /// answered with an alert.
    pub tls: Option<TlsConfig>,
    /// Plain connections are refused unless they come from `allow_plain`.
    pub require_tls: bool,
    /// Where plain connections are allowed from under `require_tls`.
    pub allow_plain: Vec<Cidr>,
    /// Origins besides the server's own allowed to open a WebSocket.
    pub web_origins: Vec<String>,
    /// One chat with the other nodes of this cluster (`--cluster`).
    pub cluster: Option<crate::cluster::Settings>,
}

/// The addresses `--allow-plain` allows by default: this machine.
pub fn default_allow_plain() -> Vec<Cidr> {
    ["127.0.0.0/8", "::1"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_line: DEFAULT_MAX_LINE,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_per_ip: DEFAULT_MAX_PER_IP,
            rate: DEFAULT_RATE,
            max_outbuf: DEFAULT_MAX_OUTBUF,
            chat: ChatConfig::default(),
            db: ":memory:".into(),
            hash_cost: Cost::default(),
            auth_queue: DEFAULT_AUTH_QUEUE,
            tls: None,
            require_tls: false,
            allow_plain: default_allow_plain(),
            web_origins: Vec::new(),
            cluster: None,
        }
    }
}

/// Binds a listening socket the way the server wants it: address reuse
/// (restarts are not refused while old connections linger in TIME_WAIT)
/// and a deep backlog (a thousand clients arriving at once are not made to
/// retry their SYN).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Asks a running server to shut down; usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the event loop for shutdown: {e}");
        }
    }
}

/// Hands a new certificate to a running server (after SIGHUP); usable from
/// any thread. New connections use it; current ones go on with theirs.
#[derive(Clone)]
pub struct TlsHandle {
    slot: Arc<Mutex<Option<TlsConfig>>>,
    waker: Arc<Waker>,
}

impl TlsHandle {
    pub fn replace(&self, cfg: TlsConfig) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(cfg);
        }
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the event loop for a new certificate: {e}");
        }
    }
}

/// Hands new settings to a running server (after SIGHUP re-read the
/// config file); usable from any thread. The loop takes the ones that can
/// change while running (see `Server::set_limits`) at its next turn, then
/// logs the lines given with them, so a line such as `config: rate 1 -> 0`
/// means the new value is in force.
/// New settings with the log lines that say what changed.
type ConfigSlot = Arc<Mutex<Option<(Config, Vec<String>)>>>;

#[derive(Clone)]
pub struct ConfigHandle {
    slot: ConfigSlot,
    waker: Arc<Waker>,
}

impl ConfigHandle {
    pub fn replace(&self, cfg: Config, log_lines: Vec<String>) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((cfg, log_lines));
        }
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the event loop for new settings: {e}");
        }
    }
}

/// A deferred wake-up of one connection.
type Timer = Reverse<(Instant, usize, u64)>;

/// The connection table and what each turn must still do to it.
struct Conns {
    slab: Slab<Conn>,
    /// Connections to read from this turn (or next, if added while serving).
    ready: Vec<usize>,
    /// Connections with output queued since their last flush.
    dirty: Vec<usize>,
    /// Connections to remove at the end of the turn.
    dead: Vec<usize>,
    /// Connections not read while storage catches up.
    held: Vec<usize>,
    /// This turn's broadcast bytes, one log per mode (indexed by `Mode`):
    /// each broadcast event is encoded into it once, and its recipients
    /// hold ranges of it until the end-of-turn flush writes or settles them.
    logs: [Vec<u8>; 3],
    /// Where an event for one connection is encoded before it is queued.
    reply: Vec<u8>,
    /// Where TLS records are built at a flush, so a connection whose
    /// socket takes them all keeps no buffer of its own.
    sealed: Vec<u8>,
    timers: BinaryHeap<Timer>,
    max_outbuf: usize,
    now: Instant,
    /// Events not queued because the connection was gone or went over
    /// its output limit: subtracted from a broadcast's recipients to count
    /// deliveries with one addition per broadcast.
    skipped: u64,
}

impl Conns {
    fn mark_ready(&mut self, key: usize) {
        if let Some(c) = self.slab.get_mut(key)
            && !c.in_ready
        {
            c.in_ready = true;
            self.ready.push(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.slab.get_mut(key)
            && !c.in_dirty
        {
            c.in_dirty = true;
            self.dirty.push(key);
        }
    }

    fn set_timer(&mut self, key: usize, at: Instant) {
        let c = &mut self.slab[key];
        c.timer = Some(at);
        self.timers.push(Reverse((at, key, c.serial)));
    }

    /// Queues `event` for `key` alone, in its mode (JSON echoes `id`), or
    /// drops the connection if that would put it over its output limit.
    /// Nobody else is affected either way.
    fn queue(&mut self, key: usize, event: &Event, id: Option<&json::RawValue>) {
        let Some(mode) = self.live_mode(key) else {
            self.skipped += 1;
            return;
        };
        self.reply.clear();
        encode(mode, event, id, &mut self.reply);
        if self.over_limit(key, self.reply.len()) {
            self.skipped += 1;
            return;
        }
        let c = &mut self.slab[key];
        c.out.push(&self.logs[mode as usize], &self.reply);
        self.mark_dirty(key);
    }

    /// Queues one broadcast event for `key`: its bytes are appended to the
    /// turn's log for the connection's mode once per event (`ranges`
    /// remembers where), and the connection only notes the range.
    fn queue_shared(
        &mut self,
        key: usize,
        event: &Event,
        ranges: &mut [Option<(usize, usize)>; 3],
    ) {
        let Some(mode) = self.live_mode(key) else {
            self.skipped += 1;
            return;
        };
        let (start, end) = *ranges[mode as usize].get_or_insert_with(|| {
            let log = &mut self.logs[mode as usize];
            let start = log.len();
            encode(mode, event, None, log);
            (start, log.len())
        });
        if self.over_limit(key, end - start) {
            self.skipped += 1;
            return;
        }
        let c = &mut self.slab[key];
        c.out.push_shared(&self.logs[mode as usize], start, end);
        self.mark_dirty(key);
    }

    /// The mode of `key`'s output, unless it is gone or cut off.
    fn live_mode(&self, key: usize) -> Option<Mode> {
        let c = self.slab.get(key)?;
        (c.state != State::Dead).then(|| c.out_mode())
    }

    /// Drops `key` as too slow if `more` bytes would put it over
    /// `--max-outbuf`.
    fn over_limit(&mut self, key: usize, more: usize) -> bool {
        let c = &self.slab[key];
        if c.owed() + more <= self.max_outbuf {
            return false;
        }
        warn!(
            "conn #{} {}: over --max-outbuf ({} bytes unsent), dropping it",
            c.serial,
            c.peer,
            c.owed()
        );
        self.kill(key, CloseReason::TooSlow);
        true
    }

    /// Starts a polite close: flush, FIN, wait for the peer's FIN, all
    /// within `CLOSE_FLUSH`. Idempotent; the first reason is kept.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(c) = self.slab.get_mut(key) else {
            return;
        };
        if c.state != State::Open {
            return;
        }
        let code = match reason {
            CloseReason::Shutdown => ws::CLOSE_GOING_AWAY,
            CloseReason::Kicked | CloseReason::Banned => ws::CLOSE_POLICY,
            _ => ws::CLOSE_NORMAL,
        };
        close_websocket(c, &self.logs[Mode::WebSocket as usize], code);
        c.state = State::Draining { fin_sent: false };
        c.reason = Some(reason);
        c.paused = false;
        // Input still waiting is read (and dropped) without relying on
        // another edge.
        let readable = c.readable;
        let deadline = self.now + CLOSE_FLUSH;
        self.set_timer(key, deadline);
        if readable {
            self.mark_ready(key);
        }
        // The flush step sends what is owed and then the FIN.
        self.mark_dirty(key);
    }

    /// Cuts a connection off now: nothing more is sent. Idempotent; the
    /// first reason given (to `close` or here) is kept, so callers pass
    /// what they saw without checking for an earlier one.
    fn kill(&mut self, key: usize, reason: CloseReason) {
        let Some(c) = self.slab.get_mut(key) else {
            return;
        };
        if c.state == State::Dead {
            return;
        }
        c.state = State::Dead;
        c.reason.get_or_insert(reason);
        c.out.clear();
        self.dead.push(key);
    }

    /// One write of what `key` is owed (through its TLS layer if it has
    /// one); then, if it is closing and owed nothing more, its FIN.
    fn flush(&mut self, key: usize) {
        let Some(c) = self.slab.get_mut(key) else {
            return;
        };
        c.in_dirty = false;
        if c.state == State::Dead {
            return;
        }
        if c.owed() > 0 {
            let log = &self.logs[c.out_mode() as usize];
            let written = match c.stack.tls.as_deref_mut() {
                None => c.out.write_to(&mut c.socket, log),
                Some(tls) => match tls.flush(c.out.parts(log), &mut self.sealed, &mut c.socket) {
                    Ok(result) => {
                        // All plaintext is sealed now; what the socket did
                        // not take waits inside the layer.
                        c.out.clear();
                        result
                    }
                    Err(e) => {
                        warn!("conn #{}: {e}", c.serial);
                        self.kill(key, CloseReason::TlsFailed);
                        return;
                    }
                },
            };
            match written {
                Ok(n) => c.bytes_out += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.mark_dirty(key);
                    return;
                }
                Err(e) => {
                    debug!("conn #{}: write failed: {e}", c.serial);
                    self.kill(key, io_reason(&e));
                    return;
                }
            }
        }
        if c.owed() == 0
            && let State::Draining { fin_sent: false } = c.state
        {
            if let Some(tls) = c.stack.tls.as_deref_mut() {
                // close_notify goes before the FIN; if the socket cannot
                // take it now, the next writable event brings us back.
                tls.close_notify();
                if let Ok(n) = tls.write_to(&mut c.socket) {
                    c.bytes_out += n as u64;
                }
                if tls.pending() > 0 {
                    return;
                }
            }
            c.state = State::Draining { fin_sent: true };
            let _ = c.socket.shutdown(Shutdown::Write);
            if c.eof {
                self.kill(key, CloseReason::PeerClosed);
            }
        }
    }
}

/// Hands a message for the other nodes to the link.
fn share(link: &Link, shared: Shared) {
    match shared {
        Shared::Room {
            room,
            from,
            text,
            ts,
        } => link.publish(Kind::Room, &room, &from, &text, ts),
        Shared::Direct { to, from, text, ts } => link.publish(Kind::Direct, &to, &from, &text, ts),
    }
}

/// Appends `event` as `mode` writes it, with the request `id` in JSON.
fn encode(mode: Mode, event: &Event, id: Option<&json::RawValue>, buf: &mut Vec<u8>) {
    match mode {
        Mode::Text => encode_text(event, buf),
        Mode::Json => json::encode(event, id, buf),
        Mode::WebSocket => {
            // The JSON line, then its frame header moved in front of it:
            // one copy of the object per encoding, however many read it.
            let start = buf.len();
            json::encode(event, id, buf);
            if buf.len() == start {
                return;
            }
            buf.pop(); // its LF
            let mut header = Vec::with_capacity(10);
            header.push(0x81); // FIN, text
            ws::header_len(buf.len() - start, &mut header);
            buf.splice(start..start, header);
        }
    }
}

/// Queues a WebSocket close frame with `code` for `c`, once.
fn close_websocket(c: &mut Conn, log: &[u8], code: u16) {
    if let Some(ws) = c.stack.ws.as_deref_mut()
        && !ws.close_sent
    {
        ws.close_sent = true;
        let mut frame = Vec::with_capacity(4);
        ws::close(code, &mut frame);
        c.out.push(log, &frame);
    }
}

/// What a failed read or write says about the peer.
fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseReason::Reset,
        _ => CloseReason::NetworkError,
    }
}

/// Accept errors that mean "out of a resource", after which retrying at
/// once would only spin.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Gives a worklist taken for iteration its allocation back, unless new
/// work arrived meanwhile.
fn reuse(list: &mut Vec<usize>, taken: &mut Vec<usize>) {
    if list.is_empty() {
        taken.clear();
        std::mem::swap(list, taken);
    }
}

/// What the spare descriptor could do for a client in the backlog.
enum Spare {
    Refused,
    BacklogEmpty,
    Unavailable,
}

/// The chat server.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Conns,
    chat: Chat,
    out: Outbox,
    cfg: Config,
    /// Where reads land before framing; shared by all connections.
    scratch: Box<[u8]>,
    /// The listener may have connections waiting.
    accept_pending: bool,
    accept_paused_until: Option<Instant>,
    /// Held so that one descriptor can be freed to refuse a client politely
    /// when the process has run out.
    spare_fd: Option<File>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    shutdown_deadline: Option<Instant>,
    /// Why the server stops on its own, if it does: `run` returns it.
    failure: Option<String>,
    next_serial: u64,
    backend: Backend,
    /// The certificate new TLS connections get.
    tls: Option<TlsConfig>,
    /// A replacement certificate from `TlsHandle`, taken when woken.
    tls_slot: Arc<Mutex<Option<TlsConfig>>>,
    /// Handshake time this turn has used (`HANDSHAKE_TIME_PER_TURN`).
    handshake_time: Duration,
    /// Counters for `/metrics`.
    metrics: metrics::Metrics,
    /// The heartbeat and scrape requests, once `metrics_handle` was taken.
    exposed: Option<metrics::Exposed>,
    /// New settings from `ConfigHandle`, taken when woken.
    config_slot: ConfigSlot,
    /// Connections held per address, for `--max-per-ip`.
    per_ip: HashMap<IpAddr, u32>,
    /// Open WebSocket connections, and when they are next pinged.
    websockets: usize,
    next_ws_ping: Instant,
    /// The link to the other nodes, under `--cluster`.
    link: Option<Link>,
}

impl Server {
    /// A server on an already-bound listener (so tests can bind port 0).
    /// Opens the database first: one that cannot be used is an error here.
    pub fn new(listener: std::net::TcpListener, cfg: Config) -> io::Result<Server> {
        let mut store = Store::open(&cfg.db, cfg.chat.history_keep)
            .map_err(|e| io::Error::other(format!("cannot use database {}: {e}", cfg.db)))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // Joined first: the stream's lineage decides what of the local
        // history is still good.
        let mut link = None;
        let mut lineage = None;
        if let Some(settings) = &cfg.cluster {
            let (l, started) = Link::start(settings.clone(), waker.clone())?;
            let cursor = store
                .cluster_cursor(&started.epoch)
                .map_err(|e| io::Error::other(format!("cannot use database {}: {e}", cfg.db)))?;
            link = Some((l, cursor, settings.node.clone()));
            lineage = Some(started);
        }
        let mut chat = Chat::new(cfg.chat.clone());
        let wall = Timestamp::now();
        chat.set_clock(wall, Instant::now());
        let loaded = store
            .account_names()
            .and_then(|names| Ok((names, store.tails(cfg.chat.history_cap())?)))
            .and_then(|(names, tails)| Ok((names, tails, store.moderation(wall)?)))
            .and_then(|loaded| Ok((loaded, store.token_generations()?, store.identity()?)))
            .map_err(|e| io::Error::other(format!("cannot read database {}: {e}", cfg.db)))?;
        let ((names, tails, moderation), generations, (epoch, secret)) = loaded;
        info!(
            "database {}: {} accounts, history of {} rooms",
            cfg.db,
            names.len(),
            tails.len()
        );
        chat.set_accounts(names, &mut Outbox::default());
        chat.set_token_generations(generations);
        match &lineage {
            Some(cluster) => chat.set_identity(&cluster.epoch, &cluster.secret),
            None => chat.set_identity(&epoch, &secret),
        }
        chat.load_moderation(moderation);
        for (room, messages, older) in tails {
            chat.load_history(&room, messages, older);
        }
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let link = link.map(|(mut l, cursor, node)| {
            chat.join_cluster(&node);
            l.begin(cursor);
            l
        });
        let accounts = link.as_ref().map(Link::accounts);
        let backend = Backend::start(
            store,
            cfg.hash_cost,
            cfg.auth_queue,
            waker.clone(),
            accounts,
        )?;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            conns: Conns {
                slab: Slab::new(),
                ready: Vec::new(),
                dirty: Vec::new(),
                dead: Vec::new(),
                held: Vec::new(),
                logs: [Vec::new(), Vec::new(), Vec::new()],
                reply: Vec::new(),
                sealed: Vec::new(),
                timers: BinaryHeap::new(),
                max_outbuf: cfg.max_outbuf,
                now: Instant::now(),
                skipped: 0,
            },
            chat,
            out: Outbox::default(),
            cfg: cfg.clone(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            accept_pending: true,
            accept_paused_until: None,
            spare_fd: Some(File::open("/dev/null")?),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            shutdown_deadline: None,
            failure: None,
            next_serial: 0,
            backend,
            tls: cfg.tls.clone(),
            tls_slot: Arc::new(Mutex::new(None)),
            handshake_time: Duration::ZERO,
            metrics: metrics::Metrics::default(),
            exposed: None,
            per_ip: HashMap::new(),
            websockets: 0,
            next_ws_ping: Instant::now() + WS_PING_EVERY,
            link,
            config_slot: Arc::new(Mutex::new(None)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// For replacing the certificate while running (SIGHUP).
    pub fn tls_handle(&self) -> TlsHandle {
        TlsHandle {
            slot: self.tls_slot.clone(),
            waker: self.waker.clone(),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs until shut down through a `ShutdownHandle`, then returns once
    /// every client was told and flushed (at most `CLOSE_FLUSH` later).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.conns.now = now;
            self.handshake_time = Duration::ZERO;
            if let Some(exposed) = &self.exposed {
                exposed.heartbeat.beat(now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_pending = true,
                    WAKER => {
                        self.take_new_certificate();
                        self.answer_scrapes();
                        self.take_new_config();
                        self.take_from_cluster();
                    }
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            if let Some(c) = self.conns.slab.get_mut(key) {
                                c.readable = true;
                                c.hup |= event.is_read_closed() || event.is_error();
                            }
                            self.conns.mark_ready(key);
                        }
                        if event.is_writable()
                            && self.conns.slab.get(key).is_some_and(|c| c.owed() > 0)
                        {
                            self.conns.mark_dirty(key);
                        }
                    }
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                self.begin_shutdown();
            }
            self.accept();
            self.fire_timers();
            if self.websockets > 0 && now >= self.next_ws_ping {
                self.ping_websockets();
            }
            self.chat.set_clock(Timestamp::now(), now);
            self.chat.tick(now, &mut self.out);
            self.dispatch();
            self.take_replies();
            self.release_held();
            self.serve_ready();
            self.finish_turn();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.slab.is_empty() {
                    self.backend.finish(STORE_FLUSH);
                    info!("shutdown complete");
                    return match self.failure.take() {
                        Some(why) => Err(io::Error::other(why)),
                        None => Ok(()),
                    };
                }
                if now >= deadline + CLOSE_FLUSH {
                    // Every connection had its own deadline by now; this is
                    // a last guard so shutdown always ends.
                    let keys: Vec<usize> = self.conns.slab.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.conns.kill(key, CloseReason::Shutdown);
                    }
                    self.finish_turn();
                }
            }
            self.metrics.turns.observe(now.elapsed());
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let timeout = self.work_timeout();
        if self.exposed.is_none() {
            return timeout;
        }
        Some(timeout.map_or(HEARTBEAT_EVERY, |t| t.min(HEARTBEAT_EVERY)))
    }

    fn work_timeout(&self) -> Option<Duration> {
        if !self.conns.held.is_empty() {
            return Some(BACKLOG_RECHECK);
        }
        if !self.conns.ready.is_empty()
            || (self.accept_pending && self.accept_paused_until.is_none())
            || self.stop.load(Ordering::SeqCst) && self.shutdown_deadline.is_none()
        {
            return Some(Duration::ZERO);
        }
        let next = [
            (self.websockets > 0).then_some(self.next_ws_ping),
            self.conns.timers.peek().map(|t| t.0.0),
            self.chat.next_deadline(),
            self.chat.next_answer(),
            self.accept_paused_until,
            self.shutdown_deadline.map(|d| d + CLOSE_FLUSH),
        ]
        .into_iter()
        .flatten()
        .min()?;
        // Round up: waking a little early would only poll again at once.
        Some(next.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    fn accept(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if self.conns.now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        if !self.accept_pending {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_pending = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_exhaustion(&e) => {
                    match self.refuse_with_spare_fd() {
                        Spare::Refused => continue,
                        Spare::BacklogEmpty => {
                            self.accept_pending = false;
                            return;
                        }
                        Spare::Unavailable => {}
                    }
                    warn!(
                        "accept failed: {e}; pausing accepts for {} ms ({} connections open)",
                        ACCEPT_BACKOFF.as_millis(),
                        self.conns.slab.len()
                    );
                    self.accept_paused_until = Some(self.conns.now + ACCEPT_BACKOFF);
                    return;
                }
                // A connection that died in the backlog; try the next one.
                Err(e) => debug!("accept failed: {e}"),
            }
        }
    }

    /// Out of descriptors, a client left in the backlog would wait with no
    /// answer. Closing the spare descriptor makes room to accept it, tell it
    /// the server is full, and close it; then the spare is taken back.
    /// (Linux reports EMFILE before it looks at the backlog, so the backlog
    /// may also turn out to be empty.)
    fn refuse_with_spare_fd(&mut self) -> Spare {
        let (Some(listener), Some(spare)) = (&self.listener, self.spare_fd.take()) else {
            return Spare::Unavailable;
        };
        drop(spare);
        let outcome = match listener.accept() {
            Ok((mut socket, peer)) => {
                let _ = socket.write(b"! server full\n");
                warn!("refused {peer}: out of file descriptors");
                Spare::Refused
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Spare::BacklogEmpty,
            Err(_) => Spare::Unavailable,
        };
        self.spare_fd = File::open("/dev/null").ok();
        outcome
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        if self.conns.slab.len() >= self.cfg.max_clients {
            // Best effort: the socket is new, so the line fits its buffer.
            let _ = socket.write(b"! server full\n");
            info!(
                "refused {peer}: server full (--max-clients {})",
                self.cfg.max_clients
            );
            return;
        }
        let ip = peer.ip().to_canonical();
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        if self.cfg.max_per_ip > 0 && held as usize >= self.cfg.max_per_ip {
            let _ = socket.write(TOO_MANY_LINE);
            self.metrics.closed(CloseReason::TooManyFromAddress, 0, 0);
            info!(
                "refused {peer}: {held} connections from that address (--max-per-ip {})",
                self.cfg.max_per_ip
            );
            return;
        }
        if let Err(e) = configure_socket(&socket) {
            debug!("{peer}: could not set socket options: {e}");
        }
        let entry = self.conns.slab.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), interest)
        {
            warn!("{peer}: could not register the connection: {e}");
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let budget = Budget::new(self.cfg.rate, self.conns.now);
        entry.insert(Conn::new(socket, peer, serial, budget));
        *self.per_ip.entry(ip).or_default() += 1;
        info!("conn #{serial} from {peer}");
        // The chat greets it once its first bytes show a line protocol, or
        // after a short silence (a person at nc); a TLS or HTTP client that
        // speaks first never sees a stray line. Data that came with the
        // connection is reported by the first poll.
        self.conns.set_timer(key, self.conns.now + WELCOME_DELAY);
    }

    /// The connection speaks a line protocol: the chat greets it, unless
    /// it is plain and plain text is not allowed from where it comes.
    fn greet(&mut self, key: usize) {
        let Some(c) = self.conns.slab.get_mut(key) else {
            return;
        };
        if c.stack.tls.is_none()
            && self.cfg.require_tls
            && !self.cfg.allow_plain.iter().any(|n| n.contains(c.peer.ip()))
        {
            info!(
                "conn #{} {}: plain text refused (--require-tls)",
                c.serial, c.peer
            );
            c.greeted = true;
            c.out.push(&[], REQUIRE_TLS_LINE);
            self.conns.close(key, CloseReason::PlainRefused);
            return;
        }
        // The welcome or handshake timer has nothing left to do.
        c.timer = None;
        c.greeted = true;
        let (ip, now) = (c.peer.ip(), self.conns.now);
        self.chat.connect(ConnId(key), ip, now, &mut self.out);
        self.dispatch();
    }

    /// The welcome delay or the handshake deadline of a connection not yet
    /// greeted has come. The welcome timer fires `WELCOME_DELAY` after the
    /// accept; a handshake still running then gets the rest of the
    /// handshake timeout, and is closed if it is still running after it.
    fn greeting_due(&mut self, key: usize) {
        let timeout = self.cfg.chat.handshake_timeout;
        let c = &mut self.conns.slab[key];
        if c.stack.phase() == Phase::Fresh && c.in_ready {
            // Its first bytes came but wait to be read (the turn's
            // handshake time was spent): they decide, not the silence.
            let at = self.conns.now + WELCOME_DELAY;
            self.conns.set_timer(key, at);
            return;
        }
        if c.stack.silence() {
            return self.greet(key);
        }
        if c.handshake_deadline {
            info!(
                "conn #{} {}: TLS handshake not completed within {} s",
                c.serial,
                c.peer,
                timeout.as_secs()
            );
            self.conns.kill(key, CloseReason::TlsTimeout);
        } else {
            c.handshake_deadline = true;
            let at = self.conns.now + timeout.saturating_sub(WELCOME_DELAY);
            self.conns.set_timer(key, at);
        }
    }

    /// Takes a certificate handed over by `TlsHandle`.
    fn take_new_certificate(&mut self) {
        let new = self.tls_slot.try_lock().ok().and_then(|mut s| s.take());
        if let Some(cfg) = new {
            info!(
                "TLS: new connections get the certificate with SHA-256 {}",
                cfg.fingerprint()
            );
            self.tls = Some(cfg);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.conns.now;
        while let Some(&Reverse((at, key, serial))) = self.conns.timers.peek() {
            if at > now {
                break;
            }
            self.conns.timers.pop();
            // Every connection has a welcome timer at first: after a burst
            // of them the heap's size should follow what is pending.
            let timers = &mut self.conns.timers;
            if timers.capacity() > TIMERS_KEEP && timers.len() < timers.capacity() / 4 {
                timers.shrink_to((timers.len() * 2).max(TIMERS_KEEP));
            }
            let Some(c) = self.conns.slab.get_mut(key) else {
                continue;
            };
            if c.serial != serial || c.timer != Some(at) {
                continue;
            }
            c.timer = None;
            match c.state {
                State::Draining { .. } => {
                    debug!("conn #{}: close flush timed out", c.serial);
                    self.conns.kill(key, CloseReason::PeerClosed);
                }
                State::Open if c.paused => {
                    c.paused = false;
                    self.conns.mark_ready(key);
                }
                State::Open if c.stack.phase() != Phase::Lines => self.greeting_due(key),
                State::Open if !c.greeted && c.http.is_none() && c.mode.is_none() => {
                    // Its first line has not ended within the welcome
                    // delay: what may still become an HTTP request line
                    // gets the handshake timeout as a head; anything else
                    // is a person typing, and is greeted.
                    if web::may_be_request(c.stack.lines.pending()) {
                        c.http = Some(Box::default());
                        let timeout = self.cfg.chat.handshake_timeout;
                        let at = now + timeout.saturating_sub(WELCOME_DELAY);
                        self.conns.set_timer(key, at);
                    } else {
                        self.greet(key);
                    }
                }
                State::Open if c.http.is_some() => {
                    info!(
                        "conn #{} {}: HTTP request head not complete in time",
                        c.serial, c.peer
                    );
                    self.conns.kill(key, CloseReason::HandshakeTimeout);
                }
                _ => {}
            }
        }
    }

    /// Serves every connection on the ready list once. Those that still
    /// have input after their share go back on the list for the next turn.
    fn serve_ready(&mut self) {
        let mut batch = std::mem::take(&mut self.conns.ready);
        for &key in &batch {
            if let Some(c) = self.conns.slab.get_mut(key) {
                c.in_ready = false;
                self.serve(key);
            }
        }
        reuse(&mut self.conns.ready, &mut batch);
    }

    /// Handles buffered lines, then reads once and handles what came.
    fn serve(&mut self, key: usize) {
        let mut have_read = false;
        loop {
            if !self.handle_lines(key) {
                return;
            }
            let c = &mut self.conns.slab[key];
            match c.state {
                State::Open => {}
                State::Draining { .. } => return self.drain_input(key),
                State::Dead => return,
            }
            if c.eof || c.stack.peer_closed() {
                self.conns.close(key, CloseReason::PeerClosed);
                return;
            }
            if !c.readable {
                return;
            }
            if have_read {
                // Its share for this turn is used; the rest waits a turn.
                self.conns.mark_ready(key);
                return;
            }
            let handshake_due = c.stack.phase() == Phase::Fresh || c.stack.handshaking();
            if handshake_due && self.handshake_time >= HANDSHAKE_TIME_PER_TURN {
                // This turn's handshake work is done; it waits a turn.
                self.conns.mark_ready(key);
                return;
            }
            have_read = true;
            match c.socket.read(&mut self.scratch) {
                Ok(0) => {
                    c.readable = false;
                    c.eof = true;
                    // A WebSocket message without its final frame is not
                    // a request.
                    if !c.stack.is_websocket() {
                        c.stack.lines.finish();
                    }
                }
                Ok(n) => {
                    c.bytes_in += n as u64;
                    // A short read emptied the socket and epoll will report
                    // new data, so the read that would say WouldBlock is
                    // skipped; but not a close it has reported already.
                    if n < self.scratch.len() && !c.hup {
                        c.readable = false;
                    }
                    if !self.take_input(key, n) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => have_read = false,
                Err(e) => {
                    debug!("conn #{}: read failed: {e}", c.serial);
                    self.conns.kill(key, io_reason(&e));
                    return;
                }
            }
        }
    }

    /// Passes `n` bytes just read into `scratch` up the connection's stack.
    /// Returns false if the connection is closing because of them.
    fn take_input(&mut self, key: usize, n: usize) -> bool {
        let c = &mut self.conns.slab[key];
        let was_handshaking = c.stack.handshaking();
        let started = (c.stack.phase() == Phase::Fresh || was_handshaking).then(Instant::now);
        match c.stack.receive(&mut self.scratch[..n], self.tls.as_ref()) {
            Ok(arrival) => {
                if arrival.handshake
                    && let Some(started) = started
                {
                    self.handshake_time += started.elapsed();
                }
                if arrival.peer_closed {
                    // The end of its input, though not of its bytes: the
                    // socket is still read (and drained while closing)
                    // until the FIN, so unread bytes cannot turn our last
                    // output into a reset.
                    c.stack.lines.finish();
                }
                let handshake_done = was_handshaking && !c.stack.handshaking();
                if c.stack.tls_pending() > 0 {
                    self.conns.mark_dirty(key);
                }
                if handshake_done {
                    debug!("conn #{}: TLS handshake done", self.conns.slab[key].serial);
                    self.metrics.tls_handshakes += 1;
                }
                if !self.websocket_arrived(key, arrival.ws_closed.is_some()) {
                    return false;
                }
                if arrival.greet {
                    // Greeted at its first line (which may be an HTTP
                    // request instead), or after a silence.
                } else if handshake_done {
                    // Inside TLS the client gets the same short silence
                    // before a welcome as on a plain connection.
                    let at = self.conns.now + WELCOME_DELAY;
                    self.conns.set_timer(key, at);
                }
                true
            }
            Err(e) => {
                info!("conn #{} {}: {e}", c.serial, c.peer);
                if let StackError::WebSocket(v) = e {
                    self.websocket_failed(key, v.code);
                    return false;
                }
                if let StackError::NoCertificate = e {
                    c.out.push(&[], PLAIN_ALERT_HANDSHAKE_FAILURE);
                }
                self.conns.close(key, CloseReason::TlsFailed);
                false
            }
        }
    }

    /// Hands complete lines to the chat while the rate budget allows.
    /// Returns false when the connection must not be read now (paused,
    /// closing, gone).
    fn handle_lines(&mut self, key: usize) -> bool {
        let (rate, max_line, now) = (self.cfg.rate, self.cfg.max_line, self.conns.now);
        loop {
            // Its input waits while the chat waits for a job for it, so its
            // lines keep their order.
            let waiting = self.chat.is_waiting(ConnId(key));
            let Some(c) = self.conns.slab.get_mut(key) else {
                return false;
            };
            match c.state {
                // A closing connection's input is drained, not handled.
                State::Draining { .. } => return true,
                State::Dead => return false,
                State::Open if c.paused || waiting => return false,
                State::Open => {}
            }
            if c.stack.lines.is_empty() {
                return true;
            }
            let cluster_behind = self.link.as_ref().is_some_and(|l| l.waiting() > HOLD);
            if self.backend.behind(self.chat.record_bytes()) || cluster_behind {
                // Storage is far behind: nobody is read until it catches
                // up, so what waits to be stored stays bounded. Noted once
                // however often it is served meanwhile.
                if !c.in_held {
                    c.in_held = true;
                    self.conns.held.push(key);
                }
                return false;
            }
            if rate > 0 && !c.budget.has_token(rate, now) {
                c.paused = true;
                let at = now + c.budget.wait(rate);
                self.conns.set_timer(key, at);
                return false;
            }
            if c.http.is_some() {
                if !self.read_http_head(key) {
                    return false;
                }
                if self.conns.slab[key].http.is_some() {
                    // The head is not complete yet.
                    return true;
                }
                // Upgraded: frames that came with the head are lines now.
                continue;
            }
            if !c.greeted && c.mode.is_none() {
                // The first line decides: an HTTP request, or a line
                // protocol the chat greets before handling it.
                match c.stack.lines.peek_line() {
                    Some(line) if web::is_request_line(line) => {
                        c.http = Some(Box::default());
                        let at = now + self.cfg.chat.handshake_timeout;
                        self.conns.set_timer(key, at);
                        continue;
                    }
                    Some(_) => {
                        self.greet(key);
                        continue;
                    }
                    None => {}
                }
            }
            let queued_before = c.out.len();
            let conn = ConnId(key);
            let mut reply_id = None;
            match c.stack.lines.next_line(max_line) {
                None => return true,
                Some(Line::TooLong) => {
                    let e = ProtoError::LineTooLong { max: max_line };
                    self.out.send(conn, Event::Error(e));
                }
                Some(Line::Full(bytes)) => match std::str::from_utf8(bytes) {
                    Err(_) if c.mode == Some(Mode::WebSocket) => {
                        // RFC 6455: a text message that is not UTF-8 ends
                        // the connection, with 1007.
                        self.websocket_failed(key, ws::CLOSE_INVALID_DATA);
                        return false;
                    }
                    Err(_) => self.out.send(conn, Event::Error(ProtoError::InvalidUtf8)),
                    // Blank lines choose no mode. In text mode the chat
                    // decides, since a password is taken as sent.
                    Ok(text) if c.mode != Some(Mode::Text) && text.trim().is_empty() => {}
                    Ok(text) => match c.mode.unwrap_or_else(|| {
                        // Owed text-log bytes must not be read from
                        // another mode's log later.
                        c.out.settle(&self.conns.logs[Mode::Text as usize]);
                        *c.mode.insert(Mode::of_first_line(text))
                    }) {
                        Mode::Text => self.chat.handle_line(conn, text, &mut self.out),
                        Mode::Json | Mode::WebSocket => {
                            match json::decode(text, self.chat.is_named(conn)) {
                                Ok(request) => {
                                    self.chat.handle(conn, request.command(), &mut self.out);
                                    reply_id = request.id;
                                }
                                Err(rejected) => {
                                    self.out.send(conn, Event::Error(rejected.error));
                                    reply_id = rejected.id;
                                }
                            }
                        }
                    },
                },
            }
            // A job refused here (too many waiting) is answered now, with
            // the id; only a job handed out leaves the connection waiting.
            self.dispatch_reply(conn, reply_id.as_deref());
            if self.chat.is_waiting(conn)
                && let Some(c) = self.conns.slab.get_mut(key)
            {
                // The answer comes later; it carries this request's id.
                c.reply_id = reply_id.take();
            }
            if rate > 0
                && let Some(c) = self.conns.slab.get_mut(key)
            {
                let reply = c.out.len().saturating_sub(queued_before);
                c.budget.spend(1 + (reply / REPLY_BYTES_PER_TOKEN) as u32);
            }
        }
    }

    /// Reads an HTTP request head line by line (the line framing bounds
    /// each line, `web::MAX_HEAD` the whole) and answers it once complete.
    /// Returns false when the connection is not to be read further.
    fn read_http_head(&mut self, key: usize) -> bool {
        let max_line = self.cfg.max_line.min(web::MAX_HEAD);
        loop {
            let c = &mut self.conns.slab[key];
            let head = c.http.as_deref_mut().expect("reading a head");
            let complete = match c.stack.lines.next_line(max_line) {
                None => return true,
                Some(Line::TooLong) => None,
                Some(Line::Full(line)) if head.len() + line.len() + 2 > web::MAX_HEAD => None,
                Some(Line::Full(line)) => {
                    head.extend_from_slice(line);
                    head.extend_from_slice(b"\r\n");
                    Some(line.is_empty())
                }
            };
            match complete {
                Some(false) => continue,
                Some(true) => return self.answer_http(key),
                None => {
                    let too_big = web::too_large();
                    let c = &mut self.conns.slab[key];
                    info!("conn #{} {}: HTTP 431", c.serial, c.peer);
                    c.http = None;
                    c.out.push(&[], &too_big.bytes);
                    self.conns.close(key, CloseReason::Http);
                    return false;
                }
            }
        }
    }

    /// Answers a complete request head: a file, `/healthz`, an error, or
    /// the switch to a WebSocket, which the chat then greets.
    fn answer_http(&mut self, key: usize) -> bool {
        let c = &mut self.conns.slab[key];
        let head = c.http.take().expect("a complete head");
        let tls = c.stack.tls.is_some();
        if !tls
            && self.cfg.require_tls
            && !self.cfg.allow_plain.iter().any(|n| n.contains(c.peer.ip()))
        {
            info!("conn #{} {}: HTTP 426 (--require-tls)", c.serial, c.peer);
            c.out.push(&[], web::REQUIRE_TLS);
            self.conns.close(key, CloseReason::PlainRefused);
            return false;
        }
        let site = Site {
            tls,
            origins: &self.cfg.web_origins,
            unwell: if self.shutdown_deadline.is_some() {
                Some("shutting down".to_string())
            } else {
                self.link.as_ref().and_then(|l| l.state.health().err())
            },
        };
        let answer = web::answer(&head, &site);
        let request = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
        info!(
            "conn #{} {}: {} {}",
            c.serial,
            c.peer,
            String::from_utf8_lossy(request),
            answer.status
        );
        c.out.push(&[], &answer.bytes);
        c.timer = None;
        self.conns.mark_dirty(key);
        if answer.after == After::Close {
            self.conns.close(key, CloseReason::Http);
            return false;
        }
        let c = &mut self.conns.slab[key];
        c.mode = Some(Mode::WebSocket);
        self.websockets += 1;
        match c.stack.start_websocket() {
            Ok(arrival) => {
                if !self.websocket_arrived(key, arrival.ws_closed.is_some()) {
                    return false;
                }
            }
            Err(e) => {
                info!("conn #{} {}: {e}", c.serial, c.peer);
                let code = match e {
                    StackError::WebSocket(v) => v.code,
                    _ => ws::CLOSE_PROTOCOL,
                };
                self.websocket_failed(key, code);
                return false;
            }
        }
        self.greet(key);
        true
    }

    /// What a WebSocket's input asks of the server: the pongs it owes,
    /// queued in order and counted toward `--max-outbuf` like any output
    /// (a client that pings and never reads is dropped), and the client's
    /// close taken as a FIN: what came before it is handled first, then
    /// the close is answered in kind. Returns false if it was dropped.
    fn websocket_arrived(&mut self, key: usize, closed: bool) -> bool {
        let c = &mut self.conns.slab[key];
        if let Some(ws) = c.stack.ws.as_deref_mut()
            && !ws.control.is_empty()
        {
            let control = std::mem::take(&mut ws.control);
            c.out
                .push(&self.conns.logs[Mode::WebSocket as usize], &control);
            self.conns.mark_dirty(key);
            if self.conns.over_limit(key, 0) {
                return false;
            }
        }
        if closed {
            self.conns.slab[key].eof = true;
        }
        true
    }

    /// A WebSocket broke the protocol: its close code, then the close.
    fn websocket_failed(&mut self, key: usize, code: u16) {
        let c = &mut self.conns.slab[key];
        close_websocket(c, &self.conns.logs[Mode::WebSocket as usize], code);
        self.conns.close(key, CloseReason::WebSocketError);
    }

    /// Pings every WebSocket (an idle one is found out when the ping
    /// cannot be delivered; a live client answers with a pong).
    fn ping_websockets(&mut self) {
        self.next_ws_ping = self.conns.now + WS_PING_EVERY;
        let mut frame = Vec::with_capacity(2);
        ws::ping(&mut frame);
        let log = &self.conns.logs[Mode::WebSocket as usize];
        for (key, c) in self.conns.slab.iter_mut() {
            if c.state == State::Open && c.stack.ws.as_ref().is_some_and(|w| !w.close_sent) {
                c.out.push(log, &frame);
                if !c.in_dirty {
                    c.in_dirty = true;
                    self.conns.dirty.push(key);
                }
            }
        }
    }

    /// Hands the helper threads' answers to the chat, and wrong-password
    /// answers whose delay is over.
    fn take_replies(&mut self) {
        while let Some(reply) = self.backend.reply() {
            match reply {
                Reply::Job(ticket, outcome) => {
                    self.chat.job_done(ticket, outcome, &mut self.out);
                    self.answered(ticket.conn);
                }
                Reply::AccountAdded(name, generation) => self.chat.account_added(name, generation),
                Reply::Accounts(names, generations) => {
                    info!("accounts changed in the database: {} now", names.len());
                    self.chat.set_accounts(names, &mut self.out);
                    self.chat.set_token_generations(generations);
                    // Holders whose role changed are told.
                    self.dispatch();
                }
            }
        }
        while let Some(conn) = self.chat.due_answer(self.conns.now, &mut self.out) {
            self.answered(conn);
        }
    }

    /// Hands what came from the other nodes to the chat: messages in the
    /// cluster's order (the cursor follows them to the database),
    /// presence changes, answers to claims.
    fn take_from_cluster(&mut self) {
        let Some(link) = &self.link else { return };
        let batch = link.take();
        if batch.is_empty() {
            return;
        }
        let mut accounts = Vec::new();
        for item in batch {
            match item {
                FromLink::Said { seq, kind, said } => {
                    let ts = Timestamp(said.ts);
                    match kind {
                        Kind::Room => self.chat.remote_room(
                            seq,
                            &said.to,
                            &said.from,
                            &said.text,
                            ts,
                            &mut self.out,
                        ),
                        Kind::Direct => self.chat.remote_direct(
                            &said.to,
                            &said.from,
                            &said.text,
                            ts,
                            &mut self.out,
                        ),
                    }
                    // With the messages up to it, whenever they are
                    // stored (a claim's answer below may store them).
                    self.backend.set_cursor(seq);
                }
                FromLink::Account { key, record } => accounts.push((key, record)),
                FromLink::Lost(why) => {
                    // Stopped with an error: restarted (by systemd, say),
                    // the node joins the stream as it is now.
                    error!("cluster: {why}; stopping");
                    self.failure = Some(format!("cluster: {why}"));
                    self.begin_shutdown();
                }
                FromLink::Moderation { node, change } => {
                    let mine = self.chat.node().is_some_and(|n| *n == *node);
                    // This database's copy follows the cluster's order,
                    // this node's own entries included.
                    self.backend.change(change.clone());
                    self.chat.remote_moderation(change, mine, &mut self.out);
                }
                FromLink::Presence { key, presence } => {
                    self.chat.remote_presence(&key, presence, &mut self.out)
                }
                FromLink::Claimed {
                    ticket,
                    key,
                    granted,
                } => {
                    let outcome = match granted {
                        Some(ok) => Outcome::Claimed {
                            key: key.into(),
                            ok,
                        },
                        None => Outcome::Busy,
                    };
                    // What was said before goes out before the answer.
                    self.dispatch();
                    self.chat.job_done(ticket, outcome, &mut self.out);
                    self.answered(ticket.conn);
                }
            }
        }
        self.backend.mirror(accounts);
        self.dispatch();
    }

    /// Queues what the chat said after a job for `conn`; if it no longer
    /// waits, the answer carries its request's id and its input is read
    /// again.
    fn answered(&mut self, conn: ConnId) {
        // What goes to the connection now answers its waiting request
        // (a job handed on here may still be refused as busy).
        let id = self.conns.slab.get(conn.0).and_then(|c| c.reply_id.clone());
        self.dispatch_reply(conn, id.as_deref());
        if !self.chat.is_waiting(conn)
            && let Some(c) = self.conns.slab.get_mut(conn.0)
        {
            c.reply_id = None;
            self.conns.mark_ready(conn.0);
        }
    }

    /// Whether too many published messages wait for NATS.
    fn cluster_behind(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.waiting() > HOLD)
    }

    /// Reads from held connections again once storage has caught up.
    fn release_held(&mut self) {
        if self.conns.held.is_empty()
            || self.backend.behind(self.chat.record_bytes())
            || self.cluster_behind()
        {
            return;
        }
        for key in std::mem::take(&mut self.conns.held) {
            if let Some(c) = self.conns.slab.get_mut(key) {
                c.in_held = false;
            }
            self.conns.mark_ready(key);
        }
    }

    /// A closing connection's input is read and dropped until its FIN.
    fn drain_input(&mut self, key: usize) {
        let c = &mut self.conns.slab[key];
        if !c.readable || c.eof {
            return;
        }
        match c.socket.read(&mut self.scratch) {
            Ok(0) => {
                c.eof = true;
                if c.state == (State::Draining { fin_sent: true }) {
                    self.conns.kill(key, CloseReason::PeerClosed);
                }
            }
            Ok(n) => {
                c.bytes_in += n as u64;
                if n == self.scratch.len() || c.hup {
                    self.conns.mark_ready(key);
                } else {
                    c.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.conns.mark_ready(key),
            Err(e) => self.conns.kill(key, io_reason(&e)),
        }
    }

    /// Turns the chat's outputs into queued bytes: an event for one
    /// connection goes to its own buffer; a broadcast is encoded at most
    /// once per mode into the turn's log, and each recipient notes its
    /// range.
    fn dispatch(&mut self) {
        self.dispatch_reply(ConnId(usize::MAX), None);
    }

    /// As `dispatch`, for the outputs of one request from `asker`: what
    /// goes to the asker alone answers the request and carries its `id`.
    /// A job that cannot be handed out is answered busy at once.
    fn dispatch_reply(&mut self, asker: ConnId, id: Option<&json::RawValue>) {
        let mut refused: Vec<Ticket> = Vec::new();
        loop {
            let Server {
                out,
                conns,
                chat,
                backend,
                metrics,
                link,
                ..
            } = self;
            out.drain(|o| match o {
                Output::Send { event, to } => {
                    let skipped = conns.skipped;
                    if let [one] = to {
                        conns.queue(one.0, event, id.filter(|_| *one == asker));
                    } else {
                        let mut ranges = [None, None, None];
                        for conn in to {
                            conns.queue_shared(conn.0, event, &mut ranges);
                        }
                    }
                    if let Event::Message { .. } | Event::Direct { .. } = event {
                        metrics.deliveries += to.len() as u64 - (conns.skipped - skipped);
                    }
                }
                Output::Close { conn, reason } => conns.close(conn.0, reason),
                Output::Store(change) => {
                    if let Some(link) = link {
                        link.share(&change);
                    }
                    // After the messages said before it, as with jobs.
                    let bytes = chat.record_bytes();
                    backend.record(chat.take_records(), bytes);
                    backend.change(change);
                }
                Output::Share(shared) => {
                    if let Some(link) = link {
                        share(link, shared);
                    }
                }
                Output::Job(Job::Claim {
                    ticket,
                    name,
                    room,
                    takeover,
                }) => match (link.as_ref(), chat.node()) {
                    // Without NATS no name can be claimed: refused at once
                    // rather than left waiting for the link.
                    (Some(link), Some(node)) if link.is_up() => {
                        let presence = Presence {
                            name: name.clone(),
                            node,
                            room,
                            status: Status::Online,
                            note: None,
                        };
                        link.claim(ticket, &name.to_ascii_lowercase(), &presence, takeover);
                    }
                    _ => refused.push(ticket),
                },
                Output::Job(job) => {
                    // Messages recorded before the job are stored before
                    // it runs: a history query sees them.
                    let bytes = chat.record_bytes();
                    backend.record(chat.take_records(), bytes);
                    let ticket = job.ticket();
                    if !backend.submit(job) {
                        refused.push(ticket);
                    }
                }
            });
            if refused.is_empty() {
                return;
            }
            for ticket in refused.drain(..) {
                self.chat.job_done(ticket, Outcome::Busy, &mut self.out);
            }
        }
    }

    /// Removes dead connections (telling their rooms) and flushes every
    /// connection with output, until neither leaves work behind.
    fn finish_turn(&mut self) {
        if let Some(link) = &self.link {
            for (key, presence) in self.chat.take_presence() {
                link.present(&key, presence.as_ref());
            }
        }
        let bytes = self.chat.record_bytes();
        self.backend.record(self.chat.take_records(), bytes);
        while !self.conns.dead.is_empty() || !self.conns.dirty.is_empty() {
            while let Some(key) = self.conns.dead.pop() {
                self.reap(key);
            }
            let mut dirty = std::mem::take(&mut self.conns.dirty);
            for &key in &dirty {
                self.conns.flush(key);
            }
            reuse(&mut self.conns.dirty, &mut dirty);
        }
        // Every range of the logs was written or settled by the flushes.
        for log in &mut self.conns.logs {
            log.clear();
            log.shrink_to(LOG_KEEP);
        }
        self.conns.sealed.clear();
        self.conns.sealed.shrink_to(LOG_KEEP);
    }

    /// The one place a connection ends: its user leaves the chat and one
    /// log line says who, why, and how much went each way.
    fn reap(&mut self, key: usize) {
        let mut c = self.conns.slab.remove(key);
        let _ = self.poll.registry().deregister(&mut c.socket);
        if c.stack.is_websocket() {
            self.websockets -= 1;
        }
        let ip = c.peer.ip().to_canonical();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        let reason = c.reason.unwrap_or(CloseReason::PeerClosed);
        self.metrics.closed(reason, c.bytes_in, c.bytes_out);
        let name = self.chat.disconnect(ConnId(key), reason, &mut self.out);
        self.dispatch();
        let name = name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        info!(
            "conn #{}{name} {} closed: {reason}; {} bytes in, {} out",
            c.serial, c.peer, c.bytes_in, c.bytes_out
        );
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down: telling {} connections, flushing for up to {} s",
            self.conns.slab.len(),
            CLOSE_FLUSH.as_secs()
        );
        self.shutdown_deadline = Some(self.conns.now + CLOSE_FLUSH);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        // No line is handled from here on: what the rooms saw is recorded
        // while the clients are told and flushed.
        let bytes = self.chat.record_bytes();
        self.backend.record(self.chat.take_records(), bytes);
        self.backend.stop();
        self.chat.shutdown(&mut self.out);
        self.dispatch();
        let keys: Vec<usize> = self.conns.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.conns.close(key, CloseReason::Shutdown);
        }
    }

    /// For new settings while running (SIGHUP).
    pub fn config_handle(&self) -> ConfigHandle {
        ConfigHandle {
            slot: self.config_slot.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Takes settings handed over by `ConfigHandle`, then logs what changed.
    fn take_new_config(&mut self) {
        let new = self.config_slot.try_lock().ok().and_then(|mut s| s.take());
        if let Some((cfg, lines)) = new {
            self.set_limits(&cfg);
            for line in lines {
                info!("{line}");
            }
        }
    }

    /// Takes from `new` what can change while running: line, client,
    /// rate and output limits, the password-check queue, the plain-text
    /// rules, and the chat's rules (see `Chat::set_config`). The database,
    /// hashing cost, certificate (see `TlsHandle`) and history kept are
    /// left as they are. Connections waiting out the old rate are read
    /// again at once, under the new one.
    pub fn set_limits(&mut self, new: &Config) {
        let rate_changed = new.rate != self.cfg.rate;
        self.cfg.max_line = new.max_line;
        self.cfg.max_clients = new.max_clients;
        self.cfg.max_per_ip = new.max_per_ip;
        self.cfg.rate = new.rate;
        self.cfg.max_outbuf = new.max_outbuf;
        self.conns.max_outbuf = new.max_outbuf;
        self.cfg.auth_queue = new.auth_queue;
        self.backend.set_max_jobs(new.auth_queue);
        // Requiring TLS with no certificate in force would turn every
        // client away (a reload whose certificate failed to load).
        if new.require_tls && self.tls.is_none() {
            warn!("config: require-tls stays off: no TLS certificate is in force");
        }
        self.cfg.require_tls = new.require_tls && self.tls.is_some();
        self.cfg.allow_plain = new.allow_plain.clone();
        self.cfg.web_origins = new.web_origins.clone();
        self.cfg.chat = ChatConfig {
            history_keep: self.cfg.chat.history_keep,
            idle_rooms: self.cfg.chat.idle_rooms,
            ..new.chat.clone()
        };
        self.chat.set_config(self.cfg.chat.clone());
        if rate_changed {
            let paused: Vec<usize> = (self.conns.slab.iter())
                .filter(|(_, c)| c.paused && c.state == State::Open)
                .map(|(k, _)| k)
                .collect();
            for key in paused {
                let c = &mut self.conns.slab[key];
                c.paused = false;
                c.timer = None;
                self.conns.mark_ready(key);
            }
        }
    }

    /// Named users present; for tests and stats.
    pub fn user_count(&self) -> usize {
        self.chat.user_count()
    }
}

/// File descriptors kept free of clients: the listener, epoll, the waker,
/// stdio and the log.
pub const RESERVED_FDS: u64 = 16;

/// Raises the soft open-files limit to the hard one, since each client
/// holds a descriptor. Returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}
