//! The broker's command line, configuration and bootstrap, as a library so that the binary
//! (`src/main.rs`) stays thin and tests can drive every piece.
//!
//! - [`config`]: the typed [`config::Config`], loaded from defaults, a TOML file with EMQX key
//!   names, `BROKER_*` environment variables and `--set` arguments, from one schema table.
//! - [`cli`]: the clap command line and the `broker config` subcommands.
//! - [`logger`]: a minimal `log` backend on standard error.
//! - [`cpus`]: how many CPUs the process may use.
//! - [`server`]: binds the listeners and runs the shards.
//! - [`control`]: the control plane's HTTP server (health check, Prometheus metrics).
//! - [`access`]: access control of the REST API (dashboard users, bearer tokens, API keys).
//! - [`tls`]: the rustls server configuration of a TLS listener; [`ocsp`]: fetching OCSP
//!   responses to staple.

pub mod access;
pub mod cli;
pub mod config;
pub mod control;
pub mod cpus;
pub mod logger;
pub mod ocsp;
pub mod server;
pub mod tls;
