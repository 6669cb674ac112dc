//! The operator's commands on the database (`chatd accounts`, `backup`,
//! `check`): each one short transaction, safe beside a running server.

use std::io::BufRead;
use std::path::PathBuf;

use chatd::chat::moderation::{AuditEntry, OPERATOR};
use chatd::cluster::AccountRecord;
use chatd::cluster::admin::Admin;
use chatd::cluster::link::Edit;
use chatd::store::Store;
use chatd::store::password;
use chatd::wire::proto::{Role, Timestamp, check_password, valid_name};
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
    /// Every moderation action, newest first, one line each:
    /// TIME BY ACTION TARGET [REASON].
    Audit {
        /// Show at most this many.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    /// Registered names, with when they were registered and their roles.
    List,
    /// Create an account (say with --registration closed), its password
    /// read as the first line of stdin.
    Add { name: String },
    /// Set an account's role: user, moderator or admin. A running server
    /// applies it within about a second.
    Role {
        name: String,
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Delete an account; the name is free from the next login on.
    Delete { name: String },
    /// Set a password, read as the first line of stdin (exactly as typed,
    /// without its line end); it takes effect at the next login.
    Passwd { name: String },
}

/// `chatd accounts ...`: one short transaction on the database, beside a
/// running server if there is one (it notices within a second).
pub fn accounts(args: &Args, cmd: &AccountsCmd) -> Result<(), String> {
    if !args.cluster.is_empty() {
        return cluster_accounts(args, cmd);
    }
    // Adding the first account may create the database (say, before the
    // first start with --registration closed); the rest need one.
    let creates = matches!(cmd, AccountsCmd::Add { .. });
    if !creates && args.db != ":memory:" && !std::path::Path::new(&args.db).exists() {
        return Err(format!("no database at {} (use --db PATH)", args.db));
    }
    let store =
        Store::open(&args.db, 0).map_err(|e| format!("cannot use database {}: {e}", args.db))?;
    match cmd {
        AccountsCmd::List => {
            let accounts = store.accounts()?;
            for (name, created, role) in &accounts {
                println!("{name}\tregistered {created}\t{}", role.as_str());
            }
            eprintln!("{} accounts", accounts.len());
        }
        AccountsCmd::Delete { name } => {
            if !store.delete_account(name)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("deleted {name}");
        }
        AccountsCmd::Add { name } => {
            check_name(name)?;
            let password = read_password()?;
            if store.password_hash(name)?.is_some() {
                return Err(format!("{name} is already registered"));
            }
            let hash = password::hash(&password, cost(args)?)?;
            if !store.add_account(name, &hash, Timestamp::now())? {
                return Err(format!("{name} is already registered"));
            }
            eprintln!("added {name}");
        }
        AccountsCmd::Role { name, role } => {
            if !store.set_role(name, *role)? {
                return Err(format!("no account named {name}"));
            }
            store.add_audit(&role_audit(name, *role))?;
            eprintln!("{name} is now {}", role.as_str());
        }
        AccountsCmd::Passwd { name } => {
            let password = read_password()?;
            if store.password_hash(name)?.is_none() {
                return Err(format!("no account named {name}"));
            }
            let hash = password::hash(&password, cost(args)?)?;
            if !store.set_password_hash(name, &hash)? {
                return Err(format!("no account named {name}"));
            }
            eprintln!("password changed for {name}");
        }
    }
    Ok(())
}

/// A new account's name, as the chat accepts it.
fn check_name(name: &str) -> Result<(), String> {
    if valid_name(name) {
        return Ok(());
    }
    Err(format!(
        "invalid name {name:?}: use 1-32 letters, digits, _ or -"
    ))
}

/// The audit entry of the operator setting `name`'s role.
fn role_audit(name: &str, role: Role) -> AuditEntry {
    AuditEntry {
        ts: Timestamp::now(),
        by: OPERATOR.into(),
        action: "role",
        target: name.into(),
        reason: Some(role.as_str().into()),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not a role: use user, moderator or admin"))
}

/// A password from the first line of stdin, exactly as typed without its
/// line end.
fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line)
        .to_string();
    check_password(&password).map_err(|e| e.to_string())?;
    Ok(password)
}

/// `chatd audit`: moderation actions, newest first.
pub fn audit(args: &Args, limit: usize) -> Result<(), String> {
    if !args.cluster.is_empty() {
        let admin = Admin::connect(&args.cluster, &args.cluster_name)?;
        return print_audit(&admin.audited(limit)?);
    }
    if args.db != ":memory:" && !std::path::Path::new(&args.db).exists() {
        return Err(format!("no database at {} (use --db PATH)", args.db));
    }
    let store =
        Store::open(&args.db, 0).map_err(|e| format!("cannot use database {}: {e}", args.db))?;
    print_audit(&store.audit(limit)?)
}

fn print_audit(entries: &[AuditEntry]) -> Result<(), String> {
    for entry in entries {
        println!("{entry}");
    }
    eprintln!("{} actions", entries.len());
    Ok(())
}

/// `chatd accounts --cluster URL ...`: the same commands on the cluster's
/// accounts in NATS; every node's copy follows within about a second.
fn cluster_accounts(args: &Args, cmd: &AccountsCmd) -> Result<(), String> {
    let admin = Admin::connect(&args.cluster, &args.cluster_name)?;
    let no_such = |name: &str| format!("no account named {name} in cluster {}", args.cluster_name);
    match cmd {
        AccountsCmd::List => {
            let accounts = admin.accounts()?;
            for a in &accounts {
                println!("{}\t{}", a.name, a.role);
            }
            eprintln!("{} accounts", accounts.len());
        }
        AccountsCmd::Delete { name } => {
            if !admin.delete(name)? {
                return Err(no_such(name));
            }
            eprintln!("deleted {name}");
        }
        AccountsCmd::Add { name } => {
            check_name(name)?;
            let password = read_password()?;
            let record = AccountRecord {
                name: name.clone(),
                hash: password::hash(&password, cost(args)?)?,
                role: Role::User.as_str().to_string(),
                tokens: chatd::store::fresh_generation(),
            };
            if !admin.add(&record)? {
                return Err(format!("{name} is already registered"));
            }
            eprintln!("added {name}");
        }
        AccountsCmd::Role { name, role } => {
            if !admin.edit(name, Edit::Role(role.as_str().to_string()))? {
                return Err(no_such(name));
            }
            admin.audit(&role_audit(name, *role))?;
            eprintln!("{name} is now {}", role.as_str());
        }
        AccountsCmd::Passwd { name } => {
            let password = read_password()?;
            let hash = password::hash(&password, cost(args)?)?;
            if !admin.edit(name, Edit::Hash(hash))? {
                return Err(no_such(name));
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
