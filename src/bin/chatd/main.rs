//! `chatd`: flags, logging, binding, signals and readiness for systemd;
//! the operator's commands are in `ops`; everything else is the library.

mod ops;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chatd::chat::ChatConfig;
use chatd::config::{self as file, whole};
use chatd::server::ConfigHandle;
use chatd::server::logger::LogFormat;
use chatd::server::tls::{TlsConfig, TlsSource};
use chatd::server::{self, Config, Server, ShutdownHandle, TlsHandle};
use chatd::store::password::Cost;
use chatd::wire::cidr::Cidr;
use chatd::wire::proto::MAX_HISTORY;
use clap::{CommandFactory, FromArgMatches, Parser};
use log::{LevelFilter, error, info, warn};
use ops::Cmd;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::BTreeMap;
use std::ffi::OsString;

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
          value_parser = whole::<usize, 0, { MAX_HISTORY as u64 }>)]
    history: usize,

    /// Messages recorded per room; older ones are deleted. 0 records
    /// nothing.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = whole::<usize, 0, 1_000_000_000>)]
    history_keep: usize,

    /// Seconds before a first wrong password is answered; the delay
    /// doubles with each further failure for the account or the address
    /// (up to 30 s).
    #[arg(long, default_value_t = 0.5, value_name = "SECS",
          value_parser = parse_secs)]
    login_delay: f64,

    /// Memory of each new password hash (Argon2id), in KiB.
    #[arg(long, default_value_t = Cost::default().memory_kib, value_name = "KIB", global = true,
          value_parser = whole::<u32, 0, 4_294_967_295>)]
    argon2_memory: u32,

    /// Passes of each new password hash (Argon2id).
    #[arg(long, default_value_t = Cost::default().passes, value_name = "N", global = true,
          value_parser = whole::<u32, 0, 4_294_967_295>)]
    argon2_passes: u32,

    /// Most password checks waiting at once; more are answered
    /// "server busy".
    #[arg(long, default_value_t = server::DEFAULT_AUTH_QUEUE, value_name = "N",
          value_parser = whole::<usize, 1, 4_294_967_295>)]
    auth_queue: usize,

    /// Address to listen on. Port 0 picks a free port; 0.0.0.0 opens the
    /// server to the network (in plain text).
    #[arg(long, default_value = "127.0.0.1:5000", value_name = "HOST:PORT")]
    listen: String,

    /// Longest line a client may send, in bytes (line terminator excluded).
    /// A longer one is answered with an error and discarded as it arrives.
    #[arg(long, default_value_t = server::DEFAULT_MAX_LINE, value_name = "BYTES",
          value_parser = whole::<usize, 1, 4_294_967_295>)]
    max_line: usize,

    /// Most connections at once, named or not. A newcomer past this gets
    /// "! server full" and is closed.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CLIENTS, value_name = "N",
          value_parser = whole::<usize, 1, 4_294_967_295>)]
    max_clients: usize,

    /// Most connections from one address at once, named or not; one more
    /// is told "! too many connections from your address" and closed. 0
    /// means no limit.
    #[arg(long, default_value_t = server::DEFAULT_MAX_PER_IP, value_name = "N",
          value_parser = whole::<usize, 0, 4_294_967_295>)]
    max_per_ip: usize,

    /// Guests (unregistered names) may connect and read, but need an
    /// account to send room or direct messages.
    #[arg(long)]
    require_account: bool,

    /// open: anyone may /register; closed: the operator creates accounts
    /// (chatd accounts add NAME).
    #[arg(long, value_enum, default_value_t = Registration::Open, value_name = "open|closed")]
    registration: Registration,

    /// Seconds a session token works (the web client stays signed in with
    /// it); a new password or a logout ends it sooner.
    #[arg(long, default_value_t = 2_592_000, value_name = "SECS",
          value_parser = whole::<u64, 1, 315_360_000>)]
    token_ttl: u64,

    /// Registrations per address per hour; 0 means no limit.
    #[arg(long, default_value_t = 5, value_name = "N",
          value_parser = whole::<u32, 0, 4_294_967_295>)]
    register_rate: u32,

    /// Seconds a new connection has to choose a name before it is closed.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = whole::<u64, 1, 86_400>)]
    handshake_timeout: u64,

    /// Lines per second one client may send, with bursts of twice that; 0
    /// means unlimited. A client over it is not read from until its budget
    /// refills (TCP back-pressure): nothing is dropped. Replies to the
    /// client itself cost one more line per 4 KiB.
    #[arg(long, default_value_t = server::DEFAULT_RATE, value_name = "LINES",
          value_parser = whole::<u32, 0, 4_294_967_295>)]
    rate: u32,

    /// Most unsent output one client may have queued, in bytes. A client that
    /// reads too slowly to stay under it is disconnected; nobody else waits.
    #[arg(long, default_value_t = server::DEFAULT_MAX_OUTBUF, value_name = "BYTES",
          value_parser = whole::<usize, 1, { u64::MAX }>)]
    max_outbuf: usize,

    /// Joins, leaves and status changes are announced only in rooms of at
    /// most this many members; messages always go to everyone.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = whole::<usize, 0, 4_294_967_295>)]
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
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        conflicts_with = "tls_self_signed"
    )]
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

    /// Another origin (scheme://host[:port]) whose pages may open the chat's
    /// WebSocket, besides the server's own; repeatable.
    #[arg(long, value_name = "ORIGIN")]
    web_origin: Vec<String>,

    /// Join a cluster: one chat with every node using the same NATS server
    /// (JetStream on) and the same --cluster-name. nats://HOST:PORT,
    /// repeatable for several servers of one NATS cluster. With
    /// `accounts` or `audit`: act on the cluster's accounts and audit.
    #[arg(long, value_name = "URL", global = true)]
    cluster: Vec<String>,

    /// The cluster's name: its stream and buckets in NATS are named after it.
    #[arg(long, value_name = "NAME", default_value = "chatd", value_parser = cluster_name,
          global = true)]
    cluster_name: String,

    /// This node's name in the cluster, its logs and metrics; unique per
    /// node. Default: the host name and the listening port.
    #[arg(long, value_name = "NAME", value_parser = cluster_name)]
    node: Option<String>,

    /// More log detail (-v debug, -vv trace). Message text is only ever
    /// logged at debug level or below.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,

    /// Less log detail (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,

    /// Serve GET /metrics (Prometheus) and GET /healthz over plain HTTP on
    /// this address; keep it private (e.g. 127.0.0.1:9100). Off unless
    /// given.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Settings from a TOML file whose keys are these flags' long names
    /// (`max-line = 4096`); flags given here win. SIGHUP reads it again
    /// and applies what can change while running.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log detail by name, as a config key would say it (-v and -q win).
    #[arg(long, value_enum, value_name = "LEVEL", conflicts_with_all = ["verbose", "quiet"])]
    log_level: Option<LogLevel>,

    /// How log lines are written: text, or one JSON object per line
    /// (`ts`, `level`, `msg`) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
}

