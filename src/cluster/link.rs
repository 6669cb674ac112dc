//! The cluster link: a helper thread with a small runtime of its own that
//! talks to NATS, so the loop never waits on the network. The loop hands
//! it what to publish and what to claim through channels; it hands back
//! batches (stream messages in the stream's order, presence changes,
//! claim answers) through a shared inbox, waking the loop with its one
//! `mio::Waker` when the inbox was empty.
//!
//! - Publishing: messages go out in order with a `Nats-Msg-Id`, many
//!   awaiting their acknowledgement at once. When the link fails, every
//!   message not acknowledged is sent again, in order, with the same id:
//!   the stream stores each once. `waiting` counts messages not yet
//!   acknowledged, which the loop bounds.
//! - Consuming: an ordered consumer from the node's cursor on: every
//!   message, this node's own included, comes back in the stream's order.
//! - Names: a claim is a `create` in the names bucket; an account whose
//!   password was right takes the entry over; an entry of a node that
//!   stopped beating is taken with a compare-and-set on its revision.
//! - Nodes beat every second; a node silent for `NODE_TIMEOUT` is dead:
//!   each survivor deletes its names (each delete conditional on the
//!   revision the dead node wrote, so a user who came back elsewhere keeps
//!   theirs).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use log::{info, warn};
use mio::Waker;
use tokio::sync::mpsc;

use super::{AccountRecord, Kind, Said, Settings, moderation};
use crate::chat::moderation::Change;
use crate::chat::{Presence, Ticket};
use crate::wire::proto::Timestamp;

/// A node silent this long is taken for dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Published messages not yet acknowledged past which the loop stops
/// reading its clients (as when storage falls behind) until NATS takes
/// them.
pub const HOLD: usize = 10_000;
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Publishes awaiting their acknowledgement at once.
const WINDOW: usize = 512;
/// Stream positions read again at start, before this node's cursor, to
/// learn where each origin's numbering stands.
const PRIME: u64 = 10_000;
/// How long setting up the link may take at start.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a name claim may take before its user hears `server busy`.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// What the link hands the loop.
#[derive(Debug)]
pub enum FromLink {
    /// A message of the stream, numbered `seq`.
    Said { seq: u64, kind: Kind, said: Said },
    /// The presence entry of `key` changed (`None`: given up).
    Presence {
        key: String,
        presence: Option<Presence>,
    },
    /// An account changed in the cluster (`None`: deleted).
    Account {
        key: String,
        record: Option<AccountRecord>,
    },
    /// The cluster's stream is gone or was made again (NATS lost its
    /// data): this node's history belongs to a lineage that has ended.
    Lost(String),
    /// A moderation entry changed: the node that changed it, and how.
    Moderation { node: String, change: Change },
    /// A claim's answer: `None` if the link could not ask.
    Claimed {
        ticket: Ticket,
        key: String,
        granted: Option<bool>,
    },
}

/// What the link knows at start: the history's lineage, the token secret
/// every node signs with, and where this node's history ends.
pub struct Started {
    pub epoch: String,
    pub secret: Vec<u8>,
}

/// The link's state, shared with the loop and `/healthz`.
#[derive(Default)]
pub struct LinkState {
    pub up: AtomicBool,
    /// Published messages not acknowledged yet.
    pub waiting: AtomicUsize,
    /// Messages the client reported dropped (slow consumer).
    pub dropped: AtomicUsize,
}

enum Op {
    Claim {
        ticket: Ticket,
        key: String,
        value: Bytes,
        takeover: bool,
        /// When the loop asked: a claim that waited past `CLAIM_TIMEOUT`
        /// (behind presence changes during an outage) is answered busy.
        asked: Instant,
    },
    Present {
        key: String,
        value: Option<Bytes>,
    },
    Account {
        change: AccountChange,
        reply: std::sync::mpsc::Sender<Result<bool, String>>,
        /// Past it the storage thread has given up: not done at all.
        deadline: Instant,
    },
    /// Shared moderation, sent until NATS takes it.
    Share(Sharing),
}

/// Moderation for the other nodes, as the link writes it.
#[derive(Debug)]
enum Sharing {
    /// A mute, ban or room settings entry of the moderation bucket.
    Entry { key: String, value: Bytes },
    /// An account's role or token generation.
    Account { name: String, edit: Edit },
    /// An audit entry for the audit stream.
    Audit(Bytes),
}

/// A change to the cluster's accounts, asked by the storage thread.
#[derive(Debug)]
pub enum AccountChange {
    /// Register: false if the name is registered already.
    Create(AccountRecord),
    /// A new password hash, ending the account's sessions: false if there
    /// is no such account.
    SetHash { name: String, hash: String },
}

/// One edit of an account record.
#[derive(Clone, Debug)]
pub enum Edit {
    /// A new password hash; the account's sessions end.
    Hash(String),
    Role(String),
    /// The account's sessions end: its token generation moves on (from
    /// the cluster's value, not a node's copy, which may be behind).
    EndSessions,
}

