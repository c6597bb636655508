//! The table of known keys: the single source of the defaults, the validation, the
//! `broker config keys` listing and the reference in `docs/configuration.md`.
//!
//! Adding a setting takes one entry in [`KEYS`] and one typed field in [`super::Config`] (read
//! in `Config::from_values`); the tests check that the two agree.

use std::sync::LazyLock;
use std::time::Duration;

use super::value::{DURATION_MAX, Field, Kind};

/// One known configuration key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    /// The dotted path, with EMQX's name where EMQX has the setting: `mqtt.max_inflight`.
    pub path: &'static str,
    /// What the key accepts.
    pub kind: Kind,
    /// The default, in the syntax of a `--set` value or environment variable.
    pub default: &'static str,
    /// One line on what the key does.
    pub doc: &'static str,
}

impl Key {
    /// The environment variable that sets this key: `BROKER_MQTT__MAX_INFLIGHT`.
    pub fn env_var(&self) -> String {
        format!(
            "{ENV_PREFIX}{}",
            self.path.replace('.', "__").to_ascii_uppercase()
        )
    }
}

/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "BROKER_";

const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}

const fn duration(min: Duration, max: Duration) -> Kind {
    Kind::Duration { min, max }
}

const ANY_DURATION: Kind = duration(Duration::ZERO, DURATION_MAX);

/// Largest value of a 32-bit unsigned integer, as the `u64` the kinds use.
const U32_MAX: u64 = u32::MAX as u64;

/// The fields of a `rewrite` rule.
const REWRITE_FIELDS: &[Field] = &[
    Field {
        name: "action",
        kind: Kind::Enum(&["publish", "subscribe", "all"]),
        default: None,
    },
    Field {
        name: "source_topic",
        kind: Kind::Filter,
        default: None,
    },
    Field {
        name: "re",
        kind: Kind::Regex,
        default: None,
    },
    Field {
        name: "dest_topic",
        kind: Kind::Filter,
        default: None,
    },
];

/// The fields of an `auto_subscribe.topics` entry, with EMQX's names and defaults.
const AUTO_SUBSCRIBE_FIELDS: &[Field] = &[
    Field {
        name: "topic",
        kind: Kind::Filter,
        default: None,
    },
    Field {
        name: "qos",
        kind: int(0, 2),
        default: Some("0"),
    },
    Field {
        name: "rh",
        kind: int(0, 2),
        default: Some("0"),
    },
    Field {
        name: "rap",
        kind: int(0, 1),
        default: Some("0"),
    },
    Field {
        name: "nl",
        kind: int(0, 1),
        default: Some("0"),
    },
];

