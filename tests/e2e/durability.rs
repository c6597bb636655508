//! Durable sessions against `kill -9`: the mosquitto clients subscribe with persistent sessions
//! and go away, a publisher gets every one of 10,000 messages acknowledged, the broker is
//! killed and started again on the same data directory, and each subscriber gets every message
//! (QoS 1 at least once, QoS 2 exactly once).

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, scratch_dir, unique};

const TIMEOUT: Duration = Duration::from_secs(60);
const PER_QOS: usize = 5_000;

/// The broker's settings here: queues long enough for every message.
const SETS: &[&str] = &["mqtt.max_mqueue_len=20000"];

/// `mosquitto_sub` for the persistent session `id` on both topics at QoS 2.
fn sub_cmd(broker: &Broker, version: &str, id: &str) -> std::process::Command {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", version])
        .args([
            "-c", "-i", id, "-q", "2", "-t", "dur/q1", "-t", "dur/q2", "-v",
        ]);
    if version == "mqttv5" {
        cmd.args(["-x", "3600"]);
    }
    cmd
}

/// Subscribes the persistent session and leaves (`-E`: exit after SUBACK).
fn subscribe_and_leave(broker: &Broker, version: &str, id: &str) {
    let mut cmd = sub_cmd(broker, version, id);
    cmd.arg("-E");
    let done = Proc::spawn("mosquitto_sub", cmd).unwrap().finish(TIMEOUT);
    assert!(done.status.success(), "{}", done.stderr);
}

/// Publishes `PER_QOS` numbered messages at `qos` to `topic`; mosquitto_pub exits 0 once every
/// one is acknowledged.
fn publish_all(broker: &Broker, topic: &str, qos: &str) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", "mqttv5"])
        .args(["-i", &unique("dpub"), "-t", topic, "-q", qos, "-l"]);
    let mut p = Proc::spawn("mosquitto_pub", cmd).unwrap();
    for i in 0..PER_QOS {
        p.send_line(&format!("{topic} {i}"));
    }
    let done = p.finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_pub: {}", done.stderr);
}

/// Everything session `id` receives until `count` messages (or a quiet `wait_s` seconds):
/// (topic, payload) lines.
fn collect(
    broker: &Broker,
    version: &str,
    id: &str,
    count: Option<usize>,
    wait_s: u32,
) -> Vec<String> {
    let mut cmd = sub_cmd(broker, version, id);
    if let Some(n) = count {
        cmd.args(["-C", &n.to_string()]);
    }
    cmd.args(["-W", &wait_s.to_string()]);
    let done = Proc::spawn("mosquitto_sub", cmd)
        .unwrap()
        .finish(Duration::from_secs(u64::from(wait_s) + 30));
    done.stdout
}

