//! A thousand clients at once: each subscribes to its own topic `load/RUN/<i>` and publishes
//! to the topics of 5 others; spread over 4 Python processes of 250 connections. Every
//! message must arrive: exactly once at QoS 2, at least once at QoS 1.

use std::time::{Duration, Instant};

use crate::harness::{Broker, args, python, script_result, unique};

const CLIENTS: usize = 1000;
const PER_PROCESS: usize = 250;
/// Other clients each one publishes to.
const K: usize = 5;
/// Messages per (publisher, target) pair, plus an end marker.
const MSGS: usize = 4;

fn load(qos: u8) {
    let broker = Broker::start();
    let tag = unique(&format!("load{qos}"));
    let started = Instant::now();
    let mut procs: Vec<_> = (0..CLIENTS / PER_PROCESS)
        .map(|p| {
            python(
                "load.py",
                &args(
                    &broker,
                    &[
                        &"5",
                        &qos,
                        &CLIENTS,
                        &(p * PER_PROCESS),
                        &PER_PROCESS,
                        &K,
                        &MSGS,
                        &tag,
                    ],
                ),
            )
        })
        .collect();
    // Every process has its clients connected, subscribed and reached by every sender...
    for p in &mut procs {
        p.wait_phase("ready", Duration::from_secs(90));
    }
    let ready = started.elapsed();
    // ... so every route is in place: publish.
    for p in &mut procs {
        p.send_line("go");
    }
    let results: Vec<_> = procs
        .into_iter()
        .map(|p| script_result("load.py", &p.finish(Duration::from_secs(120))))
        .collect();
    let total = started.elapsed();
    let stopped = broker.stop();
    stopped.assert_clean();
    let sum = |key: &str| -> u64 { results.iter().map(|r| r[key].as_u64().unwrap()).sum() };
    println!(
        "{CLIENTS} clients QoS {qos}: ready after {ready:?}, done after {total:?}, {} duplicates, \
         shards {:?}",
        sum("duplicates"),
        stopped.shards
    );
    assert_eq!(sum("expected"), (CLIENTS * K * (MSGS + 1)) as u64);
    assert_eq!(sum("missing"), 0, "{results:?}");
    assert_eq!(sum("unexpected"), 0, "{results:?}");
    assert_eq!(sum("wrong_qos"), 0, "{results:?}");
    if qos == 2 {
        assert_eq!(sum("duplicates"), 0, "QoS 2 delivered twice: {results:?}");
    }
    assert_eq!(
        stopped.total(|s| s.established),
        CLIENTS as u64,
        "{:?}",
        stopped.shards
    );
    assert_eq!(
        stopped.total(|s| s.received),
        sum("publish_packets_sent"),
        "broker counters {:?}",
        stopped.shards
    );
    assert_eq!(
        stopped.total(|s| s.sent),
        sum("publish_packets_received"),
        "broker counters {:?}",
        stopped.shards
    );
    stopped.assert_cross_shard();
}

#[test]
fn thousand_clients_qos2_exactly_once() {
    load(2);
}

#[test]
fn thousand_clients_qos1_at_least_once() {
    load(1);
}