/// The cipher suite names `ssl_options.ciphers` accepts: each of rustls' suites by its OpenSSL
/// name (as EMQX lists them) and by its IANA name.
pub const CIPHERS: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The keys of one TLS listener's `ssl_options`, under `$p` (`listeners.ssl.default`).
macro_rules! ssl_option_keys {
    ($p:literal) => {
        [
            Key {
                path: concat!($p, ".ssl_options.certfile"),
                kind: Kind::OptPath,
                default: "",
                doc: "PEM file with the server certificate chain (leaf first); \"\" leaves the \
                      listener off.",
            },
            Key {
                path: concat!($p, ".ssl_options.keyfile"),
                kind: Kind::OptPath,
                default: "",
                doc: "PEM file with the server certificate's private key (PKCS#8, PKCS#1 or \
                      SEC1).",
            },
            Key {
                path: concat!($p, ".ssl_options.cacertfile"),
                kind: Kind::OptPath,
                default: "",
                doc: "PEM file with the CA certificates client certificates are verified \
                      against (needed by verify_peer).",
            },
            Key {
                path: concat!($p, ".ssl_options.verify"),
                kind: Kind::Enum(&["verify_none", "verify_peer"]),
                default: "verify_none",
                doc: "verify_peer asks clients for a certificate and verifies it against \
                      cacertfile.",
            },
            Key {
                path: concat!($p, ".ssl_options.fail_if_no_peer_cert"),
                kind: Kind::Bool,
                default: "false",
                doc: "With verify_peer: refuse clients that send no certificate.",
            },
            Key {
                path: concat!($p, ".ssl_options.versions"),
                kind: Kind::Names(&["tlsv1.3", "tlsv1.2"]),
                default: "[\"tlsv1.3\", \"tlsv1.2\"]",
                doc: "TLS versions offered.",
            },
            Key {
                path: concat!($p, ".ssl_options.ciphers"),
                kind: Kind::Names(CIPHERS),
                default: "[]",
                doc: "Cipher suites offered, OpenSSL or IANA names; [] offers all of rustls' \
                      (AEAD suites with ECDHE only).",
            },
            Key {
                path: concat!($p, ".ssl_options.handshake_timeout"),
                kind: duration(Duration::from_millis(100), DURATION_MAX),
                default: "15s",
                doc: "How long a TLS handshake may take before the connection is closed.",
            },
            Key {
                path: concat!($p, ".ssl_options.enable_crl_check"),
                kind: Kind::Bool,
                default: "false",
                doc: "With verify_peer: refuse client certificates revoked by a CRL in \
                      crlfile.",
            },
            Key {
                path: concat!($p, ".ssl_options.crlfile"),
                kind: Kind::OptPath,
                default: "",
                doc: "PEM file with certificate revocation lists, read with enable_crl_check \
                      (ours).",
            },
            Key {
                path: concat!($p, ".ssl_options.ocsp.enable_ocsp_stapling"),
                kind: Kind::Bool,
                default: "false",
                doc: "Staple an OCSP response for the server certificate to every handshake.",
            },
            Key {
                path: concat!($p, ".ssl_options.ocsp.responder_url"),
                kind: Kind::Text,
                default: "",
                doc: "http:// URL of the OCSP responder (required with stapling).",
            },
            Key {
                path: concat!($p, ".ssl_options.ocsp.issuer_pem"),
                kind: Kind::OptPath,
                default: "",
                doc: "PEM file with the certificate of the server certificate's issuer \
                      (required with stapling).",
            },
            Key {
                path: concat!($p, ".ssl_options.ocsp.refresh_interval"),
                kind: duration(Duration::from_secs(1), DURATION_MAX),
                default: "300s",
                doc: "How often the OCSP response is fetched again.",
            },
            Key {
                path: concat!($p, ".ssl_options.ocsp.refresh_http_timeout"),
                kind: duration(Duration::from_millis(100), DURATION_MAX),
                default: "15s",
                doc: "Timeout of one request to the OCSP responder.",
            },
        ]
    };
}

/// The keys of one WebSocket listener's `websocket` table, under `$p`.
macro_rules! websocket_keys {
    ($p:literal) => {
        [
            Key {
                path: concat!($p, ".websocket.mqtt_path"),
                kind: Kind::Text,
                default: "/mqtt",
                doc: "Request path MQTT is served on; other paths get HTTP 404.",
            },
            Key {
                path: concat!($p, ".websocket.supported_subprotocols"),
                kind: Kind::Text,
                default: "mqtt, mqttv3.1, mqttv5, mqtt-v3, mqtt-v3.1.1, mqtt-v5",
                doc: "Subprotocols accepted, comma-separated, in preference order.",
            },
            Key {
                path: concat!($p, ".websocket.fail_if_no_subprotocol"),
                kind: Kind::Bool,
                default: "true",
                doc: "Refuse (HTTP 400) an upgrade that offers none of the subprotocols.",
            },
            Key {
                path: concat!($p, ".websocket.check_origin_enable"),
                kind: Kind::Bool,
                default: "false",
                doc: "Refuse (HTTP 403) an upgrade whose Origin is not in allowed_origins.",
            },
            Key {
                path: concat!($p, ".websocket.allowed_origins"),
                kind: Kind::Text,
                default: "",
                doc: "Origins accepted with check_origin_enable, comma-separated.",
            },
            Key {
                path: concat!($p, ".websocket.proxy_address_header"),
                kind: Kind::Text,
                default: "x-forwarded-for",
                doc: "Header naming the client's address behind a proxy (its first entry is \
                      taken); \"\" ignores it.",
            },
        ]
    };
}

/// The `bind`, `enable` and `max_connections` keys of a listener.
macro_rules! listener_keys {
    ($p:literal, $bind:literal, $what:literal, $enable_doc:literal) => {
        [
            Key {
                path: concat!($p, ".bind"),
                kind: Kind::Addr,
                default: $bind,
                doc: concat!(
                    "Address the ",
                    $what,
                    " listener binds on every shard (SO_REUSEPORT)."
                ),
            },
            Key {
                path: concat!($p, ".enable"),
                kind: Kind::Bool,
                default: "true",
                doc: $enable_doc,
            },
            Key {
                path: concat!($p, ".max_connections"),
                kind: Kind::IntOrInfinity {
                    min: 1,
                    max: U32_MAX,
                },
                default: "infinity",
                doc: concat!(
                    "Most connections the ",
                    $what,
                    " listener holds at once, over all shards."
                ),
            },
        ]
    };
}

