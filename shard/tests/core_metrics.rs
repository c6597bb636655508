//! The counters and the publish-to-deliver latency histogram the shards publish for the
//! control plane's metrics (`Shard::sys_snapshot`), on the virtual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{ProtocolVersion, QoS};
use shard::core::SysSnapshot;
use sim::{Sim, persistent_v5, settings};

/// MQTT packet type numbers, the index of `packets_*_by_type`.
const CONNECT: usize = 1;
const CONNACK: usize = 2;
const PUBLISH: usize = 3;
const PUBACK: usize = 4;
const SUBSCRIBE: usize = 8;
const SUBACK: usize = 9;

fn snap(sim: &Sim, shard: u16) -> SysSnapshot {
    sim.shard(shard).sys_snapshot()
}

fn latency_count(s: &SysSnapshot) -> u64 {
    s.delivery_latency.as_ref().unwrap().count()
}

#[test]
fn packets_by_type_deliveries_and_latency_are_counted() {
    let mut sim = Sim::new(2, settings());
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let (publ, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    for i in 0..5 {
        sim.publish(publ, "t/a", format!("m{i}"), QoS::AtLeastOnce);
    }
    sim.publish(publ, "t/b", "q0", QoS::AtMostOnce);
    sim.drive();
    assert_eq!(sim.received(sub).len(), 6);

    let (s0, s1) = (snap(&sim, 0), snap(&sim, 1));
    let r0 = &s0.stats.packets_received_by_type;
    assert_eq!((r0[CONNECT], r0[PUBLISH]), (1, 6));
    assert_eq!(r0.iter().sum::<u64>(), s0.stats.packets_received);
    let t0 = &s0.stats.packets_sent_by_type;
    assert_eq!((t0[CONNACK], t0[PUBACK], t0[PUBLISH]), (1, 5, 0));
    assert_eq!(t0.iter().sum::<u64>(), s0.stats.packets_sent);
    assert_eq!(s0.stats.messages_received_by_qos, [1, 5, 0]);

    let r1 = &s1.stats.packets_received_by_type;
    assert_eq!((r1[CONNECT], r1[SUBSCRIBE], r1[PUBACK]), (1, 1, 5));
    let t1 = &s1.stats.packets_sent_by_type;
    assert_eq!((t1[CONNACK], t1[SUBACK], t1[PUBLISH]), (1, 1, 6));
    assert_eq!(t1.iter().sum::<u64>(), s1.stats.packets_sent);
    assert_eq!(s1.stats.messages_sent_by_qos, [1, 5, 0]);

    // Deliveries are counted where the subscriber is, each once, with a latency.
    assert_eq!(s1.stats.messages_delivered, 6);
    assert_eq!(latency_count(&s1), 6);
    assert_eq!(s0.stats.messages_delivered, 0);
    assert_eq!(latency_count(&s0), 0);
    assert_eq!(s0.stats.client_authenticate, 1);
    assert_eq!(s1.stats.client_authenticate, 1);
    // The route of `t/#` is the subscriber's shard's.
    assert_eq!((s0.topics, s1.topics), (0, 1));
}

#[test]
fn queued_deliveries_are_measured_when_sent_and_retained_ones_not_at_all() {
    let mut sim = Sim::new(2, settings());
    let (sub, _) = sim.connect_with(1, persistent_v5("sub", 3600));
    sim.subscribe(sub, "q/#", QoS::AtLeastOnce);
    sim.disconnect(sub);
    let (publ, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    for i in 0..3 {
        sim.publish(publ, "q/a", format!("m{i}"), QoS::AtLeastOnce);
    }
    sim.advance(Duration::from_secs(2));
    let (sub, ack) = sim.connect_with(1, persistent_v5("sub", 3600));
    assert!(ack.session_present);
    sim.drive();
    assert_eq!(sim.received(sub).len(), 3);
    let s1 = snap(&sim, 1);
    assert_eq!(s1.stats.messages_delivered, 3);
    let l = s1.delivery_latency.as_ref().unwrap();
    assert_eq!(l.count(), 3);
    // Two seconds in the queue, on the virtual clock.
    let mut out = [0; 2];
    l.cumulative(&[1_000_000, 2_500_000], &mut out);
    assert_eq!(out, [0, 3]);
    assert!((l.sum_seconds() - 6.0).abs() < 1e-6, "{}", l.sum_seconds());

    // A retained message: measured for the subscriber online when it is published, not when
    // a later subscription gets it from the store.
    let mut p = net::mqtt::Publish::new("q/r".to_string(), "kept");
    p.retain = true;
    sim.publish_with(publ, p);
    sim.drive();
    assert_eq!(sim.received(sub).len(), 1);
    let (late, _) = sim.connect(1, ProtocolVersion::V5, "late", true, 0);
    sim.subscribe(late, "q/r", QoS::AtMostOnce);
    assert_eq!(sim.received(late).len(), 1);
    let s1 = snap(&sim, 1);
    assert_eq!(s1.stats.retained_delivered, 1);
    assert_eq!(s1.stats.messages_delivered, 5);
    assert_eq!(latency_count(&s1), 4);
}

#[test]
fn retransmissions_are_not_deliveries() {
    let mut sim = Sim::new(1, settings());
    let (sub, _) = sim.connect(0, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "r", QoS::AtLeastOnce);
    sim.set_auto_ack(sub, false);
    let (publ, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publ, "r", "x", QoS::AtLeastOnce);
    // Unacknowledged: sent again after the retry interval.
    sim.advance(Duration::from_secs(60));
    let got = sim.received(sub);
    assert!(got.len() >= 2 && got[1..].iter().all(|p| p.dup), "{got:?}");
    let s = snap(&sim, 0);
    assert_eq!(s.stats.messages_delivered, 1);
    assert_eq!(latency_count(&s), 1);
    assert_eq!(s.stats.messages_sent, got.len() as u64);
}

#[test]
fn shared_subscriptions_are_counted_on_their_member_shard() {
    let mut sim = Sim::new(2, settings());
    let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(1, ProtocolVersion::V5, "b", true, 0);
    sim.subscribe(a, "$share/g/s/#", QoS::AtMostOnce);
    sim.subscribe(a, "$share/h/s/#", QoS::AtMostOnce);
    sim.subscribe(b, "$share/g/s/#", QoS::AtMostOnce);
    sim.drive();
    let count = |sim: &Sim| {
        (
            snap(sim, 0).shared_subscriptions,
            snap(sim, 1).shared_subscriptions,
        )
    };
    assert_eq!(count(&sim), (2, 1));
    // Shared subscriptions are not routes.
    assert_eq!((snap(&sim, 0).topics, snap(&sim, 1).topics), (0, 0));
    sim.unsubscribe(a, "$share/h/s/#");
    assert_eq!(count(&sim), (1, 1));
    sim.disconnect(b);
    assert_eq!(count(&sim), (1, 0));
}
