//! A deterministic, sans-IO harness for [`shard::Shard`], after `quinn_proto`'s `Pair::drive`:
//! N shards, any number of simulated clients, a virtual clock, and no sockets, threads or
//! sleeps.
//!
//! - The clock ([`Sim::now`]) only moves in [`Sim::advance`], which fires every due shard
//!   timer in time order and drives the system to idle after each.
//! - [`Sim::drive`] runs rounds until nothing changes. A round feeds the bytes each client
//!   sent to its shard (`handle_read`, respecting [`Read::Paused`] / [`Event::Resume`] and
//!   [`Read::More`], and skipping shards that are backpressured), drains every shard's events
//!   (`Write` into the client's decoder and inbox, `Close` closes the client and calls
//!   `handle_closed`, `Resume` feeds again) and outgoing messages, and delivers the rings.
//! - The rings are per-(source, destination) FIFO queues with a capacity, like the real SPSC
//!   rings: a message that does not fit is given back with `requeue_outgoing`, and the shard
//!   gets no socket input while it is backpressured. In [`Sim::interleaved`] mode the rings are
//!   delivered in a pseudo-random order and with pseudo-random delays across pairs (per-pair
//!   order is always kept), from a seed, so races between shards show up reproducibly.
//! - Clients ack QoS 1/2 flows on their own (PUBACK; PUBREC then PUBCOMP on PUBREL; PUBREL on
//!   PUBREC for their own QoS 2) unless [`Sim::set_auto_ack`] or [`Sim::connect_manual`] turns
//!   it off.
//! - Helpers that complete an exchange ([`Sim::connect`], [`Sim::subscribe`],
//!   [`Sim::publish`], [`Sim::close`], ...) drive to idle; [`Sim::send`],
//!   [`Sim::send_publish`], [`Sim::send_bytes`] and [`Sim::close_quiet`] do not, so several
//!   inputs can race within one drive.
//!
//! Everything a shard sends a client must decode with the client-side codec; anything else
//! panics, since it is a broker bug.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use net::mqtt::{
    Ack, ConnAck, Connect, Decoder, Disconnect, Packet, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties,
};
use shard::slab::Key;
use shard::{Event, Read, Settings, Shard, ShardId, ShardMsg, Stats};

/// Rounds [`Sim::drive`] may take before the system is declared live-locked.
const MAX_ROUNDS: usize = 1_000_000;
/// Timer wake-ups one [`Sim::advance`] may take before it is declared a timer storm.
const MAX_WAKEUPS: u64 = 200_000;
/// Default ring capacity (messages per ordered pair of shards).
pub const RING_CAPACITY: usize = 1024;

/// A simulated client connection (an index into the harness's client table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub usize);

/// One simulated client: its socket's two directions and its MQTT client state.
#[derive(Debug)]
pub struct Client {
    /// The shard that accepted the connection.
    pub shard: ShardId,
    /// The connection key on that shard.
    pub conn: Key,
    /// Protocol version of the CONNECT it sent.
    pub version: Option<ProtocolVersion>,
    /// The client id it connected with (or was assigned in CONNACK).
    pub client_id: Option<String>,
    /// Bytes the client sent that the shard has not consumed yet.
    input: BytesMut,
    /// Bytes the shard wrote that the client has not decoded yet.
    rx: BytesMut,
    decoder: Option<Decoder>,
    /// Decoded packets received, oldest first.
    pub inbox: VecDeque<Packet>,
    /// The shard answered `Read::Paused`: not fed until `Event::Resume`.
    pub paused: bool,
    /// The shard answered `Read::Closing`: never fed again.
    pub read_closed: bool,
    /// The socket is closed (by the shard, or by [`Sim::close`]).
    pub closed: bool,
    /// A successful CONNACK arrived.
    pub connected: bool,
    /// Ack QoS 1/2 flows automatically.
    pub auto_ack: bool,
    /// A slow reader: `Event::Write` leaves the bytes in the shard until un-stalled.
    pub stalled: bool,
    next_pid: u16,
    /// Total bytes the shard wrote to this client.
    pub bytes_received: usize,
}

