//! The shard's side of the REST API ([`shard::admin`]): requests pushed by the control plane
//! (ring source id = the number of shards) and answered through the request's callback, in
//! the deterministic simulation. Listings with filters and `keep`, kicking online and offline
//! sessions, subscribing and unsubscribing a client, publishing as the broker, the route table,
//! and the retained store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use net::mqtt::{
    Connect, LastWill, Packet, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};
use shard::ShardMsg;
use shard::admin::{
    AdminOp, AdminPublish, AdminReply, AdminRequest, ClientInfo, ClientQuery, RetainedInfo, Scan,
    SubInfo, SubQuery,
};
use sim::{ClientId, Sim, opts, persistent_v5, settings};

/// The wall clock the shards are given (Unix ms).
const EPOCH_MS: u64 = 1_795_000_000_000;

// ---- the control plane's side -------------------------------------------------------------

/// Pushes `op` to `shard` as the control plane does (from the last endpoint of the mesh),
/// drives, and returns the answer, which must have come exactly once.
fn ask(sim: &mut Sim, shard: u16, op: AdminOp) -> AdminReply {
    let (tx, rx) = mpsc::channel();
    let req = AdminRequest::new(op, move |reply| tx.send(reply).unwrap());
    let control = sim.shard_count();
    let now = sim.now;
    sim.shards[usize::from(shard)].handle_message(now, control, ShardMsg::Admin(Box::new(req)));
    sim.drive();
    let reply = rx
        .try_recv()
        .unwrap_or_else(|e| panic!("shard {shard} did not answer: {e}"));
    assert!(rx.try_recv().is_err(), "answered twice");
    reply
}

/// [`ask`] of every shard, in shard order.
fn ask_all(sim: &mut Sim, op: &AdminOp) -> Vec<AdminReply> {
    (0..sim.shard_count())
        .map(|s| ask(sim, s, op.clone()))
        .collect()
}

/// `AdminOp::Clients` on one shard: (total, page).
fn clients_of(
    sim: &mut Sim,
    shard: u16,
    query: &ClientQuery,
    keep: usize,
) -> (usize, Vec<ClientInfo>) {
    match ask(
        sim,
        shard,
        AdminOp::Clients {
            query: query.clone(),
            keep,
            scan: Scan::ALL,
        },
    ) {
        AdminReply::Clients { total, page, .. } => (total, page),
        other => panic!("not a Clients answer: {other:?}"),
    }
}

/// What the control plane computes for `GET /clients`: the totals summed, the shards' pages
/// merged by client id, page `page` of `limit` taken. Returns (count, client ids of the page).
fn clients_page(
    sim: &mut Sim,
    query: &ClientQuery,
    page: usize,
    limit: usize,
) -> (usize, Vec<String>) {
    let (mut count, mut all) = (0, Vec::new());
    for s in 0..sim.shard_count() {
        let (total, p) = clients_of(sim, s, query, page * limit);
        assert!(
            p.len() <= page * limit,
            "shard {s} kept {} > {}",
            p.len(),
            page * limit
        );
        assert_eq!(p.len(), total.min(page * limit), "shard {s} kept too few");
        let ids: Vec<&str> = p.iter().map(|c| c.client_id.as_str()).collect();
        assert!(
            ids.is_sorted(),
            "shard {s} page not in client id order: {ids:?}"
        );
        count += total;
        all.extend(p);
    }
    all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let ids = all
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|c| c.client_id)
        .collect();
    (count, ids)
}

/// Every client id matching `query`, sorted (one page large enough).
fn matching(sim: &mut Sim, query: &ClientQuery) -> Vec<String> {
    let (count, ids) = clients_page(sim, query, 1, 1000);
    assert_eq!(count, ids.len());
    ids
}

/// The one session `client_id`, from whichever shard holds it.
fn client_info(sim: &mut Sim, client_id: &str) -> Option<ClientInfo> {
    let q = ClientQuery {
        client_id: Some(client_id.to_owned()),
        ..ClientQuery::default()
    };
    let mut found = Vec::new();
    for s in 0..sim.shard_count() {
        let (total, page) = clients_of(sim, s, &q, 1);
        assert_eq!(total, page.len());
        found.extend(page);
    }
    assert!(found.len() <= 1, "{client_id} on several shards: {found:?}");
    found.pop()
}

fn subs_all(sim: &mut Sim, query: &SubQuery) -> Vec<(String, String, QoS)> {
    let mut out = Vec::new();
    for r in ask_all(
        sim,
        &AdminOp::Subscriptions {
            query: query.clone(),
            keep: usize::MAX,
            scan: Scan::ALL,
        },
    ) {
        let AdminReply::Subscriptions { total, page, .. } = r else {
            panic!("not a Subscriptions answer: {r:?}");
        };
        assert_eq!(total, page.len());
        out.extend(
            page.into_iter()
                .map(|s: SubInfo| (s.client_id, s.topic, s.options.qos)),
        );
    }
    out.sort();
    out
}

