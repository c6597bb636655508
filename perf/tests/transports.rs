//! `perf` over TLS, WebSocket and WebSocket over TLS against Mosquitto and our broker, and over
//! QUIC against our broker: no message lost through the layers, each layer's handshake timed,
//! and every way the set-up can fail (unknown CA, missing client certificate, the wrong
//! transport, no QUIC listener) counted with a description that says why. Certificates are
//! made at test time (common::Pki); our broker's QUIC listener makes its own self-signed one.
//! Mosquitto serves WebSocket itself (its listeners with `protocol websockets`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{Broker, Pki, float, num, perf, show};

/// `perf bench` 4 publishers → 1 subscriber, QoS 1, 1000 msg/s for 2 s over `transport`
/// (`--tls ...`, `--ws`, `--quic ...`): see [`bench_qos1_shaped`].
fn bench_qos1(name: &str, port: u16, transport: &[&str], expect: &str) -> Value {
    bench_qos1_shaped(name, port, transport, expect, 4, 1, 1000, 2)
}

/// `perf bench` `pubs` publishers → `subs` subscribers (each subscribed to every publisher),
/// QoS 1, `rate` msg/s in all for `secs` s over `transport`: nothing lost, duplicated or
/// reordered, every layer's handshake timed once per connection, and the set-up (TCP connect
/// or QUIC connect → CONNACK) at least as long as each part.
#[allow(clippy::too_many_arguments)]
fn bench_qos1_shaped(
    name: &str,
    port: u16,
    transport: &[&str],
    expect: &str,
    pubs: u64,
    subs: u64,
    rate: u64,
    secs: u64,
) -> Value {
    let port = port.to_string();
    let topic = format!("perf/{expect}/{name}");
    let (pubs_arg, subs_arg) = (pubs.to_string(), subs.to_string());
    let (rate_arg, secs_arg) = (rate.to_string(), secs.to_string());
    let mut args = vec![
        "bench",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--pubs",
        &pubs_arg,
        "--subs",
        &subs_arg,
        "-q",
        "1",
        "--rate",
        &rate_arg,
        "--duration",
        &secs_arg,
        "-i",
        "1",
        "-s",
        "64",
        "--threads",
        "2",
    ];
    let t = format!("{topic}/%i");
    let st = format!("{topic}/#");
    args.extend_from_slice(&["-t", &t, "--sub-topic", &st]);
    args.extend_from_slice(transport);
    let (out, j) = perf(&args);
    let ctx = format!("{name} {transport:?}: {}\n{j:#}", show(&out));
    let clients = pubs + subs;
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert_eq!(j["config"]["transport"], expect, "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), clients, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), clients, "{ctx}");
    let sent = num(&j, &["publish", "sent"]);
    let scheduled = rate * secs;
    assert!(
        (scheduled * 9 / 10..=scheduled * 11 / 10).contains(&sent),
        "sent {sent}: {ctx}"
    );
    assert_eq!(num(&j, &["publish", "acked"]), sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "subscribed"]), subs, "{ctx}");
    let deliveries = sent * subs;
    assert_eq!(num(&j, &["receive", "expected"]), deliveries, "{ctx}");
    assert_eq!(num(&j, &["receive", "received"]), deliveries, "{ctx}");
    assert_eq!(num(&j, &["receive", "distinct"]), deliveries, "{ctx}");
    assert_eq!(num(&j, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "out_of_order"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "foreign"]), 0, "{ctx}");
    assert_eq!(
        num(&j, &["receive", "latency_us", "count"]),
        deliveries,
        "{ctx}"
    );
    // Each layer's handshake once per connection; none for a layer not used.
    let c = &j["connections"];
    let tls = expect.contains("tls") || expect == "wss";
    let ws = expect.starts_with("ws");
    let quic = expect == "quic";
    for (field, used) in [
        ("tls_handshake_us", tls),
        ("ws_handshake_us", ws),
        ("quic_handshake_us", quic),
        ("tcp_connect_us", !quic),
    ] {
        if used {
            assert_eq!(num(c, &[field, "count"]), clients, "{field}: {ctx}");
        } else {
            assert!(c[field].is_null(), "{field}: {ctx}");
        }
    }
    assert_eq!(j["config"]["quic"].is_null(), !quic, "{ctx}");
    assert_eq!(num(c, &["setup_us", "count"]), clients, "{ctx}");
    assert_eq!(num(c, &["handshake_us", "count"]), clients, "{ctx}");
    // Every connection's set-up contains its handshakes: so does the slowest.
    let setup_max = float(c, &["setup_us", "max"]);
    for field in [
        "tcp_connect_us",
        "tls_handshake_us",
        "ws_handshake_us",
        "quic_handshake_us",
        "handshake_us",
    ] {
        if !c[field].is_null() {
            let max = float(c, &[field, "max"]);
            assert!(
                setup_max >= max * 0.999,
                "setup {setup_max} < {field} {max}: {ctx}"
            );
        }
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(&format!("perf bench — {expect} 127.0.0.1:")),
        "{ctx}"
    );
    assert!(table.contains("\nsetup "), "{ctx}");
    assert_eq!(table.contains("\ntls "), tls, "{ctx}");
    assert_eq!(table.contains("\nws "), ws, "{ctx}");
    assert_eq!(table.contains("\nquic "), quic, "{ctx}");
    assert!(table.contains("lost 0, duplicated 0"), "{ctx}");
    j
}

