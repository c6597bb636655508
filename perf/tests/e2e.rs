//! `perf` against real brokers: our `broker` binary and Mosquitto. Each test checks the
//! instrument itself: its counts against what the broker and an independent client saw, its
//! histograms against its counts, its error reporting against refusals. See common/mod.rs for
//! how the brokers are found and started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, float, num, perf, show};

/// 4 publishers → 1 subscriber, QoS 1, fixed rate, ~3 s: nothing lost or duplicated, every
/// received message timed, the counts agree with each other.
fn fan_in_qos1(broker: &Broker) {
    let port = broker.port_arg();
    let (out, j) = perf(&[
        "bench",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--pubs",
        "4",
        "--subs",
        "1",
        "-q",
        "1",
        "--rate",
        "1000",
        "--duration",
        "3",
        "-i",
        "1",
        "-s",
        "64",
        "-t",
        "perf/fanin/%i",
        "--sub-topic",
        "perf/fanin/#",
        "--threads",
        "2",
    ]);
    let ctx = format!("{}: {}\n{j:#}", broker.name, show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 5, "{ctx}");
    let sent = num(&j, &["publish", "sent"]);
    // 1000/s for 3 s.
    assert!((2700..=3300).contains(&sent), "sent {sent}: {ctx}");
    assert_eq!(num(&j, &["publish", "acked"]), sent, "{ctx}");
    let received = num(&j, &["receive", "received"]);
    assert_eq!(num(&j, &["receive", "expected"]), sent, "{ctx}");
    assert_eq!(received, sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "distinct"]), received, "{ctx}");
    assert_eq!(num(&j, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "out_of_order"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "foreign"]), 0, "{ctx}");
    assert_eq!(
        num(&j, &["receive", "latency_us", "count"]),
        received,
        "{ctx}"
    );
    let p50 = float(&j, &["receive", "latency_us", "p50"]);
    let max = float(&j, &["receive", "latency_us", "max"]);
    assert!(p50 > 0.0 && p50 <= max, "p50 {p50} max {max}: {ctx}");
    assert_eq!(
        num(&j, &["publish", "ack_latency_us", "count"]),
        sent,
        "{ctx}"
    );
    assert_eq!(
        num(&j, &["publish", "schedule_lag_us", "count"]),
        sent,
        "{ctx}"
    );
    let rate = float(&j, &["publish", "rate_per_s"]);
    assert!((900.0..=1100.0).contains(&rate), "rate {rate}: {ctx}");
    assert_eq!(j["command"], "bench");
    assert!(j["argv"].as_array().unwrap().iter().any(|a| a == "--pubs"));
    assert!(j["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(num(&j, &["ended_at_unix_ms"]) > num(&j, &["started_at_unix_ms"]));
    // The table shows the same figures.
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("received {received} ")), "{ctx}");
    assert!(table.contains("lost 0, duplicated 0"), "{ctx}");
}

#[test]
fn fan_in_qos1_against_our_broker() {
    fan_in_qos1(&Broker::ours());
}

#[test]
fn fan_in_qos1_against_mosquitto() {
    fan_in_qos1(&Broker::mosquitto(""));
}

