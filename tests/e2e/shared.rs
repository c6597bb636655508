//! Shared subscriptions through the real broker with mosquitto_sub: two members of one group
//! share the messages (each exactly one copy in total), a plain subscriber gets them all.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

fn sub(broker: &Broker, filter: &str, count: usize, version: &str) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        version,
        "-q",
        "1",
    ])
    .args(["-i", &unique("shared"), "-t", filter, "-v", "-d"])
    .args(["-C", &count.to_string(), "-W", "10"]);
    let mut p = Proc::spawn("mosquitto_sub", cmd).unwrap();
    p.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    p
}

fn payloads(done: &crate::harness::Finished) -> Vec<String> {
    done.stdout
        .iter()
        .filter(|l| l.starts_with("job "))
        .cloned()
        .collect()
}

#[test]
fn a_group_shares_the_messages_and_a_plain_subscriber_gets_all() {
    let broker = Broker::start();
    let a = sub(&broker, "$share/workers/job", 5, "mqttv5");
    let b = sub(&broker, "$share/workers/job", 5, "mqttv311");
    let all = sub(&broker, "job", 10, "mqttv5");
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-V",
        "mqttv5",
        "-q",
        "1",
    ])
    .args(["-i", &unique("jobs"), "-t", "job", "-l"]);
    let mut publisher = Proc::spawn("mosquitto_pub", cmd).unwrap();
    for i in 0..10 {
        publisher.send_line(&format!("{i}"));
    }
    assert!(publisher.finish(TIMEOUT).status.success());
    let (a, b, all) = (a.finish(TIMEOUT), b.finish(TIMEOUT), all.finish(TIMEOUT));
    assert!(
        a.status.success() && b.status.success(),
        "{} / {}",
        a.stderr,
        b.stderr
    );
    assert!(all.status.success(), "{}", all.stderr);
    let mut shared: Vec<String> = payloads(&a).into_iter().chain(payloads(&b)).collect();
    shared.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("job {i}")).collect();
    expected.sort();
    assert_eq!(shared, expected, "each message to exactly one member");
    assert_eq!(payloads(&all).len(), 10);
}
