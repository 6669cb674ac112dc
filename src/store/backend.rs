//! The two helper threads that keep slow work off the event loop, and the
//! loop's handle on them.
//!
//! - The storage thread owns the database connection. It stores recorded
//!   messages in batches, reads and writes accounts, answers history
//!   queries beyond what memory holds, and notices operator changes to the
//!   accounts.
//! - The hashing thread runs Argon2id, hashing and verifying passwords.
//!
//! A login goes loop → storage (read the hash) → hashing (verify) → loop;
//! a registration loop → hashing → storage (insert) → loop. Each answer
//! comes back on one channel, and a `mio::Waker` wakes the loop for it.
//! What waits to be stored is counted in bytes; past `MAX_BACKLOG` the
//! loop stops reading from clients until the storage thread catches up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{error, warn};
use mio::Waker;

use crate::chat::history::Chunk;
use crate::chat::moderation::Change;
use crate::chat::{Job, Outcome, Ticket};
use crate::cluster::AccountRecord;
use crate::cluster::link::{AccountChange, Accounts};
use crate::store::Store;
use crate::store::password::{self, Cost};
use crate::wire::proto::{Name, Role, Timestamp};

/// Bytes of recorded messages waiting to be stored past which the loop
/// stops reading from clients. At the rates measured for the storage
/// thread this is well under a second of work, so the flush at shutdown
/// fits its budget.
pub const MAX_BACKLOG: usize = 16 * 1024 * 1024;
/// How often the storage thread looks for operator changes to accounts.
pub const ACCOUNTS_POLL: Duration = Duration::from_secs(1);

/// What comes back to the loop.
pub enum Reply {
    Job(Ticket, Outcome),
    /// The registered names or their roles changed under us (an operator
    /// command).
    Accounts(Vec<(Name, Role)>, Vec<(Name, u32)>),
    /// This server registered `name`.
    AccountAdded(Name, u32),
}

enum StoreOp {
    /// Chunks, the memory they hold, and the cluster stream's position
    /// they reach.
    Record(Vec<Chunk>, usize, Option<u64>),
    /// A login (read the hash, verify it on the hashing thread), a
    /// password change (read the hash, verify `old`, hash `new`, store
    /// it) or a history query. Registrations start on the hashing thread.
    Job(Job),
    /// Store a new account with a fresh hash.
    AddAccount {
        ticket: Ticket,
        name: Name,
        hash: String,
    },
    SetHash {
        ticket: Ticket,
        name: Name,
        hash: String,
    },
    /// A moderation change or audit entry.
    Change(Change),
    /// The cluster's accounts changed: the copy here follows.
    Mirror(Vec<(String, Option<AccountRecord>)>),
    /// Store what is queued, prune, and stop.
    Stop,
}

enum HashOp {
    Verify {
        ticket: Ticket,
        hash: String,
        password: String,
        /// `Some` for `/passwd`: the name and the new password to store.
        then: Option<(Name, String)>,
    },
    Hash {
        ticket: Ticket,
        name: Name,
        password: String,
    },
}

/// Shared between the loop and the storage thread.
struct Backlog {
    bytes: AtomicUsize,
    /// The loop has stopped reading and wants a wake-up once below half.
    stalled: AtomicBool,
}

/// A read-only view of the storage backlog, for threads other than the
/// loop (the health check must answer even when the loop is stuck).
#[derive(Clone)]
pub struct BacklogProbe(Arc<Backlog>);

impl BacklogProbe {
    /// Bytes of recorded messages waiting to be stored.
    pub fn bytes(&self) -> usize {
        self.0.bytes.load(Ordering::Relaxed)
    }

    /// Whether storage is past `MAX_BACKLOG`: then the loop reads no
    /// client that has a line for it (`Backend::behind`) until storage
    /// catches up.
    pub fn is_behind(&self) -> bool {
        self.bytes() > MAX_BACKLOG
    }
}

/// How replies reach the loop: a channel, and a wake-up.
#[derive(Clone)]
struct ToLoop {
    tx: Sender<Reply>,
    waker: Arc<Waker>,
}

impl ToLoop {
    fn send(&self, reply: Reply) {
        // The loop gone means the server is stopping: nothing to do.
        if self.tx.send(reply).is_ok()
            && let Err(e) = self.waker.wake()
        {
            warn!("cannot wake the event loop: {e}");
        }
    }

