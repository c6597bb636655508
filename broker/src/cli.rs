//! The command line: `broker run`, `broker config keys`, `broker config check`, `broker data`,
//! `broker admin passwd`.
//!
//! Errors in the configuration print one line, `error: <message>`, on standard error and exit
//! with status 2, like clap's own usage errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, Resolved, schema};
use crate::{cpus, logger};

/// Exit status for a usage or configuration error (clap uses the same).
pub const EXIT_USAGE: u8 = 2;

/// A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MQTT.
    #[command(after_help = PRECEDENCE)]
    Run(RunArgs),
    /// List the configuration keys, or check a configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Verify or compact a data directory (`node.data_dir`).
    #[command(subcommand)]
    Data(DataCommand),
    /// Manage the REST API's dashboard users offline.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `broker admin`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a dashboard user's password, creating the user if missing. Works whether or not the
    /// broker runs: a running broker uses the new password from its next login, and ends the
    /// user's sessions.
    Passwd(PasswdArgs),
}

/// `broker admin passwd`.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// The dashboard user [default: dashboard.default_username, "admin" unless configured]
    pub username: Option<String>,
    /// The new password, for scripts [default: read from standard input, one line]
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// The data directory (node.data_dir) [default: from the configuration, ./data]
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "sets"])]
    pub data_dir: Option<PathBuf>,
    /// Where node.data_dir and dashboard.default_username come from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `broker data`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Read every shard's log and snapshot without changing anything; print what they hold
    /// and any damage. Exit status 1 when something was skipped.
    Check {
        /// The data directory (`node.data_dir`).
        dir: PathBuf,
    },
    /// Rewrite each shard's log as one snapshot of its live state (the broker must not be
    /// running on the directory).
    Compact {
        /// The data directory (`node.data_dir`).
        dir: PathBuf,
    },
}

const PRECEDENCE: &str = "\
Configuration: built-in defaults, then the --config file, then environment variables \
BROKER_<KEY> (levels separated by __, e.g. BROKER_MQTT__MAX_INFLIGHT=64), then --set; \
a later source wins. `broker config keys` lists every key with its type and default; \
`broker config check` prints the effective configuration.";

