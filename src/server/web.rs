//! HTTP/1.1 on the chat's port, small and strict: the request head is
//! parsed with `httparse`, a handful of routes are answered (the web
//! client's three files, `/healthz`, and `/ws`, which upgrades to a
//! WebSocket), and every answer closes the connection but the upgrade.
//! Socket-free: a head in, the bytes of the answer out.

use crate::wire::ws;

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request head.
pub const MAX_HEADERS: usize = 64;

/// The web client, inside the binary: path, content type, body.
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
];

/// Sent with every answer: only this origin's own files, never framed.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'\r\n\
     X-Content-Type-Options: nosniff\r\n\
     Referrer-Policy: no-referrer\r\n\
     X-Frame-Options: DENY\r\n";

/// A plain HTTP request under `--require-tls` from outside
/// `--allow-plain`.
pub const REQUIRE_TLS: &[u8] = b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.3\r\n\
    Content-Type: text/plain; charset=utf-8\r\nContent-Length: 31\r\nConnection: close\r\n\r\n\
    this server requires https://\r\n";

/// The answer to a request head over `MAX_HEAD`.
pub fn too_large() -> Answer {
    status(431, "request head too large\n")
}

/// Whether `line` (the first line, without its line end) is an HTTP/1.x
/// request line: `METHOD SP TARGET SP HTTP/1.x`. No chat line is: a name
/// has no spaces, and a JSON line starts with `{`.
pub fn is_request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// Whether an unfinished first line may still become a request line: a
/// method (capital letters), perhaps its space and more.
pub fn may_be_request(start: &[u8]) -> bool {
    let method = start.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method > 0 && (method == start.len() || start[method] == b' ')
}

/// What the server does after an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Flush and close.
    Close,
    /// The connection is now a WebSocket speaking JSON mode.
    WebSocket,
}

/// An answer: its bytes, and what comes after.
#[derive(Debug)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub after: After,
    /// The status, for the log.
    pub status: u16,
}

/// The site's rules for the WebSocket route.
pub struct Site<'a> {
    /// The connection came over TLS (its own origin is `https://HOST`).
    pub tls: bool,
    /// Other origins allowed to open a WebSocket (`--web-origin`).
    pub origins: &'a [String],
    /// Why the server is not well (`/healthz`): shutting down, or no link
    /// to its cluster; `None` when it is.
    pub unwell: Option<String>,
}

/// The answer to a complete request head (`head` holds it with CRLFs, up
/// to and including the blank line).
pub fn answer(head: &[u8], site: &Site<'_>) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return status(400, "incomplete request head\n"),
        Err(httparse::Error::TooManyHeaders) => {
            return status(431, "too many request headers\n");
        }
        Err(_) => return status(400, "bad request\n"),
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    if method != "GET" && method != "HEAD" {
        return status(404, "not found\n");
    }
    if path == "/ws" {
        return upgrade(&header, site);
    }
    if path == "/healthz" {
        return match &site.unwell {
            None => status(200, "ok\n"),
            Some(why) => status(503, &format!("{why}\n")),
        };
    }
    let Some(&(_, kind, body)) = FILES.iter().find(|(p, ..)| *p == path) else {
        return status(404, "not found\n");
    };
    let etag = etag(body);
    if header("If-None-Match").is_some_and(|t| t.split(',').any(|t| t.trim() == etag)) {
        let bytes = format!(
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nCache-Control: no-cache\r\n\
             {SECURITY_HEADERS}Connection: close\r\n\r\n"
        )
        .into_bytes();
        return Answer {
            bytes,
            after: After::Close,
            status: 304,
        };
    }
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         ETag: {etag}\r\nCache-Control: no-cache\r\n{SECURITY_HEADERS}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method == "GET" {
        bytes.extend_from_slice(body);
    }
    Answer {
        bytes,
        after: After::Close,
        status: 200,
    }
}

/// A file's validator: a hash of its bytes, fixed for this build.
fn etag(body: &[u8]) -> String {
    let digest = crate::crypto::sha256(body);
    format!("\"{}\"", crate::crypto::hex(&digest[..8]))
}

fn status(code: u16, body: &str) -> Answer {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let bytes = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\n{SECURITY_HEADERS}\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    Answer {
        bytes,
        after: After::Close,
        status: code,
    }
}

