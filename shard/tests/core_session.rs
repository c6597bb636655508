//! Sessions that outlive connections: offline queueing, resuming on another shard, DUP
//! redelivery of the inflight window, queue overflow, expiry, Clean Start, and the Session
//! Expiry Interval in DISCONNECT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{Ack, Connect, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use sim::{ClientId, SHARD_COUNTS, Sim, persistent_v5, settings};

fn payloads(p: &[Publish]) -> Vec<String> {
    p.iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

fn persistent_v311(sim: &mut Sim, shard: u16, id: &str) -> (ClientId, bool) {
    let (c, ack) = sim.connect(shard, ProtocolVersion::V3_1_1, id, false, 0);
    (c, ack.session_present)
}

fn connect_v5(sim: &mut Sim, shard: u16, c: Connect) -> (ClientId, bool) {
    let (id, ack) = sim.connect_with(shard, c);
    assert!(ack.reason_code.is_success(), "{ack:?}");
    (id, ack.session_present)
}

/// Subscribes a persistent client, closes it, publishes QoS 0/1/2 while it is offline, and
/// reconnects it on another shard.
fn offline_queue_and_resume(shards: u16, v5: bool) {
    let mut sim = Sim::new(shards, settings());
    let connect = |sim: &mut Sim, shard| {
        if v5 {
            connect_v5(sim, shard, persistent_v5("p", 300))
        } else {
            persistent_v311(sim, shard, "p")
        }
    };
    let (sub, present) = connect(&mut sim, 0);
    assert!(!present);
    sim.subscribe(sub, "q/#", QoS::ExactlyOnce);
    sim.close(sub);
    assert_eq!(sim.shards[0].session_count(), 1, "the session stays");

    let (publisher, _) = sim.connect(shards - 1, ProtocolVersion::V5, "pub", true, 0);
    for (payload, qos) in [
        ("zero", QoS::AtMostOnce),
        ("one", QoS::AtLeastOnce),
        ("two", QoS::ExactlyOnce),
    ] {
        let ack = sim.publish(publisher, "q/x", payload, qos);
        if let Some(ack) = ack {
            assert_eq!(
                ack.reason_code,
                ReasonCode::SUCCESS,
                "an offline session matches"
            );
        }
    }
    let again = (1 % shards).max(shards / 2);
    let (sub, present) = connect(&mut sim, again);
    assert!(present, "{shards} shards, v5 {v5}");
    let got = sim.received(sub);
    assert_eq!(payloads(&got), ["zero", "one", "two"]);
    assert_eq!(
        got.iter().map(|p| p.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
    );
    assert!(got.iter().all(|p| !p.dup), "queued, never sent: no DUP");
    // The subscription moved with the session.
    sim.publish(publisher, "q/y", "live", QoS::AtLeastOnce);
    assert_eq!(payloads(&sim.received(sub)), ["live"]);
    let total: usize = sim.shards.iter().map(|s| s.session_count()).sum();
    assert_eq!(total, 2, "one session each for pub and p");
}

#[test]
fn v311_persistent_session_queues_offline_and_resumes_on_another_shard() {
    for shards in SHARD_COUNTS {
        offline_queue_and_resume(shards, false);
    }
}

#[test]
fn v5_persistent_session_queues_offline_and_resumes_on_another_shard() {
    for shards in SHARD_COUNTS {
        offline_queue_and_resume(shards, true);
    }
}

#[test]
fn qos0_is_not_queued_offline_without_mqueue_store_qos0() {
    let mut s = settings();
    s.mqueue_store_qos0 = false;
    let mut sim = Sim::new(2, s);
    let (sub, _) = connect_v5(&mut sim, 0, persistent_v5("p", 300));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    sim.close(sub);
    let (publisher, _) = sim.connect(1, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publisher, "t", "zero", QoS::AtMostOnce);
    sim.publish(publisher, "t", "one", QoS::AtLeastOnce);
    assert_eq!(sim.stat(|s| s.dropped_qos0_offline), 1);
    let (sub, present) = connect_v5(&mut sim, 1, persistent_v5("p", 300));
    assert!(present);
    assert_eq!(payloads(&sim.received(sub)), ["one"]);
}

#[test]
fn unacked_inflight_is_redelivered_with_dup_on_another_shard() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (sub, _) = connect_v5(&mut sim, 0, persistent_v5("p", 300));
        sim.subscribe(sub, "i", QoS::ExactlyOnce);
        sim.set_auto_ack(sub, false);
        let (publisher, _) = sim.connect(shards - 1, ProtocolVersion::V5, "pub", true, 0);
        sim.publish(publisher, "i", "a", QoS::AtLeastOnce);
        sim.publish(publisher, "i", "b", QoS::ExactlyOnce);
        sim.publish(publisher, "i", "c", QoS::ExactlyOnce);
        let first = sim.received(sub);
        assert_eq!(payloads(&first), ["a", "b", "c"]);
        // "c" got as far as PUBREC: the broker answered PUBREL and waits for PUBCOMP.
        sim.send(sub, &Packet::PubRec(Ack::new(first[2].packet_id)));
        sim.drive();
        assert!(matches!(&sim.packets(sub)[..], [Packet::PubRel(_)]));
        sim.close(sub);
        sim.publish(publisher, "i", "d", QoS::AtLeastOnce);

        let (sub, present) = connect_v5(&mut sim, shards / 2, persistent_v5("p", 300));
        assert!(present);
        let packets = sim.packets(sub);
        let mut publishes = Vec::new();
        let mut rels = Vec::new();
        for p in packets {
            match p {
                Packet::Publish(p) => publishes.push(p),
                Packet::PubRel(a) => rels.push(a.packet_id),
                // Auto-acks answered these already.
                Packet::PubComp(_) | Packet::PubAck(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(payloads(&publishes), ["a", "b", "d"]);
        assert!(publishes[0].dup && publishes[1].dup, "redelivered with DUP");
        assert!(!publishes[2].dup, "queued one is new");
        assert_eq!(publishes[0].packet_id, first[0].packet_id, "same packet id");
        assert_eq!(publishes[1].packet_id, first[1].packet_id);
        assert_eq!(
            rels,
            [first[2].packet_id, first[1].packet_id],
            "PUBREL resent for the released one, then the auto-acked QoS 2 flow of \"b\""
        );
        // All acked now (auto-ack): nothing more, ever.
        sim.advance(settings().retry_interval * 3);
        assert!(sim.received(sub).is_empty());
    }
}

#[test]
fn inflight_redelivered_on_reconnect_is_retried_after_retry_interval() {
    let s = settings();
    let retry = s.retry_interval;
    let mut sim = Sim::new(2, s);
    let (sub, _) = connect_v5(&mut sim, 0, persistent_v5("p", 3600));
    sim.subscribe(sub, "r", QoS::AtLeastOnce);
    sim.set_auto_ack(sub, false);
    let (publisher, _) = sim.connect(1, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publisher, "r", "m", QoS::AtLeastOnce);
    assert_eq!(sim.received(sub).len(), 1);
    sim.close(sub);
    let (sub, ack) = sim.connect_manual(1, persistent_v5("p", 3600));
    assert!(ack.session_present);
    let redelivered = sim.received(sub);
    assert_eq!(redelivered.len(), 1);
    assert!(redelivered[0].dup);
    // Still unacked: retry_interval applies to the resumed window as to any other.
    sim.advance(retry + Duration::from_secs(1));
    let again = sim.received(sub);
    assert_eq!(
        again.len(),
        1,
        "a resumed inflight message is never retried: resume() does not arm Timer::Retry"
    );
    assert!(again[0].dup);
}

#[test]
fn offline_session_with_inflight_does_not_spin_the_retry_timer() {
    let s = settings();
    let retry = s.retry_interval;
    let mut sim = Sim::new(1, s);
    let (sub, _) = connect_v5(&mut sim, 0, persistent_v5("p", 3600));
    sim.subscribe(sub, "s", QoS::AtLeastOnce);
    sim.set_auto_ack(sub, false);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publisher, "s", "m", QoS::AtLeastOnce);
    sim.close(sub);
    let before = sim.timer_wakeups;
    sim.advance(retry + Duration::from_secs(1));
    let wakeups = sim.timer_wakeups - before;
    assert!(
        wakeups < 10,
        "{wakeups} timer wake-ups in {:?} for one offline session with one inflight message: \
         Timer::Retry re-arms every 1 ms while the session is offline",
        retry + Duration::from_secs(1)
    );
}

#[test]
fn mqueue_overflow_drops_qos0_first() {
    let mut s = settings();
    s.max_mqueue_len = 3;
    let mut sim = Sim::new(2, s);
    let (sub, _) = connect_v5(&mut sim, 1, persistent_v5("p", 300));
    sim.subscribe(sub, "o", QoS::AtLeastOnce);
    sim.close(sub);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publisher, "o", "1", QoS::AtLeastOnce);
    sim.publish(publisher, "o", "z", QoS::AtMostOnce);
    sim.publish(publisher, "o", "2", QoS::AtLeastOnce);
    sim.publish(publisher, "o", "3", QoS::AtLeastOnce);
    assert_eq!(
        sim.stat(|s| s.dropped_queue_full),
        1,
        "the QoS 0 message went first"
    );
    assert_eq!(sim.stat(|s| s.dropped_queue_full_qos12), 0);
    // Full of QoS 1: a new QoS 0 message is dropped itself ...
    sim.publish(publisher, "o", "y", QoS::AtMostOnce);
    assert_eq!(sim.stat(|s| s.dropped_queue_full), 2);
    assert_eq!(sim.stat(|s| s.dropped_queue_full_qos12), 0);
    // ... and a new QoS 1 message pushes out the oldest.
    sim.publish(publisher, "o", "4", QoS::AtLeastOnce);
    assert_eq!(sim.stat(|s| s.dropped_queue_full), 3);
    assert_eq!(sim.stat(|s| s.dropped_queue_full_qos12), 1);
    let (sub, present) = connect_v5(&mut sim, 0, persistent_v5("p", 300));
    assert!(present);
    assert_eq!(payloads(&sim.received(sub)), ["2", "3", "4"]);
}

#[test]
fn session_expires_after_its_interval_offline() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        // Expires.
        let (a, _) = connect_v5(&mut sim, shards - 1, persistent_v5("a", 10));
        sim.subscribe(a, "e/a", QoS::AtLeastOnce);
        // Comes back in time.
        let (b, _) = connect_v5(&mut sim, shards - 1, persistent_v5("b", 10));
        sim.subscribe(b, "e/b", QoS::AtLeastOnce);
        sim.close(a);
        sim.close(b);
        sim.publish(publisher, "e/a", "lost", QoS::AtLeastOnce);
        sim.advance(Duration::from_secs(9));
        let (b, present) = connect_v5(&mut sim, 0, persistent_v5("b", 10));
        assert!(present, "back within the interval");
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.stat(|s| s.sessions_expired), 1);
        assert_eq!(
            sim.stat(|s| s.dropped_session_ended),
            1,
            "the queued QoS 1 message"
        );
        let (a, present) = connect_v5(&mut sim, 0, persistent_v5("a", 10));
        assert!(!present, "expired");
        assert!(sim.received(a).is_empty());
        let ack = sim
            .publish(publisher, "e/a", "x", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(
            ack.reason_code,
            ReasonCode::NO_MATCHING_SUBSCRIBERS,
            "subscriptions ended with the session"
        );
        sim.publish(publisher, "e/b", "y", QoS::AtLeastOnce);
        assert_eq!(sim.received(b).len(), 1);
        assert!(!sim.is_closed(b));
    }
}

