//! `perf` over TLS, WebSocket and WebSocket over TLS against Mosquitto (and TLS against our
//! broker): no message lost through the layers, each layer's handshake timed, and every way the
//! set-up can fail (unknown CA, missing client certificate, the wrong transport) counted with a
//! description that says why. Certificates are made at test time (common::Pki). Mosquitto
//! serves WebSocket itself (its listeners with `protocol websockets`); our broker's WebSocket
//! listener is not tested here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{Broker, Pki, float, num, perf, show};

/// `perf bench` 4 publishers → 1 subscriber, QoS 1, 1000 msg/s for 2 s over `transport`
/// (`--tls ...`, `--ws`): nothing lost, duplicated or reordered, every layer's handshake timed
/// once per connection, and the set-up (TCP connect → CONNACK) at least as long as each part.
fn bench_qos1(name: &str, port: u16, transport: &[&str], expect: &str) -> Value {
    let port = port.to_string();
    let topic = format!("perf/{expect}/{name}");
    let mut args = vec![
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
        "2",
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
    assert!(out.status.success(), "{ctx}");
    assert_eq!(num(&j, &["errors", "total"]), 0, "{ctx}");
    assert_eq!(j["config"]["transport"], expect, "{ctx}");
    assert_eq!(num(&j, &["connections", "connected"]), 5, "{ctx}");
    assert_eq!(num(&j, &["connections", "open_at_end"]), 5, "{ctx}");
    let sent = num(&j, &["publish", "sent"]);
    assert!((1800..=2200).contains(&sent), "sent {sent}: {ctx}");
    assert_eq!(num(&j, &["publish", "acked"]), sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "expected"]), sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "received"]), sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "distinct"]), sent, "{ctx}");
    assert_eq!(num(&j, &["receive", "lost"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "duplicated"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "out_of_order"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "foreign"]), 0, "{ctx}");
    assert_eq!(num(&j, &["receive", "latency_us", "count"]), sent, "{ctx}");
    // Each layer's handshake once per connection; none for a layer not used.
    let c = &j["connections"];
    let tls = expect.contains("tls") || expect == "wss";
    let ws = expect.starts_with("ws");
    for (field, used) in [("tls_handshake_us", tls), ("ws_handshake_us", ws)] {
        if used {
            assert_eq!(num(c, &[field, "count"]), 5, "{field}: {ctx}");
        } else {
            assert!(c[field].is_null(), "{field}: {ctx}");
        }
    }
    assert_eq!(num(c, &["setup_us", "count"]), 5, "{ctx}");
    assert_eq!(num(c, &["handshake_us", "count"]), 5, "{ctx}");
    // Every connection's set-up contains its handshakes: so does the slowest.
    let setup_max = float(c, &["setup_us", "max"]);
    for field in [
        "tcp_connect_us",
        "tls_handshake_us",
        "ws_handshake_us",
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

/// `perf conn -c <n>` to `port` with `extra`; returns the output and the JSON.
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
