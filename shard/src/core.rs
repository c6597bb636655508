//! The sans-IO shard: every connection, session, subscription and route of one core, driven by
//! `handle_*` calls with the time passed in and drained by `poll_*` calls, in the manner of
//! `quinn_proto::Connection`.
//!
//! # Driving a shard
//!
//! - Feed it: [`Shard::handle_accept`] for a new socket, [`Shard::handle_read`] with the bytes
//!   read from it (call again while it answers [`Read::More`]), [`Shard::handle_closed`] when
//!   the socket is gone, [`Shard::handle_message`] for what another shard sent over the rings,
//!   [`Shard::handle_timeout`] when [`Shard::poll_timeout`] is reached.
//! - Drain it after each call: [`Shard::poll_event`] says which connections have bytes to
//!   write ([`Shard::take_output`]) or must be closed; [`Shard::poll_outgoing`] yields messages
//!   for other shards. If a ring is full, give the message back with
//!   [`Shard::requeue_outgoing`] and stop reading sockets while [`Shard::is_backpressured`].
//!
//! Nothing here blocks, sleeps, reads a clock or touches a socket.

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use net::mqtt::{
    Ack, Auth, ConnAck, Connect, Decoder, Delivery, Disconnect, Error, MqttStr, Packet,
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription,
    UnsubAck, Unsubscribe, topic,
};

mod admin;

use crate::auth::{AuthClient, AuthExchange, AuthStep};
use crate::message::{Message, Origin, detach};
use crate::out::OutQueue;
use crate::persist::Persist;
use crate::retained::{Completion, RetainedIndex};
use crate::session::{Inflight, Queued, Session, SessionState, Stage, SubEntry, SubIds, Will};
use crate::settings::{Settings, SharedStrategy};
use crate::slab::{Key, Slab};
use crate::stats::{DriverStats, Latency, Stats};
use crate::trie::TopicTrie;

/// How often expired retained messages are swept out (they are never delivered once expired;
/// this only frees their memory).
const RETAINED_SWEEP: Duration = Duration::from_secs(10);

/// Message ids remembered per session while it moves between shards, at most.
const MAX_MOVE_DEDUP: usize = 65_536;

/// A shard's index, `0..shards`.
pub type ShardId = u16;

/// What shards send each other over the rings. Kept small: the large variants are boxed.
#[derive(Debug)]
pub enum ShardMsg {
    /// A message for the receiving shard's local subscribers.
    Publish(Arc<Message>),
    /// The sending shard gained its first (`add`) or lost its last subscriber on `filter`.
    Route {
        /// Topic filter.
        filter: MqttStr,
        /// Gained (`true`) or lost.
        add: bool,
    },
    /// Client-id registry traffic.
    Registry(Box<RegistryMsg>),
    /// A delivery for one session that moved to the receiving shard (see "Moving a session").
    Forward(Box<Forward>),
    /// Session moves: fences and their completion (see "Moving a session").
    Move(MoveMsg),
    /// Retained messages: stored on the shard that owns the topic.
    Retain(RetainMsg),
    /// Shared subscription membership, replicated on every shard.
    Shared(Box<SharedMsg>),
    /// A shard's counters for the `$SYS` statistics, sent to shard 0 which publishes them.
    Sys(Box<SysSnapshot>),
    /// Exclusive subscriptions: the lock of a filter lives on the shard that owns it.
    Exclusive(Box<ExclusiveMsg>),
    /// Every message the receiving shard sent the sender, up to this count, has its records
    /// durable on the sender (its held acknowledgements may go).
    Durable(u64),
    /// A QUIC datagram that reached the receiving shard's socket for a connection another
    /// shard owns (the client's address changed and the kernel chose another socket): for the
    /// driver, not the session core.
    QuicDatagram(Box<(std::net::SocketAddr, BytesMut)>),
    /// A request from the control plane (the REST API), answered through its callback.
    Admin(Box<crate::admin::AdminRequest>),
}

/// EMQX's exclusive subscriptions (`$exclusive/{filter}`): one subscriber at a time over the
/// whole broker. The lock of a filter is kept by its owner shard, `hash(filter) % shards`.
#[derive(Debug)]
pub enum ExclusiveMsg {
    /// Take the lock for `client_id` (granted again to the client that holds it).
    Lock {
        /// The filter without its `$exclusive/` prefix.
        filter: MqttStr,
        /// The subscribing client.
        client_id: MqttStr,
        /// The pending SUBSCRIBE on the sender, and the filter's position in it.
        request: u64,
        /// See `request`.
        index: usize,
    },
    /// The answer.
    Reply {
        /// See `Lock`.
        request: u64,
        /// See `Lock`.
        index: usize,
        /// Whether the lock was granted.
        granted: bool,
    },
    /// Release the lock if `client_id` holds it.
    Unlock {
        /// The filter without its prefix.
        filter: MqttStr,
        /// The client releasing it.
        client_id: MqttStr,
    },
}

/// A SUBSCRIBE waiting for exclusive-subscription locks before its SUBACK.
#[derive(Debug)]
struct PendingSub {
    conn: Key,
    /// The lane the SUBSCRIBE came on.
    lane: u32,
    sid: Key,
    ack: SubAck,
    /// Whether the client gets the SUBACK (not for auto-subscribe).
    reply: bool,
    /// (position in the SUBACK, full filter, subscription) of each lock asked for.
    locks: Vec<(usize, MqttStr, SubEntry)>,
    waiting: usize,
    announced: bool,
}

/// What one shard contributes to the `$SYS` statistics and to the control plane's metrics.
#[derive(Debug, Clone, Default)]
pub struct SysSnapshot {
    /// Open connections.
    pub connections: u64,
    /// Sessions, online or not.
    pub sessions: u64,
    /// Subscriptions (non-shared) held.
    pub subscriptions: u64,
    /// Retained messages stored.
    pub retained: u64,
    /// Shared subscription group memberships of this shard's sessions (online ones: a session
    /// leaves its groups when its connection ends).
    pub shared_subscriptions: u64,
    /// Distinct topic filters this shard holds a route for (non-shared subscriptions of its
    /// sessions): its part of the route table.
    pub topics: u64,
    /// Counters.
    pub stats: Stats,
    /// Publish-to-deliver latency since start ([`Shard::sys_snapshot`] only; `None` in the
    /// `$SYS` snapshots shards send each other).
    pub delivery_latency: Option<Box<Latency>>,
    /// The driver's own measurements (filled in by the driver).
    pub driver: DriverStats,
}

/// A session joins or leaves a shared subscription group (`$share/{group}/{filter}` or EMQX's
/// `$queue/{filter}`). Every shard keeps every group's members, so the publishing shard picks
/// the member itself and sends the message straight to it.
#[derive(Debug)]
pub enum SharedMsg {
    /// Add (or update) a member.
    Join {
        /// Group name (`$queue` for `$queue/...`).
        group: MqttStr,
        /// The topic filter inside.
        filter: MqttStr,
        /// The member.
        member: Member,
    },
    /// Remove a member.
    Leave {
        /// Group name.
        group: MqttStr,
        /// The topic filter inside.
        filter: MqttStr,
        /// The member's shard, client id and token.
        shard: ShardId,
        /// See `shard`.
        client_id: MqttStr,
        /// See `shard`.
        token: u64,
    },
}

/// A member of a shared subscription group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Shard of its session.
    pub shard: ShardId,
    /// Its client id.
    pub client_id: MqttStr,
    /// Its session's registration token.
    pub token: u64,
    /// Its subscription options.
    pub entry: SubEntry,
}

/// A shared subscription group as every shard sees it.
#[derive(Debug)]
struct Group {
    members: Vec<Member>,
    /// Round-robin position.
    next: usize,
    /// The member a sticky group sticks to (index into `members`).
    sticky: Option<usize>,
}

/// Retained-message traffic. The retained message of a topic lives on the shard that owns the
/// topic, `hash(topic) % shards`; a subscription asks that shard (or, with a wildcard, every
/// shard) for the messages it matches.
#[derive(Debug)]
pub enum RetainMsg {
    /// Store (or, with an empty payload, clear) the retained message of its topic; then, if
    /// `ack` is set, answer `Stored` so the publisher is acknowledged only once the message is
    /// in the store (a subscriber that comes after the PUBACK sees it).
    Store(Arc<Message>, Option<StoredAck>),
    /// The store has the message: acknowledge the publisher.
    Stored(StoredAck),
    /// The retained messages matching a new subscription.
    Query(Box<RetainQuery>),
    /// The answer to a query, when it matched something.
    Reply(Box<RetainReply>),
}

/// The acknowledgement a retained QoS 1/2 PUBLISH waits for.
#[derive(Debug, Clone, Copy)]
pub struct StoredAck {
    /// The publisher's connection (packed key).
    pub conn: u64,
    /// The PUBLISH's packet id.
    pub packet_id: u16,
    /// PUBREC (QoS 2) rather than PUBACK.
    pub qos2: bool,
    /// Reason code to send: set by the publishing shard (0x10 if nothing matched in MQTT 5).
    pub reason: ReasonCode,
    /// The lane the PUBLISH came on.
    pub lane: u32,
}

/// A new subscription asking for retained messages.
#[derive(Debug)]
pub struct RetainQuery {
    /// Topic filter of the subscription.
    pub filter: MqttStr,
    /// The subscribing session's client id and registration token.
    pub client_id: MqttStr,
    /// See `client_id`.
    pub token: u64,
    /// The subscription (QoS, identifier).
    pub entry: SubEntry,
}

/// Retained messages for one subscription.
#[derive(Debug)]
pub struct RetainReply {
    /// The subscribing session's client id and registration token.
    pub client_id: MqttStr,
    /// See `client_id`.
    pub token: u64,
    /// The subscription.
    pub entry: SubEntry,
    /// The matching messages.
    pub messages: Vec<Arc<Message>>,
}

/// Retained-message queries to send once a SUBACK has gone out.
#[derive(Debug, Clone)]
struct RetainWanted {
    client_id: MqttStr,
    token: u64,
    subs: Vec<(MqttStr, SubEntry)>,
}

/// A stored retained message.
#[derive(Debug)]
struct Retained {
    msg: Arc<Message>,
    /// The message's own expiry, or `retainer.msg_expiry_interval` after it was stored.
    expires_at: Option<Instant>,
}

/// Node visits one retained-message query may make (bounded work per query).
const MAX_RETAINED_VISITS: usize = 1 << 16;

/// A delivery forwarded by the shard a session left to the shard it moved to.
#[derive(Debug)]
pub struct Forward {
    /// Client id of the session.
    pub client_id: MqttStr,
    /// Its registration token on the new shard.
    pub token: u64,
    /// The delivery.
    pub delivery: Queued,
}

/// The fence protocol used to move a session between shards without losing or duplicating a
/// message.
///
/// # Moving a session
///
/// When a client with a persistent session reconnects on shard B while its session is on
/// shard A:
///
/// 1. A hands the session state to B (`Proceed`) and keeps a *ghost*: its subscriptions stay
///    in a ghost index on A, and every message that still reaches A for them is forwarded to B
///    ([`ShardMsg::Forward`]), on the same A→B ring as the state, so it arrives after it.
/// 2. B installs the session, announces its routes, then fences: a [`MoveMsg::Fence`] to
///    every shard, answered by [`MoveMsg::FenceAck`] on the ring back. Rings are FIFO, so once
///    every shard has acknowledged, every shard routes the session's filters to B.
/// 3. B tells A ([`MoveMsg::Release`]); A withdraws the ghost's routes and fences in turn;
///    once every shard has acknowledged, no message for the ghost can still be on its way to
///    A, so A drops the ghost and tells B ([`MoveMsg::Done`]).
///
/// Between 1 and 3 a message can reach B both directly and through A; B delivers each message
/// id once (a per-session set kept only for the duration of the move).
#[derive(Debug)]
pub enum MoveMsg {
    /// Answer with `FenceAck(epoch)` to the sender after everything sent before.
    Fence(u64),
    /// The answer to a fence.
    FenceAck(u64),
    /// To the old shard: every shard routes to the new one; the ghost may retire.
    Release {
        /// The session's registration token on the new shard.
        token: u64,
    },
    /// To the new shard: the ghost is gone, nothing more is forwarded.
    Done {
        /// Client id of the session.
        client_id: MqttStr,
        /// The session's registration token on the new shard.
        token: u64,
    },
}

/// The client-id registry protocol. The registry is partitioned: the entry for a client id
/// lives on shard `hash(client id) % shards`, its owner.
#[derive(Debug)]
pub enum RegistryMsg {
    /// To the owner: a connection on `shard` wants the client id.
    Register {
        /// Client Identifier.
        client_id: MqttStr,
        /// Shard of the connecting client.
        shard: ShardId,
        /// Its connection key (packed).
        conn: u64,
        /// Clean Start of the CONNECT.
        clean_start: bool,
    },
    /// From the owner to the shard holding the current session: hand it over.
    TakeOver {
        /// Client Identifier.
        client_id: MqttStr,
        /// Where the new connection is.
        new_shard: ShardId,
        /// The new connection (packed key).
        new_conn: u64,
        /// Clean Start 0: the session state is wanted.
        want_session: bool,
        /// The registration (connection key) being taken over.
        old_conn: u64,
    },
    /// To the new connection's shard: go ahead, with the old session if there was one.
    Proceed {
        /// The connection (packed key).
        conn: u64,
        /// The session state moved from its old shard.
        session: Option<Box<SessionState>>,
    },
    /// To the owner: the session registered with `token` on `shard` ended.
    Unregister {
        /// Client Identifier.
        client_id: MqttStr,
        /// Shard of the session.
        shard: ShardId,
        /// The registration token.
        token: u64,
    },
}

/// What the driver must do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bytes wait in [`Shard::take_output`].
    Write(Key),
    /// Write what is queued, then close the socket and call [`Shard::handle_closed`].
    Close(Key),
    /// A paused connection may be read again: call [`Shard::handle_read`] with the bytes
    /// already buffered, then read on.
    Resume(Key),
}

/// The outcome of [`Shard::handle_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The buffer holds no complete packet; at least this many more bytes are needed.
    NeedMore(usize),
    /// The per-turn packet budget ran out with packets left in the buffer: call again after
    /// letting other connections run.
    More,
    /// The connection waits for the client-id registry (CONNECT sent, CONNACK not yet): stop
    /// reading until [`Event::Resume`].
    Paused,
    /// The connection's output buffer is over `Settings::max_write_buffer`: call again once
    /// some of it has been written.
    WriteBlocked,
    /// The connection is closing; stop reading it.
    Closing,
    /// A packet that may not travel on this lane (a data stream of a multi-stream QUIC
    /// connection carries PUBLISH, its acknowledgements, SUBSCRIBE and UNSUBSCRIBE only): the
    /// driver resets the lane; the connection goes on.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Delayed,
    SysStats,
    SysHeartbeat,
    RetainedSweep,
    Will(Key),
    ConnectTimeout(Key),
    KeepAlive(Key),
    Retry(Key),
    SessionExpiry(Key),
    AwaitRel(Key),
}

#[derive(Debug)]
enum ConnState {
    /// Waiting for CONNECT.
    AwaitConnect,
    /// CONNECT with an Authentication Method received: the exchange runs (AUTH packets).
    Authenticating(Box<Connect>, Box<dyn AuthExchange>),
    /// CONNECT received, waiting for the registry.
    Registering(Box<Connect>),
    /// CONNACK sent; the session is attached.
    Connected,
    /// Closing: nothing more is read or processed.
    Closing,
}

#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    state: ConnState,
    decoder: Decoder,
    version: ProtocolVersion,
    out: OutQueue,
    keep_alive: Duration,
    last_rx: Instant,
    /// The client's Maximum Packet Size.
    client_max_packet: u32,
    /// Topic aliases the client set up (v5, 3.3.2.3.4).
    aliases: HashMap<u16, MqttStr>,
    /// In the event queue for writing.
    write_pending: bool,
    /// The session, once CONNACK is sent (kept while closing, until the socket is gone).
    session: Option<Key>,
    /// The client id was assigned by the server (sent back in CONNACK, v5).
    assigned_id: bool,
    /// The socket closed while the connection was registering.
    socket_closed: bool,
    /// DISCONNECT with reason 0x00 received: the will is deleted (3.1.2.5).
    normal_disconnect: bool,
    /// Why the broker closed the connection, for the `$SYS` disconnected event.
    close_reason: &'static str,
    /// User Name, for the `$SYS` connected event.
    username: Option<MqttStr>,
    /// Topic aliases we send (MQTT 5, when the client's Topic Alias Maximum is above 0).
    out_aliases: Option<Box<crate::alias::OutAliases>>,
    /// Request Problem Information (MQTT 5, default true): Reason Strings may be sent.
    problem_information: bool,
    /// Enhanced authentication (MQTT 5), for a client that connected with a method.
    auth: Option<Box<ConnAuth>>,
    /// The client's verified TLS certificate, on a TLS listener with client verification.
    peer_cert: Option<Box<crate::tls::PeerCert>>,
    /// The lane the packet being handled arrived on: answers go back there.
    lane: u32,
    /// Which lane each stretch of `out` is for, on a connection with several
    /// ([`Shard::enable_lanes`], QUIC multi-stream); `None` when everything goes on lane 0.
    lanes: Option<Box<LaneMarks>>,
    /// The listener it came in on (`tcp`, `ssl`, `ws`, `wss`, `quic`), for the REST API.
    listener: &'static str,
    /// Clean Start of its CONNECT.
    clean_start: bool,
}

/// The lanes of a connection's queued output: consecutive (lane, bytes) stretches, oldest
/// first, in step with its [`OutQueue`]. Bounded by it: one entry per lane switch.
#[derive(Debug, Default)]
struct LaneMarks {
    marks: VecDeque<(u32, usize)>,
    scratch: Vec<Bytes>,
}

impl LaneMarks {
    fn record(&mut self, lane: u32, n: usize) {
        match self.marks.back_mut() {
            Some((l, len)) if *l == lane => *len += n,
            _ if n > 0 => self.marks.push_back((lane, n)),
            _ => {}
        }
    }

    /// Splits `chunks` (everything the queue held) into per-lane pieces, without copying.
    fn split(&mut self, chunks: &mut Vec<Bytes>, into: &mut Vec<(u32, Bytes)>) {
        for mut chunk in chunks.drain(..) {
            while !chunk.is_empty() {
                let Some((lane, left)) = self.marks.front_mut() else {
                    into.push((0, chunk));
                    break;
                };
                let lane = *lane;
                if *left >= chunk.len() {
                    *left -= chunk.len();
                    if *left == 0 {
                        self.marks.pop_front();
                    }
                    into.push((lane, chunk));
                    break;
                }
                let head = chunk.split_to(*left);
                self.marks.pop_front();
                into.push((lane, head));
            }
        }
        self.marks.clear();
    }
}

