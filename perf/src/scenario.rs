//! The run, fully resolved from the command line: addresses, every client's id, role and
//! topic, the publishing schedule. Built once on the main thread, then shared read-only by
//! the generator threads.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use net::mqtt::topic::{matches, split_shared, validate_topic_filter, validate_topic_name};
use net::mqtt::{ProtocolVersion, QoS};

use crate::cli::SubArgs;
use crate::cli::{BenchArgs, ClockArg, Command, Common, ConnArgs, Driver, PubArgs, PublishOpts};
use crate::clock::Clock;
use crate::payload::HEADER_LEN;
use crate::template::{self, SplitMix, Vars};
use crate::transport::TransportSpec;

/// Which subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Conn,
    Sub,
    Pub,
    Bench,
}

impl Kind {
    /// The subcommand's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Conn => "conn",
            Kind::Sub => "sub",
            Kind::Pub => "pub",
            Kind::Bench => "bench",
        }
    }
}

/// What a client does once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nothing: keep alive only (`perf conn`).
    Idle,
    /// Subscribe to `filter`.
    Sub {
        /// The expanded topic filter.
        filter: String,
    },
    /// Publish to `topic`.
    Pub {
        /// Publisher id, written into every payload.
        id: u32,
        /// The expanded topic.
        topic: String,
        /// Where in the period this publisher's schedule starts, ns (spreads the publishers
        /// evenly over one period instead of firing together).
        offset_ns: u64,
        /// Subscribers of this run whose filter matches `topic` (`perf bench`).
        matches: u64,
    },
}

/// One client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientSpec {
    /// Client identifier.
    pub(crate) client_id: String,
    /// Its role.
    pub(crate) role: Role,
}

/// How publishers publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PublishSpec {
    pub(crate) qos: QoS,
    /// Payload size, at least [`HEADER_LEN`].
    pub(crate) size: usize,
    /// Fixed-rate period of each publisher, ns; `None`: as fast as the connection takes them.
    pub(crate) period_ns: Option<u64>,
    /// Messages per publisher, 0 for no limit.
    pub(crate) limit: u64,
    /// Window of unacknowledged QoS 1/2 messages (0: the broker's Receive Maximum).
    pub(crate) inflight: u16,
    pub(crate) retain: bool,
    pub(crate) clock: Clock,
    /// `--rate`, for the report.
    pub(crate) rate: Option<f64>,
}

/// A run.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) kind: Kind,
    /// Broker addresses, used round-robin.
    pub(crate) targets: Vec<SocketAddr>,
    /// TLS and WebSocket above TCP, or QUIC (each indexed like `targets` where it depends on
    /// the host).
    pub(crate) transport: TransportSpec,
    /// Local addresses to bind, used round-robin.
    pub(crate) ifaddrs: Vec<IpAddr>,
    pub(crate) version: ProtocolVersion,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) keepalive: u16,
    pub(crate) clean: bool,
    pub(crate) session_expiry: u32,
    /// Between two connects.
    pub(crate) interval: Duration,
    pub(crate) connect_timeout: Duration,
    /// Length of the measured phase.
    pub(crate) duration: Option<Duration>,
    /// Warm-up before the measured phase (zero: none; always zero for `perf conn`).
    pub(crate) warmup: Duration,
    pub(crate) threads: usize,
    pub(crate) driver: Driver,
    /// Every client, in connect order (subscribers before publishers).
    pub(crate) clients: Vec<ClientSpec>,
    pub(crate) publish: Option<PublishSpec>,
    /// QoS of the subscriptions.
    pub(crate) sub_qos: QoS,
    /// Wait for messages in flight once publishing stops.
    pub(crate) drain: Duration,
    /// Random per process, written into payloads.
    pub(crate) run_id: u32,
    pub(crate) pubs: usize,
    pub(crate) subs: usize,
    /// Topic templates as given, for the report.
    pub(crate) topic: Option<String>,
    pub(crate) sub_topic: Option<String>,
}

