//! The Prometheus text exposition (format 0.0.4) of the shards' last snapshots and of the
//! process.

use std::fmt::Write as _;
use std::sync::Arc;

use shard::Stats;
use shard::core::SysSnapshot;
use shard::stats::Latency;

use super::Slots;

/// One metric family with one sample per shard (label `shard` only): name, help, type, and
/// the value of each shard's snapshot.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    value: fn(&SysSnapshot) -> u64,
}

macro_rules! counter {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            counter: true,
            value: |s| s.stats.$field,
        }
    };
    ($name:literal, $help:literal, $field:ident[$i:literal]) => {
        Family {
            name: $name,
            help: $help,
            counter: true,
            value: |s| s.stats.$field[$i],
        }
    };
}

const FAMILIES: &[Family] = &[
    Family {
        name: "broker_connections",
        help: "Open connections.",
        counter: false,
        value: |s| s.connections,
    },
    Family {
        name: "broker_sessions",
        help: "Sessions, online or not.",
        counter: false,
        value: |s| s.sessions,
    },
    Family {
        name: "broker_subscriptions",
        help: "Subscriptions (non-shared).",
        counter: false,
        value: |s| s.subscriptions,
    },
    Family {
        name: "broker_shared_subscriptions",
        help: "Shared subscription group memberships of the shard's online sessions.",
        counter: false,
        value: |s| s.shared_subscriptions,
    },
    Family {
        name: "broker_topics",
        help: "Distinct topic filters the shard holds a route for (its part of the route table).",
        counter: false,
        value: |s| s.topics,
    },
    Family {
        name: "broker_retained_messages",
        help: "Retained messages stored.",
        counter: false,
        value: |s| s.retained,
    },
    Family {
        name: "broker_ring_occupancy",
        help: "Messages waiting in the shard's outgoing rings to other shards.",
        counter: false,
        value: |s| s.driver.ring_occupancy,
    },
    Family {
        name: "broker_ring_backpressure_stalls_total",
        help: "Times a full ring refused a message and the shard held it and stopped reading \
               its sockets until the ring had room.",
        counter: true,
        value: |s| s.driver.ring_stalls,
    },
    Family {
        name: "broker_event_loop_stalls_total",
        help: "Times the shard's event loop ran a timer more than 100 ms late (a task held the \
               thread).",
        counter: true,
        value: |s| s.driver.loop_stalls,
    },
    counter!(
        "broker_connections_accepted_total",
        "Sockets accepted.",
        connections_accepted
    ),
    counter!(
        "broker_client_authenticate_total",
        "CONNECTs that reached authentication.",
        client_authenticate
    ),
    counter!(
        "broker_client_connected_total",
        "Connections established (CONNACK with success).",
        connections_established
    ),
    counter!(
        "broker_client_connack_refused_total",
        "CONNECTs refused with a CONNACK error code.",
        connections_refused
    ),
    counter!(
        "broker_client_disconnected_total",
        "Established connections that ended.",
        connections_closed
    ),
    counter!(
        "broker_bytes_received_total",
        "Bytes of packets read from clients.",
        bytes_received
    ),
    counter!(
        "broker_bytes_sent_total",
        "Bytes handed to client sockets.",
        bytes_sent
    ),
    counter!(
        "broker_messages_received_total",
        "PUBLISH packets received from clients.",
        messages_received
    ),
    counter!(
        "broker_messages_qos0_received_total",
        "QoS 0 PUBLISH packets received from clients.",
        messages_received_by_qos[0]
    ),
    counter!(
        "broker_messages_qos1_received_total",
        "QoS 1 PUBLISH packets received from clients.",
        messages_received_by_qos[1]
    ),
    counter!(
        "broker_messages_qos2_received_total",
        "QoS 2 PUBLISH packets received from clients.",
        messages_received_by_qos[2]
    ),
    counter!(
        "broker_messages_sent_total",
        "PUBLISH packets sent to clients (retransmissions included).",
        messages_sent
    ),
    counter!(
        "broker_messages_qos0_sent_total",
        "QoS 0 PUBLISH packets sent to clients.",
        messages_sent_by_qos[0]
    ),
    counter!(
        "broker_messages_qos1_sent_total",
        "QoS 1 PUBLISH packets sent to clients (retransmissions included).",
        messages_sent_by_qos[1]
    ),
    counter!(
        "broker_messages_qos2_sent_total",
        "QoS 2 PUBLISH packets sent to clients (retransmissions included).",
        messages_sent_by_qos[2]
    ),
    counter!(
        "broker_messages_delivered_total",
        "Messages delivered to subscribers (first transmissions, retained ones included).",
        messages_delivered
    ),
    counter!(
        "broker_messages_acked_total",
        "Outgoing QoS 1/2 messages acknowledged.",
        messages_acked
    ),
    counter!(
        "broker_messages_forwarded_total",
        "Messages handed to another shard.",
        messages_forwarded
    ),
    counter!(
        "broker_messages_retransmitted_total",
        "PUBLISH or PUBREL sent again.",
        messages_retransmitted
    ),
    counter!(
        "broker_messages_dropped_no_subscribers_total",
        "Published messages that matched no subscription.",
        dropped_no_subscribers
    ),
    counter!(
        "broker_delivery_dropped_queue_full_total",
        "Deliveries dropped because the session queue was full.",
        dropped_queue_full
    ),
    counter!(
        "broker_delivery_dropped_expired_total",
        "Deliveries whose Message Expiry Interval ran out.",
        dropped_expired
    ),
    counter!(
        "broker_delivery_dropped_too_large_total",
        "Deliveries over the client's Maximum Packet Size.",
        dropped_too_large
    ),
    counter!(
        "broker_messages_retained_delivered_total",
        "Retained messages delivered to new subscriptions.",
        retained_delivered
    ),
    counter!(
        "broker_messages_delayed_total",
        "Delayed publishes stored.",
        delayed_stored
    ),
    counter!(
        "broker_session_takeovers_total",
        "Sessions taken over by a new connection.",
        takeovers
    ),
    counter!(
        "broker_sessions_expired_total",
        "Offline sessions that expired.",
        sessions_expired
    ),
    counter!(
        "broker_wills_published_total",
        "Will Messages published.",
        wills_published
    ),
    counter!(
        "broker_protocol_errors_total",
        "Malformed packets and protocol errors.",
        protocol_errors
    ),
];

