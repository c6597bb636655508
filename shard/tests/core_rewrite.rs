//! EMQX's topic rewrite (`rewrite`) and auto-subscribe (`auto_subscribe.topics`) in the
//! session core, across shards: what is published, subscribed and unsubscribed after a rule
//! applies, wills, retained messages and delayed publish behind a rewrite, and subscriptions
//! the broker makes for a client when it connects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use net::mqtt::{
    Connect, LastWill, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, WillProperties,
};
use regex::Regex;
use shard::Settings;
use shard::rewrite::{AutoSubscribe, Rewrite, RewriteAction, RewriteRule};
use sim::{SHARD_COUNTS, Sim, settings};

fn rule(action: RewriteAction, source: &str, re: &str, dest: &str) -> RewriteRule {
    RewriteRule {
        action,
        source_topic: source.to_owned(),
        re: Regex::new(re).unwrap(),
        dest_topic: dest.to_owned(),
    }
}

fn with_rules(rules: &[RewriteRule]) -> Settings {
    let mut s = settings();
    s.rewrite = Arc::new(Rewrite::new(rules));
    s
}

fn topics(sim: &mut Sim, id: sim::ClientId) -> Vec<String> {
    sim.received(id)
        .iter()
        .map(|p| p.topic.to_string())
        .collect()
}

#[test]
fn published_topics_are_rewritten_before_routing() {
    for shards in SHARD_COUNTS {
        let mut sim = Sim::new(
            shards,
            with_rules(&[rule(
                RewriteAction::Publish,
                "dev/#",
                "^dev/(\\w+)/(\\w+)$",
                "site/$2/$1",
            )]),
        );
        let (sub, _) = sim.connect(shards - 1, ProtocolVersion::V5, "sub", true, 0);
        sim.subscribe(sub, "site/#", QoS::AtLeastOnce);
        sim.subscribe(sub, "dev/#", QoS::AtLeastOnce);
        let (p, _) = sim.connect(0, ProtocolVersion::V3_1_1, "pub", true, 0);
        sim.publish(p, "dev/a/temp", "1", QoS::AtLeastOnce);
        sim.publish(p, "dev/a/b/c", "2", QoS::AtLeastOnce);
        sim.publish(p, "other", "3", QoS::AtLeastOnce);
        assert_eq!(
            topics(&mut sim, sub),
            ["site/temp/a", "dev/a/b/c"],
            "{shards} shards: the expression must match too"
        );
        assert_eq!(sim.stat(|s| s.topics_rewritten), 1);
    }
}

#[test]
fn subscribe_and_unsubscribe_are_rewritten_alike() {
    let mut sim = Sim::new(
        2,
        with_rules(&[rule(
            RewriteAction::Subscribe,
            "old/#",
            "^old/(.+)$",
            "new/$1",
        )]),
    );
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    let ack = sim.subscribe(sub, "old/+/x", QoS::AtLeastOnce);
    assert!(ack.reason_codes[0].is_success());
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(p, "new/1/x", "a", QoS::AtLeastOnce);
    sim.publish(p, "old/1/x", "b", QoS::AtLeastOnce);
    assert_eq!(
        topics(&mut sim, sub),
        ["new/1/x"],
        "a subscribe rule does not touch PUBLISH topics"
    );
    let unsub = sim.unsubscribe(sub, "old/+/x");
    assert!(unsub.reason_codes[0].is_success(), "{unsub:?}");
    sim.publish(p, "new/1/x", "c", QoS::AtLeastOnce);
    assert!(topics(&mut sim, sub).is_empty());
}

#[test]
fn shared_subscriptions_keep_their_group() {
    let mut sim = Sim::new(
        2,
        with_rules(&[rule(RewriteAction::All, "t/#", "^t/(.+)$", "u/$1")]),
    );
    let (a, _) = sim.connect(0, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(1, ProtocolVersion::V5, "b", true, 0);
    sim.subscribe(a, "$share/g/t/1", QoS::AtLeastOnce);
    sim.subscribe(b, "$share/g/t/1", QoS::AtLeastOnce);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    for _ in 0..4 {
        sim.publish(p, "t/1", "x", QoS::AtLeastOnce);
    }
    let (ga, gb) = (topics(&mut sim, a), topics(&mut sim, b));
    assert_eq!(ga.len() + gb.len(), 4, "once per message: {ga:?} {gb:?}");
    assert!(ga.iter().chain(&gb).all(|t| t == "u/1"));
}

#[test]
fn client_placeholders_in_the_destination() {
    let mut sim = Sim::new(
        2,
        with_rules(&[rule(
            RewriteAction::Publish,
            "up/#",
            "^up/(.+)$",
            "clients/${clientid}/${username}/$1",
        )]),
    );
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "clients/#", QoS::AtLeastOnce);
    let mut c = Connect::new(ProtocolVersion::V5, "dev7".to_owned());
    c.username = Some("alice".to_owned().into());
    let (p, _) = sim.connect_with(0, c);
    sim.publish(p, "up/t", "x", QoS::AtLeastOnce);
    assert_eq!(topics(&mut sim, sub), ["clients/dev7/alice/t"]);
}