/// A connection's enhanced authentication (4.12): boxed, as few clients use it.
#[derive(Debug)]
struct ConnAuth {
    /// The Authentication Method of CONNECT.
    method: MqttStr,
    /// Authentication Data for CONNACK (the last step's).
    data: Option<Bytes>,
    /// A re-authentication in progress.
    reauth: Option<Box<dyn AuthExchange>>,
}

#[derive(Debug, Clone, Copy)]
struct RegEntry {
    shard: ShardId,
    token: u64,
}

/// One shard's broker state. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Shard {
    id: ShardId,
    shards: u16,
    settings: Settings,
    conns: Slab<Conn>,
    sessions: Slab<Session>,
    by_client: HashMap<MqttStr, Key>,
    subs: TopicTrie<Key, SubEntry>,
    routes: TopicTrie<ShardId, ()>,
    registry: HashMap<MqttStr, RegEntry>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    events: VecDeque<Event>,
    outbox: VecDeque<(ShardId, ShardMsg)>,
    local: VecDeque<ShardMsg>,
    scratch: Vec<(Key, SubEntry)>,
    client_seq: u64,
    stats: Stats,
    /// Publish-to-deliver latency of this shard's deliveries.
    delivery_latency: Latency,
    /// Shared subscription group memberships of this shard's sessions.
    shared_local: u64,
    pending_takeover: HashMap<u64, (ShardId, u64, bool)>,
    route_mask: Vec<u64>,
    /// Local subscriptions plus ghost subscriptions per filter: the route is announced while
    /// this is non-zero.
    route_refs: HashMap<String, u32>,
    /// Sessions that moved away and still receive forwarded messages, by their token on the
    /// new shard.
    ghosts: HashMap<u64, Ghost>,
    ghost_subs: TopicTrie<u64, SubEntry>,
    /// Fences in progress: acknowledgements still missing and what to do when none are.
    fences: HashMap<u64, (u16, FenceDone)>,
    next_epoch: u64,
    next_message: u64,
    /// Set by `shutdown`: connections closing now do not publish their wills.
    shutting_down: bool,
    /// Retained messages of the topics this shard owns.
    retained: RetainedIndex<Retained>,
    retained_sweep_armed: bool,
    /// Topics of the broker's own retained messages on this shard (outside the quota).
    retained_own: Vec<MqttStr>,
    /// Shared subscription groups by key (a hash of group name and filter, the same on every
    /// shard), and the index from filters to group keys.
    groups: HashMap<u64, Group>,
    group_index: TopicTrie<u64, ()>,
    group_scratch: Vec<u64>,
    rng: u64,
    /// An instant and the Unix time (ms) it corresponds to, for `$SYS` timestamps.
    clock: Option<(Instant, u64)>,
    /// On shard 0: the last `$SYS` snapshot of every shard.
    sys: Vec<SysSnapshot>,
    /// Exclusive-subscription locks this shard owns: filter → holding client id.
    exclusive: HashMap<String, MqttStr>,
    /// SUBSCRIBEs waiting for locks, by request number.
    pending_subs: HashMap<u64, PendingSub>,
    next_request: u64,
    /// Delayed publishes by due time, with the publishing session.
    delayed: std::collections::BTreeMap<(Instant, u64), (Key, Publish)>,
    next_delayed: u64,
    /// The log of durable sessions, once attached ([`Shard::attach_log`]).
    persist: Option<Persist<Held>>,
    /// Durable sessions whose header changed since the last flush.
    dirty_headers: Vec<Key>,
    /// Sessions restored from the logs so far (their registration tokens count down from the
    /// top, away from connection keys).
    restored: u64,
    /// With a log, per other shard: messages sent to it, and how many of them it reported
    /// durable.
    ring_sent: Vec<u64>,
    ring_durable: Vec<u64>,
    /// Per other shard: messages received from it, the last count reported back, and the
    /// received ones whose records are not durable yet (count, ticket).
    ring_recv: Vec<u64>,
    ring_reported: Vec<u64>,
    recv_pending: Vec<VecDeque<(u64, storage::log::Ticket)>>,
    reports_due: bool,
    /// A snapshot in progress: the durable sessions to write, and how far it got.
    snapshot_keys: Option<(Vec<Key>, usize)>,
    /// Log lines for the driver (`Settings::log_connections`), bounded.
    log_lines: VecDeque<String>,
    /// The retained topics the snapshot in progress writes after the sessions.
    snapshot_topics: Vec<MqttStr>,
}

/// Log lines a shard holds for its driver.
const MAX_LOG_LINES: usize = 4096;

/// Snapshot bytes written per step of a snapshot taken while serving.
const SNAPSHOT_SLICE: usize = 1 << 20;

/// What waits for the log before it happens.
#[derive(Debug)]
enum Held {
    /// A PUBACK (or PUBREC, `rec`) to a connection, on the lane its PUBLISH came on.
    Ack {
        conn: Key,
        lane: u32,
        packet_id: u16,
        reason: ReasonCode,
        rec: bool,
    },
    /// A message to another shard.
    Ring(ShardId, ShardMsg),
}

/// A session that moved to another shard, while its old routes may still bring messages here.
#[derive(Debug)]
struct Ghost {
    client_id: MqttStr,
    dest: ShardId,
    filters: Vec<MqttStr>,
    /// Routes withdrawn (after `Release`).
    released: bool,
    /// The session's copy in this shard's log, ended when the ghost retires (the new shard
    /// has its own on disk by then): its id and its deliveries (message id, queue position).
    durable_end: Option<(u64, Vec<(u64, u64)>)>,
}

#[derive(Debug, Clone)]
enum FenceDone {
    /// New shard: tell the old one the ghost may retire.
    Release { old: ShardId, token: u64 },
    /// Old shard: drop the ghost.
    Retire { token: u64 },
    /// A SUBSCRIBE announced new routes: acknowledge it once every shard routes them, so a
    /// message published anywhere after SUBACK reaches the subscriber.
    SubAck {
        conn: Key,
        /// The lane the SUBSCRIBE came on.
        lane: u32,
        /// `None` for the broker's own subscriptions (auto-subscribe).
        ack: Option<Box<SubAck>>,
        retained: Option<Box<RetainWanted>>,
    },
}

impl Shard {
    /// Shard `id` of `shards`.
    pub fn new(id: ShardId, shards: u16, settings: Settings) -> Self {
        Self {
            id,
            shards: shards.max(1),
            settings,
            conns: Slab::default(),
            sessions: Slab::default(),
            by_client: HashMap::new(),
            subs: TopicTrie::new(),
            routes: TopicTrie::new(),
            registry: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            outbox: VecDeque::new(),
            local: VecDeque::new(),
            scratch: Vec::new(),
            client_seq: 0,
            stats: Stats::default(),
            pending_takeover: HashMap::new(),
            route_mask: vec![0; usize::from(shards.max(1)).div_ceil(64)],
            route_refs: HashMap::new(),
            ghosts: HashMap::new(),
            ghost_subs: TopicTrie::new(),
            fences: HashMap::new(),
            next_epoch: 0,
            next_message: 0,
            shutting_down: false,
            retained: RetainedIndex::new(),
            retained_sweep_armed: false,
            retained_own: Vec::new(),
            groups: HashMap::new(),
            group_index: TopicTrie::new(),
            group_scratch: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(id),
            clock: None,
            sys: Vec::new(),
            exclusive: HashMap::new(),
            pending_subs: HashMap::new(),
            next_request: 0,
            delayed: std::collections::BTreeMap::new(),
            next_delayed: 0,
            persist: None,
            dirty_headers: Vec::new(),
            restored: 0,
            ring_sent: vec![0; usize::from(shards.max(1))],
            ring_durable: vec![0; usize::from(shards.max(1))],
            ring_recv: vec![0; usize::from(shards.max(1))],
            ring_reported: vec![0; usize::from(shards.max(1))],
            recv_pending: vec![VecDeque::new(); usize::from(shards.max(1))],
            reports_due: false,
            snapshot_keys: None,
            snapshot_topics: Vec::new(),
            log_lines: VecDeque::new(),
            delivery_latency: Latency::new(),
            shared_local: 0,
        }
    }

    /// Makes sessions with a non-zero expiry durable in `log`; durable session ids start
    /// after `first_sid` (above every id recovered). Call before serving.
    pub fn attach_log(&mut self, log: storage::log::Log, first_sid: u64) {
        self.persist = Some(Persist::new(log, self.id, first_sid));
    }

    /// Installs sessions recovered from the logs, offline, on this shard (which must own their
    /// client ids), and starts message ids above `first_id` (every recovered id's counter). Each
    /// gets a new durable identity, with a higher incarnation; call [`Shard::snapshot_all`]
    /// next so the log holds them. Call before serving, after [`Shard::attach_log`].
    pub fn restore(
        &mut self,
        now: Instant,
        unix_ms: u64,
        sessions: Vec<storage::image::SessionImage>,
        messages: &HashMap<u64, storage::schema::MessageV1>,
        first_id: u64,
    ) -> usize {
        self.next_message = self.next_message.max(first_id & ((1 << 48) - 1));
        let mut cache = HashMap::new();
        let mut restored = 0;
        for img in sessions {
            let h = img.header;
            let Some(version) = ProtocolVersion::from_level(h.protocol) else {
                continue;
            };
            let client_id = MqttStr::from(h.client_id.clone());
            if self.by_client.contains_key(&client_id)
                || h.expires_at_ms.is_some_and(|at| at <= unix_ms)
            {
                // Expired while the broker was down (its records go with the next snapshot).
                continue;
            }
            self.restored += 1;
            let token = u64::MAX - self.restored;
            let mut s = Session::new(client_id.clone(), token, version);
            s.expiry_interval = Duration::from_secs(u64::from(h.expiry_interval_s));
            // Online when the broker stopped: offline from now.
            s.expires_at = Some(match h.expires_at_ms {
                Some(at) => crate::persist::instant_at(at, now, unix_ms),
                None => now + s.expiry_interval,
            });
            for sub in &h.subscriptions {
                let Ok(options) = net::mqtt::SubscriptionOptions::decode(sub.options, true) else {
                    continue;
                };
                let entry = SubEntry {
                    options,
                    id: sub.id,
                    lane: 0,
                };
                s.subscriptions
                    .insert(MqttStr::from(sub.filter.clone()), entry);
            }
            s.will = h.will.as_ref().and_then(|w| {
                Some(Box::new(Will {
                    publish: detach(crate::persist::decode_publish(&w.publish)?),
                    delay: Duration::from_secs(u64::from(w.delay_s)),
                }))
            });
            s.will_at = h
                .will_at_ms
                .filter(|_| s.will.is_some())
                .map(|at| crate::persist::instant_at(at, now, unix_ms));
            s.last_packet_id = h.last_packet_id;
            for d in img.deliveries.into_values() {
                let e = d.enqueue;
                let Some(m) = messages.get(&e.mid) else {
                    continue;
                };
                let Some(msg) = crate::persist::restore_message(m, now, unix_ms, &mut cache) else {
                    continue;
                };
                let sub_ids = match e.sub_ids.as_slice() {
                    [] => SubIds::None,
                    [one] => SubIds::One(*one),
                    many => SubIds::Many(many.into()),
                };
                let q = Queued {
                    msg,
                    qos: QoS::from_u8(e.qos).unwrap_or(QoS::AtLeastOnce),
                    retain: e.retain,
                    sub_ids,
                    shared: None,
                    lane: 0,
                    seq: 0,
                };
                match d.packet_id {
                    Some(packet_id) => s.inflight.push_back(Inflight {
                        packet_id,
                        delivery: q,
                        stage: if d.released {
                            Stage::Released
                        } else {
                            Stage::Published
                        },
                        sent_at: now,
                    }),
                    None => s.mqueue.push_back(q),
                }
            }
            for packet_id in img.rx_qos2 {
                s.awaiting_rel.insert(packet_id, now);
            }
            if let Some(p) = self.persist.as_mut() {
                let previous = crate::persist::Durable {
                    sid: h.sid,
                    incarnation: h.incarnation,
                    shard: u16::MAX,
                    next_seq: 1,
                };
                s.durable = Some(p.identity(Some(&previous)));
                p.number(&mut s);
            }
            let expires_at = s.expires_at;
            let will_at = s.will_at;
            let filters: Vec<(MqttStr, SubEntry)> = s
                .subscriptions
                .iter()
                .map(|(f, e)| (f.clone(), *e))
                .collect();
            let sid = self.sessions.insert(s);
            self.by_client.insert(client_id.clone(), sid);
            self.registry.insert(
                client_id,
                RegEntry {
                    shard: self.id,
                    token,
                },
            );
            for (f, e) in filters {
                // Offline sessions are not members of shared groups; they rejoin on CONNECT.
                if split_share(&f).is_none() {
                    self.add_subscription(sid, &f, e);
                }
            }
            if let Some(at) = expires_at {
                self.arm(at, Timer::SessionExpiry(sid));
            }
            if let Some(at) = will_at {
                self.arm(at, Timer::Will(sid));
            }
            restored += 1;
        }
        restored
    }

    /// Installs retained messages recovered from the logs on this shard (which must own their
    /// topics); expired ones are dropped. Call with [`Shard::restore`], before
    /// [`Shard::snapshot_all`].
    pub fn restore_retained(
        &mut self,
        now: Instant,
        unix_ms: u64,
        retained: Vec<(String, storage::schema::MessageV1)>,
    ) -> usize {
        let mut cache = HashMap::new();
        let mut n = 0;
        for (topic, m) in retained {
            if m.expires_at_ms.is_some_and(|at| at <= unix_ms) {
                continue;
            }
            let Some(msg) = crate::persist::restore_message(&m, now, unix_ms, &mut cache) else {
                continue;
            };
            let expires_at = msg.expires_at;
            self.retained.insert(&topic, Retained { msg, expires_at });
            if expires_at.is_some() && !self.retained_sweep_armed {
                self.retained_sweep_armed = true;
                self.arm(now + RETAINED_SWEEP, Timer::RetainedSweep);
            }
            n += 1;
        }
        n
    }

    /// Installs delayed publishes recovered from the logs (any shard may hold them); one that
    /// came due while the broker was down is published at once.
    pub fn restore_delayed(
        &mut self,
        now: Instant,
        unix_ms: u64,
        delayed: Vec<storage::schema::DelayedV1>,
    ) -> usize {
        let mut n = 0;
        for d in delayed {
            let Some(p) = d
                .message
                .as_ref()
                .and_then(|m| crate::persist::decode_publish(&m.publish))
            else {
                continue;
            };
            let low = d.id & ((1 << 48) - 1);
            self.next_delayed = self.next_delayed.max(low);
            let at = crate::persist::instant_at(d.due_ms, now, unix_ms);
            if self.delayed.first_key_value().is_none_or(|(k, _)| at < k.0) {
                self.arm(at, Timer::Delayed);
            }
            self.delayed
                .insert((at, d.id), (Key::from_u64(u64::MAX), detach(p)));
            n += 1;
        }
        n
    }

    /// Writes a snapshot of every durable session (at start, after [`Shard::restore`]): once
    /// it is on disk, the segments it replaces are deleted.
    pub fn snapshot_all(&mut self, now: Instant) {
        if self.snapshot_keys.is_none() && self.begin_snapshot() {
            self.snapshot_step(now, usize::MAX);
        }
    }

    /// The next file operation of the log, if any (see [`storage::log::Log::poll_job`]).
    pub fn poll_storage_job(&mut self, now: Instant) -> Option<storage::log::Job> {
        self.flush_headers(now);
        self.advance_snapshot(now);
        self.persist.as_mut()?.poll_job(now)
    }

    /// Compaction while serving: once the log since the last snapshot is large enough, a
    /// snapshot of every durable session is written, a bounded slice per call (whatever the
    /// sessions hold then; what changes meanwhile is in the log after the snapshot's start).
    fn advance_snapshot(&mut self, now: Instant) {
        if self.snapshot_keys.is_none() {
            let wanted = self
                .persist
                .as_ref()
                .is_some_and(|p| p.log_ref().wants_snapshot());
            if !wanted || !self.begin_snapshot() {
                return;
            }
        }
        self.snapshot_step(now, SNAPSHOT_SLICE);
    }