/// The `type` label of the packets a broker receives, with their MQTT type number.
const RECEIVED_TYPES: &[(&str, usize)] = &[
    ("connect", 1),
    ("publish", 3),
    ("puback", 4),
    ("pubrec", 5),
    ("pubrel", 6),
    ("pubcomp", 7),
    ("subscribe", 8),
    ("unsubscribe", 10),
    ("pingreq", 12),
    ("disconnect", 14),
    ("auth", 15),
];

/// The `type` label of the packets a broker sends, with their MQTT type number.
const SENT_TYPES: &[(&str, usize)] = &[
    ("connack", 2),
    ("publish", 3),
    ("puback", 4),
    ("pubrec", 5),
    ("pubrel", 6),
    ("pubcomp", 7),
    ("suback", 9),
    ("unsuback", 11),
    ("pingresp", 13),
    ("disconnect", 14),
    ("auth", 15),
];

/// A counter of [`Stats`].
type StatFn = fn(&Stats) -> u64;

/// The `reason` label of `broker_messages_dropped_total`, with its counter.
const DROP_REASONS: &[(&str, StatFn)] = &[
    ("no_subscribers", |s| s.dropped_no_subscribers),
    ("queue_full", |s| s.dropped_queue_full),
    ("expired", |s| s.dropped_expired),
    ("too_large", |s| s.dropped_too_large),
    ("qos0_write_buffer_full", |s| {
        s.dropped_qos0_write_buffer_full
    }),
    ("qos0_offline", |s| s.dropped_qos0_offline),
    ("session_ended", |s| s.dropped_session_ended),
    ("awaiting_rel_full", |s| s.dropped_awaiting_rel_full),
    ("await_rel_timeout", |s| s.dropped_await_rel_timeout),
    ("retained_too_large", |s| s.retained_dropped_too_large),
    ("retained_full", |s| s.retained_dropped_full),
    ("delayed_full", |s| s.delayed_dropped_full),
    ("other", |s| s.dropped_other),
];

/// The `le` buckets of `broker_message_delivery_latency_seconds`: label and bound in µs.
const DELIVERY_BUCKETS: &[(&str, u64)] = &[
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// The `le` buckets of `broker_event_loop_lag_seconds`: label and bound in µs.
const LAG_BUCKETS: &[(&str, u64)] = &[
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
];

/// The Prometheus text exposition of every shard's last snapshot (label `shard`, and `type`,
/// `reason`, `listener` where a family has them), and of the process (CPU, RSS, open files).
pub(super) fn render(slots: &Slots, drivers: &[&str]) -> String {
    let snaps: Vec<(usize, Arc<SysSnapshot>)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.load_full().map(|s| (i, s)))
        .collect();
    let mut out = String::with_capacity(32 * 1024);
    render_shards(&mut out, &snaps);
    out.push_str("# HELP broker_shard_info The I/O driver each shard runs on.\n");
    out.push_str("# TYPE broker_shard_info gauge\n");
    for (i, d) in drivers.iter().enumerate() {
        let _ = writeln!(out, "broker_shard_info{{shard=\"{i}\",driver=\"{d}\"}} 1");
    }
    process_metrics(&mut out);
    out
}