#[test]
fn wills_retained_and_delayed_follow_the_rewrite() {
    let mut sim = Sim::new(
        2,
        with_rules(&[
            rule(RewriteAction::Publish, "w/#", "^w/(.+)$", "gone/$1"),
            rule(
                RewriteAction::Publish,
                "later/#",
                "^later/(.+)$",
                "$delayed/2/now/$1",
            ),
        ]),
    );
    let (sub, _) = sim.connect(1, ProtocolVersion::V5, "sub", true, 0);
    sim.subscribe(sub, "gone/#", QoS::AtLeastOnce);
    sim.subscribe(sub, "now/#", QoS::AtLeastOnce);

    let mut c = Connect::new(ProtocolVersion::V5, "dying".to_owned());
    c.will = Some(LastWill {
        topic: "w/dying".to_owned().into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    let (d, _) = sim.connect_with(0, c);
    sim.close(d);
    assert_eq!(
        topics(&mut sim, sub),
        ["gone/dying"],
        "the will is rewritten"
    );
    // Stored retained under the new topic.
    let (late, _) = sim.connect(0, ProtocolVersion::V5, "late", true, 0);
    sim.subscribe(late, "gone/#", QoS::AtLeastOnce);
    assert_eq!(topics(&mut sim, late), ["gone/dying"]);

    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(p, "later/x", "1", QoS::AtLeastOnce);
    assert!(topics(&mut sim, sub).is_empty(), "held by delayed publish");
    sim.advance(Duration::from_secs(3));
    assert_eq!(topics(&mut sim, sub), ["now/x"]);
}

fn auto(topic: &str, qos: QoS, rh: RetainHandling) -> AutoSubscribe {
    AutoSubscribe {
        topic: topic.to_owned(),
        options: SubscriptionOptions {
            qos,
            retain_handling: rh,
            ..SubscriptionOptions::default()
        },
    }
}

#[test]
fn auto_subscribe_on_connect_without_suback() {
    for v in sim::VERSIONS {
        let mut st = settings();
        st.auto_subscribe = Arc::new([
            auto(
                "cmd/${clientid}",
                QoS::AtLeastOnce,
                RetainHandling::SendAtSubscribe,
            ),
            auto(
                "user/${username}",
                QoS::AtMostOnce,
                RetainHandling::SendAtSubscribe,
            ),
            auto(
                "$share/g/jobs/${clientid}",
                QoS::AtLeastOnce,
                RetainHandling::SendAtSubscribe,
            ),
        ]);
        let mut sim = Sim::new(2, st);
        let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
        sim.publish_with(p, {
            let mut m = net::mqtt::Publish::new(
                net::mqtt::MqttStr::from("cmd/dev1".to_owned()),
                Bytes::from_static(b"boot"),
            );
            m.qos = QoS::AtLeastOnce;
            m.retain = true;
            m
        });
        let (c, _) = sim.connect(1, v, "dev1", true, 0);
        let inbox = sim.packets(c);
        assert!(
            inbox
                .iter()
                .all(|p| !matches!(p, net::mqtt::Packet::SubAck(_))),
            "{v:?}: no SUBACK for the broker's own subscriptions: {inbox:?}"
        );
        let retained: Vec<String> = inbox
            .iter()
            .filter_map(|p| match p {
                net::mqtt::Packet::Publish(p) => Some(p.topic.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            retained,
            ["cmd/dev1"],
            "{v:?}: retained sent on auto-subscribe"
        );
        sim.publish(p, "cmd/dev1", "go", QoS::AtLeastOnce);
        sim.publish(p, "cmd/dev2", "not yours", QoS::AtLeastOnce);
        sim.publish(p, "jobs/dev1", "j", QoS::AtLeastOnce);
        sim.publish(p, "user/", "no username: no subscription", QoS::AtLeastOnce);
        let got = topics(&mut sim, c);
        assert_eq!(got, ["cmd/dev1", "jobs/dev1"], "{v:?}");
        // Two each for "pub" and "dev1"; neither has a username.
        assert_eq!(sim.stat(|s| s.auto_subscribed), 4, "{v:?}");
    }
}

#[test]
fn auto_subscribe_goes_through_rewrite_and_a_resumed_session_keeps_one_subscription() {
    let mut st = with_rules(&[rule(
        RewriteAction::Subscribe,
        "in/#",
        "^in/(.+)$",
        "inbox/$1",
    )]);
    st.auto_subscribe = Arc::new([auto(
        "in/${clientid}",
        QoS::AtLeastOnce,
        RetainHandling::SendIfNew,
    )]);
    let mut sim = Sim::new(2, st);
    let (c, _) = sim.connect_with(1, sim::persistent_v5("box", 600));
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "pub", true, 0);
    sim.publish(p, "inbox/box", "1", QoS::AtLeastOnce);
    assert_eq!(topics(&mut sim, c), ["inbox/box"]);
    sim.close(c);
    sim.publish(p, "inbox/box", "2", QoS::AtLeastOnce);
    let (c, ack) = sim.connect_with(0, sim::persistent_v5("box", 600));
    assert!(ack.session_present);
    sim.publish(p, "inbox/box", "3", QoS::AtLeastOnce);
    let got: Vec<Bytes> = sim.received(c).into_iter().map(|p| p.payload).collect();
    assert_eq!(
        got,
        [Bytes::from("2"), Bytes::from("3")],
        "queued and live, once each"
    );
}
