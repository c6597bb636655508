//! CONNECT and CONNACK: versions, v5 properties, client identifiers, refusals, the CONNECT
//! timeout, and what happens before CONNECT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use bytes::BytesMut;
use net::mqtt::{Connect, Packet, ProtocolVersion, ReasonCode};
use sim::{SHARD_COUNTS, Sim, VERSIONS, settings};

fn encoded(version: ProtocolVersion, packet: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    packet.encode(version, &mut b).unwrap();
    b
}

#[test]
fn connack_for_every_version_on_every_shard() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        for shard in 0..shards {
            for v in VERSIONS {
                let id = format!("c-{shard}-{v:?}");
                let (c, ack) = sim.connect(shard, v, &id, true, 60);
                assert_eq!(ack.reason_code, ReasonCode::SUCCESS, "{v:?}");
                assert!(!ack.session_present);
                assert!(!sim.is_closed(c));
                assert!(sim.packets(c).is_empty(), "nothing but CONNACK");
                if v != ProtocolVersion::V5 {
                    assert!(ack.properties.is_empty(), "no properties before v5");
                }
            }
        }
        assert_eq!(
            sim.stat(|s| s.connections_established),
            u64::from(shards) * 3
        );
    }
}

#[test]
fn v5_connack_properties() {
    let mut s = settings();
    s.max_packet_size = 64 * 1024;
    s.max_topic_alias = 10;
    s.max_awaiting_rel = 20;
    let mut sim = Sim::new(2, s);
    let (_, ack) = sim.connect(1, ProtocolVersion::V5, "props", true, 30);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, Some(20));
    assert_eq!(p.maximum_packet_size, Some(64 * 1024));
    assert_eq!(p.topic_alias_maximum, Some(10));
    assert_eq!(p.assigned_client_identifier, None, "the client gave an id");
    assert_eq!(p.maximum_qos, None, "QoS 2 is supported: no Maximum QoS");
    assert_eq!(p.retain_available, None);
    assert_eq!(p.server_keep_alive, None);
}

#[test]
fn v5_empty_client_id_is_assigned_and_unique_across_shards() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(shards, settings());
        let mut assigned = Vec::new();
        for i in 0..8u16 {
            let shard = i % shards;
            let (c, ack) = sim.connect(shard, ProtocolVersion::V5, "", true, 0);
            let id = ack
                .properties
                .assigned_client_identifier
                .expect("v5 empty id: Assigned Client Identifier")
                .to_string();
            assert!(!id.is_empty());
            assert!(!assigned.contains(&id), "{id} assigned twice");
            assigned.push(id.clone());
            // The assigned id is a working session: a subscription gets messages.
            sim.subscribe(c, &format!("a/{i}"), net::mqtt::QoS::AtLeastOnce);
        }
        // All of them stay connected: no assigned id took another's session over.
        assert_eq!(sim.stat(|s| s.takeovers), 0);
        for id in &assigned {
            assert_eq!(sim.live_connections(id).len(), 1, "{id}");
        }
    }
}

#[test]
fn v311_empty_id_with_clean_session_0_gets_return_code_2_and_close() {
    let mut sim = Sim::new(2, settings());
    let mut c = Connect::new(ProtocolVersion::V3_1_1, "");
    c.clean_start = false;
    let (id, ack) = sim.connect_with(1, c);
    assert_eq!(ack.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(ack.reason_code.to_v3_connack(), 2);
    assert!(!ack.session_present);
    assert!(sim.is_closed(id));
    assert_eq!(sim.stat(|s| s.connections_refused), 1);
    assert_eq!(sim.shards[1].connection_count(), 0);

    // With Clean Session 1 an empty id is fine in 3.1.1.
    let (_, ack) = sim.connect(0, ProtocolVersion::V3_1_1, "", true, 0);
    assert!(ack.reason_code.is_success());
}

#[test]
fn v31_empty_id_is_refused() {
    let mut sim = Sim::new(1, settings());
    let (id, ack) = sim.connect_with(0, Connect::new(ProtocolVersion::V3_1, ""));
    assert_eq!(ack.reason_code.to_v3_connack(), 2);
    assert!(sim.is_closed(id));
}

#[test]
fn unsupported_protocol_level_6_gets_return_code_1_and_close() {
    let mut sim = Sim::new(2, settings());
    let c = sim.connect_raw(1);
    let mut bytes = encoded(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V3_1_1, "lvl6"))),
    );
    assert_eq!(&bytes[2..9], b"\x00\x04MQTT\x04");
    bytes[8] = 6;
    sim.expect_version(c, ProtocolVersion::V3_1_1);
    sim.send_bytes(c, &bytes);
    sim.drive();
    let packets = sim.packets(c);
    assert_eq!(packets.len(), 1, "{packets:?}");
    let Packet::ConnAck(ack) = &packets[0] else {
        panic!("{packets:?}")
    };
    assert_eq!(ack.reason_code.to_v3_connack(), 1);
    assert!(sim.is_closed(c));
    assert_eq!(sim.shards[1].connection_count(), 0);
}

