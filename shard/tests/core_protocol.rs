//! Protocol errors after CONNECT and their reason codes, topic aliases, server limits, and
//! arbitrary splits of the input stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use bytes::BytesMut;
use net::mqtt::{Auth, Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions};
use sim::{ClientId, SHARD_COUNTS, Sim, settings};

fn only_disconnect(sim: &mut Sim, c: ClientId) -> ReasonCode {
    let packets = sim.packets(c);
    match &packets[..] {
        [Packet::Disconnect(d)] => d.reason_code,
        other => panic!("expected one DISCONNECT, got {other:?}"),
    }
}

/// Everyone but the culprit still exchanges messages.
fn others_unaffected(sim: &mut Sim, a: ClientId, b: ClientId, topic: &str) {
    sim.subscribe(b, topic, QoS::AtLeastOnce);
    let ack = sim
        .publish(a, topic, "still here", QoS::AtLeastOnce)
        .unwrap();
    assert!(ack.reason_code.is_success());
    assert_eq!(sim.received(b).len(), 1);
}

#[test]
fn malformed_bytes_after_connect() {
    let malformed: [&[u8]; 4] = [
        &[0x00, 0x00],                               // reserved packet type 0
        &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], // PUBLISH with QoS 3
        &[0x62, 0x02, 0x00, 0x00],                   // PUBREL with packet id 0
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],       // remaining length of five bytes
    ];
    for shards in SHARD_COUNTS {
        for bytes in malformed {
            let mut sim = Sim::new(shards, settings());
            let (bad, _) = sim.connect(0, ProtocolVersion::V5, "bad", true, 0);
            let (old, _) = sim.connect(0, ProtocolVersion::V3_1_1, "old", true, 0);
            let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
            let (b, _) = sim.connect(shards - 1, ProtocolVersion::V5, "b", true, 0);
            sim.send_bytes(bad, bytes);
            sim.send_bytes(old, bytes);
            sim.drive();
            assert_eq!(
                only_disconnect(&mut sim, bad),
                ReasonCode::MALFORMED_PACKET,
                "{bytes:02x?}"
            );
            assert!(sim.is_closed(bad));
            assert!(sim.packets(old).is_empty(), "3.1.1: just closed");
            assert!(sim.is_closed(old));
            assert_eq!(sim.stat(|s| s.protocol_errors), 2);
            others_unaffected(&mut sim, a, b, "ok");
        }
    }
}

#[test]
fn packets_before_the_malformed_one_are_processed() {
    let mut sim = Sim::new(2, settings());
    let (bad, _) = sim.connect(0, ProtocolVersion::V5, "bad", true, 0);
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let mut buf = BytesMut::new();
    let mut p = Publish::new("t", "before");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    Packet::Publish(p)
        .encode(ProtocolVersion::V5, &mut buf)
        .unwrap();
    buf.extend_from_slice(&[0x00, 0x00]);
    sim.send_bytes(bad, &buf);
    sim.drive();
    let packets = sim.packets(bad);
    assert!(
        matches!(&packets[..], [Packet::PubAck(_), Packet::Disconnect(d)] if d.reason_code == ReasonCode::MALFORMED_PACKET),
        "{packets:?}"
    );
    assert_eq!(sim.received(sub).len(), 1);
}

#[test]
fn packet_too_large() {
    let mut s = settings();
    s.max_packet_size = 128;
    let mut sim = Sim::new(2, s);
    let (c, ack) = sim.connect(1, ProtocolVersion::V5, "big", true, 0);
    assert_eq!(ack.properties.maximum_packet_size, Some(128));
    sim.send_publish(c, "t", vec![0u8; 200], QoS::AtMostOnce);
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, c), ReasonCode::PACKET_TOO_LARGE);
    assert!(sim.is_closed(c));
}

#[test]
fn auth_after_connect_is_a_protocol_error() {
    let mut sim = Sim::new(1, settings());
    let (c, _) = sim.connect(0, ProtocolVersion::V5, "auth", true, 0);
    sim.send(c, &Packet::Auth(Auth::default()));
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, c), ReasonCode::PROTOCOL_ERROR);
    assert!(sim.is_closed(c));
}

fn aliased(topic: &str, alias: u16, payload: &str) -> Publish {
    let mut p = Publish::new(topic.to_string(), payload.to_string());
    p.qos = QoS::AtLeastOnce;
    p.properties.topic_alias = Some(alias);
    p
}

