//! Scale under the virtual clock: 1,000 clients over 4 shards, each subscribed to its own
//! topic and publishing to 10 others'; every message is delivered exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::collections::HashMap;
use std::time::Instant;

use net::mqtt::{Packet, ProtocolVersion, QoS, ReasonCode};
use sim::{ClientId, Sim, settings};

const CLIENTS: usize = 1000;
const FANOUT: usize = 10;
const SHARDS: u16 = 4;

/// The `k`-th topic client `i` publishes to (distinct for `k < FANOUT`, never `i`).
fn target(i: usize, k: usize) -> usize {
    (i + 1 + k * 7) % CLIENTS
}

fn run(qos: QoS, seed: Option<u64>) {
    let wall = Instant::now();
    let mut sim = match seed {
        Some(seed) => {
            let mut sim = Sim::interleaved(SHARDS, settings(), seed);
            sim.ring_capacity = 64;
            sim
        }
        None => Sim::new(SHARDS, settings()),
    };
    let clients: Vec<ClientId> = (0..CLIENTS)
        .map(|i| {
            let v = if i % 2 == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            };
            let shard = (i % usize::from(SHARDS)) as u16;
            sim.connect(shard, v, &format!("c{i}"), true, 0).0
        })
        .collect();
    for s in &sim.shards {
        assert_eq!(s.connection_count(), CLIENTS / usize::from(SHARDS));
    }
    for (i, &c) in clients.iter().enumerate() {
        let ack = sim.subscribe(c, &format!("c/{i}"), qos);
        assert!(ack.reason_codes[0].is_success());
    }
    // Everyone publishes at once; one drive delivers it all.
    for (i, &c) in clients.iter().enumerate() {
        for k in 0..FANOUT {
            sim.send_publish(c, &format!("c/{}", target(i, k)), format!("{i}:{k}"), qos);
        }
    }
    sim.drive();

    let mut expected: HashMap<usize, Vec<String>> = HashMap::new();
    for i in 0..CLIENTS {
        for k in 0..FANOUT {
            expected
                .entry(target(i, k))
                .or_default()
                .push(format!("{i}:{k}"));
        }
    }
    for (j, &c) in clients.iter().enumerate() {
        let packets = sim.packets(c);
        let mut got = Vec::new();
        let mut acks = 0;
        for p in packets {
            match p {
                Packet::Publish(p) => {
                    assert_eq!(p.qos, qos);
                    assert!(!p.dup);
                    assert_eq!(p.topic, format!("c/{j}").as_str());
                    got.push(String::from_utf8(p.payload.to_vec()).unwrap());
                }
                Packet::PubAck(a) | Packet::PubRec(a) => {
                    assert_eq!(a.reason_code, ReasonCode::SUCCESS);
                    acks += 1;
                }
                Packet::PubRel(_) | Packet::PubComp(_) => {}
                other => panic!("client {j}: unexpected {other:?}"),
            }
        }
        got.sort();
        let mut want = expected.remove(&j).unwrap_or_default();
        want.sort();
        assert_eq!(got, want, "client {j}: every message exactly once");
        assert_eq!(acks, FANOUT, "client {j}: its own publishes acknowledged");
    }
    let total = (CLIENTS * FANOUT) as u64;
    assert_eq!(sim.stat(|s| s.messages_received), total);
    assert_eq!(sim.stat(|s| s.messages_sent), total);
    assert_eq!(sim.stat(|s| s.dropped_no_subscribers), 0);
    assert_eq!(sim.stat(|s| s.dropped_queue_full), 0);
    assert_eq!(sim.stat(|s| s.messages_retransmitted), 0);
    // Nothing is left inflight: a long wait retransmits nothing.
    sim.advance(settings().retry_interval * 2);
    assert_eq!(sim.stat(|s| s.messages_retransmitted), 0);
    for &c in &clients {
        assert!(sim.peek(c).is_empty());
        assert!(!sim.is_closed(c));
    }
    eprintln!(
        "{qos:?} seed {seed:?}: {CLIENTS} clients, {total} messages, {} ring messages, {} \
         ring-full pushbacks, {:?} wall",
        sim.ring_messages,
        sim.ring_full,
        wall.elapsed()
    );
}

#[test]
fn thousand_clients_qos1_exactly_once() {
    run(QoS::AtLeastOnce, None);
}

#[test]
fn thousand_clients_qos2_exactly_once() {
    run(QoS::ExactlyOnce, None);
}

#[test]
fn thousand_clients_qos1_interleaved_rings_with_backpressure() {
    run(QoS::AtLeastOnce, Some(7));
}
