//! The `perf` load generator: emqtt-bench's `conn`, `sub` and `pub`, plus `bench`
//! (publishers and subscribers in one process). See README.md.
//!
//! Layout: `cli` (flags) → `scenario` (the resolved run) → `run` (main thread: phases,
//! progress) → `thread` (one monoio runtime per `--threads`) → `client` (one connection's
//! tasks) around `session` (the sans-IO MQTT client state), over `stream` (TCP or a QUIC
//! stream) and `transport` (TLS and WebSocket, sans-IO, between the socket and the codec);
//! `quic` drives quinn-proto, sans-IO too, from the thread's runtime. `payload`, `seq`,
//! `stats` and `report` are the measurement.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

mod cli;
mod client;
mod clock;
mod notify;
mod payload;
mod precise;
mod quic;
mod report;
mod run;
mod scenario;
mod seq;
mod session;
mod stats;
mod stream;
mod template;
mod thread;
mod transport;

use cli::{Cli, Command, Common};
use clock::Clock;
use scenario::Scenario;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = Cli::parse();
    let seed = Clock::Realtime.now() ^ (u64::from(std::process::id()) << 32);
    let scn = match Scenario::build(&cli.command, seed) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("perf: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = std::io::stderr().is_terminal();
    let outcome = match run::run(scn.clone(), progress) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("perf: {e}");
            return ExitCode::from(1);
        }
    };
    let report = report::Report::new(&scn, &outcome, argv);
    print!("{}", report.table());
    if let Some(path) = &common(&cli.command).json {
        let text = match serde_json::to_string_pretty(&report.json()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("perf: cannot serialise the report: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("perf: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if outcome.live.established == 0 && !outcome.interrupted {
        eprintln!("perf: no client could connect");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn common(c: &Command) -> &Common {
    match c {
        Command::Conn(a) => &a.common,
        Command::Sub(a) => &a.common,
        Command::Pub(a) => &a.common,
        Command::Bench(a) => &a.common,
    }
}
