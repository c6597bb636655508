//! Delayed publish through the real broker: `$delayed/1/{topic}` from mosquitto_pub reaches a
//! mosquitto_sub on `{topic}` about a second later, not before.

use std::time::{Duration, Instant};

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn delayed_publish_arrives_after_its_delay() {
    let broker = Broker::start();
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-v",
        "-d",
        "-q",
        "1",
    ])
    .args([
        "-i",
        &unique("dsub"),
        "-t",
        "later/x",
        "-C",
        "1",
        "-W",
        "10",
    ]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    let sent = Instant::now();
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-q",
        "1",
        "-i",
        &unique("dpub"),
    ])
    .args(["-t", "$delayed/1/later/x", "-m", "hello"]);
    assert!(
        Proc::spawn("mosquitto_pub", cmd)
            .unwrap()
            .finish(TIMEOUT)
            .status
            .success()
    );
    let done = sub.finish(TIMEOUT);
    let waited = sent.elapsed();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stdout.iter().any(|l| l == "later/x hello"),
        "{:?}",
        done.stdout
    );
    assert!(
        waited >= Duration::from_millis(900),
        "arrived after {waited:?}"
    );
}