impl Scenario {
    /// Resolves the command line. `seed` seeds `%rand_N` and the run id.
    pub(crate) fn build(command: &Command, seed: u64) -> Result<Self, String> {
        let mut rng = SplitMix::new(seed);
        let run_id = rng.next_u64() as u32;
        match command {
            Command::Conn(a) => Self::conn(a, run_id),
            Command::Sub(a) => Self::sub(a, run_id, &mut rng),
            Command::Pub(a) => Self::publish(a, run_id, &mut rng),
            Command::Bench(a) => Self::bench(a, run_id, &mut rng),
        }
    }

    fn base(kind: Kind, c: &Common, run_id: u32) -> Result<Self, String> {
        let version = ProtocolVersion::from_level(c.protocol)
            .ok_or_else(|| format!("-V {}: the protocol version is 3, 4 or 5", c.protocol))?;
        if c.session_expiry != 0 && version != ProtocolVersion::V5 {
            return Err("-x/--session-expiry needs MQTT 5 (-V 5)".into());
        }
        let targets = resolve(&c.host, c.port, &c.ifaddr)?;
        let transport = TransportSpec::build(c, version)?;
        Ok(Self {
            kind,
            targets,
            transport,
            ifaddrs: c.ifaddr.clone(),
            version,
            username: c.username.clone(),
            password: c.password.clone(),
            keepalive: c.keepalive,
            clean: c.clean,
            session_expiry: c.session_expiry,
            interval: Duration::from_millis(c.interval),
            connect_timeout: Duration::from_secs(c.connect_timeout.max(1)),
            duration: c.duration,
            warmup: Duration::ZERO,
            threads: c
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            driver: c.driver,
            clients: Vec::new(),
            publish: None,
            sub_qos: QoS::AtMostOnce,
            drain: Duration::from_secs(2),
            run_id,
            pubs: 0,
            subs: 0,
            topic: None,
            sub_topic: None,
        })
    }

    fn conn(a: &ConnArgs, run_id: u32) -> Result<Self, String> {
        let mut s = Self::base(Kind::Conn, &a.common, run_id)?;
        at_least_one(a.count, "-c/--count")?;
        let prefix = prefix(&a.common);
        s.clients = (0..a.count as u64)
            .map(|k| ClientSpec {
                client_id: format!("{prefix}-conn-{}", a.common.start_number + k),
                role: Role::Idle,
            })
            .collect();
        Ok(s.finish())
    }

    fn sub(a: &SubArgs, run_id: u32, rng: &mut SplitMix) -> Result<Self, String> {
        let mut s = Self::base(Kind::Sub, &a.common, run_id)?;
        at_least_one(a.count, "-c/--count")?;
        s.sub_qos = qos(a.qos);
        s.warmup = a.warmup.warmup;
        s.subs = a.count;
        s.topic = Some(a.topic.clone());
        s.clients = subscribers(&a.common, a.count, &a.topic, rng)?;
        Ok(s.finish())
    }

    fn publish(a: &PubArgs, run_id: u32, rng: &mut SplitMix) -> Result<Self, String> {
        let mut s = Self::base(Kind::Pub, &a.common, run_id)?;
        at_least_one(a.count, "-c/--count")?;
        s.pubs = a.count;
        s.warmup = a.warmup.warmup;
        s.topic = Some(a.topic.clone());
        let spec = publish_spec(&a.publish, a.interval_of_msg, a.count)?;
        s.clients = publishers(&a.common, a.count, &a.topic, &spec, &[], rng)?;
        s.publish = Some(spec);
        Ok(s.finish())
    }

    fn bench(a: &BenchArgs, run_id: u32, rng: &mut SplitMix) -> Result<Self, String> {
        let mut s = Self::base(Kind::Bench, &a.common, run_id)?;
        if a.pubs == 0 && a.subs == 0 {
            return Err("--pubs and --subs are both 0: nothing to run".into());
        }
        if split_shared(&a.sub_topic).is_some() {
            return Err(
                "--sub-topic: shared subscriptions are not supported by perf bench's delivery \
                 accounting yet"
                    .into(),
            );
        }
        s.pubs = a.pubs;
        s.subs = a.subs;
        s.sub_qos = qos(a.publish.qos);
        s.drain = Duration::from_millis(a.drain);
        s.warmup = a.warmup.warmup;
        s.topic = Some(a.topic.clone());
        s.sub_topic = Some(a.sub_topic.clone());
        let spec = publish_spec(&a.publish, a.interval_of_msg, a.pubs)?;
        let subs = subscribers(&a.common, a.subs, &a.sub_topic, rng)?;
        let filters: Vec<&str> = subs
            .iter()
            .filter_map(|c| match &c.role {
                Role::Sub { filter } => Some(filter.as_str()),
                _ => None,
            })
            .collect();
        let pubs = publishers(&a.common, a.pubs, &a.topic, &spec, &filters, rng)?;
        s.clients = subs;
        s.clients.extend(pubs);
        s.publish = Some(spec);
        Ok(s.finish())
    }

