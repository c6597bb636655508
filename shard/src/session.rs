//! Session state (4.1): what outlives a network connection, and moves between shards on
//! takeover.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::mqtt::{MqttStr, ProtocolVersion, Publish, QoS, SubscriptionOptions};

use crate::message::Message;
use crate::slab::Key;

/// One subscription of a session, as stored in the shard's topic trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntry {
    /// The subscription options, with the QoS already capped by `mqtt.max_qos_allowed`.
    pub options: SubscriptionOptions,
    /// Subscription Identifier (v5).
    pub id: Option<u32>,
    /// The lane (QUIC stream of a multi-stream connection) the SUBSCRIBE arrived on: messages
    /// for this subscription are written there. 0 is the connection's main stream (and every
    /// TCP, TLS or WebSocket connection's only one).
    pub lane: u32,
}

/// Subscription identifiers that go with one delivery: none and one are stored inline; only
/// overlapping subscriptions with several identifiers allocate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SubIds {
    /// No identifier.
    #[default]
    None,
    /// One identifier.
    One(u32),
    /// Several (overlapping subscriptions, 3.3.4).
    Many(Box<[u32]>),
}

impl SubIds {
    /// As a slice, for the encoder.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            SubIds::None => &[],
            SubIds::One(id) => std::slice::from_ref(id),
            SubIds::Many(ids) => ids,
        }
    }
}

/// A message waiting for the inflight window (or for the client to come back).
#[derive(Debug, Clone)]
pub struct Queued {
    /// The message.
    pub msg: Arc<Message>,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag of this delivery.
    pub retain: bool,
    /// Subscription identifiers of this delivery.
    pub sub_ids: SubIds,
    /// Set when the delivery comes from a shared subscription: the group's key, so it can be
    /// sent to another member if this one leaves before acknowledging it.
    pub shared: Option<u64>,
    /// The lane to write it on (the subscription's, [`SubEntry::lane`]).
    pub lane: u32,
    /// Its position in a durable session's queue in the log (0: not in the log).
    pub seq: u64,
}

/// Where an outgoing QoS 1/2 message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PUBLISH sent, PUBACK (QoS 1) or PUBREC (QoS 2) expected.
    Published,
    /// PUBREL sent, PUBCOMP expected.
    Released,
}

/// An outgoing QoS 1/2 message with a packet identifier.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Packet Identifier.
    pub packet_id: u16,
    /// The delivery.
    pub delivery: Queued,
    /// Stage of the flow.
    pub stage: Stage,
    /// When it was last sent (for `mqtt.retry_interval`).
    pub sent_at: Instant,
}

/// A session. It lives on the shard that accepted the client's current (or last) connection.
#[derive(Debug)]
pub struct Session {
    /// Client Identifier.
    pub client_id: MqttStr,
    /// The attached connection, if online.
    pub conn: Option<Key>,
    /// The registration this session holds in the client-id registry (the key of the
    /// connection that registered it, packed), so stale unregistrations are ignored.
    pub reg_token: u64,
    /// Protocol version of the last connection (for encoding queued messages).
    pub version: ProtocolVersion,
    /// Session Expiry Interval; zero ends the session with the connection.
    pub expiry_interval: Duration,
    /// When an offline session expires.
    pub expires_at: Option<Instant>,
    /// Subscriptions by topic filter.
    pub subscriptions: HashMap<MqttStr, SubEntry>,
    /// Outgoing QoS 1/2 messages not yet completed, in send order.
    pub inflight: VecDeque<Inflight>,
    /// Inflight window: min(client Receive Maximum, `mqtt.max_inflight`).
    pub window: u16,
    /// Messages waiting for the window or the client.
    pub mqueue: VecDeque<Queued>,
    /// Incoming QoS 2 packet identifiers awaiting PUBREL, with their arrival time.
    pub awaiting_rel: HashMap<u16, Instant>,
    /// Last packet identifier used for an outgoing message.
    pub last_packet_id: u16,
    /// Whether a retry timer is armed.
    pub retry_armed: bool,
    /// Whether an await-rel timer is armed.
    pub await_rel_armed: bool,
    /// While the session moves in from another shard: ids of the messages delivered, so one
    /// that arrives both directly and forwarded is delivered once.
    pub dedup: Option<HashSet<u64>>,
    /// The Will Message of the current (or last) connection (3.1.2.5).
    pub will: Option<Box<Will>>,
    /// When a delayed will is due (the connection is gone, Will Delay Interval running).
    pub will_at: Option<Instant>,
    /// Its identity in the shard's log while the session is durable (expiry not zero).
    pub durable: Option<crate::persist::Durable>,
    /// Its header changed since it was last written to the log.
    pub header_dirty: bool,
    /// When its connection was established (Unix ms), for the REST API.
    pub connected_at: u64,
    /// When its connection ended (Unix ms), while offline.
    pub disconnected_at: Option<u64>,
    /// Who its last connection was, while offline (for the REST API; boxed: only offline
    /// sessions carry it, and a connection's end allocates it once).
    pub last_conn: Option<Box<LastConn>>,
}

