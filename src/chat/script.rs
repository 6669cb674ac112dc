//! The tests' harness, shared by the tests of every part of the core.

use super::*;
use crate::wire::proto::encode_text;
use std::collections::BTreeMap;

/// Drives a `Chat` and shows what each connection would read, as text.
pub(super) struct Script {
    pub(super) chat: Chat,
    pub(super) out: Outbox,
    pub(super) now: Instant,
    pub(super) next: usize,
    pub(super) closed: Vec<(ConnId, CloseReason)>,
    pub(super) jobs: Vec<Job>,
    /// Moderation changes handed out to be stored.
    pub(super) stored: Vec<Change>,
    /// What was handed out for the other nodes of a cluster.
    pub(super) shared: Vec<Shared>,
}

impl Script {
    /// Recording nothing: tests of history say so.
    pub(super) fn new() -> Script {
        Script::with(ChatConfig {
            history_keep: 0,
            ..ChatConfig::default()
        })
    }

    pub(super) fn with(cfg: ChatConfig) -> Script {
        Script {
            chat: Chat::new(cfg),
            out: Outbox::default(),
            now: Instant::now(),
            next: 0,
            closed: Vec::new(),
            jobs: Vec::new(),
            stored: Vec::new(),
            shared: Vec::new(),
        }
    }

    /// Collects what the outbox holds, per recipient, as text lines.
    pub(super) fn take(&mut self) -> BTreeMap<usize, Vec<String>> {
        let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let closed = &mut self.closed;
        let jobs = &mut self.jobs;
        let stored = &mut self.stored;
        let shared = &mut self.shared;
        self.out.drain(|o| match o {
            Output::Send { event, to } => {
                let mut buf = Vec::new();
                encode_text(event, &mut buf);
                let text = String::from_utf8(buf).unwrap();
                for c in to {
                    let lines = seen.entry(c.0).or_default();
                    lines.extend(text.lines().map(String::from));
                }
            }
            Output::Close { conn, reason } => closed.push((conn, reason)),
            Output::Job(job) => jobs.push(job),
            Output::Store(change) => stored.push(change),
            Output::Share(s) => shared.push(s),
        });
        seen
    }

    /// Answers the oldest job handed out with `outcome`.
    pub(super) fn answer(&mut self, outcome: Outcome) -> BTreeMap<usize, Vec<String>> {
        let job = self.jobs.remove(0);
        self.chat.job_done(job.ticket(), outcome, &mut self.out);
        self.take()
    }

    pub(super) fn open(&mut self) -> ConnId {
        self.open_from(IpAddr::from([127, 0, 0, 1]))
    }

    /// A new connection from `addr`, with what it is told left unread.
    pub(super) fn open_from(&mut self, addr: IpAddr) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.chat.connect(c, addr, self.now, &mut self.out);
        c
    }

    /// A connection that has chosen `name`, with its welcome discarded.
    pub(super) fn user(&mut self, name: &str) -> ConnId {
        let c = self.open();
        self.chat.handle_line(c, name, &mut self.out);
        self.take();
        c
    }

    pub(super) fn say(&mut self, c: ConnId, line: &str) -> BTreeMap<usize, Vec<String>> {
        self.chat.handle_line(c, line, &mut self.out);
        self.take()
    }
}

/// What `c` read in `map` (a `take`), nothing if it read nothing.
pub(super) fn lines(map: &BTreeMap<usize, Vec<String>>, c: ConnId) -> Vec<String> {
    map.get(&c.0).cloned().unwrap_or_default()
}

pub(super) fn got(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

/// A server whose chat knows `alice` is registered.
pub(super) fn with_alice() -> Script {
    let mut s = Script::with(ChatConfig {
        login_delay: Duration::from_millis(100),
        ..ChatConfig::default()
    });
    s.chat
        .set_accounts([(Name::from("Alice"), Role::User)], &mut Outbox::default());
    s
}

/// Lets every delayed wrong-password answer come due.
pub(super) fn due(s: &mut Script) -> BTreeMap<usize, Vec<String>> {
    s.now += Duration::from_secs(60);
    while s.chat.due_answer(s.now, &mut s.out).is_some() {}
    s.take()
}
