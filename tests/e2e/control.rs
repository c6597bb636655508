//! The control plane's HTTP listener: the health check and the Prometheus endpoint, checked
//! with prometheus_client's parser against traffic the test made.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, python_run, unique};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// The sum over shards of a family's samples.
fn total(v: &serde_json::Value, family: &str) -> f64 {
    let f = &v["families"][family];
    assert!(!f.is_null(), "no family {family}");
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

/// A family's samples named `sample` whose labels include every one of `labels`.
fn samples<'a>(
    v: &'a serde_json::Value,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    let f = &v["families"][family];
    assert!(!f.is_null(), "no family {family}");
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[0] == sample && labels.iter().all(|(k, l)| s[1][*k] == *l))
        .collect()
}

/// The sum over shards of [`samples`].
fn sum(v: &serde_json::Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    samples(v, family, sample, labels)
        .iter()
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[test]
fn health_check_and_prometheus_metrics_count_the_traffic() {
    let broker = Broker::start();
    let http = broker.listener("http");
    // 503 while the shards start (restoring durable state), then 200.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (code, body) = loop {
        let (code, body) = get(http, "/api/v5/status");
        if code == 200 || std::time::Instant::now() > deadline {
            break (code, body);
        }
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("is starting"), "{body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("is started") && body.contains("broker is running"),
        "{body}"
    );
    assert_eq!(get(http, "/status").0, 200);
    let (code, body) = get(http, "/api/v5/nothing-here");
    assert_eq!(code, 404);
    assert!(body.contains("\"code\":\"NOT_FOUND\""), "{body}");

    // 20 QoS 1 messages from mosquitto_pub to a mosquitto_sub.
    let topic = unique("metrics");
    let mut sub = mosquitto("mosquitto_sub");
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-q",
        "1",
        "-t",
        &topic,
        "-C",
        "20",
        "-d",
    ]);
    let mut sub = Proc::spawn("mosquitto_sub", sub).unwrap();
    sub.wait_line(Duration::from_secs(10), "SUBACK", |l| {
        l.contains("received SUBACK")
    });
    let pub_id = unique("mpub");
    let mut publ = mosquitto("mosquitto_pub");
    publ.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-q",
        "1",
        "-t",
        &topic,
        "-l",
    ])
    .args(["-i", &pub_id, "-V", "mqttv5"]);
    let mut p = Proc::spawn("mosquitto_pub", publ).unwrap();
    for i in 0..20 {
        p.send_line(&format!("m{i}"));
    }
    assert!(p.finish(Duration::from_secs(10)).status.success());
    assert!(sub.finish(Duration::from_secs(10)).status.success());
    // A client that stays connected while the metrics are read, for the listener gauge.
    let mut idle = mosquitto("mosquitto_sub");
    idle.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-t",
        &unique("idle"),
        "-d",
    ]);
    let mut idle = Proc::spawn("mosquitto_sub", idle).unwrap();
    idle.wait_line(Duration::from_secs(10), "SUBACK", |l| {
        l.contains("received SUBACK")
    });
    // Shards publish their counters twice a second.
    std::thread::sleep(Duration::from_millis(1200));

    let url = format!("http://{http}/api/v5/prometheus/stats");
    let m = python_run("metrics.py", &[url], Duration::from_secs(30));
    assert!(
        m["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        m["content_type"]
    );
    // prometheus_client names counter families without their `_total` suffix.
    assert_eq!(total(&m, "broker_messages_received"), 20.0);
    assert!(total(&m, "broker_messages_sent") >= 20.0);
    assert!(total(&m, "broker_messages_acked") >= 20.0);
    assert!(total(&m, "broker_client_connected") >= 2.0);
    assert!(total(&m, "broker_packets_received") >= 20.0 + 2.0);
    assert!(total(&m, "process_resident_memory_bytes") > 1e6);
    assert!(total(&m, "process_open_fds") > 0.0);
    assert_eq!(m["families"]["broker_connections"]["type"], "gauge");
    assert_eq!(m["families"]["broker_messages_received"]["type"], "counter");

    // Packets by type: 20 PUBLISH in, 20 out; the sum over types is every packet.
    let by_type =
        |family: &str, t: &str| sum(&m, family, &format!("{family}_total"), &[("type", t)]);
    assert_eq!(by_type("broker_packets_received", "publish"), 20.0);
    assert_eq!(by_type("broker_packets_received", "puback"), 20.0);
    assert_eq!(by_type("broker_packets_received", "connect"), 3.0);
    assert_eq!(by_type("broker_packets_received", "subscribe"), 2.0);
    assert_eq!(by_type("broker_packets_sent", "publish"), 20.0);
    assert_eq!(by_type("broker_packets_sent", "puback"), 20.0);
    assert_eq!(by_type("broker_packets_sent", "connack"), 3.0);
    assert_eq!(by_type("broker_packets_sent", "suback"), 2.0);
    for s in samples(&m, "broker_packets_sent", "broker_packets_sent_total", &[]) {
        let labels = s[1].as_object().unwrap();
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["shard", "type"]);
    }
    assert_eq!(total(&m, "broker_messages_qos1_received"), 20.0);
    assert_eq!(total(&m, "broker_messages_delivered"), 20.0);
    assert_eq!(total(&m, "broker_client_authenticate"), 3.0);
    // No drops; one sample per reason and shard.
    assert_eq!(total(&m, "broker_messages_dropped"), 0.0);
    assert_eq!(
        samples(
            &m,
            "broker_messages_dropped",
            "broker_messages_dropped_total",
            &[]
        )
        .len(),
        2 * 13
    );

    // The publish-to-deliver latency: one observation per delivery (the 20 messages, each
    // delivered once: retransmissions are not deliveries), buckets cumulative (metrics.py
    // checks every histogram's shape).
    let h = "broker_message_delivery_latency_seconds";
    assert_eq!(m["families"][h]["type"], "histogram");
    assert_eq!(sum(&m, h, &format!("{h}_count"), &[]), 20.0);
    assert_eq!(sum(&m, h, &format!("{h}_bucket"), &[("le", "+Inf")]), 20.0);
    // On loopback, every delivery is well under 10 s.
    assert_eq!(sum(&m, h, &format!("{h}_bucket"), &[("le", "10")]), 20.0);
    // Zero is possible: a delivery on the publisher's shard, in the batch that read the
    // PUBLISH, is timed with that batch's clock.
    let secs = sum(&m, h, &format!("{h}_sum"), &[]);
    assert!((0.0..20.0).contains(&secs), "{secs}");
    assert_eq!(
        samples(&m, h, &format!("{h}_bucket"), &[("shard", "0")]).len(),
        17
    );
    let lag = "broker_event_loop_lag_seconds";
    assert_eq!(m["families"][lag]["type"], "histogram");
    assert!(sum(&m, lag, &format!("{lag}_count"), &[]) > 0.0);

    // Per listener: the idle subscriber is the only connection, on the TCP listener.
    let conns = |l: &str| {
        sum(
            &m,
            "broker_listener_connections",
            "broker_listener_connections",
            &[("listener", l)],
        )
    };
    assert_eq!(conns("tcp:default"), 1.0);
    assert_eq!(conns("tcp:default"), total(&m, "broker_connections"));
    assert_eq!(conns("ws:default"), 0.0);
    assert_eq!(conns("quic:default"), 0.0);
    let accepted = sum(
        &m,
        "broker_listener_accepted",
        "broker_listener_accepted_total",
        &[("listener", "tcp:default")],
    );
    assert_eq!(accepted, 3.0);
    assert_eq!(
        samples(
            &m,
            "broker_listener_connections",
            "broker_listener_connections",
            &[]
        )
        .len(),
        2 * 3
    );
    // Rings and stalls: present for each shard (a stall would be a bug worth a look).
    for family in [
        "broker_ring_occupancy",
        "broker_ring_backpressure_stalls",
        "broker_event_loop_stalls",
    ] {
        assert_eq!(
            m["families"][family]["samples"].as_array().unwrap().len(),
            2
        );
    }
    assert_eq!(total(&m, "broker_ring_occupancy"), 0.0);
    assert_eq!(total(&m, "broker_topics"), 1.0);
    assert_eq!(total(&m, "broker_shared_subscriptions"), 0.0);
    // One sample per shard, labelled by shard only.
    let samples = m["families"]["broker_sessions"]["samples"]
        .as_array()
        .unwrap();
    assert_eq!(samples.len(), 2);
    for s in samples {
        let labels = s[1].as_object().unwrap();
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["shard"]);
    }
    let info = m["families"]["broker_shard_info"]["samples"]
        .as_array()
        .unwrap();
    assert_eq!(info.len(), 2);
    assert!(
        info.iter()
            .all(|s| s[1]["driver"] == "io_uring" || s[1]["driver"] == "epoll")
    );
    let (code, _) = get(http, "/metrics");
    assert_eq!(code, 200);
    drop(idle);

    // One log line per connection established and ended, at info.
    let log = broker.log_text();
    let connected = format!("client connected: clientid={pub_id} address=127.0.0.1:");
    let line = log.lines().find(|l| l.contains(&connected));
    assert!(
        line.is_some_and(|l| l.contains(" INFO ") && l.contains("protocol=5")),
        "{log}"
    );
    let disconnected = format!("client disconnected: clientid={pub_id} address=127.0.0.1:");
    assert!(
        log.lines()
            .any(|l| l.contains(&disconnected) && l.ends_with("reason=normal")),
        "{log}"
    );
}
