//! `$SYS` topics: version and description (retained), statistics summed over every shard by
//! shard 0, the uptime/datetime heartbeat, and the client connected/disconnected events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use net::mqtt::{ProtocolVersion, QoS};
use sim::{ClientId, Sim, settings};

const NODE: &str = "$SYS/brokers/broker@127.0.0.1";

fn sim() -> Sim {
    let mut s = settings();
    s.sys_msg_interval = Duration::from_secs(10);
    s.sys_heartbeat_interval = Duration::from_secs(5);
    let mut sim = Sim::new(2, s);
    sim.start_clocks(1_764_143_627_000); // 2025-11-26T07:53:47Z
    sim
}

fn by_topic(sim: &mut Sim, c: ClientId) -> HashMap<String, String> {
    sim.received(c)
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                String::from_utf8(p.payload.to_vec()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn version_is_retained_and_statistics_cover_every_shard() {
    let mut sim = sim();
    let (watch, _) = sim.connect(1, ProtocolVersion::V5, "watch", true, 0);
    sim.subscribe(watch, "$SYS/#", QoS::AtMostOnce);
    let got = by_topic(&mut sim, watch);
    assert_eq!(got[&format!("{NODE}/version")], env!("CARGO_PKG_VERSION"));
    // Clients on both shards.
    let (a, _) = sim.connect(0, ProtocolVersion::V3_1_1, "a", true, 0);
    sim.subscribe(a, "x/#", QoS::AtMostOnce);
    let (_b, _) = sim.connect(1, ProtocolVersion::V5, "b", true, 0);
    sim.advance(Duration::from_secs(21));
    let got = by_topic(&mut sim, watch);
    assert_eq!(got[&format!("{NODE}/stats/connections/count")], "3");
    assert_eq!(got[&format!("{NODE}/stats/subscriptions/count")], "2");
    assert!(got.contains_key(&format!("{NODE}/uptime")));
    assert!(got[&format!("{NODE}/datetime")].starts_with("2025-11-26T07:54"));
    let bytes = |got: &HashMap<String, String>, dir: &str| -> u64 {
        got[&format!("{NODE}/metrics/bytes/{dir}")].parse().unwrap()
    };
    let (rx0, tx0) = (bytes(&got, "received"), bytes(&got, "sent"));
    assert!(rx0 > 0 && tx0 > 0, "{rx0} {tx0}");
    // 1 KiB published from shard 0 and delivered to `a`: both directions grow by at least it.
    sim.publish(a, "x/big", "z".repeat(1024), QoS::AtMostOnce);
    sim.advance(Duration::from_secs(21));
    let got = by_topic(&mut sim, watch);
    assert!(bytes(&got, "received") >= rx0 + 1024, "{got:?}");
    assert!(bytes(&got, "sent") >= tx0 + 1024, "{got:?}");
}

#[test]
fn client_events() {
    let mut sim = sim();
    let (watch, _) = sim.connect(0, ProtocolVersion::V5, "watch", true, 0);
    sim.subscribe(watch, "$SYS/brokers/+/clients/#", QoS::AtMostOnce);
    let mut c = net::mqtt::Connect::new(ProtocolVersion::V3_1_1, "ev\"il".to_string());
    c.username = Some("u".into());
    let (ev, _) = sim.connect_with(1, c);
    let got = by_topic(&mut sim, watch);
    let connected = &got[&format!("{NODE}/clients/ev\"il/connected")];
    let json: serde_json::Value = serde_json::from_str(connected).unwrap();
    assert_eq!(json["clientid"], "ev\"il");
    assert_eq!(json["username"], "u");
    assert_eq!(json["proto_ver"], 4);
    sim.close(ev);
    let got = by_topic(&mut sim, watch);
    let json: serde_json::Value =
        serde_json::from_str(&got[&format!("{NODE}/clients/ev\"il/disconnected")]).unwrap();
    assert_eq!(json["reason"], "closed");
}

#[test]
fn wildcards_at_the_first_level_do_not_see_sys() {
    let mut sim = sim();
    let (all, _) = sim.connect(0, ProtocolVersion::V5, "all", true, 0);
    sim.subscribe(all, "#", QoS::AtMostOnce);
    sim.connect(1, ProtocolVersion::V5, "other", true, 0);
    sim.advance(Duration::from_secs(21));
    assert!(sim.received(all).is_empty());
}
