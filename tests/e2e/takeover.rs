//! Session takeover: a second connection with the same client id takes the session over,
//! whichever shard each connection lands on. The kernel spreads connections over the shards
//! (`SO_REUSEPORT`), so a test cannot choose; it repeats the takeover and checks on the
//! broker's counters that the connections of the one client id sat on both shards, so the
//! session crossed between shards at least once.

use std::time::Duration;

use crate::harness::{Broker, Stopped, args, python_run, unique};
use crate::raw::{self, End};

const ROUNDS: usize = 20;

/// The connections of client id X sat on both shards: `extra` other connections (at most one
/// per shard) plus X's rounds + 1 connections, and every shard established more than `extra`.
fn assert_crossed_shards(stopped: &Stopped, x_connections: u64, extra: u64) {
    assert_eq!(
        stopped.total(|s| s.established),
        x_connections + extra,
        "{:?}",
        stopped.shards
    );
    for s in &stopped.shards {
        assert!(
            s.established > extra,
            "shard {} held no connection of the taken-over client: {:?}",
            s.id,
            stopped.shards
        );
    }
}

fn paho_takeover(proto: &str, mode: &str) -> serde_json::Value {
    let broker = Broker::start();
    let tag = unique(&format!("to{proto}{mode}"));
    let r = python_run(
        "takeover.py",
        &args(&broker, &[&proto, &ROUNDS, &mode, &tag]),
        Duration::from_secs(90),
    );
    let stopped = broker.stop();
    stopped.assert_clean();
    // X's first connection, one per round, and the publisher.
    assert_crossed_shards(&stopped, ROUNDS as u64 + 1, 1);
    assert_eq!(r["stream_missing"], 0, "{r}");
    assert_eq!(r["unexpected"], serde_json::json!([]), "{r}");
    println!("{r}");
    r
}

#[test]
fn takeover_v5_disconnects_old_with_0x8e() {
    let r = paho_takeover("5", "quiet");
    assert_eq!(
        r["disconnect_reasons"],
        serde_json::json!({"142": ROUNDS}),
        "{r}"
    );
    assert_eq!(r["reason_lost_to_reset"], 0, "{r}");
}

#[test]
fn takeover_v311_closes_old() {
    let r = paho_takeover("311", "quiet");
    assert_eq!(r["disconnect_reasons"], serde_json::json!({}), "{r}");
}

#[test]
fn takeover_v5_while_streaming_loses_nothing() {
    let r = paho_takeover("5", "stream");
    assert!(r["stream_sent"].as_u64().unwrap() > 0, "{r}");
    let seen = r["disconnect_reasons"]["142"].as_u64().unwrap_or(0);
    let lost = r["reason_lost_to_reset"].as_u64().unwrap();
    assert_eq!(seen + lost, ROUNDS as u64, "{r}");
}

#[test]
fn takeover_v311_while_streaming_loses_nothing() {
    let r = paho_takeover("311", "stream");
    assert!(r["stream_sent"].as_u64().unwrap() > 0, "{r}");
}

/// Raw MQTT 5: each old connection reads exactly DISCONNECT 0x8E, then the broker closes it;
/// each new one gets Session Present 1 and the messages published to the subscription.
#[test]
fn takeover_raw_v5_bytes() {
    raw_takeover(true);
}

/// Raw MQTT 3.1.1: each old connection is closed without a packet.
#[test]
fn takeover_raw_v311_closes_old() {
    raw_takeover(false);
}

fn raw_takeover(v5: bool) {
    let broker = Broker::start();
    let id = unique("rawto");
    let topic = format!("{id}/t");
    let connect = || {
        if v5 {
            raw::connect_v5(&id, 60, false, Some(300))
        } else {
            raw::connect_v311(&id, 60, false)
        }
    };
    let (mut old, present) = raw::open(broker.addr(), &connect());
    assert!(!present, "a fresh client id has no session");
    old.send(&raw::subscribe(v5, 1, &topic, 1)).unwrap();
    let ack = old.expect("SUBACK", Duration::from_secs(5));
    assert_eq!((ack.first, ack.body.last()), (0x90, Some(&1)), "{ack:02x?}");
    for round in 0..ROUNDS {
        let (mut new, present) = raw::open(broker.addr(), &connect());
        assert!(present, "round {round}: CONNACK without Session Present");
        let (end, frames) = old.drain(Duration::from_secs(5));
        if v5 {
            assert_eq!(
                frames.len(),
                1,
                "round {round}: old connection got {frames:02x?}"
            );
            assert_eq!(
                raw::disconnect_reason(&frames[0]),
                Some(0x8e),
                "round {round}: {frames:02x?}"
            );
        } else {
            assert!(frames.is_empty(), "round {round}: old got {frames:02x?}");
        }
        assert!(
            matches!(end, End::Eof | End::Reset),
            "round {round}: old connection still open"
        );
        // The session and its subscription moved: a message from a third connection arrives.
        let (mut publ, _) = raw::open(
            broker.addr(),
            &if v5 {
                raw::connect_v5("", 60, true, None)
            } else {
                raw::connect_v311("", 60, true)
            },
        );
        let payload = format!("round {round}");
        publ.send(&raw::publish(v5, &topic, 1, 1, payload.as_bytes()))
            .unwrap();
        let puback = publ.expect("PUBACK", Duration::from_secs(5));
        assert_eq!(puback.first, 0x40, "{puback:02x?}");
        let previous = round.checked_sub(1).map(|r| format!("round {r}"));
        loop {
            let p = new.expect("the PUBLISH", Duration::from_secs(5));
            let (t, pid, body) = raw::parse_publish(v5, &p);
            new.send(&raw::puback(pid.unwrap())).unwrap();
            // The previous round's PUBACK can reach the broker after this takeover (it went on
            // the old connection): that message comes again, with DUP, as QoS 1 allows.
            if p.first & 0x08 != 0 && previous.as_deref().map(str::as_bytes) == Some(&body[..]) {
                continue;
            }
            assert_eq!(
                (t.as_str(), body.as_slice()),
                (topic.as_str(), payload.as_bytes())
            );
            break;
        }
        old = new;
    }
    let stopped = broker.stop();
    stopped.assert_clean();
    // X: 1 + ROUNDS connections, and a publisher per round (anywhere).
    assert_eq!(
        stopped.total(|s| s.established),
        2 * ROUNDS as u64 + 1,
        "{:?}",
        stopped.shards
    );
    assert_eq!(stopped.total(|s| s.received), ROUNDS as u64);
}
