//! QoS 1 and 2 flows: packet identifiers, the inflight window, exactly-once for incoming
//! QoS 2, unknown identifiers, retransmission on the virtual clock, and the await-rel timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::collections::HashSet;
use std::time::Duration;

use net::mqtt::{Ack, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use sim::{ClientId, SHARD_COUNTS, Sim, settings};

/// A v5 subscriber on `shard` with Receive Maximum `rm` (if any) that acks nothing by itself.
fn manual_subscriber(
    sim: &mut Sim,
    shard: u16,
    id: &str,
    rm: Option<u16>,
    filter: &str,
    qos: QoS,
) -> ClientId {
    let mut c = Connect::new(ProtocolVersion::V5, id.to_string());
    c.keep_alive = 0;
    c.properties.receive_maximum = rm;
    let (s, ack) = sim.connect_with(shard, c);
    assert!(ack.reason_code.is_success());
    sim.subscribe(s, filter, qos);
    sim.set_auto_ack(s, false);
    s
}

fn ack(sim: &mut Sim, c: ClientId, pid: u16) {
    sim.send(c, &Packet::PubAck(Ack::new(pid)));
    sim.drive();
}

#[test]
fn outgoing_packet_ids_are_unique_while_inflight() {
    let mut s = settings();
    s.max_inflight = 100;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let sub = manual_subscriber(&mut sim, 1, "sub", None, "ids", QoS::ExactlyOnce);
    for i in 0..60 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        sim.publish(publisher, "ids", format!("{i}"), qos);
    }
    let got = sim.received(sub);
    assert_eq!(got.len(), 60);
    let mut inflight: HashSet<u16> = got.iter().map(|p| p.packet_id).collect();
    assert_eq!(inflight.len(), 60, "packet ids unique while inflight");
    assert!(!inflight.contains(&0));
    // Complete every third, out of order; new messages must not reuse a live id.
    let mut done = Vec::new();
    for p in got.iter().rev().step_by(3) {
        match p.qos {
            QoS::AtLeastOnce => sim.send(sub, &Packet::PubAck(Ack::new(p.packet_id))),
            _ => sim.send(sub, &Packet::PubRec(Ack::new(p.packet_id))),
        }
        if p.qos == QoS::AtLeastOnce {
            done.push(p.packet_id);
        }
    }
    sim.drive();
    // PUBREL for the QoS 2 ones; those stay inflight until PUBCOMP.
    for p in sim.packets(sub) {
        let Packet::PubRel(a) = p else {
            panic!("{p:?}")
        };
        assert!(inflight.contains(&a.packet_id));
    }
    for pid in done {
        inflight.remove(&pid);
    }
    for i in 0..30 {
        sim.publish(publisher, "ids", format!("more {i}"), QoS::AtLeastOnce);
    }
    let more = sim.received(sub);
    assert!(!more.is_empty());
    for p in &more {
        assert!(
            inflight.insert(p.packet_id),
            "id {} reused while inflight",
            p.packet_id
        );
    }
    assert!(inflight.len() <= 100);
}

#[test]
fn packet_ids_wrap_around_and_skip_a_stuck_id() {
    let mut s = settings();
    s.max_inflight = 2;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V3_1_1, "pub", true, 0);
    let sub = manual_subscriber(&mut sim, 1, "sub", None, "w", QoS::AtLeastOnce);
    sim.publish(publisher, "w", "stuck", QoS::AtLeastOnce);
    let stuck = sim.received(sub)[0].packet_id;
    for i in 0..65_540u32 {
        sim.publish(publisher, "w", Vec::new(), QoS::AtLeastOnce);
        let got = sim.received(sub);
        assert_eq!(got.len(), 1, "message {i}");
        assert_ne!(got[0].packet_id, stuck, "message {i} reused the stuck id");
        assert_ne!(got[0].packet_id, 0);
        ack(&mut sim, sub, got[0].packet_id);
    }
}

