//! A small W3C WebDriver client for the browser tests: it starts Debian's
//! `chromedriver` on a free loopback port, opens a headless Chromium
//! session through it, and speaks WebDriver's HTTP+JSON over plain
//! `TcpStream`s (one connection per command). Every wait polls against a
//! deadline; nothing sleeps and hopes. A browser dropped while its test
//! is failing saves a screenshot to `target/browser-screenshots/` and
//! prints the page's console log.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Debian's Chromium and its WebDriver (packages `chromium` and
/// `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long any wait for the page may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long one WebDriver command may take (a navigation included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The key of a web element reference in W3C WebDriver.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The Enter key, for `send_keys`.
pub const ENTER: &str = "\u{E007}";

/// Fails, naming what to install, unless Chromium and chromedriver are
/// there: a machine without them must not pass the browser tests.
#[track_caller]
pub fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser tests need Debian's `{package}` package \
             (`apt-get install chromium chromium-driver`; .ci/run installs them)"
        );
    }
}

/// Where screenshots of failing tests go.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-screenshots")
}

/// A WebDriver error: the HTTP status and W3C's error code and message.
#[derive(Debug, Clone)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error, self.status, self.message)
    }
}

/// One HTTP/1.1 exchange with `addr`: a JSON body out, the status and the
/// JSON body back (one connection per exchange).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to chromedriver at {addr}: {e}"))?;
    s.set_read_timeout(Some(COMMAND_TIMEOUT)).ok();
    s.set_write_timeout(Some(COMMAND_TIMEOUT)).ok();
    s.set_nodelay(true).ok();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if method != "GET" && method != "DELETE" {
        request.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    s.write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: cannot send: {e}"))?;
    // chromedriver keeps the connection open whatever the request says:
    // the body ends at its Content-Length (or its last chunk).
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut read_more = |all: &mut Vec<u8>| -> Result<bool, String> {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("{method} {path}: cannot read the answer: {e}"))?;
        all.extend_from_slice(&buf[..n]);
        Ok(n > 0)
    };
    let end = loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if !read_more(&mut all)? {
            return Err(format!(
                "{method} {path}: no HTTP head in {:?}",
                String::from_utf8_lossy(&all)
            ));
        }
    };
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body_start = end + 4;
    let payload = if let Some(length) = length {
        while all.len() < body_start + length {
            if !read_more(&mut all)? {
                return Err(format!("{method} {path}: the answer ended early"));
            }
        }
        all[body_start..body_start + length].to_vec()
    } else if chunked {
        loop {
            if let Ok(Some(body)) = dechunk(&all[body_start..]) {
                break body;
            }
            if !read_more(&mut all)? {
                return Err(format!("{method} {path}: the chunked answer ended early"));
            }
        }
    } else {
        while read_more(&mut all)? {}
        all[body_start..].to_vec()
    };
    if payload.is_empty() {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "{method} {path}: the answer is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    Ok((status, value))
}

