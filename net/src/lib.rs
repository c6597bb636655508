//! Networking for the broker and the `perf` load generator.
//!
//! [`mqtt`] is the one MQTT 3.1 / 3.1.1 / 5.0 codec of the project: the broker, `perf` and the
//! end-to-end tests all use it. Transports (TCP, TLS, WebSocket, QUIC) live beside it.

pub mod mqtt;
