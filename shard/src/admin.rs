//! Requests from the control plane (the REST API) to a shard, and their answers.
//!
//! The control plane is one more endpoint of the ring mesh: it pushes an [`AdminRequest`]
//! onto a shard's ring like any shard would, the shard handles it between its other ring
//! messages, and answers through the request's reply callback (which hands the answer to the
//! control plane's runtime; it never blocks the shard). A request that concerns one client or
//! one topic goes to every shard (the control plane does not know where a session lives);
//! each shard answers for what it holds and the control plane merges.
//!
//! Listing requests carry how many entries the control plane needs (`keep`: the end of the
//! page asked for); a shard answers with the number that match and the first `keep` of them
//! in order (client id, topic), so merging the shards' answers and taking the page is exact.

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use net::mqtt::{QoS, SubscriptionOptions};

/// A request from the control plane, with where its answer goes.
pub struct AdminRequest {
    /// What is asked.
    pub op: AdminOp,
    reply: Box<dyn FnOnce(AdminReply) + Send>,
}

impl AdminRequest {
    /// A request whose answer is passed to `reply` (called once, on the shard's thread; it
    /// must not block).
    pub fn new(op: AdminOp, reply: impl FnOnce(AdminReply) + Send + 'static) -> Self {
        Self {
            op,
            reply: Box::new(reply),
        }
    }

    /// Splits the request into what is asked and where the answer goes.
    pub fn into_parts(self) -> (AdminOp, Box<dyn FnOnce(AdminReply) + Send>) {
        (self.op, self.reply)
    }
}

impl fmt::Debug for AdminRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminRequest")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

/// What the control plane asks a shard.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// The sessions (online or not) that match, in client id order, among those in the
    /// slots `scan` covers.
    Clients {
        /// Filters.
        query: ClientQuery,
        /// How many to return at most.
        keep: usize,
        /// Which part of the shard's sessions to look at.
        scan: Scan,
    },
    /// Close the client's connection (DISCONNECT 0x98 on MQTT 5) and discard its session,
    /// as EMQX's kick does. Answered with [`AdminReply::Done`] (whether this shard had it).
    Kick {
        /// Client Identifier.
        client_id: String,
    },
    /// Subscriptions of sessions on this shard, in (client id, filter) order, among the
    /// sessions in the slots `scan` covers.
    Subscriptions {
        /// Filters.
        query: SubQuery,
        /// How many to return at most.
        keep: usize,
        /// Which part of the shard's sessions to look at.
        scan: Scan,
    },
    /// Subscribe a connected client, as if it had sent SUBSCRIBE (retained messages are sent
    /// as the options say). Answered with [`AdminReply::Subscribed`].
    Subscribe {
        /// Client Identifier.
        client_id: String,
        /// Topic filter (may be `$share/...`).
        filter: String,
        /// Options (QoS, No Local, Retain As Published, Retain Handling).
        options: SubscriptionOptions,
    },
    /// Remove a subscription of a client (online or not). Answered with [`AdminReply::Done`].
    Unsubscribe {
        /// Client Identifier.
        client_id: String,
        /// Topic filter, as subscribed.
        filter: String,
    },
    /// Topic filters this shard's sessions subscribe to, in order.
    Topics {
        /// Only this filter.
        topic: Option<String>,
        /// How many to return at most.
        keep: usize,
    },
    /// Publish a message as the broker (not from a client). Answered with
    /// [`AdminReply::Published`].
    Publish(Box<AdminPublish>),
    /// Retained messages stored on this shard, in topic order.
    Retained {
        /// Only this topic.
        topic: Option<String>,
        /// How many to return at most.
        keep: usize,
    },
    /// Delete the retained message of a topic. Answered with [`AdminReply::Done`].
    DeleteRetained {
        /// Topic Name.
        topic: String,
    },
}

/// A step of a walk over a shard's sessions: the session slots `from..from + slots`. A listing
/// goes in steps so that no ring message costs a shard more than `slots` sessions' work; the
/// answer says where the next step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// First slot.
    pub from: u32,
    /// Slots to look at.
    pub slots: u32,
}

impl Scan {
    /// Every session at once (tests; a lookup by client id ignores the scan).
    pub const ALL: Scan = Scan {
        from: 0,
        slots: u32::MAX,
    };
}

