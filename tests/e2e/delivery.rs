//! Delivery across shards: QoS 0, 1 and 2, MQTT 5 and 3.1.1, on both I/O drivers; and the
//! guarantee that a subscription is in force on every shard once it is acknowledged.

use std::time::{Duration, Instant};

use crate::harness::{Broker, Stopped, args, python_run, unique};
use crate::raw;

/// Subscribers and publishers: enough that both shards hold some of each.
const SUBS: usize = 40;
const PUBS: usize = 40;
/// Messages per publisher (plus an end marker).
const COUNT: usize = 20;
/// Publishers each subscriber listens to.
const FANOUT: usize = 4;

/// Runs `crossshard.py` against a fresh broker and checks its result and the broker's
/// counters; returns the stopped broker for further checks.
fn cross_shard(proto: &str, qos: u8, sets: &[&str]) -> Stopped {
    let broker = Broker::start_with(sets);
    let tag = unique(&format!("q{qos}v{proto}"));
    let r = python_run(
        "crossshard.py",
        &args(
            &broker,
            &[&proto, &qos, &SUBS, &PUBS, &COUNT, &FANOUT, &tag],
        ),
        Duration::from_secs(90),
    );
    let stopped = broker.stop();
    stopped.assert_clean();
    let expected = (SUBS * FANOUT * (COUNT + 1)) as u64;
    assert_eq!(r["expected"], expected, "{r}");
    assert_eq!(r["missing"], 0, "messages lost: {r}");
    assert_eq!(r["unexpected"], 0, "{r}");
    assert_eq!(r["wrong_qos"], 0, "{r}");
    match qos {
        1 => println!("QoS 1: {} duplicates", r["duplicates"]),
        _ => assert_eq!(r["duplicates"], 0, "QoS {qos} delivered twice: {r}"),
    }
    // Every PUBLISH a client sent was received by the broker, every one it sent was read.
    assert_eq!(
        stopped.total(|s| s.received),
        r["publish_packets_sent"].as_u64().unwrap(),
        "broker counters {:?} vs clients {r}",
        stopped.shards
    );
    assert_eq!(
        stopped.total(|s| s.sent),
        r["publish_packets_received"].as_u64().unwrap(),
        "broker counters {:?} vs clients {r}",
        stopped.shards
    );
    assert_eq!(
        stopped.total(|s| s.established),
        (SUBS + PUBS) as u64,
        "{:?}",
        stopped.shards
    );
    stopped.assert_cross_shard();
    stopped
}

#[test]
fn cross_shard_qos0_v5() {
    cross_shard("5", 0, &[]);
}

#[test]
fn cross_shard_qos1_v5() {
    cross_shard("5", 1, &[]);
}

#[test]
fn cross_shard_qos2_v5() {
    cross_shard("5", 2, &[]);
}

#[test]
fn cross_shard_qos0_v311() {
    cross_shard("311", 0, &[]);
}

#[test]
fn cross_shard_qos1_v311() {
    cross_shard("311", 1, &[]);
}

#[test]
fn cross_shard_qos2_v311() {
    cross_shard("311", 2, &[]);
}

#[test]
fn cross_shard_on_the_epoll_driver() {
    let stopped = cross_shard("5", 2, &["node.driver=epoll"]);
    for shard in 0..2 {
        let line = format!("shard {shard} running on the epoll driver");
        assert!(
            stopped.log.contains(&line),
            "no {line:?} in:\n{}",
            stopped.log
        );
    }
    assert!(!stopped.log.contains("io_uring driver"), "{}", stopped.log);
}

