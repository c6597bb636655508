//! Shard-local counters: plain integers owned by one shard, read by the metrics exporter from
//! snapshots (never contended across cores).

/// Counters of one shard. Field names follow EMQX's metric names where EMQX has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sockets accepted.
    pub connections_accepted: u64,
    /// CONNACK with success sent.
    pub connections_established: u64,
    /// CONNECT refused with a CONNACK error code.
    pub connections_refused: u64,
    /// Enhanced authentication exchanges that succeeded (at CONNECT or re-authentication).
    pub enhanced_auth_success: u64,
    /// TLS or WebSocket sessions that failed (bad record or frame, certificate refused, a
    /// refused upgrade, ...).
    pub tls_failures: u64,
    /// QUIC datagrams handed over the rings to the shard owning their connection.
    pub quic_datagrams_forwarded: u64,
    /// Established connections that ended.
    pub connections_closed: u64,
    /// No CONNECT within `mqtt.idle_timeout`.
    pub connect_timeouts: u64,
    /// Keep Alive expired.
    pub keepalive_timeouts: u64,
    /// Sessions taken over by a new connection with the same client id.
    pub takeovers: u64,
    /// Will Messages published.
    pub wills_published: u64,
    /// Offline sessions that expired.
    pub sessions_expired: u64,
    /// Packets decoded.
    pub packets_received: u64,
    /// Bytes of complete packets read from clients.
    pub bytes_received: u64,
    /// Bytes handed to the sockets of clients.
    pub bytes_sent: u64,
    /// Packets encoded.
    pub packets_sent: u64,
    /// Malformed packets and protocol errors.
    pub protocol_errors: u64,
    /// DISCONNECT packets sent with a non-zero reason code.
    pub disconnects_sent: u64,
    /// PUBLISH received from clients.
    pub messages_received: u64,
    /// PUBLISH sent to clients.
    pub messages_sent: u64,
    /// Outgoing QoS 1/2 completed (PUBACK / PUBCOMP).
    pub messages_acked: u64,
    /// Messages pushed to another shard.
    pub messages_forwarded: u64,
    /// Outgoing PUBLISH or PUBREL sent again.
    pub messages_retransmitted: u64,
    /// Topics and filters changed by `rewrite` rules.
    pub topics_rewritten: u64,
    /// Subscriptions made for clients by `auto_subscribe`.
    pub auto_subscribed: u64,
    /// SUBSCRIBE topic filters accepted.
    pub subscribes: u64,
    /// Published messages that matched no subscription.
    pub dropped_no_subscribers: u64,
    /// Deliveries dropped because the session queue was full (any QoS).
    pub dropped_queue_full: u64,
    /// Of those, QoS 1/2.
    pub dropped_queue_full_qos12: u64,
    /// QoS 0 deliveries dropped because the connection's write buffer was full.
    pub dropped_qos0_write_buffer_full: u64,
    /// QoS 0 deliveries to offline sessions not queued (`mqtt.mqueue_store_qos0 = false`).
    pub dropped_qos0_offline: u64,
    /// Deliveries whose Message Expiry Interval ran out.
    pub dropped_expired: u64,
    /// Deliveries over the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// QoS 1/2 messages queued or inflight in sessions that ended.
    pub dropped_session_ended: u64,
    /// Incoming QoS 2 refused because `mqtt.max_awaiting_rel` was reached.
    pub dropped_awaiting_rel_full: u64,
    /// Incoming QoS 2 forgotten after `mqtt.await_rel_timeout` without PUBREL.
    pub dropped_await_rel_timeout: u64,
    /// Session moves whose duplicate filter reached its bound (should stay zero).
    pub move_dedup_overflows: u64,
    /// Retained messages delivered to new subscriptions.
    pub retained_delivered: u64,
    /// Retained messages not stored: payload over `retainer.max_payload_size`.
    pub retained_dropped_too_large: u64,
    /// Retained messages not stored: `retainer.max_retained_messages` reached.
    pub retained_dropped_full: u64,
    /// Retained-message queries cut short by the per-query work bound.
    pub retained_queries_truncated: u64,
    /// Shared-subscription deliveries sent to another member because theirs left unacked.
    pub shared_redispatched: u64,
    /// Delayed publishes stored.
    pub delayed_stored: u64,
    /// Delayed publishes published when due.
    pub delayed_published: u64,
    /// Delayed publishes refused: `delayed.max_delayed_messages` reached.
    pub delayed_dropped_full: u64,
    /// Anything else dropped (should stay zero).
    pub dropped_other: u64,
}