const SSL_LISTENER: [Key; 3] = listener_keys!(
    "listeners.ssl.default",
    "0.0.0.0:8883",
    "MQTT over TLS",
    "Start the MQTT over TLS listener; it starts only when ssl_options.certfile and keyfile \
     are set."
);
const SSL_OPTIONS: [Key; 15] = ssl_option_keys!("listeners.ssl.default");
const WS_LISTENER: [Key; 3] = listener_keys!(
    "listeners.ws.default",
    "0.0.0.0:8083",
    "MQTT over WebSocket",
    "Start the MQTT over WebSocket listener."
);
const WS_OPTIONS: [Key; 6] = websocket_keys!("listeners.ws.default");
const WSS_LISTENER: [Key; 3] = listener_keys!(
    "listeners.wss.default",
    "0.0.0.0:8084",
    "MQTT over WebSocket over TLS",
    "Start the MQTT over WebSocket over TLS listener; it starts only when \
     ssl_options.certfile and keyfile are set."
);
const WSS_SSL_OPTIONS: [Key; 15] = ssl_option_keys!("listeners.wss.default");
const WSS_OPTIONS: [Key; 6] = websocket_keys!("listeners.wss.default");

/// The keys of the QUIC listener.
const QUIC: &[Key] = &[
    Key {
        path: "listeners.quic.default.bind",
        kind: Kind::Addr,
        default: "0.0.0.0:14567",
        doc: "UDP address the MQTT over QUIC listener binds on every shard (SO_REUSEPORT).",
    },
    Key {
        path: "listeners.quic.default.enable",
        kind: Kind::Bool,
        default: "true",
        doc: "Start the MQTT over QUIC listener (ALPN mqtt, single-stream mode); it costs \
              nothing while no client uses it.",
    },
    Key {
        path: "listeners.quic.default.idle_timeout",
        kind: duration(Duration::from_secs(1), Duration::from_secs(600)),
        default: "15s",
        doc: "A QUIC connection silent this long is closed.",
    },
    Key {
        path: "listeners.quic.default.keep_alive_interval",
        kind: ANY_DURATION,
        default: "0s",
        doc: "Send QUIC PINGs this often to keep idle connections (and NAT bindings) alive; 0s \
              is off.",
    },
    Key {
        path: "listeners.quic.default.handshake_idle_timeout",
        kind: duration(Duration::from_millis(100), Duration::from_secs(600)),
        default: "10s",
        doc: "A QUIC handshake not complete after this long is abandoned.",
    },
    Key {
        path: "listeners.quic.default.stateless_retry",
        kind: Kind::Bool,
        default: "false",
        doc: "Validate a new client's address with a Retry before any handshake work \
              (costs a round trip; protects against spoofed-source floods).",
    },
    Key {
        path: "listeners.quic.default.enable_0rtt",
        kind: Kind::Bool,
        default: "false",
        doc: "Accept 0-RTT data from clients resuming a session (replayable: off by default).",
    },
    Key {
        path: "listeners.quic.default.gso",
        kind: Kind::Bool,
        default: "true",
        doc: "Send runs of QUIC datagrams for one client as one UDP GSO send (UDP_SEGMENT), \
              where the kernel supports it; sends are batched with sendmmsg either way.",
    },
    Key {
        path: "listeners.quic.default.peer_bidi_stream_count",
        kind: int(1, 1000),
        default: "10",
        doc: "Bidirectional streams a client may open.",
    },
    Key {
        path: "listeners.quic.default.peer_unidi_stream_count",
        kind: int(0, 1000),
        default: "1",
        doc: "Unidirectional streams a client may open.",
    },
    Key {
        path: "listeners.quic.default.ssl_options.certfile",
        kind: Kind::OptPath,
        default: "",
        doc: "PEM certificate chain for QUIC; \"\" generates a self-signed one into \
              node.data_dir (its path is logged).",
    },
    Key {
        path: "listeners.quic.default.ssl_options.keyfile",
        kind: Kind::OptPath,
        default: "",
        doc: "PEM private key of the QUIC certificate.",
    },
];