impl Edit {
    fn apply(&self, record: &mut AccountRecord) {
        match self {
            Edit::Hash(hash) => {
                record.hash = hash.clone();
                record.tokens = record.tokens.wrapping_add(1);
            }
            Edit::Role(role) => record.role = role.clone(),
            Edit::EndSessions => record.tokens = record.tokens.wrapping_add(1),
        }
    }
}

/// The storage thread's way to change the cluster's accounts; each call
/// waits for NATS's answer (at most `ACCOUNT_TIMEOUT`).
#[derive(Clone)]
pub struct Accounts {
    ops: mpsc::UnboundedSender<Op>,
    state: Arc<LinkState>,
}

/// How long the storage thread waits for an account change.
const ACCOUNT_TIMEOUT: Duration = Duration::from_secs(5);

impl Accounts {
    pub fn change(&self, change: AccountChange) -> Result<bool, String> {
        if !self.state.up.load(Ordering::SeqCst) {
            return Err("no link to NATS".into());
        }
        let (reply, answer) = std::sync::mpsc::channel();
        let deadline = Instant::now() + ACCOUNT_TIMEOUT;
        self.ops
            .send(Op::Account {
                change,
                reply,
                deadline,
            })
            .map_err(|_| "the cluster link has stopped".to_string())?;
        answer
            .recv_timeout(ACCOUNT_TIMEOUT)
            .map_err(|_| "NATS did not answer in time".to_string())?
    }
}

impl LinkState {
    /// `Ok` while the link to NATS is up, else why this node is not
    /// well: it keeps its connections, but what they say waits.
    pub fn health(&self) -> Result<(), String> {
        let waiting = self.waiting.load(Ordering::SeqCst);
        if !self.up.load(Ordering::SeqCst) {
            return Err(format!(
                "cluster: no link to NATS; {waiting} messages waiting to go out"
            ));
        }
        if waiting > HOLD {
            // Linked, yet NATS does not take them (its stream is gone,
            // say): clients are not read.
            return Err(format!(
                "cluster: NATS is not taking messages; {waiting} waiting to go out, clients are not read"
            ));
        }
        Ok(())
    }
}

/// The loop's end of the link.
pub struct Link {
    cluster: String,
    node: String,
    publish: mpsc::UnboundedSender<(String, Bytes)>,
    ops: mpsc::UnboundedSender<Op>,
    inbox: Arc<Mutex<Vec<FromLink>>>,
    pub state: Arc<LinkState>,
    begin: Option<tokio::sync::oneshot::Sender<u64>>,
}

impl Link {
    /// Starts consuming the stream after `cursor`, where this node's
    /// history of the stream's epoch ends.
    pub fn begin(&mut self, cursor: u64) {
        if let Some(tx) = self.begin.take() {
            let _ = tx.send(cursor);
        }
    }

    /// Connects and makes the stream and buckets if they do not exist.
    /// Fails if NATS cannot be reached or set up within `SETUP_TIMEOUT`.
    /// Nothing is consumed before `begin`.
    pub fn start(settings: Settings, waker: Arc<Waker>) -> io::Result<(Link, Started)> {
        let (begin_tx, begin_rx) = tokio::sync::oneshot::channel();
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(LinkState::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = Shared {
            inbox: inbox.clone(),
            waker,
            state: state.clone(),
            node: settings.node.clone(),
            names: Mutex::new(HashMap::new()),
            alive: Mutex::new(HashMap::new()),
            reconnected: tokio::sync::watch::Sender::new(0),
            abandoned: Mutex::new(HashSet::new()),
            mine: Mutex::new(HashMap::new()),
            started: Instant::now(),
        };
        let cluster = settings.name.clone();
        let node = settings.node.clone();
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::other(e)));
                        return;
                    }
                };
                runtime.block_on(run(
                    settings, begin_rx, shared, publish_rx, ops_rx, ready_tx,
                ));
            })?;
        let started = ready_rx
            .recv_timeout(SETUP_TIMEOUT)
            .map_err(|_| io::Error::other("the cluster link did not start in time"))??;
        Ok((
            Link {
                cluster,
                node,
                publish: publish_tx,
                ops: ops_tx,
                inbox,
                state,
                begin: Some(begin_tx),
            },
            started,
        ))
    }

    /// Publishes a room message (`room` as said) or a direct message.
    pub fn publish(&self, kind: Kind, to: &str, from: &str, text: &str, ts: Timestamp) {
        let subject = match kind {
            Kind::Room => super::room_subject(&self.cluster, to),
            Kind::Direct => super::direct_subject(&self.cluster, to),
        };
        let payload = super::encode_said(to, from, text, ts);
        self.state.waiting.fetch_add(1, Ordering::SeqCst);
        if self.publish.send((subject, payload.into())).is_err() {
            self.state.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Claims `key` (lower-cased) with `presence`.
    pub fn claim(&self, ticket: Ticket, key: &str, presence: &Presence, takeover: bool) {
        let value = super::encode_presence(presence).into();
        let key = key.to_string();
        let _ = self.ops.send(Op::Claim {
            ticket,
            key,
            value,
            takeover,
            asked: Instant::now(),
        });
    }

    /// Tells the cluster what `key` looks like now, or gives it up.
    pub fn present(&self, key: &str, presence: Option<&Presence>) {
        let value = presence.map(|p| super::encode_presence(p).into());
        let key = key.to_string();
        let _ = self.ops.send(Op::Present { key, value });
    }

    /// Shares a moderation change with the other nodes (roles and
    /// session ends through the account records, mutes, bans and room
    /// settings through the moderation bucket, the audit through its
    /// stream). Sent in order, again until NATS takes it.
    pub fn share(&self, change: &Change) {
        let shared = match change {
            Change::Role { name, role } => Sharing::Account {
                name: name.to_string(),
                edit: Edit::Role(role.as_str().to_string()),
            },
            Change::Tokens { name, .. } => Sharing::Account {
                name: name.to_string(),
                edit: Edit::EndSessions,
            },
            Change::Audit(entry) => Sharing::Audit(moderation::encode_audit(entry).into()),
            _ => match moderation::encode(&self.node, change) {
                Some((key, value)) => Sharing::Entry {
                    key,
                    value: value.into(),
                },
                None => return,
            },
        };
        let _ = self.ops.send(Op::Share(shared));
    }

    /// A handle for the storage thread, which registers accounts and
    /// changes passwords in the cluster.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            ops: self.ops.clone(),
            state: self.state.clone(),
        }
    }

    /// What arrived since the last call, in order.
    pub fn take(&self) -> Vec<FromLink> {
        std::mem::take(&mut *self.inbox.lock().expect("inbox lock"))
    }

    /// Messages published and not yet acknowledged.
    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::SeqCst)
    }

    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::SeqCst)
    }
}

