//! Conformance scenarios modelled on the Eclipse Paho interoperability suite
//! (paho.mqtt.testing: `client_test.py` for MQTT 3.1.1, `client_test5.py` for MQTT 5), run
//! with paho-mqtt 2.2 against the broker with two shards.
//!
//! Each test starts its own broker and runs one scenario of `clients/conformance.py`
//! (`conformance.py HOST PORT SCENARIO PROTO TAG`), which asserts what the clients observe and
//! prints a JSON result; the test checks the main numbers of that result again and the
//! broker's clean exit. The kernel spreads a scenario's several connections over both shards.

use std::time::Duration;

use crate::harness::{Broker, args, python, python_run, unique};

/// Longest a scenario may run (the slowest take about 5 s).
const TIMEOUT: Duration = Duration::from_secs(40);

/// Runs `scenario` over `proto` ("5" or "311") against a fresh broker; returns the result
/// line after checking the broker stopped cleanly.
fn run(scenario: &str, proto: &str) -> serde_json::Value {
    let broker = Broker::start();
    let tag = unique(&format!("cf{scenario}{proto}"));
    let r = python_run(
        "conformance.py",
        &args(&broker, &[&scenario, &proto, &tag]),
        TIMEOUT,
    );
    broker.stop().assert_clean();
    assert_eq!(r["scenario"], scenario, "{r}");
    assert_eq!(r["proto"], proto, "{r}");
    println!("{r}");
    r
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

// 1. Basic: subscribe, publish QoS 0/1/2 to oneself, receive the three.

fn basic(proto: &str) {
    let r = run("basic", proto);
    assert_eq!(
        r["received"],
        json(r#"[["qos 0", 0], ["qos 1", 1], ["qos 2", 2]]"#),
        "{r}"
    );
}

#[test]
fn basic_v5() {
    basic("5");
}

#[test]
fn basic_v311() {
    basic("311");
}

// 2. Retained messages: QoS 0/1/2 retained reach a new wildcard subscriber with RETAIN 1;
// cleared with empty payloads, none reach the next one.

fn retained(proto: &str) {
    let r = run("retained", proto);
    let got = r["retained"].as_array().unwrap();
    assert_eq!(got.len(), 3, "{r}");
    for (q, m) in got.iter().enumerate() {
        assert_eq!(m[1], format!("retained {q}"), "{r}");
        assert_eq!(m[2], q, "{r}");
        assert_eq!(m[3], true, "RETAIN flag: {r}");
    }
    assert_eq!(r["after_clear"], 0, "{r}");
}

#[test]
fn retained_messages_v5() {
    retained("5");
}

#[test]
fn retained_messages_v311() {
    retained("311");
}

// 3. Will messages: published when the socket drops, not after DISCONNECT; MQTT 5 Will Delay
// Interval 2 s, and a reconnection within the delay cancels the will.

#[test]
fn will_message_and_will_delay_v5() {
    let r = run("will", "5");
    assert_eq!(r["topics"], json(r#"["delayed", "dying"]"#), "{r}");
    let delayed = r["delayed_after"].as_f64().unwrap();
    assert!(
        (1.7..=6.0).contains(&delayed),
        "will delay 2 s, published after {delayed} s: {r}"
    );
    assert!(r["immediate_after"].as_f64().unwrap() < 5.0, "{r}");
}

#[test]
fn will_message_v311() {
    let r = run("will", "311");
    assert_eq!(r["topics"], json(r#"["dying"]"#), "{r}");
}

// 4. Zero-length client id.

#[test]
fn zero_length_client_id_v311() {
    let r = run("zero_length_id", "311");
    assert_eq!(r["clean_accepted"], true, "{r}");
    assert_eq!(r["persistent_refused"], 2, "{r}");
}

#[test]
fn zero_length_client_id_v5_gets_assigned_identifier() {
    let r = run("zero_length_id", "5");
    let ids = r["assigned"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{r}");
    assert_ne!(ids[0], ids[1], "{r}");
    assert!(ids.iter().all(|i| !i.as_str().unwrap().is_empty()), "{r}");
}

// 5. Offline message queueing (QoS 0 too: mqtt.mqueue_store_qos0 defaults to true).

fn offline_queue(proto: &str) {
    let r = run("offline_queue", proto);
    assert_eq!(r["session_present"], true, "{r}");
    assert_eq!(
        r["received"],
        json(
            r#"[["0", "offline qos 0", 0], ["1", "offline qos 1", 1], ["2", "offline qos 2", 2]]"#
        ),
        "{r}"
    );
}

#[test]
fn offline_message_queueing_v5() {
    offline_queue("5");
}

#[test]
fn offline_message_queueing_v311() {
    offline_queue("311");
}

// 6. Redelivery on reconnect: unacknowledged QoS 1 messages come again with DUP 1.

fn redelivery(proto: &str) {
    let r = run("redelivery", proto);
    assert_eq!(
        r["redelivered"],
        json(r#"[["m0", true], ["m1", true], ["m2", true]]"#),
        "{r}"
    );
}

#[test]
fn redelivery_on_reconnect_v5() {
    redelivery("5");
}

#[test]
fn redelivery_on_reconnect_v311() {
    redelivery("311");
}

// 7. Overlapping subscriptions: one copy at the highest QoS with both identifiers.

#[test]
fn overlapping_subscriptions_v5() {
    let r = run("overlapping", "5");
    assert_eq!(r["copies"], 1, "{r}");
    assert_eq!(r["qos"], 2, "{r}");
    assert_eq!(r["sub_ids"], json("[1, 2]"), "{r}");
}

// 8. Keep Alive 2 s, silent client: closed after 1.5 x 2 s.

fn keepalive(proto: &str) -> serde_json::Value {
    let r = run("keepalive", proto);
    let after = r["after"].as_f64().unwrap();
    assert!(
        (2.0..=6.0).contains(&after),
        "Keep Alive 2 s x 1.5: the broker acted after {after} s: {r}"
    );
    r
}

#[test]
fn keepalive_v5() {
    let r = keepalive("5");
    assert_eq!(r["reason"], 0x8d, "{r}");
}

#[test]
fn keepalive_v311() {
    let r = keepalive("311");
    assert_eq!(r["reason"], serde_json::Value::Null, "{r}");
}

// 9. Flow control: Receive Maximum 2.

#[test]
fn flow_control_receive_maximum_v5() {
    let r = run("flow_control", "5");
    assert_eq!(r["before_ack"], 2, "{r}");
    assert_eq!(r["max_outstanding"], 2, "{r}");
    assert_eq!(r["received"], 10, "{r}");
}

// 10. Subscribe failure: 0x8F for an invalid filter, the valid one granted.

#[test]
fn subscribe_failure_v5() {
    let r = run("subscribe_failure", "5");
    assert_eq!(r["suback"], json("[1, 143]"), "{r}");
}

// 11. PUBLISH properties forwarded unchanged.

#[test]
fn publish_properties_forwarded_v5() {
    let r = run("properties", "5");
    let got = r["received"].as_array().unwrap();
    assert_eq!(got.len(), 3, "{r}");
    for p in got {
        assert_eq!(p["PayloadFormatIndicator"], 1, "{r}");
        assert_eq!(p["ContentType"], "text/plain; charset=utf-8", "{r}");
        assert_eq!(p["CorrelationData"], "0001636f7272ff", "{r}");
        assert_eq!(
            p["UserProperty"],
            json(r#"[["k1", "v1"], ["k2", "v2"], ["k1", "v3"]]"#),
            "{r}"
        );
        assert!(
            p["ResponseTopic"].as_str().unwrap().ends_with("/reply"),
            "{r}"
        );
    }
}

// 12. Message expiry for an offline session.

#[test]
fn message_expiry_v5() {
    let r = run("message_expiry", "5");
    assert_eq!(r["short_delivered"], 0, "{r}");
    let remaining = r["remaining"].as_u64().unwrap();
    assert!(
        (1..=59).contains(&remaining),
        "remaining expiry {remaining}: {r}"
    );
}

// 13. Shared subscriptions.

fn shared(proto: &str) {
    let r = run("shared", proto);
    let counts: Vec<u64> = r["member_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 20, "{r}");
    assert!(counts.iter().all(|&c| c > 0), "{r}");
    assert_eq!(r["plain"], 20, "{r}");
}

#[test]
fn shared_subscriptions_v5() {
    shared("5");
}

#[test]
fn shared_subscriptions_v311() {
    shared("311");
}

// 14. Topic alias from the client.

#[test]
fn topic_alias_from_client_v5() {
    let r = run("topic_alias", "5");
    let got: Vec<(String, String)> = r["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let t = m[0].as_str().unwrap();
            (
                t.rsplit('/').next().unwrap().to_owned(),
                m[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("one", "define one"),
        ("one", "alias one"),
        ("two", "redefine two"),
        ("two", "alias two"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(got, want, "{r}");
}

// 15. `$` topics: not matched by `#`, matched by `$SYS/#`.

fn dollar_topics(proto: &str) {
    let r = run("dollar_topics", proto);
    assert_eq!(r["dollar_on_hash"], 0, "{r}");
    let topic = r["event_topic"].as_str().unwrap();
    assert!(
        topic.starts_with("$SYS/brokers/") && topic.ends_with("-visitor/connected"),
        "{r}"
    );
}

#[test]
fn dollar_topics_v5() {
    dollar_topics("5");
}

#[test]
fn dollar_topics_v311() {
    dollar_topics("311");
}

// The scenarios can fail: with QoS 0 queueing switched off, the offline queueing scenario
// reports the missing message.

#[test]
fn offline_queue_fails_without_qos0_queueing() {
    let broker = Broker::start_with(&["mqtt.mqueue_store_qos0=false"]);
    let tag = unique("cfneg");
    let done = python(
        "conformance.py",
        &args(&broker, &[&"offline_queue", &"5", &tag]),
    )
    .finish(TIMEOUT);
    broker.stop().assert_clean();
    assert!(
        !done.status.success()
            && done
                .stdout
                .iter()
                .any(|l| l.contains("\"ok\": false") && l.contains("queued messages")),
        "the scenario should have failed: {:?}\n{}",
        done.stdout,
        done.stderr
    );
}
