//! End to end over loopback: a real `Server` in this process on a port-0
//! listener, N subscriber sockets and one publisher driven by the load
//! generator, one broadcast of M messages per iteration; throughput in
//! deliveries.
//!
//! cargo bench --bench loopback
//!
//! The server thread and the client loop share the machine, so this shows
//! changes in the server's cost, not what a separate process can take; for
//! that, and for the comparison with Redis, use chat-bench and
//! benches/compare.sh.

use std::time::Duration;

use chatd::loadgen::wire::Proto;
use chatd::loadgen::{Fanout, Setup};
use chatd::server::{self, Config, Server};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Subscribers, and messages per broadcast: about 200,000 deliveries each.
const CASES: [(usize, u64); 3] = [(10, 20_000), (100, 2_000), (1000, 200)];

fn broadcast(c: &mut Criterion) {
    if let Err(e) = server::raise_fd_limit() {
        eprintln!("cannot raise the open-files limit: {e}");
    }
    let mut group = c.benchmark_group("loopback/broadcast");
    for (subs, messages) in CASES {
        let listener = server::bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
        let cfg = Config {
            rate: 0,
            max_clients: 40_000,
            ..Config::default()
        };
        let mut server = Server::new(listener, cfg).expect("server");
        let addr = server.local_addr();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());

        let mut setup = Setup::new(addr, Proto::Chat, subs);
        setup.timeout = Duration::from_secs(30);
        let mut fanout = Fanout::connect(setup).expect("connect subscribers");
        group.throughput(Throughput::Elements(subs as u64 * messages));
        group.bench_with_input(BenchmarkId::from_parameter(subs), &subs, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let stats = fanout.run(messages, None).expect("broadcast");
                    assert!(stats.clean(), "lost deliveries: {stats}");
                    total += stats.elapsed;
                }
                total
            })
        });
        drop(fanout);
        stop.shutdown();
        let _ = thread.join();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = broadcast
}
criterion_main!(benches);