/// What the link's tasks share.
struct Shared {
    inbox: Arc<Mutex<Vec<FromLink>>>,
    waker: Arc<Waker>,
    state: Arc<LinkState>,
    node: String,
    /// Every name entry's holder node and revision, as last seen or
    /// written: older news of a key is dropped.
    names: Mutex<HashMap<String, (String, u64)>>,
    /// Nodes and when each last beat (this thread's clock).
    alive: Mutex<HashMap<String, Instant>>,
    /// Counts reconnections to NATS: the consumer and the watches are
    /// made again at once, and what was not acknowledged is sent again,
    /// rather than each waiting out its own timeout.
    reconnected: tokio::sync::watch::Sender<u64>,
    /// Names whose claim timed out: if the claim lands after all, the
    /// entry is deleted (nobody here holds it).
    abandoned: Mutex<HashSet<String>>,
    /// The last entry this node wrote for each name it holds: if another
    /// node deletes one (it took this node for dead), it is written again.
    mine: Mutex<HashMap<String, Bytes>>,
    /// When this link started (heartbeats heard since then only).
    started: Instant,
}

impl Shared {
    fn hand(&self, item: FromLink) {
        let mut inbox = self.inbox.lock().expect("inbox lock");
        let was_empty = inbox.is_empty();
        inbox.push(item);
        drop(inbox);
        if was_empty && let Err(e) = self.waker.wake() {
            warn!("cluster: cannot wake the loop: {e}");
        }
    }

    /// Notes the entry this node last wrote for `key`, which it holds.
    fn hold(&self, key: &str, value: Bytes) {
        self.mine
            .lock()
            .expect("mine lock")
            .insert(key.to_string(), value);
    }

    fn is_alive(&self, node: &str) -> bool {
        if node == self.node {
            return true;
        }
        match self.alive.lock().expect("alive lock").get(node) {
            Some(t) => t.elapsed() < NODE_TIMEOUT,
            // Not heard of yet: dead only once this node has listened
            // for longer than a node may stay silent.
            None => self.started.elapsed() >= NODE_TIMEOUT,
        }
    }

    /// Notes that `key` is at `revision`, held by `node` (`None`: given
    /// up); false if news of this or a later revision came already (a
    /// watch made again replays every key's last revision).
    fn note(&self, key: &str, node: Option<&str>, revision: u64) -> bool {
        let mut names = self.names.lock().expect("names lock");
        if names.get(key).is_some_and(|(_, r)| *r >= revision) {
            return false;
        }
        match node {
            Some(n) => {
                names.insert(key.to_string(), (n.to_string(), revision));
            }
            // Kept as a tombstone, so older news stays dropped.
            None => {
                names.insert(key.to_string(), (String::new(), revision));
            }
        }
        true
    }
}

type Setup = Result<Started, io::Error>;

