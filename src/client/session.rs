//! The client's view of the conversation, with no socket and no terminal:
//! what each line from the server is and how to show it safely, which name
//! is ours, and what to do with each line the user enters. Never writes
//! anywhere; the loop in `client` acts on what it returns.

use std::collections::VecDeque;
use std::ops::Range;

use crate::wire::proto::{self, Command};

/// What a shown line is, which decides its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `<name> text`: a message to the room from someone else.
    Message,
    /// `*name* text`: a direct message to us.
    Direct,
    /// `[time] <name> text`: a recorded message replayed by the server.
    History,
    /// `* text`: a notice from the server.
    Notice,
    /// `! text`: an error from the server.
    Error,
    /// `<our name> text`: a message we sent, shown so the conversation
    /// reads whole (the server never sends our own messages back).
    Own,
    /// `-> *name* text`: a direct message we sent.
    OwnDirect,
    /// `-- text`: said by this client, not the server.
    Local,
    /// `-- text` in red: a local command failed.
    LocalError,
    /// Anything else the server sent.
    Plain,
}

impl Kind {
    /// Lines that came from our own input rather than from the server.
    pub fn is_own(self) -> bool {
        matches!(self, Kind::Own | Kind::OwnDirect)
    }
}

/// One line as it is shown: control characters already made visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub kind: Kind,
    pub text: String,
    /// Where the sender's (or recipient's) name is in `text`, for colour.
    pub name: Option<Range<usize>>,
}

impl Shown {
    pub fn local(text: impl Into<String>) -> Shown {
        Shown::new(Kind::Local, format!("-- {}", text.into()))
    }

    pub fn local_error(text: impl Into<String>) -> Shown {
        Shown::new(Kind::LocalError, format!("-- {}", text.into()))
    }

    fn new(kind: Kind, text: String) -> Shown {
        Shown {
            kind,
            text,
            name: None,
        }
    }

    /// The name inside `text`, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.clone().and_then(|r| self.text.get(r))
    }
}

/// Makes text from the network safe for a terminal. Invalid UTF-8 becomes
/// U+FFFD; C0 controls and DEL are shown in caret notation (`^[` for ESC);
/// C1 controls and the Unicode controls that reorder or break lines are
/// shown as `<U+XXXX>`. TAB is kept. No escape sequence survives, since
/// every one starts with ESC or a C1 control.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(needs_escape) {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs_escape(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            c => out.push_str(&format!("<U+{:04X}>", c as u32)),
        }
    }
    out
}

pub(crate) fn needs_escape(c: char) -> bool {
    match c {
        '\t' => false,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Bidirectional embeddings, overrides and isolates can make a line
        // read as something else; line and paragraph separators can break
        // the screen layout in some terminals.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' => true,
        // Direction marks (left-to-right, right-to-left, Arabic letter).
        '\u{200e}' | '\u{200f}' | '\u{061c}' => true,
        _ => false,
    }
}

/// Sorts a sanitized line from the server by its prefix (see the protocol's
/// "Text mode" table) and finds the name in it.
pub fn classify(text: String) -> Shown {
    let (kind, name) = if let Some(name) = bracketed(&text, 0, '<', '>') {
        (Kind::Message, Some(name))
    } else if text.starts_with("* ") {
        (Kind::Notice, None)
    } else if let Some(name) = bracketed(&text, 0, '*', '*') {
        (Kind::Direct, Some(name))
    } else if text.starts_with("! ") {
        (Kind::Error, None)
    } else if text.starts_with('[') {
        let name = text
            .find("] <")
            .and_then(|i| bracketed(&text, i + 2, '<', '>'));
        (Kind::History, name)
    } else {
        (Kind::Plain, None)
    };
    Shown { kind, text, name }
}

/// The range of a name written `OPEN name CLOSE ` starting at `at`.
fn bracketed(text: &str, at: usize, open: char, close: char) -> Option<Range<usize>> {
    let rest = text.get(at..)?.strip_prefix(open)?;
    let end = rest.find(close)?;
    let name = &rest[..end];
    let followed = rest[end + close.len_utf8()..].starts_with(' ');
    (followed && proto::valid_name(name)).then(|| at + 1..at + 1 + name.len())
}

/// The commands this client answers itself, as `/help` lists them.
pub const LOCAL_HELP: &[(&str, &str)] = &[
    (
        "/save FILE",
        "write the transcript so far to FILE, with times",
    ),
    ("/clear", "clear the screen and the transcript"),
    ("/quit [REASON]", "leave the chat and exit"),
    ("/help", "this list, then the server's commands"),
];

