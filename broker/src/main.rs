//! The `broker` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MQTT.
    Run {
        /// Number of shards, one pinned thread per core.
        #[arg(long)]
        cores: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } => {
            eprintln!(
                "broker: the serving core is not part of this build yet; \
                 the MQTT codec (crate `net`) is. See README.md."
            );
            ExitCode::from(2)
        }
    }
}
