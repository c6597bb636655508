//! Keep Alive on the virtual clock: the 1.5x grace, PINGREQ, any packet resetting the timer,
//! Keep Alive 0, and Server Keep Alive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{Packet, ProtocolVersion, QoS, ReasonCode};
use sim::{SHARD_COUNTS, Sim, settings};

const MS: Duration = Duration::from_millis(1);

#[test]
fn silent_client_is_disconnected_after_one_and_a_half_keep_alive() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (v5, _) = sim.connect(shards - 1, ProtocolVersion::V5, "v5", true, 10);
        let (v3, _) = sim.connect(0, ProtocolVersion::V3_1_1, "v3", true, 10);
        sim.advance(Duration::from_secs(15) - MS);
        assert!(!sim.is_closed(v5));
        assert!(!sim.is_closed(v3));
        sim.advance(MS);
        let packets = sim.packets(v5);
        assert!(
            matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KEEP_ALIVE_TIMEOUT),
            "{packets:?}"
        );
        assert!(sim.is_closed(v5));
        assert!(sim.is_closed(v3));
        assert!(sim.packets(v3).is_empty(), "3.1.1: closed without a packet");
        assert_eq!(sim.stat(|s| s.keepalive_timeouts), 2);
    }
}

#[test]
fn pingreq_keeps_the_connection_alive() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = sim.connect(1, ProtocolVersion::V5, "p", true, 10);
    for _ in 0..10 {
        sim.advance(Duration::from_secs(10));
        sim.send(c, &Packet::PingReq);
        sim.drive();
        let packets = sim.packets(c);
        assert!(matches!(&packets[..], [Packet::PingResp]), "{packets:?}");
        assert!(!sim.is_closed(c));
    }
    // Then silence: 15 s after the last PINGREQ.
    sim.advance(Duration::from_secs(15) - MS);
    assert!(!sim.is_closed(c));
    sim.advance(MS);
    assert!(sim.is_closed(c));
}

#[test]
fn any_packet_resets_the_keep_alive() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = sim.connect(0, ProtocolVersion::V3_1_1, "k", true, 4);
    for i in 0..20 {
        sim.advance(Duration::from_secs(5));
        sim.publish(c, "k", format!("{i}"), QoS::AtLeastOnce);
        assert!(!sim.is_closed(c), "after {i} publishes");
    }
    sim.advance(Duration::from_secs(6));
    assert!(sim.is_closed(c));
}

#[test]
fn keep_alive_zero_never_times_out() {
    let mut sim = Sim::new(4, settings());
    let clients: Vec<_> = (0..4)
        .map(|s| {
            sim.connect(s, ProtocolVersion::V5, &format!("z{s}"), true, 0)
                .0
        })
        .collect();
    let before = sim.timer_wakeups;
    sim.advance(Duration::from_secs(7 * 24 * 3600));
    for c in clients {
        assert!(!sim.is_closed(c));
        assert!(sim.packets(c).is_empty());
    }
    assert!(sim.timer_wakeups - before < 10, "nothing to wake up for");
}

#[test]
fn server_keep_alive_overrides_the_clients() {
    let mut s = settings();
    s.server_keepalive = Some(4);
    let mut sim = Sim::new(2, s);
    let (v5, ack) = sim.connect(0, ProtocolVersion::V5, "v5", true, 60);
    assert_eq!(ack.properties.server_keep_alive, Some(4));
    let (v3, _) = sim.connect(1, ProtocolVersion::V3_1_1, "v3", true, 60);
    sim.advance(Duration::from_secs(6));
    assert!(sim.is_closed(v5), "4 s x 1.5");
    assert!(!sim.is_closed(v3), "3.1.1 keeps its own Keep Alive");
    sim.advance(Duration::from_secs(84));
    assert!(sim.is_closed(v3));
}

#[test]
fn keep_alive_per_connection_on_every_shard() {
    let mut sim = Sim::new(4, settings());
    let clients: Vec<_> = (1..=8u16)
        .map(|k| {
            let (c, _) = sim.connect(k % 4, ProtocolVersion::V5, &format!("k{k}"), true, k * 2);
            (c, Duration::from_secs(u64::from(k) * 3))
        })
        .collect();
    let mut elapsed = Duration::ZERO;
    for step in 1..=25 {
        let now = Duration::from_secs(step);
        sim.advance(now - elapsed);
        elapsed = now;
        for &(c, limit) in &clients {
            assert_eq!(
                sim.is_closed(c),
                now >= limit,
                "at {now:?}, limit {limit:?}"
            );
        }
    }
}
