//! Configuration: EMQX key names, one schema, three sources.
//!
//! Every key is an entry in [`schema::KEYS`] (path, [`Kind`], default, one line of doc) and a
//! typed field of [`Config`]. Settings are taken from, in increasing precedence:
//!
//! 1. the built-in defaults;
//! 2. the TOML file (`--config FILE`), tables and dotted keys alike (`[mqtt]` +
//!    `max_inflight = 64`, or `mqtt.max_inflight = 64`);
//! 3. environment variables `BROKER_<KEY>`, levels separated by `__`
//!    (`BROKER_MQTT__MAX_INFLIGHT=64`);
//! 4. `--set KEY=VALUE` arguments, in order (`--set mqtt.max_inflight=64`).
//!
//! A later source wins. Unknown keys and values a key does not accept are errors that name the
//! source (`FILE:LINE`, `env VAR`, `--set ARG`) and the key: see [`ConfigError`]. The value
//! syntax (durations, sizes, addresses) is in [`value`].

mod error;
pub mod schema;
mod sources;
pub mod value;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, Origin};
pub use schema::{KEYS, Key};
pub use value::{Kind, Value};

use sources::Assignment;
use value::{FromRecord, FromValue, Input, Record};

/// The broker's configuration, validated and typed. Field docs name the key each comes from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `listeners.*`: where clients connect.
    pub listeners: Listeners,
    /// `node.*`: this broker process.
    pub node: Node,
    /// `mqtt.*`: protocol limits and features.
    pub mqtt: Mqtt,
    /// `log.*`: logging.
    pub log: Log,
    /// `shard.*`: the thread-per-core engine (our own keys, not EMQX's).
    pub shard: Shard,
    /// `retainer.*`: retained messages.
    pub retainer: Retainer,
    /// `sys_topics.*`: the `$SYS` topics.
    pub sys_topics: SysTopics,
    /// `delayed.*`: delayed publish.
    pub delayed: Delayed,
    /// `rewrite`: topic rewrite rules, in configuration order.
    pub rewrite: Vec<RewriteRule>,
    /// `auto_subscribe.*`: subscriptions made for every client.
    pub auto_subscribe: AutoSubscribe,
    /// `crl_cache.*`: CRLs fetched from distribution points.
    pub crl_cache: CrlCache,
    /// `durability.*`: what the log promises (our own keys).
    pub durability: Durability,
    /// `dashboard.*`: the control plane's HTTP listener.
    pub dashboard: Dashboard,
}

/// `dashboard.*`, with EMQX's names (`metrics_auth` is ours).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Dashboard {
    /// `listeners.http.enable`.
    pub http_enable: bool,
    /// `listeners.http.bind`.
    pub http_bind: SocketAddr,
    /// `listeners.https.enable`.
    pub https_enable: bool,
    /// `listeners.https.bind`.
    pub https_bind: SocketAddr,
    /// `listeners.https.ssl_options.certfile`: empty is none.
    pub https_certfile: PathBuf,
    /// `listeners.https.ssl_options.keyfile`: empty is none.
    pub https_keyfile: PathBuf,
    /// `default_username`: the user created, with a random password, when none exists.
    pub default_username: String,
    /// `token_expired_time`: lifetime of a bearer token.
    pub token_expired_time: Duration,
    /// `metrics_auth`: the Prometheus endpoints need credentials too.
    pub metrics_auth: bool,
}

/// `durability.*`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Durability {
    /// `fsync`: when records reach the disk, and so what an acknowledgement survives.
    pub fsync: Fsync,
    /// `fsync_interval`: how often `interval` fsyncs.
    pub fsync_interval: Duration,
}

/// `durability.fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fsync before acknowledging (survives power loss).
    Always,
    /// Written to the kernel before acknowledging, fsynced every `fsync_interval` (survives
    /// `kill -9`).
    Interval,
    /// Written to the kernel before acknowledging, never fsynced (survives `kill -9`).
    Never,
}

/// `crl_cache.*`, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CrlCache {
    /// `refresh_interval`.
    pub refresh_interval: Duration,
    /// `http_timeout`.
    pub http_timeout: Duration,
}

/// One `rewrite` rule, with EMQX's field names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RewriteRule {
    /// `action`: what the rule applies to.
    pub action: shard::rewrite::RewriteAction,
    /// `source_topic`: the filter a topic must match.
    pub source_topic: String,
    /// `re`: the regular expression (validated) whose captures `dest_topic` uses.
    pub re: String,
    /// `dest_topic`: the template of the new topic.
    pub dest_topic: String,
}