/// A message published after the subscriber received its SUBACK must reach it, whichever
/// shard the publisher is on ([MQTT-3.8.4-2] lets the server send matching messages even
/// before SUBACK; once SUBACK is out the subscription is in force).
///
/// Pairs of raw MQTT 5 connections: the subscriber subscribes to a new topic, and as soon as
/// its SUBACK arrives the publisher sends a QoS 1 PUBLISH on that topic. The PUBACK's reason
/// code must be 0x00, not 0x10 (No matching subscribers), and the subscriber must get the
/// message. With sixteen pairs, some publishers sit on the other shard than their subscriber.
#[test]
fn subscription_is_effective_on_every_shard_once_acked() {
    const PAIRS: usize = 16;
    const ROUNDS: u16 = 250;
    let broker = Broker::start();
    let tag = unique("race");
    let mut lost = Vec::new();
    let started = Instant::now();
    for k in 0..PAIRS {
        let (mut sub, _) = raw::open(
            broker.addr(),
            &raw::connect_v5(&format!("{tag}-s{k}"), 60, true, None),
        );
        let (mut publ, _) = raw::open(
            broker.addr(),
            &raw::connect_v5(&format!("{tag}-p{k}"), 60, true, None),
        );
        for i in 1..=ROUNDS {
            let topic = format!("{tag}/{k}/{i}");
            sub.send(&raw::subscribe(true, i, &topic, 1)).unwrap();
            let ack = sub.expect("SUBACK", Duration::from_secs(5));
            assert_eq!(ack.first, 0x90, "{ack:02x?}");
            assert_eq!(ack.body.last(), Some(&1), "SUBACK {ack:02x?}");
            publ.send(&raw::publish(true, &topic, 1, i, b"after suback"))
                .unwrap();
            let puback = publ.expect("PUBACK", Duration::from_secs(5));
            assert_eq!(puback.first, 0x40, "{puback:02x?}");
            let reason = puback.body.get(2).copied().unwrap_or(0);
            match reason {
                0x00 => {
                    let p = sub.expect("the PUBLISH", Duration::from_secs(5));
                    let (t, id, payload) = raw::parse_publish(true, &p);
                    assert_eq!(
                        (t.as_str(), payload.as_slice()),
                        (topic.as_str(), &b"after suback"[..])
                    );
                    sub.send(&raw::puback(id.unwrap())).unwrap();
                }
                0x10 => lost.push(format!("pair {k} round {i}")),
                other => panic!("PUBACK reason {other:#04x}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let stopped = broker.stop();
    stopped.assert_clean();
    assert!(
        lost.is_empty(),
        "{} of {} messages published right after SUBACK found no subscriber (PUBACK 0x10) \
         in {elapsed:?}; first: {:?}; shards {:?}",
        lost.len(),
        PAIRS * usize::from(ROUNDS),
        &lost[..lost.len().min(5)],
        stopped.shards
    );
}

/// PUBLISH packets larger than one socket read (the broker starts with small read buffers):
/// each is acknowledged and delivered intact.
#[test]
fn large_publishes_are_received_intact() {
    let broker = Broker::start();
    let tag = unique("large");
    let (mut sub, _) = raw::open(
        broker.addr(),
        &raw::connect_v311(&format!("{tag}-s"), 60, true),
    );
    sub.send(&raw::subscribe(false, 1, &tag, 1)).unwrap();
    assert_eq!(sub.expect("SUBACK", Duration::from_secs(5)).first, 0x90);
    let (mut publ, _) = raw::open(
        broker.addr(),
        &raw::connect_v311(&format!("{tag}-p"), 60, true),
    );
    for (i, size) in [100usize, 511, 512, 513, 600, 3000, 70_000, 500_000]
        .into_iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..size).map(|b| (b % 251) as u8).collect();
        let id = u16::try_from(i + 1).unwrap();
        publ.send(&raw::publish(false, &tag, 1, id, &payload))
            .unwrap();
        let ack = publ
            .read(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("PUBLISH of {size} bytes: no PUBACK, {e:?}"));
        assert_eq!(
            (ack.first, ack.body.as_slice()),
            (0x40, &id.to_be_bytes()[..])
        );
        let p = sub.expect("the PUBLISH", Duration::from_secs(5));
        let (t, pid, body) = raw::parse_publish(false, &p);
        assert_eq!(t, tag);
        assert!(
            body == payload,
            "payload of {size} bytes differs ({} bytes)",
            body.len()
        );
        sub.send(&raw::puback(pid.unwrap())).unwrap();
    }
    broker.stop().assert_clean();
}

/// Many packets in one write (pipelining): every one is handled, in order.
#[test]
fn pipelined_publishes_are_all_received() {
    const N: u16 = 1000;
    let broker = Broker::start();
    let tag = unique("pipe");
    let (mut sub, _) = raw::open(
        broker.addr(),
        &raw::connect_v311(&format!("{tag}-s"), 60, true),
    );
    sub.send(&raw::subscribe(false, 1, &tag, 0)).unwrap();
    assert_eq!(sub.expect("SUBACK", Duration::from_secs(5)).first, 0x90);
    let (mut publ, _) = raw::open(
        broker.addr(),
        &raw::connect_v311(&format!("{tag}-p"), 60, true),
    );
    let burst: Vec<u8> = (1..=N)
        .flat_map(|i| raw::publish(false, &tag, 1, i, format!("m{i:05}").as_bytes()))
        .collect();
    publ.send(&burst).unwrap();
    for i in 1..=N {
        let ack = publ.read(Duration::from_secs(5)).unwrap_or_else(|e| {
            panic!(
                "{} bytes in one write: PUBACK {i} of {N} missing ({e:?})",
                burst.len()
            )
        });
        assert_eq!(
            (ack.first, ack.body.as_slice()),
            (0x40, &i.to_be_bytes()[..])
        );
    }
    for i in 1..=N {
        let p = sub.expect("a PUBLISH", Duration::from_secs(5));
        let (_, _, body) = raw::parse_publish(false, &p);
        assert_eq!(body, format!("m{i:05}").as_bytes());
    }
    broker.stop().assert_clean();
}