    /// Starts a snapshot of the durable sessions, retained messages and delayed publishes as
    /// they are when [`Shard::snapshot_step`] reaches them. False without a log.
    fn begin_snapshot(&mut self) -> bool {
        let Some(p) = self.persist.as_mut() else {
            return false;
        };
        p.snapshot_begin();
        let keys: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.durable.is_some())
            .map(|(k, _)| k)
            .collect();
        self.snapshot_topics = self
            .retained
            .iter()
            .map(|(t, _)| MqttStr::from(t.to_owned()))
            .filter(|t| !self.retained_own.contains(t))
            .collect();
        self.snapshot_keys = Some((keys, 0));
        true
    }

    /// Writes the snapshot in progress while fewer than `slice` of its bytes wait to be
    /// written; finishes it once everything is in.
    fn snapshot_step(&mut self, now: Instant, slice: usize) {
        let unix_ms = self.wall_ms(now);
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some((keys, pos)) = self.snapshot_keys.as_mut() else {
            return;
        };
        while *pos < keys.len() && p.snapshot_backlog() < slice {
            if let Some(s) = self.sessions.get(keys[*pos])
                && s.durable.is_some()
            {
                p.snapshot_session(s, now, unix_ms);
            }
            *pos += 1;
        }
        // Then the retained messages (as they are when reached; changes since are in the log).
        while *pos == keys.len() && p.snapshot_backlog() < slice {
            let Some(topic) = self.snapshot_topics.pop() else {
                break;
            };
            if let Some(r) = self.retained.get(&topic) {
                p.retain(&topic, Some((&r.msg, r.expires_at)), now, unix_ms, true);
            }
        }
        if *pos == keys.len() && self.snapshot_topics.is_empty() {
            for ((at, id), (_, publish)) in &self.delayed {
                p.delayed(*id, Some((publish, *at)), now, unix_ms, true);
            }
            p.snapshot_finish();
            self.snapshot_keys = None;
        }
    }

    /// True when the log has records or a snapshot to write.
    pub fn storage_wanted(&self) -> bool {
        !self.dirty_headers.is_empty()
            || self
                .persist
                .as_ref()
                .is_some_and(|p| p.log_ref().backlog() > 0 || p.snapshot_backlog() > 0)
    }

    /// The log's last I/O error, while it lasts.
    pub fn storage_error(&self) -> Option<&str> {
        self.persist.as_ref()?.log_ref().error()
    }

    /// When the log has a timed job (an interval fsync, a retry).
    pub fn storage_timeout(&self) -> Option<Instant> {
        self.persist.as_ref()?.log_ref().poll_timeout()
    }

    /// The outcome of the last storage job; releases what waited for it.
    pub fn storage_complete(
        &mut self,
        now: Instant,
        result: std::io::Result<()>,
        data: Option<Vec<u8>>,
    ) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        p.complete(now, result, data);
        self.release_held();
        self.drain_local(now);
    }

    fn release_held(&mut self) {
        while let Some(item) = self
            .persist
            .as_mut()
            .and_then(|p| p.poll_released(&self.ring_durable))
        {
            self.do_held(item);
        }
        // Records of other shards' messages may be durable now: report them.
        if self.recv_pending.iter().any(|p| !p.is_empty()) {
            self.reports_due = true;
        }
    }

    fn do_held(&mut self, item: Held) {
        match item {
            Held::Ack {
                conn,
                lane,
                packet_id,
                reason,
                rec,
            } => {
                let ack = Ack {
                    packet_id,
                    reason_code: reason,
                    ..Ack::default()
                };
                let packet = if rec {
                    Packet::PubRec(ack)
                } else {
                    Packet::PubAck(ack)
                };
                self.send_on(conn, lane, &packet);
            }
            Held::Ring(dest, msg) => self.send_shard(dest, msg),
        }
    }

    /// Holds `item` until the records appended so far are durable (at once without a log).
    fn after_log(&mut self, now: Instant, item: Held) {
        self.flush_headers(now);
        let needs = if self.persist.is_some() {
            self.remote_needs()
        } else {
            Vec::new()
        };
        let ready = match self.persist.as_mut() {
            Some(p) => p.defer(item, needs),
            None => Some(item),
        };
        if let Some(item) = ready {
            self.do_held(item);
        }
    }

    /// Marks a durable session's header for rewriting.
    fn header_changed(&mut self, sid: Key) {
        if self.persist.is_some()
            && let Some(s) = self.sessions.get_mut(sid)
            && s.durable.is_some()
            && !s.header_dirty
        {
            s.header_dirty = true;
            self.dirty_headers.push(sid);
        }
    }

    fn flush_headers(&mut self, now: Instant) {
        if self.dirty_headers.is_empty() {
            return;
        }
        let unix_ms = self.wall_ms(now);
        let Some(p) = self.persist.as_mut() else {
            self.dirty_headers.clear();
            return;
        };
        for sid in self.dirty_headers.drain(..) {
            if let Some(s) = self.sessions.get_mut(sid) {
                s.header_dirty = false;
                p.header(s, now, unix_ms);
            }
        }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The peer address of a connection.
    pub fn peer(&self, conn: Key) -> Option<SocketAddr> {
        self.conns.get(conn).map(|c| c.peer)
    }

    /// The shard's gauges and counters now (for the control plane's metrics), with a copy of
    /// its latency histogram (about 20 KiB); the driver fills in [`SysSnapshot::driver`].
    pub fn sys_snapshot(&self) -> SysSnapshot {
        SysSnapshot {
            connections: self.conns.len() as u64,
            sessions: self.sessions.len() as u64,
            subscriptions: self.subs.entry_count() as u64,
            retained: self.retained.len() as u64,
            shared_subscriptions: self.shared_local,
            topics: self.route_refs.len() as u64,
            stats: self.stats.clone(),
            delivery_latency: Some(Box::new(self.delivery_latency.clone())),
            driver: DriverStats::default(),
        }
    }

    /// The next log line (connections established and ended, with `log_connections`).
    pub fn poll_log(&mut self) -> Option<String> {
        self.log_lines.pop_front()
    }

    fn log_line(&mut self, line: String) {
        // Bounded: lines the driver has not taken beyond this are dropped.
        if self.log_lines.len() < MAX_LOG_LINES {
            self.log_lines.push_back(line);
        }
    }

    /// Sessions held, online or not.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Tells the shard the wall-clock time (Unix milliseconds) at `now`, for `$SYS` timestamps,
    /// and starts the `$SYS` timers. Call once, before serving.
    pub fn set_clock(&mut self, now: Instant, unix_ms: u64) {
        self.clock = Some((now, unix_ms));
        if !self.settings.sys_msg_interval.is_zero() {
            self.arm(now + self.settings.sys_msg_interval, Timer::SysStats);
        }
        if self.id == 0 {
            self.sys = vec![SysSnapshot::default(); usize::from(self.shards)];
            self.publish_sys(now, "version", env!("CARGO_PKG_VERSION").to_owned(), true);
            self.publish_sys(
                now,
                "sysdescr",
                "thread-per-core MQTT broker".to_owned(),
                true,
            );
            if !self.settings.sys_heartbeat_interval.is_zero() {
                self.arm(
                    now + self.settings.sys_heartbeat_interval,
                    Timer::SysHeartbeat,
                );
            }
        }
        self.drain_local(now);
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        wall_ms(self.clock, now)
    }

    /// Publishes `$SYS/brokers/{node}/{path}` as the broker.
    fn publish_sys(&mut self, now: Instant, path: &str, payload: String, retain: bool) {
        let topic = format!("$SYS/brokers/{}/{path}", self.settings.node_name);
        let mut p = Publish::new(topic, payload);
        p.retain = retain;
        self.publish_message(now, SYS_SESSION, p);
    }

    /// On shard 0: the statistics of every shard, summed.
    fn publish_sys_stats(&mut self, now: Instant) {
        let mut t = SysSnapshot::default();
        for s in &self.sys {
            t.connections += s.connections;
            t.sessions += s.sessions;
            t.subscriptions += s.subscriptions;
            t.retained += s.retained;
            let (a, b) = (&mut t.stats, &s.stats);
            a.messages_received += b.messages_received;
            a.messages_sent += b.messages_sent;
            a.packets_received += b.packets_received;
            a.packets_sent += b.packets_sent;
            a.bytes_received += b.bytes_received;
            a.bytes_sent += b.bytes_sent;
            a.messages_retransmitted += b.messages_retransmitted;
            a.connections_established += b.connections_established;
            a.connections_closed += b.connections_closed;
            a.dropped_no_subscribers += b.dropped_no_subscribers;
            a.dropped_queue_full += b.dropped_queue_full;
            a.dropped_expired += b.dropped_expired;
            a.dropped_qos0_write_buffer_full += b.dropped_qos0_write_buffer_full;
        }
        let st = &t.stats;
        let dropped = st.dropped_no_subscribers
            + st.dropped_queue_full
            + st.dropped_expired
            + st.dropped_qos0_write_buffer_full;
        let figures = [
            ("stats/connections/count", t.connections),
            ("stats/sessions/count", t.sessions),
            ("stats/subscriptions/count", t.subscriptions),
            ("stats/retained/count", t.retained),
            ("stats/topics/count", self.routes.filter_count() as u64),
            ("metrics/messages/received", st.messages_received),
            ("metrics/messages/sent", st.messages_sent),
            ("metrics/messages/dropped", dropped),
            ("metrics/messages/retransmitted", st.messages_retransmitted),
            ("metrics/packets/received", st.packets_received),
            ("metrics/packets/sent", st.packets_sent),
            ("metrics/bytes/received", st.bytes_received),
            ("metrics/bytes/sent", st.bytes_sent),
            ("metrics/client/connected", st.connections_established),
            ("metrics/client/disconnected", st.connections_closed),
        ];
        for (path, v) in figures {
            self.publish_sys(now, path, v.to_string(), false);
        }
    }

    // ---- input -------------------------------------------------------------------------------

    /// A new connection was accepted.
    pub fn handle_accept(&mut self, now: Instant, peer: SocketAddr) -> Key {
        let mut decoder = Decoder::server(self.settings.max_packet_size);
        // Malformed topic filters are refused one by one in SUBACK / UNSUBACK (0x8F).
        decoder.set_strict_filters(false);
        let key = self.conns.insert(Conn {
            peer,
            state: ConnState::AwaitConnect,
            decoder,
            version: ProtocolVersion::V3_1_1,
            out: OutQueue::default(),
            keep_alive: Duration::ZERO,
            last_rx: now,
            client_max_packet: net::mqtt::MAX_PACKET_SIZE,
            aliases: HashMap::new(),
            write_pending: false,
            session: None,
            assigned_id: false,
            socket_closed: false,
            normal_disconnect: false,
            close_reason: "closed",
            username: None,
            out_aliases: None,
            problem_information: true,
            auth: None,
            peer_cert: None,
            lane: 0,
            lanes: None,
            listener: "tcp",
            clean_start: false,
        });
        self.stats.connections_accepted += 1;
        self.arm(now + self.settings.idle_timeout, Timer::ConnectTimeout(key));
        key
    }

    /// The listener `conn` came in on (`tcp` unless told otherwise).
    pub fn set_listener(&mut self, conn: Key, listener: &'static str) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.listener = listener;
        }
    }

    /// A QUIC datagram was handed to the shard that owns its connection.
    pub fn note_quic_forwarded(&mut self) {
        self.stats.quic_datagrams_forwarded += 1;
    }

    /// The client certificate the TLS handshake of `conn` verified.
    pub fn set_peer_cert(&mut self, conn: Key, cert: crate::tls::PeerCert) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.peer_cert = Some(Box::new(cert));
        }
    }

    /// The client's address as a proxy in front reported it (WebSocket `X-Forwarded-For`).
    pub fn set_peer(&mut self, conn: Key, peer: SocketAddr) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.peer = peer;
        }
    }

    /// The transport of `conn` failed (a TLS or WebSocket error): counted; the driver
    /// closes the socket, and [`Shard::handle_closed`] follows as for any close.
    pub fn note_tls_failure(&mut self, conn: Key) {
        self.stats.tls_failures += 1;
        if let Some(c) = self.conns.get_mut(conn)
            && matches!(c.state, ConnState::AwaitConnect)
        {
            c.close_reason = "tls_error";
        }
    }

    /// Bytes were read from `conn` into `buf`. Decodes and handles up to
    /// `Settings::max_packets_per_read` packets.
    pub fn handle_read(&mut self, now: Instant, conn: Key, buf: &mut BytesMut) -> Read {
        self.handle_read_lane(now, conn, 0, buf)
    }

    /// [`Shard::handle_read`] for bytes of one lane of a connection with several (a QUIC
    /// multi-stream connection: lane 0 is its control stream, every other lane one data
    /// stream, with its own `buf`). Answers go back on the lane the request came on. A data
    /// lane is read only once the connection is connected ([`Shard::is_connected`]), and
    /// carries PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE and UNSUBSCRIBE only: any
    /// other packet there is [`Read::Refused`].
    pub fn handle_read_lane(
        &mut self,
        now: Instant,
        conn: Key,
        lane: u32,
        buf: &mut BytesMut,
    ) -> Read {
        let mut budget = self.settings.max_packets_per_read;
        let result = loop {
            let Some(c) = self.conns.get_mut(conn) else {
                break Read::Closing;
            };
            match c.state {
                ConnState::Closing => break Read::Closing,
                ConnState::Registering(_) => break Read::Paused,
                ConnState::Connected => {}
                _ if lane != 0 => break Read::Paused,
                _ => {}
            }
            if budget == 0 {
                break Read::More;
            }
            if c.out.len() > self.settings.max_write_buffer {
                // The client does not read what we send (acknowledgements pile up): stop
                // reading it until its socket drains, so this buffer stays bounded.
                break Read::WriteBlocked;
            }
            // On a data lane, the packet type decides before the decoder does (which refuses a
            // second CONNECT as soon as it sees its first byte).
            if lane != 0 && buf.first().is_some_and(|b| !data_lane_type(b >> 4)) {
                break Read::Refused;
            }
            let before = buf.len();
            match c.decoder.decode(buf) {
                Ok(Some(packet)) => {
                    budget -= 1;
                    c.last_rx = now;
                    self.stats.packets_received += 1;
                    self.stats.packets_received_by_type[packet.packet_type() as usize] += 1;
                    self.stats.bytes_received += (before - buf.len()) as u64;
                    c.lane = lane;
                    self.handle_packet(now, conn, packet);
                    if let Some(c) = self.conns.get_mut(conn) {
                        c.lane = 0;
                    }
                    // A registration on this very shard completes right away.
                    self.drain_local(now);
                }
                Ok(None) => break Read::NeedMore(c.decoder.needed()),
                Err(e) => {
                    self.protocol_error(conn, &e);
                    break Read::Closing;
                }
            }
        };
        self.drain_local(now);
        result
    }

    /// The socket of `conn` is closed (by the peer, an error, or after [`Event::Close`]).
    pub fn handle_closed(&mut self, now: Instant, conn: Key) {
        match self.conns.get_mut(conn) {
            Some(c) if matches!(c.state, ConnState::Registering(_)) => {
                // The registry's answer is on its way: keep the entry until it arrives, so a
                // session handed over to this connection is kept, not lost.
                c.socket_closed = true;
            }
            Some(_) => {
                self.detach(now, conn);
                self.conns.remove(conn);
            }
            None => {}
        }
        self.drain_local(now);
    }

    /// A message from shard `from`.
    pub fn handle_message(&mut self, now: Instant, from: ShardId, msg: ShardMsg) {
        let f = usize::from(from);
        let Some(p) = self.persist.as_ref() else {
            if let Some(n) = self.ring_recv.get_mut(f) {
                *n += 1;
            }
            self.on_message(now, from, msg);
            self.drain_local(now);
            return;
        };
        if let ShardMsg::Durable(n) = msg {
            if let Some(d) = self.ring_durable.get_mut(f) {
                *d = (*d).max(n);
            }
            self.release_held();
            self.drain_local(now);
            return;
        }
        let before = p.log_ref().appended();
        self.on_message(now, from, msg);
        self.drain_local(now);
        self.flush_headers(now);
        if f < self.ring_recv.len() {
            self.ring_recv[f] += 1;
            let after = self
                .persist
                .as_ref()
                .map_or(before, |p| p.log_ref().appended());
            if after > before {
                self.recv_pending[f].push_back((self.ring_recv[f], after));
            }
            self.reports_due = true;
        }
    }

    /// Time passed: fire due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            self.fire(now, timer);
        }
        self.drain_local(now);
    }

    /// Sends DISCONNECT 0x8B (server shutting down) to MQTT 5 clients and closes every
    /// connection.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let keys: Vec<Key> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.disconnect(k, ReasonCode::SERVER_SHUTTING_DOWN);
        }
        self.drain_local(now);
    }

    // ---- output ------------------------------------------------------------------------------

    /// The earliest time [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next thing to do for a connection.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        if let Event::Write(k) = e
            && let Some(c) = self.conns.get_mut(k)
        {
            c.write_pending = false;
        }
        Some(e)
    }

    /// Lets `conn` answer on several lanes ([`Shard::handle_read_lane`]); its output is then
    /// taken with [`Shard::take_output_lanes`].
    pub fn enable_lanes(&mut self, conn: Key) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.lanes.get_or_insert_default();
        }
    }

    /// Whether `conn` has been sent its CONNACK and its session is attached.
    pub fn is_connected(&self, conn: Key) -> bool {
        self.conns
            .get(conn)
            .is_some_and(|c| matches!(c.state, ConnState::Connected))
    }

    /// Bytes queued for `conn` and not yet taken.
    pub fn output_len(&self, conn: Key) -> usize {
        self.conns.get(conn).map_or(0, |c| c.out.len())
    }

    /// [`Shard::take_output`] with the lane of each piece (0 for all of it on a connection
    /// without [`Shard::enable_lanes`]). The pieces share the queued buffers.
    pub fn take_output_lanes(&mut self, conn: Key, into: &mut Vec<(u32, Bytes)>) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let bytes = c.out.len();
        match c.lanes.as_deref_mut() {
            Some(lanes) => {
                let mut chunks = std::mem::take(&mut lanes.scratch);
                c.out.take(&mut chunks);
                lanes.split(&mut chunks, into);
                lanes.scratch = chunks;
            }
            None => {
                let mut chunks = Vec::new();
                c.out.take(&mut chunks);
                into.extend(chunks.into_iter().map(|b| (0, b)));
            }
        }
        self.stats.bytes_sent += bytes as u64;
    }

    /// Moves the bytes queued for `conn` into `into`, oldest first.
    pub fn take_output(&mut self, conn: Key, into: &mut Vec<Bytes>) {
        if let Some(c) = self.conns.get_mut(conn) {
            let from = into.len();
            c.out.take(into);
            let bytes: usize = into[from..].iter().map(Bytes::len).sum();
            self.stats.bytes_sent += bytes as u64;
        }
    }

    /// The next message for another shard.
    pub fn poll_outgoing(&mut self) -> Option<(ShardId, ShardMsg)> {
        self.queue_reports();
        self.outbox.pop_front()
    }

    /// Gives back a message the ring refused (full); it is sent first next time.
    pub fn requeue_outgoing(&mut self, dest: ShardId, msg: ShardMsg) {
        self.outbox.push_front((dest, msg));
    }

    /// Messages for other shards are waiting: stop reading sockets until they are sent.
    pub fn is_backpressured(&self) -> bool {
        !self.outbox.is_empty()
    }

    // ---- packets -----------------------------------------------------------------------------

    fn handle_packet(&mut self, now: Instant, conn: Key, packet: Packet) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let session = match c.state {
            ConnState::AwaitConnect => {
                if let Packet::Connect(connect) = packet {
                    self.on_connect(conn, connect);
                }
                return;
            }
            ConnState::Authenticating(..) => {
                match packet {
                    Packet::Auth(a) => self.on_connect_auth(conn, a),
                    Packet::Disconnect(_) => self.close(conn),
                    // Only AUTH and DISCONNECT may come before CONNACK here (4.12).
                    _ => self.refuse(conn, ReasonCode::PROTOCOL_ERROR),
                }
                return;
            }
            // handle_read stops decoding while registering.
            ConnState::Registering(_) | ConnState::Closing => return,
            ConnState::Connected => match c.session {
                Some(s) => s,
                None => return,
            },
        };
        match packet {
            Packet::Publish(p) => self.on_publish(now, conn, session, p),
            Packet::PubAck(a) => self.on_puback(now, session, a.packet_id),
            Packet::PubRec(a) => self.on_pubrec(now, conn, session, a),
            Packet::PubRel(a) => self.on_pubrel(conn, session, a.packet_id),
            Packet::PubComp(a) => self.on_pubcomp(now, session, a.packet_id),
            Packet::Subscribe(s) => {
                self.on_subscribe(conn, session, s, true);
            }
            Packet::Unsubscribe(u) => self.on_unsubscribe(conn, session, u),
            Packet::PingReq => self.send(conn, &Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(conn, session, d),
            Packet::Auth(a) => self.on_reauth(conn, a),
            // The decoder refuses these in the server role.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => self.disconnect(conn, ReasonCode::PROTOCOL_ERROR),
        }
    }

    fn on_connect(&mut self, conn: Key, mut connect: Box<Connect>) {
        let v = connect.protocol;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.version = v;
        if let Some(cert) = c.peer_cert.as_deref() {
            // EMQX's peer_cert_as_username / peer_cert_as_clientid: the certificate decides.
            if let Some(u) = self
                .settings
                .peer_cert_as_username
                .and_then(|f| cert.field(f))
            {
                connect.username = Some(u.into());
            }
            if let Some(id) = self
                .settings
                .peer_cert_as_clientid
                .and_then(|f| cert.field(f))
            {
                connect.client_id = id.into();
            }
        }
        let empty = connect.client_id.is_empty();
        if connect.client_id.len() > self.settings.max_clientid_len
            || (empty && v == ProtocolVersion::V3_1)
            || (empty && v == ProtocolVersion::V3_1_1 && !connect.clean_start)
        {
            // [MQTT-3.1.3-8]: an empty id with Clean Session 0 gets return code 2.
            self.refuse(conn, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            return;
        }
        if let Some(w) = &connect.will {
            if w.retain && !self.settings.retain_available {
                self.refuse(conn, ReasonCode::RETAIN_NOT_SUPPORTED);
                return;
            }
            if w.qos > self.settings.max_qos_allowed {
                self.refuse(conn, ReasonCode::QOS_NOT_SUPPORTED);
                return;
            }
        }
        self.stats.client_authenticate += 1;
        if let Some(method) = connect.properties.authentication_method.clone() {
            // Enhanced authentication (4.12): the configured hook runs the exchange.
            let client = AuthClient {
                client_id: &connect.client_id,
                username: connect.username.as_deref(),
                peer: c.peer,
            };
            let Some(exchange) = self
                .settings
                .enhanced_auth
                .as_ref()
                .and_then(|a| a.begin(&method, client))
            else {
                self.refuse(conn, ReasonCode::BAD_AUTHENTICATION_METHOD);
                return;
            };
            c.auth = Some(Box::new(ConnAuth {
                method: owned(&method),
                data: None,
                reauth: None,
            }));
            let data = connect.properties.authentication_data.take();
            c.state = ConnState::Authenticating(connect, exchange);
            self.auth_step(conn, data);
            return;
        }
        self.register(conn, connect);
    }

    /// An AUTH packet while the CONNECT exchange runs.
    fn on_connect_auth(&mut self, conn: Key, auth: Auth) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if auth.reason_code != ReasonCode::CONTINUE_AUTHENTICATION
            || auth.properties.authentication_method.as_deref()
                != c.auth.as_ref().map(|a| &*a.method)
        {
            // 4.12: the client continues with 0x18 and the same method.
            self.refuse(conn, ReasonCode::PROTOCOL_ERROR);
            return;
        }
        self.auth_step(conn, auth.properties.authentication_data);
    }

    /// Runs one step of the CONNECT exchange with the client's `data`.
    fn auth_step(&mut self, conn: Key, data: Option<Bytes>) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let ConnState::Authenticating(_, exchange) = &mut c.state else {
            return;
        };
        match exchange.step(data.as_deref()) {
            AuthStep::Continue(challenge) => {
                let method = c.auth.as_ref().map(|a| a.method.clone());
                self.send_auth(
                    conn,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    method,
                    Some(challenge),
                );
            }
            AuthStep::Fail(rc) => self.refuse(conn, rc),
            AuthStep::Success(final_data) => {
                if let Some(a) = c.auth.as_mut() {
                    a.data = final_data;
                }
                let ConnState::Authenticating(connect, _) =
                    std::mem::replace(&mut c.state, ConnState::AwaitConnect)
                else {
                    return;
                };
                self.stats.enhanced_auth_success += 1;
                self.register(conn, connect);
            }
        }
    }

    /// An AUTH packet after CONNACK: re-authentication (4.12.1).
    fn on_reauth(&mut self, conn: Key, auth: Auth) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let (username, peer) = (c.username.clone(), c.peer);
        let Some(a) = c
            .auth
            .as_mut()
            .filter(|a| auth.properties.authentication_method.as_deref() == Some(&*a.method))
        else {
            // No method at CONNECT, or another one now.
            self.disconnect(conn, ReasonCode::PROTOCOL_ERROR);
            return;
        };
        let data = auth.properties.authentication_data.as_deref();
        let step = match (auth.reason_code, &mut a.reauth) {
            (ReasonCode::RE_AUTHENTICATE, reauth) => {
                let client = AuthClient {
                    client_id: "",
                    username: username.as_deref(),
                    peer,
                };
                let begun = self
                    .settings
                    .enhanced_auth
                    .as_ref()
                    .and_then(|h| h.begin(&a.method, client));
                let Some(mut exchange) = begun else {
                    self.disconnect(conn, ReasonCode::BAD_AUTHENTICATION_METHOD);
                    return;
                };
                let step = exchange.step(data);
                *reauth = Some(exchange);
                step
            }
            (ReasonCode::CONTINUE_AUTHENTICATION, Some(exchange)) => exchange.step(data),
            _ => {
                self.disconnect(conn, ReasonCode::PROTOCOL_ERROR);
                return;
            }
        };
        let method = Some(a.method.clone());
        if !matches!(step, AuthStep::Continue(_)) {
            a.reauth = None;
        }
        match step {
            AuthStep::Continue(challenge) => {
                self.send_auth(
                    conn,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    method,
                    Some(challenge),
                );
            }
            AuthStep::Success(data) => {
                self.stats.enhanced_auth_success += 1;
                self.send_auth(conn, ReasonCode::SUCCESS, method, data);
            }
            AuthStep::Fail(rc) => self.disconnect(conn, rc),
        }
    }

    fn send_auth(
        &mut self,
        conn: Key,
        reason_code: ReasonCode,
        method: Option<MqttStr>,
        data: Option<Bytes>,
    ) {
        let mut auth = Auth {
            reason_code,
            ..Auth::default()
        };
        auth.properties.authentication_method = method;
        auth.properties.authentication_data = data;
        self.send(conn, &Packet::Auth(auth));
    }

    /// The CONNECT is accepted (authenticated, if it asked to be): register the client id
    /// with its owner shard, which answers with the session.
    fn register(&mut self, conn: Key, mut connect: Box<Connect>) {
        let v = connect.protocol;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let empty = connect.client_id.is_empty();
        // Strings kept for the life of a session are copied out of the read buffer: a slice
        // would pin the whole buffer it was read into.
        connect.client_id = owned(&connect.client_id);
        if empty {
            self.client_seq += 1;
            connect.client_id = format!("auto-{}-{}", self.id, self.client_seq).into();
            c.assigned_id = true;
        }
        let keep_alive = match (v, self.settings.server_keepalive) {
            (ProtocolVersion::V5, Some(server)) => server,
            _ => connect.keep_alive,
        };
        c.keep_alive =
            Duration::from_secs_f64(f64::from(keep_alive) * self.settings.keepalive_multiplier);
        c.username = connect.username.as_ref().map(owned);
        c.problem_information = connect.properties.request_problem_information != Some(false);
        c.out_aliases = match (v, connect.properties.topic_alias_maximum) {
            (ProtocolVersion::V5, Some(max)) if max > 0 && self.settings.send_topic_aliases => {
                Some(Box::new(crate::alias::OutAliases::new(max)))
            }
            _ => None,
        };
        c.client_max_packet = connect
            .properties
            .maximum_packet_size
            .unwrap_or(net::mqtt::MAX_PACKET_SIZE);
        let owner = owner_of(&connect.client_id, self.shards);
        let msg = RegistryMsg::Register {
            client_id: connect.client_id.clone(),
            shard: self.id,
            conn: conn.to_u64(),
            clean_start: connect.clean_start,
        };
        c.state = ConnState::Registering(connect);
        self.send_shard(owner, ShardMsg::Registry(Box::new(msg)));
    }

    /// The registry let the connection go ahead: install the session and send CONNACK.
    fn on_proceed(
        &mut self,
        now: Instant,
        from: ShardId,
        conn: Key,
        state: Option<Box<SessionState>>,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            // Connections stay until their registration is answered; nothing to do.
            return;
        };
        let ConnState::Registering(connect) = std::mem::replace(&mut c.state, ConnState::Closing)
        else {
            return;
        };
        let v = connect.protocol;
        let session_present = state.is_some() && !connect.clean_start;
        let mut session = match state {
            Some(s) if !connect.clean_start => {
                Session::from_state(connect.client_id.clone(), conn.to_u64(), v, *s)
            }
            _ => Session::new(connect.client_id.clone(), conn.to_u64(), v),
        };
        session.expiry_interval = match v {
            ProtocolVersion::V5 => Duration::from_secs(u64::from(
                connect.properties.session_expiry_interval.unwrap_or(0),
            )),
            _ if connect.clean_start => Duration::ZERO,
            _ => self.settings.session_expiry_interval,
        };
        session.window = connect
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(self.settings.max_inflight)
            .max(1);
        session.conn = Some(conn);
        session.connected_at = wall_ms(self.clock, now);
        session.disconnected_at = None;
        session.last_conn = None;
        c.clean_start = connect.clean_start;
        // A new connection replaces the will, and cancels a delayed one (3.1.2.5).
        session.will_at = None;
        let will_topic = connect.will.as_ref().and_then(|w| {
            let client = crate::rewrite::Client {
                client_id: &connect.client_id,
                username: c.username.as_deref(),
            };
            self.settings.rewrite.publish(&w.topic, client)
        });
        session.will = connect.will.as_ref().map(|w| {
            let topic = will_topic.map_or_else(|| w.topic.clone(), MqttStr::from);
            let mut publish = Publish::new(topic, w.payload.clone());
            publish.qos = w.qos;
            publish.retain = w.retain;
            let (wp, pp) = (&w.properties, &mut publish.properties);
            pp.payload_format_indicator = wp.payload_format_indicator;
            pp.message_expiry_interval = wp.message_expiry_interval;
            pp.content_type = wp.content_type.clone();
            pp.response_topic = wp.response_topic.clone();
            pp.correlation_data = wp.correlation_data.clone();
            pp.user_properties = wp.user_properties.clone();
            let delay = Duration::from_secs(u64::from(wp.will_delay_interval.unwrap_or(0)));
            // Kept for the session's life: copied out of the read buffer.
            Box::new(Will {
                publish: detach(publish),
                delay,
            })
        });
        let resubscribe: Vec<(MqttStr, SubEntry)> = session
            .subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), *e))
            .collect();
        let sid = self.sessions.insert(session);
        self.by_client.insert(connect.client_id.clone(), sid);
        for (filter, entry) in resubscribe {
            if split_share(&filter).is_some() {
                self.announce_shared(sid, &filter, Some(entry));
            } else {
                self.add_subscription(sid, &filter, entry);
            }
        }
        self.persist_session(now, sid);
        if session_present {
            // The session moved here: fence so the old shard can retire its ghost.
            if let Some(s) = self.sessions.get_mut(sid) {
                s.dedup = Some(HashSet::new());
            }
            self.start_fence(FenceDone::Release {
                old: from,
                token: conn.to_u64(),
            });
        }
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.state = ConnState::Connected;
        c.session = Some(sid);
        if c.socket_closed {
            // The client left while registering: the session stays (or ends) as if it had
            // disconnected right after CONNACK.
            self.detach(now, conn);
            self.conns.remove(conn);
            self.complete_pending_takeover(now, conn, &connect.client_id);
            return;
        }
        let keep_alive = c.keep_alive;
        let assigned = c.assigned_id;
        self.stats.connections_established += 1;

        let mut ack = ConnAck {
            session_present,
            ..ConnAck::default()
        };
        if v == ProtocolVersion::V5 {
            let s = &self.settings;
            let p = &mut ack.properties;
            if assigned {
                p.assigned_client_identifier = Some(connect.client_id.clone());
            }
            if let Some(a) = self.conns.get_mut(conn).and_then(|c| c.auth.as_mut()) {
                p.authentication_method = Some(a.method.clone());
                p.authentication_data = a.data.take();
            }
            p.receive_maximum = Some(s.max_awaiting_rel.clamp(1, 65535) as u16);
            p.maximum_packet_size = Some(s.max_packet_size);
            p.topic_alias_maximum = Some(s.max_topic_alias);
            if s.max_qos_allowed != QoS::ExactlyOnce {
                p.maximum_qos = Some(s.max_qos_allowed);
            }
            if !s.retain_available {
                p.retain_available = Some(false);
            }
            if !s.wildcard_subscription {
                p.wildcard_subscription_available = Some(false);
            }
            if !s.subscription_identifiers {
                p.subscription_identifiers_available = Some(false);
            }
            if connect.properties.request_response_information == Some(true)
                && !s.response_information.is_empty()
            {
                p.response_information = Some(s.response_information.clone().into());
            }
            if !s.shared_subscription {
                p.shared_subscription_available = Some(false);
            }
            p.server_keep_alive = s.server_keepalive;
        }
        if !keep_alive.is_zero() {
            self.arm(now + keep_alive, Timer::KeepAlive(conn));
        }
        self.send(conn, &Packet::ConnAck(ack));
        self.events.push_back(Event::Resume(conn));
        if self.settings.log_connections {
            let peer = self.conns.get(conn).map(|c| c.peer);
            let line = format!(
                "client connected: clientid={} address={} protocol={} keepalive={} clean_start={} session_present={}",
                connect.client_id,
                peer.map_or_else(String::new, |p| p.to_string()),
                v.level(),
                connect.keep_alive,
                connect.clean_start,
                session_present
            );
            self.log_line(line);
        }
        if !self.settings.auto_subscribe.is_empty() {
            self.auto_subscribe(conn, sid);
        }
        if self.settings.sys_client_events.0 {
            let c = self.conns.get(conn);
            let payload = format!(
                "{{\"clientid\":{},\"username\":{},\"ipaddress\":{},\"proto_ver\":{},\"keepalive\":{},\"clean_start\":{},\"connected_at\":{}}}",
                json_str(&connect.client_id),
                c.and_then(|c| c.username.as_ref())
                    .map_or("null".to_owned(), |u| json_str(u)),
                json_str(&c.map(|c| c.peer.ip().to_string()).unwrap_or_default()),
                v.level(),
                connect.keep_alive,
                connect.clean_start,
                self.wall_ms(now),
            );
            let path = format!("clients/{}/connected", connect.client_id);
            self.publish_sys(now, &path, payload, false);
        }
        self.resume(now, sid);
        self.complete_pending_takeover(now, conn, &connect.client_id);
    }

    /// After CONNECT: a session with a non-zero expiry is written to the log (its header, or
    /// all of it when it came from another shard or was not durable); one with a zero expiry
    /// leaves this shard's log.
    fn persist_session(&mut self, now: Instant, sid: Key) {
        let unix_ms = self.wall_ms(now);
        let me = self.id;
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.expiry_interval.is_zero() {
            // A copy on another shard ends when its ghost retires.
            if let Some(d) = s.durable.take()
                && d.shard == me
            {
                p.end(d.sid, durable_deliveries(s).into_iter());
            }
            for q in s.mqueue.iter_mut() {
                q.seq = 0;
            }
            for i in s.inflight.iter_mut() {
                i.delivery.seq = 0;
            }
            return;
        }
        match s.durable {
            Some(d) if d.shard == me => {
                s.header_dirty = false;
                p.header(s, now, unix_ms);
            }
            previous => {
                s.durable = Some(p.identity(previous.as_ref()));
                p.whole(s, now, unix_ms);
            }
        }
    }

    fn complete_pending_takeover(&mut self, now: Instant, conn: Key, client_id: &MqttStr) {
        let Some((new_shard, new_conn, want)) = self.pending_takeover.remove(&conn.to_u64()) else {
            return;
        };
        let state = match self.by_client.get(client_id).copied() {
            Some(sid) => self.hand_over(now, sid, want, new_shard, new_conn),
            None => None,
        };
        self.send_shard(
            new_shard,
            ShardMsg::Registry(Box::new(RegistryMsg::Proceed {
                conn: new_conn,
                session: state,
            })),
        );
    }

    fn on_publish(&mut self, now: Instant, conn: Key, sid: Key, mut p: Publish) {
        self.stats.messages_received += 1;
        self.stats.messages_received_by_qos[p.qos as usize] += 1;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let v = c.version;
        if v == ProtocolVersion::V5 {
            if let Some(alias) = p.properties.topic_alias {
                if alias > self.settings.max_topic_alias {
                    self.disconnect(conn, ReasonCode::TOPIC_ALIAS_INVALID);
                    return;
                }
                if p.topic.is_empty() {
                    match c.aliases.get(&alias) {
                        Some(t) => p.topic = t.clone(),
                        None => {
                            self.disconnect(conn, ReasonCode::PROTOCOL_ERROR);
                            return;
                        }
                    }
                } else {
                    c.aliases.insert(alias, owned(&p.topic));
                }
            }
        }
        if !self.settings.rewrite.publish_is_empty()
            && let Some(topic) = self.rewrite_publish(conn, sid, &p.topic)
        {
            self.stats.topics_rewritten += 1;
            p.topic = topic.into();
        }
        if p.qos > self.settings.max_qos_allowed {
            self.disconnect(conn, ReasonCode::QOS_NOT_SUPPORTED);
            return;
        }
        if p.retain && !self.settings.retain_available {
            self.disconnect(conn, ReasonCode::RETAIN_NOT_SUPPORTED);
            return;
        }
        if p.topic.split('/').count() > self.settings.max_topic_levels {
            self.disconnect(conn, ReasonCode::TOPIC_NAME_INVALID);
            return;
        }
        let packet_id = p.packet_id;
        let qos = p.qos;
        if qos == QoS::ExactlyOnce {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            if s.awaiting_rel.contains_key(&packet_id) {
                // A retransmission of a message already routed (4.3.3 method A): answered
                // in order, after the first one.
                let lane = self.conns.get(conn).map_or(0, |c| c.lane);
                let held = Held::Ack {
                    conn,
                    lane,
                    packet_id,
                    reason: ReasonCode::SUCCESS,
                    rec: true,
                };
                self.after_log(now, held);
                return;
            }
            if s.awaiting_rel.len() >= self.settings.max_awaiting_rel {
                self.stats.dropped_awaiting_rel_full += 1;
                self.disconnect(conn, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                return;
            }
            s.awaiting_rel.insert(packet_id, now);
            if let Some(p) = self.persist.as_mut() {
                p.rx_qos2(s, packet_id, false);
            }
            if !s.await_rel_armed {
                s.await_rel_armed = true;
                self.arm(now + self.settings.await_rel_timeout, Timer::AwaitRel(sid));
            }
        }
        if self.settings.delayed_enable
            && let Some((delay, topic)) = parse_delayed(&p.topic)
        {
            // EMQX's delayed publish: held here, published `delay` from now.
            let max = self.settings.max_delayed_messages;
            let reason = if max > 0 && self.delayed.len() >= max {
                self.stats.delayed_dropped_full += 1;
                ReasonCode::QUOTA_EXCEEDED
            } else {
                p.topic = topic;
                self.next_delayed += 1;
                // Unique across shards and restarts (the log keys delayed publishes by it).
                let id = (u64::from(self.id) << 48) | (self.next_delayed & ((1 << 48) - 1));
                let at = now + delay;
                if self.delayed.first_key_value().is_none_or(|(k, _)| at < k.0) {
                    self.arm(at, Timer::Delayed);
                }
                let p = detach(p);
                let unix_ms = self.wall_ms(now);
                if let Some(log) = self.persist.as_mut() {
                    log.delayed(id, Some((&p, at)), now, unix_ms, false);
                }
                self.delayed.insert((at, id), (sid, p));
                self.stats.delayed_stored += 1;
                ReasonCode::SUCCESS
            };
            let reason = if v == ProtocolVersion::V5 {
                reason
            } else {
                ReasonCode::SUCCESS
            };
            if qos != QoS::AtMostOnce {
                // Once the delayed publish is on disk.
                let held = Held::Ack {
                    conn,
                    lane: self.conns.get(conn).map_or(0, |c| c.lane),
                    packet_id,
                    reason,
                    rec: qos == QoS::ExactlyOnce,
                };
                self.after_log(now, held);
            }
            return;
        }
        let lane = self.conns.get(conn).map_or(0, |c| c.lane);
        let stored_ack = (qos != QoS::AtMostOnce).then_some(StoredAck {
            conn: conn.to_u64(),
            lane,
            packet_id,
            qos2: qos == QoS::ExactlyOnce,
            reason: if v == ProtocolVersion::V5 {
                ReasonCode::NO_MATCHING_SUBSCRIBERS
            } else {
                ReasonCode::SUCCESS
            },
        });
        let (matched, deferred) = self.publish_message_acked(now, sid, p, stored_ack);
        if !matched {
            self.stats.dropped_no_subscribers += 1;
        }
        if deferred {
            // Acknowledged when the retained store has it (RetainMsg::Stored).
            return;
        }
        let reason = if matched || v != ProtocolVersion::V5 {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        };
        if qos == QoS::AtMostOnce {
            return;
        }
        // Acknowledged once what it was queued as, for durable sessions here, is on disk.
        let held = Held::Ack {
            conn,
            lane,
            packet_id,
            reason,
            rec: qos == QoS::ExactlyOnce,
        };
        self.after_log(now, held);
    }

    /// The client a topic of connection `conn` (session `sid`) is rewritten for.
    fn rewrite_client(&self, conn: Key, sid: Key) -> Option<crate::rewrite::Client<'_>> {
        let client_id = &self.sessions.get(sid)?.client_id;
        Some(crate::rewrite::Client {
            client_id,
            username: self.conns.get(conn).and_then(|c| c.username.as_deref()),
        })
    }

    /// The topic `rewrite` rules send a PUBLISH to `topic` to instead, if any.
    fn rewrite_publish(&self, conn: Key, sid: Key, topic: &str) -> Option<String> {
        let client = self.rewrite_client(conn, sid)?;
        self.settings.rewrite.publish(topic, client)
    }

    /// The filter `rewrite` rules turn a SUBSCRIBE or UNSUBSCRIBE of `filter` into, if any.
    fn rewrite_filter(&self, conn: Key, sid: Key, filter: &str) -> Option<String> {
        if self.settings.rewrite.subscribe_is_empty() {
            return None;
        }
        let client = self.rewrite_client(conn, sid)?;
        self.settings.rewrite.filter(filter, client)
    }

    /// Accepts a message from session `sid` (a PUBLISH or its will) and routes it; returns
    /// whether any subscription matched.
    fn publish_message(&mut self, now: Instant, sid: Key, p: Publish) -> bool {
        self.publish_message_acked(now, sid, p, None).0
    }

    /// [`Shard::publish_message`]; for a retained message with `ack`, the acknowledgement is
    /// left to the store's `Stored` answer and the second value is `true`.
    fn publish_message_acked(
        &mut self,
        now: Instant,
        sid: Key,
        p: Publish,
        ack: Option<StoredAck>,
    ) -> (bool, bool) {
        let origin = Origin {
            shard: self.id,
            session: sid,
        };
        self.next_message += 1;
        let id = self.last_message_id();
        match Message::new(id, p, origin, now) {
            Ok(msg) => {
                let retain = msg.retain && self.settings.retain_available;
                let owner = owner_of(&msg.topic, self.shards);
                let stored = retain.then(|| msg.clone());
                let matched = self.route(now, msg);
                let mut deferred = false;
                if let Some(msg) = stored {
                    // `reason` holds the answer for "nothing matched"; a match means success.
                    let ack = ack.map(|mut a| {
                        if matched {
                            a.reason = ReasonCode::SUCCESS;
                        }
                        a
                    });
                    deferred = ack.is_some();
                    self.send_shard(owner, ShardMsg::Retain(RetainMsg::Store(msg, ack)));
                }
                (matched, deferred)
            }
            Err(_) => {
                // A received packet always re-encodes; count rather than panic.
                self.stats.dropped_other += 1;
                (false, false)
            }
        }
    }

    /// The id of the message accepted last: the shard in the top 16 bits, its sequence below.
    fn last_message_id(&self) -> u64 {
        (u64::from(self.id) << 48) | (self.next_message & ((1 << 48) - 1))
    }

    /// Publishes a session's will (3.1.2.5).
    fn publish_will(&mut self, now: Instant, sid: Key, will: Box<Will>) {
        self.stats.wills_published += 1;
        if !self.publish_message(now, sid, will.publish) {
            self.stats.dropped_no_subscribers += 1;
        }
    }

    /// Sends `msg` to every shard with a matching subscription; returns whether any matched.
    fn route(&mut self, now: Instant, msg: Arc<Message>) -> bool {
        let shared = !self.groups.is_empty() && self.route_shared(now, &msg);
        self.route_plain(now, msg) || shared
    }

    /// Sends a message to one member of each shared subscription group whose filter matches.
    fn route_shared(&mut self, now: Instant, msg: &Arc<Message>) -> bool {
        // A scratch vector kept between calls: no allocation per message.
        let mut keys = std::mem::take(&mut self.group_scratch);
        keys.clear();
        self.group_index
            .for_each_match(&msg.topic, |k, _| keys.push(*k));
        let mut any = false;
        for &key in &keys {
            any |= self.dispatch_shared(now, key, msg, None);
        }
        self.group_scratch = keys;
        any
    }

    /// Picks a member of group `key` (not `exclude`) with the configured strategy and sends it
    /// the message. Returns whether there was a member to send it to.
    fn dispatch_shared(
        &mut self,
        now: Instant,
        key: u64,
        msg: &Arc<Message>,
        exclude: Option<(&str, u64)>,
    ) -> bool {
        let strategy = self.settings.shared_strategy;
        let me = self.id;
        let roll = self.next_random();
        let Some(g) = self.groups.get_mut(&key) else {
            return false;
        };
        let eligible =
            |m: &Member| exclude.is_none_or(|(c, t)| !(m.client_id == c && m.token == t));
        let n = g.members.len();
        if n == 0 || !g.members.iter().any(&eligible) {
            return false;
        }
        let start = match strategy {
            SharedStrategy::Random => roll as usize % n,
            SharedStrategy::RoundRobin | SharedStrategy::RoundRobinPerGroup => {
                g.next = (g.next + 1) % n;
                g.next
            }
            SharedStrategy::Sticky => match g.sticky {
                Some(i) if i < n => i,
                _ => roll as usize % n,
            },
            SharedStrategy::Local => g
                .members
                .iter()
                .position(|m| m.shard == me && eligible(m))
                .unwrap_or(roll as usize % n),
            SharedStrategy::HashTopic => hash_str(&msg.topic) as usize % n,
            SharedStrategy::HashClientid => {
                (hash_u64(msg.origin.session.to_u64() ^ u64::from(msg.origin.shard))) as usize % n
            }
        };
        // The first eligible member from `start` on.
        let Some(i) = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| eligible(&g.members[i]))
        else {
            return false;
        };
        if strategy == SharedStrategy::Sticky {
            g.sticky = Some(i);
        }
        let m = g.members[i].clone();
        let mut q = match merge_delivery(msg, std::iter::once(&m.entry)) {
            Some(q) => q,
            None => return false,
        };
        q.shared = Some(key);
        if m.shard == self.id {
            match self.by_client.get(&m.client_id).copied() {
                Some(sid)
                    if self
                        .sessions
                        .get(sid)
                        .is_some_and(|s| s.reg_token == m.token) =>
                {
                    self.dispatch(now, sid, q);
                }
                _ => self.stats.dropped_other += 1,
            }
        } else {
            self.stats.messages_forwarded += 1;
            let fwd = Forward {
                client_id: m.client_id,
                token: m.token,
                delivery: q,
            };
            self.send_shard(m.shard, ShardMsg::Forward(Box::new(fwd)));
        }
        true
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: cheap, good enough to spread members.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn on_shared(&mut self, m: SharedMsg) {
        match m {
            SharedMsg::Join {
                group,
                filter,
                member,
            } => {
                let key = group_key(&group, &filter);
                let g = self.groups.entry(key).or_insert_with(|| Group {
                    members: Vec::new(),
                    next: 0,
                    sticky: None,
                });
                match g
                    .members
                    .iter_mut()
                    .find(|x| x.client_id == member.client_id && x.token == member.token)
                {
                    Some(x) => {
                        // Same member; its shard may have changed (a moved session).
                        let (was, is) = (x.shard == self.id, member.shard == self.id);
                        self.shared_local =
                            (self.shared_local + u64::from(is)).saturating_sub(u64::from(was));
                        *x = member;
                    }
                    None => {
                        self.shared_local += u64::from(member.shard == self.id);
                        g.members.push(member);
                    }
                }
                self.group_index.insert(&filter, key, ());
            }
            SharedMsg::Leave {
                group,
                filter,
                shard,
                client_id,
                token,
            } => {
                let key = group_key(&group, &filter);
                let Some(g) = self.groups.get_mut(&key) else {
                    return;
                };
                let before = g.members.len();
                g.members.retain(|m| {
                    !(m.shard == shard && m.client_id == client_id && m.token == token)
                });
                if shard == self.id {
                    let left = (before - g.members.len()) as u64;
                    self.shared_local = self.shared_local.saturating_sub(left);
                }
                g.sticky = None;
                if g.members.is_empty() {
                    self.groups.remove(&key);
                    self.group_index.remove(&filter, &key);
                }
            }
        }
    }

    /// Announces a join or leave of the shared subscription `full` (`$share/g/f` or
    /// `$queue/f`) of session `sid` to every shard.
    fn announce_shared(&mut self, sid: Key, full: &str, entry: Option<SubEntry>) {
        let Some((group, filter)) = split_share(full) else {
            return;
        };
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let (client_id, token) = (s.client_id.clone(), s.reg_token);
        let group: MqttStr = group.to_owned().into();
        let filter: MqttStr = filter.to_owned().into();
        for dest in 0..self.shards {
            let m = match entry {
                Some(entry) => SharedMsg::Join {
                    group: group.clone(),
                    filter: filter.clone(),
                    member: Member {
                        shard: self.id,
                        client_id: client_id.clone(),
                        token,
                        entry,
                    },
                },
                None => SharedMsg::Leave {
                    group: group.clone(),
                    filter: filter.clone(),
                    shard: self.id,
                    client_id: client_id.clone(),
                    token,
                },
            };
            self.send_shard(dest, ShardMsg::Shared(Box::new(m)));
        }
    }

    /// A session's connection is gone: it leaves its shared groups, and the shared deliveries
    /// it had not acknowledged go to other members (EMQX's redispatch).
    fn leave_shared(&mut self, now: Instant, sid: Key) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let shared: Vec<MqttStr> = s
            .subscriptions
            .keys()
            .filter(|f| split_share(f).is_some())
            .cloned()
            .collect();
        let mut pending: Vec<Queued> = Vec::new();
        let mut i = 0;
        while i < s.inflight.len() {
            if s.inflight[i].delivery.shared.is_some()
                && s.inflight[i].delivery.qos != QoS::AtMostOnce
            {
                if let Some(e) = s.inflight.remove(i) {
                    pending.push(e.delivery);
                }
            } else {
                i += 1;
            }
        }
        let (mut keep, moved): (VecDeque<Queued>, Vec<Queued>) = (VecDeque::new(), Vec::new());
        let mut moved = moved;
        for q in s.mqueue.drain(..) {
            if q.shared.is_some() && q.qos != QoS::AtMostOnce {
                moved.push(q);
            } else {
                keep.push_back(q);
            }
        }
        s.mqueue = keep;
        pending.extend(moved);
        // Redispatched to other members (their own deliveries, in their logs).
        if let Some(p) = self.persist.as_mut() {
            for q in &mut pending {
                p.done(s, q);
                q.seq = 0;
            }
        }
        let (client_id, token) = (s.client_id.clone(), s.reg_token);
        for f in &shared {
            self.announce_shared(sid, f, None);
        }
        for q in pending {
            let Some(key) = q.shared else { continue };
            self.stats.shared_redispatched += 1;
            if !self.dispatch_shared(now, key, &q.msg, Some((&client_id, token))) {
                // No other member: keep it for this session after all.
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.mqueue.push_back(q);
                }
            }
        }
    }

    /// Sends `msg` to every shard with a matching subscription; returns whether any matched.
    fn route_plain(&mut self, now: Instant, msg: Arc<Message>) -> bool {
        // A bitset of destination shards, kept between calls: no allocation per message.
        let mut mask = std::mem::take(&mut self.route_mask);
        mask.fill(0);
        let mut any = false;
        self.routes.for_each_match(&msg.topic, |shard, _| {
            let i = usize::from(*shard);
            if let Some(word) = mask.get_mut(i / 64) {
                *word |= 1 << (i % 64);
                any = true;
            }
        });
        for dest in 0..self.shards {
            let i = usize::from(dest);
            if !any || mask.get(i / 64).is_none_or(|w| w & (1 << (i % 64)) == 0) {
                continue;
            }
            if dest == self.id {
                self.deliver_local(now, &msg);
            } else {
                self.stats.messages_forwarded += 1;
                self.push_out(dest, ShardMsg::Publish(msg.clone()));
            }
        }
        self.route_mask = mask;
        any
    }

    /// Fans a message out to this shard's matching sessions: once per session, with the
    /// highest QoS and every subscription identifier of its matching subscriptions (3.3.4).
    /// The matches go through a scratch vector that keeps its capacity, so a delivery
    /// allocates nothing in the steady state.
    fn deliver_local(&mut self, now: Instant, msg: &Arc<Message>) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.subs
            .for_each_match(&msg.topic, |sid, e| scratch.push((*sid, *e)));
        scratch.sort_unstable_by_key(|(sid, _)| *sid);
        let mut rest = &scratch[..];
        while let Some(&(sid, _)) = rest.first() {
            let n = rest.iter().take_while(|(s, _)| *s == sid).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            // No Local ([MQTT-3.8.3-3]) applies per subscription.
            let own = msg.origin.shard == self.id && msg.origin.session == sid;
            let subs = group
                .iter()
                .map(|(_, e)| e)
                .filter(|e| !(own && e.options.no_local));
            if let Some(q) = merge_delivery(msg, subs) {
                self.dispatch(now, sid, q);
            }
        }
        self.scratch = scratch;
        if !self.ghosts.is_empty() {
            self.forward_to_ghosts(msg);
        }
    }

    /// Forwards a message matching the subscriptions of sessions that moved away to the shard
    /// they moved to.
    fn forward_to_ghosts(&mut self, msg: &Arc<Message>) {
        let mut matches: Vec<(u64, SubEntry)> = Vec::new();
        self.ghost_subs
            .for_each_match(&msg.topic, |t, e| matches.push((*t, *e)));
        matches.sort_unstable_by_key(|(t, _)| *t);
        let mut rest = &matches[..];
        while let Some(&(token, _)) = rest.first() {
            let n = rest.iter().take_while(|(t, _)| *t == token).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let Some(ghost) = self.ghosts.get(&token) else {
                continue;
            };
            let (dest, client_id) = (ghost.dest, ghost.client_id.clone());
            if let Some(q) = merge_delivery(msg, group.iter().map(|(_, e)| e)) {
                self.stats.messages_forwarded += 1;
                let fwd = Forward {
                    client_id,
                    token,
                    delivery: q,
                };
                self.send_shard(dest, ShardMsg::Forward(Box::new(fwd)));
            }
        }
    }

    fn on_forward(&mut self, now: Instant, f: Forward) {
        match self.by_client.get(&f.client_id).copied() {
            Some(sid)
                if self
                    .sessions
                    .get(sid)
                    .is_some_and(|s| s.reg_token == f.token) =>
            {
                self.dispatch(now, sid, f.delivery);
            }
            _ => {
                // The session ended (or moved on) meanwhile.
                self.stats.dropped_session_ended += u64::from(f.delivery.qos != QoS::AtMostOnce);
            }
        }
    }

    fn start_fence(&mut self, done: FenceDone) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.fences.insert(epoch, (self.shards, done));
        for dest in 0..self.shards {
            self.send_shard(dest, ShardMsg::Move(MoveMsg::Fence(epoch)));
        }
    }

    fn on_move(&mut self, now: Instant, from: ShardId, m: MoveMsg) {
        match m {
            MoveMsg::Fence(epoch) => {
                self.send_shard(from, ShardMsg::Move(MoveMsg::FenceAck(epoch)))
            }
            MoveMsg::FenceAck(epoch) => {
                let Some((left, _)) = self.fences.get_mut(&epoch) else {
                    return;
                };
                *left = left.saturating_sub(1);
                if *left > 0 {
                    return;
                }
                let Some((_, done)) = self.fences.remove(&epoch) else {
                    return;
                };
                match done {
                    FenceDone::Release { old, token } => {
                        // The old shard forgets its copy of the session on `Release`: ours
                        // must be on disk first.
                        let release = ShardMsg::Move(MoveMsg::Release { token });
                        self.after_log(now, Held::Ring(old, release));
                    }
                    FenceDone::SubAck {
                        conn,
                        lane,
                        ack,
                        retained,
                    } => {
                        if let Some(ack) = ack {
                            self.send_on(conn, lane, &Packet::SubAck(*ack));
                        }
                        if let Some(r) = retained {
                            self.query_retained(*r);
                        }
                    }
                    FenceDone::Retire { token } => {
                        let Some(g) = self.ghosts.remove(&token) else {
                            return;
                        };
                        if let (Some((sid, deliveries)), Some(p)) =
                            (g.durable_end, self.persist.as_mut())
                        {
                            p.end(sid, deliveries.into_iter());
                        }
                        for f in &g.filters {
                            self.ghost_subs.remove(f, &token);
                        }
                        let done = MoveMsg::Done {
                            client_id: g.client_id,
                            token,
                        };
                        self.send_shard(g.dest, ShardMsg::Move(done));
                    }
                }
            }
            MoveMsg::Release { token } => {
                let Some(g) = self.ghosts.get_mut(&token) else {
                    return;
                };
                if g.released {
                    return;
                }
                g.released = true;
                let filters = g.filters.clone();
                for f in &filters {
                    self.route_ref(f, false);
                }
                self.start_fence(FenceDone::Retire { token });
            }
            MoveMsg::Done { client_id, token } => {
                if let Some(sid) = self.by_client.get(&client_id).copied()
                    && let Some(s) = self.sessions.get_mut(sid)
                    && s.reg_token == token
                {
                    s.dedup = None;
                }
            }
        }
    }

    /// Sends a delivery now if the session is online and the window allows, else queues it.
    fn dispatch(&mut self, now: Instant, sid: Key, q: Queued) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(seen) = &mut s.dedup {
            if !seen.insert(q.msg.id) {
                // Arrived both directly and through the shard the session left.
                return;
            }
            if seen.len() >= MAX_MOVE_DEDUP {
                // A move that takes this long has a stuck fence; stop remembering rather than
                // grow without bound (duplicates become possible, losses do not).
                s.dedup = None;
                self.stats.move_dedup_overflows += 1;
            }
        }
        let mut q = q;
        if q.qos != QoS::AtMostOnce
            && s.durable.is_some()
            && let Some(p) = self.persist.as_mut()
        {
            p.enqueue(s, &mut q, now, wall_ms(self.clock, now));
        }
        let online = s.conn.filter(|c| {
            self.conns
                .get(*c)
                .is_some_and(|c| matches!(c.state, ConnState::Connected))
        });
        match (online, q.qos) {
            (Some(conn), QoS::AtMostOnce) => {
                let over = self
                    .conns
                    .get(conn)
                    .is_some_and(|c| c.out.len() > self.settings.max_write_buffer);
                if over {
                    self.stats.dropped_qos0_write_buffer_full += 1;
                } else {
                    self.write_publish(now, conn, &q, 0, false);
                }
            }
            (Some(conn), _) if s.mqueue.is_empty() => match s.next_packet_id() {
                Some(pid) => self.send_inflight(now, sid, conn, pid, q),
                None => self.enqueue(sid, q),
            },
            (None, QoS::AtMostOnce) if !self.settings.mqueue_store_qos0 => {
                self.stats.dropped_qos0_offline += 1;
            }
            _ => self.enqueue(sid, q),
        }
    }

    fn enqueue(&mut self, sid: Key, q: Queued) {
        let max = self.settings.max_mqueue_len;
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(dropped) = s.enqueue(q, max) {
            if let Some(p) = self.persist.as_mut() {
                p.done(s, &dropped);
            }
            self.stats.dropped_queue_full += 1;
            if dropped.qos != QoS::AtMostOnce {
                self.stats.dropped_queue_full_qos12 += 1;
            }
        }
    }

    /// Encodes one PUBLISH for a connection.
    fn write_publish(
        &mut self,
        now: Instant,
        conn: Key,
        q: &Queued,
        packet_id: u16,
        dup: bool,
    ) -> bool {
        let Some(c) = self.conns.get_mut(conn) else {
            return true;
        };
        let Ok(expiry) = q.msg.remaining_expiry(now) else {
            self.stats.dropped_expired += 1;
            return false;
        };
        let enc = q.msg.encoder(c.version);
        let mut d = Delivery {
            qos: q.qos,
            dup,
            retain: q.retain,
            packet_id,
            topic_alias: None,
            omit_topic: false,
            subscription_ids: q.sub_ids.as_slice(),
            message_expiry_interval: expiry,
        };
        // Outgoing topic alias: reuse a known one (empty topic), or define one together with
        // the topic if the packet fits either way (a dropped packet must not define it).
        let mut assign = false;
        if let Some(aliases) = c.out_aliases.as_mut() {
            match aliases.lookup(&q.msg.topic) {
                Some(a) => {
                    d.topic_alias = Some(a);
                    d.omit_topic = true;
                }
                None => {
                    d.topic_alias = Some(1);
                    assign = true;
                }
            }
        }
        match enc.encoded_len(&d) {
            Ok(n) if n <= c.client_max_packet as usize => {
                if assign && let Some(aliases) = c.out_aliases.as_mut() {
                    d.topic_alias = Some(aliases.assign(&q.msg.topic));
                }
                let before = c.out.buf().len();
                if enc.encode_head(&d, c.out.buf()).is_ok() {
                    let head = c.out.buf().len() - before;
                    c.out.wrote(head);
                    c.out.push_payload(enc.payload());
                    if let Some(lanes) = c.lanes.as_deref_mut() {
                        lanes.record(q.lane, head + enc.payload().len());
                    }
                    self.stats.messages_sent += 1;
                    self.stats.messages_sent_by_qos[q.qos as usize] += 1;
                    self.stats.packets_sent += 1;
                    self.stats.packets_sent_by_type[net::mqtt::PacketType::Publish as usize] += 1;
                    if !dup {
                        self.stats.messages_delivered += 1;
                        if let Some(at) = q.msg.received_at {
                            self.delivery_latency
                                .record(now.saturating_duration_since(at));
                        }
                    }
                    self.want_write(conn);
                }
                true
            }
            _ => {
                // 3.1.2.11.4: a packet over the client's Maximum Packet Size is discarded.
                self.stats.dropped_too_large += 1;
                false
            }
        }
    }

    fn on_puback(&mut self, now: Instant, sid: Key, packet_id: u16) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(pos) = s.inflight_position(packet_id)
            && s.inflight[pos].stage == Stage::Published
            && s.inflight[pos].delivery.qos == QoS::AtLeastOnce
        {
            if let Some(i) = s.inflight.remove(pos)
                && let Some(p) = self.persist.as_mut()
            {
                p.done(s, &i.delivery);
            }
            self.stats.messages_acked += 1;
            self.drain_queue(now, sid);
        }
    }

    fn on_pubrec(&mut self, now: Instant, conn: Key, sid: Key, ack: Ack) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(pos) = s
            .inflight_position(ack.packet_id)
            .filter(|&p| s.inflight[p].delivery.qos == QoS::ExactlyOnce)
        else {
            if self
                .conns
                .get(conn)
                .is_some_and(|c| c.version == ProtocolVersion::V5)
            {
                let rel = Ack {
                    packet_id: ack.packet_id,
                    reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                    ..Ack::default()
                };
                self.send(conn, &Packet::PubRel(rel));
            }
            return;
        };
        if !ack.reason_code.is_success() {
            // 4.3.3: a failure PUBREC ends the flow.
            if let Some(i) = s.inflight.remove(pos)
                && let Some(p) = self.persist.as_mut()
            {
                p.done(s, &i.delivery);
            }
            self.drain_queue(now, sid);
            return;
        }
        if let Some(p) = self.persist.as_mut() {
            p.released(s, &s.inflight[pos].delivery);
        }
        s.inflight[pos].stage = Stage::Released;
        s.inflight[pos].sent_at = now;
        self.send(conn, &Packet::PubRel(Ack::new(ack.packet_id)));
    }

    fn on_pubrel(&mut self, conn: Key, sid: Key, packet_id: u16) {
        let known = self
            .sessions
            .get_mut(sid)
            .is_some_and(|s| s.awaiting_rel.remove(&packet_id).is_some());
        if known && let (Some(p), Some(s)) = (self.persist.as_mut(), self.sessions.get(sid)) {
            p.rx_qos2(s, packet_id, true);
        }
        let v5 = self
            .conns
            .get(conn)
            .is_some_and(|c| c.version == ProtocolVersion::V5);
        let reason = if known || !v5 {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let comp = Ack {
            packet_id,
            reason_code: reason,
            ..Ack::default()
        };
        self.send(conn, &Packet::PubComp(comp));
    }

    fn on_pubcomp(&mut self, now: Instant, sid: Key, packet_id: u16) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(pos) = s.inflight_position(packet_id)
            && s.inflight[pos].stage == Stage::Released
        {
            if let Some(i) = s.inflight.remove(pos)
                && let Some(p) = self.persist.as_mut()
            {
                p.done(s, &i.delivery);
            }
            self.stats.messages_acked += 1;
            self.drain_queue(now, sid);
        }
    }

    /// Moves queued messages into the inflight window while it has room.
    fn drain_queue(&mut self, now: Instant, sid: Key) {
        loop {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let Some(conn) = s.conn else { return };
            if !self
                .conns
                .get(conn)
                .is_some_and(|c| matches!(c.state, ConnState::Connected))
            {
                return;
            }
            let Some(front) = s.mqueue.front() else {
                return;
            };
            if front.qos == QoS::AtMostOnce {
                let Some(q) = s.mqueue.pop_front() else {
                    return;
                };
                let _ = self.write_publish(now, conn, &q, 0, false);
                continue;
            }
            let Some(pid) = s.next_packet_id() else {
                return;
            };
            let Some(q) = s.mqueue.pop_front() else {
                return;
            };
            self.send_inflight(now, sid, conn, pid, q);
        }
    }

    /// Sends `q` as packet `pid` and keeps it in the inflight window until acknowledged,
    /// unless it was dropped on the way (expired, or over the client's Maximum Packet Size).
    fn send_inflight(&mut self, now: Instant, sid: Key, conn: Key, pid: u16, q: Queued) {
        let sent = self.write_publish(now, conn, &q, pid, false);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Some(p) = self.persist.as_mut() {
            if sent {
                p.sent(s, &q, pid);
            } else {
                p.done(s, &q);
            }
        }
        if !sent {
            return;
        }
        s.inflight.push_back(Inflight {
            packet_id: pid,
            delivery: q,
            stage: Stage::Published,
            sent_at: now,
        });
        if !s.retry_armed {
            s.retry_armed = true;
            self.arm(now + self.settings.retry_interval, Timer::Retry(sid));
        }
    }

    /// After CONNACK on a resumed session: retransmit the inflight window (PUBLISH with DUP,
    /// PUBREL for released ones; 4.4), then drain the queue.
    fn resume(&mut self, now: Instant, sid: Key) {
        self.retransmit(now, sid, true);
        let retry = self.settings.retry_interval;
        let rel = self.settings.await_rel_timeout;
        if let Some(s) = self.sessions.get_mut(sid) {
            let arm_retry = !s.inflight.is_empty() && !s.retry_armed;
            s.retry_armed |= arm_retry;
            let arm_rel = s
                .awaiting_rel
                .values()
                .min()
                .copied()
                .filter(|_| !s.await_rel_armed);
            s.await_rel_armed |= arm_rel.is_some();
            if arm_retry {
                self.arm(now + retry, Timer::Retry(sid));
            }
            if let Some(oldest) = arm_rel {
                self.arm(oldest + rel, Timer::AwaitRel(sid));
            }
        }
        self.drain_queue(now, sid);
    }

    fn retransmit(&mut self, now: Instant, sid: Key, all: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(conn) = s.conn else { return };
        let due = now.checked_sub(self.settings.retry_interval);
        let mut resend: Vec<(u16, Stage, Queued)> = Vec::new();
        for i in s.inflight.iter_mut() {
            if all || due.is_some_and(|d| i.sent_at <= d) {
                i.sent_at = now;
                resend.push((i.packet_id, i.stage, i.delivery.clone()));
            }
        }
        for (pid, stage, q) in resend {
            match stage {
                Stage::Published => {
                    self.write_publish(now, conn, &q, pid, true);
                }
                Stage::Released => self.send(conn, &Packet::PubRel(Ack::new(pid))),
            }
            self.stats.messages_retransmitted += 1;
        }
    }

    /// Handles a SUBSCRIBE; `reply` is false for the broker's own (auto-subscribe), which gets
    /// no SUBACK.
    ///
    /// Returns the first filter's reason code, or `None` when the answer waits for an
    /// exclusive subscription's lock.
    fn on_subscribe(
        &mut self,
        conn: Key,
        sid: Key,
        sub: Subscribe,
        reply: bool,
    ) -> Option<ReasonCode> {
        let lane = self.conns.get(conn).map_or(0, |c| c.lane);
        let mut announced = false;
        let mut retained_for: Vec<(MqttStr, SubEntry)> = Vec::new();
        let mut exclusive: Vec<(usize, MqttStr, SubEntry)> = Vec::new();
        let sub_id = sub.properties.subscription_identifier;
        let mut codes = Vec::with_capacity(sub.filters.len());
        for mut s in sub.filters {
            if topic::validate_topic_filter(&s.filter).is_ok()
                && let Some(filter) = self.rewrite_filter(conn, sid, &s.filter)
            {
                self.stats.topics_rewritten += 1;
                s.filter = filter.into();
            }
            let rc = if topic::validate_topic_filter(&s.filter).is_err() {
                ReasonCode::TOPIC_FILTER_INVALID
            } else if sub_id.is_some() && !self.settings.subscription_identifiers {
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
            } else if split_share(&s.filter).is_some() && !self.settings.shared_subscription {
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if s.filter.starts_with("$queue/") && split_share(&s.filter).is_none() {
                ReasonCode::TOPIC_FILTER_INVALID
            } else if split_share(&s.filter).is_some() {
                let mut options = s.options;
                options.qos = options.qos.min(self.settings.max_qos_allowed);
                let entry = SubEntry {
                    options,
                    id: sub_id,
                    lane,
                };
                if let Some(sess) = self.sessions.get_mut(sid) {
                    sess.subscriptions.insert(owned(&s.filter), entry);
                }
                self.header_changed(sid);
                // Retained messages are not sent for shared subscriptions (4.8.2).
                self.announce_shared(sid, &s.filter, Some(entry));
                announced = true;
                self.stats.subscribes += 1;
                ReasonCode(options.qos as u8)
            } else if let Some(inner) =
                exclusive_inner(&s.filter, self.settings.exclusive_subscription)
            {
                if topic::validate_topic_filter(inner).is_err() {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    let mut options = s.options;
                    options.qos = options.qos.min(self.settings.max_qos_allowed);
                    exclusive.push((
                        codes.len(),
                        owned(&s.filter),
                        SubEntry {
                            options,
                            id: sub_id,
                            lane,
                        },
                    ));
                    // Filled in when the lock answers.
                    ReasonCode::QUOTA_EXCEEDED
                }
            } else if !self.settings.wildcard_subscription && topic::has_wildcard(&s.filter) {
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if s.filter.split('/').count() > self.settings.max_topic_levels {
                ReasonCode::TOPIC_FILTER_INVALID
            } else {
                let mut options = s.options;
                options.qos = options.qos.min(self.settings.max_qos_allowed);
                let entry = SubEntry {
                    options,
                    id: sub_id,
                    lane,
                };
                let filter = owned(&s.filter);
                let existed = self
                    .sessions
                    .get_mut(sid)
                    .is_some_and(|sess| sess.subscriptions.insert(filter.clone(), entry).is_some());
                self.header_changed(sid);
                // Retain Handling (3.8.3.1): 0 always, 1 only for a new subscription, 2 never.
                let wants_retained = match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
                if wants_retained && self.settings.retain_available {
                    retained_for.push((filter, entry));
                }
                announced |= self.add_subscription(sid, &s.filter, entry);
                self.stats.subscribes += 1;
                ReasonCode(options.qos as u8)
            };
            codes.push(rc);
        }
        let first = codes.first().copied();
        let ack = SubAck {
            packet_id: sub.packet_id,
            reason_codes: codes,
            ..SubAck::default()
        };
        if !exclusive.is_empty() {
            self.next_request += 1;
            let request = self.next_request;
            let client_id = self
                .sessions
                .get(sid)
                .map(|s| s.client_id.clone())
                .unwrap_or_default();
            for (index, full, _) in &exclusive {
                let inner = exclusive_inner(full, true).unwrap_or(full).to_owned();
                let owner = owner_of(&inner, self.shards);
                let lock = ExclusiveMsg::Lock {
                    filter: inner.into(),
                    client_id: client_id.clone(),
                    request,
                    index: *index,
                };
                self.send_shard(owner, ShardMsg::Exclusive(Box::new(lock)));
            }
            let waiting = exclusive.len();
            self.pending_subs.insert(
                request,
                PendingSub {
                    conn,
                    lane,
                    sid,
                    ack,
                    reply,
                    locks: exclusive,
                    waiting,
                    announced,
                },
            );
            return None;
        }
        let retained = match self.sessions.get(sid) {
            Some(s) if !retained_for.is_empty() => Some(Box::new(RetainWanted {
                client_id: s.client_id.clone(),
                token: s.reg_token,
                subs: retained_for,
            })),
            _ => None,
        };
        if announced && self.shards > 1 {
            // 3.8.4: messages published after SUBACK must match. Other shards learn the new
            // route over the rings; answer once every shard has it.
            self.start_fence(FenceDone::SubAck {
                conn,
                lane,
                ack: reply.then(|| Box::new(ack)),
                retained,
            });
        } else {
            if reply {
                self.send(conn, &Packet::SubAck(ack));
            }
            if let Some(r) = retained {
                self.query_retained(*r);
            }
        }
        first
    }

    /// Subscribes a client that just connected to the `auto_subscribe.topics` filters, as if
    /// it had sent the SUBSCRIBE itself (rewrite rules, limits and retained messages apply),
    /// without a SUBACK.
    fn auto_subscribe(&mut self, conn: Key, sid: Key) {
        let (Some(c), Some(s)) = (self.conns.get(conn), self.sessions.get(sid)) else {
            return;
        };
        let client = crate::rewrite::Client {
            client_id: &s.client_id,
            username: c.username.as_deref(),
        };
        let filters: Vec<Subscription> = self
            .settings
            .auto_subscribe
            .iter()
            .filter_map(|a| {
                a.filter_for(client, c.peer).map(|f| Subscription {
                    filter: f.into(),
                    options: a.options,
                })
            })
            .collect();
        if filters.is_empty() {
            return;
        }
        self.stats.auto_subscribed += filters.len() as u64;
        let sub = Subscribe {
            packet_id: 0,
            properties: Default::default(),
            filters,
        };
        self.on_subscribe(conn, sid, sub, false);
    }

    // ---- exclusive subscriptions ---------------------------------------------------------------

    fn on_exclusive(&mut self, from: ShardId, m: ExclusiveMsg) {
        match m {
            ExclusiveMsg::Lock {
                filter,
                client_id,
                request,
                index,
            } => {
                let granted = match self.exclusive.get(filter.as_str()) {
                    Some(holder) => *holder == client_id,
                    None => {
                        self.exclusive.insert(filter.to_string(), client_id);
                        true
                    }
                };
                let reply = ExclusiveMsg::Reply {
                    request,
                    index,
                    granted,
                };
                self.send_shard(from, ShardMsg::Exclusive(Box::new(reply)));
            }
            ExclusiveMsg::Unlock { filter, client_id } => {
                if self
                    .exclusive
                    .get(filter.as_str())
                    .is_some_and(|h| *h == client_id)
                {
                    self.exclusive.remove(filter.as_str());
                }
            }
            ExclusiveMsg::Reply {
                request,
                index,
                granted,
            } => {
                let Some(p) = self.pending_subs.get_mut(&request) else {
                    return;
                };
                p.waiting = p.waiting.saturating_sub(1);
                if granted
                    && let Some((_, _, e)) = p.locks.iter().find(|(i, _, _)| *i == index)
                    && let Some(rc) = p.ack.reason_codes.get_mut(index)
                {
                    *rc = ReasonCode(e.options.qos as u8);
                }
                if p.waiting > 0 {
                    return;
                }
                let Some(p) = self.pending_subs.remove(&request) else {
                    return;
                };
                self.finish_exclusive(p);
            }
        }
    }

    /// All locks of a SUBSCRIBE answered: subscribe what was granted, then SUBACK.
    fn finish_exclusive(&mut self, p: PendingSub) {
        let mut announced = p.announced;
        let alive = self
            .sessions
            .get(p.sid)
            .is_some_and(|s| s.conn == Some(p.conn));
        for (index, full, entry) in &p.locks {
            let granted = p
                .ack
                .reason_codes
                .get(*index)
                .is_some_and(|rc| rc.is_success());
            if !granted {
                continue;
            }
            if !alive {
                self.unlock_exclusive(full, p.sid);
                continue;
            }
            if let Some(s) = self.sessions.get_mut(p.sid) {
                s.subscriptions.insert(full.clone(), *entry);
            }
            self.header_changed(p.sid);
            announced |= self.add_subscription(p.sid, full, *entry);
            self.stats.subscribes += 1;
        }
        if announced && self.shards > 1 {
            self.start_fence(FenceDone::SubAck {
                conn: p.conn,
                lane: p.lane,
                ack: p.reply.then(|| Box::new(p.ack)),
                retained: None,
            });
        } else if p.reply {
            self.send_on(p.conn, p.lane, &Packet::SubAck(p.ack));
        }
    }

    /// Releases the lock of `full` (an `$exclusive/` filter) held by session `sid`'s client.
    fn unlock_exclusive(&mut self, full: &str, sid: Key) {
        let Some(client_id) = self.sessions.get(sid).map(|s| s.client_id.clone()) else {
            return;
        };
        self.unlock_exclusive_for(full, client_id);
    }

    fn unlock_exclusive_for(&mut self, full: &str, client_id: MqttStr) {
        let Some(inner) = exclusive_inner(full, self.settings.exclusive_subscription) else {
            return;
        };
        let owner = owner_of(inner, self.shards);
        let msg = ExclusiveMsg::Unlock {
            filter: inner.to_owned().into(),
            client_id,
        };
        self.send_shard(owner, ShardMsg::Exclusive(Box::new(msg)));
    }

    // ---- retained messages -------------------------------------------------------------------

    /// Asks the shards that may hold matching retained messages: the topic's owner for a
    /// filter without wildcards, every shard otherwise.
    fn query_retained(&mut self, wanted: RetainWanted) {
        for (filter, entry) in wanted.subs {
            let query = |filter: MqttStr| {
                ShardMsg::Retain(RetainMsg::Query(Box::new(RetainQuery {
                    filter,
                    client_id: wanted.client_id.clone(),
                    token: wanted.token,
                    entry,
                })))
            };
            if topic::has_wildcard(&filter) {
                for dest in 0..self.shards {
                    self.send_shard(dest, query(filter.clone()));
                }
            } else {
                let owner = owner_of(&filter, self.shards);
                self.send_shard(owner, query(filter));
            }
        }
    }

    fn on_retain(&mut self, now: Instant, from: ShardId, m: RetainMsg) {
        match m {
            RetainMsg::Store(msg, ack) => {
                self.store_retained(now, &msg);
                if let Some(ack) = ack {
                    // Once the retained message is on disk here.
                    let stored = ShardMsg::Retain(RetainMsg::Stored(ack));
                    self.after_log(now, Held::Ring(from, stored));
                }
            }
            RetainMsg::Stored(a) => {
                // In order with this shard's other acknowledgements, and once the message's
                // deliveries to durable sessions here and elsewhere are on disk too.
                let held = Held::Ack {
                    conn: Key::from_u64(a.conn),
                    lane: a.lane,
                    packet_id: a.packet_id,
                    reason: a.reason,
                    rec: a.qos2,
                };
                self.after_log(now, held);
            }
            RetainMsg::Query(q) => {
                let mut messages = Vec::new();
                let done =
                    self.retained
                        .for_each_match_limited(&q.filter, MAX_RETAINED_VISITS, |_, r| {
                            if r.expires_at.is_none_or(|at| at > now) {
                                messages.push(r.msg.clone());
                            }
                        });
                if done != Completion::Done {
                    self.stats.retained_queries_truncated += 1;
                }
                if !messages.is_empty() {
                    let reply = RetainReply {
                        client_id: q.client_id,
                        token: q.token,
                        entry: q.entry,
                        messages,
                    };
                    self.send_shard(from, ShardMsg::Retain(RetainMsg::Reply(Box::new(reply))));
                }
            }
            RetainMsg::Reply(r) => {
                let Some(sid) = self.by_client.get(&r.client_id).copied() else {
                    return;
                };
                if self
                    .sessions
                    .get(sid)
                    .is_none_or(|s| s.reg_token != r.token)
                {
                    return;
                }
                let ids = r.entry.id.map_or(SubIds::None, SubIds::One);
                for msg in r.messages {
                    // 3.3.1.3: RETAIN is 1 on a message sent because of a new subscription.
                    let q = Queued {
                        qos: msg.qos.min(r.entry.options.qos),
                        msg,
                        retain: true,
                        sub_ids: ids.clone(),
                        shared: None,
                        lane: r.entry.lane,
                        seq: 0,
                    };
                    self.stats.retained_delivered += 1;
                    self.dispatch(now, sid, q);
                }
            }
        }
    }

    /// Stores, replaces or (empty payload, 3.3.1.3) clears the retained message of a topic this
    /// shard owns.
    fn store_retained(&mut self, now: Instant, msg: &Arc<Message>) {
        // The broker's own retained messages (`$SYS/.../version`, `sysdescr`) do not count
        // against `retainer.max_retained_messages`.
        let broker_own = msg.origin.session == SYS_SESSION;
        if !broker_own {
            self.retained_own.retain(|t| *t != msg.topic);
        }
        if msg.payload.is_empty() {
            let unix_ms = self.wall_ms(now);
            if self.retained.remove(&msg.topic).is_some()
                && !broker_own
                && let Some(p) = self.persist.as_mut()
            {
                p.retain(&msg.topic, None, now, unix_ms, false);
            }
            return;
        }
        if msg.payload.len() > self.settings.max_retained_payload {
            self.stats.retained_dropped_too_large += 1;
            return;
        }
        let max = self.settings.max_retained_messages;
        let stored = self.retained.len().saturating_sub(self.retained_own.len());
        if max > 0 && !broker_own && stored >= max && self.retained.get(&msg.topic).is_none() {
            self.stats.retained_dropped_full += 1;
            return;
        }
        let Ok(own) = msg.detached() else {
            self.stats.dropped_other += 1;
            return;
        };
        let expires_at = own.expires_at.or_else(|| {
            let e = self.settings.retained_expiry;
            (!e.is_zero()).then(|| now + e)
        });
        let topic = own.topic.clone();
        if broker_own && !self.retained_own.contains(&topic) {
            self.retained_own.push(topic.clone());
        }
        if !broker_own {
            let unix_ms = self.wall_ms(now);
            if let Some(p) = self.persist.as_mut() {
                p.retain(&topic, Some((&own, expires_at)), now, unix_ms, false);
            }
        }
        self.retained.insert(
            &topic,
            Retained {
                msg: own,
                expires_at,
            },
        );
        if expires_at.is_some() && !self.retained_sweep_armed {
            self.retained_sweep_armed = true;
            self.arm(now + RETAINED_SWEEP, Timer::RetainedSweep);
        }
    }

    /// Number of retained messages this shard holds.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    fn on_unsubscribe(&mut self, conn: Key, sid: Key, unsub: Unsubscribe) {
        let mut codes = Vec::with_capacity(unsub.filters.len());
        for mut f in unsub.filters {
            if topic::validate_topic_filter(&f).is_err() {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            if let Some(filter) = self.rewrite_filter(conn, sid, &f) {
                self.stats.topics_rewritten += 1;
                f = filter.into();
            }
            let existed = self
                .sessions
                .get_mut(sid)
                .is_some_and(|s| s.subscriptions.remove(&f).is_some());
            if existed {
                self.header_changed(sid);
            }
            if existed && split_share(&f).is_some() {
                self.announce_shared(sid, &f, None);
            } else if existed {
                self.unlock_exclusive(&f, sid);
                self.remove_subscription(sid, &f);
            }
            codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        let v5 = self
            .conns
            .get(conn)
            .is_some_and(|c| c.version == ProtocolVersion::V5);
        let ack = UnsubAck {
            packet_id: unsub.packet_id,
            reason_codes: if v5 { codes } else { Vec::new() },
            ..UnsubAck::default()
        };
        self.send(conn, &Packet::UnsubAck(ack));
    }

    fn on_disconnect(&mut self, conn: Key, sid: Key, d: Disconnect) {
        if let Some(e) = d.properties.session_expiry_interval {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            if s.expiry_interval.is_zero() && e != 0 {
                // [MQTT-3.14.2-?] 3.14.2.2.2: a non-zero expiry after connecting with zero.
                self.disconnect(conn, ReasonCode::PROTOCOL_ERROR);
                return;
            }
            s.expiry_interval = Duration::from_secs(u64::from(e));
        }
        // 0x00 deletes the will; 0x04 (Disconnect with Will Message) and errors keep it.
        if d.reason_code == ReasonCode::NORMAL_DISCONNECTION
            && let Some(c) = self.conns.get_mut(conn)
        {
            c.normal_disconnect = true;
        }
        self.close(conn);
    }

    // ---- subscriptions and routes --------------------------------------------------------------

    /// Adds a subscription; `true` if it announced a new route to the other shards.
    fn add_subscription(&mut self, sid: Key, filter: &str, entry: SubEntry) -> bool {
        let filter = trie_filter(filter, self.settings.exclusive_subscription);
        self.subs.insert(filter, sid, entry).is_none() && self.route_ref(filter, true)
    }

    fn remove_subscription(&mut self, sid: Key, filter: &str) {
        let filter = trie_filter(filter, self.settings.exclusive_subscription);
        if self.subs.remove(filter, &sid).is_some() {
            self.route_ref(filter, false);
        }
    }

    /// Counts a local or ghost subscription on `filter` in or out; announces the route on the
    /// first and withdraws it after the last.
    /// Returns whether the route was announced or withdrawn.
    fn route_ref(&mut self, filter: &str, add: bool) -> bool {
        let n = match self.route_refs.get_mut(filter) {
            Some(n) => {
                if add {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                }
                *n
            }
            None if add => {
                self.route_refs.insert(filter.to_owned(), 1);
                self.broadcast_route(filter, true);
                return true;
            }
            None => return false,
        };
        if n == 0 {
            self.route_refs.remove(filter);
            self.broadcast_route(filter, false);
            return true;
        }
        false
    }

    fn broadcast_route(&mut self, filter: &str, add: bool) {
        let f: MqttStr = filter.to_owned().into();
        for dest in 0..self.shards {
            if dest == self.id {
                self.apply_route(dest, filter, add);
            } else {
                self.push_out(
                    dest,
                    ShardMsg::Route {
                        filter: f.clone(),
                        add,
                    },
                );
            }
        }
    }

    fn apply_route(&mut self, shard: ShardId, filter: &str, add: bool) {
        if add {
            self.routes.insert(filter, shard, ());
        } else {
            self.routes.remove(filter, &shard);
        }
    }

    // ---- registry ----------------------------------------------------------------------------

    fn owner_of(&self, client_id: &str) -> ShardId {
        owner_of(client_id, self.shards)
    }

    fn send_shard(&mut self, dest: ShardId, msg: ShardMsg) {
        if dest == self.id {
            self.local.push_back(msg);
        } else {
            self.push_out(dest, msg);
        }
    }

    /// Queues a message for another shard, counted: the receiver reports how many of ours it
    /// has made durable ([`ShardMsg::Durable`]).
    fn push_out(&mut self, dest: ShardId, msg: ShardMsg) {
        // Counted with or without a log: both ends must count the same messages from the
        // start (a message sent before the log is attached still counts on the receiver).
        if let Some(n) = self.ring_sent.get_mut(usize::from(dest)) {
            *n += 1;
        }
        self.outbox.push_back((dest, msg));
    }

    /// What a held acknowledgement waits for from other shards: for each shard with messages
    /// of ours not yet reported durable, the count sent so far.
    fn remote_needs(&self) -> Vec<(ShardId, u64)> {
        let mut needs = Vec::new();
        for (dest, (&sent, &done)) in self.ring_sent.iter().zip(&self.ring_durable).enumerate() {
            if sent > done {
                needs.push((dest as ShardId, sent));
            }
        }
        needs
    }

    /// Queues the durability reports that are due (one per source shard, covering every
    /// message it sent us whose records are durable).
    fn queue_reports(&mut self) {
        if !self.reports_due {
            return;
        }
        self.reports_due = false;
        let durable = self
            .persist
            .as_ref()
            .map_or(storage::log::Ticket(0), |p| p.log_ref().durable());
        for from in 0..usize::from(self.shards) {
            let pending = &mut self.recv_pending[from];
            while pending.front().is_some_and(|(_, t)| *t <= durable) {
                pending.pop_front();
            }
            let upto = match pending.front() {
                Some((seq, _)) => seq - 1,
                None => self.ring_recv[from],
            };
            if upto > self.ring_reported[from] {
                self.ring_reported[from] = upto;
                self.outbox
                    .push_back((from as ShardId, ShardMsg::Durable(upto)));
            }
        }
    }

    fn drain_local(&mut self, now: Instant) {
        while let Some(msg) = self.local.pop_front() {
            self.on_message(now, self.id, msg);
        }
    }

    fn on_message(&mut self, now: Instant, from: ShardId, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(m) => self.deliver_local(now, &m),
            ShardMsg::Route { filter, add } => self.apply_route(from, &filter, add),
            ShardMsg::Registry(r) => self.on_registry(now, from, *r),
            ShardMsg::Forward(f) => self.on_forward(now, *f),
            ShardMsg::Move(m) => self.on_move(now, from, m),
            ShardMsg::Retain(m) => self.on_retain(now, from, m),
            ShardMsg::Shared(m) => self.on_shared(*m),
            ShardMsg::Exclusive(m) => self.on_exclusive(from, *m),
            ShardMsg::Sys(snap) => {
                if let Some(slot) = self.sys.get_mut(usize::from(from)) {
                    *slot = *snap;
                }
            }
            // The driver takes these before they reach the core; `handle_message` takes these.
            ShardMsg::Admin(req) => self.on_admin(now, *req),
            // The driver takes these before they reach the core; `handle_message` takes these.
            ShardMsg::QuicDatagram(_) | ShardMsg::Durable(_) => {}
        }
    }

    fn on_registry(&mut self, now: Instant, from: ShardId, msg: RegistryMsg) {
        match msg {
            RegistryMsg::Register {
                client_id,
                shard,
                conn,
                clean_start,
            } => {
                let prev = self
                    .registry
                    .insert(client_id.clone(), RegEntry { shard, token: conn });
                match prev {
                    None => self.send_shard(
                        shard,
                        ShardMsg::Registry(Box::new(RegistryMsg::Proceed {
                            conn,
                            session: None,
                        })),
                    ),
                    Some(old) => self.send_shard(
                        old.shard,
                        ShardMsg::Registry(Box::new(RegistryMsg::TakeOver {
                            client_id,
                            new_shard: shard,
                            new_conn: conn,
                            want_session: !clean_start,
                            old_conn: old.token,
                        })),
                    ),
                }
            }
            RegistryMsg::TakeOver {
                client_id,
                new_shard,
                new_conn,
                want_session,
                old_conn,
            } => {
                let old = Key::from_u64(old_conn);
                if self
                    .conns
                    .get(old)
                    .is_some_and(|c| matches!(c.state, ConnState::Registering(_)))
                {
                    self.pending_takeover
                        .insert(old_conn, (new_shard, new_conn, want_session));
                    return;
                }
                let state = match self.by_client.get(&client_id).copied() {
                    Some(sid) => self.hand_over(now, sid, want_session, new_shard, new_conn),
                    None => None,
                };
                self.send_shard(
                    new_shard,
                    ShardMsg::Registry(Box::new(RegistryMsg::Proceed {
                        conn: new_conn,
                        session: state,
                    })),
                );
            }
            RegistryMsg::Proceed { conn, session } => {
                self.on_proceed(now, from, Key::from_u64(conn), session);
            }
            RegistryMsg::Unregister {
                client_id,
                shard,
                token,
            } => {
                if self
                    .registry
                    .get(&client_id)
                    .is_some_and(|e| e.shard == shard && e.token == token)
                {
                    self.registry.remove(&client_id);
                }
            }
        }
    }

    /// Ends the local session of a client that connected again elsewhere (or here):
    /// DISCONNECT 0x8E to its connection, and its state if the new connection wants it.
    fn hand_over(
        &mut self,
        now: Instant,
        sid: Key,
        want_session: bool,
        new_shard: ShardId,
        new_conn: u64,
    ) -> Option<Box<SessionState>> {
        let conn = self.sessions.get(sid).and_then(|s| s.conn);
        // The new connection cancels a delayed will; the old connection's end publishes one
        // without delay (3.1.2.5: it closed, and no new connection came "before" a zero delay).
        if let Some(s) = self.sessions.get_mut(sid) {
            s.will_at = None;
            let will = s.will.take();
            if conn.is_some()
                && let Some(w) = will
                && w.delay.is_zero()
            {
                self.publish_will(now, sid, w);
            }
        }
        if let Some(conn) = conn {
            self.stats.takeovers += 1;
            self.disconnect(conn, ReasonCode::SESSION_TAKEN_OVER);
        }
        let shared: Vec<MqttStr> = self
            .sessions
            .get(sid)
            .map(|s| {
                s.subscriptions
                    .keys()
                    .filter(|f| split_share(f).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for f in &shared {
            self.announce_shared(sid, f, None);
        }
        let mut session = self.sessions.remove(sid)?;
        self.by_client.remove(&session.client_id);
        let expired = session.expires_at.is_some_and(|at| at <= now);
        let moving = want_session && !expired;
        let mut filters = Vec::new();
        for (f, e) in &session.subscriptions {
            if split_share(f).is_some() {
                continue;
            }
            if moving {
                // The ghost holds the route until the new shard's routes are everywhere.
                let tf = trie_filter(f, self.settings.exclusive_subscription);
                self.ghost_subs.insert(tf, new_conn, *e);
                self.route_ref(tf, true);
                filters.push(MqttStr::from(tf.to_owned()));
            }
            self.remove_subscription(sid, f);
        }
        let local_copy = session.durable.filter(|d| d.shard == self.id);
        if moving {
            let durable_end = local_copy
                .filter(|_| new_shard != self.id)
                .map(|d| (d.sid, durable_deliveries(&session)));
            let ghost = Ghost {
                client_id: session.client_id.clone(),
                dest: new_shard,
                filters,
                released: false,
                durable_end,
            };
            self.ghosts.insert(new_conn, ghost);
            Some(Box::new(session.take_state()))
        } else {
            self.stats.dropped_session_ended += unacked_qos12(&session) as u64;
            if let (Some(d), Some(p)) = (local_copy, self.persist.as_mut()) {
                p.end(d.sid, durable_deliveries(&session).into_iter());
            }
            None
        }
    }

    // ---- connection lifecycle ------------------------------------------------------------------

    /// The connection is gone: its session goes offline, or ends if its expiry is zero.
    fn detach(&mut self, now: Instant, conn: Key) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.state = ConnState::Closing;
        let c_normal = c.normal_disconnect;
        let reason = if c_normal { "normal" } else { c.close_reason };
        let username = c.username.clone();
        let peer = c.peer;
        let last = crate::session::LastConn {
            username: c.username.clone(),
            peer: c.peer,
            clean_start: c.clean_start,
            keep_alive: keep_alive_secs(c.keep_alive, self.settings.keepalive_multiplier),
            listener: c.listener,
        };
        let Some(sid) = c.session.take() else { return };
        self.stats.connections_closed += 1;
        if self.settings.log_connections
            && let Some(client_id) = self.sessions.get(sid).map(|s| s.client_id.clone())
        {
            self.log_line(format!(
                "client disconnected: clientid={client_id} address={peer} reason={reason}"
            ));
        }
        if self.settings.sys_client_events.1
            && let Some(client_id) = self.sessions.get(sid).map(|s| s.client_id.clone())
        {
            let payload = format!(
                "{{\"clientid\":{},\"username\":{},\"reason\":{},\"disconnected_at\":{}}}",
                json_str(&client_id),
                username.as_ref().map_or("null".to_owned(), |u| json_str(u)),
                json_str(reason),
                self.wall_ms(now),
            );
            let path = format!("clients/{client_id}/disconnected");
            self.publish_sys(now, &path, payload, false);
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.conn != Some(conn) {
            return;
        }
        s.conn = None;
        s.disconnected_at = Some(wall_ms(self.clock, now));
        self.leave_shared(now, sid);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if c_normal || self.shutting_down {
            // Normal disconnection deletes the will; so does the broker's own shutdown (the
            // process is going away with every subscriber).
            s.will = None;
        }
        // The will goes now, or after its delay unless the session resumes or ends first.
        match &s.will {
            Some(w) if w.delay.is_zero() || s.expiry_interval.is_zero() => {
                if let Some(w) = s.will.take() {
                    self.publish_will(now, sid, w);
                }
            }
            Some(w) => {
                let at = now + w.delay.min(s.expiry_interval);
                s.will_at = Some(at);
                self.arm(at, Timer::Will(sid));
            }
            None => {}
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.expiry_interval.is_zero() {
            self.discard_session(now, sid);
        } else {
            // Kept offline: what its connection was, for the REST API.
            s.last_conn = Some(Box::new(last));
            let at = now + s.expiry_interval;
            s.expires_at = Some(at);
            self.arm(at, Timer::SessionExpiry(sid));
            self.header_changed(sid);
        }
    }

    fn discard_session(&mut self, now: Instant, sid: Key) {
        // A delayed will is due when the session ends first (3.1.3.2.2).
        if let Some(s) = self.sessions.get_mut(sid)
            && s.conn.is_none()
            && s.will_at.is_some()
            && let Some(w) = s.will.take()
        {
            self.publish_will(now, sid, w);
        }
        let Some(s) = self.sessions.remove(sid) else {
            return;
        };
        if let (Some(d), Some(p)) = (
            s.durable.filter(|d| d.shard == self.id),
            self.persist.as_mut(),
        ) {
            p.end(d.sid, durable_deliveries(&s).into_iter());
        }
        self.by_client.remove(&s.client_id);
        for f in s.subscriptions.keys() {
            self.remove_subscription(sid, f);
            self.unlock_exclusive_for(f, s.client_id.clone());
        }
        self.stats.dropped_session_ended += unacked_qos12(&s) as u64;
        let owner = self.owner_of(&s.client_id);
        self.send_shard(
            owner,
            ShardMsg::Registry(Box::new(RegistryMsg::Unregister {
                client_id: s.client_id,
                shard: self.id,
                token: s.reg_token,
            })),
        );
    }

    /// A CONNECT refused with a reason code: CONNACK and close.
    fn refuse(&mut self, conn: Key, rc: ReasonCode) {
        self.stats.connections_refused += 1;
        let ack = ConnAck {
            reason_code: rc,
            ..ConnAck::default()
        };
        self.send(conn, &Packet::ConnAck(ack));
        self.close(conn);
    }

    /// A decoding error: answer as the version allows and close.
    fn protocol_error(&mut self, conn: Key, e: &Error) {
        self.stats.protocol_errors += 1;
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        match (&c.state, c.decoder.version()) {
            (ConnState::AwaitConnect, _) => {
                if let Error::UnsupportedProtocol { level, .. } = e {
                    // 3.1.2.2: CONNACK 0x84 (v5) or return code 1, then close.
                    c.version = if *level == 5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V3_1_1
                    };
                    self.refuse(conn, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
                    return;
                }
                self.close(conn);
            }
            _ => {
                // The reason string tells the client which rule it broke, unless it asked for
                // no problem information (3.1.2.11.7).
                let problems = c.problem_information;
                self.disconnect_with(conn, e.reason_code(), problems.then(|| e.to_string()));
            }
        }
    }

    /// DISCONNECT with a reason code (MQTT 5 only; older versions just close), then close.
    fn disconnect(&mut self, conn: Key, rc: ReasonCode) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.close_reason = match rc {
                ReasonCode::KEEP_ALIVE_TIMEOUT => "keepalive_timeout",
                ReasonCode::SESSION_TAKEN_OVER => "takenover",
                ReasonCode::SERVER_SHUTTING_DOWN => "shutdown",
                _ => "protocol_error",
            };
        }
        self.disconnect_quiet(conn, rc);
        self.close(conn);
    }

    fn disconnect_quiet(&mut self, conn: Key, rc: ReasonCode) {
        self.disconnect_quiet_with(conn, rc, None);
    }

    /// DISCONNECT with a reason code and a Reason String, then close.
    fn disconnect_with(&mut self, conn: Key, rc: ReasonCode, reason: Option<String>) {
        self.disconnect_quiet_with(conn, rc, reason);
        if let Some(c) = self.conns.get_mut(conn) {
            c.close_reason = "protocol_error";
        }
        self.close(conn);
    }

    fn disconnect_quiet_with(&mut self, conn: Key, rc: ReasonCode, reason: Option<String>) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if c.version == ProtocolVersion::V5 && matches!(c.state, ConnState::Connected) {
            let mut d = Disconnect::new(rc);
            d.properties.reason_string = reason.map(MqttStr::from);
            // A DISCONNECT over the client's Maximum Packet Size goes without its string.
            if Packet::Disconnect(d.clone())
                .encoded_len(ProtocolVersion::V5)
                .is_ok_and(|n| n > c.client_max_packet as usize)
            {
                d.properties.reason_string = None;
            }
            self.send(conn, &Packet::Disconnect(d));
            self.stats.disconnects_sent += 1;
        }
    }

    /// Asks the driver to flush and close the connection. Input stops at once; the session
    /// stays attached until the socket is gone ([`Shard::handle_closed`]).
    fn close(&mut self, conn: Key) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        c.state = ConnState::Closing;
        self.events.push_back(Event::Close(conn));
    }

    /// Queues `packet` on the lane of the packet being handled (lane 0 outside a read).
    fn send(&mut self, conn: Key, packet: &Packet) {
        let lane = self.conns.get(conn).map_or(0, |c| c.lane);
        self.send_on(conn, lane, packet);
    }

    /// Queues `packet` on `lane` (an answer that waited for other shards goes back on the
    /// lane its request came on).
    fn send_on(&mut self, conn: Key, lane: u32, packet: &Packet) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        let before = c.out.buf().len();
        if packet.encode(c.version, c.out.buf()).is_ok() {
            let n = c.out.buf().len() - before;
            c.out.wrote(n);
            if let Some(lanes) = c.lanes.as_deref_mut() {
                lanes.record(lane, n);
            }
            self.stats.packets_sent += 1;
            self.stats.packets_sent_by_type[packet.packet_type() as usize] += 1;
            self.want_write(conn);
        }
    }

    fn want_write(&mut self, conn: Key) {
        if let Some(c) = self.conns.get_mut(conn)
            && !c.write_pending
        {
            c.write_pending = true;
            self.events.push_back(Event::Write(conn));
        }
    }

    // ---- timers ------------------------------------------------------------------------------

    fn arm(&mut self, at: Instant, t: Timer) {
        self.timers.push(Reverse((at, t)));
    }

    fn fire(&mut self, now: Instant, t: Timer) {
        match t {
            Timer::Delayed => {
                while let Some(entry) = self.delayed.first_entry() {
                    if entry.key().0 > now {
                        let at = entry.key().0;
                        self.arm(at, Timer::Delayed);
                        break;
                    }
                    let id = entry.key().1;
                    let (sid, p) = entry.remove();
                    if let Some(log) = self.persist.as_mut() {
                        log.delayed(id, None, now, 0, false);
                    }
                    self.stats.delayed_published += 1;
                    if !self.publish_message(now, sid, p) {
                        self.stats.dropped_no_subscribers += 1;
                    }
                }
            }
            Timer::SysStats => {
                let snap = SysSnapshot {
                    connections: self.conns.len() as u64,
                    sessions: self.sessions.len() as u64,
                    subscriptions: self.subs.entry_count() as u64,
                    retained: self.retained.len() as u64,
                    stats: self.stats.clone(),
                    ..SysSnapshot::default()
                };
                if self.id == 0 {
                    if let Some(slot) = self.sys.get_mut(0) {
                        *slot = snap;
                    }
                    self.publish_sys_stats(now);
                } else {
                    self.send_shard(0, ShardMsg::Sys(Box::new(snap)));
                }
                self.arm(now + self.settings.sys_msg_interval, Timer::SysStats);
            }
            Timer::SysHeartbeat => {
                let uptime = self
                    .clock
                    .map_or(0, |(base, _)| now.saturating_duration_since(base).as_secs());
                self.publish_sys(now, "uptime", uptime.to_string(), false);
                let datetime = rfc3339(self.wall_ms(now));
                self.publish_sys(now, "datetime", datetime, false);
                self.arm(
                    now + self.settings.sys_heartbeat_interval,
                    Timer::SysHeartbeat,
                );
            }
            Timer::RetainedSweep => {
                let mut expiring = false;
                self.retained.retain(|_, r| match r.expires_at {
                    Some(at) if at <= now => false,
                    Some(_) => {
                        expiring = true;
                        true
                    }
                    None => true,
                });
                self.retained_sweep_armed = expiring;
                if expiring {
                    self.arm(now + RETAINED_SWEEP, Timer::RetainedSweep);
                }
            }
            Timer::Will(sid) => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                if s.conn.is_none() && s.will_at.is_some_and(|at| at <= now) {
                    s.will_at = None;
                    if let Some(w) = s.will.take() {
                        self.publish_will(now, sid, w);
                    }
                    self.header_changed(sid);
                }
            }
            Timer::ConnectTimeout(conn) => {
                if self.conns.get(conn).is_some_and(|c| {
                    matches!(
                        c.state,
                        ConnState::AwaitConnect | ConnState::Authenticating(..)
                    )
                }) {
                    // An enhanced authentication exchange must finish in the same time.
                    self.stats.connect_timeouts += 1;
                    self.close(conn);
                }
            }
            Timer::KeepAlive(conn) => {
                let Some(c) = self.conns.get(conn) else {
                    return;
                };
                if !matches!(c.state, ConnState::Connected) || c.keep_alive.is_zero() {
                    return;
                }
                let deadline = c.last_rx + c.keep_alive;
                if deadline <= now {
                    self.stats.keepalive_timeouts += 1;
                    self.disconnect(conn, ReasonCode::KEEP_ALIVE_TIMEOUT);
                } else {
                    self.arm(deadline, Timer::KeepAlive(conn));
                }
            }
            Timer::Retry(sid) => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                s.retry_armed = false;
                if s.inflight.is_empty() || s.conn.is_none() {
                    return;
                }
                if s.conn.is_some() {
                    self.retransmit(now, sid, false);
                }
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                if let Some(oldest) = s.inflight.iter().map(|i| i.sent_at).min() {
                    s.retry_armed = true;
                    let at =
                        (oldest + self.settings.retry_interval).max(now + Duration::from_millis(1));
                    self.arm(at, Timer::Retry(sid));
                }
            }
            Timer::SessionExpiry(sid) => {
                let Some(s) = self.sessions.get(sid) else {
                    return;
                };
                if s.conn.is_none() && s.expires_at.is_some_and(|at| at <= now) {
                    self.stats.sessions_expired += 1;
                    self.discard_session(now, sid);
                }
            }
            Timer::AwaitRel(sid) => {
                let timeout = self.settings.await_rel_timeout;
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                let before = s.awaiting_rel.len();
                if let Some(p) = self.persist.as_mut() {
                    for (&packet_id, &at) in &s.awaiting_rel {
                        if at + timeout <= now {
                            p.rx_qos2(s, packet_id, true);
                        }
                    }
                }
                s.awaiting_rel.retain(|_, at| *at + timeout > now);
                self.stats.dropped_await_rel_timeout += (before - s.awaiting_rel.len()) as u64;
                s.await_rel_armed = false;
                if let Some(oldest) = s.awaiting_rel.values().min().copied() {
                    s.await_rel_armed = true;
                    self.arm(oldest + timeout, Timer::AwaitRel(sid));
                }
            }
        }
    }
}