/// `auto_subscribe.*`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AutoSubscribe {
    /// `topics`.
    pub topics: Vec<AutoSubscribeTopic>,
}

/// One `auto_subscribe.topics` entry, with EMQX's field names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AutoSubscribeTopic {
    /// `topic`: the filter, with `${clientid}`, `${username}`, `${host}`, `${port}`.
    pub topic: String,
    /// `qos`.
    pub qos: net::mqtt::QoS,
    /// `rh`: Retain Handling, 0 to 2.
    pub rh: net::mqtt::RetainHandling,
    /// `rap`: Retain As Published.
    pub rap: bool,
    /// `nl`: No Local.
    pub nl: bool,
}

/// `delayed.*`, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delayed {
    /// `enable`.
    pub enable: bool,
    /// `max_delayed_messages`: 0 is unlimited.
    pub max_delayed_messages: u64,
}

/// `sys_topics.*`, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SysTopics {
    /// `sys_msg_interval`: statistics interval; zero is off.
    pub sys_msg_interval: Duration,
    /// `sys_heartbeat_interval`: uptime/datetime interval; zero is off.
    pub sys_heartbeat_interval: Duration,
    /// `sys_event_messages.client_connected`.
    pub client_connected: bool,
    /// `sys_event_messages.client_disconnected`.
    pub client_disconnected: bool,
}

/// `retainer.*`: the retained message store, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Retainer {
    /// `max_retained_messages`: most retained messages kept over all shards; 0 is unlimited.
    pub max_retained_messages: u64,
    /// `max_payload_size`: largest payload stored.
    pub max_payload_size: u32,
    /// `msg_expiry_interval`: lifetime of a retained message without its own expiry; zero is
    /// forever.
    pub msg_expiry_interval: Duration,
}

/// `listeners.*`, by transport and then by listener name, as in EMQX.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Listeners {
    /// `listeners.tcp.*`: MQTT over TCP.
    pub tcp: TcpListeners,
    /// `listeners.ssl.*`: MQTT over TLS.
    pub ssl: SslListeners,
    /// `listeners.ws.*`: MQTT over WebSocket.
    pub ws: WsListeners,
    /// `listeners.wss.*`: MQTT over WebSocket over TLS.
    pub wss: WssListeners,
    /// `listeners.quic.default.*`: MQTT over QUIC.
    pub quic: QuicListener,
}

/// `listeners.quic.default.*`, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QuicListener {
    /// `bind`.
    pub bind: SocketAddr,
    /// `enable`.
    pub enable: bool,
    /// `idle_timeout`.
    pub idle_timeout: Duration,
    /// `keep_alive_interval`.
    pub keep_alive_interval: Duration,
    /// `handshake_idle_timeout`.
    pub handshake_idle_timeout: Duration,
    /// `stateless_retry` (ours).
    pub stateless_retry: bool,
    /// `enable_0rtt` (ours).
    pub enable_0rtt: bool,
    /// `gso` (ours).
    pub gso: bool,
    /// `peer_bidi_stream_count`.
    pub peer_bidi_stream_count: u32,
    /// `peer_unidi_stream_count`.
    pub peer_unidi_stream_count: u32,
    /// `ssl_options.certfile`: empty is a generated self-signed certificate.
    pub certfile: PathBuf,
    /// `ssl_options.keyfile`.
    pub keyfile: PathBuf,
}

/// `listeners.ws.*`; `default` for now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WsListeners {
    /// `listeners.ws.default.*`.
    pub default: WsListener,
}

/// One MQTT over WebSocket listener.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WsListener {
    /// `bind`.
    pub bind: SocketAddr,
    /// `enable`.
    pub enable: bool,
    /// `max_connections`.
    pub max_connections: Limit,
    /// `websocket.*`.
    pub websocket: WebsocketOptions,
}

/// `listeners.wss.*`; `default` for now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WssListeners {
    /// `listeners.wss.default.*`.
    pub default: WssListener,
}

/// One MQTT over WebSocket over TLS listener.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WssListener {
    /// `bind`.
    pub bind: SocketAddr,
    /// `enable`.
    pub enable: bool,
    /// `max_connections`.
    pub max_connections: Limit,
    /// `ssl_options.*`.
    pub ssl_options: SslOptions,
    /// `websocket.*`.
    pub websocket: WebsocketOptions,
}

