//! Will Messages (3.1.2.5, 3.1.3.2): when they are published, when not, the Will Delay
//! Interval, and what travels with them. Publisher and subscriber sit on different shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::time::Duration;

use bytes::Bytes;
use net::mqtt::{
    Connect, Disconnect, LastWill, Packet, ProtocolVersion, QoS, ReasonCode, WillProperties,
};
use sim::{ClientId, Sim, settings};

fn will(topic: &str, delay: Option<u32>) -> LastWill {
    let mut properties = WillProperties::default();
    properties.will_delay_interval = delay;
    LastWill {
        topic: topic.to_string().into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    }
}

fn with_will(version: ProtocolVersion, id: &str, w: LastWill, expiry: Option<u32>) -> Connect {
    let mut c = Connect::new(version, id.to_string());
    c.will = Some(w);
    if let Some(e) = expiry {
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(e);
    }
    c
}

/// A subscriber on shard 1 to `will/#`, and a will client on shard 0.
fn setup(version: ProtocolVersion, w: LastWill, expiry: Option<u32>) -> (Sim, ClientId, ClientId) {
    let mut sim = Sim::new(2, settings());
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "watcher", true, 0);
    sim.subscribe(sub, "will/#", QoS::AtLeastOnce);
    let (c, ack) = sim.connect_with(0, with_will(version, "dying", w, expiry));
    assert!(ack.reason_code.is_success());
    (sim, sub, c)
}

fn wills(sim: &mut Sim, sub: ClientId) -> Vec<String> {
    sim.received(sub)
        .iter()
        .map(|p| p.topic.to_string())
        .collect()
}

#[test]
fn published_when_the_connection_drops() {
    for v in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let (mut sim, sub, c) = setup(v, will("will/a", None), None);
        sim.close(c);
        assert_eq!(wills(&mut sim, sub), ["will/a"], "{v:?}");
        assert_eq!(sim.stat(|s| s.wills_published), 1);
    }
}

#[test]
fn deleted_by_a_normal_disconnect() {
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (mut sim, sub, c) = setup(v, will("will/a", None), None);
        sim.disconnect(c);
        assert!(wills(&mut sim, sub).is_empty(), "{v:?}");
    }
}

#[test]
fn published_on_disconnect_with_will_message() {
    let (mut sim, sub, c) = setup(ProtocolVersion::V5, will("will/a", None), None);
    sim.send(
        c,
        &Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL)),
    );
    sim.drive();
    assert_eq!(wills(&mut sim, sub), ["will/a"]);
}

#[test]
fn published_on_keepalive_expiry() {
    let mut sim = Sim::new(2, settings());
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "watcher", true, 0);
    sim.subscribe(sub, "will/#", QoS::AtLeastOnce);
    let mut c = with_will(
        ProtocolVersion::V3_1_1,
        "dying",
        will("will/ka", None),
        None,
    );
    c.keep_alive = 2;
    let (_, _) = sim.connect_with(0, c);
    sim.advance(Duration::from_secs(4));
    assert_eq!(wills(&mut sim, sub), ["will/ka"]);
}

#[test]
fn delay_cancelled_when_the_session_resumes_in_time() {
    let (mut sim, sub, c) = setup(ProtocolVersion::V5, will("will/d", Some(10)), Some(3600));
    sim.close(c);
    sim.advance(Duration::from_secs(5));
    assert!(wills(&mut sim, sub).is_empty(), "not before the delay");
    let (_, ack) = sim.connect_with(
        1,
        with_will(
            ProtocolVersion::V5,
            "dying",
            will("will/d", Some(10)),
            Some(3600),
        ),
    );
    assert!(ack.session_present);
    sim.advance(Duration::from_secs(20));
    assert!(
        wills(&mut sim, sub).is_empty(),
        "the resumed session cancelled it"
    );
}

#[test]
fn delay_elapses_without_a_new_connection() {
    let (mut sim, sub, c) = setup(ProtocolVersion::V5, will("will/d", Some(10)), Some(3600));
    sim.close(c);
    sim.advance(Duration::from_secs(9));
    assert!(wills(&mut sim, sub).is_empty());
    sim.advance(Duration::from_secs(2));
    assert_eq!(wills(&mut sim, sub), ["will/d"]);
}

#[test]
fn session_end_before_the_delay_publishes_it() {
    let (mut sim, sub, c) = setup(ProtocolVersion::V5, will("will/e", Some(100)), Some(5));
    sim.close(c);
    sim.advance(Duration::from_secs(6));
    assert_eq!(wills(&mut sim, sub), ["will/e"]);
    assert_eq!(
        sim.stat(|s| s.wills_published),
        1,
        "once, not again at the delay"
    );
    sim.advance(Duration::from_secs(200));
    assert!(wills(&mut sim, sub).is_empty());
}

#[test]
fn takeover_publishes_a_will_without_delay_only() {
    let (mut sim, sub, _c) = setup(ProtocolVersion::V5, will("will/t", None), Some(60));
    let (_, ack) = sim.connect_with(
        1,
        with_will(ProtocolVersion::V5, "dying", will("will/t", None), Some(60)),
    );
    assert!(ack.session_present);
    assert_eq!(
        wills(&mut sim, sub),
        ["will/t"],
        "the old connection ended without DISCONNECT"
    );

    let (mut sim, sub, _c) = setup(ProtocolVersion::V5, will("will/t", Some(30)), Some(60));
    sim.connect_with(
        1,
        with_will(
            ProtocolVersion::V5,
            "dying",
            will("will/t", Some(30)),
            Some(60),
        ),
    );
    sim.advance(Duration::from_secs(40));
    assert!(
        wills(&mut sim, sub).is_empty(),
        "a new connection came before the delay"
    );
}

#[test]
fn properties_qos_and_retain_travel_with_it() {
    let mut w = will("will/p", None);
    w.retain = true;
    w.properties.content_type = Some("text/plain".into());
    w.properties.user_properties = vec![("k".into(), "v".into())];
    w.properties.payload_format_indicator = Some(true);
    let mut sim = Sim::new(2, settings());
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "watcher", true, 0);
    let mut o = sim::opts(QoS::ExactlyOnce);
    o.retain_as_published = true;
    sim.subscribe_with(sub, &[("will/#", o)], None);
    let (c, _) = sim.connect_with(0, with_will(ProtocolVersion::V5, "dying", w, None));
    sim.close(c);
    let got = sim.received(sub);
    assert_eq!(got.len(), 1);
    let p = &got[0];
    assert_eq!(&p.payload[..], b"gone");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(p.retain, "Retain As Published keeps the will's RETAIN");
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.payload_format_indicator, Some(true));
    assert_eq!(p.properties.user_properties.len(), 1);
}

#[test]
fn broker_shutdown_does_not_publish_wills() {
    let (mut sim, sub, _c) = setup(ProtocolVersion::V5, will("will/s", None), None);
    sim.shutdown_shard(0);
    assert!(wills(&mut sim, sub).is_empty());
}
