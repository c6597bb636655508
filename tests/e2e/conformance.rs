//! Conformance scenarios modelled on the Eclipse Paho interoperability suite
//! (paho.mqtt.testing: `client_test.py` for MQTT 3.1.1, `client_test5.py` for MQTT 5), run
//! with paho-mqtt 2.2 against the broker with two shards.
//!
//! Each test starts its own broker and runs one scenario of `clients/conformance.py`
//! (`conformance.py HOST PORT SCENARIO PROTO TAG`), which asserts what the clients observe and
//! prints a JSON result; the test checks the main numbers of that result again and the
//! broker's clean exit. The kernel spreads a scenario's several connections over both shards.
//!
//! Scenarios 1 to 15 follow the Paho suite; 16 on cover the rest of the MQTT 5 feature set
//! and the broker's options for it (subscription options, identifiers, features switched
//! off, `$queue/` and the shared subscription strategies, CONNECT and CONNACK properties,
//! wills), some against a broker started with `--set` options ([`run_with`]). A few run
//! against a broker configured so that the scenario must fail ([`fails`]), to show it can.

use std::time::Duration;

use crate::harness::{Broker, args, python, python_run, unique};

/// Longest a scenario may run (the slowest take about 5 s).
const TIMEOUT: Duration = Duration::from_secs(40);

/// Runs `scenario` over `proto` ("5" or "311") against a fresh broker; returns the result
/// line after checking the broker stopped cleanly.
fn run(scenario: &str, proto: &str) -> serde_json::Value {
    run_with(scenario, proto, &[])
}

