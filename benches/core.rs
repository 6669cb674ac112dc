//! The socket-free core alone: what routing one room message to N members
//! and encoding it costs, per delivery, with and without queueing it for
//! each member as the server does.
//!
//! cargo bench --bench core

use std::hint::black_box;
use std::io;
use std::net::IpAddr;
use std::time::Instant;

use chatd::chat::{Chat, ChatConfig, ConnId, Outbox, Output};
use chatd::server::conn::OutBuf;
use chatd::wire::proto::encode_text;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const MEMBERS: [usize; 3] = [10, 1000, 10_000];
/// With `<pub> ` and LF, a delivery is 64 bytes.
const TEXT: &str = "the quick brown fox jumps over the lazy dog, twice: ok ok";

/// A lobby with `members` listeners and one sender, `pub`, every welcome
/// and join notice drained, recording `keep` messages (0: none). Returns
/// the chat, its outbox and the sender.
fn room(members: usize, keep: usize) -> (Chat, Outbox, ConnId) {
    let mut chat = Chat::new(ChatConfig {
        history_keep: keep,
        ..ChatConfig::default()
    });
    let mut out = Outbox::default();
    let now = Instant::now();
    for i in 0..=members {
        let c = ConnId(i);
        chat.connect(c, IpAddr::from([127, 0, 0, 1]), now, &mut out);
        let name = if i == members {
            "pub".to_string()
        } else {
            format!("m{i}")
        };
        chat.handle_line(c, &name, &mut out);
        out.drain(|_| {});
    }
    (chat, out, ConnId(members))
}

fn route_and_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("core/room_message");
    for &n in &MEMBERS {
        group.throughput(Throughput::Elements(n as u64));
        // What the chat decides and the one encoding of it; each recipient
        // is only looked at. Once without recording, once recording each
        // message (in memory and in the batch handed to storage per turn).
        for (label, keep) in [("route_encode", 0), ("route_encode_record", 10_000)] {
            let (mut chat, mut out, sender) = room(n, keep);
            let mut encoded = Vec::new();
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter(|| {
                    chat.handle_line(sender, TEXT, &mut out);
                    let mut sum = 0usize;
                    out.drain(|o| {
                        if let Output::Send { event, to } = o {
                            encoded.clear();
                            encode_text(event, &mut encoded);
                            for c in to {
                                sum += c.0;
                            }
                        }
                    });
                    black_box((sum, encoded.len(), chat.take_records()))
                })
            });
        }
        let (mut chat, mut out, sender) = room(n, 0);
        // Plus queueing for every recipient and one write each, as the
        // server does when each loop turn carries one message: the message
        // is encoded once into the turn's log, each queue notes its range,
        // and each write reads the log directly.
        let mut queues: Vec<OutBuf> = (0..=n).map(|_| OutBuf::default()).collect();
        let mut log = Vec::new();
        group.bench_with_input(BenchmarkId::new("route_encode_queue", n), &n, |b, _| {
            b.iter(|| {
                chat.handle_line(sender, TEXT, &mut out);
                out.drain(|o| {
                    if let Output::Send { event, to } = o {
                        let start = log.len();
                        encode_text(event, &mut log);
                        for c in to {
                            queues[c.0].push_shared(&log, start, log.len());
                        }
                    }
                });
                for q in &mut queues {
                    if !q.is_empty() {
                        let _ = q.write_to(&mut io::sink(), &log);
                    }
                }
                log.clear();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = route_and_encode
}
criterion_main!(benches);