/// `websocket.*` of a WebSocket listener, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebsocketOptions {
    /// `mqtt_path`.
    pub mqtt_path: String,
    /// `supported_subprotocols`, split at commas.
    pub supported_subprotocols: Vec<String>,
    /// `fail_if_no_subprotocol`.
    pub fail_if_no_subprotocol: bool,
    /// `check_origin_enable`.
    pub check_origin_enable: bool,
    /// `allowed_origins`, split at commas.
    pub allowed_origins: Vec<String>,
    /// `proxy_address_header`, lower case; empty is none.
    pub proxy_address_header: String,
}

/// `listeners.ssl.*`; `default` for now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SslListeners {
    /// `listeners.ssl.default.*`.
    pub default: SslListener,
}

/// One MQTT over TLS listener.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SslListener {
    /// `bind`.
    pub bind: SocketAddr,
    /// `enable`.
    pub enable: bool,
    /// `max_connections`.
    pub max_connections: Limit,
    /// `ssl_options.*`.
    pub ssl_options: SslOptions,
}

/// `ssl_options.*` of a TLS listener, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SslOptions {
    /// `certfile`: empty is none.
    pub certfile: PathBuf,
    /// `keyfile`: empty is none.
    pub keyfile: PathBuf,
    /// `cacertfile`: empty is none.
    pub cacertfile: PathBuf,
    /// `verify`: whether client certificates are asked for and verified.
    pub verify_peer: bool,
    /// `fail_if_no_peer_cert`.
    pub fail_if_no_peer_cert: bool,
    /// `versions`: `tlsv1.3`, `tlsv1.2`.
    pub versions: Vec<&'static str>,
    /// `ciphers`: suite names; empty is all.
    pub ciphers: Vec<&'static str>,
    /// `handshake_timeout`.
    pub handshake_timeout: Duration,
    /// `enable_crl_check`.
    pub enable_crl_check: bool,
    /// `crlfile`: empty is none.
    pub crlfile: PathBuf,
    /// `ocsp.*`.
    pub ocsp: OcspOptions,
}

/// `ssl_options.ocsp.*`, with EMQX's names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OcspOptions {
    /// `enable_ocsp_stapling`.
    pub enable_ocsp_stapling: bool,
    /// `responder_url`: empty is none.
    pub responder_url: String,
    /// `issuer_pem`: empty is none.
    pub issuer_pem: PathBuf,
    /// `refresh_interval`.
    pub refresh_interval: Duration,
    /// `refresh_http_timeout`.
    pub refresh_http_timeout: Duration,
}

/// `listeners.tcp.*`. EMQX allows any number of named listeners; we have `default` for now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TcpListeners {
    /// `listeners.tcp.default.*`.
    pub default: TcpListener,
}

/// One MQTT over TCP listener.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TcpListener {
    /// `bind`: the address every shard binds (with `SO_REUSEPORT`).
    pub bind: SocketAddr,
    /// `enable`: whether the listener is started.
    pub enable: bool,
    /// `max_connections`: most connections held at once, over all shards.
    pub max_connections: Limit,
}

/// `"infinity"` or a positive maximum, as EMQX writes limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit.
    Infinity,
    /// At most this many (at least 1).
    Max(u64),
}

/// `node.*`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Node {
    /// `name`: this node's name (`$SYS/brokers/{node}/...`).
    pub name: String,
    /// `data_dir`: directory of the durable log.
    pub data_dir: PathBuf,
    /// `driver`: the shards' runtime driver.
    pub driver: Driver,
}

/// `node.driver`: which kernel interface the shard runtimes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll (logged once at start).
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll, even where io_uring is available.
    Epoll,
}