/// `broker run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Shards to start, one thread pinned to each core: from 1 to the number of CPUs this
    /// process may run on (its affinity mask). The default is the number of available CPUs.
    #[arg(long, value_name = "N", default_value_t = cpus::default_count(), value_parser = parse_cores)]
    pub cores: usize,
    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// The configuration sources given on the command line.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file with EMQX key names [default: none, built-in defaults only]
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set one key, e.g. --set mqtt.max_inflight=64 (dotted path, value as in an environment
    /// variable); repeatable, the last one wins; overrides BROKER_* variables and the file
    /// [default: none]
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `broker config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every configuration key with its type, default and meaning.
    Keys {
        /// Print the Markdown table of docs/configuration.md instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Validate the configuration and print the effective values as TOML.
    #[command(after_help = PRECEDENCE)]
    Check(ConfigArgs),
}

/// Parses `--cores`: from 1 to [`cpus::allowed`]. A larger value is an error, never clamped.
pub fn parse_cores(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| "expected a number of cores".to_owned())?;
    let allowed = cpus::allowed();
    match n {
        0 => Err("must be at least 1".to_owned()),
        n if n > allowed => Err(format!(
            "this process may run on {allowed} CPU{} (its affinity mask), so at most {allowed}",
            if allowed == 1 { "" } else { "s" }
        )),
        n => Ok(n),
    }
}

/// Loads the configuration from `args` and the process environment.
pub fn load(args: &ConfigArgs) -> Result<Resolved, ConfigError> {
    Resolved::load(args.config.as_deref(), process_env(), &args.sets)
}

/// The process environment, with names and values that are not UTF-8 converted lossily (a
/// `BROKER_*` name is ASCII anyway).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    })
}

/// The start of `broker run`: loads the configuration, installs the logger at `log.level` and
/// logs every key that differs from its default. On error, prints it and returns the exit
/// status to end with.
pub fn start(args: &ConfigArgs) -> Result<Config, ExitCode> {
    let resolved = load(args).map_err(|e| fail(&e))?;
    let level = resolved.config().log.level.filter();
    logger::set_json(resolved.config().log.format == crate::config::LogFormat::Json);
    if logger::init(level).is_err() {
        logger::set_level(level);
    }
    log::info!("broker {} starting", env!("CARGO_PKG_VERSION"));
    let mut changed = 0;
    for setting in resolved.changed() {
        changed += 1;
        log::info!(
            "config: {} = {} ({})",
            setting.key.path,
            setting.value.to_toml(),
            setting.origin
        );
    }
    if changed == 0 {
        log::info!("config: built-in defaults");
    }
    Ok(resolved.into_config())
}

/// Runs `broker config ...`.
pub fn config(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Keys { markdown: false } => print!("{}", schema::keys_text()),
        ConfigCommand::Keys { markdown: true } => print!("{}", schema::keys_markdown()),
        ConfigCommand::Check(args) => match load(&args) {
            Ok(resolved) => print!("{}", resolved.to_toml()),
            Err(e) => return fail(&e),
        },
    }
    ExitCode::SUCCESS
}

/// Runs `broker data ...`.
pub fn data(command: DataCommand) -> ExitCode {
    match command {
        DataCommand::Check { dir } => match storage::dir::check(&dir) {
            Ok(check) => {
                print!("{}", describe_check(&dir, &check));
                if check.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
        DataCommand::Compact { dir } => match storage::dir::compact(&dir) {
            Ok(shards) => {
                if shards.is_empty() {
                    println!("{}: no shard logs", dir.display());
                }
                for s in shards {
                    println!(
                        "shard {}: {} -> {} bytes ({} records)",
                        s.shard, s.before, s.after, s.records
                    );
                    for p in s.problems {
                        println!("  {p}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
    }
}

/// Runs `broker admin ...`.
pub fn admin(command: AdminCommand) -> ExitCode {
    let AdminCommand::Passwd(args) = command;
    let (data_dir, default_username) = match &args.data_dir {
        Some(dir) => (dir.clone(), "admin".to_owned()),
        None => match load(&args.config) {
            Ok(resolved) => {
                let c = resolved.config();
                let username = c.dashboard.default_username.clone();
                (c.node.data_dir.clone(), username)
            }
            Err(e) => return fail(&e),
        },
    };
    let username = args.username.unwrap_or(default_username);
    if let Err(e) = crate::access::check_username(&username) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let password = match args.password {
        Some(p) => p,
        None => match read_password(&username) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot read the password: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    if let Err(e) = crate::access::check_password(&password) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    match crate::access::set_password(&data_dir, &username, &password) {
        Ok(created) => {
            println!(
                "{} dashboard user {username} in {}; a running broker uses the new password \
                 from its next login",
                if created {
                    "created"
                } else {
                    "changed the password of"
                },
                data_dir.join("dashboard").join("users.json").display()
            );
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The new password from standard input: one line; on a terminal, asked twice without echo.
fn read_password(username: &str) -> std::io::Result<String> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = read_hidden(&format!("New password for dashboard user {username}: "))?;
    let again = read_hidden("Again: ")?;
    if first != again {
        return Err(std::io::Error::other("the two passwords differ"));
    }
    Ok(first)
}

/// One line from the terminal on standard input, with echo off while it is typed.
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    use std::io::Write as _;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr writes a termios into the buffer it is given, which is large enough;
    // it is read only if the call succeeded.
    let saved = (unsafe { libc::tcgetattr(fd, saved.as_mut_ptr()) } == 0)
        // SAFETY: tcgetattr returned 0, so it initialized the termios.
        .then(|| unsafe { saved.assume_init() });
    if let Some(saved) = &saved {
        let mut quiet = *saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid termios for the descriptor tcgetattr just described.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    if let Some(saved) = &saved {
        // SAFETY: restores the termios tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, saved) };
    }
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The text `broker data check` prints.
pub fn describe_check(dir: &std::path::Path, check: &storage::dir::Check) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if check.shards.is_empty() {
        let _ = writeln!(out, "{}: no shard logs", dir.display());
    }
    for s in &check.shards {
        let r = &s.report;
        let snapshot = match r.snapshot {
            Some((_, parts, records)) => {
                format!("snapshot of {records} records in {parts} part(s)")
            }
            None => "no snapshot".to_owned(),
        };
        let c = s.image.counts();
        let _ = writeln!(
            out,
            "shard {}: {} bytes; {snapshot}; {} log segment(s), {} records; {} sessions, {} queued, {} inflight, {} retained, {} delayed",
            s.shard,
            s.bytes,
            r.log_segments,
            r.log_records,
            c.sessions,
            c.queued,
            c.inflight,
            c.retained,
            c.delayed
        );
        for p in &r.problems {
            let _ = writeln!(out, "  {p}");
        }
        if let Some(e) = &s.first_undecodable {
            let _ = writeln!(out, "  {} record(s) skipped: {e}", s.undecodable);
        }
    }
    let t = &check.total;
    let _ = writeln!(
        out,
        "total: {} sessions ({} subscriptions), {} queued and {} inflight deliveries of {} messages ({} bytes), {} retained, {} delayed",
        t.sessions,
        t.subscriptions,
        t.queued,
        t.inflight,
        t.messages,
        t.message_bytes,
        t.retained,
        t.delayed
    );
    let _ = writeln!(
        out,
        "{}",
        if check.is_clean() {
            "clean"
        } else {
            "damaged: the records listed above were skipped"
        }
    );
    out
}

fn fail(error: &ConfigError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cores() {
        assert_eq!(parse_cores("1"), Ok(1));
        assert_eq!(
            parse_cores(&cpus::allowed().to_string()),
            Ok(cpus::allowed())
        );
        assert_eq!(parse_cores("0"), Err("must be at least 1".to_owned()));
        assert!(parse_cores(&(cpus::allowed() + 1).to_string()).is_err());
        assert!(parse_cores("-1").is_err());
        assert!(parse_cores("two").is_err());
    }

    #[test]
    fn run_arguments() {
        let cli = Cli::try_parse_from([
            "broker", "run", "--cores", "1", "-c", "b.toml", "--set", "a=1", "--set", "b=2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.cores, 1);
        assert_eq!(args.config.config, Some(PathBuf::from("b.toml")));
        assert_eq!(args.config.sets, ["a=1", "b=2"]);

        let Command::Run(args) = Cli::try_parse_from(["broker", "run"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(args.cores, cpus::default_count());
        assert!(args.config.config.is_none() && args.config.sets.is_empty());
    }

    #[test]
    fn admin_passwd_arguments() {
        let cli = Cli::try_parse_from([
            "broker",
            "admin",
            "passwd",
            "--data-dir",
            "/tmp/d",
            "--password",
            "p4ssw0rd!",
            "ops",
        ])
        .unwrap();
        let Command::Admin(AdminCommand::Passwd(args)) = cli.command else {
            panic!("not admin passwd")
        };
        assert_eq!(args.username.as_deref(), Some("ops"));
        assert_eq!(args.data_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(args.password.as_deref(), Some("p4ssw0rd!"));
        let both = ["broker", "admin", "passwd", "--data-dir", "d", "-c", "x"];
        assert!(Cli::try_parse_from(both).is_err());
        let Command::Admin(AdminCommand::Passwd(args)) =
            Cli::try_parse_from(["broker", "admin", "passwd", "-c", "b.toml"])
                .unwrap()
                .command
        else {
            panic!("not admin passwd")
        };
        assert!(args.username.is_none() && args.data_dir.is_none());
        assert_eq!(args.config.config, Some(PathBuf::from("b.toml")));
    }
}
