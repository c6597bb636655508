//! Retained messages through the real broker with the mosquitto clients: stored on whichever
//! shard owns the topic, gathered for a wildcard subscription from every shard, replaced, and
//! cleared by an empty retained message.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

fn publish_retained(broker: &Broker, topic: &str, message: Option<&str>) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        "mqttv311",
        "-q",
        "1",
        "-r",
    ])
    .args(["-i", &unique("rpub"), "-t", topic]);
    match message {
        Some(m) => cmd.args(["-m", m]),
        None => cmd.arg("-n"),
    };
    let done = Proc::spawn("mosquitto_pub", cmd).unwrap().finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_pub: {}", done.stderr);
}

/// What `mosquitto_sub --retained-only` on `filter` receives (it stops at the first live one
/// or after a second without messages).
fn retained(broker: &Broker, filter: &str, version: &str) -> Vec<String> {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", version])
        .args([
            "-i",
            &unique("rsub"),
            "-t",
            filter,
            "-v",
            "--retained-only",
            "-W",
            "2",
        ]);
    let done = Proc::spawn("mosquitto_sub", cmd).unwrap().finish(TIMEOUT);
    let mut lines: Vec<String> = done
        .stdout
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    lines.sort();
    lines
}

#[test]
fn retained_messages_are_stored_replaced_and_cleared_across_shards() {
    let broker = Broker::start();
    for i in 0..12 {
        publish_retained(&broker, &format!("ret/{i:02}"), Some("first"));
    }
    publish_retained(&broker, "ret/03", Some("second"));
    publish_retained(&broker, "ret/05", None);
    let mut want: Vec<String> = (0..12)
        .filter(|&i| i != 5)
        .map(|i| format!("ret/{i:02} {}", if i == 3 { "second" } else { "first" }))
        .collect();
    want.sort();
    assert_eq!(
        retained(&broker, "ret/#", "mqttv5"),
        want,
        "wildcard, MQTT 5"
    );
    assert_eq!(
        retained(&broker, "ret/+", "mqttv311"),
        want,
        "wildcard, 3.1.1"
    );
    assert_eq!(
        retained(&broker, "ret/03", "mqttv311"),
        ["ret/03 second"],
        "exact topic"
    );
    assert!(retained(&broker, "ret/05", "mqttv5").is_empty(), "cleared");
}