    fn job(&self, ticket: Ticket, outcome: Outcome) {
        self.send(Reply::Job(ticket, outcome));
    }
}

/// The loop's side.
pub struct Backend {
    store: Sender<StoreOp>,
    hash: Sender<HashOp>,
    replies: Receiver<Reply>,
    backlog: Arc<Backlog>,
    jobs: usize,
    max_jobs: usize,
    storage: Option<JoinHandle<()>>,
    stopped: Receiver<()>,
    stopping: bool,
    /// The cluster stream's position the next batch reaches.
    cursor: std::cell::Cell<Option<u64>>,
}

impl Backend {
    /// Starts both threads; `store` moves to the storage thread. At most
    /// `max_jobs` jobs wait at once; more are refused as busy.
    /// Under `--cluster`, `cluster` registers accounts and changes
    /// passwords in the cluster first; this database keeps a copy.
    pub fn start(
        store: Store,
        cost: Cost,
        max_jobs: usize,
        waker: Arc<Waker>,
        cluster: Option<Accounts>,
    ) -> std::io::Result<Backend> {
        let (reply_tx, replies) = mpsc::channel();
        let (store_tx, store_rx) = mpsc::channel();
        let (hash_tx, hash_rx) = mpsc::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        let to_loop = ToLoop {
            tx: reply_tx,
            waker: waker.clone(),
        };
        let backlog = Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            stalled: AtomicBool::new(false),
        });
        let storage = {
            let (to_loop, hash_tx, backlog) = (to_loop.clone(), hash_tx.clone(), backlog.clone());
            std::thread::Builder::new()
                .name("storage".into())
                .spawn(move || {
                    lower_priority();
                    let mut worker = Storage {
                        store,
                        to_loop,
                        hash: hash_tx,
                        backlog,
                        waker,
                        last_error: None,
                        cluster,
                    };
                    worker.run(store_rx);
                    let _ = stopped_tx.send(());
                })?
        };
        {
            let store_tx = store_tx.clone();
            std::thread::Builder::new()
                .name("hashing".into())
                .spawn(move || {
                    lower_priority();
                    hashing(hash_rx, store_tx, to_loop, cost)
                })?;
        }
        Ok(Backend {
            store: store_tx,
            hash: hash_tx,
            replies,
            backlog,
            jobs: 0,
            max_jobs,
            storage: Some(storage),
            stopped,
            stopping: false,
            cursor: std::cell::Cell::new(None),
        })
    }

    /// Changes how many jobs may wait at once (SIGHUP); jobs already
    /// waiting past a lower bound still run.
    pub fn set_max_jobs(&mut self, max_jobs: usize) {
        self.max_jobs = max_jobs;
    }

    /// Hands `job` to the threads. False if too many jobs wait (or a
    /// thread has stopped): the caller answers busy.
    pub fn submit(&mut self, job: Job) -> bool {
        if self.jobs >= self.max_jobs {
            return false;
        }
        let ok = match job {
            Job::Register {
                ticket,
                name,
                password,
            } => self
                .hash
                .send(HashOp::Hash {
                    ticket,
                    name,
                    password,
                })
                .is_ok(),
            other => self.store.send(StoreOp::Job(other)).is_ok(),
        };
        if ok {
            self.jobs += 1;
        } else {
            error!("a helper thread has stopped; refusing the request");
        }
        ok
    }

    /// Queues messages to be stored; `bytes` counts against the backlog.
    /// Notes that what the next batch holds reaches `seq` of the
    /// cluster's stream; it is stored with that batch.
    pub fn set_cursor(&self, seq: u64) {
        self.cursor.set(Some(seq));
    }

    pub fn record(&self, batch: Vec<Chunk>, bytes: usize) {
        let cursor = self.cursor.take();
        if batch.is_empty() && cursor.is_none() {
            return;
        }
        self.backlog.bytes.fetch_add(bytes, Ordering::SeqCst);
        if self
            .store
            .send(StoreOp::Record(batch, bytes, cursor))
            .is_err()
        {
            self.backlog.bytes.fetch_sub(bytes, Ordering::SeqCst);
        }
    }

    /// Has this database's copy of the cluster's accounts follow `changes`;
    /// the loop hears of the accounts after.
    pub fn mirror(&self, changes: Vec<(String, Option<AccountRecord>)>) {
        if !changes.is_empty() && self.store.send(StoreOp::Mirror(changes)).is_err() {
            error!("the storage thread has stopped; account changes are not copied");
        }
    }

    /// Queues a moderation change to be stored, after what was queued
    /// before it.
    pub fn change(&self, change: Change) {
        if self.store.send(StoreOp::Change(change)).is_err() {
            error!("the storage thread has stopped; a moderation change is not stored");
        }
    }

    /// Whether storage is too far behind to take `more` bytes now. If so,
    /// the storage thread will wake the loop once it has caught up.
    pub fn behind(&self, more: usize) -> bool {
        if self.backlog.bytes.load(Ordering::SeqCst) + more <= MAX_BACKLOG {
            return false;
        }
        self.backlog.stalled.store(true, Ordering::SeqCst);
        // Caught up between the two reads: no wake-up would come.
        self.backlog.bytes.load(Ordering::SeqCst) + more > MAX_BACKLOG
    }

    /// The backlog, as other threads may watch it.
    pub fn backlog_probe(&self) -> BacklogProbe {
        BacklogProbe(self.backlog.clone())
    }

    /// Jobs handed out and not answered yet (at most `max_jobs`).
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// The next answer, if one is ready.
    pub fn reply(&mut self) -> Option<Reply> {
        let reply = self.replies.try_recv().ok()?;
        if let Reply::Job(..) = reply {
            self.jobs = self.jobs.saturating_sub(1);
        }
        Some(reply)
    }

    /// Asks the storage thread to store what is queued and stop; nothing
    /// may be recorded after this.
    pub fn stop(&mut self) {
        if !self.stopping {
            self.stopping = true;
            let _ = self.store.send(StoreOp::Stop);
        }
    }

    /// Stores everything queued and stops the storage thread, waiting at
    /// most `limit`. The hashing thread is left to finish on its own.
    pub fn finish(&mut self, limit: Duration) {
        self.stop();
        let Some(storage) = self.storage.take() else {
            return;
        };
        match self.stopped.recv_timeout(limit) {
            Ok(()) => {
                let _ = storage.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => error!(
                "storage did not finish within {} ms; the newest messages may be lost",
                limit.as_millis()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                error!("the storage thread failed; the newest messages may be lost")
            }
        }
    }
}

