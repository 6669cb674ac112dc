//! The `--config` file: a TOML file whose keys are a program's long flag
//! names, read into the command-line arguments it stands for, so that the
//! flags' own parsers check every value; and what changed between two
//! readings of it (for SIGHUP). Text in, arguments and changes out: no
//! files, sockets or signals.
//!
//! Every flag with a long name is a key, without a line here: a flag added
//! to `chatd` is a key of its file at once, checked the same way. The file
//! only fills in what the command line left out, so flags win, and a
//! default never hides a value from the file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::Spanned;

/// The flag that names the file; it is no key of the file itself.
pub const CONFIG_FLAG: &str = "config";

/// Keys whose new value a running server takes at SIGHUP; a change to any
/// other key is logged as needing a restart. Listening address, database,
/// hashing cost and history kept per room are fixed once the listener,
/// the store and the password thread exist; `log-format` stays, so a log
/// collector never sees the format change mid-stream.
pub const LIVE_KEYS: &[&str] = &[
    "max-line",
    "max-clients",
    "max-per-ip",
    "require-account",
    "registration",
    "register-rate",
    "token-ttl",
    "handshake-timeout",
    "rate",
    "max-outbuf",
    "announce-limit",
    "history",
    "login-delay",
    "auth-queue",
    "log-level",
    "tls-cert",
    "tls-key",
    "require-tls",
    "allow-plain",
    "web-origin",
];

/// Farthest an unknown key may be (in edits) from a known one for the
/// error to suggest it.
const MAX_SUGGESTION_DISTANCE: usize = 3;

/// What is wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    /// 1-based; none when the problem is the file as a whole.
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key \"{key}\"")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A whole number from `MIN` to `MAX`, as a flag's value parser: the same
/// message on the command line and in the config file.
pub fn whole<T: TryFrom<u64>, const MIN: u64, const MAX: u64>(s: &str) -> Result<T, String> {
    let expected = || format!("expected a whole number from {MIN} to {MAX}");
    let n: u64 = s.trim().parse().map_err(|_| expected())?;
    if !(MIN..=MAX).contains(&n) {
        return Err(expected());
    }
    T::try_from(n).map_err(|_| expected())
}

/// The arguments of `cmd` that the file may set, by long name: every
/// flag and option with a long name but counters (`-v`), help, version
/// and the config flag itself.
pub fn file_keys(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != CONFIG_FLAG))
        .filter(|a| {
            matches!(
                a.get_action(),
                ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
            )
        })
        .collect()
}

/// Reads `text` (the file at `path`) into arguments for `cmd` in
/// `--key=value` form, each value checked by its flag's own parser.
/// Keys for which `on_command_line` is true (by argument id) are left out,
/// as are keys that conflict with one it names: the command line wins.
pub fn file_args(
    path: &str,
    text: &str,
    cmd: &Command,
    on_command_line: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, ConfigError> {
    let at = |offset: usize| line_of(text, offset);
    let err = |line, key: Option<&str>, message: String| ConfigError {
        path: path.to_string(),
        line,
        key: key.map(str::to_string),
        message,
    };
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| at(s.start));
            err(line, None, e.message().trim_end().to_string())
        })?;
    let cmd = built(cmd);
    let keys = file_keys(&cmd);
    // In file order, so the first problem reported is the first in it.
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut args = Vec::new();
    for (key, value) in entries {
        let line = Some(at(key.span().start));
        let name = key.get_ref().as_str();
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(name)) else {
            let mut message = format!("unknown key \"{name}\"");
            if let Some(near) = suggest(name, keys.iter().filter_map(|a| a.get_long())) {
                message.push_str(&format!(" (did you mean \"{near}\"?)"));
            }
            return Err(err(line, None, message));
        };
        let values = values_of(arg, value.get_ref())
            .map_err(|m| err(Some(at(value.span().start)), Some(name), m))?;
        if let Some(e) = check_values(&cmd, arg, &values) {
            return Err(err(Some(at(value.span().start)), Some(name), e));
        }
        if overridden(&cmd, arg, &on_command_line) {
            continue;
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            if values.first().is_some_and(|v| v == "true") {
                args.push(format!("--{name}").into());
            }
        } else {
            args.extend(values.iter().map(|v| format!("--{name}={v}").into()));
        }
    }
    Ok(args)
}

