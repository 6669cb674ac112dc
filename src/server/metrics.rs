//! What the loop counts for operators, and its rendering in the Prometheus
//! text format. The counters are plain integers on the loop (the loop only
//! adds to fields); a scrape asks the loop for a `Snapshot`, which copies
//! them and the gauges, and is rendered with `prometheus-client` only then.
//! Also the loop's heartbeat, which the health check reads from another
//! thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::chat::Counts;
use crate::server::Server;
use crate::server::exporter::MetricsHandle;
use crate::wire::proto::{CloseReason, Mode};

/// `Content-Type` of `/metrics`: the Prometheus text format.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the loop-turn histogram's buckets, in nanoseconds: from
/// an idle turn (tens of microseconds) to a turn that kept every client
/// waiting for a quarter of a second.
pub const TURN_BUCKETS_NS: [u64; 13] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
];

/// The close reasons, in the order of `Metrics::disconnects`.
pub const REASONS: [CloseReason; 17] = [
    CloseReason::Quit,
    CloseReason::HandshakeTimeout,
    CloseReason::PeerClosed,
    CloseReason::Reset,
    CloseReason::NetworkError,
    CloseReason::TooSlow,
    CloseReason::Shutdown,
    CloseReason::Replaced,
    CloseReason::WrongPassword,
    CloseReason::TlsFailed,
    CloseReason::TlsTimeout,
    CloseReason::PlainRefused,
    CloseReason::Kicked,
    CloseReason::Banned,
    CloseReason::TooManyFromAddress,
    CloseReason::Http,
    CloseReason::WebSocketError,
];

/// A close reason's slot in `REASONS`, and its label value. A match, so
/// that a new reason cannot be forgotten here.
fn reason_slot(reason: CloseReason) -> (usize, &'static str) {
    match reason {
        CloseReason::Quit => (0, "quit"),
        CloseReason::HandshakeTimeout => (1, "handshake_timeout"),
        CloseReason::PeerClosed => (2, "peer_closed"),
        CloseReason::Reset => (3, "reset"),
        CloseReason::NetworkError => (4, "network_error"),
        CloseReason::TooSlow => (5, "too_slow"),
        CloseReason::Shutdown => (6, "shutdown"),
        CloseReason::Replaced => (7, "replaced"),
        CloseReason::WrongPassword => (8, "wrong_password"),
        CloseReason::TlsFailed => (9, "tls_failed"),
        CloseReason::TlsTimeout => (10, "tls_timeout"),
        CloseReason::PlainRefused => (11, "plain_refused"),
        CloseReason::Kicked => (12, "kicked"),
        CloseReason::Banned => (13, "banned"),
        CloseReason::TooManyFromAddress => (14, "too_many_from_address"),
        CloseReason::Http => (15, "http"),
        CloseReason::WebSocketError => (16, "websocket_error"),
    }
}

/// Label values of `mode`, by `mode_slot`.
pub const MODES: [&str; 4] = ["pending", "text", "json", "websocket"];
/// Label values of `transport`: index 1 is TLS.
pub const TRANSPORTS: [&str; 2] = ["plain", "tls"];

/// A connection's slot in `MODES`: "pending" until its first line chooses.
fn mode_slot(mode: Option<Mode>) -> usize {
    match mode {
        None => 0,
        Some(Mode::Text) => 1,
        Some(Mode::Json) => 2,
        Some(Mode::WebSocket) => 3,
    }
}

/// How long each loop turn's work took (poll return to the next poll).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnHistogram {
    /// Turns per bucket of `TURN_BUCKETS_NS`, then those above the last.
    pub buckets: [u64; TURN_BUCKETS_NS.len() + 1],
    pub sum_ns: u64,
}

