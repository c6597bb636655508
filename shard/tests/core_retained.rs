//! Retained messages (3.3.1.3): stored on the topic's owner shard, replaced, cleared by an
//! empty payload, delivered on subscribe per Retain Handling, gathered from every shard for
//! wildcard filters, with expiry and the store's limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{ProtocolVersion, Publish, QoS, RetainHandling};
use sim::{ClientId, Sim, opts, settings};

fn retain(sim: &mut Sim, c: ClientId, topic: &str, payload: &str, qos: QoS) {
    let mut p = Publish::new(topic.to_string(), payload.to_string());
    p.qos = qos;
    p.retain = true;
    if qos == QoS::AtMostOnce {
        sim.send_publish_with(c, p);
        sim.drive();
    } else {
        sim.publish_with(c, p);
    }
}

fn got(sim: &mut Sim, c: ClientId) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = sim
        .received(c)
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                String::from_utf8(p.payload.to_vec()).unwrap(),
                p.retain,
            )
        })
        .collect();
    v.sort();
    v
}

fn r(t: &str, p: &str) -> (String, String, bool) {
    (t.to_string(), p.to_string(), true)
}

#[test]
fn stored_replaced_cleared_and_gathered_from_every_shard() {
    let mut sim = Sim::new(4, settings());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    for i in 0..20 {
        retain(&mut sim, p, &format!("r/{i}"), "v1", QoS::AtLeastOnce);
    }
    retain(&mut sim, p, "r/3", "v2", QoS::AtLeastOnce);
    retain(&mut sim, p, "r/4", "", QoS::AtLeastOnce);
    let held: usize = (0..4).map(|s| sim.shard(s).retained_count()).sum();
    assert_eq!(held, 19);
    assert!(
        (0..4)
            .filter(|&s| sim.shard(s).retained_count() > 0)
            .count()
            > 1,
        "spread"
    );

    let (s, _) = sim.connect(3, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "r/+", QoS::AtLeastOnce);
    let all = got(&mut sim, s);
    assert_eq!(all.len(), 19);
    assert!(all.contains(&r("r/3", "v2")));
    assert!(!all.iter().any(|(t, _, _)| t == "r/4"));
    assert!(
        all.iter().all(|(_, _, retain)| *retain),
        "RETAIN set on subscribe delivery"
    );

    // Exact filter: one owner.
    let (s2, _) = sim.connect(1, ProtocolVersion::V3_1_1, "sub2", true, 0);
    sim.subscribe(s2, "r/7", QoS::AtMostOnce);
    assert_eq!(got(&mut sim, s2), [r("r/7", "v1")]);
}

#[test]
fn live_delivery_keeps_retain_only_with_retain_as_published() {
    let mut sim = Sim::new(2, settings());
    let (plain, _) = sim.connect(1, ProtocolVersion::V5, "plain", true, 0);
    sim.subscribe(plain, "x/#", QoS::AtLeastOnce);
    let (rap, _) = sim.connect(1, ProtocolVersion::V5, "rap", true, 0);
    let mut o = opts(QoS::AtLeastOnce);
    o.retain_as_published = true;
    sim.subscribe_with(rap, &[("x/#", o)], None);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "x/1", "live", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, plain), [("x/1".into(), "live".into(), false)]);
    assert_eq!(got(&mut sim, rap), [r("x/1", "live")]);
}

#[test]
fn retain_handling_0_1_2() {
    let mut sim = Sim::new(2, settings());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "h/1", "x", QoS::AtMostOnce);
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    let with = |rh| {
        let mut o = opts(QoS::AtLeastOnce);
        o.retain_handling = rh;
        o
    };
    sim.subscribe_with(s, &[("h/+", with(RetainHandling::DoNotSend))], None);
    assert!(got(&mut sim, s).is_empty(), "2: never");
    sim.subscribe_with(s, &[("h/#", with(RetainHandling::SendIfNew))], None);
    assert_eq!(got(&mut sim, s).len(), 1, "1: new subscription");
    sim.subscribe_with(s, &[("h/#", with(RetainHandling::SendIfNew))], None);
    assert!(got(&mut sim, s).is_empty(), "1: existing subscription");
    sim.subscribe_with(s, &[("h/#", with(RetainHandling::SendAtSubscribe))], None);
    assert_eq!(got(&mut sim, s).len(), 1, "0: every time");
}

#[test]
fn qos_is_the_lower_of_message_and_subscription() {
    let mut sim = Sim::new(2, settings());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "q/2", "x", QoS::ExactlyOnce);
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "q/2", QoS::AtLeastOnce);
    let r = sim.received(s);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].qos, QoS::AtLeastOnce);
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let mut sim = Sim::new(2, settings());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "$app/x", "x", QoS::AtLeastOnce);
    retain(&mut sim, p, "app/x", "y", QoS::AtLeastOnce);
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "#", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("app/x", "y")]);
    sim.subscribe(s, "$app/#", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("$app/x", "x")]);
}

