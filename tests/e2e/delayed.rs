//! Delayed publish through the real broker: `$delayed/1/{topic}` from mosquitto_pub reaches a
//! mosquitto_sub on `{topic}` about a second later, not before; a delay over the maximum is an
//! ordinary topic; `delayed.max_delayed_messages` answers 0x97 beyond it.

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

/// `mosquitto_pub -q 1` of one message (`-V version`).
fn publish(broker: &Broker, version: &str, topic: &str, message: &str) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1"])
        .args([
            "-V",
            version,
            "-i",
            &unique("dpub"),
            "-t",
            topic,
            "-m",
            message,
        ]);
    let done = Proc::spawn("mosquitto_pub", cmd).unwrap().finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_pub: {}", done.stderr);
}

/// A delay over the maximum (4,294,967 s) makes `$delayed/4294968/far/x` an ordinary topic:
/// published at once under that name, nothing for `far/x`.
#[test]
fn delay_beyond_the_maximum_is_an_ordinary_topic() {
    let broker = Broker::start();
    let far = "$delayed/4294968/far/x";
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
    .args(["-i", &unique("dsub"), "-t", far, "-t", "far/x"])
    .args(["-C", "2", "-W", "10"]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    let sent = Instant::now();
    publish(&broker, "mqttv5", far, "hello");
    sub.wait_line(TIMEOUT, "the message", |l| l.ends_with(" hello"));
    let waited = sent.elapsed();
    // A marker on far/x: had the broker taken `hello` for a delayed far/x message (or
    // published it there at once), the marker would not be the only far/x line.
    publish(&broker, "mqttv5", "far/x", "marker");
    let done = sub.finish(TIMEOUT);
    assert!(done.status.success(), "{}", done.stderr);
    let got: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("$delayed/") || l.starts_with("far/"))
        .collect();
    assert_eq!(
        got,
        [&format!("{far} hello"), &"far/x marker".to_owned()],
        "{:?}",
        done.stdout
    );
    assert!(
        waited < Duration::from_millis(900),
        "published after {waited:?}, wanted at once"
    );
    broker.stop().assert_clean();
}

/// `delayed.max_delayed_messages = 1` (one per shard with two shards): an MQTT 5 client's
/// second delayed PUBLISH while the first is held gets PUBACK 0x97 (Quota exceeded) and is
/// not published; the first is, after its delay.
#[test]
fn max_delayed_messages_answers_quota_exceeded() {
    let broker = Broker::start_with(&["delayed.max_delayed_messages=1"]);
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
    .args(["-i", &unique("dsub"), "-t", "quota/x", "-W", "4"]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    // Both on one connection, so on one shard: the second finds the shard's one slot taken.
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1", "-d"])
        .args([
            "-V",
            "mqttv5",
            "-i",
            &unique("dpub"),
            "-t",
            "$delayed/1/quota/x",
            "-l",
        ]);
    let mut publisher = Proc::spawn("mosquitto_pub", cmd).unwrap();
    publisher.send_line("first");
    publisher.send_line("second");
    let published = publisher.finish(TIMEOUT);
    let acks: Vec<&String> = published
        .stdout
        .iter()
        .filter(|l| l.contains("received PUBACK"))
        .collect();
    assert_eq!(acks.len(), 2, "{:?}", published.stdout);
    assert!(acks[0].ends_with("(Mid: 1, RC:0)"), "{acks:?}");
    assert!(acks[1].ends_with("(Mid: 2, RC:151)"), "{acks:?}");
    // mosquitto_sub ends at -W 4 (exit status 27): what it printed is the point.
    let done = sub.finish(TIMEOUT);
    let got: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("quota/"))
        .collect();
    assert_eq!(got, ["quota/x first"], "{:?}", done.stdout);
    broker.stop().assert_clean();
}
