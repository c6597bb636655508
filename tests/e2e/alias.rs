//! Outgoing topic aliases through the real broker, on the wire: a raw MQTT 5 client announces
//! a Topic Alias Maximum of 2; the broker defines an alias with the first PUBLISH of a topic
//! and then sends that topic's messages with an empty topic name and the alias. (The mosquitto
//! 2.0 client library refuses incoming aliases and paho-mqtt ignores them, so neither can
//! take part here.)

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};
use crate::raw::{Raw, connect_any, parse_publish, subscribe};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The Topic Alias property of a v5 QoS 0 PUBLISH frame.
fn alias_of(body: &[u8]) -> Option<u16> {
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let at = 2 + tlen;
    let plen = usize::from(body[at]); // short property blocks here
    let props = &body[at + 1..at + 1 + plen];
    props
        .windows(3)
        .find(|w| w[0] == 0x23)
        .map(|w| u16::from_be_bytes([w[1], w[2]]))
}

#[test]
fn topics_are_aliased_within_the_client_maximum() {
    let broker = Broker::start();
    let mut raw = Raw::connect(broker.addr());
    // Clean Start, Keep Alive 0, properties: Topic Alias Maximum (0x22) = 2.
    raw.send(&connect_any(
        "MQTT",
        5,
        0x02,
        0,
        Some(&[3, 0x22, 0, 2]),
        &unique("alias"),
    ))
    .unwrap();
    assert_eq!(raw.expect("CONNACK", TIMEOUT).kind(), 2);
    raw.send(&subscribe(true, 1, "alias/#", 0)).unwrap();
    assert_eq!(raw.expect("SUBACK", TIMEOUT).kind(), 9);
    let topics = [
        "alias/a", "alias/a", "alias/b", "alias/a", "alias/c", "alias/b",
    ];
    for t in topics {
        let mut cmd = mosquitto("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", "mqttv5"])
            .args(["-i", &unique("apub"), "-t", t, "-m", "x"]);
        assert!(
            Proc::spawn("mosquitto_pub", cmd)
                .unwrap()
                .finish(TIMEOUT)
                .status
                .success()
        );
    }
    let mut known = std::collections::HashMap::new();
    let mut reused = 0;
    for t in topics {
        let f = raw.expect("PUBLISH", TIMEOUT);
        let (topic, _, payload) = parse_publish(true, &f);
        assert_eq!(payload, b"x");
        let alias = alias_of(&f.body).expect("an alias on every PUBLISH");
        assert!((1..=2).contains(&alias), "alias {alias}");
        let resolved = if topic.is_empty() {
            reused += 1;
            known
                .get(&alias)
                .cloned()
                .expect("alias defined before use")
        } else {
            known.insert(alias, topic.clone());
            topic
        };
        assert_eq!(resolved, t);
    }
    assert!(reused >= 1, "an alias was reused");
}