/// The shard that owns the registry entry of `client_id`. `DefaultHasher::new()` is
/// deterministic (fixed keys), so every shard computes the same owner.
/// The shard of `shards` that owns `key` (a client id's registration, a retained topic).
pub fn owner_of(key: &str, shards: u16) -> ShardId {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % u64::from(shards.max(1))) as ShardId
}

/// The deliveries of a session that are in this shard's log: (message id, queue position).
fn durable_deliveries(s: &Session) -> Vec<(u64, u64)> {
    s.inflight
        .iter()
        .map(|i| &i.delivery)
        .chain(s.mqueue.iter())
        .filter(|q| q.seq != 0)
        .map(|q| (q.msg.id, q.seq))
        .collect()
}

/// QoS 1/2 messages a session still holds (inflight or queued).
fn unacked_qos12(s: &Session) -> usize {
    s.inflight
        .iter()
        .filter(|i| i.delivery.qos != QoS::AtMostOnce)
        .count()
        + s.mqueue.iter().filter(|q| q.qos != QoS::AtMostOnce).count()
}

/// One delivery for a session from its subscriptions that match a message: the highest QoS,
/// Retain As Published if any says so, every Subscription Identifier (3.3.4). `None` when
/// `subs` is empty.
fn merge_delivery<'a>(
    msg: &Arc<Message>,
    subs: impl Iterator<Item = &'a SubEntry>,
) -> Option<Queued> {
    let mut qos = None;
    let mut rap = false;
    let mut ids = SubIds::None;
    let mut lane = 0;
    for e in subs {
        // The lane of the (first) subscription with the highest QoS.
        if qos.is_none_or(|q| e.options.qos > q) {
            lane = e.lane;
        }
        qos = qos.max(Some(e.options.qos));
        rap |= e.options.retain_as_published;
        if let Some(id) = e.id {
            ids = match ids {
                SubIds::None => SubIds::One(id),
                SubIds::One(a) => SubIds::Many(vec![a, id].into_boxed_slice()),
                SubIds::Many(v) => SubIds::Many([&v[..], &[id]].concat().into_boxed_slice()),
            };
        }
    }
    Some(Queued {
        msg: msg.clone(),
        qos: msg.qos.min(qos?),
        retain: rap && msg.retain,
        sub_ids: ids,
        shared: None,
        lane,
        seq: 0,
    })
}

