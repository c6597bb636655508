//! Graceful shutdown: on SIGTERM MQTT 5 clients get DISCONNECT 0x8B (Server shutting down),
//! older ones are closed, and the broker exits 0 within a few seconds.

use std::time::Duration;

use crate::harness::{Broker, args, python, script_result};
use crate::raw::{self, End};

const V5: usize = 8;
const V311: usize = 4;

#[test]
fn sigterm_disconnects_clients_with_0x8b_and_exits_0() {
    let broker = Broker::start();
    // Raw connections show the exact bytes; paho clients show what a library makes of them.
    let (mut raw5, _) = raw::open(broker.addr(), &raw::connect_v5("down-raw5", 60, true, None));
    let (mut raw3, _) = raw::open(broker.addr(), &raw::connect_v311("down-raw3", 60, true));
    let mut paho = python("shutdown.py", &args(&broker, &[&V5, &V311]));
    paho.wait_phase("connected", Duration::from_secs(30));

    let stopped = broker.stop();
    stopped.assert_clean();
    assert!(
        stopped.exit_after < Duration::from_secs(5),
        "exit took {:?}",
        stopped.exit_after
    );
    assert_eq!(
        stopped.total(|s| s.established),
        (V5 + V311 + 2) as u64,
        "{:?}",
        stopped.shards
    );

    let (end, frames) = raw5.drain(Duration::from_secs(5));
    assert_eq!(frames.len(), 1, "MQTT 5 raw client got {frames:02x?}");
    assert_eq!(
        raw::disconnect_reason(&frames[0]),
        Some(0x8b),
        "{frames:02x?}"
    );
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
    let (end, frames) = raw3.drain(Duration::from_secs(5));
    assert!(frames.is_empty(), "MQTT 3.1.1 raw client got {frames:02x?}");
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");

    let r = script_result("shutdown.py", &paho.finish(Duration::from_secs(30)));
    assert_eq!(r["v5"]["reasons"], serde_json::json!({"139": V5}), "{r}");
    assert_eq!(r["v5"]["closed_without_disconnect"], 0, "{r}");
    assert_eq!(r["v311"]["reasons"], serde_json::json!({}), "{r}");
    assert_eq!(r["v311"]["closed_without_disconnect"], V311, "{r}");
}

/// SIGTERM as soon as the broker has said it listens: still a graceful shutdown (exit 0,
/// both shards report), every time. The "listening" line is what a supervisor waits for
/// before it may stop the broker.
#[test]
fn sigterm_right_after_start_is_graceful() {
    for attempt in 0..50 {
        let broker = Broker::start();
        let stopped = broker.stop();
        assert!(
            stopped.status.success(),
            "attempt {attempt}: SIGTERM right after the listening line: exit {} (the signal \
             came before the broker handled it?):\n{}",
            stopped.status,
            stopped.log
        );
        stopped.assert_clean();
        assert!(
            stopped.exit_after < Duration::from_secs(3),
            "{:?}",
            stopped.exit_after
        );
        assert!(stopped.log.contains("shut down"), "{}", stopped.log);
    }
}