#[test]
fn topic_alias_is_set_then_reused_with_an_empty_topic() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (sub, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        let (old, _) = sim.connect(shards - 1, ProtocolVersion::V3_1_1, "old", true, 0);
        sim.subscribe(sub, "ta/#", QoS::AtLeastOnce);
        sim.subscribe(old, "ta/#", QoS::AtLeastOnce);
        let acks = [
            sim.publish_with(publisher, aliased("ta/x", 1, "set")),
            sim.publish_with(publisher, aliased("", 1, "reuse")),
            sim.publish_with(publisher, aliased("ta/y", 1, "remap")),
            sim.publish_with(publisher, aliased("", 1, "reuse2")),
            sim.publish_with(publisher, aliased("ta/z", 2, "second")),
            sim.publish_with(publisher, aliased("", 2, "reuse3")),
            sim.publish_with(publisher, aliased("", 1, "reuse4")),
        ];
        for a in acks {
            assert_eq!(a.unwrap().reason_code, ReasonCode::SUCCESS);
        }
        for s in [sub, old] {
            let got = sim.received(s);
            let seen: Vec<(String, String)> = got
                .iter()
                .map(|p| {
                    (
                        p.topic.to_string(),
                        String::from_utf8(p.payload.to_vec()).unwrap(),
                    )
                })
                .collect();
            let want = [
                ("ta/x", "set"),
                ("ta/x", "reuse"),
                ("ta/y", "remap"),
                ("ta/y", "reuse2"),
                ("ta/z", "second"),
                ("ta/z", "reuse3"),
                ("ta/y", "reuse4"),
            ]
            .map(|(t, p)| (t.to_string(), p.to_string()));
            assert_eq!(seen, want);
            assert!(
                got.iter().all(|p| p.properties.topic_alias.is_none()),
                "the publisher's alias is not forwarded"
            );
        }
        assert!(!sim.is_closed(publisher));
    }
}

#[test]
fn topic_aliases_are_per_connection() {
    let mut sim = Sim::new(2, settings());
    let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(0, ProtocolVersion::V5, "b", true, 0);
    sim.publish_with(a, aliased("t", 3, "x"));
    sim.send_publish_with(b, aliased("", 3, "y"));
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, b), ReasonCode::PROTOCOL_ERROR);
    assert!(!sim.is_closed(a));
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = sim.connect(1, ProtocolVersion::V5, "c", true, 0);
    sim.send_publish_with(c, aliased("", 9, "x"));
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, c), ReasonCode::PROTOCOL_ERROR);
    assert!(sim.is_closed(c));
}

#[test]
fn topic_alias_above_maximum_or_zero_is_invalid() {
    let mut s = settings();
    s.max_topic_alias = 5;
    for alias in [6u16, 0] {
        let mut sim = Sim::new(2, s.clone());
        let (c, ack) = sim.connect(1, ProtocolVersion::V5, "c", true, 0);
        assert_eq!(ack.properties.topic_alias_maximum, Some(5));
        sim.publish_with(c, aliased("t", 5, "max is fine"));
        assert!(!sim.is_closed(c));
        sim.send_publish_with(c, aliased("t", alias, "x"));
        sim.drive();
        assert_eq!(
            only_disconnect(&mut sim, c),
            ReasonCode::TOPIC_ALIAS_INVALID,
            "alias {alias}"
        );
        assert!(sim.is_closed(c));
    }
}

#[test]
fn qos_above_maximum_is_refused() {
    let mut s = settings();
    s.max_qos_allowed = QoS::AtLeastOnce;
    let mut sim = Sim::new(2, s);
    let (c, ack) = sim.connect(0, ProtocolVersion::V5, "c", true, 0);
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    let sub = sim.subscribe(c, "t", QoS::ExactlyOnce);
    assert_eq!(sub.reason_codes, [ReasonCode::GRANTED_QOS_1]);
    sim.send_publish(c, "t", "x", QoS::ExactlyOnce);
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, c), ReasonCode::QOS_NOT_SUPPORTED);
}

#[test]
fn shared_subscriptions_are_refused_when_disabled() {
    let mut st = settings();
    st.shared_subscription = false;
    let mut sim = Sim::new(2, st);
    let (v5, _) = sim.connect(0, ProtocolVersion::V5, "v5", true, 0);
    let (v3, _) = sim.connect(1, ProtocolVersion::V3_1_1, "v3", true, 0);
    let o = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    let ack = sim.subscribe_with(v5, &[("$share/g/t", o), ("t", o)], None);
    assert_eq!(
        ack.reason_codes,
        [
            ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            ReasonCode::GRANTED_QOS_1
        ]
    );
    let ack = sim.subscribe_with(v3, &[("$share/g/t", o)], None);
    assert_eq!(ack.reason_codes[0].to_v3_suback(), 0x80);
    assert!(!sim.is_closed(v5) && !sim.is_closed(v3));
}

#[test]
fn topic_levels_limit() {
    let mut s = settings();
    s.max_topic_levels = 3;
    let mut sim = Sim::new(1, s);
    let (c, _) = sim.connect(0, ProtocolVersion::V5, "c", true, 0);
    let ack = sim.subscribe(c, "a/b/c/d", QoS::AtMostOnce);
    assert_eq!(ack.reason_codes, [ReasonCode::TOPIC_FILTER_INVALID]);
    sim.publish(c, "a/b/c", "ok", QoS::AtMostOnce);
    assert!(!sim.is_closed(c));
    sim.send_publish(c, "a/b/c/d", "x", QoS::AtMostOnce);
    sim.drive();
    assert_eq!(only_disconnect(&mut sim, c), ReasonCode::TOPIC_NAME_INVALID);
}