/// A server dropped without `finish` still stores what is queued: the
/// storage thread stops after it, and with it the hashing thread.
impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Storage {
    store: Store,
    to_loop: ToLoop,
    hash: Sender<HashOp>,
    backlog: Arc<Backlog>,
    waker: Arc<Waker>,
    last_error: Option<Instant>,
    /// Under `--cluster`: where accounts are registered first.
    cluster: Option<Accounts>,
}

impl Storage {
    fn run(&mut self, rx: Receiver<StoreOp>) {
        let mut version = self.store.data_version().unwrap_or(0);
        let mut checked = Instant::now();
        let mut held: VecDeque<StoreOp> = VecDeque::new();
        loop {
            let op = match held.pop_front() {
                Some(op) => op,
                None => match rx.recv_timeout(ACCOUNTS_POLL) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.poll_accounts(&mut version, &mut checked);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            match op {
                StoreOp::Record(mut batch, mut bytes, mut cursor) => {
                    // Everything already queued goes into one transaction.
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            StoreOp::Record(more, b, c) => {
                                batch.extend(more);
                                bytes += b;
                                cursor = c.or(cursor);
                            }
                            other => {
                                held.push_back(other);
                                break;
                            }
                        }
                    }
                    let count: usize = batch.iter().map(|c| c.count).sum();
                    if let Err(e) = self.store.record_upto(&batch, cursor) {
                        self.report(&format!("{count} messages not recorded: {e}"));
                    }
                    self.caught_up(bytes);
                }
                StoreOp::Stop => {
                    if let Err(e) = self.store.prune_all() {
                        error!("{e}");
                    }
                    return;
                }
                other => self.serve(other),
            }
            if checked.elapsed() >= ACCOUNTS_POLL {
                self.poll_accounts(&mut version, &mut checked);
            }
        }
    }

    fn caught_up(&self, bytes: usize) {
        let left = self.backlog.bytes.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if left <= MAX_BACKLOG / 2 && self.backlog.stalled.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    /// Logs a storage error, at most once a second.
    fn report(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .last_error
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            error!("storage: {what}");
            self.last_error = Some(now);
        }
    }

    fn serve(&mut self, op: StoreOp) {
        let to_loop = self.to_loop.clone();
        match op {
            StoreOp::Job(Job::Login {
                ticket,
                name,
                password,
            }) => match self.store.password_hash(&name) {
                Ok(Some(hash)) => self.verify(ticket, hash, password, None),
                Ok(None) => to_loop.job(ticket, Outcome::NoAccount),
                Err(e) => self.failed(ticket, &e),
            },
            StoreOp::Job(Job::Passwd {
                ticket,
                name,
                old,
                new,
            }) => match self.store.password_hash(&name) {
                Ok(Some(hash)) => self.verify(ticket, hash, old, Some((name, new))),
                Ok(None) => to_loop.job(ticket, Outcome::NoAccount),
                Err(e) => self.failed(ticket, &e),
            },
            StoreOp::Job(Job::Register { ticket, .. }) => {
                self.failed(ticket, "a registration reached storage before its hash")
            }
            StoreOp::Job(Job::Claim { ticket, .. }) => {
                self.failed(ticket, "a name claim reached storage, not the cluster")
            }
            StoreOp::Mirror(changes) => {
                let now = Timestamp::now();
                for (key, record) in &changes {
                    if let Err(e) = self.store.mirror_account(key, record.as_ref(), now) {
                        self.report(&e);
                    }
                }
                match self
                    .store
                    .account_names()
                    .and_then(|names| Ok((names, self.store.token_generations()?)))
                {
                    Ok((names, generations)) => to_loop.send(Reply::Accounts(names, generations)),
                    Err(e) => self.report(&e),
                }
            }
            StoreOp::AddAccount { ticket, name, hash } if self.cluster.is_some() => {
                let generation = super::fresh_generation();
                let record = AccountRecord {
                    name: name.to_string(),
                    hash: hash.clone(),
                    role: Role::User.as_str().to_string(),
                    tokens: generation,
                };
                let cluster = self.cluster.as_ref().expect("checked");
                match cluster.change(AccountChange::Create(record)) {
                    Ok(true) => {
                        let now = Timestamp::now();
                        if let Err(e) = self.store.add_account_with(&name, &hash, now, generation) {
                            self.report(&e);
                        }
                        to_loop.send(Reply::AccountAdded(name, generation));
                        to_loop.job(ticket, Outcome::Done);
                    }
                    Ok(false) => to_loop.job(ticket, Outcome::AlreadyRegistered),
                    Err(e) => self.failed(ticket, &e),
                }
            }
            StoreOp::SetHash { ticket, name, hash } if self.cluster.is_some() => {
                let cluster = self.cluster.as_ref().expect("checked");
                let change = AccountChange::SetHash {
                    name: name.to_string(),
                    hash: hash.clone(),
                };
                match cluster.change(change) {
                    Ok(true) => match self.store.set_password_hash(&name, &hash) {
                        Ok(_) => to_loop.job(ticket, Outcome::Done),
                        Err(e) => self.failed(ticket, &e),
                    },
                    Ok(false) => to_loop.job(ticket, Outcome::NoAccount),
                    Err(e) => self.failed(ticket, &e),
                }
            }
            StoreOp::AddAccount { ticket, name, hash } => {
                match self.store.add_account(&name, &hash, Timestamp::now()) {
                    Ok(true) => {
                        // First, so the chat learns of the account even if
                        // the connection that asked is gone by now.
                        let generation = self.store.token_generation(&name).ok().flatten();
                        to_loop.send(Reply::AccountAdded(name, generation.unwrap_or(0)));
                        to_loop.job(ticket, Outcome::Done);
                    }
                    Ok(false) => to_loop.job(ticket, Outcome::AlreadyRegistered),
                    Err(e) => self.failed(ticket, &e),
                }
            }
            StoreOp::SetHash { ticket, name, hash } => {
                match self.store.set_password_hash(&name, &hash) {
                    Ok(true) => to_loop.job(ticket, Outcome::Done),
                    Ok(false) => to_loop.job(ticket, Outcome::NoAccount),
                    Err(e) => self.failed(ticket, &e),
                }
            }
            StoreOp::Job(Job::History {
                ticket,
                room,
                count,
                after,
                ..
            }) if after.is_some() => match self.store.numbered(&room, after, None, count) {
                Ok(messages) => {
                    let next = self.store.next_seq(&room);
                    to_loop.job(ticket, Outcome::Resumed { messages, next })
                }
                Err(e) => self.failed(ticket, &e),
            },
            StoreOp::Job(Job::History {
                ticket,
                room,
                count,
                before,
                ..
            }) => match if before.is_some() {
                self.store.numbered(&room, None, before, count)
            } else {
                self.store.recent(&room, count)
            } {
                Ok(messages) => to_loop.job(ticket, Outcome::History(messages)),
                Err(e) => self.failed(ticket, &e),
            },
            StoreOp::Change(change) => {
                if let Err(e) = self.store.apply(&change) {
                    self.report(&e);
                }
            }
            StoreOp::Record(..) | StoreOp::Stop => unreachable!("handled by run"),
        }
    }

    fn verify(
        &mut self,
        ticket: Ticket,
        hash: String,
        password: String,
        then: Option<(Name, String)>,
    ) {
        let op = HashOp::Verify {
            ticket,
            hash,
            password,
            then,
        };
        if self.hash.send(op).is_err() {
            self.failed(ticket, "the hashing thread has stopped");
        }
    }

    fn failed(&mut self, ticket: Ticket, e: &str) {
        self.report(e);
        self.to_loop.job(ticket, Outcome::Busy);
    }

    fn poll_accounts(&mut self, version: &mut i64, checked: &mut Instant) {
        *checked = Instant::now();
        let Ok(now) = self.store.data_version() else {
            return;
        };
        if now == *version {
            return;
        }
        *version = now;
        match self
            .store
            .account_names()
            .and_then(|names| Ok((names, self.store.token_generations()?)))
        {
            Ok((names, generations)) => self.to_loop.send(Reply::Accounts(names, generations)),
            Err(e) => self.report(&e),
        }
    }
}

