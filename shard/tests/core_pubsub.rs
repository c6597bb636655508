//! Publish and subscribe across shards: QoS 0/1/2 delivery, downgrade, wildcards, `$` topics,
//! overlapping subscriptions, No Local, Retain As Published, "no matching subscribers",
//! unsubscribe, and route cleanup between shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use net::mqtt::{ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions};
use sim::{ClientId, SHARD_COUNTS, Sim, opts, settings};

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn topics(p: &[Publish]) -> Vec<String> {
    p.iter().map(|p| p.topic.to_string()).collect()
}

/// Publisher on shard 0; subscribers on the last shard and on shard 0.
#[test]
fn qos_0_1_2_delivery_across_and_within_shards() {
    for shards in SHARD_COUNTS {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut sim = Sim::new(shards, settings());
            let (publisher, _) = sim.connect(0, v, "pub", true, 0);
            let (far, _) = sim.connect(shards - 1, v, "far", true, 0);
            let (near, _) = sim.connect(0, v, "near", true, 0);
            for s in [far, near] {
                let ack = sim.subscribe(s, "t/x", QoS::ExactlyOnce);
                assert_eq!(ack.reason_codes, vec![ReasonCode::GRANTED_QOS_2]);
            }
            for qos in QOS {
                let payload = format!("{shards}-{v:?}-{qos:?}");
                let ack = sim.publish(publisher, "t/x", payload.clone(), qos);
                match qos {
                    QoS::AtMostOnce => assert!(ack.is_none()),
                    _ => assert_eq!(ack.unwrap().reason_code, ReasonCode::SUCCESS),
                }
                for s in [far, near] {
                    let got = sim.received(s);
                    assert_eq!(got.len(), 1, "{shards} shards {v:?} {qos:?}: {got:?}");
                    assert_eq!(got[0].topic, "t/x");
                    assert_eq!(got[0].qos, qos);
                    assert_eq!(&got[0].payload[..], payload.as_bytes());
                    assert!(!got[0].dup);
                    assert!(!got[0].retain);
                    assert_eq!(got[0].packet_id != 0, qos != QoS::AtMostOnce);
                }
                assert!(sim.received(publisher).is_empty());
            }
            // The QoS 2 flow completed on both sides: nothing left inflight, nothing
            // retransmitted later.
            sim.advance(settings().retry_interval * 3);
            assert!(sim.received(far).is_empty());
            assert!(sim.received(near).is_empty());
            assert_eq!(sim.stat(|s| s.messages_retransmitted), 0);
            let forwarded = if shards > 1 { 3 } else { 0 };
            assert_eq!(sim.stat(|s| s.messages_forwarded), forwarded);
        }
    }
}

#[test]
fn delivery_is_downgraded_to_the_subscription_qos() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let mut subs = Vec::new();
        for (i, sub_qos) in QOS.into_iter().enumerate() {
            let shard = (i as u16 + 1) % shards;
            let (s, _) = sim.connect(shard, ProtocolVersion::V5, &format!("s{i}"), true, 0);
            sim.subscribe(s, "d", sub_qos);
            subs.push((s, sub_qos));
        }
        for pub_qos in QOS {
            sim.publish(publisher, "d", "x", pub_qos);
            for &(s, sub_qos) in &subs {
                let got = sim.received(s);
                assert_eq!(got.len(), 1);
                assert_eq!(
                    got[0].qos,
                    pub_qos.min(sub_qos),
                    "pub {pub_qos:?} sub {sub_qos:?}"
                );
            }
        }
    }
}

