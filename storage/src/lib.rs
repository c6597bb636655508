//! Durable storage: the append-only, checksummed segment log, snapshots and recovery.
//!
//! See the crate's README for what it owns and promises.

pub mod dir;
pub mod exec;
pub mod format;
pub mod image;
pub mod lock;
pub mod log;
pub mod recover;
pub mod schema;
