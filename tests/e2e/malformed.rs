//! Malformed input: raw sockets that break the protocol are answered as the spec says and
//! closed, while a well-behaved paho pair next to them keeps exchanging messages undisturbed.

use std::time::Duration;

use crate::harness::{Broker, args, python, script_result, unique};
use crate::raw::{self, End, Raw};

const WAIT: Duration = Duration::from_secs(5);

/// Garbage as the first packet: the broker closes the connection without a word.
fn garbage_first(broker: &Broker) {
    let mut c = Raw::connect(broker.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").unwrap();
    c.expect_closed("HTTP request as first packet", WAIT);
    // A first packet that is well formed but not CONNECT: closed too [MQTT-3.1.0-1].
    let mut c = Raw::connect(broker.addr());
    c.send(&[0xc0, 0x00]).unwrap();
    c.expect_closed("PINGREQ as first packet", WAIT);
}

/// A valid MQTT 5 CONNECT, then PUBLISH with QoS 3: DISCONNECT 0x81 (Malformed Packet), close.
fn publish_qos3_v5(broker: &Broker) {
    let (mut c, _) = raw::open(
        broker.addr(),
        &raw::connect_v5(&unique("qos3"), 60, true, None),
    );
    // PUBLISH, QoS bits 11, topic "a", properties 0, payload "x".
    c.send(&[0x36, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, 0x00, b'x'])
        .unwrap();
    let (end, frames) = c.drain(WAIT);
    assert_eq!(
        frames.len(),
        1,
        "expected one DISCONNECT, got {frames:02x?}"
    );
    assert_eq!(
        raw::disconnect_reason(&frames[0]),
        Some(0x81),
        "{frames:02x?}"
    );
    assert!(
        matches!(end, End::Eof | End::Reset),
        "still open after DISCONNECT"
    );
}

/// A valid MQTT 3.1.1 CONNECT, then the reserved packet type 0: closed without a packet.
fn reserved_type_v311(broker: &Broker) {
    let (mut c, _) = raw::open(broker.addr(), &raw::connect_v311(&unique("rsv"), 60, true));
    c.send(&[0x00, 0x00]).unwrap();
    c.expect_closed("reserved packet type 0", WAIT);
}

/// A second CONNECT on an MQTT 5 connection: DISCONNECT 0x82 (Protocol Error), close.
fn second_connect_v5(broker: &Broker) {
    let id = unique("twice");
    let (mut c, _) = raw::open(broker.addr(), &raw::connect_v5(&id, 60, true, None));
    c.send(&raw::connect_v5(&id, 60, true, None)).unwrap();
    let (end, frames) = c.drain(WAIT);
    assert_eq!(
        frames.len(),
        1,
        "expected one DISCONNECT, got {frames:02x?}"
    );
    assert_eq!(
        raw::disconnect_reason(&frames[0]),
        Some(0x82),
        "{frames:02x?}"
    );
    assert!(
        matches!(end, End::Eof | End::Reset),
        "still open after DISCONNECT"
    );
}

/// An MQTT 5 packet over `mqtt.max_packet_size`: DISCONNECT 0x95 (Packet too large), close.
fn too_large_v5(broker: &Broker) {
    let (mut c, _) = raw::open(
        broker.addr(),
        &raw::connect_v5(&unique("big"), 60, true, None),
    );
    c.send(&raw::publish(true, "big", 0, 0, &[b'x'; 2048])).ok();
    let (end, frames) = c.drain(WAIT);
    assert_eq!(
        frames.len(),
        1,
        "expected one DISCONNECT, got {frames:02x?}"
    );
    assert_eq!(
        raw::disconnect_reason(&frames[0]),
        Some(0x95),
        "{frames:02x?}"
    );
    assert!(
        matches!(end, End::Eof | End::Reset),
        "still open after DISCONNECT"
    );
}

#[test]
fn malformed_input_is_refused_and_others_are_undisturbed() {
    let broker = Broker::start_with(&["mqtt.max_packet_size=1KB"]);
    let mut steady = python("steady.py", &args(&broker, &[&"5", &unique("steady")]));
    steady.wait_phase("running", Duration::from_secs(30));
    // Misbehave, then let the pair exchange at least 10 more messages, ten times over.
    for _ in 0..10 {
        garbage_first(&broker);
        publish_qos3_v5(&broker);
        reserved_type_v311(&broker);
        second_connect_v5(&broker);
        too_large_v5(&broker);
        steady.wait_phase("progress", Duration::from_secs(10));
    }
    steady.send_line("stop");
    let r = script_result("steady.py", &steady.finish(Duration::from_secs(30)));
    assert!(r["received"].as_u64().unwrap() >= 100, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["in_order"], true, "{r}");
    let stopped = broker.stop();
    stopped.assert_clean();
}

/// Receive Maximum (`mqtt.max_awaiting_rel = 5`, advertised in CONNACK): a client with five
/// QoS 2 messages awaiting PUBREL that sends a sixth gets DISCONNECT 0x93 (Receive Maximum
/// exceeded) and the close. paho and mosquitto respect the advertised maximum, so the client
/// is raw. Releasing one first makes room for exactly one more.
#[test]
fn receive_maximum_exceeded_gets_disconnect_0x93() {
    let broker = Broker::start_with(&["mqtt.max_awaiting_rel=5"]);
    let mut c = Raw::connect(broker.addr());
    c.send(&raw::connect_v5(&unique("rmax"), 60, true, None))
        .unwrap();
    let ack = c.expect("CONNACK", WAIT);
    assert_eq!(&ack.body[..2], &[0, 0], "CONNACK refused: {ack:02x?}");
    let props = raw::connack_properties(&ack);
    assert!(
        props.contains(&(0x21, vec![0, 5])),
        "CONNACK without Receive Maximum 5: {props:02x?}"
    );
    let pubrec = |c: &mut Raw, id: u16| {
        let f = c.expect("PUBREC", WAIT);
        assert_eq!(f.first, 0x50, "expected PUBREC, got {f:02x?}");
        assert_eq!(f.body[..2], id.to_be_bytes(), "{f:02x?}");
    };
    for id in 1..=5 {
        c.send(&raw::publish(true, "rmax/t", 2, id, b"x")).unwrap();
        pubrec(&mut c, id);
    }
    // Release 1: four await PUBREL, so 6 fits.
    c.send(&raw::pubrel(1)).unwrap();
    let f = c.expect("PUBCOMP", WAIT);
    assert_eq!((f.first, &f.body[..2]), (0x70, &[0u8, 1][..]), "{f:02x?}");
    c.send(&raw::publish(true, "rmax/t", 2, 6, b"x")).unwrap();
    pubrec(&mut c, 6);
    // Five await PUBREL (2 to 6): the seventh exceeds the maximum.
    c.send(&raw::publish(true, "rmax/t", 2, 7, b"x")).unwrap();
    let (end, frames) = c.drain(WAIT);
    assert_eq!(
        frames.len(),
        1,
        "expected one DISCONNECT, got {frames:02x?}"
    );
    assert_eq!(
        raw::disconnect_reason(&frames[0]),
        Some(0x93),
        "{frames:02x?}"
    );
    assert!(
        matches!(end, End::Eof | End::Reset),
        "still open after DISCONNECT"
    );
    broker.stop().assert_clean();
}