/// The keys before the generated listener groups: top-level keys, then the TCP listener.
const HEAD: &[Key] = &[
    // --- top level (before any table, as TOML requires) ----------------------------------------
    Key {
        path: "rewrite",
        kind: Kind::List {
            fields: REWRITE_FIELDS,
            max: 1000,
        },
        default: "[]",
        doc: "Topic rewrite rules, as in EMQX: action (publish, subscribe or all), source_topic \
              (a filter), re (a regular expression) and dest_topic ($N = capture N, \
              ${clientid}, ${username}); the last matching rule applies.",
    },
    // --- listeners ---------------------------------------------------------------------------
    Key {
        path: "listeners.tcp.default.bind",
        kind: Kind::Addr,
        default: "0.0.0.0:1883",
        doc: "Address the MQTT over TCP listener binds on every shard (SO_REUSEPORT); \
              a bare port means 0.0.0.0.",
    },
    Key {
        path: "listeners.tcp.default.enable",
        kind: Kind::Bool,
        default: "true",
        doc: "Start the MQTT over TCP listener.",
    },
    Key {
        path: "listeners.tcp.default.max_connections",
        kind: Kind::IntOrInfinity {
            min: 1,
            max: U32_MAX,
        },
        default: "infinity",
        doc: "Most connections the listener holds at once, over all shards; \
              further ones are refused.",
    },
];

