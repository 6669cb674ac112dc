//! Helpers for the integration tests: a `Server` guard that runs the real
//! `chatd` binary on a free loopback port and collects its log, and a
//! `Client` that talks the text protocol over real TCP (plain, or inside
//! TLS) with a timeout on every read. Each test binary uses a different
//! subset. `json` holds the
//! JSON-mode helpers, `time` the checks of the server's time stamps.
#![allow(dead_code)]

pub mod flood;
pub mod json;
pub mod nats;
pub mod proc;
pub mod time;
pub mod ws;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one read or wait may take. Generous: tests run in debug
/// builds, in parallel, on small machines.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The line every connection gets first.
pub const WELCOME: &str = "* welcome to chatd; choose a name: 1-32 letters, digits, _ or -";

/// Lines the server wrote to stderr so far, and a signal for new ones.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

/// A running `chatd`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Log>,
}

/// The path of the binary under test.
pub fn chatd_path() -> &'static str {
    env!("CARGO_BIN_EXE_chatd")
}

/// What a test does with the server's stderr after `listening on`.
#[derive(Clone, Copy)]
pub enum Stderr {
    /// Keep reading it into the log (`wait_log` works).
    Read,
    /// Close the read end of the pipe.
    Close,
    /// Keep the pipe open but never read it again.
    Stall,
}

