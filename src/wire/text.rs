//! The text-mode codec: a line from a person (or `chat-client`) parsed
//! into a `Command`, and an `Event` written as the lines text mode shows.

use std::fmt;

use crate::wire::proto::{
    BanInfo, Command, DEFAULT_HISTORY, Event, Info, MAX_HISTORY, MAX_NAME_LEN, ModEvent, ModKind,
    Notice, NoticeKind, ProtoError, Role, Status, Until, UserInfo, WhoisInfo,
};

/// Usage strings, shared by the parser and `/help`.
pub const USAGE_NICK: &str = "/nick NAME";
const USAGE_MSG: &str = "/msg NAME TEXT (or @NAME TEXT)";
const USAGE_JOIN: &str = "/join ROOM";
const USAGE_STATUS: &str = "/status online|away|busy [NOTE]";
const USAGE_HISTORY: &str = "/history [N] (N from 1 to 1000)";
const USAGE_REGISTER: &str = "/register PASSWORD";
const USAGE_PASSWD: &str = "/passwd OLD NEW";
const USAGE_KICK: &str = "/kick NAME [REASON]";
const USAGE_MUTE: &str = "/mute NAME [SECONDS] [REASON]";
const USAGE_UNMUTE: &str = "/unmute NAME";
const USAGE_BAN: &str = "/ban NAME|ADDRESS|CIDR [SECONDS] [REASON]";
const USAGE_UNBAN: &str = "/unban NAME|ADDRESS|CIDR";
const USAGE_MODERATE: &str = "/moderate on|off";
const USAGE_WALL: &str = "/wall TEXT";
const USAGE_WHOIS: &str = "/whois NAME";
const USAGE_ROLE: &str = "/role NAME user|moderator|admin";
/// The longest timed mute or ban, in seconds (ten years).
pub const MAX_SANCTION_SECS: u64 = 10 * 365 * 86_400;

/// `/register` and `/passwd` read their passwords from the line as it came,
/// before control characters are removed: a password is taken exactly as
/// sent. `None` if `raw` is neither command.
pub fn parse_secret(raw: &str) -> Option<Result<Command<'_>, ProtoError>> {
    let rest = raw.strip_prefix('/')?;
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (word, args) = rest.split_at(end);
    // One separator is dropped; everything after it is the argument.
    let args = args.chars().next().map_or(args, |c| &args[c.len_utf8()..]);
    if word.eq_ignore_ascii_case("register") {
        if args.is_empty() {
            return Some(Err(ProtoError::Usage(USAGE_REGISTER)));
        }
        return Some(Ok(Command::Register(args)));
    }
    if word.eq_ignore_ascii_case("passwd") {
        // OLD is one word; NEW is the rest after one space, spaces and all.
        return Some(match args.split_once(' ') {
            Some((old, new)) if !old.is_empty() && !new.is_empty() => {
                Ok(Command::Passwd { old, new })
            }
            _ => Err(ProtoError::Usage(USAGE_PASSWD)),
        });
    }
    None
}

/// Parses one text-mode line. The line has had its terminator and control
/// characters removed and is not blank.
pub fn parse_text(line: &str) -> Result<Command<'_>, ProtoError> {
    if let Some(literal) = line.strip_prefix("//") {
        // `//text` is the message `/text`: keep one slash.
        return Ok(Command::Say(&line[line.len() - literal.len() - 1..]));
    }
    if let Some(rest) = line.strip_prefix('/') {
        return parse_slash(rest);
    }
    if let Some(rest) = line.strip_prefix('@') {
        let end = rest
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (to, text) = (&rest[..end], rest[end..].strip_prefix(':'));
        let text = text.unwrap_or(&rest[end..]).trim_start();
        if to.is_empty() || text.trim().is_empty() {
            return Err(ProtoError::Usage(USAGE_MSG));
        }
        return Ok(Command::Msg { to, text });
    }
    Ok(Command::Say(line))
}

