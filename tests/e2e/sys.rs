//! `$SYS` topics through the real broker: the retained version, and the client connected and
//! disconnected events, seen by mosquitto_sub.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn version_and_client_events() {
    let broker = Broker::start();
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        "mqttv311",
        "-v",
        "-d",
    ])
    .args(["-i", &unique("sys"), "-t", "$SYS/brokers/+/version"])
    .args(["-t", "$SYS/brokers/+/clients/+/connected"])
    .args([
        "-t",
        "$SYS/brokers/+/clients/+/disconnected",
        "-C",
        "3",
        "-W",
        "10",
    ]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    let id = unique("visitor");
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-i",
        &id,
        "-t",
        "t",
        "-m",
        "x",
    ]);
    assert!(
        Proc::spawn("mosquitto_pub", cmd)
            .unwrap()
            .finish(TIMEOUT)
            .status
            .success()
    );
    let done = sub.finish(TIMEOUT);
    assert!(done.status.success(), "{}", done.stderr);
    let lines: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("$SYS"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("$SYS/brokers/broker@127.0.0.1/version "))
    );
    let connected = lines
        .iter()
        .find(|l| l.contains(&format!("/clients/{id}/connected ")))
        .expect("connected event");
    assert!(
        connected.contains(&format!("\"clientid\":\"{id}\"")),
        "{connected}"
    );
    let disconnected = lines
        .iter()
        .find(|l| l.contains(&format!("/clients/{id}/disconnected ")))
        .expect("disconnected event");
    assert!(
        disconnected.contains("\"reason\":\"normal\""),
        "{disconnected}"
    );
}
