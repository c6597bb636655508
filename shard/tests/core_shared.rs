//! Shared subscriptions (4.8.2) across shards: one member per group per message, the EMQX
//! strategies, `$queue/`, redispatch of unacknowledged messages when a member leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::collections::HashMap;

use net::mqtt::{ProtocolVersion, QoS};
use shard::settings::SharedStrategy;
use sim::{ClientId, Sim, settings};

fn sim_with(strategy: SharedStrategy) -> Sim {
    let mut s = settings();
    s.shared_strategy = strategy;
    Sim::new(4, s)
}

/// Three members of `$share/g/s/#` on shards 1, 2, 3 and a publisher on shard 0.
fn members(sim: &mut Sim, filter: &str) -> (Vec<ClientId>, ClientId) {
    let mut m = Vec::new();
    for shard in 1..4u16 {
        let (c, _) = sim.connect(shard, ProtocolVersion::V5, &format!("m{shard}"), true, 0);
        let ack = sim.subscribe(c, filter, QoS::AtLeastOnce);
        assert!(ack.reason_codes[0].is_success(), "{ack:?}");
        m.push(c);
    }
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    (m, p)
}

fn counts(sim: &mut Sim, members: &[ClientId]) -> Vec<usize> {
    members.iter().map(|&c| sim.received(c).len()).collect()
}

#[test]
fn each_message_goes_to_one_member_round_robin() {
    for filter in ["$share/g/s/#", "$queue/s/#"] {
        let mut sim = sim_with(SharedStrategy::RoundRobin);
        let (m, p) = members(&mut sim, filter);
        for i in 0..30 {
            sim.publish(p, &format!("s/{i}"), "x", QoS::AtLeastOnce);
        }
        assert_eq!(counts(&mut sim, &m), [10, 10, 10], "{filter}");
    }
}

#[test]
fn every_group_and_plain_subscriber_gets_a_copy() {
    let mut sim = sim_with(SharedStrategy::Random);
    let (m, p) = members(&mut sim, "$share/a/t");
    let (b1, _) = sim.connect(2, ProtocolVersion::V5, "b1", true, 0);
    sim.subscribe(b1, "$share/b/t", QoS::AtLeastOnce);
    let (plain, _) = sim.connect(3, ProtocolVersion::V5, "plain", true, 0);
    sim.subscribe(plain, "t", QoS::AtLeastOnce);
    for _ in 0..20 {
        let ack = sim.publish(p, "t", "x", QoS::AtLeastOnce).unwrap();
        assert!(ack.reason_code.is_success());
    }
    assert_eq!(
        counts(&mut sim, &m).iter().sum::<usize>(),
        20,
        "group a: one copy each"
    );
    assert_eq!(sim.received(b1).len(), 20, "group b: one copy each");
    assert_eq!(sim.received(plain).len(), 20);
}

#[test]
fn hash_topic_and_sticky_keep_a_member() {
    let mut sim = sim_with(SharedStrategy::HashTopic);
    let (m, p) = members(&mut sim, "$share/g/h/+");
    for _ in 0..5 {
        for t in ["h/a", "h/b", "h/c", "h/d"] {
            sim.publish(p, t, "x", QoS::AtLeastOnce);
        }
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, &c) in m.iter().enumerate() {
        for pb in sim.received(c) {
            let prev = owner.insert(pb.topic.to_string(), i);
            assert!(
                prev.is_none_or(|x| x == i),
                "{} went to two members",
                pb.topic
            );
        }
    }
    assert_eq!(owner.len(), 4);

    let mut sim = sim_with(SharedStrategy::Sticky);
    let (m, p) = members(&mut sim, "$share/g/h/+");
    for i in 0..12 {
        sim.publish(p, &format!("h/{i}"), "x", QoS::AtLeastOnce);
    }
    let c = counts(&mut sim, &m);
    assert_eq!(c.iter().filter(|&&n| n == 12).count(), 1, "sticky: {c:?}");
}