#[test]
fn unsupported_protocol_with_level_5_gets_v5_connack_0x84_and_close() {
    let mut sim = Sim::new(2, settings());
    let c = sim.connect_raw(0);
    // "MQIsdp" with level 5: level 5 says the client reads v5 CONNACKs.
    let mut bytes = encoded(
        ProtocolVersion::V3_1,
        &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V3_1, "lvl5"))),
    );
    assert_eq!(&bytes[2..11], b"\x00\x06MQIsdp\x03");
    bytes[10] = 5;
    sim.expect_version(c, ProtocolVersion::V5);
    sim.send_bytes(c, &bytes);
    sim.drive();
    let packets = sim.packets(c);
    assert_eq!(packets.len(), 1, "{packets:?}");
    let Packet::ConnAck(ack) = &packets[0] else {
        panic!("{packets:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert!(sim.is_closed(c));
}

#[test]
fn connect_timeout_closes_a_silent_connection() {
    for shards in SHARD_COUNTS {
        let s = settings();
        let idle = s.idle_timeout;
        let mut sim = Sim::new(shards, s);
        let silent = sim.connect_raw(shards - 1);
        // A connection that sent half a CONNECT is just as idle.
        let partial = sim.connect_raw(0);
        let bytes = encoded(
            ProtocolVersion::V5,
            &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V5, "slow"))),
        );
        sim.send_bytes(partial, &bytes[..bytes.len() - 1]);
        // One that connects in time is not affected.
        let (ok, _) = sim.connect(0, ProtocolVersion::V5, "in-time", true, 0);

        sim.advance(idle - Duration::from_millis(1));
        assert!(!sim.is_closed(silent));
        assert!(!sim.is_closed(partial));
        sim.advance(Duration::from_millis(1));
        assert!(sim.is_closed(silent));
        assert!(sim.is_closed(partial));
        assert!(sim.packets(silent).is_empty());
        assert!(sim.packets(partial).is_empty());
        assert!(!sim.is_closed(ok));
        assert_eq!(sim.stat(|s| s.connect_timeouts), 2);
        // Much later, the connected client is still there (keep alive 0).
        sim.advance(Duration::from_secs(3600));
        assert!(!sim.is_closed(ok));
    }
}

#[test]
fn first_packet_not_connect_closes() {
    let mut sim = Sim::new(2, settings());
    for bytes in [
        &[0xC0u8, 0x00][..],                               // PINGREQ
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'],       // PUBLISH
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE
    ] {
        let c = sim.connect_raw(1);
        sim.send_bytes(c, bytes);
        sim.drive();
        assert!(sim.is_closed(c), "{bytes:02x?}");
        assert!(sim.peek(c).is_empty());
        assert_eq!(sim.client(c).bytes_received, 0, "no CONNACK, nothing");
    }
    assert_eq!(sim.shards[1].connection_count(), 0);
    assert_eq!(sim.stat(|s| s.protocol_errors), 3);
}

#[test]
fn connect_one_byte_at_a_time() {
    for v in VERSIONS {
        let mut sim = Sim::new(2, settings());
        let c = sim.connect_raw(0);
        sim.expect_version(c, v);
        let bytes = encoded(v, &Packet::Connect(Box::new(Connect::new(v, "bytewise"))));
        for (i, b) in bytes.iter().enumerate() {
            assert!(sim.take_connack(c).is_none(), "CONNACK before byte {i}");
            sim.send_bytes(c, &[*b]);
            sim.drive();
        }
        let ack = sim.take_connack(c).expect("CONNACK");
        assert!(ack.reason_code.is_success());
        assert!(!sim.is_closed(c));
    }
}

#[test]
fn second_connect_is_a_protocol_error() {
    let mut sim = Sim::new(2, settings());
    let (c, _) = sim.connect(1, ProtocolVersion::V5, "twice", true, 0);
    sim.send(
        c,
        &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V5, "twice"))),
    );
    sim.drive();
    let packets = sim.packets(c);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{packets:?}"
    );
    assert!(sim.is_closed(c));
}

#[test]
fn socket_closed_while_registering_leaves_nothing_behind() {
    // The registry owner is another shard, so the connection waits (Paused) for the answer.
    let mut sim = Sim::new(2, settings());
    let id = sim.id_owned_by("reg", 1);
    let c = sim.connect_raw(0);
    sim.send(
        c,
        &Packet::Connect(Box::new(Connect::new(ProtocolVersion::V5, id.clone()))),
    );
    assert_eq!(sim.feed(c), net_read_paused());
    sim.close_quiet(c);
    sim.drive();
    assert_eq!(sim.shards[0].connection_count(), 0);
    assert_eq!(
        sim.shards[0].session_count(),
        0,
        "clean start session ends with the socket"
    );
    // The id is free again: a new connection gets it without a takeover.
    let (again, ack) = sim.connect(0, ProtocolVersion::V5, &id, true, 0);
    assert!(!ack.session_present);
    assert_eq!(sim.stat(|s| s.takeovers), 0);
    assert!(!sim.is_closed(again));
}

