//! `chat-bench`: flags, the open-files limit, one call into
//! `chatd::loadgen`, and the report; everything else is the library.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use chatd::loadgen::wire::Proto;
use chatd::loadgen::{self, Fanout, Setup};
use clap::{Parser, ValueEnum};

/// Descriptors the tool needs besides its connections: stdio, the poll,
/// /proc files.
const SPARE_FDS: u64 = 16;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtoArg {
    /// chatd in text mode: users s0.. and pub in one room.
    Chat,
    /// Redis pub/sub: SUBSCRIBE and PUBLISH on one channel.
    Redis,
    /// chatd with JSON subscribers (the publisher stays a text user, so
    /// the messages are those of `chat`; --size is their text-mode size).
    ChatJson,
    /// chatd with WebSocket subscribers (JSON in text frames; the
    /// publisher a text user, as for chat-json).
    Ws,
}

/// Load generator for chatd (and, to compare, Redis pub/sub), loopback only.
/// One publisher sends stamped messages to N subscribers in one room, at
/// most --window messages ahead of the slowest; every delivery is counted
/// and timed. With --idle N it instead opens N named connections and
/// reports what they cost the server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server to load.
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "HOST:PORT")]
    addr: String,

    #[arg(long, value_enum, default_value_t = ProtoArg::Chat)]
    proto: ProtoArg,

    /// Subscriber connections.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    subs: u32,

    /// Messages to publish.
    #[arg(long, default_value_t = 20_000, value_name = "M",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    messages: u64,

    /// Bytes of one delivery on the wire, framing included.
    #[arg(long, default_value_t = loadgen::DEFAULT_SIZE as u32, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    size: u32,

    /// Most messages the publisher may be ahead of the slowest subscriber.
    #[arg(long, default_value_t = loadgen::DEFAULT_WINDOW, value_name = "W",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    window: u64,

    /// Publish at this many messages per second instead of as fast as the
    /// window allows (for latency).
    #[arg(long, value_name = "R")]
    send_rate: Option<f64>,

    /// Open N idle named connections instead and report the server's RSS
    /// per connection (needs --server-pid) and kernel socket memory.
    #[arg(long, value_name = "N", conflicts_with_all = ["subs", "messages", "send_rate"],
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    idle: Option<u32>,

    /// Run a soak instead: ROUNDS rounds of --cycles short connections,
    /// each connecting (JSON) into #soak, saying one line and quitting, printing the
    /// server's RSS after every round (needs --server-pid for that).
    #[arg(long, value_name = "ROUNDS", conflicts_with_all = ["idle", "subs", "messages", "send_rate", "tls"],
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    soak: Option<u32>,

    /// Cycles per soak round.
    #[arg(long, default_value_t = 100_000, value_name = "N", requires = "soak",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    cycles: u64,

    /// The server's process id, to report its CPU time and memory.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Give up on logging in, and separately on the run, after this long
    /// (a soak: on the whole soak).
    #[arg(long, default_value_t = loadgen::DEFAULT_TIMEOUT.as_secs(), value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,

    /// Connect every subscriber and the publisher over TLS (1.2 or 1.3,
    /// rustls with aws-lc-rs) instead of plain TCP, to chatd or Redis
    /// (--tls-port). The server's certificate is NOT verified: any
    /// certificate is accepted, though the handshake signature is still
    /// checked against it. This is a load tool for a loopback server you
    /// started yourself; it says nothing about whom it talks to.
    #[arg(long)]
    tls: bool,

    /// Print one line of key=value pairs instead of the report.
    #[arg(long)]
    kv: bool,

    /// Connect the publisher here instead of --addr: another node of the
    /// same cluster, so that every message goes through NATS.
    #[arg(long, value_name = "HOST:PORT")]
    pub_addr: Option<String>,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot use --addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr} resolves to no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--addr {addr} is not a loopback address; chat-bench only loads servers on this machine"
        ));
    }
    Ok(addr)
}

