//! The per-core engine: sans-IO sessions, the subscription index, routing, retained messages
//! and wills, the monoio driver and the cross-shard rings.

pub mod ring;
pub mod trie;