/// What to do with a line the user entered.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// A blank line: nothing to send.
    Nothing,
    /// Send `line` to the server; show `echo` if there is one. A secret
    /// line is never shown, logged, saved or kept in history.
    Send {
        line: String,
        echo: Option<Shown>,
        secret: bool,
    },
    /// `/save FILE`.
    Save(String),
    /// `/clear`.
    Clear,
    /// `/help`: show `LOCAL_HELP`, then send `/help` to the server.
    Help,
    /// `/quit [REASON]`: send `line` (the `/quit` itself) and leave.
    Quit(String),
    /// A local command used wrongly: show this error.
    Usage(&'static str),
}

/// A line the user entered, taken in turn: what to do with it, and whether
/// it may go into the editor's history.
#[derive(Debug, PartialEq, Eq)]
pub struct Entered {
    pub line: String,
    pub action: Action,
    /// Neither secret nor entered before our name was confirmed (a line
    /// typed then may turn out to answer a password question).
    pub remember: bool,
}

/// What the client knows about its own user.
#[derive(Debug, Default)]
pub struct Session {
    /// Our name, as the server last confirmed it. Nothing we type is shown
    /// as ours until then: a line sent before the server has answered our
    /// name may be the answer to a password question still on its way.
    name: Option<String>,
    /// The server asked for this name's password: the next line is secret.
    password_for: Option<String>,
    /// We sent a name or a password and the server has not answered yet
    /// (with `* you joined ... as NAME`, `* password for NAME:` or
    /// `* choose a name:`): what the next line means is not known.
    awaiting: bool,
    /// Lines entered while `awaiting`, taken in order once it ends.
    held: VecDeque<String>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Our name, once the server has confirmed it: for the prompt and for
    /// our own messages.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name whose password the server is waiting for, if it is.
    pub fn password_for(&self) -> Option<&str> {
        self.password_for.as_deref()
    }

    /// Whether input is held until the server answers our name or
    /// password.
    pub fn is_waiting(&self) -> bool {
        self.awaiting
    }

    /// Whether lines are held, waiting for the server's answer.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Bytes held, LFs included.
    pub fn held_bytes(&self) -> usize {
        self.held.iter().map(|l| l.len() + 1).sum()
    }

    /// Forgets the held lines (the user has quit).
    pub fn drop_held(&mut self) {
        self.held.clear();
    }

    /// Takes a line the user entered (without its LF). It waits its turn
    /// behind lines held earlier; `next_entered` hands it out.
    pub fn enter(&mut self, line: String) {
        self.held.push_back(line);
    }

    /// The next entered line and what to do with it, unless the server's
    /// answer to our name or password must come first.
    pub fn next_entered(&mut self) -> Option<Entered> {
        if self.awaiting {
            return None;
        }
        let line = self.held.pop_front()?;
        let remember = self.name.is_some() && !self.is_secret(&line);
        let action = self.on_input(&line);
        Some(Entered {
            line,
            action,
            remember,
        })
    }

    /// Takes a line the server sent (without its LF, CR already dropped)
    /// and returns how to show it, noting what it says about our name.
    pub fn on_server_line(&mut self, raw: &[u8]) -> Shown {
        let shown = classify(sanitize(raw));
        if shown.kind == Kind::Notice {
            self.on_notice(&shown.text);
        }
        shown
    }

    fn on_notice(&mut self, text: &str) {
        let named = |s: &str| proto::valid_name(s).then(|| s.to_string());
        if let Some(rest) = text.strip_prefix("* you joined #") {
            // `* you joined #ROOM as NAME (N users here); ...` after a
            // name is accepted; a later `/join` has no `as`.
            let name = rest
                .split_once(" as ")
                .and_then(|(_, r)| r.split_once(" ("))
                .and_then(|(n, _)| named(n));
            if let Some(name) = name {
                self.name = Some(name);
                self.password_for = None;
                self.awaiting = false;
            }
        } else if let Some(rest) = text.strip_prefix("* you are now known as ") {
            if let Some(name) = named(rest) {
                self.name = Some(name);
            }
        } else if let Some(rest) = text.strip_prefix("* password for ") {
            if let Some(name) = rest.strip_suffix(':').and_then(named) {
                self.password_for = Some(name);
                self.awaiting = false;
            }
        } else if text == "* choose a name:" {
            // The name (or password) we sent was refused; the next line
            // is a new try at a name.
            self.password_for = None;
            self.awaiting = false;
        }
    }