async fn run(
    settings: Settings,
    begin: tokio::sync::oneshot::Receiver<u64>,
    shared: Shared,
    publish_rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    ops_rx: mpsc::UnboundedReceiver<Op>,
    ready: std::sync::mpsc::Sender<Setup>,
) {
    let shared = Arc::new(shared);
    let set_up = match set_up(&settings, shared.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (js, stream, buckets, started) = set_up;
    let epoch = started.epoch.clone();
    shared.state.up.store(true, Ordering::SeqCst);
    let _ = ready.send(Ok(started));
    let Ok(start_after) = begin.await else { return };
    info!(
        "cluster {}: node {} joined; history from stream position {}",
        settings.name,
        settings.node,
        start_after + 1
    );
    let cluster = settings.name.clone();
    tokio::join!(
        watch_lineage(js.clone(), settings.name.clone(), epoch, shared.clone()),
        consume(stream, cluster, start_after, shared.clone()),
        publish(js.clone(), publish_rx, shared.clone()),
        names_ops(
            Ops {
                names: buckets.names.clone(),
                accounts: buckets.accounts.clone(),
                moderation: buckets.moderation.clone(),
                audit: js.clone(),
                audit_subject: moderation::audit_subject(&settings.name),
            },
            ops_rx,
            shared.clone()
        ),
        watch_names(buckets.names.clone(), shared.clone()),
        watch_accounts(buckets.accounts, shared.clone()),
        watch_moderation(buckets.moderation, shared.clone()),
        beat(buckets.nodes.clone(), settings.node.clone()),
        watch_nodes(buckets.nodes, buckets.names, shared),
    );
}

struct Buckets {
    names: kv::Store,
    nodes: kv::Store,
    accounts: kv::Store,
    moderation: kv::Store,
}

async fn set_up(
    settings: &Settings,
    shared: Arc<Shared>,
) -> io::Result<(jetstream::Context, stream::Stream, Buckets, Started)> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: Box<dyn std::error::Error + Send + Sync>| io::Error::other(format!("{what}: {e}"))
    };
    let events = shared.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("chatd {}", settings.node))
        .connection_timeout(Duration::from_secs(5))
        // The client drops messages past a subscription's buffer: room
        // for bursts, and drops are counted.
        .subscription_capacity(1 << 16)
        .max_reconnects(None)
        .event_callback(move |event| {
            let shared = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        info!("cluster: connected to NATS");
                        shared.state.up.store(true, Ordering::SeqCst);
                        shared.reconnected.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::Disconnected => {
                        warn!("cluster: lost NATS; holding messages until it is back");
                        shared.state.up.store(false, Ordering::SeqCst);
                    }
                    async_nats::Event::SlowConsumer(n) => {
                        warn!("cluster: NATS client dropped messages (slow consumer {n})");
                        shared.state.dropped.fetch_add(1, Ordering::SeqCst);
                    }
                    other => info!("cluster: {other}"),
                }
            }
        })
        .connect(settings.urls.as_slice())
        .await
        .map_err(|e| io::Error::other(format!("cannot reach NATS at {:?}: {e}", settings.urls)))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client);
    let keep = settings.history_keep.clamp(1, i64::MAX as usize) as i64;
    let cluster = &settings.name;
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: super::stream_name(cluster),
            subjects: vec![format!("{cluster}.room.*"), format!("{cluster}.dm.*")],
            max_messages_per_subject: keep,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| err("cannot make the cluster's stream")(e.into()))?;
    let created = stream
        .info()
        .await
        .map_err(|e| err("cannot read the cluster's stream")(e.into()))?
        .created;
    let epoch = format!("{:x}", created.unix_timestamp_nanos());
    let names = bucket(&js, &format!("{cluster}_names")).await?;
    let nodes = bucket(&js, &format!("{cluster}_nodes")).await?;
    let meta = bucket(&js, &format!("{cluster}_meta")).await?;
    let accounts = bucket(&js, &format!("{cluster}_accounts")).await?;
    let moderation = bucket(&js, &moderation::bucket_name(cluster)).await?;
    audit_stream(&js, cluster).await?;
    let secret = token_secret(&meta).await?;
    // A previous life of this node may have left names behind.
    let mut keys = names
        .keys()
        .await
        .map_err(|e| err("cannot list names")(e.into()))?;
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(entry)) = names.entry(key.clone()).await
            && entry.operation == kv::Operation::Put
            && super::node_of(&entry.value).as_deref() == Some(&settings.node)
        {
            let _ = names
                .delete_expect_revision(&key, Some(entry.revision))
                .await;
        }
    }
    let buckets = Buckets {
        names,
        nodes,
        accounts,
        moderation,
    };
    Ok((js, stream, buckets, Started { epoch, secret }))
}

/// The cluster's audit stream, made if it does not exist.
pub(super) async fn audit_stream(
    js: &jetstream::Context,
    cluster: &str,
) -> io::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: moderation::audit_stream(cluster),
        subjects: vec![moderation::audit_subject(cluster)],
        max_messages: moderation::AUDIT_KEEP,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| io::Error::other(format!("cannot make the audit stream: {e}")))
}

/// A key-value bucket, its stream made directly if it does not exist.
pub(super) async fn bucket(js: &jetstream::Context, name: &str) -> io::Result<kv::Store> {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| io::Error::other(format!("cannot make bucket {name}: {e}")))?;
    js.get_key_value(name)
        .await
        .map_err(|e| io::Error::other(format!("cannot open bucket {name}: {e}")))
}

/// The cluster's token secret: the first node makes it.
async fn token_secret(meta: &kv::Store) -> io::Result<Vec<u8>> {
    let read = || async {
        meta.get("token_secret")
            .await
            .map_err(|e| io::Error::other(format!("cannot read the token secret: {e}")))
    };
    if let Some(secret) = read().await? {
        return Ok(secret.to_vec());
    }
    let mut fresh = vec![0u8; 32];
    crate::crypto::random(&mut fresh);
    let _ = meta.create("token_secret", fresh.clone().into()).await;
    // Another node may have made it first: theirs holds.
    Ok(read().await?.map_or(fresh, |s| s.to_vec()))
}