/// Decodes a chunked HTTP body: None while it is incomplete.
fn dechunk(mut body: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if body.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A running chromedriver, in its own process group with the browser it
/// starts; the whole group is ended when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    #[track_caller]
    fn start() -> Driver {
        require_browser();
        // A port someone takes between our probe and chromedriver's bind
        // makes it exit: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + WAIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("chromedriver exited with {status}");
                    break;
                }
                match http(addr, "GET", "/status", None) {
                    Ok((200, v)) if v["value"]["ready"] == true => {
                        return Driver { child, addr };
                    }
                    Ok((status, v)) => last = format!("/status answered {status}: {v}"),
                    Err(e) => last = e,
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("chromedriver did not become ready within {WAIT:?}: {last}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group of our own child, which has
        // not been reaped yet (so its id cannot have been reused).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the group may still hold browser processes.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium, driven through its own chromedriver.
pub struct Browser {
    driver: Driver,
    session: String,
    /// Names the screenshot of a failing test: `<label>.png`.
    pub label: String,
}

impl Browser {
    /// Starts Chromium headless with a `width` x `height` window.
    #[track_caller]
    pub fn start(label: &str, width: u32, height: u32) -> Browser {
        let driver = Driver::start();
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--no-default-browser-check",
                            format!("--window-size={width},{height}"),
                        ],
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "timeouts": {"implicit": 0, "pageLoad": 30000, "script": 30000},
                }
            }
        });
        let (status, v) = http(driver.addr, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("cannot create a WebDriver session: {e}"));
        let session = match v["value"]["sessionId"].as_str() {
            Some(id) if status == 200 => id.to_string(),
            _ => panic!("cannot create a WebDriver session (HTTP {status}): {v}"),
        };
        let browser = Browser {
            driver,
            session,
            label: label.to_string(),
        };
        // A desktop window is never narrower than 500 px; a phone's
        // viewport is emulated instead.
        if width < 500 {
            browser.emulate_viewport(width, height, true);
        }
        browser
    }

    /// Gives the page a `width` x `height` viewport (CSS pixels), as a
    /// phone's when `mobile`, through Chromium's DevTools protocol.
    #[track_caller]
    pub fn emulate_viewport(&self, width: u32, height: u32, mobile: bool) {
        let r = self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 1,
                    "mobile": mobile,
                },
            })),
        );
        self.must("emulate the viewport", r);
    }

    /// A command on this session: `suffix` follows `/session/ID`.
    pub fn command(
        &self,
        method: &str,
        suffix: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let path = format!("/session/{}{suffix}", self.session);
        let body = match (method, body) {
            ("POST", None) => Some(json!({})),
            (_, b) => b,
        };
        let (status, v) =
            http(self.driver.addr, method, &path, body.as_ref()).map_err(|e| WdError {
                status: 0,
                error: "transport".into(),
                message: e,
            })?;
        if status == 200 {
            return Ok(v.get("value").cloned().unwrap_or(Value::Null));
        }
        Err(WdError {
            status,
            error: v["value"]["error"]
                .as_str()
                .unwrap_or("unknown")
                .to_string(),
            message: v["value"]["message"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(2000)
                .collect(),
        })
    }

    #[track_caller]
    fn must(&self, what: &str, r: Result<Value, WdError>) -> Value {
        r.unwrap_or_else(|e| panic!("[{}] {what}: {e}", self.label))
    }

    /// Navigates to `url` and waits for the load to finish.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        let r = self.command("POST", "/url", Some(json!({"url": url})));
        self.must(&format!("navigate to {url}"), r);
    }

    /// Reloads the page.
    #[track_caller]
    pub fn refresh(&self) {
        let r = self.command("POST", "/refresh", None);
        self.must("refresh", r);
    }

    /// The element matching `css` now, if any.
    pub fn try_find(&self, css: &str) -> Result<Option<String>, WdError> {
        let r = self.command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match r {
            Ok(v) => Ok(v[ELEMENT].as_str().map(str::to_string)),
            Err(e) if e.error == "no such element" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for an element matching `css`; returns its reference.
    #[track_caller]
    pub fn find(&self, css: &str) -> String {
        self.wait_until(&format!("an element {css}"), |b| {
            b.try_find(css).ok().flatten()
        })
    }

    /// Polls `f` every 50 ms until it returns `Some`, failing after `WAIT`.
    #[track_caller]
    pub fn wait_until<T>(&self, what: &str, f: impl FnMut(&Browser) -> Option<T>) -> T {
        self.wait_until_for(WAIT, what, f)
    }

    /// `wait_until` with another deadline.
    #[track_caller]
    pub fn wait_until_for<T>(
        &self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("[{}] waited {limit:?} for {what}", self.label);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the element matching `css` once it is there and clickable
    /// (retried until `WAIT` while it is missing, stale, hidden or covered).
    #[track_caller]
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last;
        loop {
            match self.try_find(css) {
                Ok(Some(id)) => match self.command("POST", &format!("/element/{id}/click"), None) {
                    Ok(_) => return,
                    Err(e) => last = e.to_string(),
                },
                Ok(None) => last = "no such element".to_string(),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "[{}] cannot click {css} within {WAIT:?}: {last}",
                    self.label
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the element matching `css` (WebDriver key
    /// codes such as `ENTER` included).
    #[track_caller]
    pub fn send_keys(&self, css: &str, text: &str) {
        self.wait_until(&format!("typing into {css}"), |b| {
            let id = b.try_find(css).ok().flatten()?;
            b.command(
                "POST",
                &format!("/element/{id}/value"),
                Some(json!({"text": text})),
            )
            .ok()
        });
    }

    /// Empties the input matching `css`.
    #[track_caller]
    pub fn clear(&self, css: &str) {
        self.wait_until(&format!("clearing {css}"), |b| {
            let id = b.try_find(css).ok().flatten()?;
            b.command("POST", &format!("/element/{id}/clear"), None)
                .ok()
        });
    }

    /// The rendered text of the element matching `css`.
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        self.wait_until(&format!("the text of {css}"), |b| {
            let id = b.try_find(css).ok().flatten()?;
            b.command("GET", &format!("/element/{id}/text"), None)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        })
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page and returns its result.
    #[track_caller]
    pub fn script(&self, script: &str, args: Vec<Value>) -> Value {
        let r = self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        );
        self.must("execute script", r)
    }

    /// Polls `script` until it returns something other than null, false,
    /// 0, "" or undefined; returns that.
    #[track_caller]
    pub fn wait_script(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.wait_script_for(WAIT, what, script, args)
    }

    /// `wait_script` with another deadline.
    #[track_caller]
    pub fn wait_script_for(
        &self,
        limit: Duration,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        self.wait_until_for(limit, what, |b| {
            let v = b
                .command(
                    "POST",
                    "/execute/sync",
                    Some(json!({"script": script, "args": args.clone()})),
                )
                .ok()?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(t) => *t,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            truthy.then_some(v)
        })
    }

    /// Takes the page off the network (`offline`) or puts it back, as
    /// DevTools does: its connections fail while it is off, and it is
    /// sent the `offline` and `online` events.
    #[track_caller]
    pub fn set_offline(&self, offline: bool) {
        let r = self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Network.enable", "params": {}})),
        );
        self.must("enable the network domain", r);
        let r = self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Network.emulateNetworkConditions",
                "params": {
                    "offline": offline,
                    "latency": 0,
                    "downloadThroughput": -1,
                    "uploadThroughput": -1,
                },
            })),
        );
        self.must("emulate the network", r);
    }

    /// Resizes the window.
    #[track_caller]
    pub fn set_window_size(&self, width: u32, height: u32) {
        let r = self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
        self.must("set the window size", r);
    }

    /// A PNG of the viewport.
    pub fn screenshot_png(&self) -> Result<Vec<u8>, WdError> {
        let v = self.command("GET", "/screenshot", None)?;
        let b64 = v.as_str().ok_or_else(|| WdError {
            status: 200,
            error: "bad screenshot".into(),
            message: "not a string".into(),
        })?;
        base64_decode(b64).ok_or_else(|| WdError {
            status: 200,
            error: "bad screenshot".into(),
            message: "not base64".into(),
        })
    }

    /// Saves a screenshot as `DIR/<name>.png`; returns its path.
    pub fn save_screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = self.screenshot_png().map_err(|e| e.to_string())?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// The page's console messages since the last call (Chromium keeps
    /// them under `goog:loggingPrefs`).
    pub fn console_log(&self) -> Vec<String> {
        match self.command("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect(),
            Ok(other) => vec![format!("(unexpected log answer: {other})")],
            Err(e) => vec![format!("(no console log: {e})")],
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if thread::panicking() {
            match self.save_screenshot(&self.label) {
                Ok(path) => eprintln!("[{}] screenshot: {}", self.label, path.display()),
                Err(e) => eprintln!("[{}] no screenshot: {e}", self.label),
            }
            let log = self.console_log();
            eprintln!("[{}] console:\n{}", self.label, log.join("\n"));
        }
        let _ = self.command("DELETE", "", None);
    }
}

/// Standard base64 (with or without padding); None on a bad character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