impl TurnHistogram {
    pub fn observe(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slot = TURN_BUCKETS_NS.partition_point(|&bound| bound < ns);
        self.buckets[slot] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The loop's own counters. Bytes of open connections stay on each
/// connection (it counts them anyway); they are added here when it closes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Copies of room and direct messages queued to recipients.
    pub deliveries: u64,
    /// Connections closed, by `REASONS` slot.
    pub disconnects: [u64; REASONS.len()],
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// Bytes read from and written to connections already closed.
    pub closed_bytes_in: u64,
    pub closed_bytes_out: u64,
    pub turns: TurnHistogram,
}

impl Metrics {
    /// A connection ended: its reason and its bytes each way.
    pub fn closed(&mut self, reason: CloseReason, bytes_in: u64, bytes_out: u64) {
        self.disconnects[reason_slot(reason).0] += 1;
        self.closed_bytes_in += bytes_in;
        self.closed_bytes_out += bytes_out;
    }
}

/// Everything one scrape shows, copied on the loop.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub metrics: Metrics,
    pub chat: Counts,
    /// Open connections by `MODES` slot and `TRANSPORTS` slot.
    pub connections: [[u64; 2]; 4],
    pub users: u64,
    pub rooms: u64,
    /// All bytes so far, closed connections and open ones.
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub storage_backlog_bytes: u64,
    /// Connections not read until storage catches up.
    pub held_connections: u64,
    /// Jobs for the helper threads not answered yet.
    pub jobs_waiting: u64,
    /// Under `--cluster`: whether the NATS link is up, the messages
    /// published but not acknowledged yet, and the NATS client's
    /// slow-consumer events.
    pub cluster: Option<(bool, u64, u64)>,
}