/// [`run`] against a broker started with `--set` options `sets`.
fn run_with(scenario: &str, proto: &str, sets: &[&str]) -> serde_json::Value {
    let broker = Broker::start_with(sets);
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

// 7. Overlapping subscriptions: one copy at the highest QoS with both identifiers (MQTT 5);
// one copy at the highest QoS (3.1.1, which the Paho 3.1.1 suite accepts besides one copy
// per subscription).

#[test]
fn overlapping_subscriptions_v5() {
    let r = run("overlapping", "5");
    assert_eq!(r["copies"], 1, "{r}");
    assert_eq!(r["qos"], 2, "{r}");
    assert_eq!(r["sub_ids"], json("[1, 2]"), "{r}");
}

#[test]
fn overlapping_subscriptions_v311() {
    let r = run("overlapping", "311");
    assert_eq!(r["copies"], 1, "{r}");
    assert_eq!(r["qos"], 2, "{r}");
    assert_eq!(r["sub_ids"], json("[]"), "{r}");
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

// The scenarios can fail: each of these runs against a broker configured so that the
// scenario's claim is false, and must report the failure.

/// Runs `scenario` against a broker with `sets`; asserts it fails with a message containing
/// `needle`.
fn fails(scenario: &str, proto: &str, sets: &[&str], needle: &str) {
    let broker = Broker::start_with(sets);
    let tag = unique("cfneg");
    let done = python("conformance.py", &args(&broker, &[&scenario, &proto, &tag])).finish(TIMEOUT);
    broker.stop().assert_clean();
    assert!(
        !done.status.success()
            && done
                .stdout
                .iter()
                .any(|l| l.contains("\"ok\": false") && l.contains(needle)),
        "the scenario should have failed with {needle:?}: {:?}\n{}",
        done.stdout,
        done.stderr
    );
}

#[test]
fn offline_queue_fails_without_qos0_queueing() {
    fails(
        "offline_queue",
        "5",
        &["mqtt.mqueue_store_qos0=false"],
        "queued messages",
    );
}

#[test]
fn sticky_scenario_fails_with_round_robin() {
    fails(
        "shared_sticky",
        "5",
        &[],
        "sticky: the 20 messages were split",
    );
}

#[test]
fn features_off_scenario_fails_with_features_on() {
    fails("features_off", "5", &[], "CONNACK availability properties");
}

// 16. Retain Handling 0/1/2, each subscribing twice to a topic with a retained message.

#[test]
fn retain_handling_v5() {
    let r = run("retain_handling", "5");
    assert_eq!(r["retained"], json("[2, 1, 0]"), "{r}");
    assert_eq!(r["live"], json("[1, 1, 1]"), "{r}");
}

// 17. Retain As Published: RETAIN kept on live delivery with RAP 1, cleared with RAP 0.

#[test]
fn retain_as_published_v5() {
    let r = run("retain_as_published", "5");
    assert_eq!(
        r["rap1"],
        json(r#"[["flagged", true], ["plain", false]]"#),
        "{r}"
    );
    assert_eq!(
        r["rap0"],
        json(r#"[["flagged", false], ["plain", false]]"#),
        "{r}"
    );
}

// 18. No Local: own messages not sent back on a No Local subscription.

#[test]
fn no_local_v5() {
    let r = run("no_local", "5");
    assert_eq!(
        r["received"],
        json(r#"[["off", "other"], ["off", "own"], ["on", "other"]]"#),
        "{r}"
    );
}

// 19. One Subscription Identifier on the messages of its subscription, none without.

#[test]
fn subscription_identifier_v5() {
    let r = run("subscription_identifier", "5");
    assert_eq!(r["ids"], json(r#"{"with": [42], "without": null}"#), "{r}");
}

// 20. Shared subscriptions, subscription identifiers and wildcards switched off: SUBACK 0x9E,
// 0xA1, 0xA2 and CONNACK availability 0.

#[test]
fn features_switched_off_are_refused_and_advertised_v5() {
    let r = run_with(
        "features_off",
        "5",
        &[
            "mqtt.shared_subscription=false",
            "mqtt.subscription_identifiers=false",
            "mqtt.wildcard_subscription=false",
        ],
    );
    assert_eq!(
        r["connack"],
        json(
            r#"{"SharedSubscriptionAvailable": 0, "SubscriptionIdentifierAvailable": 0,
                "WildcardSubscriptionAvailable": 0}"#
        ),
        "{r}"
    );
    assert_eq!(r["suback"], json("[158, 158, 161, 162, 162]"), "{r}");
}

// 21. `$queue/{filter}`: two members share the messages, each once.

fn queue(proto: &str) {
    let r = run("queue", proto);
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
fn queue_subscriptions_v5() {
    queue("5");
}

#[test]
fn queue_subscriptions_v311() {
    queue("311");
}

// 22. Strategy `sticky`: one member gets everything while it stays, the other after it left.

fn shared_sticky(proto: &str) {
    let r = run_with(
        "shared_sticky",
        proto,
        &["mqtt.shared_subscription_strategy=sticky"],
    );
    let mut counts: Vec<u64> = r["while_both"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [0, 20], "{r}");
    assert_eq!(r["after_leave"], 10, "{r}");
}

#[test]
fn shared_strategy_sticky_v5() {
    shared_sticky("5");
}

#[test]
fn shared_strategy_sticky_v311() {
    shared_sticky("311");
}

// 23. Strategy `hash_clientid`: each publisher's messages all go to one member.

#[test]
fn shared_strategy_hash_clientid_v5() {
    let r = run_with(
        "shared_hash_clientid",
        "5",
        &["mqtt.shared_subscription_strategy=hash_clientid"],
    );
    let spread = r["member_of_publisher"].as_object().unwrap();
    assert_eq!(spread.len(), 4, "{r}");
    assert!(
        spread.values().all(|m| m.as_array().unwrap().len() == 1),
        "{r}"
    );
}

// 24. A member that leaves without PUBACK: its QoS 1 message goes to the other member.

fn shared_redispatch(proto: &str) {
    let r = run("shared_redispatch", proto);
    assert_eq!(r["qos"], 1, "{r}");
}

#[test]
fn shared_redispatch_on_disconnect_v5() {
    shared_redispatch("5");
}

#[test]
fn shared_redispatch_on_disconnect_v311() {
    shared_redispatch("311");
}

// 25. The client's Maximum Packet Size: a larger message is not sent to it.

#[test]
fn client_maximum_packet_size_v5() {
    let r = run("client_max_packet", "5");
    assert_eq!(r["limited"], json("[5]"), "{r}");
    assert_eq!(r["unlimited"], json("[1000, 5]"), "{r}");
}

// 26. `mqtt.server_keepalive = 2`: Server Keep Alive in CONNACK, enforced (1.5 x 2 s).

#[test]
fn server_keepalive_v5() {
    let r = run_with("server_keepalive", "5", &["mqtt.server_keepalive=2"]);
    assert_eq!(r["server_keep_alive"], 2, "{r}");
    assert_eq!(r["reason"], 0x8d, "{r}");
    let after = r["after"].as_f64().unwrap();
    assert!((2.5..=4.5).contains(&after), "{r}");
}

// 27. Request Response Information: `mqtt.response_information` only when requested.

#[test]
fn response_information_v5() {
    let r = run_with(
        "response_information",
        "5",
        &["mqtt.response_information=some/prefix"],
    );
    assert_eq!(
        r["response_information"],
        json(r#"{"requested": "some/prefix", "declined": null, "silent": null}"#),
        "{r}"
    );
}

// 28. An Authentication Method in CONNECT: CONNACK 0x8C.

#[test]
fn authentication_method_is_refused_v5() {
    let r = run("auth_method", "5");
    assert_eq!(r["connack"], 0x8c, "{r}");
}

// 29. Wills: on takeover, on Keep Alive expiry, at the end of a session shorter than the will
// delay, with properties and RETAIN.

fn will_takeover(proto: &str) -> serde_json::Value {
    let r = run("will_takeover", proto);
    assert!(r["after"].as_f64().unwrap() < 5.0, "{r}");
    r
}

#[test]
fn will_on_takeover_v5() {
    let r = will_takeover("5");
    assert_eq!(r["first_end"], json("[142, true]"), "{r}");
}

#[test]
fn will_on_takeover_v311() {
    will_takeover("311");
}

fn will_keepalive(proto: &str) {
    let r = run("will_keepalive", proto);
    let after = r["after"].as_f64().unwrap();
    assert!((2.5..=6.0).contains(&after), "{r}");
}

#[test]
fn will_on_keepalive_expiry_v5() {
    will_keepalive("5");
}

#[test]
fn will_on_keepalive_expiry_v311() {
    will_keepalive("311");
}

#[test]
fn will_at_session_end_before_will_delay_v5() {
    let r = run("will_session_end", "5");
    let after = r["after"].as_f64().unwrap();
    assert!(
        (0.7..=5.0).contains(&after),
        "session expiry 1 s, will delay 10 s: {r}"
    );
}

#[test]
fn will_properties_and_retain_v5() {
    let r = run("will_properties", "5");
    assert_eq!(r["retain_flags"], json("[false, true]"), "{r}");
    for p in [&r["live"], &r["retained"]] {
        assert_eq!(p["ContentType"], "application/json", "{r}");
        assert_eq!(p["CorrelationData"], "0077696c6cff", "{r}");
        assert_eq!(p["PayloadFormatIndicator"], 1, "{r}");
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