#[test]
fn offline_persistent_sessions_keep_every_acknowledged_message_through_kill_9() {
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), SETS);
    let subs = [("mqttv5", unique("dsub5")), ("mqttv311", unique("dsub3"))];
    for (v, id) in &subs {
        subscribe_and_leave(&broker, v, id);
    }
    publish_all(&broker, "dur/q1", "1");
    publish_all(&broker, "dur/q2", "2");
    let log = broker.kill();
    let broker = Broker::start_in(dir.clone(), SETS);
    assert!(
        broker.log_text().contains("recovered 2 sessions"),
        "{}\n--- before the kill ---\n{log}",
        broker.log_text()
    );
    for (v, id) in &subs {
        let mut lines = collect(&broker, v, id, Some(2 * PER_QOS), 40);
        // QoS 1 duplicates may leave some behind the count: a second connection gets them.
        lines.extend(collect(&broker, v, id, None, 3));
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for l in &lines {
            *seen.entry(l.as_str()).or_default() += 1;
        }
        for topic in ["dur/q1", "dur/q2"] {
            let missing: Vec<usize> = (0..PER_QOS)
                .filter(|i| !seen.contains_key(format!("{topic} {topic} {i}").as_str()))
                .collect();
            assert!(
                missing.is_empty(),
                "{v} {topic}: {} of {PER_QOS} missing (first {:?}); {} lines",
                missing.len(),
                &missing[..missing.len().min(5)],
                lines.len()
            );
        }
        let dup_q2 = seen
            .iter()
            .filter(|(l, n)| l.starts_with("dur/q2 ") && **n > 1)
            .count();
        assert_eq!(dup_q2, 0, "{v}: QoS 2 delivered exactly once");
        let dup_q1: usize = seen
            .iter()
            .filter(|(l, _)| l.starts_with("dur/q1 "))
            .map(|(_, n)| n - 1)
            .sum();
        eprintln!("{v}: {} lines, {dup_q1} QoS 1 duplicates", lines.len());
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_online_subscriber_loses_no_acknowledged_message_when_the_broker_is_killed_mid_stream() {
    use crate::harness::{args, python, script_result};
    let dir = scratch_dir();
    let tag = unique("online");
    let broker = Broker::start_in(dir.clone(), SETS);
    let mut sub = python("durable_online.py", &args(&broker, &[&"sub1", &tag]));
    sub.wait_line(TIMEOUT, "the subscriber's SUBACK", |l| {
        l.contains("subscribed")
    });
    let mut publisher = python(
        "durable_online.py",
        &args(&broker, &[&"pub", &tag, &200_000]),
    );
    // Mid-stream: a few thousand acknowledged, many more to come.
    publisher.wait_line(TIMEOUT, "3,000 acknowledgements", |l| {
        l.contains("\"acked\"")
            && l.split("\"n\": ")
                .nth(1)
                .and_then(|n| n.trim_end_matches('}').trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 3000)
    });
    let _ = broker.kill();
    let published = script_result("durable_online.py", &publisher.finish(TIMEOUT));
    let before = script_result("durable_online.py", &sub.finish(TIMEOUT));
    let broker = Broker::start_in(dir.clone(), SETS);
    let after = script_result(
        "durable_online.py",
        &python("durable_online.py", &args(&broker, &[&"sub2", &tag])).finish(TIMEOUT),
    );
    let acked: Vec<u64> = published["acked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    let mut got = std::collections::HashSet::new();
    for side in [&before, &after] {
        for v in side["received"].as_array().unwrap() {
            got.insert(v.as_str().unwrap().parse::<u64>().unwrap());
        }
    }
    let lost: Vec<u64> = acked.iter().copied().filter(|n| !got.contains(n)).collect();
    assert!(acked.len() >= 3000, "{} acknowledged", acked.len());
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost (first {:?}); received {} before the kill and {} after",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)],
        before["received"].as_array().map_or(0, Vec::len),
        after["received"].as_array().map_or(0, Vec::len)
    );
    eprintln!(
        "acknowledged {} of {} sent; received {} before the kill, {} after",
        acked.len(),
        published["sent"],
        before["received"].as_array().map_or(0, Vec::len),
        after["received"].as_array().map_or(0, Vec::len)
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retained_messages_and_delayed_publishes_survive_kill_9() {
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), SETS);
    let publish = |broker: &Broker, args: &[&str]| {
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
        .args(args);
        let done = Proc::spawn("mosquitto_pub", cmd).unwrap().finish(TIMEOUT);
        assert!(done.status.success(), "{}", done.stderr);
    };
    publish(&broker, &["-r", "-t", "kept/a", "-m", "retained a"]);
    publish(&broker, &["-r", "-t", "kept/b", "-m", "retained b"]);
    publish(&broker, &["-r", "-t", "kept/c", "-m", "cleared"]);
    publish(&broker, &["-r", "-t", "kept/c", "-n"]);
    publish(&broker, &["-t", "$delayed/4/later/x", "-m", "delayed"]);
    let _ = broker.kill();
    let broker = Broker::start_in(dir.clone(), SETS);
    let sub = |broker: &Broker, topic: &str, n: usize, wait: &str| {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", "mqttv5"])
            .args(["-t", topic, "-v", "-C", &n.to_string(), "-W", wait]);
        let done = Proc::spawn("mosquitto_sub", cmd).unwrap().finish(TIMEOUT);
        let mut lines = done.stdout;
        lines.sort();
        lines
    };
    assert_eq!(
        sub(&broker, "kept/#", 2, "5"),
        ["kept/a retained a", "kept/b retained b"]
    );
    // Due 4 s after it was published: within the wait, after the restart.
    assert_eq!(sub(&broker, "later/#", 1, "10"), ["later/x delayed"]);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_data_directory_is_reported_and_the_rest_recovered() {
    use crate::harness::BROKER;
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), SETS);
    let id = unique("dmg");
    subscribe_and_leave(&broker, "mqttv5", &id);
    publish_all(&broker, "dur/q1", "1");
    let _ = broker.kill();
    // Flip a byte in the middle of the log that holds the messages.
    let storage = dir.join("storage");
    let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir(&storage)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect();
    logs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let victim = logs.last().unwrap().clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    // `broker data check` names the file and the offset, and exits 1.
    let check = std::process::Command::new(BROKER)
        .args(["data", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{text}");
    assert!(
        text.contains("skipped")
            && text.contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{text}"
    );
    // The broker starts, says what it skipped, and the session gets the rest.
    let broker = Broker::start_in(dir.clone(), SETS);
    let log = broker.log_text();
    assert!(
        log.contains("recovery:") && log.contains("skipped"),
        "{log}"
    );
    let lines = collect(&broker, "mqttv5", &id, None, 5);
    let got = lines.iter().filter(|l| l.starts_with("dur/q1 ")).count();
    assert!(
        (PER_QOS - 10..PER_QOS).contains(&got),
        "{got} of {PER_QOS} recovered: one damaged record loses at most a few messages"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_that_expires_while_the_broker_is_down_is_gone_after_the_restart() {
    use crate::raw;
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), SETS);
    let short = unique("short");
    let long = unique("long");
    for (id, expiry) in [(&short, 1u32), (&long, 3600)] {
        let (mut c, present) =
            raw::open(broker.addr(), &raw::connect_v5(id, 60, false, Some(expiry)));
        assert!(!present);
        c.send(&raw::subscribe(true, 1, "exp/t", 1)).unwrap();
        let _ = c.expect("SUBACK", Duration::from_secs(5));
    }
    let _ = broker.kill();
    // The short session's expiry (1 s after its connection ended) passes while no broker runs.
    std::thread::sleep(Duration::from_millis(1500));
    let broker = Broker::start_in(dir.clone(), SETS);
    let (_c, present) = raw::open(broker.addr(), &raw::connect_v5(&short, 60, false, Some(1)));
    assert!(!present, "the expired session is gone");
    let (_c, present) = raw::open(
        broker.addr(),
        &raw::connect_v5(&long, 60, false, Some(3600)),
    );
    assert!(present, "the other one is there");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn durable_sessions_on_the_epoll_driver() {
    // Where io_uring is blocked the log's file operations run on a helper thread.
    const EPOLL: &[&str] = &["mqtt.max_mqueue_len=20000", "node.driver=epoll"];
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), EPOLL);
    assert!(
        broker.log_text().contains("epoll driver"),
        "{}",
        broker.log_text()
    );
    let id = unique("epoll");
    subscribe_and_leave(&broker, "mqttv5", &id);
    publish_all(&broker, "dur/q2", "2");
    let _ = broker.kill();
    let broker = Broker::start_in(dir.clone(), EPOLL);
    let lines = collect(&broker, "mqttv5", &id, Some(PER_QOS), 30);
    let distinct: std::collections::HashSet<&String> = lines.iter().collect();
    assert_eq!((lines.len(), distinct.len()), (PER_QOS, PER_QOS));
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
