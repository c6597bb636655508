//! The `broker` binary: parses the command line and hands over to the library (`lib.rs`).

use std::process::ExitCode;

use broker::cli::{self, Cli, Command};
use broker::config::Config;
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => match cli::start(&args.config) {
            Ok(config) => run(config, args.cores),
            Err(status) => status,
        },
        Command::Config(command) => cli::config(command),
        Command::Data(command) => cli::data(command),
        Command::Admin(command) => cli::admin(command),
    }
}

/// Starts `cores` shards with `config` and serves until SIGTERM or SIGINT.
fn run(config: Config, cores: usize) -> ExitCode {
    broker::server::serve(&config, cores)
}
