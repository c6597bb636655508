//! What the generator counts.
//!
//! Two kinds of figures, kept apart so the hot path takes no lock:
//!
//! - [`Live`]: one block of counters per thread, each written only by its thread (a relaxed
//!   load and store, no read-modify-write), read once a second by the main thread for the
//!   progress line and the phase changes. Each block sits on its own cache lines.
//! - [`ThreadStats`]: histograms, error tallies, per-stream sequence trackers and
//!   per-publisher counts, owned by one thread and handed to the main thread when the thread
//!   ends, where [`Totals`] merges them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::seq::SeqTracker;

/// Highest latency a histogram tracks: one hour, in ns (larger values are clamped to it).
const MAX_TRACKABLE_NS: u64 = 3_600_000_000_000;

/// Live counters of one thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Live {
    /// Clients that completed CONNECT/CONNACK.
    pub(crate) established: AtomicU64,
    /// Clients that failed to connect (TCP, timeout, CONNACK refusal).
    pub(crate) failed: AtomicU64,
    /// Established connections that ended before the run did.
    pub(crate) dropped: AtomicU64,
    /// Clients ready for the measured phase, or given up (each client counts once).
    pub(crate) ready: AtomicU64,
    /// Subscribers whose SUBACK granted their filter.
    pub(crate) subscribed: AtomicU64,
    /// PUBLISH packets handed to the connection.
    pub(crate) sent: AtomicU64,
    /// QoS 1/2 messages completed (PUBACK, PUBCOMP).
    pub(crate) acked: AtomicU64,
    /// PUBLISH packets received by subscribers.
    pub(crate) received: AtomicU64,
    /// Deliveries the messages sent so far should cause (`perf bench`: per message, the
    /// number of subscribers whose filter matches its topic).
    pub(crate) expected: AtomicU64,
    /// Errors of any kind.
    pub(crate) errors: AtomicU64,
    /// Publishers that finished (limit reached and acknowledged, stopped, or failed).
    pub(crate) pubs_done: AtomicU64,
}

impl Live {
    /// Adds `n` to a counter of this thread's block. Only the owning thread writes, so a
    /// load and a store suffice.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// The sum of every thread's [`Live`] counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveSum {
    pub(crate) established: u64,
    pub(crate) failed: u64,
    pub(crate) dropped: u64,
    pub(crate) ready: u64,
    pub(crate) subscribed: u64,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) received: u64,
    pub(crate) expected: u64,
    pub(crate) errors: u64,
    pub(crate) pubs_done: u64,
}

impl LiveSum {
    /// Reads and adds up the blocks.
    pub(crate) fn of(blocks: &[Live]) -> Self {
        let mut s = Self::default();
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for l in blocks {
            s.established += r(&l.established);
            s.failed += r(&l.failed);
            s.dropped += r(&l.dropped);
            s.ready += r(&l.ready);
            s.subscribed += r(&l.subscribed);
            s.sent += r(&l.sent);
            s.acked += r(&l.acked);
            s.received += r(&l.received);
            s.expected += r(&l.expected);
            s.errors += r(&l.errors);
            s.pubs_done += r(&l.pubs_done);
        }
        s
    }

    /// Connections open now.
    pub(crate) fn connected(&self) -> u64 {
        self.established.saturating_sub(self.dropped)
    }
}

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram, 1 ns to one hour, three significant digits.
    pub(crate) fn new() -> Self {
        // The bounds are constants that meet hdrhistogram's preconditions (low >= 1,
        // high >= 2 * low, sigfig <= 5), so construction cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3).expect("valid constant bounds");
        Self(h)
    }

    /// Records one value, clamped to the trackable range.
    pub(crate) fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.min(MAX_TRACKABLE_NS));
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: addition cannot run out of range.
        let _ = self.0.add(&other.0);
    }

    /// The summary reported: count, min, mean, p50, p90, p99, p99.9, max.
    pub(crate) fn summary(&self) -> Summary {
        let h = &self.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Percentiles of a [`Latency`], in ns (mean as a float).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) min: u64,
    pub(crate) mean: f64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

/// What one publisher did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PubRecord {
    /// Publisher id (position among the publishers).
    pub(crate) id: u32,
    /// Its topic.
    pub(crate) topic: String,
    /// Messages handed to the connection (sequences 0..sent).
    pub(crate) sent: u64,
}

/// What one subscriber received.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubRecord {
    /// Its topic filter.
    pub(crate) filter: String,
    /// Per (run id, publisher id): the sequence tracker.
    pub(crate) streams: HashMap<(u32, u32), SeqTracker>,
}