/// `mqtt.*`: protocol limits and features, with EMQX's names and meanings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Mqtt {
    /// `max_packet_size`: largest packet accepted, in bytes (1 to 268 435 456).
    pub max_packet_size: u32,
    /// `max_clientid_len`: longest client identifier accepted (23 to 65535).
    pub max_clientid_len: usize,
    /// `max_topic_levels`: most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// `max_qos_allowed`: highest QoS granted and accepted.
    pub max_qos_allowed: net::mqtt::QoS,
    /// `max_inflight`: outgoing QoS 1/2 window per session.
    pub max_inflight: u16,
    /// `max_mqueue_len`: messages queued per session behind the inflight window.
    pub max_mqueue_len: usize,
    /// `mqueue_store_qos0`: queue QoS 0 messages too.
    pub mqueue_store_qos0: bool,
    /// `max_awaiting_rel`: incoming QoS 2 messages awaiting PUBREL per session.
    pub max_awaiting_rel: usize,
    /// `await_rel_timeout`: how long an incoming QoS 2 message waits for PUBREL.
    pub await_rel_timeout: Duration,
    /// `retry_interval`: retransmission interval for unacknowledged QoS 1/2 messages.
    pub retry_interval: Duration,
    /// `idle_timeout`: how long a new connection may take to send CONNECT.
    pub idle_timeout: Duration,
    /// `keepalive_multiplier`: Keep Alive is enforced at this multiple of the interval.
    pub keepalive_multiplier: f64,
    /// `session_expiry_interval`: session expiry for MQTT 3.1/3.1.1 persistent sessions.
    pub session_expiry_interval: Duration,
    /// `server_keepalive`: Server Keep Alive in seconds imposed on MQTT 5 clients, if any.
    pub server_keepalive: Option<u16>,
    /// `max_topic_alias`: Topic Alias Maximum advertised to MQTT 5 clients.
    pub max_topic_alias: u16,
    /// `wildcard_subscription`: wildcard subscriptions allowed.
    pub wildcard_subscription: bool,
    /// `shared_subscription`: shared subscriptions allowed.
    pub shared_subscription: bool,
    /// `exclusive_subscription`: `$exclusive/{filter}` subscriptions.
    pub exclusive_subscription: bool,
    /// `subscription_identifiers`: Subscription Identifiers accepted (our key).
    pub subscription_identifiers: bool,
    /// `response_information`: Response Information for clients that request it.
    pub response_information: String,
    /// `shared_subscription_strategy`: how a shared subscription group picks a member.
    pub shared_subscription_strategy: shard::settings::SharedStrategy,
    /// `retain_available`: retained messages supported.
    pub retain_available: bool,
    /// `peer_cert_as_username`: which part of a client certificate becomes the username.
    pub peer_cert_as_username: Option<shard::tls::CertField>,
    /// `peer_cert_as_clientid`: which part of a client certificate becomes the client id.
    pub peer_cert_as_clientid: Option<shard::tls::CertField>,
}

/// `log.*`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Log {
    /// `level`: least severe level written.
    pub level: LogLevel,
    /// `format`: text or JSON lines.
    pub format: LogFormat,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-26T06:21:03.512Z INFO  [main] broker::cli: message`.
    Text,
    /// `{"time":"…","level":"INFO","thread":"main","target":"broker::cli","msg":"…"}`.
    Json,
}

/// `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Also start-up and lifecycle information.
    Info,
    /// Everything, for debugging.
    Debug,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Error => log::LevelFilter::Error,
            Self::Warn => log::LevelFilter::Warn,
            Self::Info => log::LevelFilter::Info,
            Self::Debug => log::LevelFilter::Debug,
        }
    }
}