    /// Whether `line` must be kept secret: the answer to a password
    /// question, or a command whose arguments are passwords.
    pub fn is_secret(&self, line: &str) -> bool {
        self.password_for.is_some() || secret_args_at(line).is_some()
    }

    /// Decides what to do with a line the user entered (without its LF),
    /// now that its turn has come.
    fn on_input(&mut self, line: &str) -> Action {
        if self.password_for.take().is_some() {
            // Sent as typed: a password is never trimmed. The server
            // answers with a welcome, or with the question again.
            self.awaiting = true;
            return Action::Send {
                line: line.to_string(),
                echo: None,
                secret: true,
            };
        }
        // What the server will see: it strips controls before anything else.
        let clean = proto::strip_controls(line);
        if clean.trim().is_empty() {
            return Action::Nothing;
        }
        let (word, rest) = clean
            .split_once(char::is_whitespace)
            .unwrap_or((&clean, ""));
        match word.to_ascii_lowercase().as_str() {
            "/save" => {
                let path = rest.trim();
                return if path.is_empty() {
                    Action::Usage("usage: /save FILE")
                } else {
                    Action::Save(path.to_string())
                };
            }
            "/clear" => return Action::Clear,
            "/help" => return Action::Help,
            "/quit" => return Action::Quit(clean.trim_end().to_string()),
            _ => {}
        }
        let secret = secret_args_at(&clean).is_some();
        let echo = match self.name() {
            Some(me) if !secret => own_echo(me, &clean),
            Some(_) => None,
            None => {
                // Not named yet: a message or `/nick` is our try at a name,
                // and the server answers it with a question or a welcome.
                // Other commands get an error and change nothing.
                self.awaiting = matches!(
                    proto::parse_text(&clean),
                    Ok(Command::Say(_) | Command::Nick(_))
                );
                None
            }
        };
        Action::Send {
            line: line.to_string(),
            echo,
            secret,
        }
    }
}

/// How our own line reads in the transcript, if it is a message. What we
/// typed (or piped) is made safe like anything from the network.
fn own_echo(me: &str, line: &str) -> Option<Shown> {
    let safe = |s: &str| sanitize(s.as_bytes());
    match proto::parse_text(line) {
        Ok(Command::Say(text)) => Some(Shown {
            kind: Kind::Own,
            text: format!("<{me}> {}", safe(text)),
            name: Some(1..1 + me.len()),
        }),
        Ok(Command::Msg { to, text }) => {
            let to = safe(to);
            Some(Shown {
                kind: Kind::OwnDirect,
                text: format!("-> *{to}* {}", safe(text)),
                name: Some(4..4 + to.len()),
            })
        }
        _ => None,
    }
}

/// Commands whose arguments are passwords.
const SECRET_COMMANDS: &[&str] = &["/register", "/passwd"];