#[test]
fn v311_clean_session_0_expires_after_the_configured_interval() {
    let mut s = settings();
    s.session_expiry_interval = Duration::from_secs(60);
    let mut sim = Sim::new(2, s);
    let (c, _) = persistent_v311(&mut sim, 0, "old");
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.close(c);
    sim.advance(Duration::from_secs(59));
    let (c, present) = persistent_v311(&mut sim, 1, "old");
    assert!(present);
    sim.close(c);
    sim.advance(Duration::from_secs(60));
    let (_, present) = persistent_v311(&mut sim, 0, "old");
    assert!(!present);
    assert_eq!(sim.stat(|s| s.sessions_expired), 1);
}

#[test]
fn clean_start_discards_the_session() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (sub, _) = connect_v5(&mut sim, 0, persistent_v5("p", 300));
        sim.subscribe(sub, "c", QoS::AtLeastOnce);
        sim.close(sub);
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        sim.publish(publisher, "c", "queued", QoS::AtLeastOnce);

        let mut clean = persistent_v5("p", 300);
        clean.clean_start = true;
        let (sub, present) = connect_v5(&mut sim, shards - 1, clean);
        assert!(!present);
        assert!(
            sim.received(sub).is_empty(),
            "queued messages went with the session"
        );
        let ack = sim.publish(publisher, "c", "x", QoS::AtLeastOnce).unwrap();
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        sim.close(sub);
        // The new session (expiry 300) is there, empty.
        let (_, present) = connect_v5(&mut sim, 0, persistent_v5("p", 300));
        assert!(present);
    }
}