#[test]
fn wildcard_subscriptions() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V3_1_1, "pub", true, 0);
        let cases: [(&str, &[&str]); 6] = [
            ("a/+/c", &["a/b/c", "a//c"]),
            ("a/#", &["a", "a/b", "a/b/c", "a//c"]),
            (
                "#",
                &["a", "a/b", "a/b/c", "a//c", "x/y", "/lead", "b/b/c/d"],
            ),
            ("+/+", &["a/b", "x/y", "/lead"]),
            ("+", &["a"]),
            ("/+", &["/lead"]),
        ];
        let mut subs = Vec::new();
        for (i, (filter, _)) in cases.iter().enumerate() {
            let shard = i as u16 % shards;
            let (s, _) = sim.connect(shard, ProtocolVersion::V3_1_1, &format!("w{i}"), true, 0);
            sim.subscribe(s, filter, QoS::AtLeastOnce);
            subs.push(s);
        }
        let published = ["a", "a/b", "a/b/c", "a//c", "x/y", "/lead", "b/b/c/d"];
        for t in published {
            sim.publish(publisher, t, t, QoS::AtLeastOnce);
        }
        for (i, (filter, expected)) in cases.iter().enumerate() {
            let got = topics(&sim.received(subs[i]));
            assert_eq!(got, *expected, "{filter} on {shards} shards");
        }
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (hash, _) = sim.connect(shards - 1, ProtocolVersion::V5, "hash", true, 0);
        let (plus, _) = sim.connect(shards - 1, ProtocolVersion::V5, "plus", true, 0);
        let (sys, _) = sim.connect(0, ProtocolVersion::V5, "sys", true, 0);
        sim.subscribe(hash, "#", QoS::AtLeastOnce);
        sim.subscribe(plus, "+/x", QoS::AtLeastOnce);
        sim.subscribe(sys, "$SYS/#", QoS::AtLeastOnce);
        let ack = sim
            .publish(publisher, "$SYS/x", "s", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        sim.publish(publisher, "a/x", "a", QoS::AtLeastOnce);
        assert_eq!(topics(&sim.received(hash)), ["a/x"]);
        assert_eq!(topics(&sim.received(plus)), ["a/x"]);
        assert_eq!(topics(&sim.received(sys)), ["$SYS/x"]);
    }
}

#[test]
fn overlapping_subscriptions_deliver_once_with_max_qos_and_all_ids() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (s, _) = sim.connect(shards - 1, ProtocolVersion::V5, "over", true, 0);
        sim.subscribe_with(s, &[("a/+", opts(QoS::AtLeastOnce))], Some(1));
        sim.subscribe_with(s, &[("a/b", opts(QoS::ExactlyOnce))], Some(2));
        sim.subscribe_with(s, &[("#", opts(QoS::AtMostOnce))], None);
        sim.subscribe_with(s, &[("+/b", opts(QoS::AtMostOnce))], Some(7));
        sim.publish(publisher, "a/b", "x", QoS::ExactlyOnce);
        let got = sim.received(s);
        assert_eq!(
            got.len(),
            1,
            "one delivery for overlapping subscriptions: {got:?}"
        );
        assert_eq!(got[0].qos, QoS::ExactlyOnce);
        let mut ids = got[0].properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2, 7]);

        // Only "a/+" and "#" match: QoS 1, id 1.
        sim.publish(publisher, "a/c", "y", QoS::ExactlyOnce);
        let got = sim.received(s);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        assert_eq!(got[0].properties.subscription_identifiers, vec![1]);

        // Only "#": no identifier.
        sim.publish(publisher, "z", "z", QoS::ExactlyOnce);
        let got = sim.received(s);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::AtMostOnce);
        assert!(got[0].properties.subscription_identifiers.is_empty());
    }
}

#[test]
fn no_local() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (me, _) = sim.connect(shards - 1, ProtocolVersion::V5, "me", true, 0);
        let (other, _) = sim.connect(0, ProtocolVersion::V5, "other", true, 0);
        let nl = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            ..SubscriptionOptions::default()
        };
        sim.subscribe_with(me, &[("nl", nl)], None);
        sim.subscribe_with(other, &[("nl", nl)], None);
        sim.subscribe(me, "local", QoS::AtLeastOnce);
        sim.publish(me, "nl", "mine", QoS::AtLeastOnce);
        assert!(
            sim.received(me).is_empty(),
            "No Local: not sent back to the publisher"
        );
        assert_eq!(sim.received(other).len(), 1);
        sim.publish(other, "nl", "theirs", QoS::AtLeastOnce);
        assert_eq!(
            sim.received(me).len(),
            1,
            "No Local only concerns one's own messages"
        );
        assert!(sim.received(other).is_empty());
        // Without No Local a client gets its own messages.
        sim.publish(me, "local", "echo", QoS::AtLeastOnce);
        assert_eq!(topics(&sim.received(me)), ["local"]);
        // No Local on one of two overlapping subscriptions: the other still delivers.
        sim.subscribe_with(me, &[("+", opts(QoS::AtMostOnce))], None);
        sim.publish(me, "nl", "both", QoS::AtLeastOnce);
        let got = sim.received(me);
        assert_eq!(got.len(), 1, "'+' has no No Local: {got:?}");
        assert_eq!(
            got[0].qos,
            QoS::AtMostOnce,
            "only the '+' subscription applies"
        );
    }
}

