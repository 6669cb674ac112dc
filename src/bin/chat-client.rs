//! `chat-client`: flags, then one call into the library's client.

use std::path::PathBuf;
use std::process::ExitCode;

use chatd::client::{self, Config};
use clap::Parser;

/// The terminal client for chatd.
///
/// In a terminal (stdin and stdout both), it edits your line while
/// messages arrive above it. Otherwise it sends stdin's lines and prints
/// what the server sends; at the end of stdin it quits. Local commands:
/// /save FILE, /clear, /quit [REASON], /help. Exit status: 0 when you
/// quit, 1 when the connection fails, the server goes away, or it takes
/// no input for 30 s while some is still unsent after you quit.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Server host name or address; every address it resolves to is tried.
    #[arg(default_value = client::DEFAULT_HOST)]
    host: String,

    /// Server port.
    #[arg(default_value_t = client::DEFAULT_PORT)]
    port: u16,

    /// Your name, sent as soon as the connection opens (otherwise the
    /// server asks for it).
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: Option<String>,

    /// Append the transcript to FILE as it happens, with times (passwords
    /// are never in it).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

fn parse_name(s: &str) -> Result<String, String> {
    if chatd::wire::proto::valid_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "use 1-{} letters, digits, _ or -",
            chatd::wire::proto::MAX_NAME_LEN
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = Config {
        host: args.host,
        port: args.port,
        name: args.name,
        log: args.log,
    };
    match client::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
