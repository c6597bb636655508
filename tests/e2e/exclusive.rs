//! Exclusive subscriptions through the real broker: with `mqtt.exclusive_subscription`, a
//! second mosquitto_sub on the same `$exclusive/` filter is refused (SUBACK 0x97).

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

fn sub(broker: &Broker) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        "mqttv5",
        "-d",
        "-q",
        "1",
    ])
    .args(["-i", &unique("excl"), "-t", "$exclusive/work", "-W", "3"]);
    Proc::spawn("mosquitto_sub", cmd).unwrap()
}

#[test]
fn a_second_exclusive_subscriber_is_refused() {
    let broker = Broker::start_with(&["mqtt.exclusive_subscription=true"]);
    let mut first = sub(&broker);
    first.wait_line(TIMEOUT, "granted SUBACK", |l| {
        l.starts_with("Subscribed (mid: 1): 1")
    });
    let second = sub(&broker).finish(TIMEOUT);
    let text = format!("{}\n{}", second.stdout.join("\n"), second.stderr);
    assert!(text.contains("Subscribed (mid: 1): 151"), "{text}");
    drop(first);
}