/// `--registration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Registration {
    Open,
    Closed,
}

/// `--log-level` and the `log-level` key.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=60.0).contains(&v) => Ok(v),
        _ => Err("expected seconds from 0 to 60".into()),
    }
}

fn level(args: &Args) -> LevelFilter {
    if let (Some(level), 0, 0) = (args.log_level, args.verbose, args.quiet) {
        return match level {
            LogLevel::Error => LevelFilter::Error,
            LogLevel::Warn => LevelFilter::Warn,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Trace => LevelFilter::Trace,
        };
    }
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

/// The command line with its config file (if `--config`) under it: the
/// arguments, and what every key is set to (for SIGHUP's comparison).
/// `argv` is the command line as given, program name first.
fn load(argv: &[OsString]) -> Result<(Args, BTreeMap<String, String>), String> {
    let cmd = Args::command();
    let cli = cmd
        .clone()
        .try_get_matches_from(argv)
        .map_err(|e| clap_message(&e))?;
    let matches = match cli.get_one::<PathBuf>("config") {
        None => cli,
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("config {shown}: cannot read it: {e}"))?;
            let extra = file::file_args(&shown, &text, &cmd, |id| file::given(&cli, id))
                .map_err(|e| e.to_string())?;
            let full: Vec<OsString> = argv
                .iter()
                .take(1)
                .chain(&extra)
                .chain(argv.iter().skip(1))
                .cloned()
                .collect();
            cmd.clone()
                .try_get_matches_from(full)
                .map_err(|e| format!("config {shown}: {}", clap_message(&e)))?
        }
    };
    settled(&cmd, &matches)
}

