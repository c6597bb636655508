//! MQTT over QUIC through the real broker with aioquic (an independent QUIC implementation):
//! ALPN `mqtt`, single-stream mode, the broker's generated self-signed certificate, a message
//! to a mosquitto_sub on TCP, and garbage datagrams that disturb nobody.

use std::net::UdpSocket;
use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, python_run, unique};

const TIMEOUT: Duration = Duration::from_secs(20);

fn quic_broker() -> (Broker, u16) {
    let broker = Broker::start_with(&[
        "listeners.quic.default.enable=true",
        "listeners.quic.default.bind=127.0.0.1:0",
    ]);
    let port = broker.listener("quic").port();
    (broker, port)
}

/// Runs the aioquic client; returns the MQTT packet types (and PUBLISH topics) it received.
fn aioquic_round_trip(port: u16) -> serde_json::Value {
    let line = python_run("quic.py", &[port.to_string(), unique("quic")], TIMEOUT);
    line["got"].clone()
}

#[test]
fn aioquic_connects_subscribes_and_publishes_over_one_stream() {
    let (broker, port) = quic_broker();
    assert!(
        broker
            .log_text()
            .contains("QUIC uses the self-signed certificate"),
        "{}",
        broker.log_text()
    );
    let mut sub = Proc::spawn("mosquitto_sub", {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-v", "-d"])
            .args(["-i", &unique("qsub"), "-t", "q/#", "-C", "1", "-W", "15"]);
        cmd
    })
    .unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    // Garbage first: it must not disturb the endpoint.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in [1usize, 20, 1200, 1500] {
        junk.send_to(&vec![0x5a; n], ("127.0.0.1", port)).unwrap();
    }
    let got = aioquic_round_trip(port);
    let types: Vec<u64> = got
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(types.first(), Some(&0x20), "CONNACK first: {got}");
    let mut rest = types[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, [0x30, 0x40, 0x90], "PUBLISH, PUBACK, SUBACK: {got}");
    assert!(got.as_array().unwrap().iter().any(|v| v == "q/t"), "{got}");
    // The QUIC client's PUBLISH reached the TCP subscriber.
    let done = sub.finish(TIMEOUT);
    assert!(
        done.stdout.iter().any(|l| l == "q/t hi"),
        "{:?} {}",
        done.stdout,
        done.stderr
    );
    // And a second QUIC client after it all.
    let again = aioquic_round_trip(port);
    assert_eq!(again.as_array().map(Vec::len), Some(5), "{again}");
}