/// Whether `id` was given on the command line (not a default, not the
/// environment): a test for `file_args`.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    // `value_source` panics on an id `matches` does not know (a debug
    // build's check); `try_get_raw` tells first.
    matches.try_get_raw(id).is_ok() && matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// What the flag's own parser says against `values`, if anything: they
/// are parsed as a command line holding them alone. Only complaints about
/// the values count; what the flag needs beside it is checked when the
/// whole command line is parsed.
fn check_values(cmd: &Command, arg: &Arg, values: &[String]) -> Option<String> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return None;
    }
    let long = arg.get_long()?;
    let argv = std::iter::once(OsString::from("prog"))
        .chain(values.iter().map(|v| format!("--{long}={v}").into()));
    let e = cmd.clone().try_get_matches_from(argv).err()?;
    match e.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue | ErrorKind::InvalidUtf8 => {
            Some(describe(&e))
        }
        _ => None,
    }
}

/// Whether the command line set `arg`, or an argument it conflicts with
/// (either way round: `conflicts_with` is written on one side only).
fn overridden(cmd: &Command, arg: &Arg, on_command_line: &impl Fn(&str) -> bool) -> bool {
    let id = arg.get_id();
    on_command_line(id.as_str())
        || cmd.get_arguments().any(|other| {
            on_command_line(other.get_id().as_str())
                && (cmd
                    .get_arg_conflicts_with(arg)
                    .iter()
                    .any(|c| c.get_id() == other.get_id())
                    || cmd
                        .get_arg_conflicts_with(other)
                        .iter()
                        .any(|c| c.get_id() == id))
        })
}

/// `cmd` with clap's defaults filled in (actions, value parsers), as a
/// parse would see it.
fn built(cmd: &Command) -> Command {
    let mut cmd = cmd.clone();
    cmd.build();
    cmd
}

/// A TOML value as the flag's text values: one for a plain option,
/// any number for a repeatable one, `true`/`false` for a switch.
fn values_of(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(b)) => Ok(vec![b.to_string()]),
        (ArgAction::SetTrue, _) => Err("expected true or false".into()),
        (ArgAction::Append, toml::Value::Array(items)) => items.iter().map(scalar).collect(),
        (_, toml::Value::Array(_)) => Err("expected one value, not a list".into()),
        (_, v) => Ok(vec![scalar(v)?]),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) => Err("expected a value, not a list".into()),
        toml::Value::Table(_) => Err("expected a value, not a table".into()),
    }
}

/// A flag parser's complaint, without clap's framing (which names the
/// flag as typed on a command line).
fn describe(e: &clap::Error) -> String {
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.kind().as_str().unwrap_or("invalid value").to_string(),
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The known key nearest to `name`, if it is near enough to be a typo.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|&(d, _)| d <= MAX_SUGGESTION_DISTANCE)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// What each key is set to in `matches` (from the command line, the file
/// or a default), as text for the log: values of a repeatable flag joined
/// by commas, an unset one as `(none)`.
pub fn settings(cmd: &Command, matches: &ArgMatches) -> BTreeMap<String, String> {
    let cmd = built(cmd);
    file_keys(&cmd)
        .into_iter()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let values: Vec<String> = matches
                .try_get_raw(arg.get_id().as_str())
                .ok()
                .flatten()
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let shown = if values.is_empty() {
                "(none)".to_string()
            } else {
                values.join(",")
            };
            Some((long.to_string(), shown))
        })
        .collect()
}