/// The keys after the listeners.
const REST: &[Key] = &[
    // --- node --------------------------------------------------------------------------------
    Key {
        path: "node.data_dir",
        kind: Kind::Path,
        default: "./data",
        doc: "Directory of the durable log: persistent sessions, queued and retained messages.",
    },
    Key {
        path: "node.name",
        kind: Kind::Name,
        default: "broker@127.0.0.1",
        doc: "This node's name, as in EMQX: it appears in $SYS/brokers/{node}/... topics.",
    },
    Key {
        path: "node.driver",
        kind: Kind::Enum(&["auto", "io_uring", "epoll"]),
        default: "auto",
        doc: "Shard runtime driver: auto uses io_uring and falls back to epoll where it is \
              unavailable (logged once at start); io_uring or epoll forces one.",
    },
    // --- mqtt --------------------------------------------------------------------------------
    Key {
        path: "mqtt.max_packet_size",
        kind: Kind::Size {
            min: 1,
            max: 268_435_456,
        },
        default: "1MB",
        doc: "Largest MQTT packet accepted, advertised to MQTT 5 clients as Maximum Packet Size.",
    },
    Key {
        path: "mqtt.max_clientid_len",
        kind: int(23, 65535),
        default: "65535",
        doc: "Longest client identifier accepted, in bytes.",
    },
    Key {
        path: "mqtt.max_topic_levels",
        kind: int(1, 65535),
        default: "128",
        doc: "Most levels in a topic name or filter.",
    },
    Key {
        path: "mqtt.max_qos_allowed",
        kind: int(0, 2),
        default: "2",
        doc: "Highest QoS the broker grants and accepts (Maximum QoS).",
    },
    Key {
        path: "mqtt.max_inflight",
        kind: int(1, 65535),
        default: "32",
        doc: "Outgoing QoS 1/2 messages awaiting acknowledgement per session; \
              a client's Receive Maximum lowers it.",
    },
    Key {
        path: "mqtt.max_mqueue_len",
        kind: int(1, U32_MAX),
        default: "1000",
        doc: "Messages queued per session behind the inflight window, and while it is offline.",
    },
    Key {
        path: "mqtt.mqueue_store_qos0",
        kind: Kind::Bool,
        default: "true",
        doc: "Queue QoS 0 messages too (for offline sessions and a full inflight window).",
    },
    Key {
        path: "mqtt.max_awaiting_rel",
        kind: int(1, 65535),
        default: "100",
        doc: "Incoming QoS 2 messages awaiting PUBREL per session.",
    },
    Key {
        path: "mqtt.await_rel_timeout",
        kind: ANY_DURATION,
        default: "300s",
        doc: "How long an incoming QoS 2 message waits for its PUBREL before it is dropped.",
    },
    Key {
        path: "mqtt.retry_interval",
        kind: duration(Duration::from_millis(1), DURATION_MAX),
        default: "30s",
        doc: "Retransmission interval for unacknowledged outgoing QoS 1/2 messages.",
    },
    Key {
        path: "mqtt.idle_timeout",
        kind: ANY_DURATION,
        default: "15s",
        doc: "How long a new connection may take to send CONNECT before it is closed.",
    },
    Key {
        path: "mqtt.keepalive_multiplier",
        kind: Kind::Float { above: 0.0 },
        default: "1.5",
        doc: "A client is disconnected after this many Keep Alive intervals without a packet.",
    },
    Key {
        path: "mqtt.session_expiry_interval",
        kind: duration(Duration::ZERO, Duration::from_secs(U32_MAX)),
        default: "2h",
        doc: "Session expiry for MQTT 3.1/3.1.1 clients connecting with Clean Session 0 \
              (MQTT 5 clients choose their own).",
    },
    Key {
        path: "mqtt.server_keepalive",
        kind: Kind::IntOrDisabled { min: 1, max: 65535 },
        default: "disabled",
        doc: "Keep Alive in seconds imposed on MQTT 5 clients (Server Keep Alive); \
              disabled keeps the client's.",
    },
    Key {
        path: "mqtt.max_topic_alias",
        kind: int(0, 65535),
        default: "65535",
        doc: "Topic Alias Maximum advertised to MQTT 5 clients; 0 disables topic aliases.",
    },
    Key {
        path: "mqtt.wildcard_subscription",
        kind: Kind::Bool,
        default: "true",
        doc: "Allow subscriptions to topic filters with wildcards (+ and #).",
    },
    Key {
        path: "mqtt.shared_subscription",
        kind: Kind::Bool,
        default: "true",
        doc: "Allow shared subscriptions ($share/GROUP/FILTER and $queue/FILTER).",
    },
    Key {
        path: "mqtt.shared_subscription_strategy",
        kind: Kind::Enum(&[
            "random",
            "round_robin",
            "round_robin_per_group",
            "sticky",
            "local",
            "hash_topic",
            "hash_clientid",
        ]),
        default: "round_robin",
        doc: "How a shared subscription group picks the member for each message (EMQX's \
              strategies; the choice is made on the publishing shard).",
    },
    Key {
        path: "mqtt.exclusive_subscription",
        kind: Kind::Bool,
        default: "false",
        doc: "EMQX's exclusive subscriptions: $exclusive/{filter} has one subscriber at a time; \
              the next gets SUBACK 0x97. Off: $exclusive/... is an ordinary topic filter.",
    },
    Key {
        path: "mqtt.subscription_identifiers",
        kind: Kind::Bool,
        default: "true",
        doc: "Accept MQTT 5 Subscription Identifiers (our key); off: SUBACK 0xA1 and CONNACK \
              Subscription Identifiers Available = 0.",
    },
    Key {
        path: "mqtt.response_information",
        kind: Kind::Text,
        default: "",
        doc: "Response Information sent in CONNACK to MQTT 5 clients that request it (a topic \
              prefix for request/response); empty sends none.",
    },
    Key {
        path: "mqtt.retain_available",
        kind: Kind::Bool,
        default: "true",
        doc: "Support retained messages (Retain Available).",
    },
    Key {
        path: "mqtt.peer_cert_as_username",
        kind: Kind::Enum(&["disabled", "cn", "dn", "crt", "pem", "md5"]),
        default: "disabled",
        doc: "On TLS listeners verifying clients: the username becomes the certificate's \
              Common Name (cn), Distinguished Name (dn), DER as base64 (crt), PEM (pem) or \
              MD5 (md5).",
    },
    Key {
        path: "mqtt.peer_cert_as_clientid",
        kind: Kind::Enum(&["disabled", "cn", "dn", "crt", "pem", "md5"]),
        default: "disabled",
        doc: "Likewise for the client id.",
    },
    // --- sys_topics --------------------------------------------------------------------------
    Key {
        path: "sys_topics.sys_msg_interval",
        kind: ANY_DURATION,
        default: "60s",
        doc: "Interval of the $SYS statistics messages (connections, sessions, subscriptions, \
              retained, message and packet counters); 0s turns them off.",
    },
    Key {
        path: "sys_topics.sys_heartbeat_interval",
        kind: ANY_DURATION,
        default: "30s",
        doc: "Interval of the $SYS uptime and datetime messages; 0s turns them off.",
    },
    Key {
        path: "sys_topics.sys_event_messages.client_connected",
        kind: Kind::Bool,
        default: "true",
        doc: "Publish $SYS/brokers/{node}/clients/{clientid}/connected when a client connects.",
    },
    Key {
        path: "sys_topics.sys_event_messages.client_disconnected",
        kind: Kind::Bool,
        default: "true",
        doc: "Publish $SYS/brokers/{node}/clients/{clientid}/disconnected when it disconnects.",
    },
    // --- auto_subscribe ------------------------------------------------------------------------
    Key {
        path: "auto_subscribe.topics",
        kind: Kind::List {
            fields: AUTO_SUBSCRIBE_FIELDS,
            max: 20,
        },
        default: "[]",
        doc: "Subscriptions made for every client when it connects, as in EMQX: topic (with \
              ${clientid}, ${username}, ${host}, ${port}), qos, rh, rap, nl.",
    },
    // --- dashboard ----------------------------------------------------------------------------
    Key {
        path: "dashboard.default_username",
        kind: Kind::Name,
        default: "admin",
        doc: "Dashboard user created with a random password (written to \
              node.data_dir/dashboard/initial_admin_password) when no user exists.",
    },
    Key {
        path: "dashboard.metrics_auth",
        kind: Kind::Bool,
        default: "false",
        doc: "Require a bearer token or API key for /metrics and /api/v5/prometheus/stats too \
              (/status never needs one).",
    },
    Key {
        path: "dashboard.token_expired_time",
        kind: duration(Duration::from_secs(1), DURATION_MAX),
        default: "1h",
        doc: "How long a bearer token from POST /api/v5/login stays valid.",
    },
    Key {
        path: "dashboard.listeners.http.bind",
        kind: Kind::Addr,
        default: "0.0.0.0:18083",
        doc: "Address of the HTTP listener of the control plane: the REST API (/api/v5), the \
              health check (/status, /api/v5/status) and the Prometheus metrics (/metrics, \
              /api/v5/prometheus/stats).",
    },
    Key {
        path: "dashboard.listeners.http.enable",
        kind: Kind::Bool,
        default: "true",
        doc: "Start the control plane's HTTP listener.",
    },
    Key {
        path: "dashboard.listeners.https.bind",
        kind: Kind::Addr,
        default: "0.0.0.0:18084",
        doc: "Address of the HTTPS listener of the control plane (the same endpoints as HTTP).",
    },
    Key {
        path: "dashboard.listeners.https.enable",
        kind: Kind::Bool,
        default: "false",
        doc: "Start the control plane's HTTPS listener; it needs ssl_options.certfile and keyfile.",
    },
    Key {
        path: "dashboard.listeners.https.ssl_options.certfile",
        kind: Kind::OptPath,
        default: "",
        doc: "PEM certificate chain of the HTTPS listener (reloaded when it changes or on SIGHUP).",
    },
    Key {
        path: "dashboard.listeners.https.ssl_options.keyfile",
        kind: Kind::OptPath,
        default: "",
        doc: "PEM private key of the HTTPS listener's certificate.",
    },
    // --- durability ---------------------------------------------------------------------------
    Key {
        path: "durability.fsync",
        kind: Kind::Enum(&["always", "interval", "never"]),
        default: "interval",
        doc: "When a persistent session's messages reach the disk before they are acknowledged: \
              always (fsynced: survives power loss), interval (written to the kernel: survives \
              kill -9 and crashes; fsynced every durability.fsync_interval, so a power loss \
              loses at most that), never (written to the kernel, never fsynced).",
    },
    Key {
        path: "durability.fsync_interval",
        kind: duration(Duration::from_millis(1), DURATION_MAX),
        default: "100ms",
        doc: "How often durability.fsync = interval fsyncs the log.",
    },
    // --- crl_cache ----------------------------------------------------------------------------
    Key {
        path: "crl_cache.refresh_interval",
        kind: duration(Duration::from_secs(1), DURATION_MAX),
        default: "900s",
        doc: "How often CRLs fetched from client certificates' distribution points are \
              fetched again.",
    },
    Key {
        path: "crl_cache.http_timeout",
        kind: duration(Duration::from_millis(100), DURATION_MAX),
        default: "15s",
        doc: "Timeout of one CRL download.",
    },
    // --- delayed -----------------------------------------------------------------------------
    Key {
        path: "delayed.enable",
        kind: Kind::Bool,
        default: "true",
        doc: "Delayed publish: a PUBLISH to $delayed/{seconds}/{topic} is published to {topic} \
              that many seconds later (at most 4294967).",
    },
    Key {
        path: "delayed.max_delayed_messages",
        kind: int(0, U32_MAX),
        default: "0",
        doc: "Most delayed messages held, over all shards (per shard: this divided by the shard \
              count); 0 is unlimited. Beyond it MQTT 5 publishers get 0x97 (Quota exceeded).",
    },
    // --- retainer ----------------------------------------------------------------------------
    Key {
        path: "retainer.max_retained_messages",
        kind: int(0, U32_MAX),
        default: "0",
        doc: "Most retained messages kept, over all shards (per shard: this divided by the shard \
              count); 0 is unlimited. A new retained topic beyond it is not stored.",
    },
    Key {
        path: "retainer.max_payload_size",
        kind: Kind::Size {
            min: 0,
            max: 268_435_456,
        },
        default: "1MB",
        doc: "Largest payload stored as a retained message; larger ones are delivered, not kept.",
    },
    Key {
        path: "retainer.msg_expiry_interval",
        kind: ANY_DURATION,
        default: "0s",
        doc: "How long a retained message without its own Message Expiry Interval is kept; 0s \
              keeps it until replaced or cleared.",
    },
    // --- log ---------------------------------------------------------------------------------
    Key {
        path: "log.level",
        kind: Kind::Enum(&["error", "warn", "info", "debug"]),
        default: "info",
        doc: "Least severe level written to standard error.",
    },
    Key {
        path: "log.format",
        kind: Kind::Enum(&["text", "json"]),
        default: "text",
        doc: "One line per record: text (time, level, thread, module, message) or json (the \
              same fields as a JSON object: time, level, thread, target, msg).",
    },
    // --- shard (our own) ---------------------------------------------------------------------
    Key {
        path: "shard.ring_capacity",
        kind: Kind::PowerOfTwo {
            min: 2,
            max: 1 << 20,
        },
        default: "1024",
        doc: "Slots in each cross-shard ring (one per ordered pair of shards); \
              a full ring pauses the producer.",
    },
    Key {
        path: "shard.pin_cpus",
        kind: Kind::Bool,
        default: "false",
        doc: "Pin shard i to the i-th CPU of the process's affinity mask. Off by default: a \
              pinned shard sharing its CPU with busy processes of another session can be \
              starved for seconds (see docs/benchmarks.md).",
    },
    Key {
        path: "shard.max_events_per_turn",
        kind: int(1, 1 << 20),
        default: "256",
        doc: "Ring messages and I/O completions a shard handles per event-loop turn \
              before it yields.",
    },
];