/// `shard.*`: our own keys for the thread-per-core engine.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Shard {
    /// `ring_capacity`: slots per cross-shard ring, a power of two.
    pub ring_capacity: usize,
    /// `max_events_per_turn`: ring messages and completions handled per loop turn.
    pub max_events_per_turn: usize,
    /// `pin_cpus`: pin each shard thread to its own CPU.
    pub pin_cpus: bool,
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then the `BROKER_*` variables
    /// among `env`, then `sets` (`KEY=VALUE` each). Pass `std::env::vars()` (or a fixed list in
    /// tests) as `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        Resolved::load(file, env, sets).map(Resolved::into_config)
    }

    /// Builds the typed configuration from one value per key, in [`KEYS`] order. Every key
    /// must be read exactly once: a key without a field is reported like a mismatched one.
    fn from_values(settings: &[Setting]) -> Result<Self, ConfigError> {
        let v = Values {
            settings,
            read: RefCell::new(vec![false; settings.len()]),
        };
        let config = Self {
            listeners: Listeners {
                tcp: TcpListeners {
                    default: TcpListener {
                        bind: v.get("listeners.tcp.default.bind")?,
                        enable: v.get("listeners.tcp.default.enable")?,
                        max_connections: v.get("listeners.tcp.default.max_connections")?,
                    },
                },
                ssl: SslListeners {
                    default: SslListener {
                        bind: v.get("listeners.ssl.default.bind")?,
                        enable: v.get("listeners.ssl.default.enable")?,
                        max_connections: v.get("listeners.ssl.default.max_connections")?,
                        ssl_options: ssl_options(&v, "listeners.ssl.default")?,
                    },
                },
                ws: WsListeners {
                    default: WsListener {
                        bind: v.get("listeners.ws.default.bind")?,
                        enable: v.get("listeners.ws.default.enable")?,
                        max_connections: v.get("listeners.ws.default.max_connections")?,
                        websocket: websocket_options(&v, "listeners.ws.default")?,
                    },
                },
                quic: QuicListener {
                    bind: v.get("listeners.quic.default.bind")?,
                    enable: v.get("listeners.quic.default.enable")?,
                    idle_timeout: v.get("listeners.quic.default.idle_timeout")?,
                    keep_alive_interval: v.get("listeners.quic.default.keep_alive_interval")?,
                    handshake_idle_timeout: v
                        .get("listeners.quic.default.handshake_idle_timeout")?,
                    stateless_retry: v.get("listeners.quic.default.stateless_retry")?,
                    enable_0rtt: v.get("listeners.quic.default.enable_0rtt")?,
                    gso: v.get("listeners.quic.default.gso")?,
                    peer_bidi_stream_count: v
                        .get("listeners.quic.default.peer_bidi_stream_count")?,
                    peer_unidi_stream_count: v
                        .get("listeners.quic.default.peer_unidi_stream_count")?,
                    certfile: v.get("listeners.quic.default.ssl_options.certfile")?,
                    keyfile: v.get("listeners.quic.default.ssl_options.keyfile")?,
                },
                wss: WssListeners {
                    default: WssListener {
                        bind: v.get("listeners.wss.default.bind")?,
                        enable: v.get("listeners.wss.default.enable")?,
                        max_connections: v.get("listeners.wss.default.max_connections")?,
                        ssl_options: ssl_options(&v, "listeners.wss.default")?,
                        websocket: websocket_options(&v, "listeners.wss.default")?,
                    },
                },
            },
            node: Node {
                name: v.get("node.name")?,
                data_dir: v.get("node.data_dir")?,
                driver: v.get("node.driver")?,
            },
            mqtt: Mqtt {
                max_packet_size: v.get("mqtt.max_packet_size")?,
                max_clientid_len: v.get("mqtt.max_clientid_len")?,
                max_topic_levels: v.get("mqtt.max_topic_levels")?,
                max_qos_allowed: v.get("mqtt.max_qos_allowed")?,
                max_inflight: v.get("mqtt.max_inflight")?,
                max_mqueue_len: v.get("mqtt.max_mqueue_len")?,
                mqueue_store_qos0: v.get("mqtt.mqueue_store_qos0")?,
                max_awaiting_rel: v.get("mqtt.max_awaiting_rel")?,
                await_rel_timeout: v.get("mqtt.await_rel_timeout")?,
                retry_interval: v.get("mqtt.retry_interval")?,
                idle_timeout: v.get("mqtt.idle_timeout")?,
                keepalive_multiplier: v.get("mqtt.keepalive_multiplier")?,
                session_expiry_interval: v.get("mqtt.session_expiry_interval")?,
                server_keepalive: v.get("mqtt.server_keepalive")?,
                max_topic_alias: v.get("mqtt.max_topic_alias")?,
                wildcard_subscription: v.get("mqtt.wildcard_subscription")?,
                shared_subscription: v.get("mqtt.shared_subscription")?,
                shared_subscription_strategy: v.get("mqtt.shared_subscription_strategy")?,
                subscription_identifiers: v.get("mqtt.subscription_identifiers")?,
                exclusive_subscription: v.get("mqtt.exclusive_subscription")?,
                response_information: v.get("mqtt.response_information")?,
                retain_available: v.get("mqtt.retain_available")?,
                peer_cert_as_username: v.get::<CertAs>("mqtt.peer_cert_as_username")?.0,
                peer_cert_as_clientid: v.get::<CertAs>("mqtt.peer_cert_as_clientid")?.0,
            },
            log: Log {
                level: v.get("log.level")?,
                format: v.get("log.format")?,
            },
            shard: Shard {
                ring_capacity: v.get("shard.ring_capacity")?,
                max_events_per_turn: v.get("shard.max_events_per_turn")?,
                pin_cpus: v.get("shard.pin_cpus")?,
            },
            sys_topics: SysTopics {
                sys_msg_interval: v.get("sys_topics.sys_msg_interval")?,
                sys_heartbeat_interval: v.get("sys_topics.sys_heartbeat_interval")?,
                client_connected: v.get("sys_topics.sys_event_messages.client_connected")?,
                client_disconnected: v.get("sys_topics.sys_event_messages.client_disconnected")?,
            },
            delayed: Delayed {
                enable: v.get("delayed.enable")?,
                max_delayed_messages: v.get("delayed.max_delayed_messages")?,
            },
            rewrite: v.get("rewrite")?,
            auto_subscribe: AutoSubscribe {
                topics: v.get("auto_subscribe.topics")?,
            },
            crl_cache: CrlCache {
                refresh_interval: v.get("crl_cache.refresh_interval")?,
                http_timeout: v.get("crl_cache.http_timeout")?,
            },
            durability: Durability {
                fsync: v.get("durability.fsync")?,
                fsync_interval: v.get("durability.fsync_interval")?,
            },
            dashboard: Dashboard {
                http_enable: v.get("dashboard.listeners.http.enable")?,
                http_bind: v.get("dashboard.listeners.http.bind")?,
                https_enable: v.get("dashboard.listeners.https.enable")?,
                https_bind: v.get("dashboard.listeners.https.bind")?,
                https_certfile: v.get("dashboard.listeners.https.ssl_options.certfile")?,
                https_keyfile: v.get("dashboard.listeners.https.ssl_options.keyfile")?,
                default_username: v.get("dashboard.default_username")?,
                token_expired_time: v.get("dashboard.token_expired_time")?,
                metrics_auth: v.get("dashboard.metrics_auth")?,
            },
            retainer: Retainer {
                max_retained_messages: v.get("retainer.max_retained_messages")?,
                max_payload_size: v.get("retainer.max_payload_size")?,
                msg_expiry_interval: v.get("retainer.msg_expiry_interval")?,
            },
        };
        v.all_read()?;
        Ok(config)
    }
}

