//! A program the test drives through pipes: `chat-client` in pipe mode,
//! or another client such as `openssl s_client`. Every read has a timeout;
//! the process is killed when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;

use super::{Server, TIMEOUT, WELCOME, chat_client_path, wait_child};

/// A `chat-client` whose stdin and stdout are pipes held by the test.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    /// stdout, line by line, raw (the test checks the bytes).
    lines: Receiver<Vec<u8>>,
    stderr: Receiver<String>,
}

impl Proc {
    /// Runs `chat-client ARGS` with `stdin` as its input.
    pub fn spawn_with(args: &[&str], stdin: Stdio) -> Proc {
        let mut cmd = Command::new(chat_client_path());
        cmd.args(args).env_remove("NO_COLOR");
        Proc::spawn_command(cmd, stdin)
    }

    /// Runs any program that talks on stdin and stdout (openssl s_client).
    pub fn spawn_command(mut cmd: Command, stdin: Stdio) -> Proc {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chat-client");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut all = String::new();
            let _ = err.read_to_string(&mut all);
            let _ = tx.send(all);
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, Stdio::piped())
    }

    /// A client of `server`, piped, not yet named.
    pub fn connect(server: &Server, extra: &[&str]) -> Proc {
        let port = server.addr.port().to_string();
        let mut args = extra.to_vec();
        args.extend(["127.0.0.1", port.as_str()]);
        Proc::spawn(&args)
    }

    /// A client of `server` named `name`, in the lobby.
    pub fn login(server: &Server, name: &str) -> Proc {
        let mut p = Proc::connect(server, &[]);
        p.expect(WELCOME);
        p.send(name);
        p.expect_prefix(&format!("* you joined #lobby as {name} ("));
        p
    }

    #[track_caller]
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to chat-client");
        stdin.flush().expect("flush");
    }

    /// Sends bytes as they are, all at once.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to the program");
        stdin.flush().expect("flush");
    }

    /// Sends `line` if the program still takes input (it may have exited).
    pub fn try_send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        }
    }

    /// Its stdin, for a writer of its own (a thread feeding a long script).
    #[track_caller]
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin still open")
    }

    /// Closes stdin: the client's input has ended.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, raw, without its LF.
    #[track_caller]
    pub fn raw_line(&mut self) -> Vec<u8> {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(mut line) => {
                assert_eq!(line.pop(), Some(b'\n'), "stdout ended mid-line: {line:?}");
                line
            }
            Err(_) => panic!("no line on stdout within {TIMEOUT:?}"),
        }
    }

    #[track_caller]
    pub fn line(&mut self) -> String {
        String::from_utf8(self.raw_line()).expect("stdout is UTF-8")
    }

    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Skips stdout lines until one contains `needle`.
    #[track_caller]
    pub fn expect_containing(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if String::from_utf8_lossy(&line).contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} on stdout within {TIMEOUT:?}"),
            }
        }
    }

    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self.line();
        assert!(
            got.starts_with(prefix),
            "expected {prefix:?}..., got {got:?}"
        );
        got
    }

    /// Waits for the exit; returns the status, what remained on stdout
    /// and everything on stderr.
    #[track_caller]
    pub fn wait(mut self) -> (ExitStatus, Vec<String>, String) {
        self.close_stdin();
        let status = wait_child(&mut self.child, TIMEOUT);
        let rest = self
            .lines
            .iter()
            .map(|l| {
                String::from_utf8_lossy(&l)
                    .trim_end_matches('\n')
                    .to_string()
            })
            .collect();
        let stderr = self.stderr.recv_timeout(TIMEOUT).unwrap_or_default();
        (status, rest, stderr)
    }

    /// Waits for the exit while stdin stays open; returns stderr.
    #[track_caller]
    pub fn wait_with_stdin_open(&mut self) -> (ExitStatus, String) {
        let status = wait_child(&mut self.child, TIMEOUT);
        let stderr = self.stderr.recv_timeout(TIMEOUT).unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