/// Splitmix64: a tiny deterministic generator for the interleaved mode.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `true` with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The simulated broker: shards, clients, rings and the virtual clock.
#[derive(Debug)]
pub struct Sim {
    /// The virtual clock.
    pub now: Instant,
    pub shards: Vec<Shard>,
    clients: Vec<Client>,
    by_conn: HashMap<(ShardId, Key), ClientId>,
    /// Clients with input to feed (or fed `Read::More` last round).
    ready: BTreeSet<ClientId>,
    rings: BTreeMap<(ShardId, ShardId), VecDeque<ShardMsg>>,
    /// Messages per ring before a push is refused.
    pub ring_capacity: usize,
    rng: Option<Rng>,
    /// `handle_timeout` calls made so far (per shard, summed).
    pub timer_wakeups: u64,
    /// Ring messages delivered so far.
    pub ring_messages: u64,
    /// Times a ring was full and a message was requeued.
    pub ring_full: u64,
    next_port: u32,
    /// Per shard, the files its log writes to ([`Sim::attach_logs`]).
    logs: Vec<storage::exec::Files>,
    /// Whether [`Sim::step`] runs the logs' jobs (else [`Sim::run_storage`] does).
    pub auto_storage: bool,
}

impl Sim {
    /// `shards` shards with the same settings, rings delivered in order.
    pub fn new(shards: u16, settings: Settings) -> Self {
        assert!(shards >= 1);
        Self {
            now: Instant::now(),
            shards: (0..shards)
                .map(|i| Shard::new(i, shards, settings.clone()))
                .collect(),
            clients: Vec::new(),
            by_conn: HashMap::new(),
            ready: BTreeSet::new(),
            rings: BTreeMap::new(),
            ring_capacity: RING_CAPACITY,
            rng: None,
            timer_wakeups: 0,
            ring_messages: 0,
            ring_full: 0,
            next_port: 0,
            logs: Vec::new(),
            auto_storage: true,
        }
    }

    /// Gives every shard a log in data directory `dir` (recovering what is there), with
    /// `policy`.
    pub fn attach_logs(&mut self, dir: &std::path::Path, policy: storage::log::Policy) {
        let o = storage::log::LogOptions {
            policy,
            ..storage::log::LogOptions::default()
        };
        self.attach_logs_from(dir, o, 1);
    }

    /// [`Sim::attach_logs`] with every log option.
    pub fn attach_logs_with(&mut self, dir: &std::path::Path, o: storage::log::LogOptions) {
        self.attach_logs_from(dir, o, 1);
    }