/// One key that differs between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
    /// Taken by the running server; else it waits for a restart.
    pub live: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config: {} {} -> {}", self.key, self.old, self.new)?;
        if !self.live {
            write!(f, " needs a restart")?;
        }
        Ok(())
    }
}

/// The keys whose values differ from `old` to `new`, in key order, each
/// marked live if it is in `live`.
pub fn diff(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    live: &[&str],
) -> Vec<Change> {
    let none = "(none)".to_string();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (o, n) = (old.get(key).unwrap_or(&none), new.get(key).unwrap_or(&none));
            (o != n).then(|| Change {
                key: key.clone(),
                old: o.clone(),
                new: n.clone(),
                live: live.contains(&key.as_str()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum};

    #[derive(Clone, Copy, Debug, ValueEnum)]
    enum Format {
        Text,
        Json,
    }

    /// A small stand-in for chatd's flags: each kind of argument once.
    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long)]
        config: Option<String>,
        #[arg(long, default_value_t = 4096, value_parser = whole::<usize, 1, 4294967295>)]
        max_line: usize,
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: String,
        #[arg(long, default_value_t = 0.5)]
        login_delay: f64,
        #[arg(long, conflicts_with = "tls_self_signed")]
        tls_cert: Option<String>,
        #[arg(long)]
        tls_self_signed: bool,
        #[arg(long)]
        allow_plain: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        log_format: Format,
        #[arg(short, long, action = ArgAction::Count)]
        verbose: u8,
    }

    /// Parses `cli` (without the program name) with `file` under it.
    fn load(file: &str, cli: &[&str]) -> Result<(Args, BTreeMap<String, String>), ConfigError> {
        let cmd = <Args as clap::CommandFactory>::command();
        let mut argv: Vec<OsString> = vec!["prog".into()];
        let matches = cmd
            .clone()
            .try_get_matches_from(argv.iter().cloned().chain(cli.iter().map(Into::into)))
            .expect("command line parses");
        argv.extend(file_args("f.toml", file, &cmd, |id| given(&matches, id))?);
        argv.extend(cli.iter().map(Into::into));
        let matches = cmd.clone().try_get_matches_from(argv).expect("parses");
        let settings = settings(&cmd, &matches);
        let args = <Args as clap::FromArgMatches>::from_arg_matches(&matches).expect("args");
        Ok((args, settings))
    }

    fn error(file: &str) -> String {
        load(file, &[]).expect_err("refused").to_string()
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_out() {
        let file = "max-line = 100\nlisten = \"0.0.0.0:1\"\nlogin-delay = 2\n";
        let (args, _) = load(file, &["--listen", "127.0.0.1:5000"]).unwrap();
        assert_eq!(args.max_line, 100, "the file beats a default");
        assert_eq!(args.listen, "127.0.0.1:5000", "a flag beats the file");
        assert_eq!(args.login_delay, 2.0, "an integer where a float goes");
        let (args, _) = load(file, &["--max-line=4096"]).unwrap();
        assert_eq!(args.max_line, 4096, "a flag equal to its default wins");
    }

    #[test]
    fn every_kind_of_value() {
        let file = "tls-cert = \"c.pem\"\nallow-plain = [\"10.0.0.0/8\", \"::1\"]\n\
                    log-format = \"json\"\nmax-line = 1_000\n";
        let (args, settings) = load(file, &[]).unwrap();
        assert_eq!(args.tls_cert.as_deref(), Some("c.pem"));
        assert_eq!(args.allow_plain, ["10.0.0.0/8", "::1"]);
        assert!(matches!(args.log_format, Format::Json));
        assert_eq!(args.max_line, 1000);
        assert_eq!(settings["allow-plain"], "10.0.0.0/8,::1");
        assert_eq!(settings["tls-self-signed"], "false");
        let (args, settings) = load("tls-self-signed = true\n", &[]).unwrap();
        assert!(args.tls_self_signed);
        assert_eq!(settings["tls-cert"], "(none)");
    }

    #[test]
    fn a_key_that_conflicts_with_a_flag_gives_way() {
        let (args, _) = load("tls-cert = \"c.pem\"\n", &["--tls-self-signed"]).unwrap();
        assert!(args.tls_self_signed);
        assert_eq!(args.tls_cert, None);
        let (args, _) = load("tls-self-signed = true\n", &["--tls-cert=c.pem"]).unwrap();
        assert!(!args.tls_self_signed);
        assert_eq!(args.tls_cert.as_deref(), Some("c.pem"));
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        assert_eq!(
            error("listen = \"x:1\"\n\nmax-line = 0\n"),
            "config f.toml:3: key \"max-line\": expected a whole number from 1 to 4294967295"
        );
        assert_eq!(
            error("# limits\nmax-lin = 10\n"),
            "config f.toml:2: unknown key \"max-lin\" (did you mean \"max-line\"?)"
        );
        assert_eq!(
            error("frobnicate = 1\n"),
            "config f.toml:1: unknown key \"frobnicate\""
        );
        assert_eq!(
            error("log-format = \"xml\"\n"),
            "config f.toml:1: key \"log-format\": expected one of text, json"
        );
        assert_eq!(
            error("tls-self-signed = \"yes\"\n"),
            "config f.toml:1: key \"tls-self-signed\": expected true or false"
        );
        assert_eq!(
            error("listen = [\"a\", \"b\"]\n"),
            "config f.toml:1: key \"listen\": expected one value, not a list"
        );
        assert_eq!(
            error("max-line = -5\n"),
            "config f.toml:1: key \"max-line\": expected a whole number from 1 to 4294967295"
        );
        assert!(error("verbose = 2\n").contains("unknown key \"verbose\""));
        assert!(error("config = \"other.toml\"\n").contains("unknown key"));
        assert!(error("[server]\nlisten = \"x\"\n").starts_with("config f.toml:1: unknown key"));
        let syntax = error("max-line = 10\nlisten = \n");
        assert!(syntax.starts_with("config f.toml:2: "), "{syntax}");
        let twice = error("max-line = 10\nmax-line = 11\n");
        assert!(twice.starts_with("config f.toml:2: "), "{twice}");
    }

    #[test]
    fn a_bad_value_is_refused_even_where_a_flag_overrides_it() {
        // The file is wrong whatever the command line says; better to hear
        // it now than when the flag is dropped.
        let e = load("max-line = 0\n", &["--max-line=10"]).expect_err("refused");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn whole_numbers() {
        assert_eq!(whole::<u32, 0, 10>("10"), Ok(10));
        assert_eq!(whole::<u32, 0, 10>(" 0"), Ok(0));
        for bad in ["11", "-1", "1.5", "", "ten", "99999999999999999999999"] {
            assert_eq!(
                whole::<u32, 0, 10>(bad),
                Err("expected a whole number from 0 to 10".into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["max-line", "max-clients", "listen"];
        assert_eq!(suggest("max-lines", known.into_iter()), Some("max-line"));
        assert_eq!(suggest("lisen", known.into_iter()), Some("listen"));
        assert_eq!(suggest("database", known.into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn changes_are_listed_and_marked() {
        let (_, old) = load("max-line = 10\nlisten = \"a:1\"\n", &[]).unwrap();
        let (_, new) = load("max-line = 20\nlisten = \"b:1\"\n", &[]).unwrap();
        let changes = diff(&old, &new, LIVE_KEYS);
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "config: listen a:1 -> b:1 needs a restart",
                "config: max-line 10 -> 20"
            ]
        );
        assert!(diff(&old, &old, LIVE_KEYS).is_empty());
        // A key removed from the file goes back to its default.
        let (_, back) = load("listen = \"a:1\"\n", &[]).unwrap();
        let lines: Vec<String> = diff(&old, &back, LIVE_KEYS)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(lines, ["config: max-line 10 -> 4096"]);
    }
}