/// Everything one thread measured.
#[derive(Debug, Default)]
pub(crate) struct ThreadStats {
    /// TCP connect time.
    pub(crate) tcp_connect: Latency,
    /// `--tls`: TCP connected → TLS handshake done (our Finished written).
    pub(crate) tls_handshake: Latency,
    /// `--ws`: upgrade request written → `101 Switching Protocols` read.
    pub(crate) ws_handshake: Latency,
    /// `--quic`: first Initial sent → handshake confirmed (the broker's HANDSHAKE_DONE).
    pub(crate) quic_handshake: Latency,
    /// CONNECT written → CONNACK read.
    pub(crate) handshake: Latency,
    /// The whole set-up: TCP connect (QUIC: the connection) started → CONNACK read (every
    /// layer's handshake).
    pub(crate) setup: Latency,
    /// End-to-end: receive time − intended send time (measured messages only, as the next
    /// two).
    pub(crate) latency: Latency,
    /// QoS 1/2: final acknowledgement − intended send time.
    pub(crate) ack_latency: Latency,
    /// Fixed rate: time a message was written − its intended send time (the generator's own
    /// lateness, included in the latencies above).
    pub(crate) lag: Latency,
    /// Warm-up messages (intended before the end of the warm-up): sent by publishers,
    /// acknowledged to them, received by subscribers. Counted in the delivery accounting,
    /// never timed.
    pub(crate) warmup_sent: u64,
    pub(crate) warmup_acked: u64,
    pub(crate) warmup_received: u64,
    /// Error description → count.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Publishers run by this thread.
    pub(crate) publishers: Vec<PubRecord>,
    /// Subscribers run by this thread.
    pub(crate) subscribers: Vec<SubRecord>,
    /// Received payloads without a measurement header.
    pub(crate) foreign: u64,
    /// Received timestamps later than the receive time (clocks not comparable), timed as 0.
    pub(crate) clock_skew: u64,
    /// Monotonic ns of the first connect attempt and the last client ready.
    pub(crate) first_attempt: Option<u64>,
    pub(crate) last_ready: Option<u64>,
    /// Monotonic ns of the first and last measured (not warm-up) message received.
    pub(crate) first_received: Option<u64>,
    pub(crate) last_received: Option<u64>,
    /// Messages that arrived after the warm-up, whenever they were sent: the throughput of a
    /// broker with a backlog (at max rate, what arrives in the measured phase may all have
    /// been sent during the warm-up).
    pub(crate) arrived: u64,
    /// Monotonic ns of the first and last of them.
    pub(crate) first_arrived: Option<u64>,
    pub(crate) last_arrived: Option<u64>,
}

impl ThreadStats {
    /// Counts one error.
    pub(crate) fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// Keeps the smaller of two optional values.
pub(crate) fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Keeps the larger of two optional values.
pub(crate) fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b)
}

/// Every thread's [`ThreadStats`] merged, with the delivery accounting (over the whole run,
/// warm-up included).
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) tcp_connect: Latency,
    pub(crate) tls_handshake: Latency,
    pub(crate) ws_handshake: Latency,
    pub(crate) quic_handshake: Latency,
    pub(crate) handshake: Latency,
    pub(crate) setup: Latency,
    pub(crate) latency: Latency,
    pub(crate) ack_latency: Latency,
    pub(crate) lag: Latency,
    pub(crate) warmup_sent: u64,
    pub(crate) warmup_acked: u64,
    pub(crate) warmup_received: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) foreign: u64,
    pub(crate) clock_skew: u64,
    pub(crate) first_attempt: Option<u64>,
    pub(crate) last_ready: Option<u64>,
    pub(crate) first_received: Option<u64>,
    pub(crate) last_received: Option<u64>,
    /// Messages that arrived after the warm-up (by arrival time), and when.
    pub(crate) arrived: u64,
    pub(crate) first_arrived: Option<u64>,
    pub(crate) last_arrived: Option<u64>,
    /// Messages sent, per the publishers' records, warm-up included.
    pub(crate) sent: u64,
    /// Distinct messages received (over all streams).
    pub(crate) unique: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    /// Messages that should have been received, when the publishers are in this process.
    pub(crate) expected: Option<u64>,
    /// Messages not received: gaps, plus, when the publishers are in this process, each
    /// stream's tail (sent but never received).
    pub(crate) lost: u64,
}