#[test]
fn inflight_window_is_min_of_receive_maximum_and_max_inflight() {
    for shards in SHARD_COUNTS {
        for (rm, max_inflight, window) in [
            (Some(3u16), 32u16, 3usize),
            (Some(50), 5, 5),
            (None, 4, 4),
            (Some(1), 32, 1),
        ] {
            let mut s = settings();
            s.max_inflight = max_inflight;
            let mut sim = Sim::new(shards, s);
            let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
            let sub = manual_subscriber(&mut sim, shards - 1, "sub", rm, "win", QoS::AtLeastOnce);
            let n = 12;
            for i in 0..n {
                sim.publish(publisher, "win", format!("{i}"), QoS::AtLeastOnce);
            }
            let got = sim.received(sub);
            assert_eq!(got.len(), window, "rm {rm:?} max {max_inflight}");
            let payload = |p: &Publish| String::from_utf8(p.payload.to_vec()).unwrap();
            let mut seen: Vec<String> = got.iter().map(payload).collect();
            let mut inflight: std::collections::VecDeque<Publish> = got.into();
            while let Some(p) = inflight.pop_front() {
                // Ack the oldest: exactly one more flows while any is queued.
                ack(&mut sim, sub, p.packet_id);
                let next = sim.received(sub);
                let want = usize::from(seen.len() < n);
                assert_eq!(next.len(), want, "after acking {}: {next:?}", payload(&p));
                assert!(inflight.len() + next.len() <= window);
                seen.extend(next.iter().map(payload));
                inflight.extend(next);
            }
            let want: Vec<String> = (0..n).map(|i| format!("{i}")).collect();
            assert_eq!(seen, want, "every message, once, in order");
        }
    }
}

#[test]
fn qos2_inflight_slot_is_freed_by_pubcomp_not_pubrec() {
    let mut s = settings();
    s.max_inflight = 1;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let sub = manual_subscriber(&mut sim, 1, "sub", None, "q2", QoS::ExactlyOnce);
    sim.publish(publisher, "q2", "1", QoS::ExactlyOnce);
    sim.publish(publisher, "q2", "2", QoS::ExactlyOnce);
    let got = sim.received(sub);
    assert_eq!(got.len(), 1);
    let pid = got[0].packet_id;
    sim.send(sub, &Packet::PubRec(Ack::new(pid)));
    sim.drive();
    let packets = sim.packets(sub);
    assert!(
        matches!(&packets[..], [Packet::PubRel(a)] if a.packet_id == pid),
        "PUBREL only, the window is still full: {packets:?}"
    );
    sim.send(sub, &Packet::PubComp(Ack::new(pid)));
    sim.drive();
    let got = sim.received(sub);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"2");
}

#[test]
fn failed_pubrec_ends_the_flow() {
    let mut s = settings();
    s.max_inflight = 1;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let sub = manual_subscriber(&mut sim, 1, "sub", None, "f", QoS::ExactlyOnce);
    sim.publish(publisher, "f", "1", QoS::ExactlyOnce);
    sim.publish(publisher, "f", "2", QoS::ExactlyOnce);
    let pid = sim.received(sub)[0].packet_id;
    let rec = Ack {
        packet_id: pid,
        reason_code: ReasonCode::UNSPECIFIED_ERROR,
        ..Ack::default()
    };
    sim.send(sub, &Packet::PubRec(rec));
    sim.drive();
    let packets = sim.packets(sub);
    assert!(
        matches!(&packets[..], [Packet::Publish(p)] if &p.payload[..] == b"2"),
        "no PUBREL; the next message flows: {packets:?}"
    );
    sim.advance(settings().retry_interval * 2);
    let again = sim.received(sub);
    assert!(again.iter().all(|p| &p.payload[..] == b"2"), "{again:?}");
}