impl Default for Config {
    /// The built-in defaults: what `broker run` uses with no file, variable or `--set`.
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        // Invariant: every default in the schema parses and fits its field; the schema tests
        // (`config::tests::defaults`) check exactly this.
        Resolved::defaults()
            .expect("the built-in defaults are valid")
            .into_config()
    }
}

/// `PREFIX.ssl_options.*` of a TLS listener.
fn ssl_options(v: &Values<'_>, prefix: &str) -> Result<SslOptions, ConfigError> {
    let k = |name: &str| -> Result<&'static str, ConfigError> {
        let path = format!("{prefix}.ssl_options.{name}");
        schema::find(&path)
            .map(|key| key.path)
            .ok_or(ConfigError::Schema { key: "ssl_options" })
    };
    Ok(SslOptions {
        certfile: v.get(k("certfile")?)?,
        keyfile: v.get(k("keyfile")?)?,
        cacertfile: v.get(k("cacertfile")?)?,
        verify_peer: v.get::<Verify>(k("verify")?)? == Verify::Peer,
        fail_if_no_peer_cert: v.get(k("fail_if_no_peer_cert")?)?,
        versions: v.get(k("versions")?)?,
        ciphers: v.get(k("ciphers")?)?,
        handshake_timeout: v.get(k("handshake_timeout")?)?,
        enable_crl_check: v.get(k("enable_crl_check")?)?,
        crlfile: v.get(k("crlfile")?)?,
        ocsp: OcspOptions {
            enable_ocsp_stapling: v.get(k("ocsp.enable_ocsp_stapling")?)?,
            responder_url: v.get(k("ocsp.responder_url")?)?,
            issuer_pem: v.get(k("ocsp.issuer_pem")?)?,
            refresh_interval: v.get(k("ocsp.refresh_interval")?)?,
            refresh_http_timeout: v.get(k("ocsp.refresh_http_timeout")?)?,
        },
    })
}