/// Splits off the first whitespace-separated word; the rest keeps its inner
/// and trailing spaces.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// One argument word, or a usage error when it is missing or not alone.
fn one_word<'a>(args: &'a str, usage: &'static str) -> Result<&'a str, ProtoError> {
    let (word, rest) = split_word(args);
    if word.is_empty() || !rest.trim().is_empty() {
        return Err(ProtoError::Usage(usage));
    }
    Ok(word)
}

fn non_blank(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// `TARGET [SECONDS] [REASON]`: a second word of digits is the duration.
fn timed<'a>(
    args: &'a str,
    usage: &'static str,
) -> Result<(&'a str, Option<u64>, Option<&'a str>), ProtoError> {
    let (target, rest) = split_word(args);
    if target.is_empty() {
        return Err(ProtoError::Usage(usage));
    }
    let (word, after) = split_word(rest);
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
        return match word.parse::<u64>() {
            Ok(secs @ 1..=MAX_SANCTION_SECS) => Ok((target, Some(secs), non_blank(after))),
            _ => Err(ProtoError::Usage(usage)),
        };
    }
    Ok((target, None, non_blank(rest)))
}

fn parse_slash(rest: &str) -> Result<Command<'_>, ProtoError> {
    let (word, args) = split_word(rest);
    let status = |status| {
        Ok(Command::Status {
            status,
            note: non_blank(args),
        })
    };
    match word.to_ascii_lowercase().as_str() {
        "help" => Ok(Command::Help),
        "nick" => one_word(args, USAGE_NICK).map(Command::Nick),
        "msg" => {
            let (to, text) = split_word(args);
            if to.is_empty() || text.trim().is_empty() {
                return Err(ProtoError::Usage(USAGE_MSG));
            }
            Ok(Command::Msg { to, text })
        }
        "join" => one_word(args, USAGE_JOIN).map(Command::Join),
        "rooms" => Ok(Command::Rooms),
        "who" => Ok(Command::Who),
        "users" => Ok(Command::Users),
        "status" => {
            let (word, note) = split_word(args);
            match Status::parse(word) {
                Some(status) => Ok(Command::Status {
                    status,
                    note: non_blank(note),
                }),
                None => Err(ProtoError::Usage(USAGE_STATUS)),
            }
        }
        "away" => status(Status::Away),
        "busy" => status(Status::Busy),
        "back" => Ok(Command::Status {
            status: Status::Online,
            note: None,
        }),
        "quit" => Ok(Command::Quit(non_blank(args))),
        "history" => match non_blank(args) {
            None => Ok(Command::History(DEFAULT_HISTORY)),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_HISTORY).contains(&n) => Ok(Command::History(n)),
                _ => Err(ProtoError::Usage(USAGE_HISTORY)),
            },
        },
        // Reached only when the line had no argument at all.
        "kick" => {
            let (name, reason) = split_word(args);
            if name.is_empty() {
                return Err(ProtoError::Usage(USAGE_KICK));
            }
            Ok(Command::Kick {
                name,
                reason: non_blank(reason),
            })
        }
        "mute" => {
            let (name, secs, reason) = timed(args, USAGE_MUTE)?;
            Ok(Command::Mute { name, secs, reason })
        }
        "unmute" => one_word(args, USAGE_UNMUTE).map(Command::Unmute),
        "ban" => {
            let (target, secs, reason) = timed(args, USAGE_BAN)?;
            Ok(Command::Ban {
                target,
                secs,
                reason,
            })
        }
        "unban" => one_word(args, USAGE_UNBAN).map(Command::Unban),
        "bans" => Ok(Command::Bans),
        "topic" => Ok(Command::Topic(non_blank(args))),
        "moderate" => match one_word(args, USAGE_MODERATE)?
            .to_ascii_lowercase()
            .as_str()
        {
            "on" => Ok(Command::Moderate(true)),
            "off" => Ok(Command::Moderate(false)),
            _ => Err(ProtoError::Usage(USAGE_MODERATE)),
        },
        "wall" => match non_blank(args) {
            Some(text) => Ok(Command::Wall(text)),
            None => Err(ProtoError::Usage(USAGE_WALL)),
        },
        "whois" => one_word(args, USAGE_WHOIS).map(Command::Whois),
        "role" => {
            let (name, rest) = split_word(args);
            match (name, Role::parse(rest.trim())) {
                ("", _) | (_, None) => Err(ProtoError::Usage(USAGE_ROLE)),
                (name, Some(role)) => Ok(Command::SetRole { name, role }),
            }
        }
        "register" => Err(ProtoError::Usage(USAGE_REGISTER)),
        "passwd" => Err(ProtoError::Usage(USAGE_PASSWD)),
        _ => Err(ProtoError::UnknownCommand(word.to_string())),
    }
}