/// The answer to `GET /ws`: the switch to a WebSocket, or why not.
fn upgrade<'h>(header: &impl Fn(&str) -> Option<&'h str>, site: &Site<'_>) -> Answer {
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return status(426, "this is a WebSocket endpoint\n");
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return status(426, "WebSocket version 13 only\n");
    }
    let Some(key) = header("Sec-WebSocket-Key").filter(|k| !k.is_empty()) else {
        return status(400, "no Sec-WebSocket-Key\n");
    };
    if let Some(origin) = header("Origin")
        && !origin_allowed(origin, header("Host"), site)
    {
        return status(403, "origin not allowed\n");
    }
    let bytes = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(key)
    )
    .into_bytes();
    Answer {
        bytes,
        after: After::WebSocket,
        status: 101,
    }
}

/// A browser's `Origin` is allowed if it is this server as the browser
/// reached it (scheme by transport, the request's `Host`) or listed.
fn origin_allowed(origin: &str, host: Option<&str>, site: &Site<'_>) -> bool {
    let scheme = if site.tls { "https://" } else { "http://" };
    let own = host.is_some_and(|h| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|o| o.eq_ignore_ascii_case(h))
    });
    own || site
        .origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site<'static> {
        Site {
            tls: false,
            origins: &[],
            unwell: None,
        }
    }

    fn head_of(answer: &Answer) -> String {
        let text = String::from_utf8_lossy(&answer.bytes);
        text.split("\r\n\r\n").next().unwrap().to_string()
    }

    #[test]
    fn request_lines_are_told_from_chat_lines() {
        assert!(is_request_line(b"GET / HTTP/1.1"));
        assert!(is_request_line(b"POST /x?y HTTP/1.0"));
        for not in [
            &b"alice"[..],
            b"GET",
            b"GET /",
            b"get / HTTP/1.1",
            b"GET / HTTP/2",
            b"{\"type\":\"connect\"}",
            b"GET  / HTTP/1.1",
        ] {
            assert!(!is_request_line(not), "{}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn files_health_and_not_found() {
        let a = answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &site());
        assert_eq!(a.status, 200);
        let head = head_of(&a);
        assert!(head.contains("Content-Security-Policy: default-src 'self'"));
        assert!(head.contains("X-Content-Type-Options: nosniff"));
        assert!(head.contains("frame-ancestors 'none'"));
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .unwrap()
            .to_string();
        let again = format!("GET / HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n");
        assert_eq!(answer(again.as_bytes(), &site()).status, 304);
        let js = answer(b"GET /app.js HTTP/1.1\r\n\r\n", &site());
        assert!(head_of(&js).contains("text/javascript"));
        let h = answer(b"GET /healthz HTTP/1.1\r\n\r\n", &site());
        assert!(String::from_utf8_lossy(&h.bytes).ends_with("\r\n\r\nok\n"));
        assert_eq!(answer(b"GET /nope HTTP/1.1\r\n\r\n", &site()).status, 404);
        assert_eq!(answer(b"DELETE / HTTP/1.1\r\n\r\n", &site()).status, 404);
        assert_eq!(
            answer(b"GET / HTTP/1.1\r\nbad\r\n\r\n", &site()).status,
            400
        );
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(answer(req.as_bytes(), &site()).status, 431);
        let head_only = answer(b"HEAD / HTTP/1.1\r\n\r\n", &site());
        assert!(String::from_utf8_lossy(&head_only.bytes).ends_with("\r\n\r\n"));
    }

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: chat.example:5000\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn upgrade_with(extra: &str, site: &Site<'_>) -> Answer {
        answer(format!("{UPGRADE}{extra}\r\n").as_bytes(), site)
    }

    #[test]
    fn the_websocket_upgrade_and_its_origin_check() {
        let a = upgrade_with("", &site());
        assert_eq!((a.status, &a.after), (101, &After::WebSocket));
        assert!(head_of(&a).contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        let own = upgrade_with("Origin: http://chat.example:5000\r\n", &site());
        assert_eq!(own.status, 101);
        let other = upgrade_with("Origin: http://evil.example\r\n", &site());
        assert_eq!(other.status, 403);
        let wrong_scheme = upgrade_with("Origin: https://chat.example:5000\r\n", &site());
        assert_eq!(wrong_scheme.status, 403);
        let listed = ["https://app.example".to_string()];
        let with_list = Site {
            origins: &listed,
            ..site()
        };
        let ok = upgrade_with("Origin: https://app.example\r\n", &with_list);
        assert_eq!(ok.status, 101);
        let tls = Site {
            tls: true,
            ..site()
        };
        assert_eq!(
            upgrade_with("Origin: https://chat.example:5000\r\n", &tls).status,
            101
        );
        let plain_get = answer(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", &site());
        assert_eq!(plain_get.status, 426);
    }
}