impl Server {
    /// Starts `chatd --listen 127.0.0.1:0 ARGS` and waits until it listens.
    /// Unless ARGS name a database, it keeps everything in memory.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(chatd_path());
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--db") {
            cmd.args(["--db", ":memory:"]);
        }
        Server::spawn(cmd, Stderr::Read)
    }

    /// Starts `cmd` (which must run chatd with `--listen 127.0.0.1:0`) and
    /// waits for its `listening on` line; `stderr` says what then becomes
    /// of its stderr pipe.
    pub fn spawn(mut cmd: Command, stderr: Stderr) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start chatd");
        let pipe = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Log::default());
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut tx = Some(tx);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                // The address ends the text line, or the JSON line's
                // `msg` string (`--log-format json`).
                let addr = line.split_once("listening on ").map(|(_, a)| {
                    a.split(|c: char| c == '"' || c.is_whitespace())
                        .next()
                        .unwrap_or_default()
                        .to_string()
                });
                sink.lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
                sink.grew.notify_all();
                if let Some(addr) = addr
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                    match stderr {
                        Stderr::Read => {}
                        // Dropping the reader closes the pipe's read end.
                        Stderr::Close => return,
                        // Holding the reader unread keeps the pipe open and
                        // lets it fill; the thread ends with the test process.
                        Stderr::Stall => loop {
                            thread::park();
                        },
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let lines = log.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!("chatd did not log `listening on` within {TIMEOUT:?}; stderr: {lines:#?}");
            }
        };
        let addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("bad address in `listening on {addr}`: {e}"));
        Server { child, addr, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A new connection, with the welcome line not yet read.
    #[track_caller]
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A new connection named `name`, in the lobby.
    #[track_caller]
    pub fn login(&self, name: &str) -> Client {
        // Speaking first, as a client may: the welcome then comes at once
        // instead of after the server's wait for a silent client.
        let mut c = self.connect();
        c.send(name);
        c.expect(WELCOME);
        c.expect_prefix(&format!("* you joined #lobby as {name} ("));
        c
    }

    /// Logs in `names` in order; every earlier user reads each later one's
    /// join notice, so all are at the same point afterwards.
    #[track_caller]
    pub fn login_all(&self, names: &[&str]) -> Vec<Client> {
        let mut clients: Vec<Client> = Vec::new();
        for name in names {
            let c = self.login(name);
            for earlier in &mut clients {
                earlier.expect(&format!("* {name} has joined #lobby"));
            }
            clients.push(c);
        }
        clients
    }

    /// Two users, `a` and `b`, in the lobby.
    #[track_caller]
    pub fn pair(&self) -> (Client, Client) {
        let mut c = self.login_all(&["a", "b"]).into_iter();
        (c.next().unwrap(), c.next().unwrap())
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    #[track_caller]
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_where(needle, |l| l.contains(needle))
    }

    /// Waits for a log line satisfying `pred` (described by `what` in the
    /// failure message) and returns it.
    #[track_caller]
    pub fn wait_log_where(&self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let mut lines = self.lines();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // The lock is released first, so the guard's drop can
                // still print the log.
                let all = lines.clone();
                drop(lines);
                panic!("no log line matching {what:?} within {TIMEOUT:?}; log: {all:#?}");
            }
            lines = match self.log.grew.wait_timeout(lines, left) {
                Ok((lines, _)) => lines,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn lines(&self) -> MutexGuard<'_, Vec<String>> {
        self.log.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet (so the pid cannot have been reused).
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill failed: {}", io::Error::last_os_error());
    }

    /// Waits for the process to exit, failing after `limit`.
    #[track_caller]
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_child(&mut self.child, limit)
    }

    /// User plus system CPU time the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("cannot read /proc/PID/stat");
        // Fields after the command name, which is in parentheses and may
        // hold spaces: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/PID/status");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmHWM value");
        kb * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() {
            // Shown with the failure: what the server saw.
            eprintln!("chatd log:\n{}", self.log().join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to exit, killing it and failing after `limit`.
#[track_caller]
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an operator command, `chatd ARGS` with cheap password hashing,
/// `stdin` given; waits for it (at most `TIMEOUT`).
pub fn operator_command(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(chatd_path())
        .args(["--argon2-memory", "64", "--argon2-passes", "1"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run chatd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    wait_child(&mut child, TIMEOUT);
    child.wait_with_output().expect("chatd output")
}

/// Waits for `child` like `wait_child`, then reads all it wrote to its
/// piped stderr. The stderr is read only after the exit: enough for a
/// process that writes little (a full pipe would hold it up until `limit`).
#[track_caller]
pub fn wait_with_stderr(child: &mut Child, limit: Duration) -> (ExitStatus, String) {
    let status = wait_child(child, limit);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .unwrap_or_else(|e| panic!("cannot read the stderr of a child: {e}"));
    (status, stderr)
}

/// Stops `server` with SIGTERM the way a clean shutdown goes: each (text)
/// client is told and hangs up, and the server exits 0.
#[track_caller]
pub fn stop(mut server: Server, clients: Vec<Client>) {
    server.signal(libc::SIGTERM);
    for mut c in clients {
        c.read_until(|l| l == "* server is shutting down");
    }
    let status = server.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "chatd exited with {status}");
}

/// The line that tells `name` it is in the lobby with `users` users in all.
pub fn joined(name: &str, users: usize) -> String {
    let users = if users == 1 {
        "1 user".to_string()
    } else {
        format!("{users} users")
    };
    format!("* you joined #lobby as {name} ({users} here); /help lists the commands")
}

/// One client connection speaking the text protocol.
pub struct Client {
    /// Reads through the buffer; writes go to the transport underneath, so
    /// a client holds one descriptor (the 1000-connection test needs that).
    reader: BufReader<Transport>,
}

/// What a client's bytes travel over. The TLS state is boxed: a plain
/// client, the common case by far, stays two words big.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    /// The socket underneath, for options, peeks and shutdowns.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

impl Client {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// Connects with a small receive buffer, for a client that will stop
    /// reading: the kernel then holds little on its behalf.
    #[track_caller]
    pub fn connect_small_rcvbuf(addr: SocketAddr, bytes: usize) -> Client {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Client::from_stream(socket.into())
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        prepare(&stream);
        Client {
            reader: BufReader::new(Transport::Plain(stream)),
        }
    }

    /// The socket, for options and shutdowns (underneath TLS on a TLS
    /// client: writing to it directly would break the TLS stream).
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref().socket()
    }

    /// Sends `line` and a LF.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.send_raw(&bytes);
    }

    /// Sends bytes as they are (as plaintext inside TLS on a TLS client).
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let transport = self.reader.get_mut();
        transport
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send failed: {e}"));
        // rustls may hold records back until asked to write them all.
        if let Transport::Tls(_) = transport {
            transport
                .flush()
                .unwrap_or_else(|e| panic!("send failed: {e}"));
        }
    }

    /// The next line, without its LF. Fails on timeout or EOF.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("connection closed while waiting for a line"),
            Ok(_) if buf.last() != Some(&b'\n') => panic!(
                "connection closed in the middle of a line: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "no line within {TIMEOUT:?} (partial: {:?})",
                    String::from_utf8_lossy(&buf)
                )
            }
            Err(e) => panic!("read failed: {e}"),
        }
        buf.pop();
        String::from_utf8(buf)
            .unwrap_or_else(|e| panic!("server sent invalid UTF-8: {:?}", e.as_bytes()))
    }

    /// The next line must be exactly `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want, "unexpected line");
    }

    /// The next lines must be exactly `want`, in order.
    #[track_caller]
    pub fn expect_lines(&mut self, want: &[&str]) {
        for w in want {
            self.expect(w);
        }
    }

    /// The next line must start with `prefix`; returns it.
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self.line();
        assert!(
            got.starts_with(prefix),
            "expected a line starting with {prefix:?}, got {got:?}"
        );
        got
    }

    /// Reads until a line satisfies `pred`; returns the lines before it.
    #[track_caller]
    pub fn read_until(&mut self, mut pred: impl FnMut(&str) -> bool) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let l = self.line();
            if pred(&l) {
                return skipped;
            }
            skipped.push(l);
        }
    }

    /// Exactly `buf.len()` bytes, whatever they are (a binary frame).
    #[track_caller]
    pub fn read_bytes(&mut self, buf: &mut [u8]) {
        self.reader
            .read_exact(buf)
            .expect("bytes within the timeout");
    }

    /// The server must close the connection with nothing more sent.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => {}
            Ok(_) => panic!(
                "expected EOF, got {:?}",
                String::from_utf8_lossy(&buf).trim_end()
            ),
            Err(e) => panic!("expected EOF, got error: {e}"),
        }
    }

    /// Reads everything until EOF (bounded by the read timeout).
    #[track_caller]
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        match self.reader.read_to_end(&mut all) {
            Ok(_) => all,
            Err(e) => panic!("expected EOF after {} bytes, got error: {e}", all.len()),
        }
    }

    /// Sends FIN: the server sees EOF, the client can still read.
    pub fn shutdown_write(&self) {
        self.stream()
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)");
    }

    /// Sends `/who` and returns its listing, which must be what comes next.
    #[track_caller]
    pub fn who(&mut self) -> Vec<String> {
        self.send("/who");
        let mut lines = vec![self.expect_prefix("* users in #")];
        lines.extend(self.read_until(|l| l == "* end of /who"));
        lines.push("* end of /who".to_string());
        lines
    }
}

