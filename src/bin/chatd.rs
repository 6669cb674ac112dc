//! `chatd`: flags, logging, binding, signals, readiness for systemd, and
//! the operator's commands (accounts, backup, check); everything else is
//! the library.

use std::io::BufRead;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chatd::chat::ChatConfig;
use chatd::server::tls::{TlsConfig, TlsSource};
use chatd::server::{self, Config, Server, ShutdownHandle, TlsHandle};
use chatd::store::Store;
use chatd::store::password::{self, Cost};
use chatd::wire::cidr::Cidr;
use chatd::wire::proto::{MAX_HISTORY, check_password};
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use log::{LevelFilter, error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A chat server: rooms, nicknames, direct messages and statuses, for many
/// users at once over plain TCP (talk to it with nc, telnet or chat-client).
#[derive(Parser, Debug)]
#[command(version, about)]
#[command(group(clap::ArgGroup::new("tls_source").args(["tls_cert", "tls_self_signed"])))]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,

    /// The SQLite database of accounts and recorded history, created if
    /// missing. ":memory:" keeps nothing after the run.
    #[arg(long, global = true, default_value = "chatd.db", value_name = "PATH")]
    db: String,

    /// Recorded messages a user receives on entering a room (0 sends none).
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=MAX_HISTORY as i64).map(|v| v as usize))]
    history: usize,

    /// Messages recorded per room; older ones are deleted. 0 records
    /// nothing.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=1_000_000_000).map(|v| v as usize))]
    history_keep: usize,

    /// Seconds before a first wrong password is answered; the delay
    /// doubles with each further failure for the account or the address
    /// (up to 30 s).
    #[arg(long, default_value_t = 0.5, value_name = "SECS",
          value_parser = parse_secs)]
    login_delay: f64,

    /// Memory of each new password hash (Argon2id), in KiB.
    #[arg(long, default_value_t = Cost::default().memory_kib, value_name = "KIB", global = true)]
    argon2_memory: u32,

    /// Passes of each new password hash (Argon2id).
    #[arg(long, default_value_t = Cost::default().passes, value_name = "N", global = true)]
    argon2_passes: u32,

    /// Most password checks waiting at once; more are answered
    /// "server busy".
    #[arg(long, default_value_t = server::DEFAULT_AUTH_QUEUE, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    auth_queue: usize,

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

    /// TLS certificate chain (PEM, end-entity first). TLS clients are
    /// served on the same port as plain ones. SIGHUP reads it again.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve TLS with a self-signed certificate, made on first start and
    /// kept beside the database (DB.cert.pem, DB.key.pem; chatd.cert.pem in
    /// the working directory with --db :memory:). Its SHA-256 fingerprint
    /// is logged: give it to chat-client --tls-pin.
    #[arg(long)]
    tls_self_signed: bool,

    /// Refuse plain-text connections except from --allow-plain addresses
    /// (they are told "! this server requires TLS").
    #[arg(long, requires = "tls_source")]
    require_tls: bool,

    /// Where plain text stays allowed under --require-tls: an address or
    /// ADDRESS/PREFIX, repeatable. Default: 127.0.0.0/8 and ::1.
    #[arg(long, value_name = "CIDR", requires = "require_tls")]
    allow_plain: Vec<Cidr>,

    /// More log detail (-v debug, -vv trace). Message text is only ever
    /// logged at debug level or below.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
}

/// Operator commands on the database; safe while a server runs on it.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manage accounts: list, delete, set a password.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Copy the database to DEST, consistently, while a server may be
    /// writing to it. DEST must not exist yet.
    Backup { dest: PathBuf },
    /// Verify the database: SQLite's integrity check and what chatd's
    /// schema promises. Exits 1 and names each problem if any.
    Check,
}