    fn finish(mut self) -> Self {
        self.threads = self.threads.clamp(1, self.clients.len().max(1));
        self
    }
}

fn at_least_one(n: usize, flag: &str) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{flag} must be at least 1"));
    }
    Ok(())
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtMostOnce)
}

fn prefix(c: &Common) -> String {
    c.prefix
        .clone()
        .unwrap_or_else(|| format!("perf-{}", std::process::id()))
}

fn publish_spec(o: &PublishOpts, interval_ms: u64, pubs: usize) -> Result<PublishSpec, String> {
    if o.size < HEADER_LEN {
        return Err(format!(
            "-s/--size {}: payloads carry a {HEADER_LEN}-byte measurement header, so the size \
             is at least {HEADER_LEN}",
            o.size
        ));
    }
    let period_ns = match o.rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(format!(
                "--rate {r}: must be a positive number of messages/s"
            ));
        }
        Some(r) => Some(((pubs.max(1) as f64) * 1e9 / r).round().max(1.0) as u64),
        None if interval_ms > 0 => Some(interval_ms.saturating_mul(1_000_000)),
        None => None,
    };
    Ok(PublishSpec {
        qos: qos(o.qos),
        size: o.size,
        period_ns,
        limit: o.limit,
        inflight: o.inflight,
        retain: o.retain,
        clock: match o.clock {
            ClockArg::Monotonic => Clock::Monotonic,
            ClockArg::Realtime => Clock::Realtime,
        },
        rate: o.rate,
    })
}

fn subscribers(
    c: &Common,
    count: usize,
    template: &str,
    rng: &mut SplitMix,
) -> Result<Vec<ClientSpec>, String> {
    let prefix = prefix(c);
    let user = c.username.as_deref().unwrap_or("");
    (0..count as u64)
        .map(|k| {
            let seq = c.start_number + k;
            let client_id = format!("{prefix}-sub-{seq}");
            let vars = Vars {
                seq,
                client_id: &client_id,
                username: user,
            };
            let filter = template::expand(template, vars, &mut |n| rng.one_to(n));
            validate_topic_filter(&filter)
                .map_err(|e| format!("topic filter `{filter}`: {e:?} ({})", e.rule()))?;
            Ok(ClientSpec {
                client_id,
                role: Role::Sub { filter },
            })
        })
        .collect()
}

fn publishers(
    c: &Common,
    count: usize,
    template: &str,
    spec: &PublishSpec,
    filters: &[&str],
    rng: &mut SplitMix,
) -> Result<Vec<ClientSpec>, String> {
    let prefix = prefix(c);
    let user = c.username.as_deref().unwrap_or("");
    (0..count as u64)
        .map(|k| {
            let seq = c.start_number + k;
            let client_id = format!("{prefix}-pub-{seq}");
            let vars = Vars {
                seq,
                client_id: &client_id,
                username: user,
            };
            let topic = template::expand(template, vars, &mut |n| rng.one_to(n));
            validate_topic_name(&topic)
                .map_err(|e| format!("topic `{topic}`: {e:?} ({})", e.rule()))?;
            let offset_ns = spec.period_ns.map_or(0, |p| {
                (u128::from(p) * u128::from(k) / count as u128) as u64
            });
            let matches = filters.iter().filter(|f| matches(f, &topic)).count() as u64;
            Ok(ClientSpec {
                client_id,
                role: Role::Pub {
                    id: k as u32,
                    topic,
                    offset_ns,
                    matches,
                },
            })
        })
        .collect()
}