/// Read and write timeouts on every test socket, so no wait is unbounded,
/// and no Nagle delay between a test's small writes.
fn prepare(stream: &TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
}

/// How to open a test connection's socket, when the plain `connect` will
/// not do.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dial {
    /// Bound before connecting: a loopback address other than 127.0.0.1
    /// looks like another host to the server's address checks.
    pub from: Option<IpAddr>,
    /// A small receive buffer, for a client that will stop reading: the
    /// kernel then holds little on its behalf.
    pub rcvbuf: Option<usize>,
}

impl Dial {
    pub fn from(ip: &str) -> Dial {
        Dial {
            from: Some(ip.parse().expect("a source address")),
            ..Dial::default()
        }
    }

    /// A connected socket to `addr`.
    #[track_caller]
    pub fn socket(self, addr: SocketAddr) -> TcpStream {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
        if let Some(bytes) = self.rcvbuf {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        if let Some(ip) = self.from {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .unwrap_or_else(|e| panic!("cannot bind {ip}: {e}"));
        }
        socket
            .connect_timeout(&addr.into(), TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let stream: TcpStream = socket.into();
        prepare(&stream);
        stream
    }
}

/// Which server certificates a TLS test client accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Whatever the server presents: the test checks the fingerprint
    /// itself (`Client::peer_fingerprint`), as a pin would.
    Any,
    /// Only a chain ending in this certificate, for the name `localhost`
    /// (a self-signed certificate is its own root), checked the way a
    /// real client checks.
    Root(rustls::pki_types::CertificateDer<'static>),
}

/// A client configuration on the crate's provider, so the test speaks
/// exactly the TLS that chatd and chat-client speak.
pub fn tls_config(trust: &Trust) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(chatd::crypto::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let config = match trust {
        Trust::Any => builder
            .dangerous()
            // Any certificate, but the handshake's signatures are checked.
            .with_custom_certificate_verifier(chatd::crypto::CertCheck::new(
                |_: &chatd::crypto::Shown<'_>| Ok(()),
            ))
            .with_no_client_auth(),
        Trust::Root(cert) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert.clone()).expect("a usable root certificate");
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Arc::new(config)
}

/// A client connection to `localhost` (the name chatd's self-signed
/// certificate carries), its ClientHello not yet written.
pub fn tls_client(trust: &Trust) -> rustls::ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    rustls::ClientConnection::new(tls_config(trust), name).expect("a client connection")
}

impl Client {
    /// Runs a TLS handshake on `stream` to its end and returns the client
    /// speaking inside it, its welcome not yet read. Fails if the
    /// handshake fails.
    #[track_caller]
    pub fn tls_over(stream: TcpStream, trust: &Trust) -> Client {
        Client::try_tls_over(stream, trust).unwrap_or_else(|e| panic!("TLS handshake failed: {e}"))
    }

