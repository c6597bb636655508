//! Durable storage: the append-only, checksummed segment log, snapshots and recovery.
//!
//! This crate is being built up; see its README for what it will own.
