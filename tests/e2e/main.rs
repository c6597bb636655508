//! End-to-end tests of the `broker` binary: the real broker on an ephemeral port with two
//! shards, driven by real third-party clients (Python paho-mqtt >= 2.2 scripts in `clients/`,
//! the mosquitto command-line clients) and by raw sockets where exact bytes or misbehaving
//! peers are the point.
//!
//! Requirements: `python3` with `pip install paho-mqtt==2.2.0`, and the Debian
//! `mosquitto-clients` package (`mosquitto_pub`, `mosquitto_sub`). A missing one fails the
//! tests that need it with the install command; nothing is skipped silently.
//!
//! Every wait has a deadline; every broker is stopped with SIGTERM when its test ends, and its
//! per-shard statistics (`shard N stopped: ...`) are checked where they say something.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod raw;

mod access;
mod alias;
mod api;
mod conformance;
mod connect;
mod control;
mod delayed;
mod delivery;
mod durability;
mod exclusive;
mod keepalive;
mod load;
mod malformed;
mod mosquitto;
mod quic;
mod retained;
mod rewrite;
mod shared;
mod shutdown;
mod sys;
mod takeover;
mod tls;
mod will;
mod ws;