#[test]
fn round_robin_per_group_takes_turns() {
    let mut sim = sim_with(SharedStrategy::RoundRobinPerGroup);
    let (m, p) = members(&mut sim, "$share/g/r/#");
    for i in 0..9 {
        sim.publish(p, &format!("r/{i}"), "x", QoS::AtLeastOnce);
    }
    // In turn: no member gets two messages before every member has one.
    let per_message: Vec<usize> = (0..9)
        .map(|i| {
            let topic = format!("r/{i}");
            m.iter()
                .position(|&c| sim.peek(c).iter().any(|pk| matches!(pk, net::mqtt::Packet::Publish(pb) if pb.topic.as_ref() as &str == topic)))
                .unwrap_or_else(|| panic!("{topic} delivered to no member"))
        })
        .collect();
    for window in per_message.chunks(3) {
        let mut w = window.to_vec();
        w.sort_unstable();
        assert_eq!(w, [0, 1, 2], "{per_message:?}");
    }
}

#[test]
fn hash_clientid_keeps_each_publisher_on_one_member() {
    let mut sim = sim_with(SharedStrategy::HashClientid);
    let (m, _) = members(&mut sim, "$share/g/c/#");
    let mut owner_of = Vec::new();
    for n in 0..6 {
        let (p, _) = sim.connect(n % 4, ProtocolVersion::V5, &format!("pub-{n}"), true, 0);
        for i in 0..5 {
            sim.publish(p, &format!("c/{i}"), "x", QoS::AtLeastOnce);
        }
        let got = counts(&mut sim, &m);
        assert_eq!(
            got.iter().filter(|&&k| k == 5).count(),
            1,
            "publisher {n}: all of its messages to one member, {got:?}"
        );
        owner_of.push(got.iter().position(|&k| k == 5).unwrap());
    }
    // Six publishers over three members: not all on the same one (a hash, not a constant).
    owner_of.sort_unstable();
    owner_of.dedup();
    assert!(owner_of.len() > 1, "{owner_of:?}");
}

#[test]
fn local_prefers_a_member_on_the_publishing_shard() {
    let mut sim = sim_with(SharedStrategy::Local);
    let (m, _) = members(&mut sim, "$share/g/l");
    let (p, _) = sim.connect(2, ProtocolVersion::V5, "pub2", true, 0);
    for _ in 0..10 {
        sim.publish(p, "l", "x", QoS::AtLeastOnce);
    }
    assert_eq!(counts(&mut sim, &m), [0, 10, 0], "the member on shard 2");
}

#[test]
fn unacked_messages_go_to_another_member_when_one_leaves() {
    let mut sim = sim_with(SharedStrategy::RoundRobin);
    let (m, p) = members(&mut sim, "$share/g/r");
    sim.set_auto_ack(m[0], false);
    for _ in 0..9 {
        sim.publish(p, "r", "x", QoS::AtLeastOnce);
    }
    let first = sim.received(m[0]).len();
    assert_eq!(first, 3);
    sim.close(m[0]);
    let rest = counts(&mut sim, &m[1..]);
    assert_eq!(
        rest.iter().sum::<usize>(),
        9,
        "6 of their own + 3 redispatched: {rest:?}"
    );
    assert_eq!(sim.stat(|s| s.shared_redispatched), 3);
    // The member that left gets nothing more.
    for _ in 0..4 {
        sim.publish(p, "r", "x", QoS::AtLeastOnce);
    }
    assert_eq!(counts(&mut sim, &m[1..]).iter().sum::<usize>(), 4);
}

#[test]
fn unsubscribe_leaves_the_group() {
    let mut sim = sim_with(SharedStrategy::RoundRobin);
    let (m, p) = members(&mut sim, "$share/g/u");
    let un = sim.unsubscribe(m[1], "$share/g/u");
    assert!(un.reason_codes[0].is_success());
    for _ in 0..10 {
        sim.publish(p, "u", "x", QoS::AtLeastOnce);
    }
    assert_eq!(counts(&mut sim, &m), [5, 0, 5]);
}

#[test]
fn no_member_means_no_matching_subscribers() {
    let mut sim = sim_with(SharedStrategy::RoundRobin);
    let (m, p) = members(&mut sim, "$share/g/n");
    for &c in &m {
        sim.unsubscribe(c, "$share/g/n");
    }
    let ack = sim.publish(p, "n", "x", QoS::AtLeastOnce).unwrap();
    assert_eq!(
        ack.reason_code,
        net::mqtt::ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
}