#[derive(Subcommand, Debug)]
enum AccountsCmd {
    /// Registered names, with when they were registered.
    List,
    /// Delete an account; the name is free from the next login on.
    Delete { name: String },
    /// Set a password, read as the first line of stdin (exactly as typed,
    /// without its line end); it takes effect at the next login.
    Passwd { name: String },
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=60.0).contains(&v) => Ok(v),
        _ => Err("expected seconds from 0 to 60".into()),
    }
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
    if let Some(cmd) = &args.command {
        let done = match cmd {
            Cmd::Accounts(cmd) => accounts(&args, cmd),
            Cmd::Backup { dest } => backup(&args, dest),
            Cmd::Check => check(&args),
        };
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chatd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = chatd::server::logger::init(level(&args)) {
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
    chatd::server::logger::flush(Duration::from_secs(1));
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
    let source = tls_source(args);
    let cfg = Config {
        max_line: args.max_line,
        max_clients: args.max_clients,
        rate: args.rate,
        max_outbuf: args.max_outbuf,
        chat: ChatConfig {
            announce_limit: args.announce_limit,
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            history: args.history,
            history_keep: args.history_keep,
            login_delay: Duration::from_secs_f64(args.login_delay),
            ..ChatConfig::default()
        },
        db: args.db.clone(),
        hash_cost: cost(args)?,
        auth_queue: args.auth_queue,
        tls: match &source {
            Some(source) => Some(load_tls(source)?),
            None => None,
        },
        require_tls: args.require_tls,
        allow_plain: if args.allow_plain.is_empty() {
            server::default_allow_plain()
        } else {
            args.allow_plain.clone()
        },
    };
    let mut server = Server::new(listener, cfg).map_err(|e| format!("cannot start: {e}"))?;
    let local = server.local_addr();
    if !local.ip().is_loopback() {
        match (&source, args.require_tls) {
            (None, _) => warn!(
                "{local} is reachable from the network and chatd speaks plain text: anyone on the path can read the chat (see --tls-self-signed)"
            ),
            (Some(_), false) => warn!(
                "{local} is reachable from the network and takes plain text beside TLS (see --require-tls)"
            ),
            (Some(_), true) => {}
        }
    }
    spawn_signal_thread(server.shutdown_handle(), server.tls_handle(), source)?;
    // Logged whatever the level: scripts read the port from it.
    chatd::server::logger::always(&format!("listening on {local}"));
    notify(Notify::Ready);
    server.run().map_err(|e| format!("event loop failed: {e}"))
}

fn tls_source(args: &Args) -> Option<TlsSource> {
    if args.tls_self_signed {
        return Some(TlsSource::self_signed_beside(&args.db));
    }
    Some(TlsSource::Files {
        cert: args.tls_cert.clone()?,
        key: args.tls_key.clone()?,
    })
}

/// Reads (or first makes) the certificate; logs where it came from and its
/// fingerprint, whatever the log level (scripts and people pin it).
fn load_tls(source: &TlsSource) -> Result<TlsConfig, String> {
    let loaded = source
        .load()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let sha = loaded.config.fingerprint();
    let (TlsSource::SelfSigned { cert, .. } | TlsSource::Files { cert, .. }) = source;
    let made = if loaded.created {
        "made a self-signed certificate"
    } else {
        "certificate"
    };
    chatd::server::logger::always(&format!("TLS: {made} {}, SHA-256 {sha}", cert.display()));
    Ok(loaded.config)
}

/// SIGINT and SIGTERM shut down (a second one at once); SIGHUP reads the
/// certificate again, keeping the old one if the new cannot be used. The
/// files are read on this thread, never on the event loop. systemd hears
/// of each reload and of the shutdown (`notify`).
fn spawn_signal_thread(
    shutdown: ShutdownHandle,
    tls: TlsHandle,
    source: Option<TlsSource>,
) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for sig in signals.forever() {
                if sig == SIGHUP {
                    notify(Notify::Reloading);
                    match &source {
                        None => info!("SIGHUP: no TLS certificate to read again"),
                        Some(source) => match load_tls(source) {
                            Ok(cfg) => tls.replace(cfg),
                            Err(e) => warn!("SIGHUP: {e}; keeping the current certificate"),
                        },
                    }
                    notify(Notify::Ready);
                } else if !stopping {
                    stopping = true;
                    info!("signal {sig} received, shutting down (again to stop at once)");
                    notify(Notify::Stopping);
                    shutdown.shutdown();
                } else {
                    warn!("signal {sig} received again, stopping without waiting");
                    chatd::server::logger::flush(Duration::from_millis(200));
                    std::process::exit(1);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

fn cost(args: &Args) -> Result<Cost, String> {
    let cost = Cost {
        memory_kib: args.argon2_memory,
        passes: args.argon2_passes,
    };
    cost.check()?;
    Ok(cost)
}

/// `chatd accounts ...`: one short transaction on the database, beside a
/// running server if there is one (it notices within a second).
fn accounts(args: &Args, cmd: &AccountsCmd) -> Result<(), String> {
    if args.db != ":memory:" && !std::path::Path::new(&args.db).exists() {
        return Err(format!("no database at {} (use --db PATH)", args.db));
    }
    let store =
        Store::open(&args.db, 0).map_err(|e| format!("cannot use database {}: {e}", args.db))?;
    match cmd {
        AccountsCmd::List => {
            let accounts = store.accounts()?;
            for (name, created) in &accounts {
                println!("{name}\tregistered {created}");
            }
            eprintln!("{} accounts", accounts.len());
        }
        AccountsCmd::Delete { name } => {
            if !store.delete_account(name)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("deleted {name}");
        }
        AccountsCmd::Passwd { name } => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let password = line
                .strip_suffix('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .unwrap_or(&line);
            check_password(password).map_err(|e| e.to_string())?;
            if store.password_hash(name)?.is_none() {
                return Err(format!("no account named {name}"));
            }
            let hash = password::hash(password, cost(args)?)?;
            if !store.set_password_hash(name, &hash)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("password changed for {name}");
        }
    }
    Ok(())
}

/// `chatd backup DEST`: a consistent copy, beside a running server or not.
fn backup(args: &Args, dest: &std::path::Path) -> Result<(), String> {
    if args.db == ":memory:" {
        return Err("an in-memory database cannot be backed up (use --db PATH)".into());
    }
    let copied = chatd::store::backup::backup(std::path::Path::new(&args.db), dest)?;
    println!(
        "backed up {} to {}: {}, {} accounts, {} rooms, {} messages",
        args.db,
        dest.display(),
        size(copied.bytes),
        copied.accounts,
        copied.rooms,
        copied.messages
    );
    Ok(())
}

/// `bytes` for people: 5.2 MiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `chatd check`: a summary and exit 0, or each problem on a line of its
/// own (on stdout, the report) and exit 1.
fn check(args: &Args) -> Result<(), String> {
    if args.db == ":memory:" {
        return Err("an in-memory database has nothing to check (use --db PATH)".into());
    }
    match chatd::store::check::check(std::path::Path::new(&args.db)) {
        Ok(s) => {
            println!(
                "ok: {} accounts, {} rooms, {} messages",
                s.accounts, s.rooms, s.messages
            );
            Ok(())
        }
        Err(problems) => {
            for p in &problems.list {
                println!("{p}");
            }
            if problems.more > 0 {
                println!("... and {} more problems", problems.more);
            }
            let n = problems.list.len() + problems.more;
            let s = if n == 1 { "" } else { "s" };
            Err(format!("{}: {n} problem{s} found", args.db))
        }
    }
}

/// What chatd tells systemd (`Type=notify`) about itself.
#[derive(Clone, Copy, Debug)]
enum Notify {
    /// Listening, or done reloading.
    Ready,
    /// SIGHUP is being handled.
    Reloading,
    /// Shutting down.
    Stopping,
}

/// Tells the service manager `state`; nothing happens unless it set
/// NOTIFY_SOCKET. A failure is logged, never fatal: chatd serves anyway.
fn notify(state: Notify) {
    use sd_notify::NotifyState;
    let sent = match state {
        Notify::Ready => sd_notify::notify(&[NotifyState::Ready]),
        Notify::Stopping => sd_notify::notify(&[NotifyState::Stopping]),
        // systemd wants the time the reload began, to match it with the
        // reload it asked for.
        Notify::Reloading => NotifyState::monotonic_usec_now()
            .and_then(|now| sd_notify::notify(&[NotifyState::Reloading, now])),
    };
    if let Err(e) = sent {
        warn!("cannot tell systemd {state:?}: {e}");
    }
}