#[test]
fn retain_as_published_for_live_messages() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (rap, _) = sim.connect(shards - 1, ProtocolVersion::V5, "rap", true, 0);
        let (plain, _) = sim.connect(shards - 1, ProtocolVersion::V5, "plain", true, 0);
        let (old, _) = sim.connect(0, ProtocolVersion::V3_1_1, "old", true, 0);
        let o = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            retain_as_published: true,
            ..SubscriptionOptions::default()
        };
        sim.subscribe_with(rap, &[("r", o)], None);
        sim.subscribe(plain, "r", QoS::AtLeastOnce);
        sim.subscribe(old, "r", QoS::AtLeastOnce);

        let mut p = Publish::new("r", "retained");
        p.qos = QoS::AtLeastOnce;
        p.retain = true;
        sim.publish_with(publisher, p);
        sim.publish(publisher, "r", "live", QoS::AtLeastOnce);

        let got = sim.received(rap);
        assert_eq!(
            got.iter().map(|p| p.retain).collect::<Vec<_>>(),
            [true, false]
        );
        for s in [plain, old] {
            let got = sim.received(s);
            assert_eq!(
                got.iter().map(|p| p.retain).collect::<Vec<_>>(),
                [false, false]
            );
        }
    }
}

#[test]
fn v5_no_matching_subscribers_reason_code() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (old, _) = sim.connect(0, ProtocolVersion::V3_1_1, "old", true, 0);
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let ack = sim.publish(publisher, "nobody", "x", qos).unwrap();
            assert_eq!(
                ack.reason_code,
                ReasonCode::NO_MATCHING_SUBSCRIBERS,
                "{qos:?}"
            );
            let ack = sim.publish(old, "nobody", "x", qos).unwrap();
            assert_eq!(
                ack.reason_code,
                ReasonCode::SUCCESS,
                "3.1.1 has no reason code"
            );
        }
        // The QoS 2 flow still completes after 0x10: PUBREL gets PUBCOMP 0x00.
        assert_eq!(sim.stat(|s| s.dropped_no_subscribers), 4);
        let (s, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        sim.subscribe(s, "nobody", QoS::AtMostOnce);
        let ack = sim
            .publish(publisher, "nobody", "x", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    }
}