/// Packet types a data lane may carry (EMQX's multi-stream mode, EIP-0023): PUBLISH, PUBACK,
/// PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE. A data stream carries application traffic;
/// the connection's own packets (CONNECT, PINGREQ, DISCONNECT, AUTH) go on the control stream.
fn data_lane_type(packet_type: u8) -> bool {
    matches!(packet_type, 3..=8 | 10)
}

/// A copy of `s` in its own allocation, for strings that outlive the packet they came in.
fn owned(s: &MqttStr) -> MqttStr {
    MqttStr::from(s.as_str().to_owned())
}

/// `$share/{group}/{filter}` → `(group, filter)`; EMQX's `$queue/{filter}` → `("$queue",
/// filter)`; `None` for a filter that is not shared.
fn split_share(full: &str) -> Option<(&str, &str)> {
    if let Some(f) = full.strip_prefix("$queue/") {
        return (!f.is_empty()).then_some(("$queue", f));
    }
    topic::split_shared(full)
}

/// The key of a shared subscription group: the same on every shard.
fn group_key(group: &str, filter: &str) -> u64 {
    let mut h = DefaultHasher::new();
    group.hash(&mut h);
    filter.hash(&mut h);
    h.finish()
}

fn hash_str(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn hash_u64(v: u64) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The origin of messages the broker publishes itself (`$SYS`): no session has this key.
const SYS_SESSION: Key = Key::SYS;

/// The Unix time (ms) at `now`, given the instant and Unix time of [`Shard::set_clock`] (0
/// without one).
/// The Keep Alive a connection asked for (seconds), from the timeout it runs with (Keep Alive
/// × `mqtt.keepalive_multiplier`).
fn keep_alive_secs(timeout: Duration, multiplier: f64) -> u16 {
    let secs = timeout.as_secs_f64() / multiplier;
    u16::try_from(secs.round() as u64).unwrap_or(u16::MAX)
}

fn wall_ms(clock: Option<(Instant, u64)>, now: Instant) -> u64 {
    clock.map_or(0, |(base, ms)| {
        ms + u64::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(0)
    })
}

/// `s` as a JSON string literal (control characters as `\u00XX`).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-26T07:53:47Z`).
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Longest delay `$delayed/{seconds}/...` accepts, as in EMQX.
const MAX_DELAY_SECS: u64 = 4_294_967;

/// `$delayed/{seconds}/{topic}` → (delay, topic); `None` when the topic is not a delayed
/// publish (or its delay or inner topic is not valid, in which case it is an ordinary topic).
fn parse_delayed(topic: &MqttStr) -> Option<(Duration, MqttStr)> {
    let rest = topic.strip_prefix("$delayed/")?;
    let (secs, inner) = rest.split_once('/')?;
    let secs: u64 = secs.parse().ok().filter(|s| *s <= MAX_DELAY_SECS)?;
    topic::validate_topic_name(inner).ok()?;
    Some((Duration::from_secs(secs), MqttStr::from(inner.to_owned())))
}

/// The filter inside `$exclusive/{filter}` when exclusive subscriptions are on.
fn exclusive_inner(full: &str, enabled: bool) -> Option<&str> {
    if !enabled {
        return None;
    }
    full.strip_prefix("$exclusive/").filter(|f| !f.is_empty())
}

/// The filter a subscription occupies in the topic trie: without `$exclusive/`.
fn trie_filter(full: &str, exclusive: bool) -> &str {
    exclusive_inner(full, exclusive).unwrap_or(full)
}