#[test]
fn persistent_session_survives_socket_closed_while_registering() {
    let mut sim = Sim::new(2, settings());
    let id = sim.id_owned_by("reg-p", 1);
    let c = sim.connect_raw(0);
    sim.send(c, &Packet::Connect(Box::new(sim::persistent_v5(&id, 600))));
    assert_eq!(sim.feed(c), net_read_paused());
    sim.close_quiet(c);
    sim.drive();
    assert_eq!(sim.shards[0].connection_count(), 0);
    let (_, ack) = sim.connect_with(1, sim::persistent_v5(&id, 600));
    assert!(ack.reason_code.is_success());
    assert!(
        ack.session_present,
        "the session created for the closed socket is kept"
    );
}

fn net_read_paused() -> shard::Read {
    shard::Read::Paused
}

#[test]
fn refused_connects_get_the_reason_code_the_version_can_carry() {
    use net::mqtt::{LastWill, QoS, WillProperties};
    let mut s = settings();
    s.max_clientid_len = 8;
    s.retain_available = false;
    s.max_qos_allowed = QoS::AtLeastOnce;
    let will = |retain: bool, qos: QoS| LastWill {
        topic: "will".into(),
        payload: "bye".into(),
        qos,
        retain,
        properties: WillProperties::default(),
    };
    type MakeConnect = Box<dyn Fn(ProtocolVersion) -> Connect>;
    let cases: Vec<(&str, MakeConnect, ReasonCode, u8)> = vec![
        (
            "client id too long",
            Box::new(|v| Connect::new(v, "much-too-long")),
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            2,
        ),
        (
            "will retain without retain support",
            Box::new(move |v| {
                let mut c = Connect::new(v, "w1");
                c.will = Some(will(true, QoS::AtMostOnce));
                c
            }),
            ReasonCode::RETAIN_NOT_SUPPORTED,
            3,
        ),
        (
            "will QoS above the maximum",
            Box::new(move |v| {
                let mut c = Connect::new(v, "w2");
                c.will = Some(will(false, QoS::ExactlyOnce));
                c
            }),
            ReasonCode::QOS_NOT_SUPPORTED,
            3,
        ),
    ];
    for (what, make, rc, v3_code) in &cases {
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut sim = Sim::new(2, s.clone());
            let (c, ack) = sim.connect_with(1, make(v));
            assert!(sim.is_closed(c), "{what} {v:?}");
            assert!(!ack.session_present);
            if v == ProtocolVersion::V5 {
                assert_eq!(ack.reason_code, *rc, "{what}");
            } else {
                assert_eq!(ack.reason_code.to_v3_connack(), *v3_code, "{what}");
            }
            assert_eq!(sim.shards[1].session_count(), 0);
        }
    }
    // v5 only: an authentication method nobody configured.
    let mut sim = Sim::new(1, settings());
    let mut c = Connect::new(ProtocolVersion::V5, "auth");
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (id, ack) = sim.connect_with(0, c);
    assert_eq!(ack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD);
    assert!(sim.is_closed(id));
}

#[test]
fn connack_does_not_advertise_shared_subscriptions_that_suback_refuses() {
    // Shared subscriptions are refused with 0x9E whatever the settings say (core.rs has no
    // shared subscriptions), so CONNACK must not leave "Shared Subscription Available" absent,
    // which means available (3.2.2.3.16).
    let mut sim = Sim::new(1, settings());
    let (c, ack) = sim.connect(0, ProtocolVersion::V5, "adv", true, 0);
    let suback = sim.subscribe(c, "$share/g/t", net::mqtt::QoS::AtMostOnce);
    if suback.reason_codes == [ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED] {
        assert_eq!(
            ack.properties.shared_subscription_available,
            Some(false),
            "CONNACK claims shared subscriptions; SUBACK refuses them"
        );
    }
}

#[test]
fn connack_advertises_disabled_wildcards_and_retain_and_enforces_them() {
    let mut s = settings();
    s.wildcard_subscription = false;
    s.retain_available = false;
    let mut sim = Sim::new(1, s);
    let (c, ack) = sim.connect(0, ProtocolVersion::V5, "adv", true, 0);
    assert_eq!(ack.properties.wildcard_subscription_available, Some(false));
    assert_eq!(ack.properties.retain_available, Some(false));
    let suback = sim.subscribe(c, "a/+", net::mqtt::QoS::AtMostOnce);
    assert_eq!(
        suback.reason_codes,
        [ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED]
    );
    let mut p = net::mqtt::Publish::new("r", "x");
    p.retain = true;
    sim.send_publish_with(c, p);
    sim.drive();
    let packets = sim.packets(c);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::RETAIN_NOT_SUPPORTED),
        "{packets:?}"
    );
}
