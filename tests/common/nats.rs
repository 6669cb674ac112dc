//! A real `nats-server` with JetStream for the cluster tests: its own
//! store in a temporary directory, a free loopback port, stopped by PID
//! (and started again on the same port and store, as after an outage).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{Server, TIMEOUT};

pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl Nats {
    /// Starts `nats-server -js` on a free loopback port.
    pub fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "chatd-nats-{}-{port}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("a store directory");
        let mut nats = Nats {
            child: None,
            port,
            dir,
        };
        nats.resume();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and store; returns once it
    /// accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server (the Debian package nats-server)");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and deletes everything it stored, as a server
    /// whose disk was lost.
    pub fn wipe(&mut self) {
        self.stop();
        std::fs::remove_dir_all(&self.dir).expect("remove the store");
        std::fs::create_dir_all(&self.dir).expect("a store directory");
    }

    /// Stops the server by its PID (SIGKILL: nothing flushed politely).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nats_server() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server")
}

/// A chatd node of the cluster on `nats`, named `node`, with `more`
/// flags; recording in memory unless `more` names a database.
pub fn node(nats: &Nats, node: &str, more: &[&str]) -> Server {
    let url = nats.url();
    let mut args = vec![
        "--cluster",
        &url,
        "--node",
        node,
        "--max-per-ip",
        "0",
        "--argon2-memory",
        "64",
        "--argon2-passes",
        "1",
    ];
    args.extend_from_slice(more);
    Server::start(&args)
}
