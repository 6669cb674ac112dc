//! The operator's commands on the database (`chatd accounts`, `backup`,
//! `check`): each one short transaction, safe beside a running server.

use std::io::BufRead;
use std::path::PathBuf;

use chatd::store::Store;
use chatd::store::password;
use chatd::wire::proto::check_password;
use clap::Subcommand;

use super::{Args, cost};

/// Operator commands on the database; safe while a server runs on it.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Manage accounts: list, delete, set a password.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Copy the database to DEST, consistently, while a server may be
    /// writing to it. DEST must not exist yet.
    Backup { dest: PathBuf },
    /// Verify the database: SQLite's integrity check and what chatd's
    /// schema promises. Exits 1 and names each problem if any.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    /// Registered names, with when they were registered.
    List,
    /// Delete an account; the name is free from the next login on.
    Delete { name: String },
    /// Set a password, read as the first line of stdin (exactly as typed,
    /// without its line end); it takes effect at the next login.
    Passwd { name: String },
}

/// `chatd accounts ...`: one short transaction on the database, beside a
/// running server if there is one (it notices within a second).
pub fn accounts(args: &Args, cmd: &AccountsCmd) -> Result<(), String> {
    if args.db != ":memory:" && !std::path::Path::new(&args.db).exists() {
        return Err(format!("no database at {} (use --db PATH)", args.db));
    }
    let store =
        Store::open(&args.db, 0).map_err(|e| format!("cannot use database {}: {e}", args.db))?;
    match cmd {
        AccountsCmd::List => {
            let accounts = store.accounts()?;
            for (name, created) in &accounts {
                println!("{name}\tregistered {created}");
            }
            eprintln!("{} accounts", accounts.len());
        }
        AccountsCmd::Delete { name } => {
            if !store.delete_account(name)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("deleted {name}");
        }
        AccountsCmd::Passwd { name } => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            let password = line
                .strip_suffix('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .unwrap_or(&line);
            check_password(password).map_err(|e| e.to_string())?;
            if store.password_hash(name)?.is_none() {
                return Err(format!("no account named {name}"));
            }
            let hash = password::hash(password, cost(args)?)?;
            if !store.set_password_hash(name, &hash)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("password changed for {name}");
        }
    }
    Ok(())
}

/// `chatd backup DEST`: a consistent copy, beside a running server or not.
pub fn backup(args: &Args, dest: &std::path::Path) -> Result<(), String> {
    if args.db == ":memory:" {
        return Err("an in-memory database cannot be backed up (use --db PATH)".into());
    }
    let copied = chatd::store::backup::backup(std::path::Path::new(&args.db), dest)?;
    println!(
        "backed up {} to {}: {}, {} accounts, {} rooms, {} messages",
        args.db,
        dest.display(),
        size(copied.bytes),
        copied.accounts,
        copied.rooms,
        copied.messages
    );
    Ok(())
}

/// `bytes` for people: 5.2 MiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `chatd check`: a summary and exit 0, or each problem on a line of its
/// own (on stdout, the report) and exit 1.
pub fn check(args: &Args) -> Result<(), String> {
    if args.db == ":memory:" {
        return Err("an in-memory database has nothing to check (use --db PATH)".into());
    }
    match chatd::store::check::check(std::path::Path::new(&args.db)) {
        Ok(s) => {
            println!(
                "ok: {} accounts, {} rooms, {} messages",
                s.accounts, s.rooms, s.messages
            );
            Ok(())
        }
        Err(problems) => {
            for p in &problems.list {
                println!("{p}");
            }
            if problems.more > 0 {
                println!("... and {} more problems", problems.more);
            }
            let n = problems.list.len() + problems.more;
            let s = if n == 1 { "" } else { "s" };
            Err(format!("{}: {n} problem{s} found", args.db))
        }
    }
}
