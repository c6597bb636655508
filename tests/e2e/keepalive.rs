//! Keep Alive and the CONNECT deadline: idle connections are closed on time.

use std::time::{Duration, Instant};

use crate::harness::{Broker, args, python_run};
use crate::raw::{self, Raw};

/// MQTT 3.1.1 CONNECT with Keep Alive 1 s, then silence: the broker closes the connection
/// after 1.5 × Keep Alive (`mqtt.keepalive_multiplier`, default 1.5), not before 1 s and well
/// within 4 s.
#[test]
fn keepalive_closes_silent_v311_connection() {
    let broker = Broker::start();
    let (mut c, _) = raw::open(broker.addr(), &raw::connect_v311("ka-raw", 1, true));
    let after = c.expect_closed("silent client with Keep Alive 1", Duration::from_secs(6));
    assert!(
        after >= Duration::from_millis(1000) && after <= Duration::from_secs(4),
        "closed after {after:?}, expected about 1.5 s"
    );
    broker.stop().assert_clean();
}

/// A client that keeps pinging within the Keep Alive stays connected past the deadline.
#[test]
fn keepalive_pingreq_keeps_connection() {
    let broker = Broker::start();
    let (mut c, _) = raw::open(broker.addr(), &raw::connect_v311("ka-ping", 1, true));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        c.send(&[0xc0, 0x00]).unwrap();
        let resp = c.expect("PINGRESP", Duration::from_secs(2));
        assert_eq!((resp.first, resp.body.len()), (0xd0, 0), "{resp:02x?}");
        // Pace the pings at half the Keep Alive: this is the behaviour under test.
        std::thread::sleep(Duration::from_millis(500));
    }
    broker.stop().assert_clean();
}

/// `mqtt.keepalive_multiplier` scales the deadline: 3 × 1 s.
#[test]
fn keepalive_multiplier_is_honoured() {
    let broker = Broker::start_with(&["mqtt.keepalive_multiplier=3"]);
    let (mut c, _) = raw::open(broker.addr(), &raw::connect_v311("ka-mult", 1, true));
    let after = c.expect_closed("silent client, multiplier 3", Duration::from_secs(8));
    assert!(
        after >= Duration::from_millis(2500) && after <= Duration::from_secs(5),
        "closed after {after:?}, expected about 3 s"
    );
    broker.stop().assert_clean();
}

/// A v5 paho client with Keep Alive 1 whose loop is paused gets DISCONNECT 0x8D (Keep Alive
/// timeout) and is closed.
#[test]
fn keepalive_v5_paho_gets_0x8d() {
    let broker = Broker::start();
    let r = python_run(
        "keepalive.py",
        &args(&broker, &[&1]),
        Duration::from_secs(30),
    );
    let after = r["after"].as_f64().unwrap();
    assert!(
        (1.0..=4.0).contains(&after),
        "disconnected after {after} s: {r}"
    );
    assert_eq!(r["reason"], 0x8d, "{r}");
    assert_eq!(r["from_server"], true, "{r}");
    broker.stop().assert_clean();
}

/// A connection that never sends CONNECT is closed after `mqtt.idle_timeout`.
#[test]
fn idle_timeout_closes_connection_without_connect() {
    let broker = Broker::start_with(&["mqtt.idle_timeout=1s"]);
    let mut c = Raw::connect(broker.addr());
    let after = c.expect_closed("connection without CONNECT", Duration::from_secs(6));
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_secs(4),
        "closed after {after:?}, expected about 1 s"
    );
    broker.stop().assert_clean();
}