fn retained_of(
    sim: &mut Sim,
    shard: u16,
    topic: Option<&str>,
    keep: usize,
) -> (usize, Vec<RetainedInfo>) {
    let op = AdminOp::Retained {
        topic: topic.map(str::to_owned),
        keep,
    };
    match ask(sim, shard, op) {
        AdminReply::Retained { total, page } => (total, page),
        other => panic!("not a Retained answer: {other:?}"),
    }
}

fn admin_publish(topic: &str, payload: &str, qos: QoS, retain: bool) -> AdminOp {
    AdminOp::Publish(Box::new(AdminPublish {
        topic: topic.to_owned(),
        payload: Bytes::from(payload.to_owned()),
        qos,
        retain,
        properties: Default::default(),
    }))
}

/// Publishes through the API on the topic's owner shard, as the control plane does; returns
/// (matched, message id).
fn api_publish(sim: &mut Sim, op: AdminOp) -> (bool, u64) {
    let AdminOp::Publish(p) = &op else {
        panic!("not a publish: {op:?}")
    };
    let owner = shard::core::owner_of(&p.topic, sim.shard_count());
    match ask(sim, owner, op) {
        AdminReply::Published { matched, id } => (matched, id),
        other => panic!("not a Published answer: {other:?}"),
    }
}

// ---- the clients' side ----------------------------------------------------------------------