impl Totals {
    /// Merges the threads' statistics. `local_publishers`: the publishers are in this process
    /// (`perf bench`), so each subscriber's expected stream is known: every publisher whose
    /// topic its filter matches, all of what it sent (`run` is this process's run id).
    pub(crate) fn merge(threads: Vec<ThreadStats>, local_publishers: bool, run: u32) -> Self {
        let mut t = Totals::default();
        let mut pubs = Vec::new();
        let mut subs = Vec::new();
        for s in threads {
            t.tcp_connect.merge(&s.tcp_connect);
            t.tls_handshake.merge(&s.tls_handshake);
            t.ws_handshake.merge(&s.ws_handshake);
            t.quic_handshake.merge(&s.quic_handshake);
            t.handshake.merge(&s.handshake);
            t.setup.merge(&s.setup);
            t.latency.merge(&s.latency);
            t.ack_latency.merge(&s.ack_latency);
            t.lag.merge(&s.lag);
            t.warmup_sent += s.warmup_sent;
            t.warmup_acked += s.warmup_acked;
            t.warmup_received += s.warmup_received;
            for (k, v) in s.errors {
                *t.errors.entry(k).or_default() += v;
            }
            t.foreign += s.foreign;
            t.clock_skew += s.clock_skew;
            t.first_attempt = min_opt(t.first_attempt, s.first_attempt);
            t.last_ready = max_opt(t.last_ready, s.last_ready);
            t.first_received = min_opt(t.first_received, s.first_received);
            t.last_received = max_opt(t.last_received, s.last_received);
            t.arrived += s.arrived;
            t.first_arrived = min_opt(t.first_arrived, s.first_arrived);
            t.last_arrived = max_opt(t.last_arrived, s.last_arrived);
            pubs.extend(s.publishers);
            subs.extend(s.subscribers);
        }
        t.sent = pubs.iter().map(|p| p.sent).sum();
        for sub in &subs {
            for tr in sub.streams.values() {
                t.unique += tr.unique;
                t.duplicates += tr.duplicates;
                t.out_of_order += tr.out_of_order;
            }
        }
        if local_publishers {
            let mut expected = 0;
            for sub in &subs {
                for p in &pubs {
                    if !net::mqtt::topic::matches(&sub.filter, &p.topic) {
                        continue;
                    }
                    expected += p.sent;
                    t.lost += match sub.streams.get(&(run, p.id)) {
                        Some(tr) => tr.lost_of(p.sent),
                        None => p.sent,
                    };
                }
            }
            t.expected = Some(expected);
        } else {
            t.lost = subs
                .iter()
                .flat_map(|s| s.streams.values())
                .map(SeqTracker::lost_in_gaps)
                .sum();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for v in 1..=1000u64 {
            a.record(v * 1000);
        }
        b.record(5_000_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1001);
        assert!(s.p50 >= 499_000 && s.p50 <= 502_000, "{s:?}");
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max);
        assert!(s.max >= 4_990_000);
        assert_eq!(Latency::new().summary(), Summary::default());
        let mut c = Latency::new();
        c.record(u64::MAX);
        assert_eq!(c.summary().count, 1);
    }

    #[test]
    fn delivery_accounting() {
        let run = 9;
        let pubs = ThreadStats {
            publishers: vec![
                PubRecord {
                    id: 0,
                    topic: "b/0".into(),
                    sent: 10,
                },
                PubRecord {
                    id: 1,
                    topic: "b/1".into(),
                    sent: 5,
                },
            ],
            ..Default::default()
        };
        let mut all = SubRecord {
            filter: "b/#".into(),
            ..Default::default()
        };
        let mut s0 = SeqTracker::new();
        for q in 0..10 {
            s0.record(q);
        }
        all.streams.insert((run, 0), s0);
        let mut s1 = SeqTracker::new();
        for q in [0, 2, 2] {
            s1.record(q);
        }
        all.streams.insert((run, 1), s1);
        let only1 = SubRecord {
            filter: "b/1".into(),
            ..Default::default()
        };
        let subs = ThreadStats {
            subscribers: vec![all, only1],
            ..Default::default()
        };
        let t = Totals::merge(vec![pubs, subs], true, run);
        assert_eq!(t.sent, 15);
        assert_eq!(t.expected, Some(20)); // 15 to "b/#", 5 to "b/1"
        assert_eq!(t.unique, 12);
        assert_eq!(t.duplicates, 1);
        // b/1 to "b/#": 1 (gap) + 2 (tail); b/1 to "b/1": all 5.
        assert_eq!(t.lost, 8);
        assert_eq!(t.unique + t.lost, 20);
    }
}