/// What the REST API shows of an offline session's last connection.
#[derive(Debug, Clone)]
pub struct LastConn {
    /// Its User Name.
    pub username: Option<MqttStr>,
    /// Its address.
    pub peer: std::net::SocketAddr,
    /// Its Clean Start flag.
    pub clean_start: bool,
    /// Its Keep Alive (seconds).
    pub keep_alive: u16,
    /// The listener it came in on.
    pub listener: &'static str,
}

/// A Will Message, copied out of the CONNECT that carried it.
#[derive(Debug, Clone)]
pub struct Will {
    /// The message, as a PUBLISH from the client.
    pub publish: Publish,
    /// Will Delay Interval (3.1.3.2.2); zero before MQTT 5.
    pub delay: Duration,
}

/// What a session carries when it moves to another shard (takeover with Clean Start 0).
#[derive(Debug)]
pub struct SessionState {
    /// Session Expiry Interval.
    pub expiry_interval: Duration,
    /// Subscriptions.
    pub subscriptions: HashMap<MqttStr, SubEntry>,
    /// Unacknowledged outgoing messages.
    pub inflight: VecDeque<Inflight>,
    /// Queued messages.
    pub mqueue: VecDeque<Queued>,
    /// Incoming QoS 2 awaiting PUBREL.
    pub awaiting_rel: HashMap<u16, Instant>,
    /// Last packet identifier used.
    pub last_packet_id: u16,
    /// Its durable identity where it was.
    pub durable: Option<crate::persist::Durable>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: MqttStr, reg_token: u64, version: ProtocolVersion) -> Self {
        Self {
            client_id,
            conn: None,
            reg_token,
            version,
            expiry_interval: Duration::ZERO,
            expires_at: None,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            window: 1,
            mqueue: VecDeque::new(),
            awaiting_rel: HashMap::new(),
            last_packet_id: 0,
            retry_armed: false,
            await_rel_armed: false,
            dedup: None,
            will: None,
            will_at: None,
            durable: None,
            header_dirty: false,
            connected_at: 0,
            disconnected_at: None,
            last_conn: None,
        }
    }

    /// Restores a session that moved from another shard.
    pub fn from_state(
        client_id: MqttStr,
        reg_token: u64,
        version: ProtocolVersion,
        s: SessionState,
    ) -> Self {
        Self {
            expiry_interval: s.expiry_interval,
            subscriptions: s.subscriptions,
            inflight: s.inflight,
            mqueue: s.mqueue,
            awaiting_rel: s.awaiting_rel,
            last_packet_id: s.last_packet_id,
            durable: s.durable,
            ..Self::new(client_id, reg_token, version)
        }
    }

    /// Takes the transferable state out (the session is being moved or discarded).
    pub fn take_state(&mut self) -> SessionState {
        SessionState {
            expiry_interval: self.expiry_interval,
            subscriptions: std::mem::take(&mut self.subscriptions),
            inflight: std::mem::take(&mut self.inflight),
            mqueue: std::mem::take(&mut self.mqueue),
            awaiting_rel: std::mem::take(&mut self.awaiting_rel),
            last_packet_id: self.last_packet_id,
            durable: self.durable.take(),
        }
    }

    /// The next free packet identifier, or `None` when the window is full.
    pub fn next_packet_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(self.window) {
            return None;
        }
        // The window is at most 65,535 and at least one identifier is free, so this loop
        // ends; with in-order acknowledgements it runs once.
        for _ in 0..=u16::MAX {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            let id = self.last_packet_id;
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Index of the inflight entry with `packet_id`; acknowledgements mostly arrive in order,
    /// so the search starts at the front.
    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|i| i.packet_id == packet_id)
    }

    /// Queues a delivery with the drop policy of EMQX's `mqueue`: when full, the oldest QoS 0
    /// message goes first; without one, a new QoS 0 message is dropped; otherwise the oldest
    /// message is dropped. Returns the dropped delivery, if any.
    pub fn enqueue(&mut self, q: Queued, max_len: usize) -> Option<Queued> {
        if max_len == 0 {
            return Some(q);
        }
        let dropped = if self.mqueue.len() >= max_len {
            if let Some(pos) = self.mqueue.iter().position(|e| e.qos == QoS::AtMostOnce) {
                self.mqueue.remove(pos)
            } else if q.qos == QoS::AtMostOnce {
                return Some(q);
            } else {
                self.mqueue.pop_front()
            }
        } else {
            None
        };
        self.mqueue.push_back(q);
        dropped
    }
}