#[test]
fn v3_clean_session_1_ends_the_session_with_the_connection() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = sim.connect(0, ProtocolVersion::V3_1_1, "c", true, 0);
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    sim.close(c);
    assert_eq!(sim.shards[0].session_count(), 0);
    let (_, present) = persistent_v311(&mut sim, 1, "c");
    assert!(!present);
}

#[test]
fn disconnect_setting_session_expiry_after_zero_is_a_protocol_error() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = connect_v5(&mut sim, 1, persistent_v5("z", 0));
    sim.subscribe(c, "t", QoS::AtLeastOnce);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    sim.send(c, &Packet::Disconnect(d));
    sim.drive();
    let packets = sim.packets(c);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{packets:?}"
    );
    assert!(sim.is_closed(c));
    let (_, present) = connect_v5(&mut sim, 0, persistent_v5("z", 60));
    assert!(!present, "the expiry stayed zero: the session ended");
}

#[test]
fn disconnect_can_shorten_or_extend_the_session_expiry() {
    let mut sim = Sim::new(2, settings());
    // Shorten to zero: ends at once.
    let (c, _) = connect_v5(&mut sim, 0, persistent_v5("s", 300));
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(0);
    sim.send(c, &Packet::Disconnect(d));
    sim.drive();
    assert!(
        sim.packets(c).is_empty(),
        "a normal disconnect gets no answer"
    );
    assert!(sim.is_closed(c));
    let (c, present) = connect_v5(&mut sim, 1, persistent_v5("s", 10));
    assert!(!present);
    // Extend from 10 s to 100 s.
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(100);
    sim.send(c, &Packet::Disconnect(d));
    sim.drive();
    assert!(sim.is_closed(c));
    sim.advance(Duration::from_secs(50));
    let (_, present) = connect_v5(&mut sim, 0, persistent_v5("s", 10));
    assert!(present);
}

#[test]
fn incoming_qos2_awaiting_pubrel_is_still_forgotten_after_a_session_moves() {
    let mut s = settings();
    s.await_rel_timeout = Duration::from_secs(20);
    let mut sim = Sim::new(2, s);
    let (p, _) = connect_v5(&mut sim, 0, persistent_v5("p", 3600));
    sim.set_auto_ack(p, false);
    let mut publish = Publish::new("nobody", "x");
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = 9;
    sim.send(p, &Packet::Publish(publish));
    sim.drive();
    sim.close(p);
    let (p, present) = connect_v5(&mut sim, 1, persistent_v5("p", 3600));
    assert!(present);
    sim.advance(Duration::from_secs(21));
    assert_eq!(
        sim.stat(|s| s.dropped_await_rel_timeout),
        1,
        "awaiting_rel moved with the session but Timer::AwaitRel was not armed for it"
    );
    sim.send(p, &Packet::PubRel(Ack::new(9)));
    sim.drive();
    assert!(matches!(
        &sim.packets(p)[..],
        [Packet::PubComp(a)] if a.reason_code == ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
    ));
}