/// The lines of `/help`: command, then what it does.
const HELP: &[(&str, &str)] = &[
    (
        "TEXT",
        "say TEXT to your room (//TEXT sends a line starting with /)",
    ),
    (USAGE_MSG, "send a direct message"),
    (USAGE_NICK, "change your name"),
    (
        "/join ROOM",
        "leave your room and enter ROOM, creating it if needed",
    ),
    ("/rooms", "list rooms and their sizes"),
    ("/who", "list the members of your room"),
    ("/users", "list every user"),
    (
        USAGE_STATUS,
        "set your status (also /away, /busy [NOTE], /back)",
    ),
    (USAGE_HISTORY, "show recent messages of your room"),
    (USAGE_REGISTER, "register your name (8-256 characters)"),
    (USAGE_PASSWD, "change your password"),
    (
        "/topic [TEXT]",
        "show your room's topic (moderators: set it)",
    ),
    (USAGE_WHOIS, "who NAME is and where"),
    ("/quit [REASON]", "leave the chat"),
    (
        USAGE_KICK,
        "moderators: send NAME to #lobby (out, from #lobby)",
    ),
    (USAGE_MUTE, "moderators: refuse NAME's messages"),
    (USAGE_UNMUTE, "moderators: lift a mute"),
    (USAGE_BAN, "moderators: refuse a name or addresses"),
    (USAGE_UNBAN, "moderators: lift a ban"),
    ("/bans", "moderators: list bans"),
    (
        USAGE_MODERATE,
        "moderators: only moderators speak in your room",
    ),
    (USAGE_WALL, "admins: a notice to everyone"),
    (USAGE_ROLE, "admins: set a registered name's role"),
    ("/help", "this list"),
];

