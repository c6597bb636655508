//! Shard-local counters and latency histograms: plain integers owned by one shard, read by the
//! metrics exporter from snapshots (never contended across cores).

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Counters of one shard. Field names follow EMQX's metric names where EMQX has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sockets accepted.
    pub connections_accepted: u64,
    /// CONNECTs that reached authentication (well-formed, acceptable client id and will):
    /// EMQX's `client.authenticate`.
    pub client_authenticate: u64,
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
    /// Of those, by packet type (indexed by the MQTT type number, 1–15; 0 unused).
    pub packets_received_by_type: [u64; 16],
    /// Bytes of complete packets read from clients.
    pub bytes_received: u64,
    /// Bytes handed to the sockets of clients.
    pub bytes_sent: u64,
    /// Packets encoded.
    pub packets_sent: u64,
    /// Of those, by packet type (indexed by the MQTT type number, 1–15; 0 unused).
    pub packets_sent_by_type: [u64; 16],
    /// Malformed packets and protocol errors.
    pub protocol_errors: u64,
    /// DISCONNECT packets sent with a non-zero reason code.
    pub disconnects_sent: u64,
    /// PUBLISH received from clients.
    pub messages_received: u64,
    /// Of those, by QoS (0, 1, 2).
    pub messages_received_by_qos: [u64; 3],
    /// PUBLISH sent to clients.
    pub messages_sent: u64,
    /// Of those, by QoS (0, 1, 2).
    pub messages_sent_by_qos: [u64; 3],
    /// Deliveries written to a subscriber for the first time (PUBLISH sent, retransmissions
    /// not counted; retained messages to new subscriptions counted): EMQX's
    /// `messages.delivered`.
    pub messages_delivered: u64,
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

/// A latency distribution: an HdrHistogram of microseconds from 1 µs to 60 s at 2 significant
/// digits (values beyond are clamped to the range), and the exact sum.
///
/// Its counts are allocated once, by [`Latency::new`] (about 20 KiB); recording never allocates
/// and costs a few arithmetic operations. Cloning it, as a snapshot, copies the counts.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    /// Sum of the recorded durations, in nanoseconds (exact, unclamped).
    sum_ns: u128,
}

impl Latency {
    /// Lowest value told apart from 0, in microseconds.
    pub const LOW_US: u64 = 1;
    /// Highest value tracked, in microseconds (60 s); longer ones are recorded as this.
    pub const HIGH_US: u64 = 60_000_000;
    /// Significant digits kept: values within 1 % of each other may share a count.
    pub const SIGFIG: u8 = 2;

    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that satisfy `new_with_bounds`' conditions (low >= 1,
        // high >= 2 * low, sigfig <= 5); `new_is_infallible` below checks it.
        #[allow(clippy::expect_used)]
        let hist = Histogram::new_with_bounds(Self::LOW_US, Self::HIGH_US, Self::SIGFIG)
            .expect("constant histogram bounds are valid");
        Self { hist, sum_ns: 0 }
    }

    /// Records one duration (rounded up to the microsecond, clamped to 60 s). Never allocates.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        // In u64 (saturating after 584 years): `as_nanos`' u128 would cost a u128 division.
        let ns = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        self.sum_ns += u128::from(ns);
        self.hist.saturating_record(ns.div_ceil(1_000));
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Sum of the durations recorded, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// How many recorded durations are at most each of `bounds_us` (microseconds, ascending),
    /// into `out` (same length): the cumulative buckets of a Prometheus histogram.
    ///
    /// Exact for bounds below 256 µs; above, a count covers 1 % of its value, and a bound counts
    /// the whole one it falls in (durations up to 1 % above a bound may be counted in it, none
    /// below it is left out).
    pub fn cumulative(&self, bounds_us: &[u64], out: &mut [u64]) {
        out.fill(0);
        let mut first = 0;
        for v in self.hist.iter_recorded() {
            let low = self.hist.lowest_equivalent(v.value_iterated_to());
            while first < bounds_us.len() && bounds_us[first] < low {
                first += 1;
            }
            if first == bounds_us.len() {
                break;
            }
            out[first] += v.count_at_value();
        }
        // From per-bucket counts to cumulative ones.
        let mut total = 0;
        for c in out.iter_mut() {
            total += *c;
            *c = total;
        }
    }

    /// The underlying histogram, for quantiles.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// What the driver measures itself (not the sans-IO core), published with the core's snapshot.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DriverStats {
    /// Messages waiting in this shard's outgoing rings at snapshot time.
    pub ring_occupancy: u64,
    /// Times a push to a full ring was refused and the shard had to hold messages and stop
    /// reading its sockets until the ring had room (episodes, not refused pushes).
    pub ring_stalls: u64,
    /// Times the event loop was late by more than the stall threshold (see the driver's timer
    /// task).
    pub loop_stalls: u64,
    /// How late the timer task woke, each time it slept.
    pub loop_lag: Option<Box<Latency>>,
    /// Per listener this shard serves.
    pub listeners: Vec<ListenerStats>,
}

