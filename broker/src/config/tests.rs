//! Loading, precedence and error messages, end to end through the public API.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Loads `file` as the contents of `broker.toml`, then `env`, then `sets`.
fn load(file: &str, env: &[(&str, &str)], sets: &[&str]) -> Result<Resolved, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    Resolved::from_layers(vec![
        sources::toml(Path::new("broker.toml"), file)?,
        sources::env(env)?,
        sources::sets(&sets)?,
    ])
}

fn config(file: &str, env: &[(&str, &str)], sets: &[&str]) -> Config {
    load(file, env, sets)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_config()
}

fn error(file: &str, env: &[(&str, &str)], sets: &[&str]) -> String {
    match load(file, env, sets) {
        Ok(_) => panic!("loaded, expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c, config("", &[], &[]));
    let tcp = &c.listeners.tcp.default;
    assert_eq!(tcp.bind, "0.0.0.0:1883".parse::<SocketAddr>().unwrap());
    assert!(tcp.enable);
    assert_eq!(tcp.max_connections, Limit::Infinity);
    assert_eq!(c.node.data_dir, Path::new("./data"));
    assert_eq!(c.node.driver, Driver::Auto);
    let m = &c.mqtt;
    assert_eq!(m.max_packet_size, 1024 * 1024);
    assert_eq!(m.max_clientid_len, 65535);
    assert_eq!(m.max_topic_levels, 128);
    assert_eq!(m.max_qos_allowed, net::mqtt::QoS::ExactlyOnce);
    assert_eq!(m.max_inflight, 32);
    assert_eq!(m.max_mqueue_len, 1000);
    assert!(m.mqueue_store_qos0);
    assert_eq!(m.max_awaiting_rel, 100);
    assert_eq!(m.await_rel_timeout, Duration::from_secs(300));
    assert_eq!(m.retry_interval, Duration::from_secs(30));
    assert_eq!(m.idle_timeout, Duration::from_secs(15));
    assert_eq!(m.keepalive_multiplier, 1.5);
    assert_eq!(m.session_expiry_interval, Duration::from_secs(7200));
    assert_eq!(m.server_keepalive, None);
    assert_eq!(m.max_topic_alias, 65535);
    assert!(m.wildcard_subscription && m.shared_subscription && m.retain_available);
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.shard.ring_capacity, 1024);
    assert_eq!(c.shard.max_events_per_turn, 256);
    let resolved = Resolved::defaults().unwrap();
    assert_eq!(resolved.changed().count(), 0);
    assert!(
        resolved
            .settings()
            .iter()
            .all(|s| s.origin == Origin::Default)
    );
}

/// Every key's smallest and largest value (and every name of an enumeration) fits its typed
/// field: the schema's ranges and the field types agree.
#[test]
fn every_accepted_value_fits_its_field() {
    for key in KEYS.iter() {
        let texts: Vec<String> = match key.kind {
            Kind::Int { min, max } | Kind::PowerOfTwo { min, max } => {
                vec![min.to_string(), max.to_string()]
            }
            Kind::IntOrInfinity { min, max } => {
                vec![min.to_string(), max.to_string(), "infinity".to_owned()]
            }
            Kind::IntOrDisabled { min, max } => {
                vec![min.to_string(), max.to_string(), "disabled".to_owned()]
            }
            Kind::Size { min, max } => vec![min.to_string(), max.to_string()],
            Kind::Duration { min, max } => {
                vec![value::format_duration(min), value::format_duration(max)]
            }
            Kind::Enum(names) => names.iter().map(|n| (*n).to_owned()).collect(),
            Kind::Bool => vec!["true".to_owned(), "false".to_owned()],
            _ => vec![key.default.to_owned()],
        };
        for text in texts {
            let set = format!("{}={text}", key.path);
            if let Err(e) = load("", &[], &[&set]) {
                panic!("--set {set}: {e}");
            }
        }
    }
}

#[test]
fn file_tables_dotted_keys_and_inline_tables() {
    let c = config(
        r#"
# comment
log.level = "debug"

[listeners.tcp.default]
bind = ":8883"
max_connections = 1000

[mqtt]
max_packet_size = "64KB"
idle_timeout = "100ms"
keepalive_multiplier = 2
server_keepalive = 60
session_expiry_interval = "1d"

[node]
driver = "epoll"
data_dir = "/var/lib/broker"

[shard]
ring_capacity = 4096
"#,
        &[],
        &[],
    );
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(
        c.listeners.tcp.default.bind,
        "0.0.0.0:8883".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.listeners.tcp.default.max_connections, Limit::Max(1000));
    assert_eq!(c.mqtt.max_packet_size, 64 * 1024);
    assert_eq!(c.mqtt.idle_timeout, Duration::from_millis(100));
    assert_eq!(c.mqtt.keepalive_multiplier, 2.0);
    assert_eq!(c.mqtt.server_keepalive, Some(60));
    assert_eq!(c.mqtt.session_expiry_interval, Duration::from_secs(86_400));
    assert_eq!(c.node.driver, Driver::Epoll);
    assert_eq!(c.node.data_dir, Path::new("/var/lib/broker"));
    assert_eq!(c.shard.ring_capacity, 4096);

    let c = config(
        "listeners = { tcp = { default = { enable = false } } }",
        &[],
        &[],
    );
    assert!(!c.listeners.tcp.default.enable);
    let c = config("[listeners.tcp]\ndefault.bind = \"127.0.0.1:0\"", &[], &[]);
    assert_eq!(
        c.listeners.tcp.default.bind,
        "127.0.0.1:0".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn precedence_file_then_env_then_set() {
    let file = "[mqtt]\nmax_inflight = 10\nmax_mqueue_len = 10\nmax_awaiting_rel = 10\n";
    let env = [
        ("BROKER_MQTT__MAX_MQUEUE_LEN", "20"),
        ("BROKER_MQTT__MAX_AWAITING_REL", "20"),
        ("PATH", "/usr/bin"),
        ("BROKERX_MQTT__MAX_INFLIGHT", "99"),
    ];
    let sets = [
        "mqtt.max_awaiting_rel=30",
        "mqtt.max_topic_alias=7",
        "mqtt.max_topic_alias=8",
    ];
    let resolved = load(file, &env, &sets).unwrap();
    let c = resolved.config();
    assert_eq!(c.mqtt.max_inflight, 10, "file only");
    assert_eq!(c.mqtt.max_mqueue_len, 20, "env beats file");
    assert_eq!(c.mqtt.max_awaiting_rel, 30, "--set beats env and file");
    assert_eq!(c.mqtt.max_topic_alias, 8, "the last --set wins");
    assert_eq!(c.mqtt.retry_interval, Duration::from_secs(30), "default");

    let origin = |path: &str| {
        resolved
            .settings()
            .iter()
            .find(|s| s.key.path == path)
            .map(|s| s.origin.to_string())
    };
    assert_eq!(
        origin("mqtt.max_inflight").as_deref(),
        Some("broker.toml:2")
    );
    assert_eq!(
        origin("mqtt.max_mqueue_len").as_deref(),
        Some("env BROKER_MQTT__MAX_MQUEUE_LEN")
    );
    assert_eq!(
        origin("mqtt.max_awaiting_rel").as_deref(),
        Some("--set mqtt.max_awaiting_rel=30")
    );
    assert_eq!(origin("mqtt.retry_interval").as_deref(), Some("default"));
    let changed: Vec<&str> = resolved.changed().map(|s| s.key.path).collect();
    assert_eq!(
        changed,
        [
            "mqtt.max_inflight",
            "mqtt.max_mqueue_len",
            "mqtt.max_awaiting_rel",
            "mqtt.max_topic_alias"
        ]
    );
}

#[test]
fn env_and_set_text() {
    let c = config(
        "",
        &[
            ("BROKER_LISTENERS__TCP__DEFAULT__BIND", "127.0.0.1:0"),
            ("BROKER_MQTT__MAX_INFLIGHT", "64"),
            ("BROKER_MQTT__RETAIN_AVAILABLE", "false"),
            ("BROKER_log__level", "warn"),
        ],
        &[
            "mqtt.idle_timeout=\"1m\"",
            " node.data_dir = /tmp/x=y",
            "mqtt.max_packet_size=1024",
        ],
    );
    assert_eq!(
        c.listeners.tcp.default.bind,
        "127.0.0.1:0".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.mqtt.max_inflight, 64);
    assert!(!c.mqtt.retain_available);
    assert_eq!(c.log.level, LogLevel::Warn);
    assert_eq!(c.mqtt.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.node.data_dir, Path::new(" /tmp/x=y"));
    assert_eq!(c.mqtt.max_packet_size, 1024);
}

#[test]
fn unknown_keys() {
    assert_eq!(
        error("[mqtt]\nmax_inflight = 64\nmax_infligt = 3\n", &[], &[]),
        r#"broker.toml:3: unknown key "mqtt.max_infligt" (did you mean "mqtt.max_inflight"?)"#
    );
    assert_eq!(
        error("log.level = \"info\"\nmqtt.max_infligt = 3\n", &[], &[]),
        r#"broker.toml:2: unknown key "mqtt.max_infligt" (did you mean "mqtt.max_inflight"?)"#
    );
    assert_eq!(
        error(
            "\n[listeners.tcp.default]\nbind = 1883\nbnd = 1884\n",
            &[],
            &[]
        ),
        "broker.toml:4: unknown key \"listeners.tcp.default.bnd\" \
         (did you mean \"listeners.tcp.default.bind\"?)"
    );
    assert_eq!(
        error("[mqttt]\nmax_inflight = 3\n", &[], &[]),
        r#"broker.toml:1: unknown key "mqttt" (did you mean "mqtt"?)"#
    );
    assert_eq!(
        error("[session]\n\nmax_inflight = 3\n", &[], &[]),
        r#"broker.toml:3: unknown key "session.max_inflight" (did you mean "mqtt.max_inflight"?)"#
    );
    assert_eq!(
        error("mqtt = { max_infligt = 3 }", &[], &[]),
        r#"broker.toml:1: unknown key "mqtt.max_infligt" (did you mean "mqtt.max_inflight"?)"#
    );
    assert_eq!(
        error("zone.default.frobnicate = 1", &[], &[]),
        "broker.toml:1: unknown key \"zone.default.frobnicate\" \
         (`broker config keys` lists the known keys)"
    );
    assert_eq!(
        error("", &[("BROKER_MQTT__MAX_INFLIGT", "3")], &[]),
        "env BROKER_MQTT__MAX_INFLIGT: unknown key \"mqtt.max_infligt\" \
         (did you mean BROKER_MQTT__MAX_INFLIGHT?)"
    );
    assert_eq!(
        error("", &[], &["mqtt.max_infligt=3"]),
        "--set mqtt.max_infligt=3: unknown key \"mqtt.max_infligt\" \
         (did you mean \"mqtt.max_inflight\"?)"
    );
    assert_eq!(
        error("", &[], &["mqtt=3"]),
        "--set mqtt=3: \"mqtt\" is a table, not a key \
         (its keys are set one by one, such as mqtt.max_packet_size)"
    );
    assert_eq!(
        error("", &[("BROKER_LOG", "debug")], &[]),
        "env BROKER_LOG: \"log\" is a table, not a key \
         (its keys are set one by one, such as BROKER_LOG__LEVEL)"
    );
}

#[test]
fn bad_values() {
    let file = "# line 1\n\n[mqtt]\nmax_packet_size = \"1MB\"\n\n# the next line is 7\nmax_inflight = \"lots\"\n";
    assert_eq!(
        error(file, &[], &[]),
        r#"broker.toml:7: mqtt.max_inflight: expected an integer from 1 to 65535, got "lots""#
    );
    // Out of range.
    assert_eq!(
        error("mqtt.max_inflight = 70000", &[], &[]),
        "broker.toml:1: mqtt.max_inflight: expected an integer from 1 to 65535, got 70000"
    );
    assert_eq!(
        error("[mqtt]\nmax_qos_allowed = 3", &[], &[]),
        "broker.toml:2: mqtt.max_qos_allowed: expected an integer from 0 to 2, got 3"
    );
    assert_eq!(
        error("[mqtt]\nmax_packet_size = \"512MB\"", &[], &[]),
        "broker.toml:2: mqtt.max_packet_size: expected a size from 1B to 256MB, \
         such as \"64KB\", \"1MB\" or 1024 (bytes), got \"512MB\""
    );
    assert_eq!(
        error("[mqtt]\nkeepalive_multiplier = 0", &[], &[]),
        "broker.toml:2: mqtt.keepalive_multiplier: expected a number greater than 0, got 0"
    );
    // Wrong type.
    assert_eq!(
        error("[mqtt]\nretain_available = 1", &[], &[]),
        "broker.toml:2: mqtt.retain_available: expected true or false, got 1"
    );
    assert_eq!(
        error("[mqtt]\nidle_timeout = 15", &[], &[]),
        "broker.toml:2: mqtt.idle_timeout: expected a duration with a unit, \
         such as \"15s\", \"100ms\" or \"2h\", got 15"
    );
    assert_eq!(
        error(
            "[listeners.tcp.default]\nbind = \"localhost:1883\"",
            &[],
            &[]
        ),
        "broker.toml:2: listeners.tcp.default.bind: expected an address such as \
         \"0.0.0.0:1883\", \"[::]:1883\", \":1883\" or 1883, got \"localhost:1883\""
    );
    assert_eq!(
        error(
            "[listeners.tcp.default]\nmax_connections = \"unlimited\"",
            &[],
            &[]
        ),
        "broker.toml:2: listeners.tcp.default.max_connections: \
         expected \"infinity\" or an integer from 1 to 4294967295, got \"unlimited\""
    );
    assert_eq!(
        error("node.driver = \"uring\"", &[], &[]),
        "broker.toml:1: node.driver: expected one of \"auto\", \"io_uring\", \"epoll\", \
         got \"uring\""
    );
    assert_eq!(
        error("[shard]\nring_capacity = 1000", &[], &[]),
        "broker.toml:2: shard.ring_capacity: expected a power of two from 2 to 1048576, got 1000"
    );
    assert_eq!(
        error("[mqtt]\nmax_inflight = [1]", &[], &[]),
        "broker.toml:2: mqtt.max_inflight: expected an integer from 1 to 65535, got an array"
    );
    assert_eq!(
        error("[mqtt.max_inflight]\nx = 1", &[], &[]),
        "broker.toml:1: mqtt.max_inflight: expected an integer from 1 to 65535, got a table"
    );
    assert_eq!(
        error("mqtt = 3", &[], &[]),
        "broker.toml:1: mqtt: expected a table, got 3"
    );
    // From the environment and --set.
    assert_eq!(
        error("", &[("BROKER_MQTT__MAX_INFLIGHT", "lots")], &[]),
        "env BROKER_MQTT__MAX_INFLIGHT: mqtt.max_inflight: \
         expected an integer from 1 to 65535, got \"lots\""
    );
    assert_eq!(
        error("", &[], &["mqtt.max_inflight=0"]),
        "--set mqtt.max_inflight=0: mqtt.max_inflight: \
         expected an integer from 1 to 65535, got \"0\""
    );
    assert_eq!(
        error("", &[], &["mqtt.max_inflight"]),
        "--set mqtt.max_inflight: expected KEY=VALUE, such as --set mqtt.max_inflight=64"
    );
}

#[test]
fn the_first_error_in_the_file_is_reported() {
    let file = "[mqtt]\nmax_inflight = 0\n[log]\nlevel = \"loud\"\n[mqtt.extra]\nx = 1\n";
    assert_eq!(
        error(file, &[], &[]),
        "broker.toml:2: mqtt.max_inflight: expected an integer from 1 to 65535, got 0"
    );
    // A file error is reported even when env or --set would override the key.
    assert!(
        error("mqtt.max_inflight = 0", &[], &["mqtt.max_inflight=5"]).starts_with("broker.toml:1:")
    );
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let e = error("[mqtt]\nmax_inflight = 1\n[log\n", &[], &[]);
    assert!(e.starts_with("broker.toml:3: invalid TOML: "), "{e}");
    let e = error("[mqtt]\nmax_inflight = 1\nmax_inflight = 2\n", &[], &[]);
    assert!(e.starts_with("broker.toml:3: invalid TOML: "), "{e}");
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("broker-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broker.toml");
    std::fs::write(&path, "[mqtt]\nmax_inflight = 7\n").unwrap();
    let env = [("BROKER_MQTT__MAX_TOPIC_ALIAS".to_owned(), "9".to_owned())];
    let c = Config::load(Some(&path), env, &["log.level=error".to_owned()]).unwrap();
    assert_eq!((c.mqtt.max_inflight, c.mqtt.max_topic_alias), (7, 9));
    assert_eq!(c.log.level, LogLevel::Error);

    let missing = dir.join("missing.toml");
    let e = Config::load(Some(&missing), [], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn effective_toml_reads_back_to_the_same_values() {
    let resolved = load(
        "[mqtt]\nmax_inflight = 7\n",
        &[("BROKER_NODE__DATA_DIR", "/data \"quoted\"\nx")],
        &[
            "mqtt.idle_timeout=1m",
            "mqtt.server_keepalive=30",
            "shard.ring_capacity=2",
        ],
    )
    .unwrap();
    let text = resolved.to_toml();
    assert!(text.contains("\n[mqtt]\n"), "{text}");
    assert!(
        text.contains("max_inflight = 7  # broker.toml:2\n"),
        "{text}"
    );
    assert!(
        text.contains("idle_timeout = \"60s\"  # --set mqtt.idle_timeout=1m\n"),
        "{text}"
    );
    assert!(text.contains("max_connections = \"infinity\"\n"), "{text}");
    let again = load(&text, &[], &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.config(), resolved.config());
    let values = |r: &Resolved| {
        r.settings()
            .iter()
            .map(|s| s.value.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(values(&again), values(&resolved));
}

const RULES: &str = r#"
[[rewrite]]
action = "publish"
source_topic = "x/#"
re = '^x/y/(.+)$'
dest_topic = "z/y/$1"

[[rewrite]]
action = "all"
source_topic = "a/+"
re = "^a/(\\d+)$"
dest_topic = "b/${clientid}/$1"

[auto_subscribe]
topics = [
  { topic = "c/${clientid}", qos = 1 },
  { topic = "$share/g/jobs", qos = 2, rh = 2, rap = 1, nl = 1 },
]
"#;

#[test]
fn lists_from_arrays_of_tables_and_inline_arrays() {
    use shard::rewrite::RewriteAction;
    let c = config(RULES, &[], &[]);
    assert_eq!(c.rewrite.len(), 2);
    assert_eq!(c.rewrite[0].action, RewriteAction::Publish);
    assert_eq!(c.rewrite[0].source_topic, "x/#");
    assert_eq!(c.rewrite[0].re, "^x/y/(.+)$");
    assert_eq!(c.rewrite[0].dest_topic, "z/y/$1");
    assert_eq!(c.rewrite[1].action, RewriteAction::All);
    assert_eq!(c.rewrite[1].re, "^a/(\\d+)$");
    let t = &c.auto_subscribe.topics;
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].topic, "c/${clientid}");
    assert_eq!(t[0].qos, net::mqtt::QoS::AtLeastOnce);
    assert_eq!(t[0].rh, net::mqtt::RetainHandling::SendAtSubscribe);
    assert!(!t[0].rap && !t[0].nl, "EMQX's defaults: 0");
    assert_eq!(t[1].qos, net::mqtt::QoS::ExactlyOnce);
    assert_eq!(t[1].rh, net::mqtt::RetainHandling::DoNotSend);
    assert!(t[1].rap && t[1].nl);
    assert!(Config::default().rewrite.is_empty());
    assert!(Config::default().auto_subscribe.topics.is_empty());
}

#[test]
fn lists_from_env_and_set_replace_the_file() {
    let c = config(
        RULES,
        &[(
            "BROKER_AUTO_SUBSCRIBE__TOPICS",
            r#"[{topic = "env/${username}"}]"#,
        )],
        &[r##"rewrite=[{action="subscribe",source_topic="#",re="^(.*)$",dest_topic="all/$1"}]"##],
    );
    assert_eq!(c.rewrite.len(), 1);
    assert_eq!(c.rewrite[0].dest_topic, "all/$1");
    assert_eq!(c.auto_subscribe.topics.len(), 1);
    assert_eq!(c.auto_subscribe.topics[0].topic, "env/${username}");
    let c = config(RULES, &[], &["rewrite=[]"]);
    assert!(c.rewrite.is_empty(), "an empty list clears the file's");
}

#[test]
fn bad_lists_name_the_entry_field_and_line() {
    let bad_re = RULES.replace("re = \"^a/(\\\\d+)$\"", "re = \"^a/(\\\\d+$\"");
    assert_ne!(bad_re, RULES);
    assert_eq!(
        error(&bad_re, &[], &[]),
        "broker.toml:8: rewrite[1].re: expected a regular expression, got \"^a/(\\\\d+$\""
    );
    let missing = RULES.replace("dest_topic = \"z/y/$1\"\n", "");
    assert_eq!(
        error(&missing, &[], &[]),
        "broker.toml:2: rewrite[0]: expected the field \"dest_topic\", got none"
    );
    let unknown = RULES.replace("qos = 1 }", "qos = 1, retain = 1 }");
    assert_eq!(
        error(&unknown, &[], &[]),
        "broker.toml:16: auto_subscribe.topics[0].retain: expected one of the fields topic, \
         qos = 0, rh = 0, rap = 0, nl = 0, got an unknown field"
    );
    let qos = RULES.replace("qos = 2", "qos = 3");
    assert_eq!(
        error(&qos, &[], &[]),
        "broker.toml:17: auto_subscribe.topics[1].qos: expected an integer from 0 to 2, got 3"
    );
    let filter = RULES.replace("source_topic = \"x/#\"", "source_topic = \"x/#/y\"");
    assert_eq!(
        error(&filter, &[], &[]),
        "broker.toml:2: rewrite[0].source_topic: expected a valid MQTT topic filter, got \"x/#/y\""
    );
    assert_eq!(
        error("rewrite = 5\n", &[], &[]),
        "broker.toml:1: rewrite: expected a list of at most 1000 tables with the fields action, \
         source_topic, re, dest_topic, got 5"
    );
    assert_eq!(
        error("", &[], &["rewrite=[1]"]),
        "--set rewrite=[1]: rewrite: expected a list of at most 1000 tables with the fields \
         action, source_topic, re, dest_topic, got \"[1]\""
    );
    let many: Vec<String> = (0..21).map(|i| format!("{{topic = \"t/{i}\"}}")).collect();
    let many = format!("auto_subscribe.topics = [{}]\n", many.join(", "));
    assert_eq!(
        error(&many, &[], &[]),
        "broker.toml:1: auto_subscribe.topics: expected at most 20 entries, got 21"
    );
    assert!(
        error("", &[("BROKER_REWRITE", "[{action = \"none\"}]")], &[])
            .starts_with("env BROKER_REWRITE: rewrite[0].action: expected one of \"publish\""),
    );
}

#[test]
fn lists_read_back_from_the_effective_toml() {
    let resolved = load(RULES, &[], &[]).unwrap();
    let text = resolved.to_toml();
    assert!(text.starts_with("# Effective"), "{text}");
    assert!(
        text.contains("\nrewrite = [{ action = \"publish\", source_topic = \"x/#\""),
        "{text}"
    );
    let again = load(&text, &[], &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.config(), resolved.config());
}

/// `docs/configuration.md` carries the reference table that `broker config keys --markdown`
/// prints, so every key is documented with its current type and default.
#[test]
fn docs_list_every_key() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for key in KEYS.iter() {
        assert!(
            docs.contains(&format!("`{}`", key.path)),
            "docs/configuration.md: {}",
            key.path
        );
    }
    let begin = "<!-- keys:begin (generated by `broker config keys --markdown`) -->\n";
    let end = "<!-- keys:end -->";
    let start = docs.find(begin).expect("the begin marker") + begin.len();
    let stop = docs[start..].find(end).expect("the end marker") + start;
    let generated = schema::keys_markdown();
    assert!(
        docs[start..stop] == generated,
        "docs/configuration.md is out of date; replace the table between the markers with \
         the output of `cargo run -p broker -- config keys --markdown`:\n{generated}"
    );
}