fn run(args: &Args) -> Result<bool, String> {
    if let Some(rate) = args.send_rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err("--send-rate must be a positive number".into());
    }
    let addr = resolve(&args.addr)?;
    let proto = match args.proto {
        ProtoArg::Chat => Proto::Chat,
        ProtoArg::Redis => Proto::Redis,
        ProtoArg::ChatJson => Proto::ChatJson,
        ProtoArg::Ws => Proto::ChatWs,
    };
    if let Some(rounds) = args.soak {
        return soak(args, addr, rounds);
    }
    let conns = args.idle.unwrap_or(args.subs) as u64 + 1;
    let limit = chatd::server::raise_fd_limit()
        .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    if conns + SPARE_FDS > limit {
        return Err(format!(
            "{conns} connections need more than the open-files limit of {limit}"
        ));
    }
    let mut setup = Setup::new(addr, proto, args.idle.unwrap_or(args.subs) as usize);
    setup.size = args.size as usize;
    setup.window = args.window;
    setup.timeout = Duration::from_secs(args.timeout);
    setup.server_pid = args.server_pid;
    setup.pub_addr = args.pub_addr.as_deref().map(resolve).transpose()?;
    if args.tls {
        setup.tls =
            Some(loadgen::tls::client_config().map_err(|e| format!("cannot set up TLS: {e}"))?);
    }

    // A plain server answers a TLS hello with text, which rustls reports
    // as a corrupt record; say what that most likely means.
    let tls_hint = |e: loadgen::BenchError| {
        if args.tls && !matches!(e, loadgen::BenchError::Refused { .. }) {
            format!("{e} (does the server speak TLS on this port?)")
        } else {
            e.to_string()
        }
    };
    if args.idle.is_some() {
        let stats = loadgen::idle(&setup).map_err(tls_hint)?;
        if args.kv {
            println!("{}", stats.kv());
        } else {
            println!("{stats}");
        }
        return Ok(true);
    }
    let mut fanout = Fanout::connect(setup).map_err(tls_hint)?;
    let stats = fanout
        .run(args.messages, args.send_rate)
        .map_err(|e| e.to_string())?;
    if args.kv {
        println!("{}", stats.kv());
    } else {
        println!("{stats}");
    }
    Ok(stats.clean())
}

/// `--soak ROUNDS`: prints one line per round; fails if any cycle did.
fn soak(args: &Args, addr: SocketAddr, rounds: u32) -> Result<bool, String> {
    chatd::server::raise_fd_limit()
        .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    let s = loadgen::soak::Soak {
        addr,
        rounds,
        cycles_per_round: args.cycles,
        in_flight: loadgen::soak::DEFAULT_IN_FLIGHT,
        timeout: Duration::from_secs(args.timeout),
        server_pid: args.server_pid,
    };
    println!(
        "soak: {rounds} rounds of {} connect/name/say/quit cycles, {} at a time",
        s.cycles_per_round, s.in_flight
    );
    let mut first_rss = None;
    let results = loadgen::soak::soak(&s, |round, r| {
        let rss = r.server_rss_kib.map_or("-".to_string(), |k| {
            let base = *first_rss.get_or_insert(k);
            format!(
                "{k} KiB ({:+.1}% from round 1)",
                (k as f64 / base as f64 - 1.0) * 100.0
            )
        });
        println!(
            "round {:>3}: {} cycles ({} failed) in {:.1} s, {:.0}/s; server RSS {rss}",
            round + 1,
            r.cycles,
            r.failed,
            r.elapsed.as_secs_f64(),
            r.cycles as f64 / r.elapsed.as_secs_f64()
        );
        if let Some(why) = &r.first_failure {
            println!("  the first failed cycle: {why}");
        }
    })
    .map_err(|e| e.to_string())?;
    match results.iter().map(|r| r.failed).sum::<u64>() {
        0 => Ok(true),
        n => Err(format!(
            "{n} cycles failed (the server refused or never closed them)"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("chat-bench: deliveries were lost, repeated or out of order");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