#[test]
fn bench_qos1_over_tls_against_mosquitto() {
    let pki = Pki::new();
    let (_broker, ports) = Broker::mosquitto_listeners("", &[&pki.mosquitto_tls()]);
    let ca = pki.arg("ca.pem");
    let j = bench_qos1(
        "mosquitto",
        ports[0],
        &["--tls", "--cacertfile", &ca],
        "tls",
    );
    assert_eq!(j["config"]["tls"]["cacertfile"], ca.as_str());
    assert_eq!(j["config"]["tls"]["insecure"], false);
    assert!(j["config"]["ws_path"].is_null());
}

#[test]
fn bench_qos1_over_ws_against_mosquitto() {
    let (_broker, ports) = Broker::mosquitto_listeners("", &["protocol websockets"]);
    let j = bench_qos1("mosquitto", ports[0], &["--ws"], "ws");
    assert_eq!(j["config"]["ws_path"], "/mqtt");
    assert!(j["config"]["tls"].is_null());
}

#[test]
fn bench_qos1_over_wss_against_mosquitto() {
    let pki = Pki::new();
    let wss = format!("protocol websockets\n{}", pki.mosquitto_tls());
    let (_broker, ports) = Broker::mosquitto_listeners("", &[&wss]);
    let ca = pki.arg("ca.pem");
    bench_qos1(
        "mosquitto",
        ports[0],
        &["--tls", "--ws", "--cacertfile", &ca],
        "wss",
    );
}

#[test]
fn bench_qos1_over_tls_against_our_broker() {
    let pki = Pki::new();
    let broker = Broker::ours_tls(&pki.path("server.pem"), &pki.path("server.key"));
    let ca = pki.arg("ca.pem");
    bench_qos1(
        "broker",
        broker.port,
        &["--tls", "--cacertfile", &ca],
        "tls",
    );
}

#[test]
fn bench_qos1_over_ws_and_wss_against_our_broker() {
    let broker = Broker::ours_ws();
    bench_qos1("broker", broker.port, &["--ws"], "ws");
    let pki = Pki::new();
    let broker = Broker::ours_wss(&pki.path("server.pem"), &pki.path("server.key"));
    let ca = pki.arg("ca.pem");
    bench_qos1(
        "broker",
        broker.port,
        &["--tls", "--ws", "--cacertfile", &ca],
        "wss",
    );
}

/// MQTT over QUIC against our broker (its self-signed certificate as the CA): 4 publishers
/// → 3 subscribers, QoS 1, 2000 msg/s for 3 s, every message delivered once to each
/// subscriber, in order; one QUIC handshake per connection timed.
#[test]
fn bench_qos1_over_quic_against_our_broker() {
    let _one = one_heavy_quic_test();
    let broker = Broker::ours_quic();
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let j = bench_qos1_shaped(
        "broker",
        broker.port,
        &["--quic", "--cacertfile", &ca],
        "quic",
        4,
        3,
        2000,
        3,
    );
    assert_eq!(j["config"]["tls"]["cacertfile"], ca.as_str());
    assert_eq!(j["config"]["tls"]["insecure"], false);
    assert_eq!(j["config"]["quic"]["alpn"], "mqtt");
    assert_eq!(j["config"]["quic"]["mode"], "single-stream");
}