fn payloads(sim: &mut Sim, c: ClientId) -> Vec<String> {
    sim.received(c)
        .into_iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

/// A CONNECT with a user name and Keep Alive.
fn connect_as(
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    clean: bool,
    expiry: Option<u32>,
) -> Connect {
    let mut c = Connect::new(version, id.to_owned());
    c.username = user.map(|u| u.to_owned().into());
    c.clean_start = clean;
    c.keep_alive = 30;
    if version == ProtocolVersion::V5 {
        c.properties.session_expiry_interval = expiry;
    }
    c
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn clients_are_listed_per_shard_with_filters_and_keep() {
    let mut sim = Sim::new(2, settings());
    sim.start_clocks(EPOCH_MS);
    // (id, shard, version, user, clean start, expiry)
    let early = [
        ("c-00", 0, ProtocolVersion::V5, Some("alice"), true, None),
        (
            "c-01",
            1,
            ProtocolVersion::V5,
            Some("alice"),
            false,
            Some(300),
        ),
        ("c-02", 0, ProtocolVersion::V3_1_1, Some("bob"), true, None),
        ("c-03", 1, ProtocolVersion::V3_1_1, None, true, None),
        ("c-04", 0, ProtocolVersion::V3_1, Some("bobby"), true, None),
    ];
    let mut conns = Vec::new();
    for &(id, shard, v, user, clean, expiry) in &early {
        let (c, ack) = sim.connect_with(shard, connect_as(v, id, user, clean, expiry));
        assert!(ack.reason_code.is_success(), "{id}: {ack:?}");
        conns.push(c);
    }
    sim.advance(Duration::from_secs(10));
    let late = [
        ("d-05", 1, ProtocolVersion::V5, Some("carol"), true, None),
        (
            "d-06",
            0,
            ProtocolVersion::V5,
            Some("carol"),
            false,
            Some(600),
        ),
        (
            "d-07",
            1,
            ProtocolVersion::V3_1_1,
            Some("dave"),
            false,
            None,
        ),
    ];
    for &(id, shard, v, user, clean, expiry) in &late {
        let (c, ack) = sim.connect_with(shard, connect_as(v, id, user, clean, expiry));
        assert!(ack.reason_code.is_success(), "{id}: {ack:?}");
        conns.push(c);
    }
    // A persistent session whose client went away: listed as disconnected.
    let (gone, _) = sim.connect_with(1, persistent_v5("e-08", 900));
    sim.subscribe(gone, "e/#", QoS::AtLeastOnce);
    sim.advance(Duration::from_secs(1));
    sim.disconnect(gone);
    assert!(sim.is_closed(gone));

    let all = ClientQuery::default();
    let everyone = ids(&[
        "c-00", "c-01", "c-02", "c-03", "c-04", "d-05", "d-06", "d-07", "e-08",
    ]);
    assert_eq!(matching(&mut sim, &all), everyone);
    // Paging: every shard keeps the first page * limit of its own, sorted; merged, the pages
    // are disjoint and cover everything.
    let mut seen = Vec::new();
    for page in 1..=4 {
        let (count, p) = clients_page(&mut sim, &all, page, 2);
        assert_eq!(count, 9);
        assert_eq!(p.len(), 2, "page {page}");
        seen.extend(p);
    }
    let (_, last) = clients_page(&mut sim, &all, 5, 2);
    assert_eq!(last, ids(&["e-08"]));
    seen.extend(last);
    assert_eq!(seen, everyone);
    // keep = 0: the count only.
    for s in 0..2 {
        let (total, page) = clients_of(&mut sim, s, &all, 0);
        assert!(total > 0 && page.is_empty(), "shard {s}: {total} {page:?}");
    }

    let q = |f: fn(&mut ClientQuery)| {
        let mut q = ClientQuery::default();
        f(&mut q);
        q
    };
    let cases: Vec<(ClientQuery, Vec<String>)> = vec![
        (q(|q| q.client_id = Some("d-06".into())), ids(&["d-06"])),
        (q(|q| q.client_id = Some("nobody".into())), vec![]),
        (
            q(|q| q.username = Some("alice".into())),
            ids(&["c-00", "c-01"]),
        ),
        (q(|q| q.username = Some("bob".into())), ids(&["c-02"])),
        (
            q(|q| q.like_username = Some("bob".into())),
            ids(&["c-02", "c-04"]),
        ),
        (
            q(|q| q.like_clientid = Some("d-".into())),
            ids(&["d-05", "d-06", "d-07"]),
        ),
        (q(|q| q.like_clientid = Some("0".into())), everyone.clone()),
        (q(|q| q.proto_ver = Some(3)), ids(&["c-04"])),
        (q(|q| q.proto_ver = Some(4)), ids(&["c-02", "c-03", "d-07"])),
        (
            q(|q| q.proto_ver = Some(5)),
            ids(&["c-00", "c-01", "d-05", "d-06", "e-08"]),
        ),
        (q(|q| q.connected = Some(false)), ids(&["e-08"])),
        (q(|q| q.connected = Some(true)), everyone[..8].to_vec()),
        (
            // e-08 is offline: what its last connection was still counts.
            q(|q| q.clean_start = Some(false)),
            ids(&["c-01", "d-06", "d-07", "e-08"]),
        ),
        (
            q(|q| q.clean_start = Some(true)),
            ids(&["c-00", "c-02", "c-03", "c-04", "d-05"]),
        ),
        (
            q(|q| q.lte_connected_at = Some(EPOCH_MS + 5_000)),
            ids(&["c-00", "c-01", "c-02", "c-03", "c-04"]),
        ),
        (
            q(|q| q.gte_connected_at = Some(EPOCH_MS + 5_000)),
            ids(&["d-05", "d-06", "d-07", "e-08"]),
        ),
        (
            q(|q| {
                q.gte_connected_at = Some(EPOCH_MS + 5_000);
                q.proto_ver = Some(5);
                q.connected = Some(true);
            }),
            ids(&["d-05", "d-06"]),
        ),
    ];
    for (query, want) in cases {
        assert_eq!(matching(&mut sim, &query), want, "{query:?}");
    }
    // The simulated peers have distinct addresses.
    let d06 = client_info(&mut sim, "d-06").unwrap();
    let ip = d06.peer.unwrap().ip();
    let by_ip = ClientQuery {
        ip_address: Some(ip),
        ..ClientQuery::default()
    };
    assert_eq!(matching(&mut sim, &by_ip), ids(&["d-06"]));

    // What one entry says.
    assert_eq!(d06.username.as_deref(), Some("carol"));
    assert_eq!(d06.proto_ver, 5);
    assert_eq!(d06.keepalive, 30);
    assert!(d06.connected && !d06.clean_start);
    assert_eq!(d06.expiry_interval, 600);
    assert_eq!(d06.shard, 0);
    assert_eq!(d06.listener, "tcp");
    assert_eq!(d06.disconnected_at, None);
    assert!(
        d06.connected_at >= EPOCH_MS + 10_000 && d06.connected_at < EPOCH_MS + 11_000,
        "{}",
        d06.connected_at
    );
    let c04 = client_info(&mut sim, "c-04").unwrap();
    assert_eq!((c04.proto_ver, c04.shard), (3, 0));
    assert!(c04.connected_at < EPOCH_MS + 1_000, "{}", c04.connected_at);
    let e08 = client_info(&mut sim, "e-08").unwrap();
    assert!(!e08.connected);
    // Offline, it shows its last connection: address, clean start, keep alive.
    let e08_ip = e08
        .peer
        .expect("an offline session keeps its last address")
        .ip();
    assert!(!e08.clean_start);
    assert_eq!(e08.keepalive, 60, "Connect::new's default keep alive");
    let by_ip = ClientQuery {
        ip_address: Some(e08_ip),
        ..ClientQuery::default()
    };
    assert_eq!(matching(&mut sim, &by_ip), ids(&["e-08"]));
    assert_eq!(e08.subscriptions, 1);
    assert_eq!(e08.expiry_interval, 900);
    assert_eq!(e08.shard, 1);
    let left = e08
        .disconnected_at
        .expect("an offline session has disconnected_at");
    assert!(
        left >= e08.connected_at + 1_000,
        "{left} vs {}",
        e08.connected_at
    );
}

#[test]
fn kick_closes_online_clients_and_discards_offline_sessions() {
    let mut sim = Sim::new(2, settings());
    // An MQTT 5 client with a persistent session and a will, on shard 1.
    let mut c = persistent_v5("k5", 3600);
    c.will = Some(LastWill {
        topic: "will/k5".to_owned().into(),
        payload: Bytes::from_static(b"k5 is gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (k5, ack) = sim.connect_with(1, c);
    assert!(ack.reason_code.is_success());
    let (watcher, _) = sim.connect(0, ProtocolVersion::V5, "watcher", true, 0);
    sim.subscribe(watcher, "will/#", QoS::AtLeastOnce);
    // An MQTT 3.1.1 client with a persistent session, on shard 0.
    let (k3, _) = sim.connect(0, ProtocolVersion::V3_1_1, "k3", false, 0);

    // Shard 0 does not hold k5: it says so and touches nothing.
    assert!(matches!(
        ask(
            &mut sim,
            0,
            AdminOp::Kick {
                client_id: "k5".into()
            }
        ),
        AdminReply::Done(false)
    ));
    assert!(!sim.is_closed(k5));
    assert!(matches!(
        ask(
            &mut sim,
            1,
            AdminOp::Kick {
                client_id: "k5".into()
            }
        ),
        AdminReply::Done(true)
    ));
    assert!(sim.is_closed(k5), "the kicked connection is closed");
    let disconnects: Vec<ReasonCode> = sim
        .packets(k5)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason_code),
            _ => None,
        })
        .collect();
    assert_eq!(disconnects, [ReasonCode::ADMINISTRATIVE_ACTION]);
    // The session is gone despite its expiry interval, and the will was published.
    assert!(client_info(&mut sim, "k5").is_none());
    assert_eq!(payloads(&mut sim, watcher), ["k5 is gone"]);
    assert!(matches!(
        ask(
            &mut sim,
            1,
            AdminOp::Kick {
                client_id: "k5".into()
            }
        ),
        AdminReply::Done(false)
    ));
    let (again, ack) = sim.connect_with(1, persistent_v5("k5", 3600));
    assert!(!ack.session_present, "the kicked session was discarded");
    sim.disconnect(again);

    // MQTT 3.1.1: no DISCONNECT from a server, the connection just closes.
    assert!(matches!(
        ask(
            &mut sim,
            0,
            AdminOp::Kick {
                client_id: "k3".into()
            }
        ),
        AdminReply::Done(true)
    ));
    assert!(sim.is_closed(k3));
    assert!(
        !sim.packets(k3)
            .iter()
            .any(|p| matches!(p, Packet::Disconnect(_)))
    );
    assert!(client_info(&mut sim, "k3").is_none());

    // An offline persistent session (the `again` connection above left k5 offline).
    let info = client_info(&mut sim, "k5").expect("k5 is offline, its session kept");
    assert!(!info.connected);
    let kicked: Vec<bool> = ask_all(
        &mut sim,
        &AdminOp::Kick {
            client_id: "k5".into(),
        },
    )
    .into_iter()
    .map(|r| matches!(r, AdminReply::Done(true)))
    .collect();
    assert_eq!(kicked.iter().filter(|k| **k).count(), 1, "{kicked:?}");
    assert!(client_info(&mut sim, "k5").is_none());
    let (_, ack) = sim.connect_with(0, persistent_v5("k5", 3600));
    assert!(!ack.session_present);

    // Nobody of that name.
    for r in ask_all(
        &mut sim,
        &AdminOp::Kick {
            client_id: "nobody".into(),
        },
    ) {
        assert!(matches!(r, AdminReply::Done(false)), "{r:?}");
    }
}

#[test]
fn subscribe_and_unsubscribe_a_client() {
    let mut sim = Sim::new(2, settings());
    let (a, _) = sim.connect(1, ProtocolVersion::V5, "a", true, 0);
    let (b, _) = sim.connect(0, ProtocolVersion::V3_1_1, "b", true, 0);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "p", true, 0);
    sim.subscribe(b, "s/b/+", QoS::ExactlyOnce);
    sim.subscribe(b, "s/a/#", QoS::AtMostOnce);
    sim.subscribe_with(b, &[("$share/g1/s/shared", opts(QoS::AtLeastOnce))], None);

    let op = |filter: &str, qos| AdminOp::Subscribe {
        client_id: "a".into(),
        filter: filter.into(),
        options: SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        },
    };
    // Only the shard holding the connection subscribes it.
    assert!(matches!(
        ask(&mut sim, 0, op("s/a/#", QoS::AtLeastOnce)),
        AdminReply::Subscribed(None)
    ));
    assert!(matches!(
        ask(&mut sim, 1, op("s/a/#", QoS::AtLeastOnce)),
        AdminReply::Subscribed(Some(1))
    ));
    assert!(matches!(
        ask(&mut sim, 1, op("s/q2", QoS::ExactlyOnce)),
        AdminReply::Subscribed(Some(2))
    ));
    assert!(
        matches!(
            ask(&mut sim, 1, op("s/#/bad", QoS::AtMostOnce)),
            AdminReply::Subscribed(Some(0x8F))
        ),
        "an invalid filter is refused with 0x8F"
    );
    assert!(
        !sim.peek(a).iter().any(|p| matches!(p, Packet::SubAck(_))),
        "no SUBACK for a subscription the client did not ask for: {:?}",
        sim.peek(a)
    );
    // In force: a publish from another shard reaches it.
    sim.publish(p, "s/a/x", "one", QoS::AtLeastOnce);
    assert_eq!(payloads(&mut sim, a), ["one"]);
    assert_eq!(payloads(&mut sim, b), ["one"]);

    let q = |f: fn(&mut SubQuery)| {
        let mut q = SubQuery::default();
        f(&mut q);
        q
    };
    let s = |c: &str, t: &str, qos| (c.to_owned(), t.to_owned(), qos);
    use QoS::{AtLeastOnce as Q1, AtMostOnce as Q0, ExactlyOnce as Q2};
    let cases = vec![
        (
            SubQuery::default(),
            vec![
                s("a", "s/a/#", Q1),
                s("a", "s/q2", Q2),
                s("b", "$share/g1/s/shared", Q1),
                s("b", "s/a/#", Q0),
                s("b", "s/b/+", Q2),
            ],
        ),
        (
            q(|q| q.client_id = Some("a".into())),
            vec![s("a", "s/a/#", Q1), s("a", "s/q2", Q2)],
        ),
        (
            q(|q| q.topic = Some("s/a/#".into())),
            vec![s("a", "s/a/#", Q1), s("b", "s/a/#", Q0)],
        ),
        (
            q(|q| q.qos = Some(Q2)),
            vec![s("a", "s/q2", Q2), s("b", "s/b/+", Q2)],
        ),
        (
            q(|q| q.share_group = Some("g1".into())),
            vec![s("b", "$share/g1/s/shared", Q1)],
        ),
        (q(|q| q.share_group = Some("g2".into())), vec![]),
        (
            q(|q| q.match_topic = Some("s/b/1".into())),
            vec![s("b", "s/b/+", Q2)],
        ),
        (
            q(|q| q.match_topic = Some("s/a/x/y".into())),
            vec![s("a", "s/a/#", Q1), s("b", "s/a/#", Q0)],
        ),
        (
            q(|q| q.match_topic = Some("s/shared".into())),
            vec![s("b", "$share/g1/s/shared", Q1)],
        ),
    ];
    for (query, want) in cases {
        assert_eq!(subs_all(&mut sim, &query), want, "{query:?}");
    }
    // keep: the first in (client id, filter) order.
    let AdminReply::Subscriptions { total, page, .. } = ask(
        &mut sim,
        0,
        AdminOp::Subscriptions {
            query: SubQuery::default(),
            keep: 2,
            scan: Scan::ALL,
        },
    ) else {
        panic!()
    };
    assert_eq!(total, 3);
    let topics: Vec<&str> = page.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(topics, ["$share/g1/s/shared", "s/a/#"]);

    // Unsubscribe: only where the session is, once.
    let unsub = || AdminOp::Unsubscribe {
        client_id: "a".into(),
        filter: "s/a/#".into(),
    };
    assert!(matches!(ask(&mut sim, 0, unsub()), AdminReply::Done(false)));
    assert!(matches!(ask(&mut sim, 1, unsub()), AdminReply::Done(true)));
    assert!(matches!(ask(&mut sim, 1, unsub()), AdminReply::Done(false)));
    sim.publish(p, "s/a/x", "two", QoS::AtLeastOnce);
    assert!(payloads(&mut sim, a).is_empty(), "unsubscribed");
    assert_eq!(payloads(&mut sim, b), ["two"]);
    sim.publish(p, "s/q2", "three", QoS::ExactlyOnce);
    assert_eq!(payloads(&mut sim, a), ["three"]);

    // A shared subscription through the API, then removed.
    assert!(matches!(
        ask(&mut sim, 1, op("$share/g1/s/shared", QoS::AtLeastOnce)),
        AdminReply::Subscribed(Some(1))
    ));
    assert_eq!(
        subs_all(&mut sim, &q(|q| q.share_group = Some("g1".into()))),
        vec![
            s("a", "$share/g1/s/shared", Q1),
            s("b", "$share/g1/s/shared", Q1)
        ]
    );
    let unshare = AdminOp::Unsubscribe {
        client_id: "a".into(),
        filter: "$share/g1/s/shared".into(),
    };
    assert!(matches!(ask(&mut sim, 1, unshare), AdminReply::Done(true)));
    for i in 0..4 {
        sim.publish(p, "s/shared", format!("sh{i}"), QoS::AtLeastOnce);
    }
    assert!(payloads(&mut sim, a).is_empty(), "left the group");
    assert_eq!(payloads(&mut sim, b).len(), 4);

    // Not connected: nobody subscribes it.
    sim.disconnect(a);
    for r in ask_all(&mut sim, &op("s/x", QoS::AtMostOnce)) {
        assert!(matches!(r, AdminReply::Subscribed(None)), "{r:?}");
    }
}

