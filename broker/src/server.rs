//! Bootstrap: binds the listeners, builds the ring mesh, starts one pinned shard thread per
//! core, waits for SIGTERM/SIGINT and stops the shards in order.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use shard::driver::{self, DriverKind, ShardSpec, Started, Stopped};
use shard::ring::Mesh;
use shard::{Settings, ShardMsg};

/// What to serve, derived from the configuration.
#[derive(Debug, Clone)]
pub struct ServeSpec {
    /// Number of shards.
    pub cores: usize,
    /// CPUs to pin the shards to, in order (`None`: no pinning).
    pub cpus: Option<Vec<usize>>,
    /// Protocol settings for every shard.
    pub settings: Settings,
    /// TCP listener address, if enabled.
    pub tcp: Option<SocketAddr>,
    /// Connection limit of the TCP listener, over all shards.
    pub tcp_max_connections: Option<usize>,
    /// I/O driver.
    pub driver: DriverKind,
    /// Slots per cross-shard ring.
    pub ring_capacity: usize,
    /// Ring messages handled per batch.
    pub ring_batch: usize,
}

/// A running broker: its shard threads and the flag that stops them.
#[derive(Debug)]
pub struct Running {
    /// The TCP listener's actual address (port 0 resolved).
    pub tcp: Option<SocketAddr>,
    /// The driver each shard runs on.
    pub drivers: Vec<&'static str>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<io::Result<Stopped>>>,
}

impl Running {
    /// The flag that makes every shard shut down when set.
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Asks every shard to stop and waits for them; returns their final counters.
    pub fn stop(self) -> io::Result<Vec<Stopped>> {
        self.shutdown.store(true, Ordering::Release);
        self.wait()
    }

    /// Waits for the shards to stop (after the shutdown flag is set).
    pub fn wait(self) -> io::Result<Vec<Stopped>> {
        let mut out = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(r) => out.push(r?),
                Err(_) => return Err(io::Error::other("a shard thread panicked")),
            }
        }
        Ok(out)
    }
}

/// Binds `addr` `n` times with `SO_REUSEPORT`, so the kernel spreads connections over the
/// shards. Port 0 is resolved by the first bind and reused by the others.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        Ok(s.into())
    }
    let first = bind(addr)?;
    let actual = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(bind(actual)?);
    }
    Ok(all)
}

/// Starts the shards. Returns once every shard runs and every listener is bound. Setting
/// `shutdown` stops them.
pub fn start(spec: ServeSpec, shutdown: Arc<AtomicBool>) -> io::Result<Running> {
    let n = spec.cores.max(1);
    let shards = u16::try_from(n).map_err(|_| io::Error::other("too many shards"))?;
    let mut tcp = match spec.tcp {
        Some(addr) => bind_reuseport(addr, n)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("listeners.tcp.default.bind {addr}: {e}"))
            })?
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    let tcp_addr = match tcp.first() {
        Some(Some(l)) => Some(l.local_addr()?),
        _ => None,
    };
    tcp.resize_with(n, || None);
    let per_shard_max = spec
        .tcp_max_connections
        .map_or(usize::MAX, |m| m.div_ceil(n));
    let mesh = Mesh::<ShardMsg>::new(n, spec.ring_capacity);
    let (tx, rx) = mpsc::channel::<Started>();
    let mut threads = Vec::with_capacity(n);
    for (id, (endpoint, listener)) in mesh.into_endpoints().into_iter().zip(tcp).enumerate() {
        let shard_spec = ShardSpec {
            id: id as u16,
            shards,
            cpu: spec.cpus.as_ref().and_then(|c| c.get(id).copied()),
            settings: spec.settings.clone(),
            tcp: listener,
            max_connections: per_shard_max,
            driver: spec.driver,
            ring_batch: spec.ring_batch,
        };
        let tx = tx.clone();
        let stop = shutdown.clone();
        let t = thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                driver::run(shard_spec, endpoint, stop, move |s| {
                    let _ = tx.send(s);
                })
            })?;
        threads.push(t);
    }
    drop(tx);
    let mut drivers = vec![""; n];
    for _ in 0..n {
        match rx.recv() {
            Ok(s) => {
                if let Some(d) = drivers.get_mut(usize::from(s.id)) {
                    *d = s.driver;
                }
            }
            Err(_) => {
                // A shard failed before it started: report its error.
                shutdown.store(true, Ordering::Release);
                for t in threads {
                    if let Ok(Err(e)) = t.join() {
                        return Err(e);
                    }
                }
                return Err(io::Error::other("a shard failed to start"));
            }
        }
    }
    Ok(Running {
        tcp: tcp_addr,
        drivers,
        shutdown,
        threads,
    })
}