/// Resolves every host; with `--ifaddr`, prefers addresses of the same family.
fn resolve(hosts: &[String], port: u16, ifaddrs: &[IpAddr]) -> Result<Vec<SocketAddr>, String> {
    let want_v6 = ifaddrs.first().map(IpAddr::is_ipv6);
    hosts
        .iter()
        .map(|h| {
            let addrs: Vec<SocketAddr> = (h.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve `{h}`: {e}"))?
                .collect();
            let pick = match want_v6 {
                Some(v6) => addrs.iter().find(|a| a.is_ipv6() == v6),
                None => addrs.iter().find(|a| a.is_ipv4()),
            };
            pick.or(addrs.first())
                .copied()
                .ok_or_else(|| format!("`{h}` resolves to no address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn build(args: &[&str]) -> Result<Scenario, String> {
        let mut argv = vec!["perf"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Scenario::build(&cli.command, 1)
    }

    #[test]
    fn fan_in() {
        let s = build(&[
            "bench",
            "-h",
            "127.0.0.1",
            "--pubs",
            "3",
            "--subs",
            "1",
            "-t",
            "f/%i",
            "--sub-topic",
            "f/#",
            "--rate",
            "300",
            "--prefix",
            "x",
        ])
        .unwrap();
        assert_eq!(s.clients.len(), 4);
        assert_eq!(
            s.clients[0].role,
            Role::Sub {
                filter: "f/#".into()
            }
        );
        assert_eq!(s.clients[0].client_id, "x-sub-0");
        let p = s.publish.clone().unwrap();
        assert_eq!(p.period_ns, Some(10_000_000)); // 300/s over 3 = 100/s each
        let Role::Pub {
            id,
            topic,
            offset_ns,
            matches,
        } = &s.clients[3].role
        else {
            panic!("not a publisher")
        };
        assert_eq!((*id, topic.as_str(), *matches), (2, "f/2", 1));
        assert_eq!(*offset_ns, 10_000_000 * 2 / 3);
        assert_eq!(s.clients[3].client_id, "x-pub-2");
    }

    #[test]
    fn pairs_and_fan_out() {
        let s = build(&[
            "bench",
            "-h",
            "127.0.0.1",
            "--pubs",
            "2",
            "--subs",
            "2",
            "-t",
            "p/%i",
            "--sub-topic",
            "p/%i",
        ])
        .unwrap();
        let m: Vec<u64> = s
            .clients
            .iter()
            .filter_map(|c| match c.role {
                Role::Pub { matches, .. } => Some(matches),
                _ => None,
            })
            .collect();
        assert_eq!(m, [1, 1]);
        let s = build(&[
            "bench",
            "-h",
            "127.0.0.1",
            "--pubs",
            "1",
            "--subs",
            "5",
            "-t",
            "o/x",
            "--sub-topic",
            "o/+",
        ])
        .unwrap();
        assert!(matches!(s.clients[5].role, Role::Pub { matches: 5, .. }));
        assert_eq!(s.publish.unwrap().period_ns, None);
    }

    #[test]
    fn refusals() {
        let e = build(&["pub", "-h", "127.0.0.1", "-t", "a", "-s", "8"]).unwrap_err();
        assert!(e.contains("at least 32"), "{e}");
        let e = build(&["conn", "-h", "127.0.0.1", "--ws", "--ws-path", "mqtt"]).unwrap_err();
        assert!(e.contains("must start with /"), "{e}");
        let e = build(&[
            "conn",
            "-h",
            "127.0.0.1",
            "--tls",
            "--cacertfile",
            "/nonexistent.pem",
        ])
        .unwrap_err();
        assert!(e.starts_with("--cacertfile /nonexistent.pem: "), "{e}");
        let e = build(&["pub", "-h", "127.0.0.1", "-t", "a/#"]).unwrap_err();
        assert!(e.contains("a/#"), "{e}");
        let e = build(&["sub", "-h", "127.0.0.1", "-t", "a/#b"]).unwrap_err();
        assert!(e.contains("a/#b"), "{e}");
        let e = build(&["pub", "-h", "127.0.0.1", "-t", "a", "--rate", "0"]).unwrap_err();
        assert!(e.contains("--rate"), "{e}");
        let e = build(&["conn", "-h", "127.0.0.1", "-V", "4", "-x", "10"]).unwrap_err();
        assert!(e.contains("MQTT 5"), "{e}");
    }

    #[test]
    fn interval_of_msg_is_a_fixed_rate() {
        let s = build(&["pub", "-h", "127.0.0.1", "-t", "a/%i", "-c", "2"]).unwrap();
        assert_eq!(s.publish.unwrap().period_ns, Some(1_000_000_000));
        let s = build(&["pub", "-h", "127.0.0.1", "-t", "a", "-I", "0"]).unwrap();
        assert_eq!(s.publish.unwrap().period_ns, None);
    }

    #[test]
    fn transports() {
        let s = build(&["conn", "-h", "127.0.0.1"]).unwrap();
        assert_eq!(s.transport.name(), "tcp");
        let s = build(&[
            "conn",
            "-h",
            "127.0.0.1,localhost",
            "-p",
            "8883",
            "--tls",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(s.transport.name(), "tls");
        let tls = s.transport.tls.unwrap();
        assert_eq!(tls.roots, crate::transport::Roots::Insecure);
        assert_eq!(tls.server_names.len(), 2);
        assert_eq!(
            format!("{:?}", tls.server_names[0]),
            "IpAddress(V4(Ipv4Addr([127, 0, 0, 1])))"
        );
        let s = build(&["conn", "-h", "127.0.0.1", "-p", "8083", "--ws"]).unwrap();
        assert_eq!(s.transport.name(), "ws");
        let ws = s.transport.ws.unwrap();
        assert_eq!(ws.uris[0].to_string(), "ws://127.0.0.1:8083/mqtt");
        assert_eq!(ws.subprotocols, ["mqtt"]);
        let s = build(&[
            "conn",
            "-h",
            "::1",
            "-p",
            "8084",
            "--ws",
            "--ws-path",
            "/ws",
            "--tls",
            "--insecure",
            "-V",
            "3",
        ])
        .unwrap();
        assert_eq!(s.transport.name(), "wss");
        let ws = s.transport.ws.unwrap();
        assert_eq!(ws.uris[0].to_string(), "wss://[::1]:8084/ws");
        assert_eq!(ws.subprotocols, ["mqttv3.1", "mqtt"]);
        let s = build(&[
            "conn",
            "-h",
            "127.0.0.1,localhost",
            "-p",
            "14567",
            "--quic",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(s.transport.name(), "quic");
        assert!(s.transport.tls.is_none() && s.transport.ws.is_none());
        let quic = s.transport.quic.as_ref().unwrap();
        assert_eq!(quic.server_names, ["127.0.0.1", "localhost"]);
        assert!(!quic.multi_stream);
        let tls = s.transport.tls_settings().unwrap();
        assert_eq!(tls.roots, crate::transport::Roots::Insecure);
        assert_eq!(tls.config.alpn_protocols, [b"mqtt".to_vec()]);
        assert!(s.transport.is_layered());
        let s = build(&[
            "bench",
            "-h",
            "127.0.0.1",
            "--quic",
            "--insecure",
            "--quic-multi-stream",
        ])
        .unwrap();
        assert_eq!(s.transport.name(), "quic");
        assert!(s.transport.quic.as_ref().unwrap().multi_stream);
    }

    #[test]
    fn warmup() {
        let s = build(&["bench", "-h", "127.0.0.1", "--warmup", "1.5s"]).unwrap();
        assert_eq!(s.warmup, Duration::from_millis(1500));
        let s = build(&["pub", "-h", "127.0.0.1", "-t", "a", "--warmup", "2"]).unwrap();
        assert_eq!(s.warmup, Duration::from_secs(2));
        let s = build(&["sub", "-h", "127.0.0.1", "-t", "a", "--warmup", "100ms"]).unwrap();
        assert_eq!(s.warmup, Duration::from_millis(100));
        let s = build(&["bench", "-h", "127.0.0.1"]).unwrap();
        assert_eq!(s.warmup, Duration::ZERO);
        let s = build(&["conn", "-h", "127.0.0.1"]).unwrap();
        assert_eq!(s.warmup, Duration::ZERO);
    }
}