/// Every known key, grouped by table, in the order `broker config keys` lists them.
pub static KEYS: LazyLock<Vec<Key>> = LazyLock::new(|| {
    let mut keys = Vec::new();
    keys.extend_from_slice(HEAD);
    for group in [
        &SSL_LISTENER[..],
        &SSL_OPTIONS,
        &WS_LISTENER,
        &WS_OPTIONS,
        &WSS_LISTENER,
        &WSS_SSL_OPTIONS,
        &WSS_OPTIONS,
        QUIC,
    ] {
        keys.extend_from_slice(group);
    }
    keys.extend_from_slice(REST);
    keys
});

/// The key at `path`, if it is known.
pub fn find(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Whether `path` names a table that holds known keys (`mqtt`, `listeners.tcp`).
pub fn is_table(path: &str) -> bool {
    KEYS.iter().any(|k| {
        k.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The known key (or table) that `unknown` was most likely meant to be, if one is close.
pub fn suggest(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    let unknown = unknown.as_str();
    let candidates = KEYS.iter().map(|k| k.path).chain(tables());
    let (best, distance) = candidates
        .map(|c| (c, edit_distance(unknown, c)))
        .min_by_key(|&(_, d)| d)?;
    let limit = (unknown.chars().count() / 4).clamp(1, 3);
    if distance <= limit {
        return Some(best);
    }
    // The right name in the wrong table (`max_inflight` at the top level, `[session]` for
    // `[mqtt]`): suggest the key with the same last segment, if exactly one has it.
    let last = unknown.rsplit('.').next()?;
    let mut same_leaf = KEYS
        .iter()
        .filter(|k| k.path.rsplit('.').next() == Some(last));
    match (same_leaf.next(), same_leaf.next()) {
        (Some(k), None) => Some(k.path),
        _ => None,
    }
}

/// Every table path that holds keys, each once.
fn tables() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for key in KEYS.iter() {
        let mut path = key.path;
        while let Some((parent, _)) = path.rsplit_once('.') {
            if !seen.contains(&parent) {
                seen.push(parent);
            }
            path = parent;
        }
    }
    seen.into_iter()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The `broker config keys` listing: one line per key, with aligned columns.
pub fn keys_text() -> String {
    let rows: Vec<[String; 4]> = KEYS
        .iter()
        .map(|k| {
            [
                k.path.to_owned(),
                k.kind.type_name(),
                default_toml(k),
                k.doc.to_owned(),
            ]
        })
        .collect();
    let header = ["KEY", "TYPE", "DEFAULT", "DESCRIPTION"].map(str::to_owned);
    let width = |col: usize| {
        rows.iter()
            .chain([&header])
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for row in [&header].into_iter().chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The reference table of `docs/configuration.md` (Markdown), as `broker config keys
/// --markdown` prints it.
pub fn keys_markdown() -> String {
    let mut out = String::from(
        "| key | type | default | environment variable | description |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for k in KEYS.iter() {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | `{}` | {} |\n",
            k.path,
            k.kind.type_name(),
            default_toml(k),
            k.env_var(),
            k.doc.replace('|', "\\|"),
        ));
    }
    out
}

/// The default of `key` as TOML (`"300s"`, `32`). A default that does not parse is a bug the
/// schema tests catch; it is shown as written.
pub fn default_toml(key: &Key) -> String {
    key.kind
        .parse(&super::value::Input::Str(key.default))
        .map_or_else(|_| key.default.to_owned(), |v| v.to_toml())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::value::Input;

    #[test]
    fn every_default_parses_and_prints_as_written() {
        for key in KEYS.iter() {
            let value = key.kind.parse(&Input::Str(key.default));
            let value = value.unwrap_or_else(|e| panic!("{}: default: {e}", key.path));
            let toml = value.to_toml();
            assert_eq!(
                toml.trim_matches('"'),
                key.default,
                "{}: write the default in its canonical form",
                key.path
            );
        }
    }

    #[test]
    fn paths_are_unique_lowercase_and_grouped() {
        let mut tables_done: Vec<&str> = Vec::new();
        let mut current = "";
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                key.path.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'.'),
                "{}",
                key.path
            );
            assert!(
                !key.path.contains("__"),
                "{}: `__` separates env levels",
                key.path
            );
            assert!(
                KEYS[..i].iter().all(|k| k.path != key.path),
                "{} twice",
                key.path
            );
            assert!(
                !is_table(key.path),
                "{} is both a key and a table",
                key.path
            );
            let (table, _) = key.path.rsplit_once('.').unwrap_or(("", key.path));
            if table != current {
                assert!(
                    !tables_done.contains(&table),
                    "keys of {table} are not together"
                );
                tables_done.push(current);
                current = table;
            }
            assert!(
                !key.doc.is_empty() && !key.doc.contains('\n'),
                "{}",
                key.path
            );
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("mqtt.max_infligt"), Some("mqtt.max_inflight"));
        assert_eq!(suggest("mqt.max_inflight"), Some("mqtt.max_inflight"));
        assert_eq!(suggest("mqttt"), Some("mqtt"));
        assert_eq!(suggest("MQTT"), Some("mqtt"));
        assert_eq!(suggest("max_inflight"), Some("mqtt.max_inflight"));
        assert_eq!(suggest("session.max_inflight"), Some("mqtt.max_inflight"));
        assert_eq!(
            suggest("listeners.tcp.default.bnd"),
            Some("listeners.tcp.default.bind")
        );
        assert_eq!(suggest("zone.default.something_else"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn tables_and_env_names() {
        assert!(is_table("mqtt"));
        assert!(is_table("listeners.tcp"));
        assert!(!is_table("mqtt.max_inflight"));
        assert!(!is_table("mqt"));
        assert!(!is_table("listeners.tcp.default.bin"));
        let key = find("listeners.tcp.default.bind").unwrap();
        assert_eq!(key.env_var(), "BROKER_LISTENERS__TCP__DEFAULT__BIND");
    }
}
