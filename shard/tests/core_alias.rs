//! Outgoing topic aliases (3.3.2.3.4): the broker aliases the topics it sends, up to the
//! client's Topic Alias Maximum, reusing them with an empty topic name and replacing the least
//! recently used ones; a client that resolves them sees every topic right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::collections::HashMap;

use net::mqtt::{ProtocolVersion, QoS};
use sim::{Sim, connect_v5, settings};

#[test]
fn aliases_are_assigned_reused_and_replaced_within_the_maximum() {
    let mut sim = Sim::new(2, settings());
    let mut c = connect_v5("aliased");
    c.properties.topic_alias_maximum = Some(2);
    let (s, _) = sim.connect_with(1, c);
    sim.subscribe(s, "a/#", QoS::AtLeastOnce);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let sent: Vec<String> = (0..40)
        .map(|i| format!("a/{}", [0, 0, 1, 0, 2, 3][i % 6]))
        .collect();
    for t in &sent {
        sim.publish(p, t, "x", QoS::AtLeastOnce);
    }
    let mut map: HashMap<u16, String> = HashMap::new();
    let mut seen = Vec::new();
    let mut reused = 0;
    for pkt in sim.received(s) {
        let alias = pkt
            .properties
            .topic_alias
            .expect("every PUBLISH carries an alias");
        assert!((1..=2).contains(&alias), "alias {alias} over the maximum");
        let topic = if pkt.topic.is_empty() {
            reused += 1;
            map.get(&alias)
                .cloned()
                .expect("alias used before it was defined")
        } else {
            map.insert(alias, pkt.topic.to_string());
            pkt.topic.to_string()
        };
        seen.push(topic);
    }
    assert_eq!(seen, sent);
    assert!(reused > 10, "aliases were reused {reused} times");
}

#[test]
fn no_aliases_without_a_topic_alias_maximum() {
    let mut sim = Sim::new(1, settings());
    let (s, _) = sim.connect(0, ProtocolVersion::V5, "plain", true, 0);
    sim.subscribe(s, "t", QoS::AtMostOnce);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    for _ in 0..3 {
        sim.publish(p, "t", "x", QoS::AtMostOnce);
    }
    for pkt in sim.received(s) {
        assert_eq!(pkt.topic, "t");
        assert_eq!(pkt.properties.topic_alias, None);
    }
}