#[test]
fn incoming_qos2_duplicate_before_pubrel_is_routed_once() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (sub, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        sim.subscribe(sub, "eo", QoS::ExactlyOnce);
        sim.set_auto_ack(publisher, false);
        let mut p = Publish::new("eo", "once");
        p.qos = QoS::ExactlyOnce;
        p.packet_id = 7;
        sim.send(publisher, &Packet::Publish(p.clone()));
        sim.drive();
        p.dup = true;
        sim.send(publisher, &Packet::Publish(p.clone()));
        sim.send(publisher, &Packet::Publish(p.clone()));
        sim.drive();
        let acks = sim.packets(publisher);
        assert_eq!(acks.len(), 3);
        assert!(
            acks.iter()
                .all(|a| matches!(a, Packet::PubRec(a) if a.packet_id == 7))
        );
        assert_eq!(sim.received(sub).len(), 1, "exactly once");

        sim.send(publisher, &Packet::PubRel(Ack::new(7)));
        sim.drive();
        let comp = sim.packets(publisher);
        assert!(
            matches!(&comp[..], [Packet::PubComp(a)] if a.packet_id == 7 && a.reason_code == ReasonCode::SUCCESS),
            "{comp:?}"
        );
        // After PUBREL the id is free: the same id is a new message.
        p.dup = false;
        p.payload = "twice".into();
        sim.send(publisher, &Packet::Publish(p));
        sim.drive();
        let got = sim.received(sub);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].payload[..], b"twice");
    }
}

#[test]
fn pubrel_for_unknown_id() {
    let mut sim = Sim::new(2, settings());
    let (v5, _) = sim.connect(1, ProtocolVersion::V5, "v5", true, 0);
    let (v3, _) = sim.connect(1, ProtocolVersion::V3_1_1, "v3", true, 0);
    for c in [v5, v3] {
        sim.send(c, &Packet::PubRel(Ack::new(99)));
        sim.drive();
        let packets = sim.packets(c);
        let Some(Packet::PubComp(a)) = packets.first() else {
            panic!("{packets:?}")
        };
        assert_eq!(a.packet_id, 99);
        let want = if c == v5 {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            ReasonCode::SUCCESS
        };
        assert_eq!(a.reason_code, want);
        assert!(!sim.is_closed(c));
    }
}