/// Helper threads yield the CPU to the event loop: on a small machine the
/// loop serving everyone matters more than a hash or a batch finishing
/// early. The backlog bound keeps storage from falling behind for good.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its
    // arguments. On Linux a thread id names that thread alone.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HELPER_NICE)
    };
    if done != 0 {
        warn!(
            "cannot lower a helper thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The niceness of the helper threads.
pub const HELPER_NICE: libc::c_int = 19;

/// The hashing thread: one password at a time.
fn hashing(rx: Receiver<HashOp>, store: Sender<StoreOp>, to_loop: ToLoop, cost: Cost) {
    for op in rx {
        match op {
            HashOp::Verify {
                ticket,
                hash,
                password,
                then,
            } => match (password::verify(&hash, &password), then) {
                (Ok(true), None) => to_loop.job(ticket, Outcome::Done),
                (Ok(false), _) => to_loop.job(ticket, Outcome::WrongPassword),
                (Ok(true), Some((name, new))) => match password::hash(&new, cost) {
                    Ok(hash) => forward(
                        &store,
                        &to_loop,
                        ticket,
                        StoreOp::SetHash { ticket, name, hash },
                    ),
                    Err(e) => busy(&to_loop, ticket, &e),
                },
                (Err(e), _) => busy(&to_loop, ticket, &e),
            },
            HashOp::Hash {
                ticket,
                name,
                password,
            } => match password::hash(&password, cost) {
                Ok(hash) => forward(
                    &store,
                    &to_loop,
                    ticket,
                    StoreOp::AddAccount { ticket, name, hash },
                ),
                Err(e) => busy(&to_loop, ticket, &e),
            },
        }
    }
}

fn forward(store: &Sender<StoreOp>, to_loop: &ToLoop, ticket: Ticket, op: StoreOp) {
    if store.send(op).is_err() {
        busy(to_loop, ticket, "the storage thread has stopped");
    }
}

fn busy(to_loop: &ToLoop, ticket: Ticket, e: &str) {
    error!("password check failed: {e}");
    to_loop.job(ticket, Outcome::Busy);
}