/// The families of the shards' snapshots, `(shard, snapshot)` each.
fn render_shards(out: &mut String, snaps: &[(usize, Arc<SysSnapshot>)]) {
    for f in FAMILIES {
        header(
            out,
            f.name,
            f.help,
            if f.counter { "counter" } else { "gauge" },
        );
        for (i, s) in snaps {
            let _ = writeln!(out, "{}{{shard=\"{i}\"}} {}", f.name, (f.value)(s));
        }
    }
    labelled(
        out,
        ("broker_packets_received_total", "counter"),
        "MQTT packets decoded, by type (their sum is every packet).",
        "type",
        snaps,
        |s, emit| {
            for (t, n) in RECEIVED_TYPES {
                emit(t, s.stats.packets_received_by_type[*n]);
            }
        },
    );
    labelled(
        out,
        ("broker_packets_sent_total", "counter"),
        "MQTT packets encoded, by type (their sum is every packet).",
        "type",
        snaps,
        |s, emit| {
            for (t, n) in SENT_TYPES {
                emit(t, s.stats.packets_sent_by_type[*n]);
            }
        },
    );
    labelled(
        out,
        ("broker_messages_dropped_total", "counter"),
        "Messages and deliveries dropped, by reason.",
        "reason",
        snaps,
        |s, emit| {
            for (r, value) in DROP_REASONS {
                emit(r, value(&s.stats));
            }
        },
    );
    labelled(
        out,
        ("broker_listener_connections", "gauge"),
        "Open connections, by listener.",
        "listener",
        snaps,
        |s, emit| {
            for l in &s.driver.listeners {
                emit(&l.id, l.connections);
            }
        },
    );
    labelled(
        out,
        ("broker_listener_accepted_total", "counter"),
        "Connections accepted, by listener.",
        "listener",
        snaps,
        |s, emit| {
            for l in &s.driver.listeners {
                emit(&l.id, l.accepted);
            }
        },
    );
    let delivery = snaps
        .iter()
        .filter_map(|(i, s)| Some((*i, s.delivery_latency.as_deref()?)));
    histogram(
        out,
        "broker_message_delivery_latency_seconds",
        "Time from the broker receiving a PUBLISH to a delivery of it being queued for a \
         subscriber (first transmissions).",
        DELIVERY_BUCKETS,
        delivery,
    );
    let lag = snaps
        .iter()
        .filter_map(|(i, s)| Some((*i, s.driver.loop_lag.as_deref()?)));
    histogram(
        out,
        "broker_event_loop_lag_seconds",
        "How late the shard's event loop ran its timer task.",
        LAG_BUCKETS,
        lag,
    );
}