impl Snapshot {
    /// The Prometheus text format (version 0.0.4) of this snapshot.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug
        // in what is rendered, and a partial page still says something.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
            log::error!("metrics: cannot render: {e}");
        }
        text
    }
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter with one label, one series per value.
fn counters<'v>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'v str, u64)>,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in values {
        let labels = [(label, value)];
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        let c = &self.chat;
        {
            let mut family = e.encode_descriptor(
                "chatd_connections",
                "Open connections, by protocol mode (pending: no line yet) and transport",
                None,
                MetricType::Gauge,
            )?;
            for (mode, row) in MODES.iter().zip(&self.connections) {
                for (transport, &n) in TRANSPORTS.iter().zip(row) {
                    let labels = [("mode", *mode), ("transport", *transport)];
                    ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        gauge(&mut e, "chatd_users", "Named users present", self.users)?;
        gauge(
            &mut e,
            "chatd_rooms",
            "Rooms, the lobby included",
            self.rooms,
        )?;
        counter(
            &mut e,
            "chatd_messages",
            "Room and direct messages accepted",
            c.room_messages + c.direct_messages,
        )?;
        counter(
            &mut e,
            "chatd_direct_messages",
            "Direct messages accepted (also in chatd_messages_total)",
            c.direct_messages,
        )?;
        counter(
            &mut e,
            "chatd_deliveries",
            "Copies of room and direct messages queued to recipients",
            m.deliveries,
        )?;
        counter(
            &mut e,
            "chatd_received_bytes",
            "Bytes read from clients (TLS records included)",
            self.received_bytes,
        )?;
        counter(
            &mut e,
            "chatd_sent_bytes",
            "Bytes written to clients (TLS records included)",
            self.sent_bytes,
        )?;
        counters(
            &mut e,
            "chatd_disconnects",
            "Connections closed, by reason",
            "reason",
            REASONS
                .iter()
                .map(|&r| (reason_slot(r).1, m.disconnects[reason_slot(r).0])),
        )?;
        counters(
            &mut e,
            "chatd_logins",
            "Login attempts with a password: success and failure as checked, \
             throttled when first held back by the wrong-password delay \
             (then also checked), busy when refused as server busy",
            "result",
            [
                ("success", c.logins_succeeded),
                ("failure", c.logins_failed),
                ("throttled", c.logins_throttled),
                ("busy", c.logins_busy),
            ],
        )?;
        counter(
            &mut e,
            "chatd_tls_handshakes",
            "TLS handshakes completed (failed ones: chatd_disconnects_total{reason=\"tls_failed\"})",
            m.tls_handshakes,
        )?;
        gauge(
            &mut e,
            "chatd_storage_backlog_bytes",
            "Bytes of recorded messages waiting to be stored",
            self.storage_backlog_bytes,
        )?;
        gauge(
            &mut e,
            "chatd_storage_held_connections",
            "Connections not read until storage catches up",
            self.held_connections,
        )?;
        gauge(
            &mut e,
            "chatd_auth_queue",
            "Jobs (password checks, registrations, history reads) waiting for the helper threads; --auth-queue bounds it",
            self.jobs_waiting,
        )?;
        if let Some((up, waiting, slow)) = self.cluster {
            gauge(
                &mut e,
                "chatd_cluster_link_up",
                "1 while this node is connected to NATS (--cluster), else 0",
                u64::from(up),
            )?;
            gauge(
                &mut e,
                "chatd_cluster_outgoing_waiting",
                "Messages published to the cluster and not yet acknowledged; past 10000 senders are not read",
                waiting,
            )?;
            counter(
                &mut e,
                "chatd_cluster_slow_consumer",
                "Times the NATS client dropped messages past its subscription buffer (the stream's ordered consumer then starts again where it was)",
                slow,
            )?;
        }
        let buckets: Vec<(f64, u64)> = TURN_BUCKETS_NS
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .chain([f64::INFINITY])
            .zip(m.turns.buckets)
            .collect();
        e.encode_descriptor(
            "chatd_loop_turn_seconds",
            "Time each event-loop turn worked, from poll return to the next poll",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            m.turns.sum_ns as f64 / 1e9,
            m.turns.count(),
            &buckets,
            None,
        )
    }
}

/// When the loop last turned, readable from any thread: one relaxed store
/// per turn.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds after `start` of the latest turn.
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            start: now,
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.start).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long ago the loop last turned.
    pub fn age(&self, now: Instant) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// A scrape waiting for the loop: where the rendered text goes.
pub type ScrapeRequest = SyncSender<String>;

/// The loop's side of `--metrics-listen`.
pub(super) struct Exposed {
    pub heartbeat: Arc<Heartbeat>,
    pub scrapes: Receiver<ScrapeRequest>,
}

impl Server {
    /// For `--metrics-listen`: from now on the loop keeps a heartbeat
    /// (turning at least every `HEARTBEAT_EVERY`) and answers scrapes.
    pub fn metrics_handle(&mut self) -> MetricsHandle {
        let (requests, scrapes) = mpsc::channel();
        let heartbeat = Arc::new(Heartbeat::new(Instant::now()));
        self.exposed = Some(Exposed {
            heartbeat: heartbeat.clone(),
            scrapes,
        });
        MetricsHandle::new(
            requests,
            self.waker.clone(),
            heartbeat,
            self.backend.backlog_probe(),
            self.link.as_ref().map(|l| l.state.clone()),
        )
    }

    /// Answers every scrape waiting: one snapshot, rendered once.
    pub(super) fn answer_scrapes(&mut self) {
        let Some(exposed) = &self.exposed else {
            return;
        };
        let waiting: Vec<ScrapeRequest> = exposed.scrapes.try_iter().collect();
        if waiting.is_empty() {
            return;
        }
        let text = self.snapshot().render();
        for reply in waiting {
            // A scrape that gave up waiting has dropped its receiver.
            let _ = reply.try_send(text.clone());
        }
    }

    /// Copies the counters and reads the gauges; one pass over the
    /// connections.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            metrics: self.metrics.clone(),
            chat: self.chat.counts().clone(),
            users: self.chat.user_count() as u64,
            rooms: self.chat.room_count() as u64,
            received_bytes: self.metrics.closed_bytes_in,
            sent_bytes: self.metrics.closed_bytes_out,
            storage_backlog_bytes: self.backend.backlog_probe().bytes() as u64,
            held_connections: self.conns.held.len() as u64,
            jobs_waiting: self.backend.jobs() as u64,
            cluster: self.link.as_ref().map(|l| {
                let slow = l.state.dropped.load(std::sync::atomic::Ordering::SeqCst);
                (l.is_up(), l.waiting() as u64, slow as u64)
            }),
            ..Snapshot::default()
        };
        for (_, c) in &self.conns.slab {
            s.connections[mode_slot(c.mode)][usize::from(c.stack.tls.is_some())] += 1;
            s.received_bytes += c.bytes_in;
            s.sent_bytes += c.bytes_out;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series ` in `text`.
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn every_close_reason_has_its_own_slot_and_label() {
        for (i, &r) in REASONS.iter().enumerate() {
            assert_eq!(reason_slot(r).0, i, "{r:?}");
        }
        let mut labels: Vec<&str> = REASONS.iter().map(|&r| reason_slot(r).1).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), REASONS.len());
    }

    #[test]
    fn turns_fall_into_their_buckets() {
        let mut h = TurnHistogram::default();
        h.observe(Duration::from_nanos(1));
        h.observe(Duration::from_nanos(25_000)); // on a bound: that bucket
        h.observe(Duration::from_nanos(25_001));
        h.observe(Duration::from_secs(3)); // above every bound
        assert_eq!(h.buckets[0], 2);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[TURN_BUCKETS_NS.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_ns, 1 + 25_000 + 25_001 + 3_000_000_000);
    }

    #[test]
    fn a_snapshot_renders_every_series_with_its_value() {
        let mut s = Snapshot::default();
        s.chat.room_messages = 5;
        s.chat.direct_messages = 2;
        s.chat.logins_failed = 1;
        s.metrics.deliveries = 9;
        s.metrics.closed(CloseReason::TooSlow, 10, 20);
        s.connections[mode_slot(Some(Mode::Json))][1] = 3;
        s.users = 4;
        s.storage_backlog_bytes = 1234;
        s.metrics.turns.observe(Duration::from_micros(30));
        s.metrics.turns.observe(Duration::from_micros(70));
        let text = s.render();

        let want = [
            ("chatd_messages_total", "7"),
            ("chatd_direct_messages_total", "2"),
            ("chatd_deliveries_total", "9"),
            ("chatd_users", "4"),
            ("chatd_rooms", "0"),
            ("chatd_connections{mode=\"json\",transport=\"tls\"}", "3"),
            ("chatd_connections{mode=\"text\",transport=\"plain\"}", "0"),
            ("chatd_disconnects_total{reason=\"too_slow\"}", "1"),
            ("chatd_disconnects_total{reason=\"quit\"}", "0"),
            ("chatd_logins_total{result=\"failure\"}", "1"),
            ("chatd_logins_total{result=\"throttled\"}", "0"),
            ("chatd_storage_backlog_bytes", "1234"),
            ("chatd_loop_turn_seconds_bucket{le=\"2.5e-05\"}", "0"),
            ("chatd_loop_turn_seconds_bucket{le=\"5e-05\"}", "1"),
            ("chatd_loop_turn_seconds_bucket{le=\"0.0001\"}", "2"),
            ("chatd_loop_turn_seconds_bucket{le=\"+Inf\"}", "2"),
            ("chatd_loop_turn_seconds_count", "2"),
            ("chatd_loop_turn_seconds_sum", "0.0001"),
        ];
        for (series, value) in want {
            assert_eq!(
                sample(&text, series).as_deref(),
                Some(value),
                "{series} in:\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE chatd_messages_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE chatd_loop_turn_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE chatd_connections gauge\n"), "{text}");
        // Every metric is ours.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("chatd_"), "{line}");
        }
    }

    #[test]
    fn the_heartbeat_ages_from_the_last_beat() {
        let t0 = Instant::now();
        let hb = Heartbeat::new(t0);
        assert_eq!(hb.age(t0 + Duration::from_secs(2)), Duration::from_secs(2));
        hb.beat(t0 + Duration::from_secs(5));
        assert_eq!(hb.age(t0 + Duration::from_secs(6)), Duration::from_secs(1));
        // A clock read before the beat is no age at all.
        assert_eq!(hb.age(t0), Duration::ZERO);
    }
}
