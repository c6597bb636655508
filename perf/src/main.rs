//! The `perf` load generator.

use std::process::ExitCode;

use clap::Parser;

/// MQTT load generator (conn, sub, pub, bench).
#[derive(Debug, Parser)]
#[command(name = "perf", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("perf: no scenarios in this build yet; see README.md.");
    ExitCode::from(2)
}
