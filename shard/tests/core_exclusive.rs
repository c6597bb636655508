//! EMQX's exclusive subscriptions (`$exclusive/{filter}`): one subscriber at a time over every
//! shard; the next one gets 0x97 until the holder unsubscribes or its session ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use net::mqtt::{ProtocolVersion, QoS, ReasonCode};
use sim::{Sim, settings};

fn sim() -> Sim {
    let mut s = settings();
    s.exclusive_subscription = true;
    Sim::new(4, s)
}

#[test]
fn one_holder_at_a_time_across_shards() {
    let mut sim = sim();
    let (a, _) = sim.connect(1, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(2, ProtocolVersion::V5, "b", true, 0);
    let ack = sim.subscribe(a, "$exclusive/job/#", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    let ack = sim.subscribe(b, "$exclusive/job/#", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::QUOTA_EXCEEDED]);
    // The holder receives messages on the inner filter.
    let (p, _) = sim.connect(3, ProtocolVersion::V5, "p", true, 0);
    sim.publish(p, "job/1", "x", QoS::AtLeastOnce);
    assert_eq!(sim.received(a).len(), 1);
    assert!(sim.received(b).is_empty());
    // Subscribing again as the holder is fine.
    let ack = sim.subscribe(a, "$exclusive/job/#", QoS::AtMostOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_0]);
    // Unsubscribe releases it.
    sim.unsubscribe(a, "$exclusive/job/#");
    let ack = sim.subscribe(b, "$exclusive/job/#", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    // So does the end of the session.
    sim.close(b);
    let ack = sim.subscribe(a, "$exclusive/job/#", QoS::AtLeastOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);
}

#[test]
fn mixed_with_ordinary_filters_in_one_subscribe() {
    let mut sim = sim();
    let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(1, ProtocolVersion::V5, "b", true, 0);
    sim.subscribe(a, "$exclusive/x", QoS::AtLeastOnce);
    let o = sim::opts(QoS::AtLeastOnce);
    let ack = sim.subscribe_with(b, &[("y", o), ("$exclusive/x", o), ("z/+", o)], None);
    assert_eq!(
        ack.reason_codes,
        [
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::QUOTA_EXCEEDED,
            ReasonCode::GRANTED_QOS_1
        ]
    );
}

#[test]
fn off_by_default_it_is_an_ordinary_topic() {
    let mut sim = Sim::new(2, settings());
    let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(1, ProtocolVersion::V5, "b", true, 0);
    for c in [a, b] {
        let ack = sim.subscribe(c, "$exclusive/x", QoS::AtLeastOnce);
        assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    }
}
