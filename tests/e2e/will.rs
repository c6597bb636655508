//! Will Messages through the real broker: a client whose connection drops without DISCONNECT
//! has its will delivered to a mosquitto_sub on (possibly) the other shard; a client that
//! disconnects normally does not.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};
use crate::raw::{Raw, packet, string};

const TIMEOUT: Duration = Duration::from_secs(15);

/// An MQTT 3.1.1 CONNECT with Clean Session and a QoS 1 will.
fn connect_with_will(client_id: &str, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = string("MQTT");
    body.push(4);
    body.push(0x02 | 0x04 | (1 << 3));
    body.extend_from_slice(&30u16.to_be_bytes());
    body.extend_from_slice(&string(client_id));
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// `mosquitto_sub -C n -v` on `will/#`, returned once its SUBACK is in.
fn watcher(broker: &Broker, n: usize, extra: &[&str]) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", "mqttv5"])
        .args([
            "-i",
            &unique("watch"),
            "-t",
            "will/#",
            "-v",
            "-d",
            "-q",
            "1",
        ])
        .args(["-C", &n.to_string()])
        .args(extra);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    sub
}

#[test]
fn will_is_published_when_connections_drop_and_not_on_disconnect() {
    let broker = Broker::start();
    // Ten clients with wills (enough for both shards to hold some); five disconnect normally,
    // five just drop their socket. Exactly the five drops must produce a will.
    let sub = watcher(&broker, 5, &["-W", "10"]);
    let mut dropped = Vec::new();
    for i in 0..10 {
        let topic = format!("will/{i}");
        let mut raw = Raw::connect(broker.addr());
        raw.send(&connect_with_will(&unique("dying"), &topic, b"gone"))
            .unwrap();
        let ack = raw.expect("CONNACK", TIMEOUT);
        assert_eq!(ack.kind(), 2, "CONNACK");
        if i % 2 == 0 {
            raw.send(&[0xE0, 0x00]).unwrap();
            raw.expect_closed("after DISCONNECT", TIMEOUT);
        } else {
            dropped.push(format!("{topic} gone"));
            drop(raw);
        }
    }
    let done = sub.finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_sub: {}", done.stderr);
    let mut got: Vec<String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("will/"))
        .cloned()
        .collect();
    got.sort();
    dropped.sort();
    assert_eq!(got, dropped);
    let stats = broker.stop();
    assert_eq!(stats.total(|s| s.accepted), 11);
}
