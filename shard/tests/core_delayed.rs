//! EMQX's delayed publish: `$delayed/{seconds}/{topic}` is published to `{topic}` that many
//! seconds later, acknowledged at once, bounded by `delayed.max_delayed_messages`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{ProtocolVersion, QoS, ReasonCode};
use sim::{Sim, settings};

#[test]
fn published_after_the_delay_in_order() {
    let mut sim = Sim::new(2, settings());
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "d/#", QoS::AtLeastOnce);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let ack = sim
        .publish(p, "$delayed/10/d/late", "b", QoS::AtLeastOnce)
        .unwrap();
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    sim.publish(p, "$delayed/5/d/early", "a", QoS::AtLeastOnce);
    sim.publish(p, "$delayed/0/d/now", "0", QoS::AtLeastOnce);
    sim.advance(Duration::from_millis(10));
    let got: Vec<String> = sim
        .received(s)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(got, ["d/now"]);
    sim.advance(Duration::from_secs(4));
    assert!(sim.received(s).is_empty());
    sim.advance(Duration::from_secs(7));
    let got: Vec<String> = sim
        .received(s)
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(got, ["d/early", "d/late"]);
}

#[test]
fn invalid_delays_are_ordinary_topics_and_the_store_is_bounded() {
    let mut st = settings();
    st.max_delayed_messages = 1;
    let mut sim = Sim::new(1, st);
    let (s, _) = sim.connect(0, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(s, "$delayed/#", QoS::AtLeastOnce);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(p, "$delayed/soon/x", "y", QoS::AtLeastOnce);
    assert_eq!(sim.received(s).len(), 1, "not a number: published as is");
    sim.publish(p, "$delayed/99999999/x", "y", QoS::AtLeastOnce);
    assert_eq!(
        sim.received(s).len(),
        1,
        "beyond 4294967 s: published as is"
    );
    assert_eq!(
        sim.publish(p, "$delayed/60/x", "y", QoS::AtLeastOnce)
            .unwrap()
            .reason_code,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        sim.publish(p, "$delayed/60/x", "y", QoS::AtLeastOnce)
            .unwrap()
            .reason_code,
        ReasonCode::QUOTA_EXCEEDED
    );
}
