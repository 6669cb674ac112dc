//! `chatd`: flags, logging, binding, signals; everything else is the library.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use chatd::chat::ChatConfig;
use chatd::server::{self, Config, Server};
use clap::Parser;
use clap::builder::TypedValueParser;
use log::{LevelFilter, error, info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A chat server: rooms, nicknames, direct messages and statuses, for many
/// users at once over plain TCP (talk to it with nc, telnet or chat-client).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on. Port 0 picks a free port; 0.0.0.0 opens the
    /// server to the network (in plain text).
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "HOST:PORT")]
    listen: String,

    /// Longest line a client may send, in bytes (line terminator excluded).
    /// A longer one is answered with an error and discarded as it arrives.
    #[arg(long, default_value_t = server::DEFAULT_MAX_LINE, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    max_line: usize,

    /// Most connections at once, named or not. A newcomer past this gets
    /// "! server full" and is closed.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CLIENTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    max_clients: usize,

    /// Seconds a new connection has to choose a name before it is closed.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    handshake_timeout: u64,

    /// Lines per second one client may send, with bursts of twice that; 0
    /// means unlimited. A client over it is not read from until its budget
    /// refills (TCP back-pressure): nothing is dropped. Replies to the
    /// client itself cost one more line per 4 KiB.
    #[arg(long, default_value_t = server::DEFAULT_RATE, value_name = "LINES")]
    rate: u32,

    /// Most unsent output one client may have queued, in bytes. A client that
    /// reads too slowly to stay under it is disconnected; nobody else waits.
    #[arg(long, default_value_t = server::DEFAULT_MAX_OUTBUF, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..).map(|v| v as usize))]
    max_outbuf: usize,

    /// Joins, leaves and status changes are announced only in rooms of at
    /// most this many members; messages always go to everyone.
    #[arg(long, default_value_t = 100, value_name = "N")]
    announce_limit: usize,

    /// More log detail (-v debug, -vv trace). Message text is only ever
    /// logged at debug level or below.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
}

fn level(args: &Args) -> LevelFilter {
    match (args.verbose, args.quiet) {
        (0, 0) => LevelFilter::Info,
        (1, _) => LevelFilter::Debug,
        (v, _) if v >= 2 => LevelFilter::Trace,
        (_, 1) => LevelFilter::Warn,
        _ => LevelFilter::Error,
    }
}

fn resolve(listen: &str) -> Result<SocketAddr, String> {
    listen
        .to_socket_addrs()
        .map_err(|e| format!("cannot use --listen {listen}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen {listen} resolves to no address"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = chatd::logger::init(level(&args)) {
        eprintln!("chatd: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    let code = match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    };
    chatd::logger::flush(Duration::from_secs(1));
    code
}

fn run(args: &Args) -> Result<(), String> {
    match server::raise_fd_limit() {
        Ok(limit) if limit < args.max_clients as u64 + server::RESERVED_FDS => warn!(
            "open-files limit is {limit}, below --max-clients {} plus {} spare: \
             accepts will fail (and pause) before the client limit is reached",
            args.max_clients,
            server::RESERVED_FDS
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot raise the open-files limit: {e}"),
    }
    let addr = resolve(&args.listen)?;
    let listener = server::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let cfg = Config {
        max_line: args.max_line,
        max_clients: args.max_clients,
        rate: args.rate,
        max_outbuf: args.max_outbuf,
        chat: ChatConfig {
            announce_limit: args.announce_limit,
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
        },
    };
    let mut server = Server::new(listener, cfg).map_err(|e| format!("cannot start: {e}"))?;
    let local = server.local_addr();
    if !local.ip().is_loopback() {
        warn!(
            "{local} is reachable from the network and chatd speaks plain text: anyone on the path can read the chat"
        );
    }
    let handle = server.shutdown_handle();
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot catch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if let Some(sig) = signals.next() {
                info!("signal {sig} received, shutting down (again to stop at once)");
                handle.shutdown();
            }
            if let Some(sig) = signals.next() {
                warn!("signal {sig} received again, stopping without waiting");
                chatd::logger::flush(Duration::from_millis(200));
                std::process::exit(1);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    // Logged whatever the level: scripts read the port from it.
    chatd::logger::always(&format!("listening on {local}"));
    server.run().map_err(|e| format!("event loop failed: {e}"))
}
