//! The per-core engine: sans-IO sessions, the subscription index, routing, retained messages
//! and wills, the monoio driver and the cross-shard rings.
//!
//! This crate is being built up; see its README for what it will own.