/// Appends the text-mode line(s) for `event`, each ending in LF.
pub fn encode_text(event: &Event, buf: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail, so the results below are ignored.
    let mut line = |args: fmt::Arguments<'_>| {
        let _ = buf.write_fmt(args);
        buf.push(b'\n');
    };
    match event {
        Event::Message { from, text, .. } => {
            // The hot path of every broadcast: no formatting machinery.
            buf.reserve(from.len() + text.len() + 4);
            buf.push(b'<');
            buf.extend_from_slice(from.as_bytes());
            buf.extend_from_slice(b"> ");
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
        }
        Event::Welcome => line(format_args!(
            "* welcome to chatd; choose a name: 1-{MAX_NAME_LEN} letters, digits, _ or -"
        )),
        Event::AskName => line(format_args!("* choose a name:")),
        Event::Connected {
            name,
            room,
            users,
            topic,
            ..
        } => {
            line(format_args!(
                "* you joined #{room} as {name} ({users} {} here); /help lists the commands",
                plural(*users, "user", "users")
            ));
            if let Some(topic) = topic {
                line(format_args!("* topic of #{room}: {topic}"));
            }
        }
        Event::Direct { from, text, .. } => line(format_args!("*{from}* {text}")),
        Event::Notice(n) => encode_notice(n, &mut line),
        Event::Info(Info::AlreadyInRoom { room, .. }) => {
            line(format_args!("* you are already in #{room}"))
        }
        Event::Info(Info::AlreadyNamed { name }) => {
            line(format_args!("* you are already known as {name}"))
        }
        Event::Info(Info::Goodbye) => line(format_args!("* goodbye")),
        Event::Info(Info::Registered { name, .. }) => line(format_args!(
            "* {name} is now registered: log in with this password from now on"
        )),
        Event::Info(Info::LoggedOut) => line(format_args!("* signed out")),
        Event::Info(Info::PasswordChanged { name }) => {
            line(format_args!("* password changed for {name}"))
        }
        Event::History {
            room,
            messages,
            listing,
            ..
        } => {
            if *listing {
                let n = messages.len();
                let what = plural(n, "message", "messages");
                line(format_args!("* history of #{room}: {n} {what}"));
            }
            for m in messages {
                line(format_args!(
                    "[{}] <{}> {}",
                    m.ts.minutes(),
                    m.sender,
                    m.text
                ));
            }
            if *listing {
                line(format_args!("* end of /history"));
            }
        }
        Event::PasswordPrompt { name } => line(format_args!("* password for {name}:")),
        Event::Who { room, users } => {
            line(format_args!("* users in #{room}: {}", users.len()));
            for u in users {
                encode_user(u, &mut line);
            }
            line(format_args!("* end of /who"));
        }
        Event::Users { users } => {
            line(format_args!("* users: {}", users.len()));
            for u in users {
                encode_user(u, &mut line);
            }
            line(format_args!("* end of /users"));
        }
        Event::Rooms { rooms } => {
            line(format_args!("* rooms: {}", rooms.len()));
            for r in rooms {
                line(format_args!("*   #{} {}", r.name, r.users));
            }
            line(format_args!("* end of /rooms"));
        }
        Event::Help { named } => {
            if !*named {
                line(format_args!(
                    "* first choose a name: type it alone on a line (or /nick NAME)"
                ));
            }
            for (cmd, what) in HELP {
                line(format_args!("*   {cmd:<34} {what}"));
            }
            line(format_args!("* end of /help"));
        }
        Event::Shutdown => line(format_args!("* server is shutting down")),
        Event::Error(e) => line(format_args!("! {e}")),
        Event::Moderation(m) => encode_moderation(m, &mut line),
        Event::Topic {
            room,
            topic: Some(topic),
        } => line(format_args!("* topic of #{room}: {topic}")),
        Event::Topic { room, topic: None } => line(format_args!("* #{room} has no topic")),
        Event::Bans { bans } => {
            line(format_args!("* bans: {}", bans.len()));
            for BanInfo {
                target,
                until,
                by,
                reason,
            } in bans
            {
                line(format_args!(
                    "*   {target} by {by}{}{}",
                    Until(*until),
                    Reason(reason.as_deref())
                ));
            }
            line(format_args!("* end of /bans"));
        }
        Event::Whois(w) => encode_whois(w, &mut line),
    }
}

/// ` (REASON)`, or nothing.
struct Reason<'a>(Option<&'a str>);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => write!(f, " ({r})"),
            None => Ok(()),
        }
    }
}

/// ` (moderator)`, ` (admin)`, or nothing for a user.
struct RoleTag(Role);

impl fmt::Display for RoleTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Role::User => Ok(()),
            role => write!(f, " ({})", role.as_str()),
        }
    }
}

fn encode_moderation(m: &ModEvent, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    let (who, were) = match (&m.name, m.you) {
        (_, true) => ("you", "were"),
        (Some(name), false) => (&**name, "was"),
        (None, false) => ("", "was"),
    };
    let by = &m.by;
    let reason = Reason(m.reason.as_deref());
    match &m.kind {
        ModKind::Kick { room } => line(format_args!(
            "* {who} {were} kicked from #{room} by {by}{reason}"
        )),
        ModKind::Mute { until } => line(format_args!(
            "* {who} {were} muted by {by}{}{reason}",
            Until(*until)
        )),
        ModKind::Unmute => line(format_args!("* {who} {were} unmuted by {by}{reason}")),
        ModKind::Ban { until } => line(format_args!(
            "* {who} {were} banned by {by}{}{reason}",
            Until(*until)
        )),
        ModKind::Unban => line(format_args!("* {who} {were} unbanned by {by}{reason}")),
        ModKind::Topic { room, topic } => {
            line(format_args!("* {by} set the topic of #{room}: {topic}"))
        }
        ModKind::Moderate { room, on: true } => line(format_args!(
            "* {by} made #{room} moderated: only moderators may speak"
        )),
        ModKind::Moderate { room, on: false } => {
            line(format_args!("* {by} made #{room} open: everyone may speak"))
        }
        ModKind::Wall { text, .. } => line(format_args!("* wall from {by}: {text}")),
        ModKind::Role { role } => {
            let is = if m.you { "are" } else { "is" };
            line(format_args!(
                "* {who} {is} now {} {} (set by {by})",
                if *role == Role::Admin { "an" } else { "a" },
                role.as_str()
            ))
        }
    }
}