/// After each reconnection, checks that the cluster's stream is still the
/// one of `epoch`; if it is gone or was made again, tells the loop once.
async fn watch_lineage(
    js: jetstream::Context,
    cluster: String,
    epoch: String,
    shared: Arc<Shared>,
) {
    let mut reconnected = shared.reconnected.subscribe();
    while reconnected.changed().await.is_ok() {
        let name = super::stream_name(&cluster);
        let now = match js.get_stream(&name).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => format!("{:x}", info.created.unix_timestamp_nanos()),
                // Not known: asked again at the next reconnection.
                Err(_) => continue,
            },
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    String::new()
                }
                _ => continue,
            },
        };
        if now != epoch {
            let why = if now.is_empty() {
                format!("the stream {name} is gone")
            } else {
                format!("the stream {name} was made again")
            };
            shared.hand(FromLink::Lost(format!(
                "{why} (NATS lost its data?): this node's history belongs to the old one"
            )));
            return;
        }
    }
}

/// Every message of the stream after `after` that the `Sequencer`
/// admits, in order, to the loop. The messages of the last `PRIME`
/// positions up to `after` are read first, not delivered, so the
/// sequencer knows where each origin stood.
async fn consume(stream: stream::Stream, cluster: String, after: u64, shared: Arc<Shared>) {
    let mut reconnected = shared.reconnected.subscribe();
    let delivered_upto = after;
    let mut after = after.saturating_sub(PRIME);
    let mut sequencer = super::Sequencer::default();
    loop {
        reconnected.mark_unchanged();
        let deliver_policy = if after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let config = consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        };
        let messages = match stream.create_consumer(config).await {
            Ok(c) => c.messages().await,
            Err(e) => {
                warn!("cluster: cannot make the stream's consumer: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!("cluster: cannot read the stream: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = reconnected.changed() => break,
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    warn!("cluster: reading the stream: {e}");
                    break;
                }
                None => break,
            };
            let Ok(meta) = message.info() else { continue };
            let seq = meta.stream_sequence;
            if seq <= after {
                continue;
            }
            after = seq;
            let id = message.headers.as_ref().and_then(|h| {
                let id = h.get(async_nats::header::NATS_MESSAGE_ID)?;
                super::parse_message_id(id.as_str())
            });
            let admitted = id.is_none_or(|(origin, n)| sequencer.admit(origin, n));
            if !admitted || seq <= delivered_upto {
                continue;
            }
            let Some(kind) = super::kind_of(&cluster, &message.subject) else {
                continue;
            };
            match serde_json::from_slice::<Said>(&message.payload) {
                Ok(said) => shared.hand(FromLink::Said { seq, kind, said }),
                Err(e) => warn!("cluster: message {seq} unreadable: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes in order, `WINDOW` awaiting acknowledgement at once; after a
/// failure, everything not acknowledged goes again, in order, as a new
/// attempt (the consumers keep one sending of each, in order).
async fn publish(
    js: jetstream::Context,
    mut rx: mpsc::UnboundedReceiver<(String, Bytes)>,
    shared: Arc<Shared>,
) {
    let boot = {
        let mut b = [0u8; 6];
        crate::crypto::random(&mut b);
        crate::crypto::hex(&b)
    };
    let origin = format!("{}-{boot}", shared.node);
    let mut next_id: u64 = 0;
    // Each sending after a failure is a new attempt, stored anew: what
    // was stored of the last one the consumers skip (see `Sequencer`).
    let mut attempt: u64 = 0;
    // Not yet acknowledged, oldest first: number, subject, payload.
    let mut queue: VecDeque<(u64, String, Bytes)> = VecDeque::new();
    let mut sent = 0usize;
    let mut acks = futures_util::stream::FuturesOrdered::new();
    let mut reconnected = shared.reconnected.subscribe();
    loop {
        let mut failed = false;
        while acks.len() < WINDOW && sent < queue.len() {
            let (n, subject, payload) = &queue[sent];
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(super::message_id(&origin, *n, attempt));
            match js.send_publish(subject.clone(), message).await {
                Ok(ack) => acks.push_back(ack.into_future()),
                Err(e) => {
                    warn!("cluster: cannot publish: {e}");
                    failed = true;
                    break;
                }
            }
            sent += 1;
        }
        if !failed {
            tokio::select! {
                more = rx.recv() => match more {
                    Some((subject, payload)) => {
                        next_id += 1;
                        queue.push_back((next_id, subject, payload));
                    }
                    None => return,
                },
                Some(ack) = acks.next(), if !acks.is_empty() => match ack {
                    Ok(_) => {
                        queue.pop_front();
                        sent -= 1;
                        shared.state.waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        warn!("cluster: a publish was not acknowledged: {e}");
                        failed = true;
                    }
                },
                _ = reconnected.changed() => {
                    // Acks of what went out before may never come.
                    failed = !queue.is_empty();
                }
            }
        }
        if failed {
            acks = futures_util::stream::FuturesOrdered::new();
            sent = 0;
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Where the link's one-at-a-time operations write.
struct Ops {
    names: kv::Store,
    accounts: kv::Store,
    moderation: kv::Store,
    audit: jetstream::Context,
    audit_subject: String,
}

/// Claims, presence changes and shared moderation, one at a time in the
/// order asked.
async fn names_ops(ops: Ops, mut rx: mpsc::UnboundedReceiver<Op>, shared: Arc<Shared>) {
    let boot = {
        let mut b = [0u8; 6];
        crate::crypto::random(&mut b);
        crate::crypto::hex(&b)
    };
    let mut audited: u64 = 0;
    while let Some(op) = rx.recv().await {
        match op {
            Op::Account {
                change,
                reply,
                deadline,
            } => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    continue;
                }
                let changing = change_account(&ops.accounts, change);
                let changed = tokio::time::timeout(left, changing)
                    .await
                    .unwrap_or_else(|_| Err("NATS did not answer in time".into()));
                let _ = reply.send(changed);
            }
            Op::Claim {
                ticket,
                key,
                value,
                takeover,
                asked,
            } => {
                // Not left waiting on a link that has just gone.
                let left = CLAIM_TIMEOUT.saturating_sub(asked.elapsed());
                let granted = if shared.state.up.load(Ordering::SeqCst) && !left.is_zero() {
                    let claiming = claim(&ops.names, &key, value, takeover, &shared);
                    let granted = tokio::time::timeout(left, claiming).await;
                    if granted.is_err() {
                        // It may still land: then it is given up at once.
                        shared.mine.lock().expect("mine lock").remove(&key);
                        shared
                            .abandoned
                            .lock()
                            .expect("abandoned lock")
                            .insert(key.clone());
                    }
                    granted.ok().flatten()
                } else {
                    None
                };
                shared.hand(FromLink::Claimed {
                    ticket,
                    key,
                    granted,
                });
            }
            Op::Present { key, value } => {
                // Until it works: a presence lost would leave the other
                // nodes wrong.
                let mut tries = 0u32;
                while let Err(e) = present(&ops.names, &key, value.clone(), &shared).await {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(20) {
                        warn!("cluster: cannot update {key}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            Op::Share(sharing) => {
                // The same id on every try: the stream stores it once.
                audited += 1;
                let id = format!("{}-{boot}-audit-{audited}", shared.node);
                let mut tries = 0u32;
                while let Err(e) = share(&ops, &sharing, &id).await {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(20) {
                        warn!("cluster: cannot share {sharing:?}: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

async fn share(ops: &Ops, sharing: &Sharing, id: &str) -> Result<(), String> {
    match sharing {
        Sharing::Entry { key, value } => ops
            .moderation
            .put(key, value.clone())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        // No such account (deleted meanwhile): nothing to change.
        Sharing::Account { name, edit } => {
            edit_account(&ops.accounts, name, edit).await.map(|_| ())
        }
        Sharing::Audit(entry) => {
            let message = jetstream::message::PublishMessage::build()
                .payload(entry.clone())
                .message_id(id);
            let ack = ops
                .audit
                .send_publish(ops.audit_subject.clone(), message)
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

/// Claims `key` for this node: a create, or a compare-and-set over an
/// entry nobody holds (given up, held by a dead node, or left by a claim
/// here that timed out), or over any holder for a `takeover`.
async fn claim(
    names: &kv::Store,
    key: &str,
    value: Bytes,
    takeover: bool,
    shared: &Shared,
) -> Option<bool> {
    // Held here from the start: the watch may see the new entry before
    // this task hears the answer.
    shared.hold(key, value.clone());
    let claimed = try_claim(names, key, value, takeover, shared).await;
    if claimed == Some(true) {
        shared.abandoned.lock().expect("abandoned lock").remove(key);
    } else {
        shared.mine.lock().expect("mine lock").remove(key);
    }
    claimed
}

async fn try_claim(
    names: &kv::Store,
    key: &str,
    value: Bytes,
    takeover: bool,
    shared: &Shared,
) -> Option<bool> {
    match names.create(key, value.clone()).await {
        Ok(revision) => {
            shared.note(key, Some(&shared.node), revision);
            return Some(true);
        }
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => {
            warn!("cluster: cannot claim {key}: {e}");
            return None;
        }
    }
    let entry = names.entry(key).await.ok()??;
    let holder = super::node_of(&entry.value).unwrap_or_default();
    let left_here = holder == shared.node
        && shared
            .abandoned
            .lock()
            .expect("abandoned lock")
            .contains(key);
    let free = entry.operation != kv::Operation::Put || !shared.is_alive(&holder) || left_here;
    if !(takeover || free) {
        return Some(false);
    }
    match names.update(key, value, entry.revision).await {
        Ok(revision) => {
            shared.note(key, Some(&shared.node), revision);
            Some(true)
        }
        // Someone else changed it meanwhile.
        Err(_) => Some(false),
    }
}

/// Writes this node's presence for `key`, or deletes the entry, while it
/// is this node's.
async fn present(
    names: &kv::Store,
    key: &str,
    value: Option<Bytes>,
    shared: &Shared,
) -> Result<(), async_nats::Error> {
    {
        let mut mine = shared.mine.lock().expect("mine lock");
        match &value {
            None => {
                mine.remove(key);
            }
            Some(v) => {
                if let Some(held) = mine.get_mut(key) {
                    *held = v.clone();
                }
            }
        }
    }
    for _ in 0..5 {
        let known = shared.names.lock().expect("names lock").get(key).cloned();
        let Some((_, revision)) = known.filter(|(n, _)| *n == shared.node) else {
            // Not this node's (any more): another node took it over.
            return Ok(());
        };
        let stale = match &value {
            Some(v) => match names.update(key, v.clone(), revision).await {
                Ok(r) => {
                    shared.note(key, Some(&shared.node), r);
                    return Ok(());
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => true,
                Err(e) => return Err(e.into()),
            },
            None => match names.delete_expect_revision(key, Some(revision)).await {
                Ok(()) => {
                    shared.note(key, None, revision + 1);
                    return Ok(());
                }
                Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => true,
                Err(e) => return Err(e.into()),
            },
        };
        // The revision known here is old (a write of this node whose
        // answer was lost, say): still this node's, try again from the
        // entry as it is.
        if stale {
            let Some(entry) = names.entry(key).await? else {
                return Ok(());
            };
            if entry.operation != kv::Operation::Put
                || super::node_of(&entry.value).as_deref() != Some(&shared.node)
            {
                return Ok(());
            }
            shared.note(key, Some(&shared.node), entry.revision);
        }
    }
    Err("the entry kept changing".into())
}

async fn change_account(accounts: &kv::Store, change: AccountChange) -> Result<bool, String> {
    let encode = |r: &AccountRecord| Bytes::from(serde_json::to_vec(r).expect("strings encode"));
    match change {
        AccountChange::Create(record) => {
            let key = record.name.to_ascii_lowercase();
            match accounts.create(&key, encode(&record)).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(format!("cannot register in the cluster: {e}")),
            }
        }
        AccountChange::SetHash { name, hash } => edit_account(accounts, &name, &Edit::Hash(hash))
            .await
            .map_err(|e| format!("cannot change the password: {e}")),
    }
}

/// Edits the account `name` by compare-and-set, again if another change
/// came in between; false if there is no such account.
pub(super) async fn edit_account(
    accounts: &kv::Store,
    name: &str,
    edit: &Edit,
) -> Result<bool, String> {
    let key = name.to_ascii_lowercase();
    for _ in 0..5 {
        let entry = accounts
            .entry(key.clone())
            .await
            .map_err(|e| format!("cannot read the account: {e}"))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(false);
        };
        let Ok(mut record) = serde_json::from_slice::<AccountRecord>(&entry.value) else {
            return Ok(false);
        };
        edit.apply(&mut record);
        let value = Bytes::from(serde_json::to_vec(&record).expect("strings encode"));
        match accounts.update(&key, value, entry.revision).await {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the account kept changing".into())
}

/// Every account as it is, then every change of the accounts bucket, to
/// the loop (which has the database's copy follow).
async fn watch_accounts(accounts: kv::Store, shared: Arc<Shared>) {
    watch_bucket(&accounts, "accounts", &shared, async |entry: kv::Entry| {
        let record = match entry.operation {
            kv::Operation::Put => serde_json::from_slice(&entry.value).ok(),
            _ => None,
        };
        shared.hand(FromLink::Account {
            key: entry.key,
            record,
        });
    })
    .await
}

/// Every entry of `bucket`, each key's last value first and then every
/// change, to `on_entry`, in order; the watch is made again after an
/// error or a reconnection (replaying each key's last value).
async fn watch_bucket(
    bucket: &kv::Store,
    what: &str,
    shared: &Shared,
    mut on_entry: impl AsyncFnMut(kv::Entry),
) {
    let mut reconnected = shared.reconnected.subscribe();
    loop {
        reconnected.mark_unchanged();
        let mut watch = match bucket.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                warn!("cluster: cannot watch {what}: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let entry = tokio::select! {
                next = watch.next() => match next {
                    Some(Ok(entry)) => entry,
                    _ => break,
                },
                _ = reconnected.changed() => break,
            };
            on_entry(entry).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every change of the moderation bucket, to the loop (this node's own
/// too: they settle the order of changes made at once on two nodes).
async fn watch_moderation(moderation: kv::Store, shared: Arc<Shared>) {
    watch_bucket(
        &moderation,
        "moderation",
        &shared,
        async |entry: kv::Entry| {
            if entry.operation != kv::Operation::Put {
                return;
            }
            match moderation::decode(&entry.key, &entry.value) {
                Some((node, change)) => shared.hand(FromLink::Moderation { node, change }),
                None => warn!("cluster: moderation entry {} unreadable", entry.key),
            }
        },
    )
    .await
}

/// Writes a name this node holds again after another node freed it; if
/// its user left meanwhile, gives it up again.
async fn reclaim(names: &kv::Store, key: &str, value: Bytes, shared: &Shared) {
    match names.create(key, value).await {
        Ok(revision) => {
            info!("cluster: {key} was freed elsewhere while held here; claimed again");
            shared.note(key, Some(&shared.node), revision);
            if !shared.mine.lock().expect("mine lock").contains_key(key) {
                let _ = names.delete_expect_revision(key, Some(revision)).await;
            }
        }
        Err(e) => {
            warn!("cluster: {key} was freed elsewhere and cannot be claimed again: {e}");
            shared.mine.lock().expect("mine lock").remove(key);
        }
    }
}

/// Every change of the names bucket, to the loop (this node's own too:
/// the loop ignores those).
async fn watch_names(names: kv::Store, shared: Arc<Shared>) {
    watch_bucket(&names, "names", &shared, async |entry: kv::Entry| {
        let presence = match entry.operation {
            kv::Operation::Put => super::decode_presence(&entry.value),
            _ => None,
        };
        let node = presence.as_ref().map(|p| p.node.to_string());
        if !shared.note(&entry.key, node.as_deref(), entry.revision) {
            return;
        }
        if node.as_deref() == Some(&shared.node) {
            // A claim here that timed out landed after all: nobody
            // here holds it.
            let left = shared
                .abandoned
                .lock()
                .expect("abandoned lock")
                .contains(&entry.key)
                && !shared
                    .mine
                    .lock()
                    .expect("mine lock")
                    .contains_key(&entry.key);
            if left {
                shared
                    .abandoned
                    .lock()
                    .expect("abandoned lock")
                    .remove(&entry.key);
                let _ = names
                    .delete_expect_revision(&entry.key, Some(entry.revision))
                    .await;
                return;
            }
        } else if node.is_some() {
            // Taken over by another node.
            shared.mine.lock().expect("mine lock").remove(&entry.key);
        } else {
            let held = shared
                .mine
                .lock()
                .expect("mine lock")
                .get(&entry.key)
                .cloned();
            if let Some(value) = held {
                // Freed by a node that took this one for dead (cut
                // off from NATS, or frozen): still held here.
                reclaim(&names, &entry.key, value, &shared).await;
                return;
            }
        }
        if presence.is_none() {
            // The watch goes in order: nothing older about this name
            // comes after its deletion, so no tombstone is kept (the
            // map holds the names in use, not every name ever used).
            shared.names.lock().expect("names lock").remove(&entry.key);
        }
        shared.hand(FromLink::Presence {
            key: entry.key,
            presence,
        });
    })
    .await
}

async fn beat(nodes: kv::Store, node: String) {
    let mut n: u64 = 0;
    loop {
        n += 1;
        if let Err(e) = nodes.put(&node, n.to_string().into()).await {
            warn!("cluster: heartbeat failed: {e}");
        }
        tokio::time::sleep(BEAT_EVERY).await;
    }
}

/// Watches the heartbeats; a node silent for `NODE_TIMEOUT` loses its
/// names (only the entries it still holds).
async fn watch_nodes(nodes: kv::Store, names: kv::Store, shared: Arc<Shared>) {
    let mut reconnected = shared.reconnected.subscribe();
    let mut watch = None;
    let mut check = tokio::time::interval(BEAT_EVERY);
    let mut checked = Instant::now();
    loop {
        if watch.is_none() {
            watch = nodes.watch_with_history(">").await.ok();
        }
        let Some(w) = watch.as_mut() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        tokio::select! {
            entry = w.next() => match entry {
                Some(Ok(e)) if e.operation == kv::Operation::Put => {
                    shared.alive.lock().expect("alive lock").insert(e.key, Instant::now());
                }
                Some(Ok(e)) => {
                    shared.alive.lock().expect("alive lock").remove(&e.key);
                }
                _ => watch = None,
            },
            _ = reconnected.changed() => {
                watch = None;
                // Nobody could beat while the link was down: every node
                // gets a fresh chance.
                for t in shared.alive.lock().expect("alive lock").values_mut() {
                    *t = Instant::now();
                }
            }
            _ = check.tick() => {
                // Without a link nobody's beats arrive: no verdicts (and
                // no deletes queued to go out when the link returns).
                if !shared.state.up.load(Ordering::SeqCst) {
                    continue;
                }
                // This node itself was away (stopped, or starved of CPU):
                // the others' silence is its own; they get a fresh chance.
                let away = checked.elapsed() > 2 * BEAT_EVERY;
                checked = Instant::now();
                if away {
                    for t in shared.alive.lock().expect("alive lock").values_mut() {
                        *t = Instant::now();
                    }
                    continue;
                }
                let dead: Vec<String> = shared
                    .alive
                    .lock()
                    .expect("alive lock")
                    .iter()
                    .filter(|(n, t)| **n != shared.node && t.elapsed() >= NODE_TIMEOUT)
                    .map(|(n, _)| n.clone())
                    .collect();
                for node in dead {
                    let held: Vec<(String, u64)> = shared
                        .names
                        .lock()
                        .expect("names lock")
                        .iter()
                        .filter(|(_, (n, _))| *n == node)
                        .map(|(k, (_, r))| (k.clone(), *r))
                        .collect();
                    info!("cluster: node {node} stopped beating; freeing its {} names", held.len());
                    for (key, revision) in held {
                        let _ = names.delete_expect_revision(&key, Some(revision)).await;
                    }
                    shared.alive.lock().expect("alive lock").remove(&node);
                    let _ = nodes.delete(&node).await;
                }
            }
        }
    }
}
