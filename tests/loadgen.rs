//! The load generator against a real server in this process: every
//! delivery is counted, the window holds, a rate is kept, idle connections
//! are opened and measured.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chatd::loadgen::wire::Proto;
use chatd::loadgen::{self, Fanout, Setup};
use chatd::server::{self, Config, Server, ShutdownHandle};

struct Running {
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
    setup: Setup,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(subs: usize) -> Running {
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = Config {
        rate: 0,
        ..Config::default()
    };
    let mut server = Server::new(listener, cfg).unwrap();
    let mut setup = Setup::new(server.local_addr(), Proto::Chat, subs);
    setup.timeout = Duration::from_secs(20);
    setup.server_pid = Some(std::process::id());
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());
    Running {
        handle,
        thread: Some(thread),
        setup,
    }
}

#[test]
fn every_delivery_arrives_and_is_counted() {
    let running = start(20);
    let mut fanout = Fanout::connect(running.setup.clone()).unwrap();
    for _ in 0..2 {
        let stats = fanout.run(500, None).unwrap();
        assert!(stats.clean(), "{stats}");
        assert_eq!(stats.delivered, 20 * 500);
        assert!(stats.latency.count() == 10_000 && stats.latency.max() > 0);
        assert!(stats.server_cpu.is_some() && stats.server_peak_rss_kib.is_some());
        assert!(stats.kv().contains("delivered=10000 lost=0"));
    }
}

#[test]
fn a_small_window_still_gets_everything_through() {
    let running = start(5);
    let mut setup = running.setup.clone();
    setup.window = 1;
    let mut fanout = Fanout::connect(setup).unwrap();
    let stats = fanout.run(200, None).unwrap();
    assert!(stats.clean(), "{stats}");
}

#[test]
fn a_send_rate_is_kept() {
    let running = start(3);
    let mut fanout = Fanout::connect(running.setup.clone()).unwrap();
    let started = Instant::now();
    let stats = fanout.run(50, Some(500.0)).unwrap();
    assert!(stats.clean(), "{stats}");
    // 50 messages at 500/s: the last goes out 98 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(95), "{stats}");
}

#[test]
fn idle_connections_are_opened_and_measured() {
    let running = start(30);
    let stats = loadgen::idle(&running.setup).unwrap();
    assert_eq!(stats.conns, 30);
    assert!(stats.server_rss_kib.is_some());
    assert!(stats.kv().contains("conns=30"));
}

#[test]
fn a_taken_name_is_reported() {
    let running = start(2);
    let _first = Fanout::connect(running.setup.clone()).unwrap();
    let err = Fanout::connect(running.setup.clone()).err().unwrap();
    assert!(err.to_string().contains("s0 was refused"), "{err}");
}