#[test]
fn unknown_puback_and_pubcomp_are_ignored() {
    let mut sim = Sim::new(1, settings());
    let (c, _) = sim.connect(0, ProtocolVersion::V5, "c", true, 0);
    sim.send(c, &Packet::PubAck(Ack::new(5)));
    sim.send(c, &Packet::PubComp(Ack::new(6)));
    sim.drive();
    assert!(sim.packets(c).is_empty());
    assert!(!sim.is_closed(c));
    // PUBREC for an unknown id gets PUBREL 0x92 (v5).
    sim.send(c, &Packet::PubRec(Ack::new(8)));
    sim.drive();
    let packets = sim.packets(c);
    assert!(
        matches!(&packets[..], [Packet::PubRel(a)] if a.packet_id == 8
            && a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        "{packets:?}"
    );
}

#[test]
fn unacked_qos1_is_retransmitted_with_dup_after_retry_interval() {
    for shards in SHARD_COUNTS {
        let s = settings();
        let retry = s.retry_interval;
        let mut sim = Sim::new(shards, s);
        let (publisher, _) = sim.connect(0, ProtocolVersion::V3_1_1, "pub", true, 0);
        let sub = manual_subscriber(&mut sim, shards - 1, "sub", None, "rt", QoS::AtLeastOnce);
        sim.publish(publisher, "rt", "m", QoS::AtLeastOnce);
        let first = sim.received(sub);
        assert_eq!(first.len(), 1);
        assert!(!first[0].dup);

        sim.advance(retry - Duration::from_millis(1));
        assert!(sim.received(sub).is_empty(), "not before retry_interval");
        sim.advance(Duration::from_millis(1));
        let again = sim.received(sub);
        assert_eq!(again.len(), 1, "resent at retry_interval");
        assert!(again[0].dup);
        assert_eq!(again[0].packet_id, first[0].packet_id);
        assert_eq!(again[0].payload, first[0].payload);

        sim.advance(retry);
        assert_eq!(sim.received(sub).len(), 1, "and again");
        ack(&mut sim, sub, first[0].packet_id);
        sim.advance(retry * 4);
        assert!(sim.received(sub).is_empty(), "acked: no more");
        assert_eq!(sim.stat(|s| s.messages_retransmitted), 2);
        assert!(!sim.is_closed(sub));
    }
}

#[test]
fn unacked_qos2_publish_and_pubrel_are_retransmitted() {
    let s = settings();
    let retry = s.retry_interval;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let sub = manual_subscriber(&mut sim, 1, "sub", None, "rt2", QoS::ExactlyOnce);
    sim.publish(publisher, "rt2", "m", QoS::ExactlyOnce);
    let pid = sim.received(sub)[0].packet_id;
    sim.advance(retry);
    let again = sim.received(sub);
    assert_eq!(again.len(), 1);
    assert!(again[0].dup);
    sim.send(sub, &Packet::PubRec(Ack::new(pid)));
    sim.drive();
    assert!(matches!(&sim.packets(sub)[..], [Packet::PubRel(a)] if a.packet_id == pid));
    sim.advance(retry);
    let packets = sim.packets(sub);
    assert!(
        matches!(&packets[..], [Packet::PubRel(a)] if a.packet_id == pid),
        "PUBREL is resent, not the PUBLISH: {packets:?}"
    );
    sim.send(sub, &Packet::PubComp(Ack::new(pid)));
    sim.drive();
    sim.advance(retry * 3);
    assert!(sim.packets(sub).is_empty());
}

#[test]
fn await_rel_timeout_forgets_an_incoming_qos2_id() {
    let mut s = settings();
    s.await_rel_timeout = Duration::from_secs(10);
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "ar", QoS::ExactlyOnce);
    sim.set_auto_ack(publisher, false);
    let mut p = Publish::new("ar", "1");
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 5;
    sim.send(publisher, &Packet::Publish(p.clone()));
    sim.drive();
    assert_eq!(sim.received(sub).len(), 1);
    sim.packets(publisher);

    sim.advance(Duration::from_secs(9));
    // Still remembered: a retransmission is not routed again.
    p.dup = true;
    sim.send(publisher, &Packet::Publish(p.clone()));
    sim.drive();
    assert!(sim.received(sub).is_empty());
    sim.packets(publisher);

    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.stat(|s| s.dropped_await_rel_timeout), 1);
    sim.send(publisher, &Packet::PubRel(Ack::new(5)));
    sim.drive();
    let packets = sim.packets(publisher);
    assert!(
        matches!(&packets[..], [Packet::PubComp(a)] if a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        "forgotten: {packets:?}"
    );
    // The id is free again.
    p.dup = false;
    sim.send(publisher, &Packet::Publish(p));
    sim.drive();
    assert_eq!(sim.received(sub).len(), 1);
    assert!(!sim.is_closed(publisher));
}

#[test]
fn too_many_incoming_qos2_awaiting_pubrel_disconnects() {
    let mut s = settings();
    s.max_awaiting_rel = 2;
    let mut sim = Sim::new(2, s);
    let (publisher, ack) = sim.connect(1, ProtocolVersion::V5, "pub", true, 0);
    assert_eq!(ack.properties.receive_maximum, Some(2));
    sim.set_auto_ack(publisher, false);
    for _ in 0..3 {
        sim.send_publish(publisher, "x", "x", QoS::ExactlyOnce);
    }
    sim.drive();
    let packets = sim.packets(publisher);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{packets:?}"
    );
    assert!(sim.is_closed(publisher));
}

#[test]
fn window_of_one_keeps_order_across_qos() {
    let mut s = settings();
    s.max_inflight = 1;
    let mut sim = Sim::new(4, s);
    let (publisher, _) = sim.connect(2, ProtocolVersion::V5, "pub", true, 0);
    let (sub, _) = sim.connect(3, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "o", QoS::ExactlyOnce);
    for i in 0..20 {
        let qos = if i % 2 == 0 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        sim.send_publish(publisher, "o", format!("{i:02}"), qos);
    }
    sim.drive();
    let got: Vec<String> = sim
        .received(sub)
        .iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert_eq!(got, want);
}