    /// Like `tls_over`, with the handshake's failure returned.
    pub fn try_tls_over(mut stream: TcpStream, trust: &Trust) -> io::Result<Client> {
        prepare(&stream);
        let mut conn = tls_client(trust);
        while conn.is_handshaking() {
            conn.complete_io(&mut stream)?;
        }
        // The client's last handshake flight may still be queued; the
        // server cannot finish its side (and greet) without it.
        while conn.wants_write() {
            conn.write_tls(&mut stream)?;
        }
        let tls = rustls::StreamOwned::new(conn, stream);
        Ok(Client {
            reader: BufReader::new(Transport::Tls(Box::new(tls))),
        })
    }

    /// The certificate the server presented (its end-entity one); None on
    /// a plain connection.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        match self.reader.get_ref() {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.clone().into_owned()),
        }
    }

    /// The SHA-256 fingerprint of the presented certificate, in the form
    /// chatd logs.
    #[track_caller]
    pub fn peer_fingerprint(&self) -> String {
        let cert = self
            .peer_certificate()
            .expect("a TLS client with a server certificate");
        chatd::crypto::fingerprint(&cert)
    }

    /// Chooses `name` on a new connection (plain or TLS) and checks the
    /// answer: the lobby, where `users` are then.
    #[track_caller]
    pub fn choose_name(&mut self, name: &str, users: usize) {
        self.expect(WELCOME);
        self.send(name);
        self.expect(&joined(name, users));
    }

    /// The TLS protocol version agreed on; None on a plain connection.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self.reader.get_ref() {
            Transport::Plain(_) => None,
            Transport::Tls(t) => t.conn.protocol_version(),
        }
    }
}

impl Server {
    /// A new TLS connection, handshake done, welcome not yet read.
    #[track_caller]
    pub fn connect_tls(&self, trust: &Trust) -> Client {
        Client::tls_over(Dial::default().socket(self.addr), trust)
    }

    /// A new plain connection as `dial` says, welcome not yet read.
    #[track_caller]
    pub fn connect_with(&self, dial: Dial) -> Client {
        Client::from_stream(dial.socket(self.addr))
    }

    /// A new TLS connection as `dial` says, handshake done.
    #[track_caller]
    pub fn connect_tls_with(&self, dial: Dial, trust: &Trust) -> Client {
        Client::tls_over(dial.socket(self.addr), trust)
    }
}

/// The terminal client binary under test.
pub fn chat_client_path() -> &'static str {
    env!("CARGO_BIN_EXE_chat-client")
}

/// A listener on a free loopback port, for a test that plays the server
/// itself (to send what chatd never would).
pub fn fake_server() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a fake server")
}

/// Accepts one connection on `listener` within `TIMEOUT`.
#[track_caller]
pub fn accept(listener: &std::net::TcpListener) -> Client {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                return Client::from_stream(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nobody connected within {TIMEOUT:?}"
                );
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// A file path for one test's use, removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> TempPath {
        let name = format!("chatd-test-{}-{tag}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }

    /// The file's lines, failing if it cannot be read.
    #[track_caller]
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.0.display()))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Client {
    /// Whether anything from the server is waiting to be read right now
    /// (already buffered, or in the socket), without blocking. Plain
    /// clients only: on TLS, bytes in the socket need not be data.
    #[track_caller]
    pub fn has_input(&self) -> bool {
        assert!(
            matches!(self.reader.get_ref(), Transport::Plain(_)),
            "has_input cannot tell TLS records from data"
        );
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let stream = self.stream();
        stream.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let ready = match stream.peek(&mut byte) {
            // EOF counts: the server did something.
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("peek failed: {e}"),
        };
        stream.set_nonblocking(false).expect("blocking");
        ready
    }
}

/// A database file for one test (a unique name under the temp directory),
/// removed when dropped together with SQLite's `-wal`, `-shm` and
/// `-journal` files and chatd's `.cert.pem` and `.key.pem` beside it.
pub struct TempDb(pub TempPath);

impl TempDb {
    pub fn new(tag: &str) -> TempDb {
        let db = TempDb(TempPath::new(&format!("{tag}.db")));
        db.remove_all();
        db
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn remove_all(&self) {
        // The certificate `--tls-self-signed` keeps beside the database too.
        for suffix in ["", "-wal", "-shm", "-journal", ".cert.pem", ".key.pem"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.as_str()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove_all();
    }
}