#[test]
fn publish_as_the_broker_and_the_route_table() {
    let mut sim = Sim::new(2, settings());
    let (s1, _) = sim.connect(1, ProtocolVersion::V5, "s1", true, 0);
    let (s0, _) = sim.connect(0, ProtocolVersion::V3_1_1, "s0", true, 0);
    sim.subscribe(s1, "p/#", QoS::AtLeastOnce);
    sim.subscribe(s0, "p/#", QoS::AtMostOnce);
    sim.subscribe(s0, "only/0", QoS::AtMostOnce);
    sim.subscribe_with(s1, &[("$share/g/p/x", opts(QoS::AtLeastOnce))], None);

    // Topics a shard owns, to publish from each shard.
    let topic_on = |shard| {
        (0..)
            .map(|i| format!("p/t{i}"))
            .find(|t| shard::core::owner_of(t, 2) == shard)
            .unwrap()
    };
    for shard in 0..2u16 {
        let topic = topic_on(shard);
        let (matched, id) = api_publish(
            &mut sim,
            admin_publish(&topic, &format!("from {shard}"), QoS::ExactlyOnce, false),
        );
        assert!(matched, "{topic}");
        assert_ne!(id, 0);
        assert_eq!(
            id >> 48,
            u64::from(shard),
            "the id names the publishing shard: {id:x}"
        );
        let got1 = sim.received(s1);
        assert_eq!(got1.len(), 1, "{got1:?}");
        assert_eq!(
            got1[0].qos,
            QoS::AtLeastOnce,
            "the subscription's QoS caps it"
        );
        assert_eq!(&got1[0].payload[..], format!("from {shard}").as_bytes());
        let got0 = sim.received(s0);
        assert_eq!(got0.len(), 1);
        assert_eq!(got0[0].qos, QoS::AtMostOnce);
    }

    // MQTT 5 properties pass through.
    let mut props = net::mqtt::PublishProperties::default();
    props.content_type = Some("text/plain".to_owned().into());
    props.user_properties = vec![("k".to_owned().into(), "v".to_owned().into())];
    let op = AdminOp::Publish(Box::new(AdminPublish {
        topic: "p/props".into(),
        payload: Bytes::from_static(b"with props"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: props,
    }));
    assert!(api_publish(&mut sim, op).0);
    let got = sim.received(s1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert_eq!(got[0].properties.user_properties.len(), 1);
    sim.received(s0);

    // No subscriber: not matched, counted as dropped.
    let dropped = sim.stat(|s| s.dropped_no_subscribers);
    let (matched, _) = api_publish(
        &mut sim,
        admin_publish("nobody/here", "x", QoS::AtLeastOnce, false),
    );
    assert!(!matched);
    assert_eq!(sim.stat(|s| s.dropped_no_subscribers), dropped + 1);
    assert!(sim.received(s0).is_empty() && sim.received(s1).is_empty());
    // The shared subscription alone matches.
    let (matched, _) = api_publish(
        &mut sim,
        admin_publish("p/x", "shared", QoS::AtLeastOnce, false),
    );
    assert!(matched);
    assert_eq!(
        payloads(&mut sim, s1),
        ["shared", "shared"],
        "p/# and $share/g/p/x"
    );

    // The route table: every shard lists its own filters, shared ones excluded.
    let topics = |sim: &mut Sim, shard, topic: Option<&str>, keep| match ask(
        sim,
        shard,
        AdminOp::Topics {
            topic: topic.map(str::to_owned),
            keep,
        },
    ) {
        AdminReply::Topics { total, page } => (total, page),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        topics(&mut sim, 0, None, 10),
        (2, vec!["only/0".to_owned(), "p/#".to_owned()])
    );
    assert_eq!(topics(&mut sim, 0, None, 1), (2, vec!["only/0".to_owned()]));
    assert_eq!(topics(&mut sim, 1, None, 10), (1, vec!["p/#".to_owned()]));
    assert_eq!(
        topics(&mut sim, 1, Some("p/#"), 10),
        (1, vec!["p/#".to_owned()])
    );
    assert_eq!(topics(&mut sim, 1, Some("only/0"), 10), (0, vec![]));
}

#[test]
fn retained_messages_are_listed_and_deleted() {
    let mut sim = Sim::new(2, settings());
    sim.start_clocks(EPOCH_MS);
    let (p, _) = sim.connect(0, ProtocolVersion::V5, "p", true, 0);
    let mut topics: Vec<String> = (0..10).map(|i| format!("r/{i}")).collect();
    for (i, t) in topics.iter().enumerate() {
        if i % 2 == 0 {
            let (matched, _) = api_publish(
                &mut sim,
                admin_publish(t, &format!("v{i}"), QoS::AtLeastOnce, true),
            );
            assert!(!matched, "nobody subscribes yet");
        } else {
            let mut m = Publish::new(t.clone(), format!("v{i}"));
            m.qos = QoS::AtLeastOnce;
            m.retain = true;
            sim.publish_with(p, m);
        }
    }
    // One that expires.
    let mut m = Publish::new("r/expiring".to_owned(), "soon gone");
    m.retain = true;
    m.properties.message_expiry_interval = Some(1);
    sim.publish_with(p, m);
    topics.sort();

    // Every shard answers for the topics it owns, in order, `keep` at most; `$SYS` is left out
    // (the clocks started the `$SYS` topics, some of them retained).
    let mut all = Vec::new();
    let mut count = 0;
    for shard in 0..2 {
        let owned: Vec<&String> = topics
            .iter()
            .filter(|t| shard::core::owner_of(t, 2) == shard)
            .collect();
        let (total, page) = retained_of(&mut sim, shard, None, 3);
        let expiring = usize::from(shard::core::owner_of("r/expiring", 2) == shard);
        assert_eq!(total, owned.len() + expiring, "shard {shard}");
        assert_eq!(page.len(), total.min(3));
        let names: Vec<&str> = page.iter().map(|r| r.topic.as_str()).collect();
        assert!(names.is_sorted(), "{names:?}");
        assert!(names.iter().all(|t| t.starts_with("r/")), "{names:?}");
        count += total;
        let (_, everything) = retained_of(&mut sim, shard, None, 100);
        all.extend(everything);
    }
    assert_eq!(count, 11);
    let one = all.iter().find(|r| r.topic == "r/4").unwrap();
    assert_eq!((&one.payload[..], one.qos), (&b"v4"[..], 1));
    assert_ne!(one.id, 0);

    // One topic, asked of its owner (the other one has nothing).
    let owner = shard::core::owner_of("r/3", 2);
    let (total, page) = retained_of(&mut sim, owner, Some("r/3"), 1);
    assert_eq!(total, 1);
    assert_eq!(&page[0].payload[..], b"v3");
    assert_eq!(retained_of(&mut sim, 1 - owner, Some("r/3"), 1).0, 0);

    // Expired: no longer listed.
    sim.advance(Duration::from_secs(2));
    let listed: usize = (0..2).map(|s| retained_of(&mut sim, s, None, 100).0).sum();
    assert_eq!(listed, 10);

    // Delete: on the owner only, once; a new subscriber then gets nothing for it.
    let del = |t: &str| AdminOp::DeleteRetained {
        topic: t.to_owned(),
    };
    assert!(matches!(
        ask(&mut sim, 1 - owner, del("r/3")),
        AdminReply::Done(false)
    ));
    assert!(matches!(
        ask(&mut sim, owner, del("r/3")),
        AdminReply::Done(true)
    ));
    assert!(matches!(
        ask(&mut sim, owner, del("r/3")),
        AdminReply::Done(false)
    ));
    assert_eq!(retained_of(&mut sim, owner, Some("r/3"), 1).0, 0);
    let (s, _) = sim.connect(1 - owner, ProtocolVersion::V5, "s", true, 0);
    sim.subscribe(s, "r/+", QoS::AtLeastOnce);
    let mut got: Vec<String> = sim
        .received(s)
        .into_iter()
        .map(|p| p.topic.to_string())
        .collect();
    got.sort();
    let mut want = topics.clone();
    want.retain(|t| t != "r/3");
    assert_eq!(got, want);
    let listed: usize = (0..2).map(|s| retained_of(&mut sim, s, None, 100).0).sum();
    assert_eq!(listed, 9);
}

/// A listing in steps of a few session slots sees every session once, with the counts adding
/// up, and each step's answer names where the next one starts.
#[test]
fn listings_walk_the_sessions_in_bounded_steps() {
    let mut sim = Sim::new(1, settings());
    sim.start_clocks(EPOCH_MS);
    let mut conns = Vec::new();
    for i in 0..23 {
        let id = format!("w-{i:02}");
        let (c, ack) = sim.connect_with(
            0,
            connect_as(ProtocolVersion::V5, &id, None, true, Some(60)),
        );
        assert!(ack.reason_code.is_success(), "{id}: {ack:?}");
        sim.subscribe(c, &format!("walk/{i}"), QoS::AtLeastOnce);
        conns.push(c);
    }
    // Some free slots in the middle (sessions 3, 8, 13, 18 end).
    let gone: Vec<ClientId> = conns.iter().skip(3).step_by(5).copied().collect();
    for c in &gone {
        sim.disconnect(*c);
    }
    sim.advance(Duration::from_secs(61));
    let everyone = matching(&mut sim, &ClientQuery::default());
    assert_eq!(gone.len(), 4);
    assert_eq!(everyone.len(), 23 - gone.len());
    for step in [1, 4, 7, 64] {
        let (mut ids, mut subs, mut total, mut sub_total, mut steps) = (vec![], 0, 0, 0, 0);
        let mut from = Some(0);
        while let Some(start) = from {
            let scan = Scan {
                from: start,
                slots: step,
            };
            let query = ClientQuery::default();
            let AdminReply::Clients {
                total: t,
                page,
                next,
            } = ask(
                &mut sim,
                0,
                AdminOp::Clients {
                    query,
                    keep: 100,
                    scan,
                },
            )
            else {
                panic!("not a Clients answer");
            };
            assert!(page.len() <= step as usize);
            total += t;
            ids.extend(page.into_iter().map(|c| c.client_id));
            let AdminReply::Subscriptions {
                total: t, next: n, ..
            } = ask(
                &mut sim,
                0,
                AdminOp::Subscriptions {
                    query: SubQuery::default(),
                    keep: 100,
                    scan,
                },
            )
            else {
                panic!("not a Subscriptions answer");
            };
            assert_eq!(n, next);
            sub_total += t;
            subs += 1;
            steps += 1;
            if let Some(n) = next {
                assert_eq!(n, start + step);
            }
            from = next;
        }
        ids.sort();
        assert_eq!(ids, everyone, "step {step}");
        assert_eq!(total, everyone.len(), "step {step}");
        assert_eq!(sub_total, everyone.len(), "step {step}");
        assert!(steps >= 23usize.div_ceil(step as usize).min(23), "{steps}");
        assert_eq!(subs, steps);
    }
}

/// A subscription the broker refuses is answered with SUBACK's reason code.
#[test]
fn a_refused_subscription_answers_its_reason_code() {
    let mut st = settings();
    st.shared_subscription = false;
    st.wildcard_subscription = false;
    let mut sim = Sim::new(1, st);
    let (_a, ack) = sim.connect_with(0, connect_as(ProtocolVersion::V5, "a", None, true, None));
    assert!(ack.reason_code.is_success());
    let op = |filter: &str| AdminOp::Subscribe {
        client_id: "a".into(),
        filter: filter.into(),
        options: opts(QoS::AtLeastOnce),
    };
    let code = |r: AdminReply| match r {
        AdminReply::Subscribed(c) => c,
        other => panic!("not a Subscribed answer: {other:?}"),
    };
    assert_eq!(code(ask(&mut sim, 0, op("$share/g/t"))), Some(0x9E));
    assert_eq!(code(ask(&mut sim, 0, op("t/#"))), Some(0xA2));
    assert_eq!(code(ask(&mut sim, 0, op("t/a"))), Some(1));
    assert_eq!(code(ask(&mut sim, 0, op("t/#/x"))), Some(0x8F));
}