/// One listener's connections on one shard.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    /// `<type>:<name>`, EMQX's listener id (`tcp:default`, `quic:default`).
    pub id: Arc<str>,
    /// Connections open now.
    pub connections: u64,
    /// Connections accepted since start (refused ones over `max_connections` not counted).
    pub accepted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_infallible() {
        let l = Latency::new();
        assert_eq!(l.count(), 0);
        assert!(l.histogram().high() >= Latency::HIGH_US);
    }

    #[test]
    fn records_and_sums_exactly() {
        let mut l = Latency::new();
        l.record(Duration::from_nanos(1_500));
        l.record(Duration::from_millis(3));
        l.record(Duration::ZERO);
        assert_eq!(l.count(), 3);
        assert!((l.sum_seconds() - 0.003_001_5).abs() < 1e-12);
        // Rounded up to the microsecond.
        assert_eq!(l.histogram().max(), l.histogram().highest_equivalent(3_000));
        assert_eq!(l.histogram().count_at(2), 1);
    }

    #[test]
    fn longer_than_the_range_is_clamped() {
        let mut l = Latency::new();
        l.record(Duration::from_secs(3_600));
        assert_eq!(l.count(), 1);
        assert!((l.sum_seconds() - 3_600.0).abs() < 1e-9);
        let mut out = [0; 2];
        l.cumulative(&[1_000_000, 60_000_000], &mut out);
        assert_eq!(out, [0, 1]);
    }

    #[test]
    fn cumulative_buckets() {
        let mut l = Latency::new();
        for us in [50, 100, 101, 250, 251, 900, 1_000, 2_000_000, 70_000_000] {
            l.record(Duration::from_micros(us));
        }
        let bounds = [100, 250, 1_000, 1_000_000, 10_000_000];
        let mut out = [0; 5];
        l.cumulative(&bounds, &mut out);
        // 50, 100 | 101, 250 | 251, 900, 1000 | - | 2 s; 70 s is above every bound (+Inf).
        assert_eq!(out, [2, 4, 7, 7, 8]);
        assert!(out.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(l.count(), 9);
        // Empty: all zero.
        let mut out = [7; 5];
        Latency::new().cumulative(&bounds, &mut out);
        assert_eq!(out, [0; 5]);
    }

    #[test]
    fn a_bound_counts_at_most_one_percent_above_it() {
        let mut l = Latency::new();
        // 2,500 µs: counts at this size span 16 µs (2,496..=2,511).
        l.record(Duration::from_micros(2_500));
        l.record(Duration::from_micros(2_511));
        l.record(Duration::from_micros(2_512));
        let mut out = [0; 1];
        l.cumulative(&[2_500], &mut out);
        assert_eq!(out, [2]);
        // Within 1 % of the bound.
        assert_eq!(l.histogram().highest_equivalent(2_500), 2_511);
    }

    #[test]
    fn recording_and_snapshot_cost() {
        // Not a benchmark (debug builds are slow): a sanity bound on the snapshot's size.
        let l = Latency::new();
        let bytes = l.histogram().distinct_values() * std::mem::size_of::<u64>();
        assert!(bytes <= 32 * 1024, "{bytes} bytes of counts");
    }
}