#[test]
fn input_one_byte_at_a_time() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        let (sub, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        sim.subscribe(sub, "bytes/#", QoS::ExactlyOnce);
        let mut buf = BytesMut::new();
        for i in 0..5u16 {
            let mut p = Publish::new(format!("bytes/{i}"), vec![i as u8; usize::from(i) * 50]);
            p.qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(i % 3)];
            p.packet_id = if p.qos == QoS::AtMostOnce { 0 } else { 100 + i };
            Packet::Publish(p)
                .encode(ProtocolVersion::V5, &mut buf)
                .unwrap();
        }
        for b in buf.iter() {
            sim.send_bytes(publisher, &[*b]);
            sim.drive();
        }
        let got = sim.received(sub);
        assert_eq!(got.len(), 5);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.topic, format!("bytes/{i}").as_str());
            assert_eq!(p.payload.len(), i * 50);
        }
        assert!(!sim.is_closed(publisher));
    }
}

#[test]
fn read_budget_yields_and_resumes() {
    let mut s = settings();
    s.max_packets_per_read = 1;
    let mut sim = Sim::new(2, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "rb", QoS::AtLeastOnce);
    for i in 0..50 {
        sim.send_publish(publisher, "rb", format!("{i}"), QoS::AtLeastOnce);
    }
    assert_eq!(sim.feed(publisher), shard::Read::More);
    sim.drive();
    assert_eq!(sim.received(sub).len(), 50);
    let acks = sim
        .packets(publisher)
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(_)))
        .count();
    assert_eq!(acks, 50);
}

#[test]
fn malformed_topic_filters_are_refused_one_by_one() {
    for (v, invalid) in [
        (ProtocolVersion::V5, ReasonCode::TOPIC_FILTER_INVALID),
        (ProtocolVersion::V3_1_1, ReasonCode(0x80)),
    ] {
        let mut sim = Sim::new(2, settings());
        let (c, _) = sim.connect(0, v, "filters", true, 0);
        let o = sim::opts(QoS::AtLeastOnce);
        let ack = sim.subscribe_with(c, &[("a/#/b", o), ("ok/+", o), ("$share//x", o)], None);
        assert_eq!(
            ack.reason_codes,
            [invalid, ReasonCode::GRANTED_QOS_1, invalid],
            "{v:?}"
        );
        assert!(!sim.is_closed(c), "the connection stays");
        // The valid one works.
        let (p, _) = sim.connect(1, ProtocolVersion::V5, "pub", true, 0);
        sim.publish(p, "ok/1", "x", QoS::AtLeastOnce);
        assert_eq!(sim.received(c).len(), 1);
        if v == ProtocolVersion::V5 {
            let un = sim.unsubscribe(c, "a+");
            assert_eq!(un.reason_codes, [ReasonCode::TOPIC_FILTER_INVALID]);
        }
    }
}

#[test]
fn subscription_identifiers_can_be_switched_off() {
    let mut st = settings();
    st.subscription_identifiers = false;
    let mut sim = Sim::new(2, st);
    let (c, ack) = sim.connect(0, ProtocolVersion::V5, "ids", true, 0);
    assert_eq!(
        ack.properties.subscription_identifiers_available,
        Some(false)
    );
    let o = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    };
    let ack = sim.subscribe_with(c, &[("a", o), ("$share/g/b", o)], Some(7));
    assert_eq!(
        ack.reason_codes,
        [ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED; 2]
    );
    let ack = sim.subscribe_with(c, &[("a", o)], None);
    assert_eq!(ack.reason_codes, [ReasonCode::GRANTED_QOS_1]);
}

#[test]
fn response_information_only_when_requested_and_configured() {
    let mut st = settings();
    st.response_information = "reply/".to_owned();
    let mut sim = Sim::new(1, st);
    let mut c = sim::connect_v5("asks");
    c.properties.request_response_information = Some(true);
    let (_, ack) = sim.connect_with(0, c);
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("reply/")
    );
    let (_, ack) = sim.connect(0, ProtocolVersion::V5, "quiet", true, 0);
    assert_eq!(ack.properties.response_information, None);
}

#[test]
fn protocol_errors_carry_a_reason_string_unless_the_client_declined() {
    for (declined, want) in [(false, true), (true, false)] {
        let mut sim = Sim::new(1, settings());
        let mut c = sim::connect_v5("culprit");
        if declined {
            c.properties.request_problem_information = Some(false);
        }
        let (id, _) = sim.connect_with(0, c);
        // PUBLISH with QoS 3.
        sim.send_bytes(id, &[0x36, 0x04, 0x00, 0x01, b'a', 0x00]);
        sim.drive();
        let packets = sim.packets(id);
        let Some(Packet::Disconnect(d)) = packets.last() else {
            panic!("expected DISCONNECT, got {packets:?}");
        };
        assert_eq!(d.reason_code, ReasonCode::MALFORMED_PACKET);
        match &d.properties.reason_string {
            Some(s) => {
                assert!(want, "declined, yet: {s}");
                assert!(s.contains("MQTT-3.3.1-4"), "{s}");
            }
            None => assert!(!want),
        }
    }
}
