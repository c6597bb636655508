//! The mosquitto command-line clients against the broker: `mosquitto_sub -C N` on `t/#`, fed
//! by `mosquitto_pub -m` and `mosquitto_pub -l`, across protocol versions and QoS levels; the
//! subscriber's output must be exactly the messages published, in order.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

/// Lines for `mosquitto_pub -l`: spaces, non-ASCII text, a line of 100 bytes (all of them stay below the
/// size of one socket read; `mosquitto_large_payloads` covers larger ones).
fn lines() -> Vec<String> {
    vec![
        "first line".to_owned(),
        "second line, with  two spaces".to_owned(),
        "ünïcödé ✓ 😀".to_owned(),
        pattern(100),
    ]
}

/// `len` letters a..z, repeated.
fn pattern(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// Runs one `mosquitto_pub` (with `-l` when `stdin_lines` is given) to completion.
fn publish(broker: &Broker, version: &str, extra: &[&str], stdin_lines: Option<&[String]>) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", version])
        .args(["-i", &unique("mpub")])
        .args(extra);
    if stdin_lines.is_some() {
        cmd.arg("-l");
    }
    let mut p = Proc::spawn("mosquitto_pub", cmd).unwrap();
    for line in stdin_lines.unwrap_or_default() {
        p.send_line(line);
    }
    let done = p.finish(TIMEOUT);
    assert!(
        done.status.success(),
        "mosquitto_pub {extra:?} failed ({}): {}",
        done.status,
        done.stderr
    );
}

/// `mosquitto_sub -V SUB_VERSION -q SUB_QOS -t t/#` against publishers of `PUB_VERSION`.
/// Returns the QoS of every PUBLISH the subscriber received (from its debug output).
fn sub_and_pub(sub_version: &str, sub_qos: u8, pub_version: &str) -> Vec<u8> {
    let broker = Broker::start();
    let expected: Vec<String> = std::iter::once("t/a hello".to_owned())
        .chain(lines().into_iter().map(|l| format!("t {l}")))
        .chain(["t/b/c exactly once".to_owned(), "t/a last".to_owned()])
        .collect();
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", sub_version])
        .args(["-i", &unique("msub"), "-t", "t/#", "-v", "-d"])
        .args([
            "-q",
            &sub_qos.to_string(),
            "-C",
            &expected.len().to_string(),
        ]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    // -d prints the SUBACK: from then on the subscription is in place.
    sub.wait_line(TIMEOUT, "SUBACK from mosquitto_sub", |l| {
        l.contains("received SUBACK")
    });

    publish(
        &broker,
        pub_version,
        &["-t", "t/a", "-q", "0", "-m", "hello"],
        None,
    );
    publish(
        &broker,
        pub_version,
        &["-t", "t", "-q", "1"],
        Some(&lines()),
    );
    publish(
        &broker,
        pub_version,
        &["-t", "other/x", "-q", "1", "-m", "not for t/#"],
        None,
    );
    publish(
        &broker,
        pub_version,
        &["-t", "t/b/c", "-q", "2", "-m", "exactly once"],
        None,
    );
    publish(
        &broker,
        pub_version,
        &["-t", "t/a", "-q", "2", "-m", "last"],
        None,
    );

    let done = sub.finish(TIMEOUT);
    assert!(
        done.status.success(),
        "mosquitto_sub failed ({}): {}\n{}",
        done.status,
        done.stdout.join("\n"),
        done.stderr
    );
    let messages: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid"))
        .collect();
    assert_eq!(
        messages,
        expected.iter().collect::<Vec<_>>(),
        "mosquitto_sub output differs; full output:\n{}",
        done.stdout.join("\n")
    );
    let qos: Vec<u8> = done
        .stdout
        .iter()
        .filter_map(|l| {
            let rest = l.split("received PUBLISH (").nth(1)?;
            let q = rest.split(", q").nth(1)?.chars().next()?;
            q.to_digit(10).map(|d| d as u8)
        })
        .collect();
    assert_eq!(qos.len(), expected.len(), "{}", done.stdout.join("\n"));
    let stopped = broker.stop();
    stopped.assert_clean();
    // 1 subscriber and 5 publishers; every publish reached the broker once.
    assert_eq!(stopped.total(|s| s.established), 6, "{:?}", stopped.shards);
    assert_eq!(
        stopped.total(|s| s.received),
        expected.len() as u64 + 1,
        "{:?}",
        stopped.shards
    );
    qos
}

#[test]
fn mosquitto_sub_v311_from_mosquitto_pub_v5() {
    let qos = sub_and_pub("mqttv311", 2, "mqttv5");
    // Published at QoS 0, 1 x4, 2, 2; the subscription grants 2: delivered as published.
    assert_eq!(qos, [0, 1, 1, 1, 1, 2, 2]);
}

#[test]
fn mosquitto_sub_v5_from_mosquitto_pub_v311() {
    let qos = sub_and_pub("mqttv5", 2, "mqttv311");
    assert_eq!(qos, [0, 1, 1, 1, 1, 2, 2]);
}

#[test]
fn mosquitto_sub_v5_qos1_downgrades() {
    // A QoS 1 subscription caps delivery at QoS 1.
    let qos = sub_and_pub("mqttv5", 1, "mqttv5");
    assert_eq!(qos, [0, 1, 1, 1, 1, 1, 1]);
}

#[test]
fn mosquitto_sub_v311_qos0_downgrades() {
    let qos = sub_and_pub("mqttv311", 0, "mqttv311");
    assert_eq!(qos, [0; 7]);
}

/// Payloads larger than one socket read: `mosquitto_pub -l` lines of 600 bytes to 200 KB.
#[test]
fn mosquitto_large_payloads() {
    let broker = Broker::start();
    let sizes = [600, 3000, 70_000, 200_000];
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", "mqttv5"])
        .args(["-i", &unique("msub"), "-t", "big/#", "-d", "-q", "1"])
        .args(["-C", &sizes.len().to_string()]);
    let mut sub = Proc::spawn("mosquitto_sub", cmd).unwrap();
    sub.wait_line(TIMEOUT, "SUBACK from mosquitto_sub", |l| {
        l.contains("received SUBACK")
    });
    let lines: Vec<String> = sizes.iter().map(|&n| pattern(n)).collect();
    publish(&broker, "mqttv5", &["-t", "big/l", "-q", "1"], Some(&lines));
    let done = sub.finish(TIMEOUT);
    let got: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid"))
        .collect();
    assert!(
        done.status.success() && got == lines.iter().collect::<Vec<_>>(),
        "mosquitto_sub ({}) got {} of {} payloads, lengths {:?}",
        done.status,
        got.len(),
        lines.len(),
        got.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    broker.stop().assert_clean();
}
