//! Delivery limits: Message Expiry, the client's Maximum Packet Size, the write buffer of a
//! slow reader, and the number of shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use net::mqtt::{Connect, ProtocolVersion, Publish, QoS};
use sim::{ClientId, Sim, persistent_v5, settings};

fn expiring(topic: &str, payload: &str, secs: Option<u32>) -> Publish {
    let mut p = Publish::new(topic.to_string(), payload.to_string());
    p.qos = QoS::AtLeastOnce;
    p.properties.message_expiry_interval = secs;
    p
}

fn payloads(p: &[Publish]) -> Vec<String> {
    p.iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

fn offline_subscriber(sim: &mut Sim, shard: u16, filter: &str) {
    let (c, _) = sim.connect_with(shard, persistent_v5("sub", 3600));
    sim.subscribe(c, filter, QoS::AtLeastOnce);
    sim.close(c);
}

fn reconnect(sim: &mut Sim, shard: u16, receive_maximum: Option<u16>) -> ClientId {
    let mut c = persistent_v5("sub", 3600);
    c.properties.receive_maximum = receive_maximum;
    let (c, ack) = sim.connect_with(shard, c);
    assert!(ack.session_present);
    c
}

#[test]
fn message_expiry_interval_counts_down_while_queued() {
    let mut sim = Sim::new(2, settings());
    offline_subscriber(&mut sim, 1, "e");
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish_with(publisher, expiring("e", "a", Some(60)));
    sim.advance(Duration::from_secs(20));
    let c = reconnect(&mut sim, 0, None);
    let got = sim.received(c);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].properties.message_expiry_interval, Some(40));
}

#[test]
fn expired_queued_message_does_not_block_the_inflight_window() {
    let mut sim = Sim::new(2, settings());
    offline_subscriber(&mut sim, 1, "e");
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish_with(publisher, expiring("e", "expires", Some(5)));
    sim.publish_with(publisher, expiring("e", "stays", None));
    sim.advance(Duration::from_secs(10));
    let c = reconnect(&mut sim, 0, Some(1));
    let got = sim.received(c);
    assert_eq!(sim.stat(|s| s.dropped_expired), 1);
    assert_eq!(
        payloads(&got),
        ["stays"],
        "the expired message took the only inflight slot and never left it"
    );
}

#[test]
fn message_too_large_for_the_client_does_not_block_the_inflight_window() {
    let mut sim = Sim::new(2, settings());
    let mut c = Connect::new(ProtocolVersion::V5, "small");
    c.properties.maximum_packet_size = Some(100);
    c.properties.receive_maximum = Some(1);
    let (sub, _) = sim.connect_with(1, c);
    sim.subscribe(sub, "big", QoS::AtLeastOnce);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(publisher, "big", vec![b'x'; 500], QoS::AtMostOnce);
    sim.publish(publisher, "big", vec![b'x'; 500], QoS::AtLeastOnce);
    sim.publish(publisher, "big", "fits", QoS::AtLeastOnce);
    assert_eq!(sim.stat(|s| s.dropped_too_large), 2);
    let got = sim.received(sub);
    assert_eq!(
        payloads(&got),
        ["fits"],
        "3.1.2.11.4: a packet too large is discarded as if sent; it must not keep the window"
    );
    // Nor is it "retransmitted" (dropped again) every retry interval.
    sim.advance(settings().retry_interval * 2);
    assert_eq!(sim.stat(|s| s.dropped_too_large), 2);
}

#[test]
fn slow_reader_drops_qos0_beyond_the_write_buffer_but_keeps_qos1() {
    let mut s = settings();
    s.max_write_buffer = 1000;
    let mut sim = Sim::new(2, s);
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "slow", true, 0);
    sim.subscribe(sub, "w/#", QoS::AtLeastOnce);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.stall(sub, true);
    for i in 0..30 {
        sim.publish(publisher, "w/0", vec![i as u8; 100], QoS::AtMostOnce);
    }
    for i in 0..5 {
        sim.publish(publisher, "w/1", vec![i as u8; 100], QoS::AtLeastOnce);
    }
    let dropped = sim.stat(|s| s.dropped_qos0_write_buffer_full);
    assert!(dropped > 0 && dropped < 30, "{dropped}");
    sim.stall(sub, false);
    sim.drive();
    let got = sim.received(sub);
    let q0 = got.iter().filter(|p| p.qos == QoS::AtMostOnce).count();
    let q1 = got.iter().filter(|p| p.qos == QoS::AtLeastOnce).count();
    assert_eq!(q0 as u64 + dropped, 30);
    assert_eq!(q1, 5, "QoS 1 is never dropped for a full write buffer");
}

#[test]
fn routing_works_with_more_than_128_shards() {
    let shards = 130;
    let mut sim = Sim::new(shards, settings());
    let (sub, _) = sim.connect(shards - 1, ProtocolVersion::V5, "far", true, 0);
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    let ack = sim.publish(publisher, "t", "x", QoS::AtLeastOnce).unwrap();
    assert!(ack.reason_code.is_success());
    assert_eq!(
        sim.received(sub).len(),
        1,
        "Shard::route keeps matching shards in a u128 bit mask"
    );
}

#[test]
fn a_client_that_does_not_read_its_acks_stops_being_read() {
    let mut s = settings();
    s.max_write_buffer = 200;
    let mut sim = Sim::new(1, s);
    let (publisher, _) = sim.connect(0, ProtocolVersion::V3_1_1, "flood", true, 0);
    sim.stall(publisher, true);
    // 200 QoS 1 PUBLISH in one read: each PUBACK is 4 bytes, so the output passes 200 bytes
    // after about 50 of them and the shard must stop decoding this client's input.
    for _ in 0..200 {
        sim.send_publish(publisher, "nobody/listens", "x", QoS::AtLeastOnce);
    }
    let r = sim.feed(publisher);
    assert_eq!(r, shard::Read::WriteBlocked);
    let handled = sim.stat(|s| s.messages_received);
    assert!(
        (50..200).contains(&handled),
        "{handled} handled before blocking"
    );
    // Once the client reads again, the rest is handled and acknowledged.
    sim.stall(publisher, false);
    sim.drive();
    for _ in 0..10 {
        sim.feed(publisher);
        sim.drive();
    }
    assert_eq!(sim.stat(|s| s.messages_received), 200);
}
