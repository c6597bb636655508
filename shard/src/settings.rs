//! The MQTT settings a shard enforces, already parsed and validated by the broker's
//! configuration (EMQX key names in brackets).

use std::sync::Arc;
use std::time::Duration;

use crate::rewrite::{AutoSubscribe, Rewrite};

/// Per-shard protocol settings. Cheap to clone; every shard holds its own copy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest packet accepted and advertised (`mqtt.max_packet_size`).
    pub max_packet_size: u32,
    /// Longest client identifier accepted (`mqtt.max_clientid_len`).
    pub max_clientid_len: usize,
    /// Most levels in a topic name or filter (`mqtt.max_topic_levels`).
    pub max_topic_levels: usize,
    /// Highest QoS granted (`mqtt.max_qos_allowed`).
    pub max_qos_allowed: net::mqtt::QoS,
    /// Outgoing QoS 1/2 window per session; the client's Receive Maximum lowers it
    /// (`mqtt.max_inflight`).
    pub max_inflight: u16,
    /// Messages queued per session beyond the inflight window (`mqtt.max_mqueue_len`).
    pub max_mqueue_len: usize,
    /// Queue QoS 0 messages for offline sessions (`mqtt.mqueue_store_qos0`).
    pub mqueue_store_qos0: bool,
    /// Incoming QoS 2 messages awaiting PUBREL per session (`mqtt.max_awaiting_rel`).
    pub max_awaiting_rel: usize,
    /// How long an incoming QoS 2 message waits for PUBREL (`mqtt.await_rel_timeout`).
    pub await_rel_timeout: Duration,
    /// Retransmission interval for unacknowledged outgoing QoS 1/2 (`mqtt.retry_interval`).
    pub retry_interval: Duration,
    /// How long a new connection may take to send CONNECT (`mqtt.idle_timeout`).
    pub idle_timeout: Duration,
    /// Keep Alive is enforced at this multiple of the negotiated interval
    /// (`mqtt.keepalive_multiplier`).
    pub keepalive_multiplier: f64,
    /// Session expiry for MQTT 3.1/3.1.1 clients connecting with Clean Session 0
    /// (`mqtt.session_expiry_interval`).
    pub session_expiry_interval: Duration,
    /// Keep Alive imposed on clients (Server Keep Alive), if any (`mqtt.server_keepalive`).
    pub server_keepalive: Option<u16>,
    /// Topic Alias Maximum advertised to clients (`mqtt.max_topic_alias`).
    pub max_topic_alias: u16,
    /// `$exclusive/{filter}` subscriptions: one subscriber at a time
    /// (`mqtt.exclusive_subscription`).
    pub exclusive_subscription: bool,
    /// Subscription Identifiers accepted (`mqtt.subscription_identifiers`, ours).
    pub subscription_identifiers: bool,
    /// Response Information sent to MQTT 5 clients that ask for it; empty is off
    /// (`mqtt.response_information`).
    pub response_information: String,
    /// Give topics sent to MQTT 5 clients aliases, up to the client's Topic Alias Maximum.
    pub send_topic_aliases: bool,
    /// Wildcard subscriptions allowed (`mqtt.wildcard_subscription`).
    pub wildcard_subscription: bool,
    /// Shared subscriptions allowed (`mqtt.shared_subscription`).
    pub shared_subscription: bool,
    /// How a shared subscription group picks the member for a message
    /// (`mqtt.shared_subscription_strategy`).
    pub shared_strategy: SharedStrategy,
    /// Retained messages supported (`mqtt.retain_available`).
    pub retain_available: bool,
    /// Most retained messages this shard stores; 0 is unlimited
    /// (`retainer.max_retained_messages` / shards).
    pub max_retained_messages: usize,
    /// Largest payload stored as a retained message (`retainer.max_payload_size`).
    pub max_retained_payload: usize,
    /// Lifetime of a retained message without its own expiry; zero is forever
    /// (`retainer.msg_expiry_interval`).
    pub retained_expiry: Duration,
    /// Delayed publish (`$delayed/{seconds}/{topic}`) enabled (`delayed.enable`).
    pub delayed_enable: bool,
    /// Most delayed messages this shard holds; 0 is unlimited
    /// (`delayed.max_delayed_messages` / shards).
    pub max_delayed_messages: usize,
    /// This node's name, in `$SYS/brokers/{node}/...` (`node.name`).
    pub node_name: String,
    /// Interval of the `$SYS` statistics messages; zero turns them off
    /// (`sys_topics.sys_msg_interval`).
    pub sys_msg_interval: Duration,
    /// Interval of the `$SYS` uptime and datetime heartbeat; zero turns it off
    /// (`sys_topics.sys_heartbeat_interval`).
    pub sys_heartbeat_interval: Duration,
    /// Publish `$SYS/brokers/{node}/clients/{clientid}/connected` and `.../disconnected`
    /// (`sys_topics.sys_event_messages.client_connected` / `client_disconnected`).
    pub sys_client_events: (bool, bool),
    /// Log one line per connection established and ended ([`crate::Shard::poll_log`]).
    pub log_connections: bool,
    /// Take the username from the client's TLS certificate (`mqtt.peer_cert_as_username`).
    pub peer_cert_as_username: Option<crate::tls::CertField>,
    /// Take the client id from the client's TLS certificate (`mqtt.peer_cert_as_clientid`).
    pub peer_cert_as_clientid: Option<crate::tls::CertField>,
    /// Enhanced authentication methods (MQTT 5 AUTH); `None` refuses every method with 0x8C.
    pub enhanced_auth: Option<Arc<dyn crate::auth::EnhancedAuth>>,
    /// Topic rewrite rules (`rewrite`).
    pub rewrite: Arc<Rewrite>,
    /// Subscriptions every client gets when it connects (`auto_subscribe.topics`).
    pub auto_subscribe: Arc<[AutoSubscribe]>,
    /// Bytes buffered for a connection's socket beyond which QoS 0 deliveries are dropped
    /// rather than queued.
    pub max_write_buffer: usize,
    /// Packets processed per connection per event-loop turn before yielding.
    pub max_packets_per_read: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            max_clientid_len: 65535,
            max_topic_levels: 128,
            max_qos_allowed: net::mqtt::QoS::ExactlyOnce,
            max_inflight: 32,
            max_mqueue_len: 1000,
            mqueue_store_qos0: true,
            max_awaiting_rel: 100,
            await_rel_timeout: Duration::from_secs(300),
            retry_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(15),
            keepalive_multiplier: 1.5,
            session_expiry_interval: Duration::from_secs(2 * 3600),
            server_keepalive: None,
            max_topic_alias: 65535,
            exclusive_subscription: false,
            subscription_identifiers: true,
            response_information: String::new(),
            send_topic_aliases: true,
            wildcard_subscription: true,
            shared_subscription: true,
            shared_strategy: SharedStrategy::RoundRobin,
            retain_available: true,
            max_retained_messages: 0,
            max_retained_payload: 1024 * 1024,
            retained_expiry: Duration::ZERO,
            delayed_enable: true,
            max_delayed_messages: 0,
            node_name: "broker@127.0.0.1".to_owned(),
            sys_msg_interval: Duration::from_secs(60),
            sys_heartbeat_interval: Duration::from_secs(30),
            sys_client_events: (true, true),
            log_connections: false,
            peer_cert_as_username: None,
            peer_cert_as_clientid: None,
            enhanced_auth: None,
            rewrite: Arc::default(),
            auto_subscribe: Arc::new([]),
            max_write_buffer: 4 * 1024 * 1024,
            max_packets_per_read: 256,
        }
    }
}

/// EMQX's shared subscription strategies (`mqtt.shared_subscription_strategy`). The choice is
/// made on the shard where the message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStrategy {
    /// A member at random.
    Random,
    /// Members in turn, the turn kept per publishing shard and group.
    RoundRobin,
    /// Members in turn, the turn kept per group (on each publishing shard).
    RoundRobinPerGroup,
    /// The same member until it leaves.
    Sticky,
    /// A member on the publishing shard if there is one, else at random.
    Local,
    /// By a hash of the topic: one topic always goes to the same member.
    HashTopic,
    /// By a hash of the publisher's client id.
    HashClientid,
}