/// Where the secret part of `line` starts (in bytes), if it is a command
/// whose arguments are passwords and the command word is complete: the
/// editor hides everything from there on as it is typed.
pub fn secret_args_at(line: &str) -> Option<usize> {
    let (end, space) = line.char_indices().find(|(_, c)| c.is_whitespace())?;
    let word = &line[..end];
    SECRET_COMMANDS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(word))
        .then_some(end + space.len_utf8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(s: &mut Session, line: &str) -> Shown {
        s.on_server_line(line.as_bytes())
    }

    fn send(line: &str, echo: Option<&str>, secret: bool) -> Action {
        let echo = echo.map(classify_own);
        Action::Send {
            line: line.to_string(),
            echo,
            secret,
        }
    }

    /// Our own echoes, built the way `on_input` builds them.
    fn classify_own(text: &str) -> Shown {
        let mut s = Session::new();
        s.name = Some("alice".into());
        match s.on_input(text) {
            Action::Send { echo: Some(e), .. } => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_bytes_are_made_visible() {
        assert_eq!(sanitize(b"plain\ttext \xc3\xa9"), "plain\ttext é");
        assert_eq!(sanitize(b"\x1b[2Jclear"), "^[[2Jclear");
        assert_eq!(
            sanitize(b"bell\x07 nul\x00 del\x7f cr\r"),
            "bell^G nul^@ del^? cr^M"
        );
        assert_eq!(sanitize("csi\u{9b}31m".as_bytes()), "csi<U+009B>31m");
        assert_eq!(sanitize(b"raw c1 \x9b31m"), "raw c1 \u{fffd}31m");
        assert_eq!(sanitize("rtl\u{202e}txt".as_bytes()), "rtl<U+202E>txt");
        assert_eq!(
            sanitize("marks \u{200e} \u{200f} \u{61c}".as_bytes()),
            "marks <U+200E> <U+200F> <U+061C>"
        );
        assert_eq!(
            sanitize(b"\x1b]0;title\x07osc"),
            "^[]0;title^Gosc",
            "an OSC title change is shown, not obeyed"
        );
    }

    #[test]
    fn server_lines_are_sorted_by_prefix() {
        let mut s = Session::new();
        let m = said(&mut s, "<bob> hi <there>");
        assert_eq!((m.kind, m.name()), (Kind::Message, Some("bob")));
        let d = said(&mut s, "*bob* psst");
        assert_eq!((d.kind, d.name()), (Kind::Direct, Some("bob")));
        let h = said(&mut s, "[2026-11-21 14:02] <carol> old news");
        assert_eq!((h.kind, h.name()), (Kind::History, Some("carol")));
        assert_eq!(said(&mut s, "* bob has joined #lobby").kind, Kind::Notice);
        assert_eq!(said(&mut s, "*   alice online").kind, Kind::Notice);
        assert_eq!(said(&mut s, "! no such user: x").kind, Kind::Error);
        assert_eq!(said(&mut s, "hello").kind, Kind::Plain);
        // Not a name: no colour is promised to it.
        assert_eq!(said(&mut s, "<b b> x").kind, Kind::Plain);
    }

    #[test]
    fn our_name_follows_the_server() {
        let mut s = Session::new();
        said(
            &mut s,
            "* welcome to chatd; choose a name: 1-32 letters, digits, _ or -",
        );
        assert_eq!(s.name(), None);
        assert_eq!(s.on_input("alice"), send("alice", None, false));
        assert_eq!(s.name(), None, "not ours until the server says so");
        assert!(s.is_waiting());
        said(&mut s, "! name \"alice\" is taken, choose another");
        assert!(s.is_waiting(), "the question follows the error");
        said(&mut s, "* choose a name:");
        assert!(!s.is_waiting());
        assert_eq!(s.name(), None);
        assert_eq!(s.on_input("/nick Al"), send("/nick Al", None, false));
        said(
            &mut s,
            "* you joined #lobby as Al (2 users here); /help lists the commands",
        );
        assert_eq!(s.name(), Some("Al"));
        assert!(!s.is_waiting());
        said(&mut s, "* you joined #rust");
        assert_eq!(s.name(), Some("Al"));
        said(&mut s, "* you are now known as albert");
        assert_eq!(s.name(), Some("albert"));
        // Someone else's rename is not ours.
        said(&mut s, "* bob is now known as robert");
        assert_eq!(s.name(), Some("albert"));
    }

    #[test]
    fn commands_before_a_name_are_answered_without_a_question() {
        let mut s = Session::new();
        for line in ["/who", "/nick", "@bob hi"] {
            s.on_input(line);
            assert!(!s.is_waiting(), "{line} is answered by an error alone");
        }
        s.on_input("#alice");
        assert!(s.is_waiting());
    }

    /// Every entered line, taken in turn until the session must wait.
    fn taken(s: &mut Session) -> Vec<(String, Option<String>, bool, bool)> {
        std::iter::from_fn(|| s.next_entered())
            .map(|e| match e.action {
                Action::Send { echo, secret, .. } => {
                    (e.line, echo.map(|e| e.text), secret, e.remember)
                }
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn entry(
        line: &str,
        echo: Option<&str>,
        secret: bool,
        remember: bool,
    ) -> (String, Option<String>, bool, bool) {
        (line.into(), echo.map(Into::into), secret, remember)
    }

    #[test]
    fn lines_entered_before_the_server_answers_wait_for_its_answer() {
        // A script sent all at once, or typing ahead of a slow server:
        // the second line is the password, but nothing says so yet.
        let mut s = Session::new();
        for line in ["alice", "hunter22", "second-try", "hello"] {
            s.enter(line.into());
        }
        assert_eq!(taken(&mut s), [entry("alice", None, false, false)]);
        assert!(s.has_held());
        said(&mut s, "* password for alice:");
        assert_eq!(taken(&mut s), [entry("hunter22", None, true, false)]);
        said(&mut s, "! wrong password");
        assert_eq!(taken(&mut s), []);
        said(&mut s, "* password for alice:");
        assert_eq!(taken(&mut s), [entry("second-try", None, true, false)]);
        said(
            &mut s,
            "* you joined #lobby as alice (1 user here); /help lists the commands",
        );
        assert_eq!(
            taken(&mut s),
            [entry("hello", Some("<alice> hello"), false, true)]
        );
        assert!(!s.has_held());

        // A refused name: the next line is the next try, not a message.
        let mut s = Session::new();
        for line in ["alice", "bob", "hi"] {
            s.enter(line.into());
        }
        assert_eq!(taken(&mut s).len(), 1);
        said(&mut s, "! name \"alice\" is taken, choose another");
        said(&mut s, "* choose a name:");
        assert_eq!(taken(&mut s), [entry("bob", None, false, false)]);
        said(
            &mut s,
            "* you joined #lobby as bob (2 users here); /help lists the commands",
        );
        assert_eq!(taken(&mut s), [entry("hi", Some("<bob> hi"), false, true)]);
    }

    #[test]
    fn messages_are_echoed_and_commands_are_not() {
        let mut s = Session::new();
        s.name = Some("alice".into());
        let echo = |s: &mut Session, line: &str| match s.on_input(line) {
            Action::Send { echo, .. } => echo.map(|e| (e.kind, e.text)),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            echo(&mut s, "hello  all "),
            Some((Kind::Own, "<alice> hello  all ".into()))
        );
        assert_eq!(
            echo(&mut s, "//quit"),
            Some((Kind::Own, "<alice> /quit".into()))
        );
        assert_eq!(
            echo(&mut s, "@bob:psst"),
            Some((Kind::OwnDirect, "-> *bob* psst".into()))
        );
        assert_eq!(echo(&mut s, "/join rust"), None);
        assert_eq!(echo(&mut s, "/nosuch"), None);
        assert_eq!(
            echo(&mut s, "a\x1b[31mb"),
            Some((Kind::Own, "<alice> a[31mb".into()))
        );
        // Our own text is made as safe as anyone else's.
        assert_eq!(
            echo(&mut s, "rtl \u{202e}txt.exe \u{200f}"),
            Some((Kind::Own, "<alice> rtl <U+202E>txt.exe <U+200F>".into()))
        );
        assert_eq!(
            echo(&mut s, "@bob \u{2066}x"),
            Some((Kind::OwnDirect, "-> *bob* <U+2066>x".into()))
        );
        assert_eq!(s.on_input("   "), Action::Nothing);
    }

    #[test]
    fn local_commands() {
        let mut s = Session::new();
        assert_eq!(
            s.on_input("/save  out.txt "),
            Action::Save("out.txt".into())
        );
        assert_eq!(s.on_input("/save"), Action::Usage("usage: /save FILE"));
        assert_eq!(s.on_input("/CLEAR"), Action::Clear);
        assert_eq!(s.on_input("/help"), Action::Help);
        assert_eq!(s.on_input("/quit"), Action::Quit("/quit".into()));
        assert_eq!(
            s.on_input("/quit see you "),
            Action::Quit("/quit see you".into())
        );
        assert_eq!(s.name(), None, "local commands are not name attempts");
        // Not local: a longer word.
        assert_eq!(s.on_input("/saved"), send("/saved", None, false));
    }

    #[test]
    fn passwords_are_secret() {
        let mut s = Session::new();
        s.on_input("alice");
        said(&mut s, "* password for alice:");
        assert_eq!(s.password_for(), Some("alice"));
        assert!(s.is_secret("anything"));
        assert_eq!(s.on_input(" hunter2 "), send(" hunter2 ", None, true));
        assert_eq!(s.password_for(), None);
        said(
            &mut s,
            "* you joined #lobby as alice (1 user here); /help lists the commands",
        );
        assert!(!s.is_secret("hello"));
        for line in ["/register correct horse", "/PASSWD old new"] {
            assert!(s.is_secret(line));
            assert_eq!(s.on_input(line), send(line, None, true));
        }
        assert_eq!(secret_args_at("/register"), None, "not complete yet");
        assert_eq!(secret_args_at("/register "), Some(10));
        assert_eq!(secret_args_at("/registered x"), None);
        // A space of more than one byte (U+3000) is stepped over whole.
        assert_eq!(secret_args_at("/passwd\u{3000}x"), Some(10));
    }
}
