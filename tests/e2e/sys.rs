//! `$SYS` topics through the real broker: the retained version, the client connected and
//! disconnected events, and the periodic uptime, datetime and statistics, seen by
//! mosquitto_sub.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// The periodic `$SYS` figures the docs list (docs/mqtt-implementation.md, `$SYS` topics).
const STATS: [&str; 15] = [
    "stats/connections/count",
    "stats/sessions/count",
    "stats/subscriptions/count",
    "stats/retained/count",
    "stats/topics/count",
    "metrics/messages/received",
    "metrics/messages/sent",
    "metrics/messages/dropped",
    "metrics/messages/retransmitted",
    "metrics/packets/received",
    "metrics/packets/sent",
    "metrics/bytes/received",
    "metrics/bytes/sent",
    "metrics/client/connected",
    "metrics/client/disconnected",
];

/// Reads `$SYS/brokers/{node}/{path} {value}` lines from `sub` into `seen` (every value of
/// each path, in order) until `done(seen)` or the deadline; panics with what it saw then.
fn read_sys(
    sub: &mut Proc,
    seen: &mut HashMap<String, Vec<String>>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&HashMap<String, Vec<String>>) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        let Some(line) = sub.next_line(deadline) else {
            panic!("{what}: not within {timeout:?}; seen {seen:?}");
        };
        let Some(rest) = line.strip_prefix("$SYS/brokers/") else {
            continue;
        };
        let Some((_node, rest)) = rest.split_once('/') else {
            continue;
        };
        if let Some((path, value)) = rest.split_once(' ') {
            seen.entry(path.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
}

fn last_number(seen: &HashMap<String, Vec<String>>, path: &str) -> Option<u64> {
    seen.get(path)?.last()?.parse().ok()
}

#[test]
fn statistics_and_uptime_are_published_every_interval() {
    let broker = Broker::start_with(&[
        "sys_topics.sys_msg_interval=1s",
        "sys_topics.sys_heartbeat_interval=1s",
    ]);
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-v"])
        .args(["-i", &unique("stats"), "-t", "$SYS/brokers/+/uptime"])
        .args(["-t", "$SYS/brokers/+/datetime"])
        .args([
            "-t",
            "$SYS/brokers/+/stats/#",
            "-t",
            "$SYS/brokers/+/metrics/#",
        ])
        .args(["-W", "30"]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    let mut seen = HashMap::new();
    // Every figure, and two heartbeats, within a few seconds of 1 s intervals.
    read_sys(
        &mut sub,
        &mut seen,
        Duration::from_secs(6),
        "every statistic, the datetime and a growing uptime",
        |s| {
            s.get("uptime")
                .is_some_and(|u| u.len() >= 2 && u.first() != u.last())
                && s.contains_key("datetime")
                && STATS.iter().all(|p| s.contains_key(*p))
        },
    );
    let uptimes: Vec<u64> = seen["uptime"].iter().map(|u| u.parse().unwrap()).collect();
    assert!(
        uptimes.windows(2).all(|w| w[0] <= w[1])
            && uptimes.first() < uptimes.last()
            && uptimes.iter().all(|&u| u < 60),
        "uptime values {uptimes:?}"
    );
    let datetime = seen["datetime"].last().unwrap();
    assert!(
        datetime.len() >= 20 && datetime.starts_with("20") && datetime.ends_with('Z'),
        "datetime {datetime:?}"
    );
    for path in STATS {
        assert!(
            seen[path].iter().all(|v| v.parse::<u64>().is_ok()),
            "{path}: {:?}",
            seen[path]
        );
    }
    // The subscriber itself is connected, has a session and four subscriptions (a shard's
    // counters reach shard 0 once per interval: the figures may lag one interval).
    let least = [
        ("stats/connections/count", 1),
        ("stats/sessions/count", 1),
        ("stats/subscriptions/count", 4),
        ("metrics/client/connected", 1),
        ("metrics/packets/received", 2),
        ("metrics/bytes/received", 20),
    ];
    read_sys(
        &mut sub,
        &mut seen,
        Duration::from_secs(5),
        "the subscriber counted",
        |s| {
            least
                .iter()
                .all(|&(p, n)| last_number(s, p).is_some_and(|v| v >= n))
        },
    );
    // Five PUBLISH packets: metrics/messages/received grows by at least five.
    let before = last_number(&seen, "metrics/messages/received").unwrap();
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1"])
        .args(["-i", &unique("counted"), "-t", "sys/counted", "-l"]);
    let mut publisher = Proc::spawn("mosquitto_pub", cmd).unwrap();
    for i in 0..5 {
        publisher.send_line(&format!("m{i}"));
    }
    assert!(publisher.finish(TIMEOUT).status.success());
    read_sys(
        &mut sub,
        &mut seen,
        Duration::from_secs(5),
        "metrics/messages/received after 5 more",
        |s| last_number(s, "metrics/messages/received").is_some_and(|v| v >= before + 5),
    );
    let after = last_number(&seen, "metrics/messages/received").unwrap();
    println!("metrics/messages/received {before} -> {after}; uptimes {uptimes:?}");
    drop(sub);
    broker.stop().assert_clean();
}
