//! The final summary table (stdout) and the JSON document (`--json FILE`).
//!
//! Every figure the table shows is in the JSON, and more; the schema is documented in
//! perf/README.md. Latencies are in milliseconds in the table and microseconds in the JSON.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::run::Outcome;
use crate::scenario::{Kind, Scenario};
use crate::stats::Summary;
use crate::transport::Roots;

/// Version of the JSON document's layout.
const SCHEMA: u32 = 1;

/// The figures of a run, derived once for both outputs.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    scn: &'a Scenario,
    out: &'a Outcome,
    argv: Vec<String>,
    /// First connect attempt → last client ready.
    connect_secs: Option<f64>,
    connect_rate: Option<f64>,
    publish_rate: Option<f64>,
    /// Over which the receive rate is computed.
    receive_secs: Option<f64>,
    receive_rate: Option<f64>,
    /// Messages that arrived after the warm-up per second (throughput with a backlog).
    arrival_rate: Option<f64>,
    /// Messages of the measured phase (warm-up excluded): sent, acknowledged, received.
    sent: u64,
    acked: u64,
    received: u64,
}

impl<'a> Report<'a> {
    pub(crate) fn new(scn: &'a Scenario, out: &'a Outcome, argv: Vec<String>) -> Self {
        let t = &out.totals;
        let span = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
            _ => None,
        };
        let connect_secs = span(t.first_attempt, t.last_ready);
        let connect_rate = connect_secs.map(|s| out.live.established as f64 / s);
        let sent = t.sent.saturating_sub(t.warmup_sent);
        let acked = out.live.acked.saturating_sub(t.warmup_acked);
        let received = out.live.received.saturating_sub(t.warmup_received);
        let publish_rate = out
            .publishing
            .map(|d| sent as f64 / d.as_secs_f64().max(1e-9));
        // Measured messages received over the time they took to arrive: from the first publish
        // of the measured phase when the publishers are ours, from the first measured message
        // received otherwise.
        let receive_secs = match scn.kind {
            Kind::Bench => span(out.publish_start, t.last_received),
            _ => span(t.first_received, t.last_received),
        };
        let receive_rate = receive_secs.map(|s| received as f64 / s);
        // Arrivals after the warm-up over the same window, whenever they were sent.
        let arrival_secs = match scn.kind {
            Kind::Bench => span(out.publish_start, t.last_arrived),
            _ => span(t.first_arrived, t.last_arrived),
        };
        let arrival_rate = arrival_secs.map(|s| t.arrived as f64 / s);
        Self {
            scn,
            out,
            argv,
            connect_secs,
            connect_rate,
            publish_rate,
            receive_secs,
            receive_rate,
            arrival_rate,
            sent,
            acked,
            received,
        }
    }

    /// The summary table.
    pub(crate) fn table(&self) -> String {
        let (scn, out, t) = (self.scn, self.out, &self.out.totals);
        let l = &out.live;
        let mut s = String::new();
        let _ = writeln!(s, "perf {} — {}", scn.kind.name(), self.shape());
        let measured = match (out.measured, out.warmup) {
            (Some(m), None) => format!("measured phase {:.2} s", m.as_secs_f64()),
            (Some(m), Some(w)) => format!(
                "measured phase {:.2} s after {:.2} s warm-up",
                m.as_secs_f64(),
                w.as_secs_f64()
            ),
            (None, Some(w)) => format!(
                "no measured phase (stopped after {:.2} s of warm-up)",
                w.as_secs_f64()
            ),
            (None, None) => "no measured phase".to_owned(),
        };
        let _ = writeln!(
            s,
            "{} generator thread(s) on {}, {measured}{}",
            scn.threads,
            out.driver,
            if out.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<10} {:>11} {:>12} | {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "count", "rate/s", "min", "p50", "p90", "p99", "p99.9", "max"
        );
        let row = |s: &mut String, name: &str, count: u64, rate: Option<f64>, lat: &Summary| {
            let rate = rate.map_or("-".to_owned(), |r| format!("{r:.1}"));
            let ms = |v: u64| {
                if lat.count == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.3}", v as f64 / 1e6)
                }
            };
            let _ = writeln!(
                s,
                "{:<10} {:>11} {:>12} | {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                count,
                rate,
                ms(lat.min),
                ms(lat.p50),
                ms(lat.p90),
                ms(lat.p99),
                ms(lat.p999),
                ms(lat.max)
            );
        };
        row(
            &mut s,
            "connect",
            l.established,
            self.connect_rate,
            &t.handshake.summary(),
        );
        let layered = scn.transport.is_layered();
        if layered {
            // Each layer's handshake, and the whole set-up they add up to with TCP and MQTT.
            if scn.transport.tls.is_some() {
                let tls = t.tls_handshake.summary();
                row(&mut s, "tls", tls.count, None, &tls);
            }
            if scn.transport.ws.is_some() {
                let ws = t.ws_handshake.summary();
                row(&mut s, "ws", ws.count, None, &ws);
            }
            if scn.transport.quic.is_some() {
                let quic = t.quic_handshake.summary();
                row(&mut s, "quic", quic.count, None, &quic);
            }
            let setup = t.setup.summary();
            row(&mut s, "setup", setup.count, None, &setup);
        }
        if scn.pubs > 0 {
            row(
                &mut s,
                "publish",
                self.sent,
                self.publish_rate,
                &Summary::default(),
            );
            if scn.publish.as_ref().is_some_and(|p| p.period_ns.is_some()) {
                let lag = t.lag.summary();
                row(&mut s, "lag", lag.count, None, &lag);
            }
            if scn.publish.as_ref().is_some_and(|p| p.qos as u8 > 0) {
                row(&mut s, "ack", self.acked, None, &t.ack_latency.summary());
            }
        }
        if scn.subs > 0 {
            row(
                &mut s,
                "receive",
                self.received,
                self.receive_rate,
                &t.latency.summary(),
            );
            if out.warmup.is_some() {
                // Throughput by arrival: differs from `receive` when a backlog built up in the
                // warm-up is delivered in the measured phase.
                row(
                    &mut s,
                    "arrive",
                    t.arrived,
                    self.arrival_rate,
                    &Summary::default(),
                );
            }
        }
        let _ = writeln!(s, "latency in ms:");
        let _ = writeln!(s, "  connect  CONNECT written → CONNACK read");
        if scn.transport.tls.is_some() {
            let _ = writeln!(s, "  tls      TCP connected → TLS handshake done");
        }
        if scn.transport.ws.is_some() {
            let _ = writeln!(
                s,
                "  ws       WebSocket upgrade request written → 101 response read"
            );
        }
        if scn.transport.quic.is_some() {
            let _ = writeln!(
                s,
                "  quic     first Initial sent → handshake confirmed (HANDSHAKE_DONE received)"
            );
            let _ = writeln!(
                s,
                "  setup    QUIC connect started → CONNACK read (every handshake)"
            );
        } else if layered {
            let _ = writeln!(
                s,
                "  setup    TCP connect started → CONNACK read (every handshake)"
            );
        }
        if scn.pubs > 0 && scn.publish.as_ref().is_some_and(|p| p.period_ns.is_some()) {
            let _ = writeln!(
                s,
                "  lag      intended send → written (the generator's own lateness)"
            );
        }
        if scn.pubs > 0 && scn.publish.as_ref().is_some_and(|p| p.qos as u8 > 0) {
            let _ = writeln!(
                s,
                "  ack      intended send → PUBACK (QoS 1) / PUBCOMP (QoS 2)"
            );
        }
        if scn.subs > 0 {
            let _ = writeln!(s, "  receive  intended send → received");
            if out.warmup.is_some() {
                let _ = writeln!(
                    s,
                    "  arrive   messages received after the warm-up, whenever sent (throughput)"
                );
            }
        }
        if out.warmup.is_some() {
            let _ = writeln!(
                s,
                "counts, rates and latencies: measured phase only; warm-up messages (intended \
                 before its end) are not in them"
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "connections: {} of {} connected, {} failed, {} dropped by the broker",
            l.established,
            scn.clients.len(),
            l.failed,
            l.dropped
        );
        if scn.subs > 0 {
            let expected = t
                .expected
                .map_or("unknown (publishers elsewhere)".to_owned(), |e| {
                    e.to_string()
                });
            let warmup = if scn.warmup.is_zero() {
                String::new()
            } else {
                format!(", {} in the warm-up", t.warmup_received)
            };
            let _ = writeln!(
                s,
                "delivery: expected {expected}, received {} ({} distinct{warmup}), lost {}, \
                 duplicated {}, out of order {}, foreign {}",
                l.received, t.unique, t.lost, t.duplicates, t.out_of_order, t.foreign
            );
            if t.clock_skew > 0 {
                let _ = writeln!(
                    s,
                    "warning: {} messages carried a timestamp later than their receipt \
                     (clocks not comparable), timed as 0",
                    t.clock_skew
                );
            }
        }
        let errors: u64 = t.errors.values().sum();
        if errors == 0 {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors: {errors}");
            for (what, n) in &t.errors {
                let _ = writeln!(s, "  {n:>8}  {what}");
            }
        }
        s
    }

    /// One line describing the run's shape.
    fn shape(&self) -> String {
        let scn = self.scn;
        let target = scn
            .targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut s = format!(
            "{} {target}, MQTT {}",
            scn.transport.name(),
            version_name(scn)
        );
        match scn.kind {
            Kind::Conn => s += &format!(", {} connections", scn.clients.len()),
            Kind::Sub => s += &format!(", {} subscribers, QoS {}", scn.subs, scn.sub_qos as u8),
            Kind::Pub | Kind::Bench => {
                if let Some(p) = &scn.publish {
                    s += &format!(", QoS {}, {} B", p.qos as u8, p.size);
                    s += &match (p.rate, p.period_ns) {
                        (Some(r), _) => format!(", {r} msg/s total"),
                        (None, Some(ns)) => format!(", 1 msg per {} ms each", ns / 1_000_000),
                        (None, None) => ", max rate".to_owned(),
                    };
                }
                if scn.kind == Kind::Bench {
                    s += &format!(", {} pub → {} sub", scn.pubs, scn.subs);
                } else {
                    s += &format!(", {} publishers", scn.pubs);
                }
            }
        }
        s
    }

    /// The JSON document.
    pub(crate) fn json(&self) -> Value {
        let (scn, out, t) = (self.scn, self.out, &self.out.totals);
        let l = &out.live;
        let publish = scn.publish.as_ref();
        let config = json!({
            "hosts": scn.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ifaddr": scn.ifaddrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "transport": scn.transport.name(),
            "tls": scn.transport.tls_settings().map(|tls| {
                let path = |p: &Option<std::path::PathBuf>| {
                    p.as_ref().map(|p| p.display().to_string())
                };
                let (cacertfile, system) = match &tls.roots {
                    Roots::File(f) => (Some(f.display().to_string()), None),
                    Roots::System(f) => (None, Some(f.display().to_string())),
                    Roots::Insecure => (None, None),
                };
                json!({
                    "cacertfile": cacertfile,
                    "system_ca_bundle": system,
                    "certfile": path(&tls.certfile),
                    "keyfile": path(&tls.keyfile),
                    "insecure": tls.roots == Roots::Insecure,
                })
            }),
            "ws_path": scn.transport.ws.as_ref().map(|ws| ws.path.clone()),
            "quic": scn.transport.quic.as_ref().map(|q| json!({
                "alpn": String::from_utf8_lossy(crate::quic::ALPN),
                "mode": if q.multi_stream { "multi-stream" } else { "single-stream" },
            })),
            "protocol_version": scn.version.level(),
            "clients": scn.clients.len(),
            "publishers": scn.pubs,
            "subscribers": scn.subs,
            "topic": scn.topic,
            "sub_topic": scn.sub_topic,
            "qos": publish.map_or(scn.sub_qos as u8, |p| p.qos as u8),
            "size": publish.map(|p| p.size),
            "rate": publish.and_then(|p| p.rate),
            "period_ms": publish.and_then(|p| p.period_ns).map(|ns| ns as f64 / 1e6),
            "limit": publish.map(|p| p.limit),
            "inflight": publish.map(|p| p.inflight),
            "retain": publish.map(|p| p.retain),
            "clock": publish.map(|p| p.clock.name()),
            "keepalive_s": scn.keepalive,
            "clean": scn.clean,
            "session_expiry_s": scn.session_expiry,
            "connect_interval_ms": scn.interval.as_secs_f64() * 1e3,
            "duration_s": scn.duration.map(|d| d.as_secs_f64()),
            "warmup_s": (scn.kind != Kind::Conn).then_some(scn.warmup.as_secs_f64()),
            "drain_ms": scn.drain.as_secs_f64() * 1e3,
            "threads": scn.threads,
            "run_id": scn.run_id,
        });
        json!({
            "schema": SCHEMA,
            "tool": "perf",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "command": scn.kind.name(),
            "argv": self.argv,
            "started_at": rfc3339(out.started_at),
            "ended_at": rfc3339(out.ended_at),
            "started_at_unix_ms": unix_ms(out.started_at),
            "ended_at_unix_ms": unix_ms(out.ended_at),
            "interrupted": out.interrupted,
            "driver": out.driver,
            "config": config,
            "phases": {
                "connect_s": self.connect_secs,
                "warmup_s": out.warmup.map(|d| d.as_secs_f64()),
                "measured_s": out.measured.map(|d| d.as_secs_f64()),
                "publish_s": out.publishing.map(|d| d.as_secs_f64()),
                "receive_s": self.receive_secs,
            },
            "connections": {
                "clients": scn.clients.len(),
                "connected": l.established,
                "failed": l.failed,
                "dropped": l.dropped,
                "open_at_end": l.connected(),
                "connect_rate_per_s": self.connect_rate,
                "tcp_connect_us": scn
                    .transport
                    .quic
                    .is_none()
                    .then(|| summary_us(&t.tcp_connect.summary())),
                "tls_handshake_us": scn
                    .transport
                    .tls
                    .as_ref()
                    .map(|_| summary_us(&t.tls_handshake.summary())),
                "ws_handshake_us": scn
                    .transport
                    .ws
                    .as_ref()
                    .map(|_| summary_us(&t.ws_handshake.summary())),
                "quic_handshake_us": scn
                    .transport
                    .quic
                    .as_ref()
                    .map(|_| summary_us(&t.quic_handshake.summary())),
                "handshake_us": summary_us(&t.handshake.summary()),
                "setup_us": summary_us(&t.setup.summary()),
            },
            "publish": (scn.pubs > 0).then(|| json!({
                "publishers": scn.pubs,
                "sent": self.sent,
                "acked": self.acked,
                "warmup_sent": t.warmup_sent,
                "warmup_acked": t.warmup_acked,
                "rate_per_s": self.publish_rate,
                "ack_latency_us": summary_us(&t.ack_latency.summary()),
                "schedule_lag_us": summary_us(&t.lag.summary()),
            })),
            "receive": (scn.subs > 0).then(|| json!({
                "subscribers": scn.subs,
                "subscribed": l.subscribed,
                "received": self.received,
                "warmup_received": t.warmup_received,
                "distinct": t.unique,
                "expected": t.expected,
                "lost": t.lost,
                "duplicated": t.duplicates,
                "out_of_order": t.out_of_order,
                "foreign": t.foreign,
                "clock_skew": t.clock_skew,
                "rate_per_s": self.receive_rate,
                "arrived": t.arrived,
                "arrival_rate_per_s": self.arrival_rate,
                "latency_us": summary_us(&t.latency.summary()),
            })),
            "errors": {
                "total": t.errors.values().sum::<u64>(),
                "by_kind": t.errors,
            },
        })
    }
}

fn version_name(scn: &Scenario) -> &'static str {
    match scn.version.level() {
        3 => "3.1",
        4 => "3.1.1",
        _ => "5",
    }
}

fn summary_us(s: &Summary) -> Value {
    let us = |ns: u64| (ns as f64 / 1e3 * 1e3).round() / 1e3;
    json!({
        "count": s.count,
        "min": us(s.min),
        "mean": (s.mean / 1e3 * 1e3).round() / 1e3,
        "p50": us(s.p50),
        "p90": us(s.p90),
        "p99": us(s.p99),
        "p99_9": us(s.p999),
        "max": us(s.max),
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `2026-11-26T06:53:15.520Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_676_400_123);
        assert_eq!(rfc3339(t), "2026-11-26T07:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