    fn attach_logs_from(&mut self, dir: &std::path::Path, o: storage::log::LogOptions, first: u64) {
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let d = storage::dir::shard_dir(dir, i as u32);
            let rec = storage::recover::recover(&d, true, |_, _| {}).unwrap();
            let log = storage::log::Log::new(i as u32, o, &rec.existing, self.now);
            shard.attach_log(log, first);
            self.logs.push(storage::exec::Files::new(&d).unwrap());
        }
        self.drive();
    }

    /// A broker started on the data directory `dir` that an earlier one left (dropped as by
    /// `kill -9`: what its logs wrote survives): every shard log read back and merged, each
    /// session restored on the shard owning its client id, a snapshot written.
    pub fn restart(
        dir: &std::path::Path,
        shards: u16,
        settings: Settings,
        policy: storage::log::Policy,
    ) -> Self {
        let mut all = storage::image::Image::default();
        for (i, d) in storage::dir::shard_dirs(dir).unwrap() {
            let s = storage::dir::load_shard(i, &d, true).unwrap();
            assert!(s.report.is_clean(), "{:?}", s.report.problems);
            all.merge(s.image);
        }
        let first = storage::dir::max_id(&all) + 1;
        let mut sim = Self::new(shards, settings);
        let o = storage::log::LogOptions {
            policy,
            ..storage::log::LogOptions::default()
        };
        sim.attach_logs_from(dir, o, first);
        let mut per_shard: Vec<Vec<storage::image::SessionImage>> = vec![Vec::new(); shards.into()];
        let sessions = std::mem::take(&mut all.sessions);
        for (_, s) in sessions {
            per_shard[usize::from(sim.owner_of(&s.header.client_id))].push(s);
        }
        let mut retained: Vec<Vec<(String, storage::schema::MessageV1)>> =
            vec![Vec::new(); shards.into()];
        for (topic, m) in std::mem::take(&mut all.retained) {
            retained[usize::from(shard::core::owner_of(&topic, shards))].push((topic, m));
        }
        let mut delayed: Vec<Vec<storage::schema::DelayedV1>> = vec![Vec::new(); shards.into()];
        for (id, d) in std::mem::take(&mut all.delayed) {
            delayed[((id >> 48) % u64::from(shards)) as usize].push(d);
        }
        let now = sim.now;
        for (i, ((sessions, retained), delayed)) in
            per_shard.into_iter().zip(retained).zip(delayed).enumerate()
        {
            sim.shards[i].restore(now, 0, sessions, &all.messages, first);
            sim.shards[i].restore_retained(now, 0, retained);
            sim.shards[i].restore_delayed(now, 0, delayed);
            sim.shards[i].snapshot_all(now);
        }
        sim.drive();
        sim
    }

    /// Runs shard `shard`'s pending log jobs, then drives; returns whether any ran.
    pub fn run_storage_of(&mut self, shard: ShardId) -> bool {
        let i = usize::from(shard);
        let mut ran = false;
        if let Some(files) = self.logs.get_mut(i) {
            let shard = &mut self.shards[i];
            while let Some(job) = shard.poll_storage_job(self.now) {
                let (res, data) = files.run(job);
                assert!(res.is_ok(), "storage job: {res:?}");
                shard.storage_complete(self.now, res, data);
                ran = true;
            }
        }
        ran
    }

    /// Runs every shard's pending log jobs; returns whether any ran.
    pub fn run_storage(&mut self) -> bool {
        let mut ran = false;
        for (i, files) in self.logs.iter_mut().enumerate() {
            let shard = &mut self.shards[i];
            while let Some(job) = shard.poll_storage_job(self.now) {
                let (res, data) = files.run(job);
                assert!(res.is_ok(), "storage job: {res:?}");
                shard.storage_complete(self.now, res, data);
                ran = true;
            }
        }
        ran
    }

    /// Like [`Sim::new`], but rings are delivered with pseudo-random delays and interleaving
    /// across pairs, and clients are fed in a pseudo-random order, from `seed`.
    pub fn interleaved(shards: u16, settings: Settings, seed: u64) -> Self {
        let mut sim = Self::new(shards, settings);
        sim.rng = Some(Rng::new(seed));
        sim
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u16 {
        self.shards.len() as u16
    }

    /// The shard owning the registry entry of `client_id`: the same hash as `core.rs`
    /// (`DefaultHasher::new()` of the id, modulo the shard count).
    pub fn owner_of(&self, client_id: &str) -> ShardId {
        let mut h = DefaultHasher::new();
        client_id.hash(&mut h);
        (h.finish() % u64::from(self.shard_count())) as ShardId
    }

    /// A client id with prefix `prefix` whose registry owner is shard `owner`.
    pub fn id_owned_by(&self, prefix: &str, owner: ShardId) -> String {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|id| self.owner_of(id) == owner)
            .expect("some id hashes to every shard")
    }

    /// The sum of one counter over every shard.
    pub fn stat(&self, f: impl Fn(&Stats) -> u64) -> u64 {
        self.shards.iter().map(|s| f(s.stats())).sum()
    }

    /// A shard's counters.
    pub fn stats(&self, shard: ShardId) -> &Stats {
        self.shards[usize::from(shard)].stats()
    }

    pub fn client(&self, id: ClientId) -> &Client {
        &self.clients[id.0]
    }

    pub fn shard_of(&self, id: ClientId) -> ShardId {
        self.clients[id.0].shard
    }

    pub fn is_closed(&self, id: ClientId) -> bool {
        self.clients[id.0].closed
    }

    pub fn set_auto_ack(&mut self, id: ClientId, on: bool) {
        self.clients[id.0].auto_ack = on;
    }

    /// Models a client that stops reading its socket (`true`) or reads again (`false`, which
    /// takes what the shard buffered meanwhile). Drives nothing.
    pub fn stall(&mut self, id: ClientId, on: bool) {
        self.clients[id.0].stalled = on;
        if !on {
            let c = &self.clients[id.0];
            let (shard, conn) = (c.shard, c.conn);
            if !c.closed {
                self.deliver_output(shard, conn);
            }
        }
    }

    /// Live connections (CONNACK received, socket open) that connected with `client_id`.
    pub fn live_connections(&self, client_id: &str) -> Vec<ClientId> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.connected && !c.closed && c.client_id.as_deref() == Some(client_id))
            .map(|(i, _)| ClientId(i))
            .collect()
    }

    /// Messages waiting in the rings.
    pub fn in_flight_ring_messages(&self) -> usize {
        self.rings.values().map(VecDeque::len).sum()
    }

    // ---- connections --------------------------------------------------------------------------

    /// Accepts a simulated connection on `shard`. Nothing is sent.
    pub fn connect_raw(&mut self, shard: ShardId) -> ClientId {
        self.next_port += 1;
        let port = self.next_port;
        let peer = SocketAddr::from((
            [10, (port >> 16) as u8, (port >> 8) as u8, port as u8],
            (1024 + port % 60000) as u16,
        ));
        let conn = self.shards[usize::from(shard)].handle_accept(self.now, peer);
        let id = ClientId(self.clients.len());
        self.clients.push(Client {
            shard,
            conn,
            version: None,
            client_id: None,
            input: BytesMut::new(),
            rx: BytesMut::new(),
            decoder: None,
            inbox: VecDeque::new(),
            paused: false,
            read_closed: false,
            closed: false,
            connected: false,
            auto_ack: true,
            stalled: false,
            next_pid: 0,
            bytes_received: 0,
        });
        self.by_conn.insert((shard, conn), id);
        self.pump(shard);
        id
    }

    /// Connects with a default CONNECT and asserts a successful CONNACK came back.
    pub fn connect(
        &mut self,
        shard: ShardId,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
        keep_alive: u16,
    ) -> (ClientId, ConnAck) {
        let mut c = Connect::new(version, client_id.to_string());
        c.clean_start = clean_start;
        c.keep_alive = keep_alive;
        let (id, ack) = self.connect_with(shard, c);
        assert!(
            ack.reason_code.is_success(),
            "CONNECT of {client_id:?} on shard {shard} refused: {ack:?}"
        );
        (id, ack)
    }

    /// Sends `connect` on a new connection, drives, and returns the CONNACK (which must come).
    pub fn connect_with(&mut self, shard: ShardId, connect: Connect) -> (ClientId, ConnAck) {
        self.connect_acking(shard, connect, true)
    }

    /// [`Sim::connect_with`] for a client that acks nothing by itself, from the first packet
    /// on (so what a resumed session redelivers stays unacknowledged).
    pub fn connect_manual(&mut self, shard: ShardId, connect: Connect) -> (ClientId, ConnAck) {
        self.connect_acking(shard, connect, false)
    }

    fn connect_acking(
        &mut self,
        shard: ShardId,
        connect: Connect,
        auto_ack: bool,
    ) -> (ClientId, ConnAck) {
        let id = self.connect_raw(shard);
        self.clients[id.0].auto_ack = auto_ack;
        self.send(id, &Packet::Connect(Box::new(connect)));
        self.drive();
        let ack = self
            .take_connack(id)
            .unwrap_or_else(|| panic!("no CONNACK for client {id:?}: {:?}", self.clients[id.0]));
        (id, ack)
    }

    /// Removes and returns the CONNACK from a client's inbox, if one arrived.
    pub fn take_connack(&mut self, id: ClientId) -> Option<ConnAck> {
        let inbox = &mut self.clients[id.0].inbox;
        let pos = inbox.iter().position(|p| matches!(p, Packet::ConnAck(_)))?;
        match inbox.remove(pos) {
            Some(Packet::ConnAck(a)) => Some(a),
            _ => None,
        }
    }

    /// The socket closes without DISCONNECT (client side), then the system is driven.
    pub fn close(&mut self, id: ClientId) {
        self.close_quiet(id);
        self.drive();
    }

    /// The socket closes without DISCONNECT; nothing is driven.
    pub fn close_quiet(&mut self, id: ClientId) {
        let c = &mut self.clients[id.0];
        if c.closed {
            return;
        }
        c.closed = true;
        let (shard, conn) = (c.shard, c.conn);
        self.by_conn.remove(&(shard, conn));
        self.shards[usize::from(shard)].handle_closed(self.now, conn);
        self.pump(shard);
    }

    /// Sends DISCONNECT (normal), drives, and closes the socket as a client does.
    pub fn disconnect(&mut self, id: ClientId) {
        self.send(id, &Packet::Disconnect(Disconnect::default()));
        self.drive();
        self.close(id);
    }

    // ---- sending ------------------------------------------------------------------------------

    /// Encodes `packet` with the client's version and appends it to its socket input. A CONNECT
    /// sets the client's version and creates its decoder.
    pub fn send(&mut self, id: ClientId, packet: &Packet) {
        let c = &mut self.clients[id.0];
        if let Packet::Connect(connect) = packet {
            c.version = Some(connect.protocol);
            if !connect.client_id.is_empty() {
                c.client_id = Some(connect.client_id.to_string());
            }
            if c.decoder.is_none() {
                c.decoder = Some(Decoder::client(connect.protocol, u32::MAX));
            }
        }
        let v = c.version.unwrap_or(ProtocolVersion::V5);
        packet
            .encode(v, &mut c.input)
            .unwrap_or_else(|e| panic!("test packet does not encode: {e:?}: {packet:?}"));
        self.ready.insert(id);
    }

    /// Appends raw bytes to a client's socket input.
    pub fn send_bytes(&mut self, id: ClientId, bytes: &[u8]) {
        self.clients[id.0].input.extend_from_slice(bytes);
        self.ready.insert(id);
    }

    /// Sets the client-side decoder's version, for a connection whose CONNECT was raw bytes.
    pub fn expect_version(&mut self, id: ClientId, version: ProtocolVersion) {
        let c = &mut self.clients[id.0];
        c.version = Some(version);
        c.decoder = Some(Decoder::client(version, u32::MAX));
        if Self::decode_rx(c, id) > 0 {
            self.ready.insert(id);
        }
    }

    /// The next packet identifier of a client (1..=65535, wrapping).
    pub fn next_packet_id(&mut self, id: ClientId) -> u16 {
        let c = &mut self.clients[id.0];
        c.next_pid = c.next_pid.checked_add(1).unwrap_or(1);
        c.next_pid
    }

    /// SUBSCRIBE to one filter with QoS `qos`; drives and returns the SUBACK.
    pub fn subscribe(&mut self, id: ClientId, filter: &str, qos: QoS) -> SubAck {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(id, &[(filter, options)], None)
    }

    /// SUBSCRIBE with options and an optional Subscription Identifier; drives and returns the
    /// SUBACK.
    pub fn subscribe_with(
        &mut self,
        id: ClientId,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> SubAck {
        let packet_id = self.next_packet_id(id);
        let mut properties = SubscribeProperties::default();
        properties.subscription_identifier = sub_id;
        let sub = Subscribe {
            packet_id,
            properties,
            filters: filters
                .iter()
                .map(|(f, options)| Subscription {
                    filter: f.to_string().into(),
                    options: *options,
                })
                .collect(),
        };
        self.send(id, &Packet::Subscribe(sub));
        self.drive();
        let inbox = &mut self.clients[id.0].inbox;
        let pos = inbox
            .iter()
            .position(|p| matches!(p, Packet::SubAck(a) if a.packet_id == packet_id))
            .unwrap_or_else(|| panic!("no SUBACK {packet_id} for {id:?}: {inbox:?}"));
        match inbox.remove(pos) {
            Some(Packet::SubAck(a)) => a,
            other => panic!("not a SUBACK: {other:?}"),
        }
    }

    /// UNSUBSCRIBE from one filter; drives and returns the UNSUBACK.
    pub fn unsubscribe(&mut self, id: ClientId, filter: &str) -> UnsubAck {
        let packet_id = self.next_packet_id(id);
        let unsub = Unsubscribe {
            packet_id,
            properties: UnsubscribeProperties::default(),
            filters: vec![filter.to_string().into()],
        };
        self.send(id, &Packet::Unsubscribe(unsub));
        self.drive();
        let inbox = &mut self.clients[id.0].inbox;
        let pos = inbox
            .iter()
            .position(|p| matches!(p, Packet::UnsubAck(a) if a.packet_id == packet_id))
            .unwrap_or_else(|| panic!("no UNSUBACK {packet_id} for {id:?}: {inbox:?}"));
        match inbox.remove(pos) {
            Some(Packet::UnsubAck(a)) => a,
            other => panic!("not an UNSUBACK: {other:?}"),
        }
    }

    /// Sends a PUBLISH with an automatic packet id (QoS 1/2); does not drive. Returns the
    /// packet id (0 for QoS 0).
    pub fn send_publish(
        &mut self,
        id: ClientId,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> u16 {
        let mut p = Publish::new(topic.to_string(), payload.into());
        p.qos = qos;
        self.send_publish_with(id, p)
    }

    /// Sends `p`, giving it a packet id if it needs one and has none; does not drive.
    pub fn send_publish_with(&mut self, id: ClientId, mut p: Publish) -> u16 {
        if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
            p.packet_id = self.next_packet_id(id);
        }
        let pid = p.packet_id;
        self.send(id, &Packet::Publish(p));
        pid
    }

    /// PUBLISH, drive, and return the PUBACK (QoS 1) or PUBREC (QoS 2) for it, removing the
    /// acks of this packet id (PUBACK, PUBREC, PUBCOMP) from the publisher's inbox.
    pub fn publish(
        &mut self,
        id: ClientId,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Option<Ack> {
        let mut p = Publish::new(topic.to_string(), payload.into());
        p.qos = qos;
        self.publish_with(id, p)
    }

    /// [`Sim::publish`] with a prepared PUBLISH.
    pub fn publish_with(&mut self, id: ClientId, p: Publish) -> Option<Ack> {
        let qos = p.qos;
        let pid = self.send_publish_with(id, p);
        self.drive();
        if qos == QoS::AtMostOnce {
            return None;
        }
        let mut ack = None;
        self.clients[id.0].inbox.retain(|p| match p {
            Packet::PubAck(a) | Packet::PubRec(a) if a.packet_id == pid => {
                ack.get_or_insert_with(|| a.clone());
                false
            }
            Packet::PubComp(a) if a.packet_id == pid => false,
            _ => true,
        });
        ack
    }

    // ---- receiving ----------------------------------------------------------------------------

    /// Drains the PUBLISH packets a client received, oldest first.
    pub fn received(&mut self, id: ClientId) -> Vec<Publish> {
        let inbox = &mut self.clients[id.0].inbox;
        let mut out = Vec::new();
        inbox.retain(|p| match p {
            Packet::Publish(p) => {
                out.push(p.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// Drains every packet a client received, oldest first.
    pub fn packets(&mut self, id: ClientId) -> Vec<Packet> {
        self.clients[id.0].inbox.drain(..).collect()
    }

    /// The packets a client received, without draining them.
    pub fn peek(&self, id: ClientId) -> &VecDeque<Packet> {
        &self.clients[id.0].inbox
    }

    // ---- driving ------------------------------------------------------------------------------

    /// Runs rounds until nothing changes.
    pub fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !self.step() {
                return;
            }
        }
        panic!("drive: not idle after {MAX_ROUNDS} rounds (live-lock?)");
    }

    /// One round: pump every shard, feed the ready clients, deliver the rings. Returns whether
    /// anything happened.
    pub fn step(&mut self) -> bool {
        let mut progress = false;
        for s in 0..self.shard_count() {
            progress |= self.pump(s);
        }
        let mut ready: Vec<ClientId> = std::mem::take(&mut self.ready).into_iter().collect();
        if let Some(rng) = &mut self.rng {
            rng.shuffle(&mut ready);
        }
        for id in ready {
            let c = &self.clients[id.0];
            if c.closed || c.paused || c.read_closed {
                // Fed again on Resume; never again once closed.
                continue;
            }
            if self.shards[usize::from(c.shard)].is_backpressured() {
                self.ready.insert(id);
                continue;
            }
            self.feed(id);
            progress = true;
        }
        progress |= self.deliver_rings();
        if self.auto_storage && self.run_storage() {
            progress = true;
            for s in 0..self.shard_count() {
                self.pump(s);
            }
        }
        progress
    }

    /// Gives every shard the wall clock (`Shard::set_clock`), which starts the `$SYS` timers.
    pub fn start_clocks(&mut self, unix_ms: u64) {
        for shard in &mut self.shards {
            shard.set_clock(self.now, unix_ms);
        }
        self.drive();
    }

    /// The shard itself, for its counters and sizes.
    pub fn shard(&self, shard: ShardId) -> &Shard {
        &self.shards[usize::from(shard)]
    }

    /// Shuts shard `shard` down ([`Shard::shutdown`]) and drives until idle.
    pub fn shutdown_shard(&mut self, shard: ShardId) {
        self.shards[usize::from(shard)].shutdown(self.now);
        self.drive();
    }

    /// Feeds a client's pending input to its shard once (`handle_read`), then pumps the shard.
    pub fn feed(&mut self, id: ClientId) -> Read {
        let c = &mut self.clients[id.0];
        let shard = c.shard;
        let r = self.shards[usize::from(shard)].handle_read(self.now, c.conn, &mut c.input);
        match r {
            // A stalled client's output is over the limit: fed again on a later round.
            Read::NeedMore(_) | Read::WriteBlocked => {}
            Read::More => {
                self.ready.insert(id);
            }
            Read::Paused => c.paused = true,
            // Lane 0, the only one here, refuses nothing.
            Read::Closing | Read::Refused => c.read_closed = true,
        }
        self.pump(shard);
        r
    }

    /// Advances the virtual clock by `d`, firing due timers in time order and driving to idle
    /// after each wake-up.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        self.drive();
        let mut wakeups = 0u64;
        loop {
            let next = self
                .shards
                .iter()
                .filter_map(Shard::poll_timeout)
                .min()
                .filter(|t| *t <= target);
            let Some(at) = next else { break };
            self.now = self.now.max(at);
            for s in 0..self.shard_count() {
                if self.shards[usize::from(s)]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    self.shards[usize::from(s)].handle_timeout(self.now);
                    self.timer_wakeups += 1;
                    wakeups += 1;
                    self.pump(s);
                }
            }
            self.drive();
            assert!(
                wakeups < MAX_WAKEUPS,
                "advance({d:?}): {wakeups} timer wake-ups, a timer storm (now = start + {:?})",
                d - (target - self.now)
            );
        }
        self.now = target;
        self.drive();
    }

    /// Drains a shard's events and outgoing messages. Returns whether there were any.
    fn pump(&mut self, shard: ShardId) -> bool {
        let mut progress = false;
        while let Some(ev) = self.shards[usize::from(shard)].poll_event() {
            progress = true;
            match ev {
                Event::Write(k) => {
                    let stalled = self
                        .by_conn
                        .get(&(shard, k))
                        .is_some_and(|id| self.clients[id.0].stalled);
                    if !stalled {
                        self.deliver_output(shard, k);
                    }
                }
                Event::Close(k) => {
                    self.deliver_output(shard, k);
                    if let Some(id) = self.by_conn.remove(&(shard, k)) {
                        self.clients[id.0].closed = true;
                        self.shards[usize::from(shard)].handle_closed(self.now, k);
                    }
                }
                Event::Resume(k) => {
                    if let Some(&id) = self.by_conn.get(&(shard, k)) {
                        self.clients[id.0].paused = false;
                        self.ready.insert(id);
                    }
                }
            }
        }
        loop {
            let Some((dst, msg)) = self.shards[usize::from(shard)].poll_outgoing() else {
                break;
            };
            assert_ne!(dst, shard, "a shard sent a ring message to itself");
            assert!(dst < self.shard_count(), "ring message to shard {dst}");
            let ring = self.rings.entry((shard, dst)).or_default();
            if ring.len() >= self.ring_capacity {
                self.ring_full += 1;
                self.shards[usize::from(shard)].requeue_outgoing(dst, msg);
                break;
            }
            ring.push_back(msg);
            progress = true;
        }
        progress
    }

    /// Delivers ring messages: all of them in order, or (interleaved) a pseudo-random subset.
    fn deliver_rings(&mut self) -> bool {
        let mut pairs: Vec<(ShardId, ShardId)> = self
            .rings
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if pairs.is_empty() {
            return false;
        }
        let Some(mut rng) = self.rng.take() else {
            for (src, dst) in pairs {
                let n = self.rings[&(src, dst)].len();
                for _ in 0..n {
                    self.deliver_one(src, dst);
                }
            }
            return true;
        };
        rng.shuffle(&mut pairs);
        let mut delivered = false;
        for &(src, dst) in &pairs {
            if rng.one_in(2) {
                continue;
            }
            let n = 1 + rng.below(self.rings[&(src, dst)].len());
            for _ in 0..n {
                delivered |= self.deliver_one(src, dst);
            }
        }
        if !delivered {
            let (src, dst) = pairs[rng.below(pairs.len())];
            self.deliver_one(src, dst);
        }
        self.rng = Some(rng);
        true
    }

    fn deliver_one(&mut self, src: ShardId, dst: ShardId) -> bool {
        let Some(msg) = self
            .rings
            .get_mut(&(src, dst))
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        self.ring_messages += 1;
        self.shards[usize::from(dst)].handle_message(self.now, src, msg);
        self.pump(dst);
        // Room in the ring: the source may have a requeued message waiting.
        self.pump(src);
        true
    }

    /// Moves a connection's output into its client's decoder and inbox.
    fn deliver_output(&mut self, shard: ShardId, conn: Key) {
        let mut chunks = Vec::new();
        self.shards[usize::from(shard)].take_output(conn, &mut chunks);
        let Some(&id) = self.by_conn.get(&(shard, conn)) else {
            return;
        };
        let c = &mut self.clients[id.0];
        for b in &chunks {
            c.bytes_received += b.len();
            c.rx.extend_from_slice(b);
        }
        if Self::decode_rx(c, id) > 0 {
            self.ready.insert(id);
        }
    }

    /// Decodes what a client received; answers QoS flows if `auto_ack`. Returns the number of
    /// packets the client sent in answer.
    fn decode_rx(c: &mut Client, id: ClientId) -> usize {
        let mut answered = 0;
        let Some(decoder) = c.decoder.as_mut() else {
            return answered;
        };
        let v = c.version.unwrap_or(ProtocolVersion::V5);
        loop {
            let packet = match decoder.decode(&mut c.rx) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => panic!(
                    "client {id:?} (shard {}, {v:?}) cannot decode what the broker sent: {e} \
                     ({e:?}); bytes left {:02x?}",
                    c.shard,
                    &c.rx[..c.rx.len().min(64)]
                ),
            };
            let answer = match &packet {
                Packet::ConnAck(a) => {
                    if a.reason_code.is_success() {
                        c.connected = true;
                        if let Some(assigned) = &a.properties.assigned_client_identifier {
                            c.client_id = Some(assigned.to_string());
                        }
                    }
                    None
                }
                Packet::Publish(p) if c.auto_ack => match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(Ack::new(p.packet_id))),
                },
                Packet::PubRec(a) if c.auto_ack && a.reason_code.is_success() => {
                    Some(Packet::PubRel(Ack::new(a.packet_id)))
                }
                Packet::PubRel(a) if c.auto_ack => Some(Packet::PubComp(Ack::new(a.packet_id))),
                _ => None,
            };
            if let Some(answer) = answer
                && !c.closed
            {
                answer
                    .encode(v, &mut c.input)
                    .expect("an ack always encodes");
                answered += 1;
            }
            c.inbox.push_back(packet);
        }
        answered
    }
}

/// `Settings::default()`.
pub fn settings() -> Settings {
    Settings::default()
}

/// A v5 CONNECT.
pub fn connect_v5(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V5, client_id.to_string())
}

/// A v5 CONNECT with Clean Start 0 and a Session Expiry Interval.
pub fn persistent_v5(client_id: &str, expiry_secs: u32) -> Connect {
    let mut c = Connect::new(ProtocolVersion::V5, client_id.to_string());
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry_secs);
    c
}

/// Subscription options with a QoS.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// The shard counts most tests run with.
pub const SHARD_COUNTS: [u16; 3] = [1, 2, 4];

/// The three protocol versions.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];
