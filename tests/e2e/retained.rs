//! Retained messages through the real broker with the mosquitto clients: stored on whichever
//! shard owns the topic, gathered for a wildcard subscription from every shard, replaced, and
//! cleared by an empty retained message; the `retainer.*` limits (payload size, lifetime,
//! count).

use std::time::{Duration, Instant};

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

/// `mosquitto_sub -C count -v -d` on `filter`, returned once its SUBACK is in.
fn live(broker: &Broker, filter: &str, count: usize) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port(),
        "-q",
        "1",
        "-v",
        "-d",
    ])
    .args(["-i", &unique("rlive"), "-t", filter])
    .args(["-C", &count.to_string(), "-W", "10"]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    sub
}

#[test]
fn retained_payload_over_max_payload_size_is_delivered_but_not_stored() {
    let broker = Broker::start_with(&["retainer.max_payload_size=64B"]);
    let sub = live(&broker, "big/#", 2);
    let large = "x".repeat(200);
    publish_retained(&broker, "big/large", Some(&large));
    publish_retained(&broker, "big/small", Some("small"));
    let done = sub.finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_sub: {}", done.stderr);
    let got: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("big/"))
        .collect();
    assert_eq!(
        got,
        [&format!("big/large {large}"), &"big/small small".to_owned()],
        "live delivery"
    );
    assert_eq!(
        retained(&broker, "big/#", "mqttv5"),
        ["big/small small"],
        "the 200-byte payload is over retainer.max_payload_size=64B: not stored"
    );
    broker.stop().assert_clean();
}

#[test]
fn retained_messages_expire_after_msg_expiry_interval() {
    let broker = Broker::start_with(&["retainer.msg_expiry_interval=2s"]);
    publish_retained(&broker, "exp/a", Some("soon gone"));
    let stored = Instant::now();
    assert_eq!(
        retained(&broker, "exp/#", "mqttv311"),
        ["exp/a soon gone"],
        "within its 2 s"
    );
    assert!(
        stored.elapsed() < Duration::from_secs(3),
        "the first subscriber took {:?}",
        stored.elapsed()
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(stored.elapsed()));
    assert!(
        retained(&broker, "exp/#", "mqttv311").is_empty(),
        "retainer.msg_expiry_interval=2s: still retained 3 s later"
    );
    assert!(
        retained(&broker, "exp/a", "mqttv5").is_empty(),
        "exact topic, 3 s later"
    );
    broker.stop().assert_clean();
}

/// `retainer.max_retained_messages = 10` is enforced per shard (10 / 2 shards = 5 each, the
/// broker's own `$SYS` retained messages not counted): of 20 topics at most 10 are stored. A
/// stored topic can still be replaced; one that was refused stays refused.
#[test]
fn max_retained_messages_bounds_the_store() {
    let broker = Broker::start_with(&["retainer.max_retained_messages=10"]);
    for i in 0..20 {
        publish_retained(&broker, &format!("lim/{i:02}"), Some("first"));
    }
    let stored = retained(&broker, "lim/#", "mqttv5");
    println!("stored {} of 20: {stored:?}", stored.len());
    assert!(
        (1..=10).contains(&stored.len()),
        "max_retained_messages=10, stored {}: {stored:?}",
        stored.len()
    );
    let kept = stored[0].split_once(' ').unwrap().0.to_owned();
    let refused = (0..20)
        .map(|i| format!("lim/{i:02}"))
        .find(|t| !stored.iter().any(|l| l.starts_with(&format!("{t} "))));
    publish_retained(&broker, &kept, Some("second"));
    if let Some(t) = &refused {
        publish_retained(&broker, t, Some("second"));
    }
    let after = retained(&broker, "lim/#", "mqttv5");
    assert_eq!(after.len(), stored.len(), "{after:?}");
    assert!(
        after.contains(&format!("{kept} second")),
        "replacing a stored topic at the limit: {after:?}"
    );
    if let Some(t) = &refused {
        assert!(
            !after.iter().any(|l| l.starts_with(&format!("{t} "))),
            "{t} was refused, then stored: {after:?}"
        );
    }
    broker.stop().assert_clean();
}