impl ServeSpec {
    /// The serving plan for `config` on `cores` shards.
    pub fn from_config(config: &crate::config::Config, cores: usize) -> Self {
        use crate::config::{Driver, Limit};
        let m = &config.mqtt;
        let settings = Settings {
            max_packet_size: m.max_packet_size,
            max_clientid_len: m.max_clientid_len,
            max_topic_levels: m.max_topic_levels,
            max_qos_allowed: m.max_qos_allowed,
            max_inflight: m.max_inflight,
            max_mqueue_len: m.max_mqueue_len,
            mqueue_store_qos0: m.mqueue_store_qos0,
            max_awaiting_rel: m.max_awaiting_rel,
            await_rel_timeout: m.await_rel_timeout,
            retry_interval: m.retry_interval,
            idle_timeout: m.idle_timeout,
            keepalive_multiplier: m.keepalive_multiplier,
            session_expiry_interval: m.session_expiry_interval,
            server_keepalive: m.server_keepalive,
            max_topic_alias: m.max_topic_alias,
            wildcard_subscription: m.wildcard_subscription,
            shared_subscription: m.shared_subscription,
            retain_available: m.retain_available,
            shared_strategy: m.shared_subscription_strategy,
            subscription_identifiers: m.subscription_identifiers,
            exclusive_subscription: m.exclusive_subscription,
            response_information: m.response_information.clone(),
            max_packets_per_read: config.shard.max_events_per_turn,
            max_retained_messages: usize::try_from(config.retainer.max_retained_messages)
                .unwrap_or(usize::MAX)
                .div_ceil(cores.max(1)),
            max_retained_payload: config.retainer.max_payload_size as usize,
            retained_expiry: config.retainer.msg_expiry_interval,
            delayed_enable: config.delayed.enable,
            max_delayed_messages: usize::try_from(config.delayed.max_delayed_messages)
                .unwrap_or(usize::MAX)
                .div_ceil(cores.max(1)),
            node_name: config.node.name.clone(),
            sys_msg_interval: config.sys_topics.sys_msg_interval,
            sys_heartbeat_interval: config.sys_topics.sys_heartbeat_interval,
            sys_client_events: (
                config.sys_topics.client_connected,
                config.sys_topics.client_disconnected,
            ),
            rewrite: std::sync::Arc::new(rewrite_rules(&config.rewrite)),
            auto_subscribe: config
                .auto_subscribe
                .topics
                .iter()
                .map(|t| shard::rewrite::AutoSubscribe {
                    topic: t.topic.clone(),
                    options: net::mqtt::SubscriptionOptions {
                        qos: t.qos,
                        no_local: t.nl,
                        retain_as_published: t.rap,
                        retain_handling: t.rh,
                    },
                })
                .collect(),
            ..Settings::default()
        };
        let tcp = &config.listeners.tcp.default;
        Self {
            cores,
            cpus: config.shard.pin_cpus.then(crate::cpus::affinity).flatten(),
            settings,
            tcp: tcp.enable.then_some(tcp.bind),
            tcp_max_connections: match tcp.max_connections {
                Limit::Infinity => None,
                Limit::Max(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            driver: match config.node.driver {
                Driver::Auto => DriverKind::Auto,
                Driver::IoUring => DriverKind::IoUring,
                Driver::Epoll => DriverKind::Epoll,
            },
            ring_capacity: config.shard.ring_capacity,
            ring_batch: config.shard.max_events_per_turn,
        }
    }
}

/// Compiles the `rewrite` rules. Their expressions were validated when the configuration was
/// loaded; one that still fails to compile is logged and left out.
fn rewrite_rules(rules: &[crate::config::RewriteRule]) -> shard::rewrite::Rewrite {
    let compiled: Vec<shard::rewrite::RewriteRule> = rules
        .iter()
        .filter_map(|r| match regex::Regex::new(&r.re) {
            Ok(re) => Some(shard::rewrite::RewriteRule {
                action: r.action,
                source_topic: r.source_topic.clone(),
                re,
                dest_topic: r.dest_topic.clone(),
            }),
            Err(e) => {
                log::error!("rewrite rule {:?} left out: {e}", r.re);
                None
            }
        })
        .collect();
    shard::rewrite::Rewrite::new(&compiled)
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully: stop accepting, DISCONNECT 0x8B
/// to MQTT 5 clients, close. Returns the process exit status.
pub fn serve(config: &crate::config::Config, cores: usize) -> std::process::ExitCode {
    use std::process::ExitCode;
    let spec = ServeSpec::from_config(config, cores);
    // Handlers first: a supervisor may signal as soon as it sees the "listening" line.
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            log::error!("cannot install the handler for signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let running = match start(spec, flag) {
        Ok(r) => r,
        Err(e) => {
            log::error!("start failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (id, d) in running.drivers.iter().enumerate() {
        log::info!("shard {id} running on the {d} driver");
    }
    if let Some(addr) = running.tcp {
        log::info!("listening on tcp {addr} (listeners.tcp.default, {cores} shards)");
    }
    match running.wait() {
        Ok(stopped) => {
            for s in stopped {
                let st = &s.stats;
                log::info!(
                    "shard {} stopped: connections accepted {} established {}, messages \
                     received {} sent {} forwarded {}",
                    s.id,
                    st.connections_accepted,
                    st.connections_established,
                    st.messages_received,
                    st.messages_sent,
                    st.messages_forwarded
                );
            }
            log::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("shard failed: {e}");
            ExitCode::FAILURE
        }
    }
}
