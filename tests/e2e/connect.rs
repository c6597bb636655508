//! CONNECT handling on the wire: protocol names and levels the broker does not speak get the
//! CONNACK their version allows, then the connection is closed.

use std::time::Duration;

use crate::harness::Broker;
use crate::raw::{self, Raw};

const WAIT: Duration = Duration::from_secs(5);

/// Sends `connect` and expects exactly `connack` (whole packet), then the close.
fn refused(broker: &Broker, what: &str, connect: &[u8], connack: &[u8]) {
    let mut c = Raw::connect(broker.addr());
    c.send(connect).unwrap();
    let (end, frames) = c.drain(WAIT);
    let got: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| raw::packet(f.first, &f.body))
        .collect();
    assert_eq!(got, vec![connack.to_vec()], "{what}: got {got:02x?}");
    assert!(
        matches!(end, raw::End::Eof | raw::End::Reset),
        "{what}: still open after CONNACK"
    );
}

#[test]
fn unsupported_protocol_levels_are_refused() {
    let broker = Broker::start();
    // "MQTT" level 6: CONNACK in the 3.1.1 format, return code 1 (unacceptable protocol
    // version) [MQTT-3.1.2-2].
    refused(
        &broker,
        "MQTT level 6",
        &raw::connect_any("MQTT", 6, 0x02, 60, None, "lvl6"),
        &[0x20, 0x02, 0x00, 0x01],
    );
    // "MQTT" level 3 (3.1 is "MQIsdp" level 3): the same.
    refused(
        &broker,
        "MQTT level 3",
        &raw::connect_any("MQTT", 3, 0x02, 60, None, "lvl3"),
        &[0x20, 0x02, 0x00, 0x01],
    );
    // "MQIsdp" level 4: the same.
    refused(
        &broker,
        "MQIsdp level 4",
        &raw::connect_any("MQIsdp", 4, 0x02, 60, None, "isdp4"),
        &[0x20, 0x02, 0x00, 0x01],
    );
    // Level 5 with the wrong name: the client speaks MQTT 5, so CONNACK in the MQTT 5 format
    // with reason 0x84 (Unsupported Protocol Version) and an empty property block.
    refused(
        &broker,
        "MQIsdp level 5",
        &raw::connect_any("MQIsdp", 5, 0x02, 60, Some(&[0]), "isdp5"),
        &[0x20, 0x03, 0x00, 0x84, 0x00],
    );
    broker.stop().assert_clean();
}

#[test]
fn supported_versions_are_accepted() {
    let broker = Broker::start();
    // 3.1 ("MQIsdp" level 3), 3.1.1 and 5: CONNACK success; 3.x in the short format.
    for (what, connect, len) in [
        (
            "3.1",
            raw::connect_any("MQIsdp", 3, 0x02, 60, None, "v31"),
            2,
        ),
        ("3.1.1", raw::connect_v311("v311", 60, true), 2),
        ("5", raw::connect_v5("v5", 60, true, None), 0),
    ] {
        let mut c = Raw::connect(broker.addr());
        c.send(&connect).unwrap();
        let ack = c.expect("CONNACK", WAIT);
        assert_eq!(ack.first, 0x20, "{what}: {ack:02x?}");
        assert_eq!(&ack.body[..2], &[0, 0], "{what}: {ack:02x?}");
        if len > 0 {
            assert_eq!(ack.body.len(), len, "{what}: {ack:02x?}");
        }
    }
    broker.stop().assert_clean();
}

/// MQTT 3.1.1: an empty client id with Clean Session 0 gets return code 2 [MQTT-3.1.3-8].
#[test]
fn empty_client_id_without_clean_session_is_refused() {
    let broker = Broker::start();
    refused(
        &broker,
        "empty id, clean session 0",
        &raw::connect_v311("", 60, false),
        &[0x20, 0x02, 0x00, 0x02],
    );
    broker.stop().assert_clean();
}
