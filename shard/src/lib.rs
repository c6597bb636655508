//! The per-core engine: sans-IO sessions, the subscription index, routing, retained messages
//! and wills, the monoio driver and the cross-shard rings.
//!
//! [`Shard`] is the sans-IO state machine of one core; [`ring`] the lock-free rings between
//! cores; [`trie`] the subscription index.

pub mod admin;
pub mod alias;
pub mod auth;
pub mod core;
pub mod driver;
pub mod message;
pub mod out;
pub mod persist;
pub mod quic;
pub mod retained;
pub mod rewrite;
pub mod ring;
pub mod session;
pub mod settings;
pub mod slab;
pub mod stats;
pub mod tls;
pub mod trie;
pub mod udp;
pub mod ws;

pub use crate::core::{Event, Read, RegistryMsg, Shard, ShardId, ShardMsg};
pub use crate::settings::Settings;
pub use crate::stats::Stats;
