//! Durable sessions in the shards' logs: what the records replay to matches the live state,
//! sessions that move between shards end up in one log with a higher incarnation, and a
//! PUBLISH to a durable session is acknowledged only once its records are written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::path::{Path, PathBuf};

use net::mqtt::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};
use sim::{Sim, persistent_v5, settings};
use storage::image::Image;
use storage::log::Policy;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shard-persist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every shard's log read back and merged, as a restarting broker would.
fn image(dir: &Path, shards: u16) -> Image {
    let mut all = Image::default();
    for i in 0..shards {
        let d = storage::dir::shard_dir(dir, u32::from(i));
        let s = storage::dir::load_shard(u32::from(i), &d, false).unwrap();
        assert!(s.report.is_clean(), "{:?}", s.report.problems);
        assert_eq!(s.undecodable, 0, "{:?}", s.first_undecodable);
        all.merge(s.image);
    }
    all
}

fn session<'a>(i: &'a Image, client: &str) -> Option<&'a storage::image::SessionImage> {
    i.sessions.values().find(|s| s.header.client_id == client)
}

#[test]
fn offline_queue_is_in_the_log_and_leaves_it_when_delivered() {
    for shards in [1u16, 2] {
        let dir = scratch(&format!("queue-{shards}"));
        let mut sim = Sim::new(shards, settings());
        sim.attach_logs(
            &dir,
            Policy::Interval(std::time::Duration::from_millis(100)),
        );
        let sub_shard = shards - 1;
        let (sub, _) = sim.connect_with(sub_shard, persistent_v5("durable-sub", 3600));
        sim.subscribe(sub, "q/1", QoS::AtLeastOnce);
        sim.subscribe(sub, "q/2", QoS::ExactlyOnce);
        sim.close(sub);
        let (publisher, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        for i in 0..50 {
            let ack = sim.publish(publisher, "q/1", format!("one {i}"), QoS::AtLeastOnce);
            assert!(ack.is_some_and(|a| a.reason_code.is_success()));
            sim.publish(publisher, "q/2", format!("two {i}"), QoS::ExactlyOnce);
            // QoS 0 stays in memory.
            sim.publish(publisher, "q/1", "zero", QoS::AtMostOnce);
        }
        let img = image(&dir, shards);
        let s = session(&img, "durable-sub").expect("the session is in the log");
        assert_eq!(s.header.expiry_interval_s, 3600);
        assert!(
            s.header.expires_at_ms.is_some(),
            "offline: its expiry is set"
        );
        let filters: Vec<&str> = s
            .header
            .subscriptions
            .iter()
            .map(|s| s.filter.as_str())
            .collect();
        assert_eq!(filters, ["q/1", "q/2"]);
        assert_eq!(s.deliveries.len(), 100, "shards {shards}");
        assert_eq!(
            s.deliveries.values().filter(|d| d.enqueue.qos == 2).count(),
            50
        );
        assert_eq!(img.counts().messages, 100);
        assert!(
            session(&img, "pub").is_none(),
            "a clean session is not durable"
        );

        // Back online: everything delivered and acknowledged leaves the log.
        let (sub, present) = {
            let (c, ack) = sim.connect_with(sub_shard, persistent_v5("durable-sub", 3600));
            (c, ack.session_present)
        };
        assert!(present);
        assert_eq!(sim.received(sub).len(), 150);
        let img = image(&dir, shards);
        let s = session(&img, "durable-sub").unwrap();
        assert!(s.deliveries.is_empty(), "{:?}", s.deliveries.keys());
        assert_eq!(img.counts().messages, 0);

        // Expiry 0 at DISCONNECT ends it.
        let mut d = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
        d.properties.session_expiry_interval = Some(0);
        sim.send(sub, &Packet::Disconnect(d));
        sim.drive();
        assert!(session(&image(&dir, shards), "durable-sub").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_session_that_moves_shards_is_kept_once_with_a_higher_incarnation() {
    let dir = scratch("move");
    let mut sim = Sim::new(2, settings());
    sim.attach_logs(&dir, Policy::Always);
    let (c, _) = sim.connect_with(0, persistent_v5("mover", 600));
    sim.subscribe(c, "m/#", QoS::AtLeastOnce);
    sim.close(c);
    let (p, _) = sim.connect(1, ProtocolVersion::V5, "p", true, 0);
    for i in 0..10 {
        sim.publish(p, "m/x", format!("{i}"), QoS::AtLeastOnce);
    }
    let before = session(&image(&dir, 2), "mover").unwrap().clone();
    assert_eq!(before.deliveries.len(), 10);
    // Reconnect on the other shard without acknowledging: the state moves there.
    let (c, ack) = sim.connect_manual(1, persistent_v5("mover", 600));
    assert!(ack.session_present);
    let img = image(&dir, 2);
    let after = session(&img, "mover").unwrap();
    assert!(after.header.incarnation > before.header.incarnation);
    assert_eq!(after.header.sid >> 48, 1, "held by shard 1's log now");
    assert_eq!(after.deliveries.len(), 10);
    assert!(
        after.deliveries.values().all(|d| d.packet_id.is_some()),
        "sent again"
    );
    // Shard 0's log no longer holds a copy of its own.
    let s0 = storage::dir::load_shard(0, &storage::dir::shard_dir(&dir, 0), false).unwrap();
    assert!(
        s0.image.sessions.is_empty(),
        "{:?}",
        s0.image.sessions.keys()
    );
    let _ = c;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn puback_waits_for_the_log() {
    let dir = scratch("puback");
    let mut sim = Sim::new(1, settings());
    sim.attach_logs(&dir, Policy::Always);
    let (c, _) = sim.connect_with(0, persistent_v5("offline", 600));
    sim.subscribe(c, "w/1", QoS::AtLeastOnce);
    sim.close(c);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "p", true, 0);
    sim.auto_storage = false;
    let id = sim.send_publish(p, "w/1", "held", QoS::AtLeastOnce);
    sim.drive();
    assert!(
        !sim.packets(p)
            .iter()
            .any(|x| matches!(x, Packet::PubAck(_))),
        "no PUBACK before the write"
    );
    assert!(sim.run_storage());
    sim.drive();
    let acks: Vec<u16> = sim
        .packets(p)
        .into_iter()
        .filter_map(|x| match x {
            Packet::PubAck(a) => Some(a.packet_id),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [id]);
    // With nothing durable to write, no wait.
    sim.send_publish(p, "nobody/listens", "x", QoS::AtLeastOnce);
    sim.drive();
    assert!(
        sim.packets(p)
            .iter()
            .any(|x| matches!(x, Packet::PubAck(_)))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queued_and_inflight_deliveries_survive_a_crash() {
    for shards in [1u16, 2] {
        let dir = scratch(&format!("crash-{shards}"));
        let policy = Policy::Interval(std::time::Duration::from_millis(100));
        let mut sim = Sim::new(shards, settings());
        sim.attach_logs(&dir, policy);
        // One subscriber offline, one online that does not acknowledge (its window fills).
        let (off, _) = sim.connect_with(0, persistent_v5("offline-sub", 3600));
        sim.subscribe(off, "c/#", QoS::ExactlyOnce);
        sim.close(off);
        let (on, _) = sim.connect_manual(shards - 1, persistent_v5("online-sub", 3600));
        sim.subscribe(on, "c/#", QoS::AtLeastOnce);
        let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        for i in 0..40 {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            let ack = sim.publish(p, "c/x", format!("m{i}"), qos);
            assert!(ack.is_some(), "acknowledged");
        }
        let got_before = sim.received(on).len();
        assert!(got_before > 0);
        // kill -9: nothing more happens; a new broker reads the logs.
        drop(sim);
        let mut sim = Sim::restart(&dir, shards, settings(), policy);
        let (off, ack) = sim.connect_with(0, persistent_v5("offline-sub", 3600));
        assert!(ack.session_present, "shards {shards}");
        let got: Vec<String> = sim
            .received(off)
            .iter()
            .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        assert_eq!(
            got, want,
            "every message once, in order (QoS 2 exactly once)"
        );
        let (on, ack) = sim.connect_with(shards - 1, persistent_v5("online-sub", 3600));
        assert!(ack.session_present);
        let again = sim.received(on);
        assert_eq!(
            again.len(),
            40,
            "QoS 1: the unacknowledged ones again, the rest queued"
        );
        assert!(
            again[..got_before].iter().all(|p| p.dup),
            "the inflight window resent with DUP"
        );
        // And once delivered, a second restart has nothing left to send.
        drop(sim);
        let mut sim = Sim::restart(&dir, shards, settings(), policy);
        let (off, ack) = sim.connect_with(0, persistent_v5("offline-sub", 3600));
        assert!(ack.session_present);
        assert!(sim.received(off).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn puback_waits_for_the_log_of_the_subscribers_shard() {
    let dir = scratch("puback-remote");
    let mut sim = Sim::new(2, settings());
    // As the driver does: the wall clock first (shards exchange their `$SYS` messages), then
    // the logs. The shards' counts of each other's messages must agree all the same.
    sim.start_clocks(1_800_000_000_000);
    sim.attach_logs(&dir, Policy::Always);
    // The durable subscriber's session lives on shard 1, the publisher on shard 0.
    let (c, _) = sim.connect_with(1, persistent_v5("remote-offline", 600));
    sim.subscribe(c, "r/1", QoS::AtLeastOnce);
    sim.close(c);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "p", true, 0);
    sim.auto_storage = false;
    // Shard 0's own log has nothing to write for it; shard 1's has.
    let id = sim.send_publish(p, "r/1", "held", QoS::AtLeastOnce);
    sim.drive();
    assert!(
        !sim.packets(p)
            .iter()
            .any(|x| matches!(x, Packet::PubAck(_))),
        "no PUBACK before shard 1 wrote the delivery"
    );
    assert!(sim.run_storage());
    sim.drive();
    let acks: Vec<u16> = sim
        .packets(p)
        .into_iter()
        .filter_map(|x| match x {
            Packet::PubAck(a) => Some(a.packet_id),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [id]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_log_is_compacted_while_serving() {
    let dir = scratch("compact");
    let mut sim = Sim::new(2, settings());
    sim.attach_logs_with(
        &dir,
        storage::log::LogOptions {
            policy: Policy::Never,
            segment_bytes: 32 << 10,
            compact_min_bytes: 64 << 10,
            compact_ratio: 2,
        },
    );
    // An online durable subscriber that acknowledges everything: every message is written,
    // sent and done, so the live state stays small while the log grows.
    let (sub, _) = sim.connect_with(1, persistent_v5("compact-sub", 3600));
    sim.subscribe(sub, "k/#", QoS::AtLeastOnce);
    let (off, _) = sim.connect_with(0, persistent_v5("compact-offline", 3600));
    sim.subscribe(off, "k/keep", QoS::AtLeastOnce);
    sim.close(off);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "p", true, 0);
    for i in 0..3000 {
        sim.publish(p, "k/x", format!("payload number {i:>8}"), QoS::AtLeastOnce);
    }
    for i in 0..10 {
        sim.publish(p, "k/keep", format!("kept {i}"), QoS::AtLeastOnce);
    }
    assert_eq!(sim.received(sub).len(), 3010);
    let bytes: u64 = (0..2u32)
        .map(|i| storage::dir::dir_bytes(&storage::dir::shard_dir(&dir, i)))
        .sum();
    // ~3000 × (message, enqueue, sent, done) ≈ 600 KiB were appended; compaction keeps the
    // disk near the live state plus the log since the last snapshot.
    assert!(bytes < 300 << 10, "{bytes} bytes on disk");
    let img = image(&dir, 2);
    assert_eq!(
        session(&img, "compact-offline").unwrap().deliveries.len(),
        10
    );
    assert!(session(&img, "compact-sub").unwrap().deliveries.is_empty());
    // The busy log (shard 1, the online subscriber's) was compacted while serving.
    let s1 = storage::dir::load_shard(1, &storage::dir::shard_dir(&dir, 1), false).unwrap();
    assert!(s1.report.snapshot.is_some(), "shard 1 took a snapshot");
    drop(sim);
    let mut sim = Sim::restart(&dir, 2, settings(), Policy::Never);
    let (off, ack) = sim.connect_with(0, persistent_v5("compact-offline", 3600));
    assert!(ack.session_present);
    assert_eq!(sim.received(off).len(), 10);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retained_messages_survive_a_crash_and_their_clearing_too() {
    for shards in [1u16, 2] {
        let dir = scratch(&format!("retained-{shards}"));
        let mut sim = Sim::new(shards, settings());
        sim.attach_logs(&dir, Policy::Always);
        let (p, _) = sim.connect(0, ProtocolVersion::V5, "rp", true, 0);
        for i in 0..20 {
            let mut m = net::mqtt::Publish::new(format!("ret/{i}"), format!("value {i}"));
            m.qos = QoS::AtLeastOnce;
            m.retain = true;
            m.properties.content_type = Some("text/plain".into());
            assert!(sim.publish_with(p, m).is_some());
        }
        // Cleared: an empty retained message.
        let mut clear = net::mqtt::Publish::new("ret/3".to_string(), bytes::Bytes::new());
        clear.qos = QoS::AtLeastOnce;
        clear.retain = true;
        sim.publish_with(p, clear);
        drop(sim);
        let mut sim = Sim::restart(&dir, shards, settings(), Policy::Always);
        let (s, _) = sim.connect(shards - 1, ProtocolVersion::V5, "rs", true, 0);
        sim.subscribe(s, "ret/#", QoS::AtLeastOnce);
        let mut got: Vec<(String, String)> = sim
            .received(s)
            .into_iter()
            .map(|m| {
                assert!(m.retain);
                assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
                (
                    m.topic.to_string(),
                    String::from_utf8(m.payload.to_vec()).unwrap(),
                )
            })
            .collect();
        got.sort();
        let mut want: Vec<(String, String)> = (0..20)
            .filter(|&i| i != 3)
            .map(|i| (format!("ret/{i}"), format!("value {i}")))
            .collect();
        want.sort();
        assert_eq!(got, want, "shards {shards}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn delayed_publishes_survive_a_crash() {
    let dir = scratch("delayed");
    let mut sim = Sim::new(2, settings());
    sim.attach_logs(&dir, Policy::Always);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "dp", true, 0);
    sim.publish(p, "$delayed/1/later/now", "soon", QoS::AtLeastOnce);
    sim.publish(
        p,
        "$delayed/100/later/x",
        "after the restart",
        QoS::AtLeastOnce,
    );
    // The first one is published before the crash: not again after it.
    sim.advance(std::time::Duration::from_secs(2));
    drop(sim);
    let mut sim = Sim::restart(&dir, 2, settings(), Policy::Always);
    let (s, _) = sim.connect(1, ProtocolVersion::V5, "ds", true, 0);
    sim.subscribe(s, "later/#", QoS::AtLeastOnce);
    sim.advance(std::time::Duration::from_secs(99));
    assert!(sim.received(s).is_empty(), "not due yet");
    sim.advance(std::time::Duration::from_secs(2));
    let got: Vec<String> = sim
        .received(s)
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(got, ["after the restart"]);
    let _ = std::fs::remove_dir_all(&dir);
}

mod crash {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    #[derive(Debug, Clone)]
    enum Op {
        Publish(u8),
        Drive,
        /// One shard's log jobs run.
        Storage(u16),
        Toggle(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (1u8..=2).prop_map(Op::Publish),
            2 => Just(Op::Drive),
            2 => (0u16..2).prop_map(Op::Storage),
            1 => (0usize..2).prop_map(Op::Toggle),
        ]
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Publishes, deliveries, subscribers coming and going, and log writes in a random
        /// order, then a crash at a random point (the log's pending jobs never run): after the
        /// restart every message whose PUBACK/PUBREC the publisher got reaches both durable
        /// subscribers (before the crash or after it).
        #[test]
        fn acknowledged_messages_survive_a_crash_at_any_point(
            ops in prop::collection::vec(op(), 1..80),
            shards in 1u16..=2,
            // Shards of the two subscribers and of the publisher.
            place in (0u16..2, 0u16..2, 0u16..2),
        ) {
            let dir = scratch(&format!("prop-{shards}-{}", ops.len()));
            let policy = Policy::Interval(std::time::Duration::from_millis(100));
            let mut sim = Sim::new(shards, settings());
            sim.start_clocks(1_800_000_000_000);
            sim.attach_logs(&dir, policy);
            let names = ["crash-a", "crash-b"];
            let mut subs = Vec::new();
            for (i, name) in names.iter().enumerate() {
                let at = [place.0, place.1][i] % shards;
                let (c, _) = sim.connect_with(at, persistent_v5(name, 3600));
                let qos = if i == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
                sim.subscribe(c, "c/#", qos);
                subs.push(Some(c));
            }
            let (p, _) = sim.connect(place.2 % shards, ProtocolVersion::V5, "crash-pub", true, 0);
            sim.auto_storage = false;
            let mut payload_of: HashMap<u16, String> = HashMap::new();
            let mut acked: HashSet<String> = HashSet::new();
            let mut got: Vec<HashSet<String>> = vec![HashSet::new(); 2];
            let mut n = 0;
            let collect = |sim: &mut Sim, subs: &[Option<sim::ClientId>], got: &mut Vec<HashSet<String>>| {
                for (i, c) in subs.iter().enumerate() {
                    if let Some(c) = c {
                        for m in sim.received(*c) {
                            got[i].insert(String::from_utf8(m.payload.to_vec()).unwrap());
                        }
                    }
                }
            };
            for op in &ops {
                match op {
                    Op::Publish(q) => {
                        let qos = if *q == 1 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
                        n += 1;
                        let body = format!("m{n}");
                        let id = sim.send_publish(p, "c/x", body.clone(), qos);
                        payload_of.insert(id, body);
                    }
                    Op::Drive => sim.drive(),
                    Op::Storage(s) => {
                        sim.run_storage_of(s % shards);
                        sim.drive();
                    }
                    Op::Toggle(i) => {
                        collect(&mut sim, &subs, &mut got);
                        match subs[*i].take() {
                            Some(c) => sim.close(c),
                            None => {
                                let at = [place.0, place.1][*i] % shards;
                                let (c, _) = sim.connect_with(at, persistent_v5(names[*i], 3600));
                                subs[*i] = Some(c);
                            }
                        }
                    }
                }
                for x in sim.packets(p) {
                    if let Packet::PubAck(a) | Packet::PubRec(a) = x {
                        if let Some(b) = payload_of.get(&a.packet_id) {
                            acked.insert(b.clone());
                        }
                    }
                }
            }
            collect(&mut sim, &subs, &mut got);
            // kill -9: whatever the logs had not written is gone.
            drop(sim);
            let mut sim = Sim::restart(&dir, shards, settings(), policy);
            for (i, name) in names.iter().enumerate() {
                let (c, ack) = sim.connect_with(i as u16 % shards, persistent_v5(name, 3600));
                prop_assert!(ack.session_present);
                for m in sim.received(c) {
                    got[i].insert(String::from_utf8(m.payload.to_vec()).unwrap());
                }
            }
            for (i, g) in got.iter().enumerate() {
                let lost: Vec<&String> = acked.iter().filter(|b| !g.contains(*b)).collect();
                prop_assert!(lost.is_empty(), "{}: lost acknowledged {:?} (acked {}, got {})", names[i], lost, acked.len(), g.len());
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
