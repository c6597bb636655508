//! Bounded SPSC rings between shards, with doorbells.