#[test]
fn qos2_with_no_subscribers_completes() {
    let mut sim = Sim::new(2, settings());
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.set_auto_ack(publisher, false);
    let pid = sim.send_publish(publisher, "nobody", "x", QoS::ExactlyOnce);
    sim.drive();
    let packets = sim.packets(publisher);
    assert!(
        matches!(&packets[..], [net::mqtt::Packet::PubRec(a)] if a.packet_id == pid
            && a.reason_code == ReasonCode::NO_MATCHING_SUBSCRIBERS),
        "{packets:?}"
    );
    sim.send(
        publisher,
        &net::mqtt::Packet::PubRel(net::mqtt::Ack::new(pid)),
    );
    sim.drive();
    let packets = sim.packets(publisher);
    assert!(
        matches!(&packets[..], [net::mqtt::Packet::PubComp(a)] if a.packet_id == pid
            && a.reason_code == ReasonCode::SUCCESS),
        "{packets:?}"
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (s, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        let (old, _) = sim.connect(shards - 1, ProtocolVersion::V3_1_1, "old", true, 0);
        sim.subscribe(s, "u/+", QoS::AtLeastOnce);
        sim.subscribe(old, "u/+", QoS::AtLeastOnce);
        sim.publish(publisher, "u/1", "a", QoS::AtLeastOnce);
        assert_eq!(sim.received(s).len(), 1);
        assert_eq!(sim.received(old).len(), 1);

        let ack = sim.unsubscribe(s, "u/+");
        assert_eq!(ack.reason_codes, vec![ReasonCode::SUCCESS]);
        let ack = sim.unsubscribe(s, "u/+");
        assert_eq!(ack.reason_codes, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        let ack = sim.unsubscribe(s, "never/subscribed");
        assert_eq!(ack.reason_codes, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        let ack = sim.unsubscribe(old, "u/+");
        assert!(ack.reason_codes.is_empty(), "3.1.1 UNSUBACK has no payload");

        let ack = sim
            .publish(publisher, "u/1", "b", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        assert!(sim.received(s).is_empty());
        assert!(sim.received(old).is_empty());
    }
}

#[test]
fn resubscribing_replaces_and_one_unsubscribe_removes() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (s, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        sim.subscribe(s, "r/#", QoS::AtMostOnce);
        sim.subscribe(s, "r/#", QoS::ExactlyOnce);
        sim.publish(publisher, "r/1", "a", QoS::ExactlyOnce);
        let got = sim.received(s);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].qos,
            QoS::ExactlyOnce,
            "the second SUBSCRIBE replaced the first"
        );
        sim.unsubscribe(s, "r/#");
        sim.publish(publisher, "r/1", "b", QoS::ExactlyOnce);
        assert!(sim.received(s).is_empty());
    }
}

fn forwarded(sim: &Sim) -> u64 {
    sim.stat(|s| s.messages_forwarded)
}

#[test]
fn route_cleanup_after_last_local_subscriber_leaves() {
    for shards in [2u16, 4] {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let remote = shards - 1;
        let (a, _) = sim.connect(remote, ProtocolVersion::V5, "a", true, 0);
        let (b, _) = sim.connect(remote, ProtocolVersion::V5, "b", true, 0);
        sim.subscribe(a, "rc/+", QoS::AtLeastOnce);
        sim.subscribe(b, "rc/x", QoS::AtLeastOnce);
        sim.publish(publisher, "rc/x", "1", QoS::AtLeastOnce);
        assert_eq!(
            forwarded(&sim),
            1,
            "one forward per shard, not per subscriber"
        );
        assert_eq!(sim.received(a).len(), 1);
        assert_eq!(sim.received(b).len(), 1);

        sim.unsubscribe(a, "rc/+");
        sim.publish(publisher, "rc/x", "2", QoS::AtLeastOnce);
        assert_eq!(forwarded(&sim), 2, "b still subscribes on the remote shard");
        assert!(sim.received(a).is_empty());
        assert_eq!(sim.received(b).len(), 1);
        sim.publish(publisher, "rc/y", "3", QoS::AtLeastOnce);
        assert_eq!(forwarded(&sim), 2, "rc/+ route is gone");

        sim.unsubscribe(b, "rc/x");
        let ack = sim
            .publish(publisher, "rc/x", "4", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        assert_eq!(forwarded(&sim), 2, "no route left: nothing forwarded");

        // A session ending (clean start, socket closed) removes its routes too.
        let (c, _) = sim.connect(remote, ProtocolVersion::V5, "c", true, 0);
        sim.subscribe(c, "rc/z", QoS::AtLeastOnce);
        sim.publish(publisher, "rc/z", "5", QoS::AtLeastOnce);
        assert_eq!(forwarded(&sim), 3);
        sim.close(c);
        let ack = sim
            .publish(publisher, "rc/z", "6", QoS::AtLeastOnce)
            .unwrap();
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        assert_eq!(forwarded(&sim), 3);
    }
}

#[test]
fn every_shard_publishes_to_every_shard() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let clients: Vec<ClientId> = (0..shards)
            .map(|s| {
                sim.connect(s, ProtocolVersion::V5, &format!("m{s}"), true, 0)
                    .0
            })
            .collect();
        for &c in &clients {
            sim.subscribe(c, "mesh/#", QoS::AtLeastOnce);
        }
        for (i, &c) in clients.iter().enumerate() {
            sim.send_publish(c, &format!("mesh/{i}"), "x", QoS::AtLeastOnce);
        }
        sim.drive();
        for &c in &clients {
            let mut got = topics(&sim.received(c));
            got.sort();
            let want: Vec<String> = (0..shards).map(|i| format!("mesh/{i}")).collect();
            assert_eq!(got, want);
        }
    }
}