fn encode_whois(w: &WhoisInfo, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    line(format_args!("* whois {}", w.name));
    match &w.note {
        Some(note) => line(format_args!("*   status: {}: {note}", w.status.as_str())),
        None => line(format_args!("*   status: {}", w.status.as_str())),
    }
    if let Some(room) = &w.room {
        line(format_args!("*   room: #{room}"));
    }
    let registered = if w.registered { "yes" } else { "no" };
    line(format_args!("*   registered: {registered}"));
    line(format_args!("*   role: {}", w.role.as_str()));
    if let Some(addr) = w.address {
        line(format_args!("*   address: {addr}"));
    }
    if let Some(since) = w.since {
        line(format_args!("*   connected since: {since}"));
    }
    line(format_args!("* end of /whois"));
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn encode_user(u: &UserInfo, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    let role = RoleTag(u.role);
    match &u.note {
        Some(note) => line(format_args!(
            "*   {} {}: {note}{role}",
            u.name,
            u.status.as_str()
        )),
        None => line(format_args!("*   {} {}{role}", u.name, u.status.as_str())),
    }
}

fn encode_notice(n: &Notice, line: &mut impl FnMut(fmt::Arguments<'_>)) {
    let (who, verb_is, verb_has) = if n.you {
        ("you", "are", "have")
    } else {
        (&*n.name, "is", "has")
    };
    let room = &n.room;
    match &n.kind {
        NoticeKind::Join if n.you => {
            line(format_args!("* you joined #{room}"));
            if let Some(topic) = &n.topic {
                line(format_args!("* topic of #{room}: {topic}"));
            }
        }
        NoticeKind::Join => line(format_args!("* {who} has joined #{room}")),
        NoticeKind::Leave if n.you => line(format_args!("* you left #{room}")),
        NoticeKind::Leave => line(format_args!("* {who} has left #{room}")),
        NoticeKind::Quit { reason } => match (n.you, reason) {
            (true, Some(r)) => line(format_args!("* goodbye ({r})")),
            (true, None) => line(format_args!("* goodbye")),
            (false, Some(r)) => line(format_args!("* {who} has quit ({r})")),
            (false, None) => line(format_args!("* {who} has quit")),
        },
        NoticeKind::Nick { .. } if n.you => line(format_args!("* you are now known as {}", n.name)),
        NoticeKind::Nick { old } => line(format_args!("* {old} is now known as {}", n.name)),
        NoticeKind::Status { status, note } => match note {
            Some(note) => line(format_args!(
                "* {who} {verb_is} now {} ({note})",
                status.as_str()
            )),
            None => line(format_args!("* {who} {verb_is} now {}", status.as_str())),
        },
        NoticeKind::Disconnect { reason } => {
            line(format_args!("* {who} {verb_has} disconnected ({reason})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::*;

    fn text(event: &Event) -> String {
        let mut buf = Vec::new();
        encode_text(event, &mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn plain_lines_are_messages_kept_as_sent() {
        assert_eq!(parse_text("hello  all  "), Ok(Command::Say("hello  all  ")));
        assert_eq!(parse_text("  indented"), Ok(Command::Say("  indented")));
        assert_eq!(parse_text("//quit now"), Ok(Command::Say("/quit now")));
        assert_eq!(parse_text(" /quit"), Ok(Command::Say(" /quit")));
    }

    #[test]
    fn direct_messages_in_three_spellings() {
        let dm = Ok(Command::Msg {
            to: "bob",
            text: "hi there ",
        });
        assert_eq!(parse_text("/msg bob hi there "), dm);
        assert_eq!(parse_text("/MSG  bob   hi there "), dm);
        assert_eq!(parse_text("@bob hi there "), dm);
        assert_eq!(parse_text("@bob:hi there "), dm);
        assert_eq!(parse_text("@bob: hi there "), dm);
        for bad in ["/msg bob", "/msg", "@bob", "@bob:  ", "@ hi", "@:hi"] {
            assert_eq!(parse_text(bad), Err(ProtoError::Usage(USAGE_MSG)), "{bad}");
        }
    }

    #[test]
    fn commands_ignore_case_and_check_arguments() {
        assert_eq!(parse_text("/NICK bob"), Ok(Command::Nick("bob")));
        assert_eq!(parse_text("/nick"), Err(ProtoError::Usage(USAGE_NICK)));
        assert_eq!(parse_text("/nick a b"), Err(ProtoError::Usage(USAGE_NICK)));
        assert_eq!(parse_text("/join #rust"), Ok(Command::Join("#rust")));
        assert_eq!(parse_text("/join"), Err(ProtoError::Usage(USAGE_JOIN)));
        assert_eq!(parse_text("/rooms"), Ok(Command::Rooms));
        assert_eq!(parse_text("/Who"), Ok(Command::Who));
        assert_eq!(parse_text("/users"), Ok(Command::Users));
        assert_eq!(parse_text("/help me"), Ok(Command::Help));
        assert_eq!(parse_text("/quit"), Ok(Command::Quit(None)));
        assert_eq!(
            parse_text("/quit  gone fishing "),
            Ok(Command::Quit(Some("gone fishing")))
        );
        assert_eq!(
            parse_text("/frobnicate x"),
            Err(ProtoError::UnknownCommand("frobnicate".into()))
        );
        assert_eq!(parse_text("/"), Err(ProtoError::UnknownCommand("".into())));
    }

    #[test]
    fn account_commands_take_passwords_exactly_as_sent() {
        let secret = |l| parse_secret(l);
        assert_eq!(secret("hello"), None);
        assert_eq!(secret("/nick bob"), None);
        assert_eq!(
            secret("/register  pass word\t"),
            Some(Ok(Command::Register(" pass word\t")))
        );
        assert_eq!(
            secret("/REGISTER x\u{1b}yz"),
            Some(Ok(Command::Register("x\u{1b}yz")))
        );
        assert_eq!(
            secret("/register"),
            Some(Err(ProtoError::Usage(USAGE_REGISTER)))
        );
        assert_eq!(
            secret("/passwd old1 new one "),
            Some(Ok(Command::Passwd {
                old: "old1",
                new: "new one "
            }))
        );
        for bad in ["/passwd", "/passwd onlyone", "/passwd  leading"] {
            assert_eq!(
                secret(bad),
                Some(Err(ProtoError::Usage(USAGE_PASSWD))),
                "{bad}"
            );
        }
        assert_eq!(check_password("1234567"), Err(ProtoError::PasswordTooShort));
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(check_password(&"é".repeat(256)), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(257)).map_err(|e| e.code()),
            Err("bad_payload")
        );
    }

    #[test]
    fn history_takes_a_count_from_1_to_1000() {
        assert_eq!(parse_text("/history"), Ok(Command::History(20)));
        assert_eq!(parse_text("/HISTORY 1000"), Ok(Command::History(1000)));
        for bad in ["/history 0", "/history 1001", "/history x", "/history 5 6"] {
            assert_eq!(
                parse_text(bad),
                Err(ProtoError::Usage(USAGE_HISTORY)),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_and_its_short_forms() {
        let st = |status, note| Ok(Command::Status { status, note });
        assert_eq!(
            parse_text("/status BUSY in a meeting"),
            st(Status::Busy, Some("in a meeting"))
        );
        assert_eq!(parse_text("/status online"), st(Status::Online, None));
        assert_eq!(parse_text("/away lunch"), st(Status::Away, Some("lunch")));
        assert_eq!(parse_text("/busy"), st(Status::Busy, None));
        assert_eq!(parse_text("/back"), st(Status::Online, None));
        assert_eq!(
            parse_text("/status sleeping"),
            Err(ProtoError::Usage(USAGE_STATUS))
        );
        assert_eq!(parse_text("/status"), Err(ProtoError::Usage(USAGE_STATUS)));
    }

    #[test]
    fn text_encoding_of_each_prefix() {
        let n: Name = "alice".into();
        let room: Name = "lobby".into();
        let msg = Event::Message {
            from: n.clone(),
            room: room.clone(),
            text: "hi all".into(),
            ts: Timestamp(0),
            seq: None,
        };
        assert_eq!(text(&msg), "<alice> hi all\n");
        assert_eq!(
            text(&Event::Direct {
                from: n.clone(),
                text: "psst".into(),
                ts: Timestamp(0),
            }),
            "*alice* psst\n"
        );
        let notice = |kind, you| {
            Event::Notice(Notice {
                kind,
                name: "bob".into(),
                room: room.clone(),
                you,
                topic: None,
            })
        };
        assert_eq!(
            text(&notice(NoticeKind::Join, false)),
            "* bob has joined #lobby\n"
        );
        assert_eq!(
            text(&notice(NoticeKind::Join, true)),
            "* you joined #lobby\n"
        );
        let nick = NoticeKind::Nick { old: n.clone() };
        assert_eq!(
            text(&notice(nick.clone(), false)),
            "* alice is now known as bob\n"
        );
        assert_eq!(text(&notice(nick, true)), "* you are now known as bob\n");
        let quit = NoticeKind::Quit {
            reason: Some("bye".into()),
        };
        assert_eq!(text(&notice(quit, false)), "* bob has quit (bye)\n");
        let away = NoticeKind::Status {
            status: Status::Away,
            note: Some("lunch".into()),
        };
        assert_eq!(
            text(&notice(away.clone(), false)),
            "* bob is now away (lunch)\n"
        );
        assert_eq!(text(&notice(away, true)), "* you are now away (lunch)\n");
        let gone = NoticeKind::Disconnect {
            reason: CloseReason::Reset,
        };
        assert_eq!(
            text(&notice(gone, false)),
            "* bob has disconnected (connection reset)\n"
        );
        let taken = Event::Error(ProtoError::NameTaken("bob".into()));
        assert_eq!(text(&taken), "! name \"bob\" is taken, choose another\n");
    }

    #[test]
    fn listings_end_with_an_end_line() {
        let users = vec![
            UserInfo {
                name: "alice".into(),
                status: Status::Online,
                note: None,
                role: Role::Admin,
            },
            UserInfo {
                name: "bob".into(),
                status: Status::Busy,
                note: Some("call".into()),
                role: Role::User,
            },
        ];
        let who = text(&Event::Who {
            room: "lobby".into(),
            users,
        });
        assert_eq!(
            who,
            "* users in #lobby: 2\n*   alice online (admin)\n*   bob busy: call\n* end of /who\n"
        );
        let rooms = text(&Event::Rooms {
            rooms: vec![RoomInfo {
                name: "rust".into(),
                users: 3,
            }],
        });
        assert_eq!(rooms, "* rooms: 1\n*   #rust 3\n* end of /rooms\n");
        let help = text(&Event::Help { named: true });
        assert!(help.lines().all(|l| l.starts_with("* ")));
        assert!(help.ends_with("* end of /help\n"));
    }

    #[test]
    fn moderation_commands_parse_with_their_options() {
        assert_eq!(
            parse_text("/kick bob  spamming links "),
            Ok(Command::Kick {
                name: "bob",
                reason: Some("spamming links")
            })
        );
        assert_eq!(
            parse_text("/kick bob"),
            Ok(Command::Kick {
                name: "bob",
                reason: None
            })
        );
        assert_eq!(parse_text("/kick"), Err(ProtoError::Usage(USAGE_KICK)));
        assert_eq!(
            parse_text("/mute bob 60 flood"),
            Ok(Command::Mute {
                name: "bob",
                secs: Some(60),
                reason: Some("flood")
            })
        );
        assert_eq!(
            parse_text("/MUTE bob being rude"),
            Ok(Command::Mute {
                name: "bob",
                secs: None,
                reason: Some("being rude")
            })
        );
        for bad in ["/mute", "/mute bob 0", "/mute bob 99999999999999999999"] {
            assert_eq!(parse_text(bad), Err(ProtoError::Usage(USAGE_MUTE)), "{bad}");
        }
        assert_eq!(
            parse_text("/ban 10.0.0.0/8 3600"),
            Ok(Command::Ban {
                target: "10.0.0.0/8",
                secs: Some(3600),
                reason: None
            })
        );
        assert_eq!(parse_text("/unban bob"), Ok(Command::Unban("bob")));
        assert_eq!(parse_text("/unban"), Err(ProtoError::Usage(USAGE_UNBAN)));
        assert_eq!(parse_text("/unmute bob"), Ok(Command::Unmute("bob")));
        assert_eq!(parse_text("/bans"), Ok(Command::Bans));
        assert_eq!(parse_text("/topic"), Ok(Command::Topic(None)));
        assert_eq!(
            parse_text("/topic  Rust 2024, be kind "),
            Ok(Command::Topic(Some("Rust 2024, be kind")))
        );
        assert_eq!(parse_text("/moderate ON"), Ok(Command::Moderate(true)));
        assert_eq!(parse_text("/moderate off"), Ok(Command::Moderate(false)));
        assert_eq!(
            parse_text("/moderate maybe"),
            Err(ProtoError::Usage(USAGE_MODERATE))
        );
        assert_eq!(parse_text("/wall  "), Err(ProtoError::Usage(USAGE_WALL)));
        assert_eq!(
            parse_text("/wall back soon"),
            Ok(Command::Wall("back soon"))
        );
        assert_eq!(parse_text("/whois bob"), Ok(Command::Whois("bob")));
        assert_eq!(
            parse_text("/role bob Moderator"),
            Ok(Command::SetRole {
                name: "bob",
                role: Role::Moderator
            })
        );
        for bad in ["/role bob", "/role bob king", "/role"] {
            assert_eq!(parse_text(bad), Err(ProtoError::Usage(USAGE_ROLE)), "{bad}");
        }
    }

    #[test]
    fn moderation_events_name_who_did_what() {
        let ev = |kind, you| {
            Event::Moderation(ModEvent {
                kind,
                name: Some("bob".into()),
                by: "alice".into(),
                reason: Some("spam".into()),
                you,
            })
        };
        let kick = ModKind::Kick {
            room: "rust".into(),
        };
        assert_eq!(
            text(&ev(kick.clone(), false)),
            "* bob was kicked from #rust by alice (spam)\n"
        );
        assert_eq!(
            text(&ev(kick, true)),
            "* you were kicked from #rust by alice (spam)\n"
        );
        let until = Some(Timestamp(1_795_271_527));
        assert_eq!(
            text(&ev(ModKind::Mute { until }, false)),
            "* bob was muted by alice until 2026-11-21T14:32:07Z (spam)\n"
        );
        assert_eq!(
            text(&ev(ModKind::Ban { until: None }, true)),
            "* you were banned by alice (spam)\n"
        );
        assert_eq!(
            text(&ev(ModKind::Role { role: Role::Admin }, true)),
            "* you are now an admin (set by alice)\n"
        );
        let connected = Event::Connected {
            name: "bob".into(),
            room: "rust".into(),
            users: 2,
            topic: Some("be kind".into()),
            epoch: "e".into(),
            token: None,
        };
        assert_eq!(
            text(&connected),
            "* you joined #rust as bob (2 users here); /help lists the commands\n\
             * topic of #rust: be kind\n"
        );
        let none = Event::Topic {
            room: "rust".into(),
            topic: None,
        };
        assert_eq!(text(&none), "* #rust has no topic\n");
        let bans = Event::Bans {
            bans: vec![BanInfo {
                target: "10.0.0.0/8".into(),
                until,
                by: "alice".into(),
                reason: None,
            }],
        };
        assert_eq!(
            text(&bans),
            "* bans: 1\n*   10.0.0.0/8 by alice until 2026-11-21T14:32:07Z\n* end of /bans\n"
        );
        let muted = Event::Error(ProtoError::Muted { until: None });
        assert_eq!(text(&muted), "! you are muted\n");
    }
}