/// `perf bench --warmup 1s --duration 2s` at 2000 msg/s: the warm-up's ~2000 messages are
/// published, received and loss-checked, but kept out of the measured counts, the rates and
/// every histogram. Counting them as measured would give ~6000 (above the 4400 bound); dropping
/// them from publishing would leave fewer than 5400 in all.
#[test]
fn warmup_is_excluded_from_the_measured_phase() {
    let broker = Broker::ours();
    let port = broker.port_arg();
    let (out, j) = perf(&[
        "bench",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--pubs",
        "4",
        "--subs",
        "1",
        "-q",
        "1",
        "--rate",
        "2000",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "-i",
        "1",
        "-s",
        "64",
        "-t",
        "perf/warmup/%i",
        "--sub-topic",
        "perf/warmup/#",
        "--threads",
        "2",
    ]);
    let ctx = format!("{}: {}\n{j:#}", broker.name, show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    // The fields exist, with the configured warm-up.
    assert_eq!(float(&j, &["config", "warmup_s"]), 1.0, "{ctx}");
    assert_eq!(float(&j, &["phases", "warmup_s"]), 1.0, "{ctx}");
    let measured_s = float(&j, &["phases", "measured_s"]);
    assert!(
        (2.0..3.5).contains(&measured_s),
        "measured {measured_s}: {ctx}"
    );
    let sent = num(&j, &["publish", "sent"]);
    let warmup_sent = num(&j, &["publish", "warmup_sent"]);
    let received = num(&j, &["receive", "received"]);
    let warmup_received = num(&j, &["receive", "warmup_received"]);
    // Measured: 2000/s for 2 s; the warm-up: 2000/s for 1 s.
    assert!(
        (3600..=4400).contains(&received),
        "measured received {received}: {ctx}"
    );
    assert!(
        (1800..=2200).contains(&warmup_received),
        "warm-up received {warmup_received}: {ctx}"
    );
    assert!(
        received + warmup_received >= 5400,
        "received in all {}: {ctx}",
        received + warmup_received
    );
    // Publishers and the subscriber draw the same line between warm-up and measured messages.
    assert_eq!(received, sent, "{ctx}");
    assert_eq!(warmup_received, warmup_sent, "{ctx}");
    // Throughput by arrival: every measured message arrived after the warm-up, and at this
    // rate (no backlog) hardly any warm-up message did.
    let arrived = num(&j, &["receive", "arrived"]);
    assert!(
        (received..=received + 200).contains(&arrived),
        "arrived {arrived}, measured {received}: {ctx}"
    );
    assert_eq!(num(&j, &["publish", "acked"]), sent, "{ctx}");
    assert_eq!(num(&j, &["publish", "warmup_acked"]), warmup_sent, "{ctx}");
    // The delivery accounting covers the whole run: nothing lost, nothing foreign.
    assert_eq!(
        num(&j, &["receive", "expected"]),
        sent + warmup_sent,
        "{ctx}"
    );
    assert_eq!(
        num(&j, &["receive", "distinct"]),
        received + warmup_received,
        "{ctx}"
    );
    assert_eq!(num(&j, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "out_of_order"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "foreign"]), 0, "{ctx}");
    // Every histogram holds the measured messages, and only them.
    assert_eq!(
        num(&j, &["receive", "latency_us", "count"]),
        received,
        "{ctx}"
    );
    assert_eq!(
        num(&j, &["publish", "ack_latency_us", "count"]),
        sent,
        "{ctx}"
    );
    assert_eq!(
        num(&j, &["publish", "schedule_lag_us", "count"]),
        sent,
        "{ctx}"
    );
    // Rates over the measured phase: with the warm-up's messages they would be ~3000/s.
    for path in [["publish", "rate_per_s"], ["receive", "rate_per_s"]] {
        let rate = float(&j, &path);
        assert!((1800.0..=2200.0).contains(&rate), "{path:?} {rate}: {ctx}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("after 1.00 s warm-up"), "{ctx}");
    assert!(
        table.contains(&format!("{warmup_received} in the warm-up")),
        "{ctx}"
    );
}

/// `perf pub -c 2 -L 500 -q 1` while mosquitto_sub counts: exactly 1000 arrive, and perf says
/// 1000 sent and acknowledged.
fn cross_check_with_mosquitto_sub(broker: &Broker) {
    let port = broker.port_arg();
    let topic = format!("perf/cross/{}", broker.name);
    // Line-buffered (coreutils' stdbuf), so "received SUBACK" shows before it exits.
    let mut sub = Command::new("stdbuf")
        .arg("-oL")
        .arg(common::mosquitto_sub_binary())
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-q",
            "1",
            "-C",
            "1000",
            "-W",
            "30",
        ])
        .args(["-t", &format!("{topic}/#"), "-F", "%t", "-d"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub starts");
    let stdout = sub.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = format!("{topic}/");
    let reader = std::thread::spawn(move || {
        let mut count = 0usize;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.contains("received SUBACK") {
                let _ = tx.send(());
            }
            if line.starts_with(&prefix) {
                count += 1;
            }
        }
        count
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("mosquitto_sub subscribed");
    let (out, j) = perf(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        "2",
        "-L",
        "500",
        "-q",
        "1",
        "-I",
        "0",
        "-i",
        "0",
        "-t",
        &format!("{topic}/%i"),
        "--threads",
        "1",
    ]);
    let ctx = format!("{}: {}\n{j:#}", broker.name, show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["publish", "sent"]), 1000, "{ctx}");
    assert_eq!(num(&j, &["publish", "acked"]), 1000, "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = sub.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = sub.kill();
            panic!("mosquitto_sub did not get 1000 messages: {ctx}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "mosquitto_sub: {status:?}; {ctx}");
    assert_eq!(reader.join().unwrap(), 1000, "{ctx}");
}

#[test]
fn cross_check_with_mosquitto_sub_against_our_broker() {
    cross_check_with_mosquitto_sub(&Broker::ours());
}

#[test]
fn cross_check_with_mosquitto_sub_against_mosquitto() {
    cross_check_with_mosquitto_sub(&Broker::mosquitto(""));
}

/// `perf conn -c 200`: every client connects, and stays connected to the end.
fn conn_200(broker: &Broker) {
    let port = broker.port_arg();
    let (out, j) = perf(&[
        "conn",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        "200",
        "-i",
        "0",
        "--duration",
        "1",
        "--threads",
        "2",
    ]);
    let ctx = format!("{}: {}\n{j:#}", broker.name, show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 200, "{ctx}");
    assert_eq!(num(&j, &["connections", "failed"]), 0, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), 200, "{ctx}");
    assert_eq!(
        num(&j, &["connections", "handshake_us", "count"]),
        200,
        "{ctx}"
    );
    assert!(
        float(&j, &["connections", "connect_rate_per_s"]) > 0.0,
        "{ctx}"
    );
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("200 of 200 connected"),
        "{ctx}"
    );
}

#[test]
fn conn_200_against_our_broker() {
    conn_200(&Broker::ours());
}

#[test]
fn conn_200_against_mosquitto() {
    conn_200(&Broker::mosquitto(""));
}

/// Refused connections are counted with their cause, never a panic.
#[test]
fn connection_refused_is_counted() {
    let port = common::free_port().to_string();
    let (out, j) = perf(&[
        "conn",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        "3",
        "-i",
        "0",
        "--threads",
        "1",
    ]);
    let ctx = show(&out);
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no client could connect"),
        "{ctx}"
    );
    assert_eq!(num(&j, &["connections", "failed"]), 3, "{ctx}");
    let kinds = j["errors"]["by_kind"].as_object().unwrap();
    assert_eq!(kinds.len(), 1, "{ctx}");
    let (what, n) = kinds.iter().next().unwrap();
    assert!(what.starts_with("connect: Connection refused"), "{what}");
    assert_eq!(n, 3);
}

/// A CONNACK refusal is counted with its reason code (v5) or return code (3.1.1).
#[test]
fn connack_refusal_is_counted_with_its_code() {
    let broker = Broker::mosquitto("allow_anonymous false");
    let port = broker.port_arg();
    for (version, expect) in [
        ("5", "CONNACK refused: 0x87 (Not authorized)"),
        ("4", "CONNACK refused: return code 5 0x87 (Not authorized)"),
    ] {
        let (out, j) = perf(&[
            "conn",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "2",
            "-i",
            "0",
            "-V",
            version,
            "--threads",
            "1",
        ]);
        let ctx = format!("{}\n{j:#}", show(&out));
        assert_eq!(num(&j, &["connections", "failed"]), 2, "{ctx}");
        assert_eq!(num(&j, &["errors", "by_kind", expect]), 2, "{ctx}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expect),
            "{ctx}"
        );
    }
}