/// `PREFIX.websocket.*` of a WebSocket listener.
fn websocket_options(v: &Values<'_>, prefix: &str) -> Result<WebsocketOptions, ConfigError> {
    let k = |name: &str| -> Result<&'static str, ConfigError> {
        let path = format!("{prefix}.websocket.{name}");
        schema::find(&path)
            .map(|key| key.path)
            .ok_or(ConfigError::Schema { key: "websocket" })
    };
    let list = |text: String| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(WebsocketOptions {
        mqtt_path: v.get(k("mqtt_path")?)?,
        supported_subprotocols: list(v.get(k("supported_subprotocols")?)?),
        fail_if_no_subprotocol: v.get(k("fail_if_no_subprotocol")?)?,
        check_origin_enable: v.get(k("check_origin_enable")?)?,
        allowed_origins: list(v.get(k("allowed_origins")?)?),
        proxy_address_header: v
            .get::<String>(k("proxy_address_header")?)?
            .to_ascii_lowercase(),
    })
}

/// Reads the values of [`Config::from_values`] by key path, keeping track of what was read.
struct Values<'a> {
    settings: &'a [Setting],
    read: RefCell<Vec<bool>>,
}

impl Values<'_> {
    fn get<T: FromValue>(&self, key: &'static str) -> Result<T, ConfigError> {
        let index = self
            .settings
            .iter()
            .position(|s| s.key.path == key)
            .ok_or(ConfigError::Schema { key })?;
        if let Some(read) = self.read.borrow_mut().get_mut(index) {
            *read = true;
        }
        T::from_value(&self.settings[index].value).ok_or(ConfigError::Schema { key })
    }

    fn all_read(&self) -> Result<(), ConfigError> {
        let read = self.read.borrow();
        match self
            .settings
            .iter()
            .zip(read.iter())
            .find(|(_, read)| !**read)
        {
            Some((unread, _)) => Err(ConfigError::Schema {
                key: unread.key.path,
            }),
            None => Ok(()),
        }
    }
}

macro_rules! from_enum {
    ($t:ty { $($name:literal => $variant:expr),* $(,)? }) => {
        impl FromValue for $t {
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    $(Value::Enum($name) => Some($variant),)*
                    _ => None,
                }
            }
        }
    };
}
/// `mqtt.peer_cert_as_*`: `disabled` or a certificate field.
struct CertAs(Option<shard::tls::CertField>);
from_enum!(CertAs {
    "disabled" => CertAs(None),
    "cn" => CertAs(Some(shard::tls::CertField::Cn)),
    "dn" => CertAs(Some(shard::tls::CertField::Dn)),
    "crt" => CertAs(Some(shard::tls::CertField::Crt)),
    "pem" => CertAs(Some(shard::tls::CertField::Pem)),
    "md5" => CertAs(Some(shard::tls::CertField::Md5)),
});

/// `ssl_options.verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    None,
    Peer,
}
from_enum!(Verify { "verify_none" => Verify::None, "verify_peer" => Verify::Peer });
from_enum!(Driver { "auto" => Driver::Auto, "io_uring" => Driver::IoUring, "epoll" => Driver::Epoll });
from_enum!(LogFormat { "text" => LogFormat::Text, "json" => LogFormat::Json });
from_enum!(Fsync { "always" => Fsync::Always, "interval" => Fsync::Interval, "never" => Fsync::Never });
from_enum!(shard::settings::SharedStrategy {
    "random" => shard::settings::SharedStrategy::Random,
    "round_robin" => shard::settings::SharedStrategy::RoundRobin,
    "round_robin_per_group" => shard::settings::SharedStrategy::RoundRobinPerGroup,
    "sticky" => shard::settings::SharedStrategy::Sticky,
    "local" => shard::settings::SharedStrategy::Local,
    "hash_topic" => shard::settings::SharedStrategy::HashTopic,
    "hash_clientid" => shard::settings::SharedStrategy::HashClientid,
});
from_enum!(LogLevel {
    "error" => LogLevel::Error,
    "warn" => LogLevel::Warn,
    "info" => LogLevel::Info,
    "debug" => LogLevel::Debug,
});

from_enum!(shard::rewrite::RewriteAction {
    "publish" => shard::rewrite::RewriteAction::Publish,
    "subscribe" => shard::rewrite::RewriteAction::Subscribe,
    "all" => shard::rewrite::RewriteAction::All,
});

