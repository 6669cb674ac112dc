//! `chat-client`: flags, then one call into the library's client.

use std::path::PathBuf;
use std::process::ExitCode;

use chatd::client::tls::{Pin, Trust};
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
///
/// With --tls (or --tls-ca or --tls-pin, which imply it) the connection is
/// TLS and the server's certificate is checked first; if the check fails,
/// the client prints the certificate's SHA-256 fingerprint and exits 1. It
/// never falls back to plain text.
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

    /// Connect with TLS, trusting the system's root certificates; the
    /// certificate must be valid for HOST.
    #[arg(long)]
    tls: bool,

    /// Trust the CA certificates in FILE (PEM, one or more) instead of the
    /// system's; the certificate must be valid for HOST. Implies --tls.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// Accept exactly the server certificate with this SHA-256 fingerprint
    /// (hex, colons optional, any case: what a self-signed chatd logs),
    /// whatever names it holds. Implies --tls.
    #[arg(long, value_name = "SHA256", value_parser = Pin::parse, conflicts_with = "tls_ca")]
    tls_pin: Option<Pin>,
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

/// Either of the specific flags says TLS as clearly as `--tls` does; asking
/// for it twice is no error.
fn trust(tls: bool, ca: Option<PathBuf>, pin: Option<Pin>) -> Option<Trust> {
    match (ca, pin) {
        (_, Some(pin)) => Some(Trust::Pin(pin)),
        (Some(ca), None) => Some(Trust::CaFile(ca)),
        (None, None) => tls.then_some(Trust::System),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = Config {
        host: args.host,
        port: args.port,
        name: args.name,
        log: args.log,
        tls: trust(args.tls, args.tls_ca, args.tls_pin),
    };
    match client::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