/// The arguments in `matches`, and what every key is set to.
fn settled(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<(Args, BTreeMap<String, String>), String> {
    let args = Args::from_arg_matches(matches).map_err(|e| clap_message(&e))?;
    let mut settings = file::settings(cmd, matches);
    // The level in force, however it was said (-v, -q, or by name).
    settings.insert("log-level".into(), level(&args).as_str().to_lowercase());
    Ok((args, settings))
}

/// A clap error on one line, without its `error: ` and its advice.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let said: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let said = said.join(" ");
    said.strip_prefix("error: ").unwrap_or(&said).to_string()
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // Help, version and command-line mistakes: clap's own output and exit.
    Args::command().get_matches_from(&argv);
    let (args, settings) = match load(&argv) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(cmd) = &args.command {
        let done = match cmd {
            Cmd::Accounts(cmd) => ops::accounts(&args, cmd),
            Cmd::Backup { dest } => ops::backup(&args, dest),
            Cmd::Check => ops::check(&args),
            Cmd::Audit { limit } => ops::audit(&args, *limit),
        };
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chatd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = chatd::server::logger::init(level(&args), args.log_format) {
        eprintln!("chatd: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    let reload = Reload {
        argv,
        settings,
        source: tls_source(&args),
    };
    let code = match run(&args, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    };
    chatd::server::logger::flush(Duration::from_secs(1));
    code
}

fn run(args: &Args, reload: Reload) -> Result<(), String> {
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
    let metrics_listener = bind_metrics(args)?;
    let source = tls_source(args);
    let cfg = Config {
        hash_cost: cost(args)?,
        tls: match &source {
            Some(source) => Some(load_tls(source, true)?),
            None => None,
        },
        ..server_config(args)
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
    let handles = (server.tls_handle(), server.config_handle());
    spawn_signal_thread(server.shutdown_handle(), handles, reload)?;
    if let Some(metrics_listener) = metrics_listener {
        start_metrics(&mut server, metrics_listener)?;
    }
    // Logged whatever the level: scripts read the port from it.
    chatd::server::logger::always(&format!("listening on {local}"));
    notify(Notify::Ready);
    server.run().map_err(|e| format!("stopped: {e}"))
}

/// Binds `--metrics-listen` before anything starts, so a bad address stops
/// chatd at once.
fn bind_metrics(args: &Args) -> Result<Option<std::net::TcpListener>, String> {
    let Some(listen) = &args.metrics_listen else {
        return Ok(None);
    };
    let addr = listen
        .to_socket_addrs()
        .map_err(|e| format!("cannot use --metrics-listen {listen}: {e}"))?
        .next()
        .ok_or_else(|| format!("--metrics-listen {listen} resolves to no address"))?;
    let listener = server::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} (--metrics-listen): {e}"))?;
    Ok(Some(listener))
}

/// Serves /metrics and /healthz from their own threads.
fn start_metrics(server: &mut Server, listener: std::net::TcpListener) -> Result<(), String> {
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics-listen: {e}"))?;
    server::exporter::spawn(listener, server.metrics_handle())
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    if !local.ip().is_loopback() {
        warn!("metrics on {local} are reachable from the network: keep that address private");
    }
    // Logged whatever the level: scripts read the port from it.
    chatd::server::logger::always(&format!("metrics on {local}"));
    Ok(())
}

/// The server's settings from the flags, but for the hashing cost (checked
/// apart) and the certificate (read apart): at start, and at each SIGHUP
/// for the settings a running server takes.
fn server_config(args: &Args) -> Config {
    Config {
        max_line: args.max_line,
        max_clients: args.max_clients,
        max_per_ip: args.max_per_ip,
        rate: args.rate,
        max_outbuf: args.max_outbuf,
        chat: ChatConfig {
            announce_limit: args.announce_limit,
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            history: args.history,
            history_keep: args.history_keep,
            login_delay: Duration::from_secs_f64(args.login_delay),
            require_account: args.require_account,
            registration_open: args.registration == Registration::Open,
            register_rate: args.register_rate,
            token_ttl: args.token_ttl,
            ..ChatConfig::default()
        },
        db: args.db.clone(),
        auth_queue: args.auth_queue,
        require_tls: args.require_tls,
        allow_plain: if args.allow_plain.is_empty() {
            server::default_allow_plain()
        } else {
            args.allow_plain.clone()
        },
        web_origins: args.web_origin.clone(),
        cluster: cluster_settings(args),
        ..Config::default()
    }
}

fn cluster_name(s: &str) -> Result<String, String> {
    if chatd::cluster::valid_name(s) {
        Ok(s.to_string())
    } else {
        Err("use 1 to 64 letters, digits, '_' or '-'".into())
    }
}

/// How this node joins its cluster, under `--cluster`.
fn cluster_settings(args: &Args) -> Option<chatd::cluster::Settings> {
    if args.cluster.is_empty() {
        return None;
    }
    let node = args.node.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| cluster_name(h).is_ok())
            .unwrap_or_else(|| "node".into());
        match resolve(&args.listen).map(|a| a.port()) {
            Ok(port) if port != 0 => format!("{host}-{port}"),
            _ => format!("{host}-{}", std::process::id()),
        }
    });
    Some(chatd::cluster::Settings {
        urls: args.cluster.clone(),
        name: args.cluster_name.clone(),
        node,
        history_keep: args.history_keep,
    })
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
fn load_tls(source: &TlsSource, may_create: bool) -> Result<TlsConfig, String> {
    let loaded = source
        .load(may_create)
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

/// What SIGHUP needs to read the settings again and tell what changed.
struct Reload {
    /// The command line as given: its flags keep winning over the file.
    argv: Vec<OsString>,
    /// What each key is set to in the running server (a key that needs a
    /// restart keeps its running value here, so it is reported again).
    settings: BTreeMap<String, String>,
    /// Where the certificate in use comes from.
    source: Option<TlsSource>,
}

impl Reload {
    /// Reads the config file and the certificate again (without
    /// `--config`, the certificate only), hands the running server what it
    /// can take, and logs one line per changed key. A file that cannot be
    /// used changes nothing; the certificate is still read again, so a
    /// renewal is not held up by a mistake in the file.
    fn reread(&mut self, tls: &TlsHandle, handle: &ConfigHandle) {
        let config = self.settings_path();
        let (args, settings) = match config.as_ref().map(|_| load(&self.argv)) {
            None => {
                if self.source.is_none() {
                    info!("SIGHUP: no config file or TLS certificate to read again");
                }
                self.reread_certificate(tls);
                return;
            }
            Some(Err(e)) => {
                warn!("SIGHUP: {e}; keeping the current settings");
                self.reread_certificate(tls);
                return;
            }
            Some(Ok(loaded)) => loaded,
        };
        if let Err(e) = cost(&args) {
            warn!("SIGHUP: config: {e}; keeping the current settings");
            self.reread_certificate(tls);
            return;
        }
        let mut changes = file::diff(&self.settings, &settings, file::LIVE_KEYS);
        let source = tls_source(&args);
        match &source {
            // TLS cannot be taken away from a running server.
            None if self.source.is_some() => {
                for c in changes.iter_mut().filter(|c| c.key.starts_with("tls-")) {
                    c.live = false;
                }
                self.reread_certificate(tls);
            }
            None => {}
            Some(new) => match load_tls(new, false) {
                Ok(cfg) => {
                    tls.replace(cfg);
                    self.source = source.clone();
                }
                Err(e) => {
                    warn!("SIGHUP: {e}; keeping the current certificate");
                    // Not applied: tried again (and reported) next time.
                    changes.retain(|c| !c.key.starts_with("tls-"));
                }
            },
        }
        for c in changes.iter().filter(|c| !c.live) {
            warn!("{c}");
        }
        let applied: Vec<String> = (changes.iter().filter(|c| c.live))
            .map(ToString::to_string)
            .collect();
        for c in changes.iter().filter(|c| c.live) {
            self.settings.insert(c.key.clone(), c.new.clone());
        }
        if changes.is_empty() {
            let path = config.unwrap_or_default();
            info!("SIGHUP: config {path} read again: nothing changed");
        }
        chatd::server::logger::set_level(level(&args));
        // Handed over even if nothing changed: the loop logs the lines
        // once the new values are in force.
        handle.replace(server_config(&args), applied);
    }

    /// The config file named on the command line, if any.
    fn settings_path(&self) -> Option<String> {
        let cli = Args::command().try_get_matches_from(&self.argv).ok()?;
        let path = cli.get_one::<PathBuf>("config")?;
        Some(path.display().to_string())
    }

    fn reread_certificate(&self, tls: &TlsHandle) {
        if let Some(source) = &self.source {
            match load_tls(source, false) {
                Ok(cfg) => tls.replace(cfg),
                Err(e) => warn!("SIGHUP: {e}; keeping the current certificate"),
            }
        }
    }
}

/// SIGINT and SIGTERM shut down (a second one at once); SIGHUP reads the
/// config file and the certificate again (see `Reload`). Files are read
/// on this thread, never on the event loop. systemd hears of each reload
/// and of the shutdown (`notify`).
fn spawn_signal_thread(
    shutdown: ShutdownHandle,
    (tls, config): (TlsHandle, ConfigHandle),
    mut reload: Reload,
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
                    reload.reread(&tls, &config);
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../dist/chatd.toml");

    /// What every key is set to by `text` as a config file alone.
    fn settings_of(text: &str) -> BTreeMap<String, String> {
        let cmd = Args::command();
        let extra = file::file_args("dist/chatd.toml", text, &cmd, |_| false)
            .unwrap_or_else(|e| panic!("{e}"));
        let argv = std::iter::once(OsString::from("chatd")).chain(extra);
        let matches = cmd
            .clone()
            .try_get_matches_from(argv)
            .unwrap_or_else(|e| panic!("{}", clap_message(&e)));
        settled(&cmd, &matches).expect("settled").1
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        assert_eq!(settings_of(EXAMPLE), settings_of(""));
    }

    #[test]
    fn the_example_file_has_every_key_and_its_examples_are_valid() {
        let cmd = Args::command();
        let mut keys: Vec<&str> = file::file_keys(&cmd)
            .iter()
            .filter_map(|a| a.get_long())
            .collect();
        keys.sort();
        for key in keys {
            let set = EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} = ")));
            let shown = EXAMPLE
                .lines()
                .any(|l| l.starts_with(&format!("# {key} = ")));
            assert!(set || shown, "dist/chatd.toml does not show {key}");
        }
        for line in EXAMPLE.lines() {
            if let Some(example) = line.strip_prefix("# ")
                && example.contains(" = ")
            {
                file::file_args("dist/chatd.toml", example, &cmd, |_| false)
                    .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            }
        }
    }

    #[test]
    fn flags_and_keys_share_their_checks() {
        let cmd = Args::command();
        let e = file::file_args("f", "max-clients = 0\n", &cmd, |_| false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config f:1: key \"max-clients\": expected a whole number from 1 to 4294967295"
        );
        let e = Args::try_parse_from(["chatd", "--max-clients", "0"]).unwrap_err();
        assert!(
            clap_message(&e).ends_with("expected a whole number from 1 to 4294967295"),
            "{e}"
        );
    }
}