/// A family with a second label next to `shard`: `samples` passes each (label value, value)
/// of a shard's snapshot to its `emit`.
fn labelled(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    label: &str,
    snaps: &[(usize, Arc<SysSnapshot>)],
    samples: impl Fn(&SysSnapshot, &mut dyn FnMut(&str, u64)),
) {
    header(out, name, help, kind);
    for (i, s) in snaps {
        samples(s, &mut |value: &str, v: u64| {
            let _ = writeln!(out, "{name}{{shard=\"{i}\",{label}=\"{value}\"}} {v}");
        });
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A histogram family: per shard, the cumulative `_bucket`s of `buckets` (label, bound in
/// µs) and `+Inf`, `_sum` and `_count`.
fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[(&str, u64)],
    shards: impl Iterator<Item = (usize, &'a Latency)>,
) {
    header(out, name, help, "histogram");
    let bounds: Vec<u64> = buckets.iter().map(|b| b.1).collect();
    let mut counts = vec![0; buckets.len()];
    for (i, l) in shards {
        l.cumulative(&bounds, &mut counts);
        for ((le, _), c) in buckets.iter().zip(&counts) {
            let _ = writeln!(out, "{name}_bucket{{shard=\"{i}\",le=\"{le}\"}} {c}");
        }
        let count = l.count();
        let _ = writeln!(out, "{name}_bucket{{shard=\"{i}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{shard=\"{i}\"}} {}", l.sum_seconds());
        let _ = writeln!(out, "{name}_count{{shard=\"{i}\"}} {count}");
    }
}

fn process_metrics(out: &mut String) {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14, stime 15 (1-based, whole line).
        let cpu = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if ticks > 0 {
            let secs = (cpu(11) + cpu(12)) / ticks as f64;
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {secs}"
            );
        }
    }
    if let Some(rss) = rss_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident set size.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
}

/// The process's resident set size in bytes (`/proc/self/statm`).
pub(super) fn rss_bytes() -> Option<u64> {
    // SAFETY: sysconf has no memory effects.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arc_swap::ArcSwapOption;
    use shard::stats::{DriverStats, ListenerStats};

    use super::*;

    fn snapshot() -> SysSnapshot {
        let mut latency = Latency::new();
        for us in [80, 100, 300, 2_000, 40_000, 3_000_000, 90_000_000] {
            latency.record(Duration::from_micros(us));
        }
        let mut snap = SysSnapshot {
            connections: 3,
            delivery_latency: Some(Box::new(latency)),
            ..SysSnapshot::default()
        };
        snap.stats.packets_received_by_type[3] = 20;
        snap.stats.packets_sent_by_type[2] = 2;
        snap.stats.dropped_qos0_offline = 4;
        let mut driver = DriverStats::default();
        driver.listeners.push(ListenerStats {
            id: "tcp:default".into(),
            connections: 2,
            accepted: 5,
        });
        driver.ring_occupancy = 7;
        snap.driver = driver;
        snap
    }

    fn text() -> String {
        let slots: Slots = vec![
            Arc::new(ArcSwapOption::from_pointee(snapshot())),
            Arc::new(ArcSwapOption::empty()),
        ];
        render(&slots, &["io_uring", "epoll"])
    }

    /// The value of the sample whose name and labels are `series`.
    fn value(text: &str, series: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let t = text();
        let name = "broker_message_delivery_latency_seconds";
        assert!(t.contains(&format!("# TYPE {name} histogram\n")));
        let bucket = |le: &str| value(&t, &format!("{name}_bucket{{shard=\"0\",le=\"{le}\"}}"));
        assert_eq!(bucket("0.0001"), 2.0);
        assert_eq!(bucket("0.00025"), 2.0);
        assert_eq!(bucket("0.0005"), 3.0);
        assert_eq!(bucket("0.0025"), 4.0);
        assert_eq!(bucket("0.05"), 5.0);
        assert_eq!(bucket("5"), 6.0);
        assert_eq!(bucket("10"), 6.0);
        // 90 s is beyond every bound (and the histogram's 60 s range): only in +Inf.
        assert_eq!(bucket("+Inf"), 7.0);
        assert_eq!(value(&t, &format!("{name}_count{{shard=\"0\"}}")), 7.0);
        let sum = value(&t, &format!("{name}_sum{{shard=\"0\"}}"));
        assert!((sum - 93.04248).abs() < 1e-9, "{sum}");
        // Every bucket in order, non-decreasing, ending with +Inf, then _sum and _count.
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_")))
            .collect();
        assert_eq!(lines.len(), DELIVERY_BUCKETS.len() + 3);
        let counts: Vec<f64> = lines[..=DELIVERY_BUCKETS.len()]
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert!(lines[DELIVERY_BUCKETS.len()].contains("le=\"+Inf\""));
        assert!(lines[DELIVERY_BUCKETS.len() + 1].starts_with(&format!("{name}_sum")));
        // Shard 1 has published no snapshot: no samples.
        assert!(!t.contains(&format!("{name}_count{{shard=\"1\"}}")));
        // No loop lag in this snapshot: the family is there, without samples.
        assert!(t.contains("# TYPE broker_event_loop_lag_seconds histogram\n"));
        assert!(!t.contains("broker_event_loop_lag_seconds_count"));
    }

    #[test]
    fn bucket_bounds_match_their_labels() {
        for (le, us) in DELIVERY_BUCKETS.iter().chain(LAG_BUCKETS) {
            let secs: f64 = le.parse().unwrap();
            assert!((secs * 1e6 - *us as f64).abs() < 1e-6, "{le} vs {us}");
        }
        for b in [DELIVERY_BUCKETS, LAG_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0].1 < w[1].1));
        }
    }

    #[test]
    fn labelled_families() {
        let t = text();
        let get = |s: &str| value(&t, s);
        assert_eq!(
            get("broker_packets_received_total{shard=\"0\",type=\"publish\"}"),
            20.0
        );
        assert_eq!(
            get("broker_packets_received_total{shard=\"0\",type=\"connect\"}"),
            0.0
        );
        assert_eq!(
            get("broker_packets_sent_total{shard=\"0\",type=\"connack\"}"),
            2.0
        );
        assert_eq!(
            get("broker_messages_dropped_total{shard=\"0\",reason=\"qos0_offline\"}"),
            4.0
        );
        assert_eq!(
            get("broker_listener_connections{shard=\"0\",listener=\"tcp:default\"}"),
            2.0
        );
        assert_eq!(
            get("broker_listener_accepted_total{shard=\"0\",listener=\"tcp:default\"}"),
            5.0
        );
        assert_eq!(get("broker_ring_occupancy{shard=\"0\"}"), 7.0);
        assert_eq!(get("broker_connections{shard=\"0\"}"), 3.0);
        // One HELP and TYPE per family, names unique.
        let mut names: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(t.matches("# HELP ").count(), n);
    }
}