/// Filters of [`AdminOp::Clients`], EMQX's query parameters of `GET /clients`.
#[derive(Debug, Clone, Default)]
pub struct ClientQuery {
    /// Exactly this client id.
    pub client_id: Option<String>,
    /// Exactly this user name.
    pub username: Option<String>,
    /// The client's IP address.
    pub ip_address: Option<std::net::IpAddr>,
    /// Connected (`Some(true)`) or not.
    pub connected: Option<bool>,
    /// The Clean Start flag of its last CONNECT.
    pub clean_start: Option<bool>,
    /// Protocol level: 3, 4 or 5.
    pub proto_ver: Option<u8>,
    /// Client id contains this.
    pub like_clientid: Option<String>,
    /// User name contains this.
    pub like_username: Option<String>,
    /// Connected at or after (Unix ms).
    pub gte_connected_at: Option<u64>,
    /// Connected at or before (Unix ms).
    pub lte_connected_at: Option<u64>,
}

/// Filters of [`AdminOp::Subscriptions`], EMQX's query parameters of `GET /subscriptions`.
#[derive(Debug, Clone, Default)]
pub struct SubQuery {
    /// Of this client.
    pub client_id: Option<String>,
    /// Exactly this filter (as subscribed, `$share/...` included).
    pub topic: Option<String>,
    /// With this QoS.
    pub qos: Option<QoS>,
    /// Shared subscriptions of this group.
    pub share_group: Option<String>,
    /// Filters that match this topic name.
    pub match_topic: Option<String>,
}

/// A message published through the API.
#[derive(Debug, Clone)]
pub struct AdminPublish {
    /// Topic Name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: net::mqtt::PublishProperties,
}

/// A shard's answer.
#[derive(Debug, Clone)]
pub enum AdminReply {
    /// [`AdminOp::Clients`]: how many match, and the first `keep`.
    Clients {
        /// Matching sessions in the scanned slots.
        total: usize,
        /// The first of them.
        page: Vec<ClientInfo>,
        /// Where the next step starts; `None` when the walk is over.
        next: Option<u32>,
    },
    /// [`AdminOp::Subscriptions`].
    Subscriptions {
        /// Matching subscriptions in the scanned slots.
        total: usize,
        /// The first of them.
        page: Vec<SubInfo>,
        /// Where the next step starts; `None` when the walk is over.
        next: Option<u32>,
    },
    /// [`AdminOp::Topics`].
    Topics {
        /// Matching filters on this shard.
        total: usize,
        /// The first of them.
        page: Vec<String>,
    },
    /// [`AdminOp::Retained`].
    Retained {
        /// Matching messages on this shard.
        total: usize,
        /// The first of them.
        page: Vec<RetainedInfo>,
    },
    /// Whether this shard had what the request named.
    Done(bool),
    /// [`AdminOp::Subscribe`]: `None` when the client is not connected here, else the
    /// SUBACK reason code.
    Subscribed(Option<u8>),
    /// [`AdminOp::Publish`]: whether any subscription matched, and the message's id.
    Published {
        /// Some subscriber (on any shard) matched.
        matched: bool,
        /// The broker's id of the message.
        id: u64,
    },
}

/// A session, as `GET /clients` shows it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client Identifier.
    pub client_id: String,
    /// User Name of its last connection.
    pub username: Option<String>,
    /// Its address (of the last connection).
    pub peer: Option<SocketAddr>,
    /// The listener its connection came in on (`tcp`, `ssl`, `ws`, `wss`, `quic`).
    pub listener: &'static str,
    /// Protocol level: 3, 4 or 5.
    pub proto_ver: u8,
    /// Keep Alive (seconds).
    pub keepalive: u16,
    /// Clean Start of its last CONNECT.
    pub clean_start: bool,
    /// Connected now.
    pub connected: bool,
    /// When it last connected (Unix ms).
    pub connected_at: u64,
    /// When it disconnected (Unix ms), if offline.
    pub disconnected_at: Option<u64>,
    /// Session Expiry Interval (seconds).
    pub expiry_interval: u32,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Outgoing QoS 1/2 messages in flight, and the window.
    pub inflight: usize,
    /// The inflight window.
    pub inflight_max: u16,
    /// Messages queued.
    pub mqueue_len: usize,
    /// The queue bound.
    pub mqueue_max: usize,
    /// Incoming QoS 2 awaiting PUBREL.
    pub awaiting_rel: usize,
    /// The shard it lives on.
    pub shard: u16,
}

/// A subscription, as `GET /subscriptions` shows it.
#[derive(Debug, Clone)]
pub struct SubInfo {
    /// Client Identifier.
    pub client_id: String,
    /// Topic filter as subscribed (`$share/g/...` included).
    pub topic: String,
    /// Options.
    pub options: SubscriptionOptions,
}

/// A retained message, as `GET /mqtt/retainer/messages` shows it.
#[derive(Debug, Clone)]
pub struct RetainedInfo {
    /// Topic Name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: u8,
    /// The broker's id of the message.
    pub id: u64,
}