impl FromRecord for RewriteRule {
    fn from_record(r: &Record) -> Option<Self> {
        Some(Self {
            action: FromValue::from_value(r.get("action")?)?,
            source_topic: FromValue::from_value(r.get("source_topic")?)?,
            re: FromValue::from_value(r.get("re")?)?,
            dest_topic: FromValue::from_value(r.get("dest_topic")?)?,
        })
    }
}

impl FromRecord for AutoSubscribeTopic {
    fn from_record(r: &Record) -> Option<Self> {
        let int = |name: &str| -> Option<u8> { FromValue::from_value(r.get(name)?) };
        Some(Self {
            topic: FromValue::from_value(r.get("topic")?)?,
            qos: FromValue::from_value(r.get("qos")?)?,
            rh: match int("rh")? {
                0 => net::mqtt::RetainHandling::SendAtSubscribe,
                1 => net::mqtt::RetainHandling::SendIfNew,
                2 => net::mqtt::RetainHandling::DoNotSend,
                _ => return None,
            },
            rap: int("rap")? == 1,
            nl: int("nl")? == 1,
        })
    }
}

impl FromValue for Limit {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Infinity => Some(Self::Infinity),
            Value::Int(n) => Some(Self::Max(*n)),
            _ => None,
        }
    }
}

/// The effective value of one key and where it came from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Setting {
    /// The key.
    pub key: &'static Key,
    /// Its effective value.
    pub value: Value,
    /// The source that set it last.
    pub origin: Origin,
}

impl Setting {
    /// Whether the effective value differs from the built-in default.
    pub fn is_changed(&self) -> bool {
        self.key
            .kind
            .parse(&Input::Str(self.key.default))
            .is_ok_and(|d| d != self.value)
    }
}

/// The outcome of loading: every key's effective value and origin, and the typed [`Config`]
/// built from them. `broker config check` prints it; `broker run` logs what differs from the
/// defaults.
#[derive(Debug, Clone)]
pub struct Resolved {
    settings: Vec<Setting>,
    config: Config,
}

impl Resolved {
    /// Loads the configuration as [`Config::load`] does, keeping each key's origin.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let mut layers = Vec::new();
        if let Some(path) = file {
            layers.push(sources::file(path)?);
        }
        layers.push(sources::env(env)?);
        layers.push(sources::sets(sets)?);
        Self::from_layers(layers)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_layers(Vec::new())
    }

    fn from_layers(layers: Vec<Vec<Assignment>>) -> Result<Self, ConfigError> {
        let mut settings = KEYS
            .iter()
            .map(|key| {
                let value = key
                    .kind
                    .parse(&Input::Str(key.default))
                    .map_err(|_| ConfigError::Schema { key: key.path })?;
                Ok(Setting {
                    key,
                    value,
                    origin: Origin::Default,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        for assignment in layers.into_iter().flatten() {
            let slot = settings
                .iter_mut()
                .find(|s| s.key.path == assignment.key.path)
                .ok_or(ConfigError::Schema {
                    key: assignment.key.path,
                })?;
            slot.value = assignment.value;
            slot.origin = assignment.origin;
        }
        let config = Config::from_values(&settings)?;
        Ok(Self { settings, config })
    }

    /// The typed configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The typed configuration, by value.
    pub fn into_config(self) -> Config {
        self.config
    }

    /// Every key's effective value and origin, in [`KEYS`] order.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The settings whose value differs from the built-in default.
    pub fn changed(&self) -> impl Iterator<Item = &Setting> {
        self.settings.iter().filter(|s| s.is_changed())
    }

    /// The effective configuration as a TOML file that `--config` reads back to the same
    /// values. Values not from the defaults carry a comment naming their origin.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Effective configuration: defaults < --config file < BROKER_* environment < --set.\n",
        );
        let mut table = None;
        for setting in &self.settings {
            let (parent, leaf) = setting
                .key
                .path
                .rsplit_once('.')
                .unwrap_or(("", setting.key.path));
            // Top-level keys come first in `KEYS`, before any table header.
            if table != Some(parent) && !parent.is_empty() {
                out.push_str(&format!("\n[{parent}]\n"));
                table = Some(parent);
            }
            out.push_str(&format!("{leaf} = {}", setting.value.to_toml()));
            if setting.origin != Origin::Default {
                // An origin is one line of a comment even if a value holds a line break.
                let origin = setting
                    .origin
                    .to_string()
                    .replace('\n', "\\n")
                    .replace('\r', "\\r");
                out.push_str(&format!("  # {origin}"));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests;