/// Held by the QUIC tests that load their broker most (`perf bench`, a QoS 2 burst, 200
/// handshakes at once), so that they do not run at the same time: on a 2-core machine two of
/// them at once can leave their brokers (debug builds, `cargo test` without `--release`) so far
/// behind that a subscriber's queue overflows (`mqtt.max_mqueue_len`, 1000 behind the inflight
/// window: the broker drops the excess, as EMQX does), which the bench counts as lost. Seen
/// with `cargo test`'s parallel tests only, never with one test alone.
fn one_heavy_quic_test() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it poisons it; the next one may still run.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `perf conn --quic -c 200` with the broker's certificate as `--cacertfile`: all connected
/// and still open at the end, each handshake confirmed and timed.
#[test]
fn conn_over_quic_against_our_broker() {
    let _one = one_heavy_quic_test();
    let broker = Broker::ours_quic();
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let (out, j) = conn(broker.port, 200, &["--quic", "--cacertfile", &ca]);
    let ctx = format!("{}\n{j:#}", show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(j["config"]["transport"], "quic", "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 200, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), 200, "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    let c = &j["connections"];
    for field in ["quic_handshake_us", "handshake_us", "setup_us"] {
        assert_eq!(num(c, &[field, "count"]), 200, "{field}: {ctx}");
    }
    assert!(c["tcp_connect_us"].is_null(), "{ctx}");
    assert!(c["tls_handshake_us"].is_null(), "{ctx}");
    // The handshake takes at least a round trip more than nothing, and the set-up contains it.
    assert!(float(c, &["quic_handshake_us", "min"]) > 0.0, "{ctx}");
    assert!(
        float(c, &["setup_us", "p50"]) >= float(c, &["quic_handshake_us", "min"]),
        "{ctx}"
    );
}

/// QUIC multi-stream mode (EMQX's EIP-0023) against our broker: 3 publishers → 3 subscribers,
/// QoS 1, 2000 msg/s for 3 s. Every client's SUBSCRIBE or PUBLISHes go on its data stream
/// (a subscriber's before CONNACK, which the broker must hold back until it has sent CONNACK),
/// the broker's SUBACK, PUBACKs and the messages come back on it, and perf reads both streams
/// of each connection: every message delivered once to each subscriber, in order, acked, no
/// error, the handshakes timed as in single-stream mode (one per connection).
#[test]
fn bench_qos1_over_quic_multi_stream_against_our_broker() {
    let _one = one_heavy_quic_test();
    let broker = Broker::ours_quic();
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let j = bench_qos1_shaped(
        "multi",
        broker.port,
        &["--quic", "--quic-multi-stream", "--cacertfile", &ca],
        "quic",
        3,
        3,
        2000,
        3,
    );
    assert_eq!(j["config"]["quic"]["alpn"], "mqtt");
    assert_eq!(j["config"]["quic"]["mode"], "multi-stream");
}

/// `perf conn --quic --quic-multi-stream -c 50`: all connected (each with its data stream
/// opened before CONNACK) and still open at the end, each handshake timed.
#[test]
fn conn_over_quic_multi_stream_against_our_broker() {
    let broker = Broker::ours_quic();
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let (out, j) = conn(
        broker.port,
        50,
        &["--quic", "--quic-multi-stream", "--cacertfile", &ca],
    );
    let ctx = format!(
        "{}
{j:#}",
        show(&out)
    );
    assert!(out.status.success(), "{ctx}");
    assert_eq!(j["config"]["quic"]["mode"], "multi-stream", "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 50, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), 50, "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    let c = &j["connections"];
    for field in ["quic_handshake_us", "handshake_us", "setup_us"] {
        assert_eq!(num(c, &[field, "count"]), 50, "{field}: {ctx}");
    }
}

/// QoS 2 both ways over multi-stream QUIC, `perf sub` and `perf pub` as two processes: the
/// publishers' PUBREC → PUBREL → PUBCOMP and the subscribers' PUBLISH → PUBREC → PUBREL →
/// PUBCOMP all on the data streams; 2 subscribers get the 2 × 300 messages each, in order, and
/// every message is completed.
#[test]
fn sub_and_pub_qos2_over_quic_multi_stream() {
    let _one = one_heavy_quic_test();
    let broker = Broker::ours_quic();
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let port = broker.port.to_string();
    let quic = ["--quic", "--quic-multi-stream", "--cacertfile", &ca];
    let sub_json = common::scratch("sub-quic-multi.json");
    let sub = Command::new(env!("CARGO_BIN_EXE_perf"))
        .args(["sub", "-h", "127.0.0.1", "-p", &port, "-c", "2"])
        .args(quic)
        .args([
            "-t",
            "perf/multi/#",
            "-q",
            "2",
            "-i",
            "0",
            "--duration",
            "4",
        ])
        .arg("--json")
        .arg(&sub_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscribers need a few ms over loopback; the measured phase lasts 4 s.
    std::thread::sleep(Duration::from_millis(1500));
    let mut args = vec!["pub", "-h", "127.0.0.1", "-p", &port];
    args.extend_from_slice(&quic);
    args.extend_from_slice(&[
        "-c",
        "2",
        "-L",
        "300",
        "-q",
        "2",
        "-I",
        "2",
        "-i",
        "0",
        "-t",
        "perf/multi/%i",
        "--threads",
        "1",
    ]);
    let (out, pj) = perf(&args);
    let sub_out = sub.wait_with_output().unwrap();
    let sj: Value = serde_json::from_str(&std::fs::read_to_string(&sub_json).unwrap()).unwrap();
    let ctx = format!(
        "pub: {}\n{pj:#}\nsub: {}\n{sj:#}",
        show(&out),
        show(&sub_out)
    );
    assert!(out.status.success() && sub_out.status.success(), "{ctx}");
    assert_eq!(num(&pj, &["publish", "sent"]), 600, "{ctx}");
    assert_eq!(num(&pj, &["publish", "acked"]), 600, "{ctx}");
    for j in [&pj, &sj] {
        assert_eq!(j["config"]["quic"]["mode"], "multi-stream", "{ctx}");
        assert_eq!(num(j, &["errors", "total"]), 0, "{ctx}");
    }
    assert_eq!(num(&sj, &["receive", "subscribed"]), 2, "{ctx}");
    assert_eq!(num(&sj, &["receive", "received"]), 1200, "{ctx}");
    assert_eq!(num(&sj, &["receive", "distinct"]), 1200, "{ctx}");
    assert_eq!(num(&sj, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&sj, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&sj, &["receive", "out_of_order"]), 0, "{ctx}");
}

/// A broker that lets a client open one bidirectional stream only (here ours with
/// `peer_bidi_stream_count=1`) cannot do multi-stream: every client fails at once, saying so,
/// instead of waiting for a CONNACK or SUBACK that will not come.
#[test]
fn quic_multi_stream_needs_a_second_stream() {
    let broker =
        Broker::ours_quic_with(&["listeners.quic.default.peer_bidi_stream_count=1".to_owned()]);
    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    let (out, j) = conn(
        broker.port,
        3,
        &["--quic", "--quic-multi-stream", "--cacertfile", &ca],
    );
    assert_eq!(
        only_error(&out, &j, 3),
        "--quic-multi-stream: the broker allows no second bidirectional stream (a \
         single-stream broker)"
    );
}

/// Our broker's self-signed QUIC certificate is trusted by nothing but itself: without
/// `--cacertfile` (the "system bundle" here being another CA, through `SSL_CERT_FILE`) and with
/// another CA's file, every handshake fails on the certificate, saying how to fix it; with
/// `--insecure` or the broker's PEM every client connects.
#[test]
fn quic_verifies_the_broker_certificate() {
    let broker = Broker::ours_quic();
    let pki = Pki::new();
    let expected = "QUIC handshake: invalid peer certificate: UnknownIssuer (--cacertfile gives \
                    the CA of the broker's certificate, --insecure skips the check)";

    let port = broker.port.to_string();
    let json = common::scratch("quic-system-ca.json");
    let out = Command::new(env!("CARGO_BIN_EXE_perf"))
        .args(["conn", "-h", "127.0.0.1", "-p", &port, "-c", "3", "--quic"])
        .args([
            "-i",
            "0",
            "--duration",
            "0.5",
            "--connect-timeout",
            "5",
            "--json",
        ])
        .arg(&json)
        .env("SSL_CERT_FILE", pki.path("other-ca.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(only_error(&out, &j, 3), expected);
    assert_eq!(
        j["config"]["tls"]["system_ca_bundle"],
        pki.arg("other-ca.pem").as_str(),
        "{j:#}"
    );

    let other = pki.arg("other-ca.pem");
    let (out, j) = conn(broker.port, 3, &["--quic", "--cacertfile", &other]);
    assert_eq!(only_error(&out, &j, 3), expected);

    let ca = broker.quic_cert.as_ref().unwrap().display().to_string();
    for extra in [
        &["--quic", "--insecure"][..],
        &["--quic", "--cacertfile", &ca],
    ] {
        let (out, j) = conn(broker.port, 3, extra);
        let ctx = format!("{extra:?}: {}\n{j:#}", show(&out));
        assert!(out.status.success(), "{ctx}");
        assert_eq!(num(&j, &["connections", "connected"]), 3, "{ctx}");
        assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
        assert_eq!(
            j["config"]["tls"]["insecure"],
            extra.contains(&"--insecure"),
            "{ctx}"
        );
    }
}

/// QUIC to a port where nothing answers QUIC (our broker's TCP port, as UDP): a handshake
/// timeout, counted, never a hang.
#[test]
fn quic_without_a_listener_times_out() {
    let broker = Broker::ours();
    let port = broker.port.to_string();
    let json = common::scratch("quic-nothing.json");
    let out = Command::new(env!("CARGO_BIN_EXE_perf"))
        .args(["conn", "-h", "127.0.0.1", "-p", &port, "-c", "2", "--quic"])
        .args(["--insecure", "-i", "0", "--connect-timeout", "1", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        only_error(&out, &j, 2),
        "QUIC handshake: timed out after 1s"
    );
}

/// `perf conn -c <n>` to `port` with `extra`; returns the output and the JSON.
fn conn(port: u16, n: usize, extra: &[&str]) -> (std::process::Output, Value) {
    let port = port.to_string();
    let n = n.to_string();
    let mut args = vec![
        "conn",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-c",
        &n,
        "-i",
        "0",
        "--duration",
        "0.5",
        "--threads",
        "2",
        "--connect-timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    perf(&args)
}

/// The only error kind of a run where every client failed, and its count.
fn only_error(out: &std::process::Output, j: &Value, clients: u64) -> String {
    let ctx = format!("{}\n{j:#}", show(out));
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    assert_eq!(num(j, &["connections", "connected"]), 0, "{ctx}");
    assert_eq!(num(j, &["connections", "failed"]), clients, "{ctx}");
    let kinds = j["errors"]["by_kind"].as_object().unwrap();
    assert_eq!(kinds.len(), 1, "{ctx}");
    let (what, n) = kinds.iter().next().unwrap();
    assert_eq!(n.as_u64(), Some(clients), "{ctx}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(what.as_str()),
        "the table lists the error: {ctx}"
    );
    what.clone()
}

/// A listener that requires a client certificate: perf's, signed by the broker's CA, is
/// accepted; without one (TLS 1.3: the broker's alert comes after the client's Finished, when
/// perf waits for CONNACK) and with one of another CA, every client fails with the broker's
/// alert named.
#[test]
fn mutual_tls_against_mosquitto() {
    let pki = Pki::new();
    let listener = format!("{}\nrequire_certificate true", pki.mosquitto_tls());
    let (_broker, ports) = Broker::mosquitto_listeners("", &[&listener]);
    let ca = pki.arg("ca.pem");
    let (cert, key) = (pki.arg("client.pem"), pki.arg("client.key"));
    let (out, j) = conn(
        ports[0],
        20,
        &[
            "--tls",
            "--cacertfile",
            &ca,
            "--certfile",
            &cert,
            "--keyfile",
            &key,
        ],
    );
    let ctx = format!("{}\n{j:#}", show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 20, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), 20, "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert_eq!(j["config"]["tls"]["certfile"], cert.as_str(), "{ctx}");
    assert_eq!(
        num(&j, &["connections", "tls_handshake_us", "count"]),
        20,
        "{ctx}"
    );

    let (out, j) = conn(ports[0], 3, &["--tls", "--cacertfile", &ca]);
    let what = only_error(&out, &j, 3);
    assert_eq!(
        what,
        "TLS: received fatal alert: CertificateRequired (the broker requires a client \
         certificate: --certfile, --keyfile)"
    );

    let (rogue, rogue_key) = (pki.arg("rogue.pem"), pki.arg("rogue.key"));
    let (out, j) = conn(
        ports[0],
        3,
        &[
            "--tls",
            "--cacertfile",
            &ca,
            "--certfile",
            &rogue,
            "--keyfile",
            &rogue_key,
        ],
    );
    let what = only_error(&out, &j, 3);
    assert!(what.starts_with("TLS: received fatal alert: "), "{what}");
}

/// A broker whose CA perf is not given: the handshake fails on the certificate (with another
/// CA, and with the system's bundle), and `--insecure` connects anyway.
#[test]
fn insecure_skips_verification_of_an_unknown_ca() {
    let pki = Pki::new();
    let (_broker, ports) = Broker::mosquitto_listeners("", &[&pki.mosquitto_tls()]);
    let other = pki.arg("other-ca.pem");
    let (out, j) = conn(ports[0], 3, &["--tls", "--cacertfile", &other]);
    let what = only_error(&out, &j, 3);
    assert_eq!(
        what,
        "TLS handshake: invalid peer certificate: UnknownIssuer (--cacertfile gives the CA of \
         the broker's certificate, --insecure skips the check)"
    );

    // Without --cacertfile: the system's CA bundle, which does not hold our test CA either
    // (or, on a host without one, a command-line error saying so).
    let (out, j) = {
        let port = ports[0].to_string();
        let json = common::scratch("no-ca.json");
        let out = Command::new(env!("CARGO_BIN_EXE_perf"))
            .args(["conn", "-h", "127.0.0.1", "-p", &port, "-c", "2", "--tls"])
            .args(["-i", "0", "--duration", "0.5", "--json"])
            .arg(&json)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let j = std::fs::read_to_string(&json)
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null);
        (out, j)
    };
    if out.status.code() == Some(2) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no system CA bundle found"), "{}", show(&out));
    } else {
        let what = only_error(&out, &j, 2);
        assert!(
            what.starts_with("TLS handshake: invalid peer certificate: UnknownIssuer"),
            "{what}"
        );
        assert!(j["config"]["tls"]["system_ca_bundle"].is_string(), "{j:#}");
    }

    let (out, j) = conn(ports[0], 3, &["--tls", "--insecure"]);
    let ctx = format!("{}\n{j:#}", show(&out));
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 3, "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert_eq!(j["config"]["tls"]["insecure"], true, "{ctx}");
    assert!(j["config"]["tls"]["cacertfile"].is_null(), "{ctx}");
}

/// `perf sub` over WebSocket and `perf pub` over TLS on one Mosquitto: 2 subscribers get the
/// 2 × 500 messages each, in order.
#[test]
fn sub_over_ws_and_pub_over_tls() {
    let pki = Pki::new();
    let (_broker, ports) =
        Broker::mosquitto_listeners("", &["protocol websockets", &pki.mosquitto_tls()]);
    let (ws_port, tls_port) = (ports[0].to_string(), ports[1].to_string());
    let sub_json = common::scratch("sub-ws.json");
    let sub = Command::new(env!("CARGO_BIN_EXE_perf"))
        .args(["sub", "-h", "127.0.0.1", "-p", &ws_port, "--ws", "-c", "2"])
        .args([
            "-t",
            "perf/mixed/#",
            "-q",
            "1",
            "-i",
            "0",
            "--duration",
            "5",
        ])
        .arg("--json")
        .arg(&sub_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The subscribers need a few ms over loopback; the measured phase lasts 5 s.
    std::thread::sleep(Duration::from_millis(1500));
    let ca = pki.arg("ca.pem");
    let (out, pj) = perf(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port,
        "--tls",
        "--cacertfile",
        &ca,
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
        "perf/mixed/%i",
        "--threads",
        "1",
    ]);
    let sub_out = sub.wait_with_output().unwrap();
    let sj: Value = serde_json::from_str(&std::fs::read_to_string(&sub_json).unwrap()).unwrap();
    let ctx = format!(
        "pub: {}\n{pj:#}\nsub: {}\n{sj:#}",
        show(&out),
        show(&sub_out)
    );
    assert!(out.status.success() && sub_out.status.success(), "{ctx}");
    assert_eq!(num(&pj, &["publish", "sent"]), 1000, "{ctx}");
    assert_eq!(num(&pj, &["publish", "acked"]), 1000, "{ctx}");
    assert_eq!(pj["config"]["transport"], "tls", "{ctx}");
    assert_eq!(sj["config"]["transport"], "ws", "{ctx}");
    assert_eq!(num(&sj, &["receive", "subscribed"]), 2, "{ctx}");
    assert_eq!(num(&sj, &["receive", "received"]), 2000, "{ctx}");
    assert_eq!(num(&sj, &["receive", "distinct"]), 2000, "{ctx}");
    assert_eq!(num(&sj, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&sj, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&sj, &["receive", "out_of_order"]), 0, "{ctx}");
    for j in [&pj, &sj] {
        assert_eq!(num(j, &["errors", "total"]), 0, "{ctx}");
    }
}

/// 100 connections over WSS with MQTT 3.1 (subprotocol mqttv3.1 offered first) and 3.1.1:
/// all connected and still open at the end.
#[test]
fn conn_over_wss_with_each_protocol_version() {
    let pki = Pki::new();
    let wss = format!("protocol websockets\n{}", pki.mosquitto_tls());
    let (_broker, ports) = Broker::mosquitto_listeners("", &[&wss]);
    let ca = pki.arg("ca.pem");
    for version in ["3", "4", "5"] {
        let (out, j) = conn(
            ports[0],
            100,
            &["--tls", "--ws", "--cacertfile", &ca, "-V", version],
        );
        let ctx = format!("-V {version}: {}\n{j:#}", show(&out));
        assert!(out.status.success(), "{ctx}");
        assert_eq!(num(&j, &["connections", "connected"]), 100, "{ctx}");
        assert_eq!(num(&j, &["connections", "open_at_end"]), 100, "{ctx}");
        assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
        assert_eq!(
            num(&j, &["connections", "ws_handshake_us", "count"]),
            100,
            "{ctx}"
        );
    }
}

/// The wrong transport for a listener fails at the layer that noticed, never as a hang or a
/// panic.
#[test]
fn wrong_transport_is_counted() {
    let pki = Pki::new();
    let (broker, ports) = Broker::mosquitto_listeners("", &[&pki.mosquitto_tls()]);
    let ca = pki.arg("ca.pem");
    // TLS to the plain TCP listener: Mosquitto takes the ClientHello for a bad packet.
    let (out, j) = conn(broker.port, 2, &["--tls", "--cacertfile", &ca]);
    let what = only_error(&out, &j, 2);
    assert!(what.starts_with("TLS handshake: "), "{what}");
    // WebSocket to the plain TCP listener: the upgrade request is not MQTT either.
    let (out, j) = conn(broker.port, 2, &["--ws"]);
    let what = only_error(&out, &j, 2);
    assert!(what.starts_with("WebSocket handshake: "), "{what}");
    // WebSocket to the TLS listener: the handshake fails there.
    let (out, j) = conn(ports[0], 2, &["--ws"]);
    let what = only_error(&out, &j, 2);
    assert!(what.starts_with("WebSocket handshake: "), "{what}");
}

/// Transport options without their transport, or unusable files, are command-line errors.
#[test]
fn transport_options_are_checked() {
    let missing = common::scratch("missing.pem").display().to_string();
    for (args, expect) in [
        (vec!["--cacertfile", "ca.pem"], "--tls"),
        (vec!["--insecure"], "--tls"),
        (vec!["--ws-path", "/mqtt"], "--ws"),
        (vec!["--tls", "--certfile", "c.pem"], "--keyfile"),
        (
            vec!["--tls", "--cacertfile", missing.as_str()],
            "--cacertfile ",
        ),
        (vec!["--ws", "--ws-path", "mqtt"], "must start with /"),
        (vec!["--quic", "--tls"], "cannot be used with"),
        (vec!["--quic", "--ws"], "cannot be used with"),
        (vec!["--quic-multi-stream"], "--quic"),
        (vec!["--ws", "--quic-multi-stream"], "cannot be used with"),
        (vec!["--tls", "--quic-multi-stream"], "cannot be used with"),
        (
            vec!["--quic", "--cacertfile", missing.as_str()],
            "--cacertfile ",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_perf"))
            .args(["conn", "-h", "127.0.0.1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