#[test]
fn message_expiry_and_store_expiry() {
    let mut st = settings();
    st.retained_expiry = Duration::from_secs(100);
    let mut sim = Sim::new(2, st);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let mut m = Publish::new("e/own", "x");
    m.qos = QoS::AtLeastOnce;
    m.retain = true;
    m.properties.message_expiry_interval = Some(10);
    sim.publish_with(p, m);
    retain(&mut sim, p, "e/store", "y", QoS::AtLeastOnce);
    sim.advance(Duration::from_secs(5));
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "e/#", QoS::AtLeastOnce);
    let first = sim.received(s);
    assert_eq!(first.len(), 2);
    let own = first.iter().find(|p| p.topic == "e/own").unwrap();
    assert_eq!(
        own.properties.message_expiry_interval,
        Some(5),
        "remaining lifetime"
    );
    assert_eq!(
        first
            .iter()
            .find(|p| p.topic == "e/store")
            .unwrap()
            .properties
            .message_expiry_interval,
        None,
        "the store's own limit is not sent as Message Expiry"
    );
    sim.advance(Duration::from_secs(10));
    sim.subscribe(s, "e/#", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("e/store", "y")], "own expiry passed");
    sim.advance(Duration::from_secs(100));
    sim.subscribe(s, "e/#", QoS::AtLeastOnce);
    assert!(got(&mut sim, s).is_empty(), "store expiry passed");
    let held: usize = (0..2).map(|i| sim.shard(i).retained_count()).sum();
    assert_eq!(held, 0, "swept");
}

#[test]
fn store_limits() {
    let mut st = settings();
    st.max_retained_messages = 2;
    st.max_retained_payload = 4;
    let mut sim = Sim::new(1, st);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "l/big", "too large", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/1", "a", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/2", "b", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/3", "c", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/1", "a2", QoS::AtLeastOnce);
    assert_eq!(sim.stat(|s| s.retained_dropped_too_large), 1);
    assert_eq!(sim.stat(|s| s.retained_dropped_full), 1);
    let (s, _) = sim.connect(0, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "l/#", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("l/1", "a2"), r("l/2", "b")]);
}

/// The broker's own retained `$SYS` messages (version, sysdescr) do not use up the quota.
#[test]
fn sys_messages_are_outside_the_store_limit() {
    let mut st = settings();
    st.max_retained_messages = 2;
    let mut sim = Sim::new(1, st);
    sim.start_clocks(1_764_143_627_000);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    retain(&mut sim, p, "l/1", "a", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/2", "b", QoS::AtLeastOnce);
    retain(&mut sim, p, "l/3", "c", QoS::AtLeastOnce);
    assert_eq!(sim.stat(|s| s.retained_dropped_full), 1);
    let (s, _) = sim.connect(0, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "l/#", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("l/1", "a"), r("l/2", "b")]);
    sim.subscribe(s, "$SYS/brokers/+/version", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s).len(), 1, "the version is stored too");
}

#[test]
fn a_will_with_retain_is_stored() {
    let mut sim = Sim::new(2, settings());
    let mut c = net::mqtt::Connect::new(ProtocolVersion::V3_1_1, "w".to_string());
    c.will = Some(net::mqtt::LastWill {
        topic: "status/w".into(),
        payload: bytes::Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    });
    let (w, _) = sim.connect_with(0, c);
    sim.close(w);
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "late", true, 0);
    sim.subscribe(s, "status/+", QoS::AtLeastOnce);
    assert_eq!(got(&mut sim, s), [r("status/w", "offline")]);
}

#[test]
fn the_publisher_is_acknowledged_once_the_store_has_it() {
    let mut sim = Sim::new(4, settings());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    // A topic owned by another shard than the publisher's.
    let topic = (0..100)
        .map(|i| format!("own/{i}"))
        .find(|t| sim.owner_of(t) != 0)
        .unwrap();
    let owner = sim.owner_of(&topic);
    let mut m = Publish::new(topic.clone(), "x");
    m.qos = QoS::AtLeastOnce;
    m.retain = true;
    sim.send_publish_with(p, m);
    // Feed the PUBLISH alone: the rings are not delivered yet, so the store cannot have it.
    sim.feed(p);
    let early = sim
        .peek(p)
        .iter()
        .any(|pk| matches!(pk, net::mqtt::Packet::PubAck(_)));
    assert!(!early, "PUBACK before the owner shard stored the message");
    sim.drive();
    let acked = sim
        .peek(p)
        .iter()
        .any(|pk| matches!(pk, net::mqtt::Packet::PubAck(_)));
    assert!(acked, "no PUBACK");
    assert_eq!(
        sim.shard(owner).retained_count(),
        1,
        "PUBACK came before the store had it"
    );
}
