//! Bootstrap: binds the listeners, builds the ring mesh, starts one pinned shard thread per
//! core, waits for SIGTERM/SIGINT and stops the shards in order.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use shard::driver::{self, DriverKind, ShardSpec, Started, Stopped, Transport};
use shard::ring::Mesh;
use shard::{Settings, ShardMsg};

/// What to serve, derived from the configuration.
#[derive(Debug)]
pub struct ServeSpec {
    /// Number of shards.
    pub cores: usize,
    /// CPUs to pin the shards to, in order (`None`: no pinning).
    pub cpus: Option<Vec<usize>>,
    /// Protocol settings for every shard.
    pub settings: Settings,
    /// The listeners to start, in order.
    pub listeners: Vec<ListenerPlan>,
    /// The TLS listeners' certificates, for reloading.
    pub tls: Vec<crate::tls::TlsListener>,
    /// MQTT over QUIC: where to bind, the QUIC server configuration, its options.
    pub quic: Option<(
        SocketAddr,
        Arc<quinn_proto::ServerConfig>,
        shard::quic::QuicOptions,
    )>,
    /// I/O driver.
    pub driver: DriverKind,
    /// Slots per cross-shard ring.
    pub ring_capacity: usize,
    /// Ring messages handled per batch.
    pub ring_batch: usize,
    /// The data directory (`node.data_dir`) and the log's policy.
    pub storage: (std::path::PathBuf, storage::log::LogOptions),
    /// The control plane's HTTP listener, if enabled, and the node's name.
    pub http: Option<SocketAddr>,
    /// The control plane's HTTPS listener, if enabled: where, and its TLS configuration.
    pub https: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Access control of the REST API (`dashboard.default_username`,
    /// `dashboard.token_expired_time`).
    pub access: crate::access::AccessOptions,
    /// `dashboard.metrics_auth`.
    pub metrics_auth: bool,
    /// `node.name`.
    pub node: String,
}

/// One listener to start.
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    /// Its transport's name in logs: `tcp`, `ssl`.
    pub name: &'static str,
    /// Its configuration keys' prefix (`listeners.ssl.default`), for messages.
    pub key: &'static str,
    /// Where to bind.
    pub bind: SocketAddr,
    /// What runs over it.
    pub transport: Transport,
    /// Connection limit over all shards.
    pub max_connections: Option<usize>,
    /// TLS handshake timeout.
    pub handshake_timeout: std::time::Duration,
}

/// A running broker: its shard threads and the flag that stops them.
#[derive(Debug)]
pub struct Running {
    /// Each listener's name, configuration key and actual address (port 0 resolved).
    pub listeners: Vec<(&'static str, &'static str, SocketAddr)>,
    /// The TCP listener's actual address, if it runs.
    pub tcp: Option<SocketAddr>,
    /// The driver each shard runs on.
    pub drivers: Vec<&'static str>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<io::Result<Stopped>>>,
    /// Held while the broker runs.
    _lock: storage::lock::DirLock,
    /// The control plane, stopped with the broker.
    control: Option<crate::control::Control>,
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
        // The shards are gone: so is what the control plane reports on.
        if let Some(c) = self.control {
            c.stop();
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
    let mut quic_sockets: Vec<Option<std::net::UdpSocket>> = (0..n).map(|_| None).collect();
    let cid_key = random_u64();
    let mut quic_addr = None;
    if let Some((bind, _, _)) = &spec.quic {
        let sockets = bind_udp_reuseport(*bind, n).map_err(|e| {
            io::Error::new(e.kind(), format!("listeners.quic.default.bind {bind}: {e}"))
        })?;
        quic_addr = sockets.first().map(|s| s.local_addr()).transpose()?;
        for (slot, s) in quic_sockets.iter_mut().zip(sockets) {
            *slot = Some(s);
        }
    }
    // Every listener is bound n times; shard i gets the i-th socket of each.
    let mut per_shard: Vec<Vec<driver::ListenerSpec>> = (0..n).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for plan in &spec.listeners {
        let sockets = bind_reuseport(plan.bind, n).map_err(|e| {
            io::Error::new(e.kind(), format!("{}.bind {}: {e}", plan.key, plan.bind))
        })?;
        if let Some(first) = sockets.first() {
            addrs.push((plan.name, plan.key, first.local_addr()?));
        }
        let per_shard_max = plan.max_connections.map_or(usize::MAX, |m| m.div_ceil(n));
        for (shard, socket) in per_shard.iter_mut().zip(sockets) {
            shard.push(driver::ListenerSpec {
                name: plan.name,
                socket,
                transport: plan.transport.clone(),
                max_connections: per_shard_max,
                handshake_timeout: plan.handshake_timeout,
            });
        }
    }
    // One broker per data directory, for the life of the process.
    let lock = storage::lock::DirLock::acquire(&spec.storage.0)
        .map_err(|e| io::Error::new(e.kind(), format!("node.data_dir: {e}")))?;
    let mut storage = recover_storage(&spec.storage.0, n, spec.storage.1)?.into_iter();
    let http = match spec.http {
        Some(bind) => Some(std::net::TcpListener::bind(bind).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("dashboard.listeners.http.bind {bind}: {e}"),
            )
        })?),
        None => None,
    };
    let https = match &spec.https {
        Some((bind, tls)) => Some((
            std::net::TcpListener::bind(bind).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("dashboard.listeners.https.bind {bind}: {e}"),
                )
            })?,
            tls.clone(),
        )),
        None => None,
    };
    // The REST API's users and keys, opened before any shard starts so a damaged store stops
    // the broker cleanly.
    let access = if http.is_some() || https.is_some() {
        let username = spec.access.default_username.clone();
        let opened = crate::access::Access::open(&spec.storage.0, spec.access.clone())?;
        if let Some(path) = &opened.generated {
            log::info!(
                "created dashboard user {username}; its password is in {}",
                path.display()
            );
        }
        Some(opened.access)
    } else {
        None
    };
    let slots: crate::control::Slots = (0..n)
        .map(|_| Arc::new(arc_swap::ArcSwapOption::empty()))
        .collect();
    // The shards' log lines (connections) go through a bounded channel to a thread that
    // writes them: a slow standard error never blocks a shard.
    let (log_tx, log_rx) = std::sync::mpsc::sync_channel::<String>(8192);
    thread::Builder::new()
        .name("log".to_owned())
        .spawn(move || {
            for line in log_rx {
                log::info!(target: "broker::clients", "{line}");
            }
        })?;
    // The shards are endpoints 0..n; the control plane is endpoint n.
    let mut endpoints = Mesh::<ShardMsg>::new(n + 1, spec.ring_capacity).into_endpoints();
    let control_endpoint = endpoints
        .pop()
        .ok_or_else(|| io::Error::other("empty mesh"))?;
    let (tx, rx) = mpsc::channel::<Started>();
    let mut threads = Vec::with_capacity(n);
    for (id, ((endpoint, listeners), quic_socket)) in endpoints
        .into_iter()
        .zip(per_shard)
        .zip(quic_sockets)
        .enumerate()
    {
        let quic = quic_socket
            .zip(spec.quic.as_ref())
            .map(|(socket, q)| driver::QuicSpec {
                socket,
                config: q.1.clone(),
                options: q.2.clone(),
                cid_key,
            });
        let shard_spec = ShardSpec {
            id: id as u16,
            shards,
            cpu: spec.cpus.as_ref().and_then(|c| c.get(id).copied()),
            settings: spec.settings.clone(),
            listeners,
            quic,
            driver: spec.driver,
            ring_batch: spec.ring_batch,
            storage: storage.next(),
            metrics: Some(slots[id].clone()),
            log: Some(log_tx.clone()),
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
    if let Some(addr) = quic_addr {
        addrs.push(("quic", "listeners.quic.default", addr));
    }
    let control = match (http, https, access) {
        (None, None, _) | (_, _, None) => None,
        (http, https, Some(access)) => {
            let listeners = addrs
                .iter()
                .map(|&(name, key, addr)| crate::control::ListenerInfo { name, key, addr })
                .collect();
            let c = crate::control::start(
                http,
                crate::control::PlaneSpec {
                    node: spec.node.clone(),
                    slots,
                    drivers: drivers.clone(),
                    mesh: control_endpoint,
                    listeners,
                    access,
                    metrics_auth: spec.metrics_auth,
                    https,
                },
            )?;
            if let Some(addr) = c.addr {
                addrs.push(("http", "dashboard.listeners.http", addr));
            }
            if let Some(addr) = c.https_addr {
                addrs.push(("https", "dashboard.listeners.https", addr));
            }
            Some(c)
        }
    };
    let tcp = addrs.iter().find(|a| a.0 == "tcp").map(|a| a.2);
    Ok(Running {
        listeners: addrs,
        tcp,
        drivers,
        shutdown,
        threads,
        _lock: lock,
        control,
    })
}

impl ServeSpec {
    /// The serving plan for `config` on `cores` shards. Fails, naming the key and the file,
    /// when a TLS listener's certificate, key or CA cannot be used.
    pub fn from_config(config: &crate::config::Config, cores: usize) -> Result<Self, String> {
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
            peer_cert_as_username: m.peer_cert_as_username,
            peer_cert_as_clientid: m.peer_cert_as_clientid,
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
            log_connections: config.log.level >= crate::config::LogLevel::Info,
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
        let limit = |l: Limit| match l {
            Limit::Infinity => None,
            Limit::Max(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        };
        let mut listeners = Vec::new();
        let tcp = &config.listeners.tcp.default;
        if tcp.enable {
            listeners.push(ListenerPlan {
                name: "tcp",
                key: "listeners.tcp.default",
                bind: tcp.bind,
                transport: Transport::Tcp,
                max_connections: limit(tcp.max_connections),
                handshake_timeout: std::time::Duration::ZERO,
            });
        }
        let mut tls = Vec::new();
        let ssl = &config.listeners.ssl.default;
        let o = &ssl.ssl_options;
        let has_cert = !o.certfile.as_os_str().is_empty() || !o.keyfile.as_os_str().is_empty();
        if ssl.enable && has_cert {
            let key = "listeners.ssl.default";
            listeners.push(ListenerPlan {
                name: "ssl",
                key,
                bind: ssl.bind,
                transport: Transport::Tls(tls_config(&mut tls, key, o, &config.crl_cache)?),
                max_connections: limit(ssl.max_connections),
                handshake_timeout: o.handshake_timeout,
            });
        }
        let ws = &config.listeners.ws.default;
        if ws.enable {
            let key = "listeners.ws.default";
            listeners.push(ListenerPlan {
                name: "ws",
                key,
                bind: ws.bind,
                transport: Transport::Ws(ws_options(key, &ws.websocket, m.max_packet_size)?),
                max_connections: limit(ws.max_connections),
                handshake_timeout: m.idle_timeout,
            });
        }
        let wss = &config.listeners.wss.default;
        let o = &wss.ssl_options;
        let has_cert = !o.certfile.as_os_str().is_empty() || !o.keyfile.as_os_str().is_empty();
        if wss.enable && has_cert {
            let key = "listeners.wss.default";
            listeners.push(ListenerPlan {
                name: "wss",
                key,
                bind: wss.bind,
                transport: Transport::Wss(
                    tls_config(&mut tls, key, o, &config.crl_cache)?,
                    ws_options(key, &wss.websocket, m.max_packet_size)?,
                ),
                max_connections: limit(wss.max_connections),
                handshake_timeout: o.handshake_timeout,
            });
        }
        let https = dashboard_https(config, &mut tls)?;
        let q = &config.listeners.quic;
        let quic = if q.enable {
            let (server, options) = quic_config(config)?;
            Some((q.bind, server, options))
        } else {
            None
        };
        Ok(Self {
            cores,
            cpus: config.shard.pin_cpus.then(crate::cpus::affinity).flatten(),
            settings,
            listeners,
            tls,
            quic,
            driver: match config.node.driver {
                Driver::Auto => DriverKind::Auto,
                Driver::IoUring => DriverKind::IoUring,
                Driver::Epoll => DriverKind::Epoll,
            },
            ring_capacity: config.shard.ring_capacity,
            ring_batch: config.shard.max_events_per_turn,
            http: config
                .dashboard
                .http_enable
                .then_some(config.dashboard.http_bind),
            https,
            access: crate::access::AccessOptions {
                default_username: config.dashboard.default_username.clone(),
                token_ttl: config.dashboard.token_expired_time,
            },
            metrics_auth: config.dashboard.metrics_auth,
            node: config.node.name.clone(),
            storage: (
                config.node.data_dir.clone(),
                storage::log::LogOptions {
                    policy: match config.durability.fsync {
                        crate::config::Fsync::Always => storage::log::Policy::Always,
                        crate::config::Fsync::Interval => {
                            storage::log::Policy::Interval(config.durability.fsync_interval)
                        }
                        crate::config::Fsync::Never => storage::log::Policy::Never,
                    },
                    ..storage::log::LogOptions::default()
                },
            ),
        })
    }
}

/// What the logs of `data_dir` hold, for `n` shards: each shard's sessions (on the shard that
/// owns the client id), the message bodies, the id to start above, and the directories of
/// shards beyond `n`. What was damaged or cut is logged.
fn recover_storage(
    data_dir: &std::path::Path,
    n: usize,
    options: storage::log::LogOptions,
) -> io::Result<Vec<shard::driver::StorageSpec>> {
    let shards = u16::try_from(n).map_err(|_| io::Error::other("too many shards"))?;
    let mut all = storage::image::Image::default();
    let mut existing: Vec<storage::log::Existing> = vec![Default::default(); n];
    let mut retire = Vec::new();
    let started = std::time::Instant::now();
    let mut records = 0;
    for (i, dir) in storage::dir::shard_dirs(data_dir)? {
        let s = storage::dir::load_shard(i, &dir, true)?;
        records += s.report.records;
        for p in &s.report.problems {
            log::warn!("recovery: {p}");
        }
        if let Some(e) = &s.first_undecodable {
            log::warn!(
                "recovery: {}: {} record(s) skipped: {e}",
                dir.display(),
                s.undecodable
            );
        }
        match existing.get_mut(i as usize) {
            Some(slot) => *slot = s.existing,
            None => retire.push(dir),
        }
        all.merge(s.image);
    }
    let first_id = storage::dir::max_id(&all) + 1;
    let c = all.counts();
    if records > 0 {
        log::info!(
            "recovered {} sessions ({} subscriptions, {} queued and {} inflight messages) and {} \
             retained messages from {records} records in {:.1?}",
            c.sessions,
            c.subscriptions,
            c.queued,
            c.inflight,
            c.retained,
            started.elapsed()
        );
    }
    let mut per_shard: Vec<Vec<storage::image::SessionImage>> = vec![Vec::new(); n];
    for (_, s) in std::mem::take(&mut all.sessions) {
        let owner = shard::core::owner_of(&s.header.client_id, shards);
        per_shard[usize::from(owner)].push(s);
    }
    let mut retained: Vec<Vec<(String, storage::schema::MessageV1)>> = vec![Vec::new(); n];
    for (topic, m) in std::mem::take(&mut all.retained) {
        let owner = shard::core::owner_of(&topic, shards);
        retained[usize::from(owner)].push((topic, m));
    }
    let mut delayed: Vec<Vec<storage::schema::DelayedV1>> = vec![Vec::new(); n];
    for (id, d) in std::mem::take(&mut all.delayed) {
        delayed[((id >> 48) % n as u64) as usize].push(d);
    }
    let messages = Arc::new(std::mem::take(&mut all.messages));
    let retire = Arc::new(shard::driver::Retire {
        remaining: std::sync::atomic::AtomicUsize::new(n),
        dirs: retire,
    });
    Ok(per_shard
        .into_iter()
        .zip(retained)
        .zip(delayed)
        .zip(existing)
        .enumerate()
        .map(
            |(i, (((sessions, retained), delayed), existing))| shard::driver::StorageSpec {
                dir: storage::dir::shard_dir(data_dir, i as u32),
                options,
                existing,
                first_id,
                sessions,
                retained,
                delayed,
                messages: messages.clone(),
                retire: retire.clone(),
            },
        )
        .collect())
}

/// The QUIC server configuration: the configured certificate, or a self-signed one generated
/// into `node.data_dir` (kept across restarts), TLS 1.3 with ALPN `mqtt`.
fn quic_config(
    config: &crate::config::Config,
) -> Result<(Arc<quinn_proto::ServerConfig>, shard::quic::QuicOptions), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let q = &config.listeners.quic;
    let key = "listeners.quic.default.ssl_options";
    let (certfile, keyfile) = if q.certfile.as_os_str().is_empty() {
        let dir = &config.node.data_dir;
        let (cert, private) = (
            dir.join("quic-selfsigned.pem"),
            dir.join("quic-selfsigned.key"),
        );
        if !cert.exists() || !private.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("node.data_dir {}: {e}", dir.display()))?;
            let made = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
            ])
            .map_err(|e| format!("{key}: cannot generate a certificate: {e}"))?;
            std::fs::write(&cert, made.cert.pem())
                .and_then(|()| std::fs::write(&private, made.key_pair.serialize_pem()))
                .map_err(|e| format!("node.data_dir {}: {e}", dir.display()))?;
        }
        log::info!(
            "QUIC uses the self-signed certificate {} (set {key}.certfile and keyfile for a real \
             one)",
            cert.display()
        );
        (cert, private)
    } else {
        (q.certfile.clone(), q.keyfile.clone())
    };
    let certs = CertificateDer::pem_file_iter(&certfile)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}.certfile {}: {e}", certfile.display()))?;
    let private = PrivateKeyDer::from_pem_file(&keyfile)
        .map_err(|e| format!("{key}.keyfile {}: {e}", keyfile.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("{key}: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| format!("{key}.certfile {}: {e}", certfile.display()))?;
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    if q.enable_0rtt {
        // QUIC allows 0 or u32::MAX here; resumption tickets come from rustls' session cache.
        tls.max_early_data_size = u32::MAX;
    }
    let options = shard::quic::QuicOptions {
        idle_timeout: q.idle_timeout,
        keep_alive_interval: q.keep_alive_interval,
        peer_bidi_stream_count: q.peer_bidi_stream_count,
        peer_unidi_stream_count: q.peer_unidi_stream_count,
        handshake_idle_timeout: q.handshake_idle_timeout,
        stateless_retry: q.stateless_retry,
        gso: q.gso,
    };
    let server =
        shard::quic::server_config(Arc::new(tls), &options).map_err(|e| format!("{key}: {e}"))?;
    Ok((server, options))
}

/// 64 random bits from the kernel (the QUIC connection-id key); the clock if that fails.
fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Socket buffer size asked for each QUIC UDP socket.
const UDP_BUFFER: libc::c_int = 8 << 20;

/// Sets a socket buffer size with the `*FORCE` option (root or CAP_NET_ADMIN may exceed the
/// sysctl limit), falling back to the plain one.
fn force_buffer(s: &socket2::Socket, force: libc::c_int, plain: libc::c_int, size: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for opt in [force, plain] {
        // SAFETY: `s` is an open socket; `size` is a live c_int of length `len`; setsockopt
        // only reads it.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                len,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Binds the UDP `addr` `n` times with `SO_REUSEPORT` (port 0: the first socket's port).
fn bind_udp_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // The kernel's default (208 KiB) overflows in a connection burst; ask for more (capped
        // by net.core.rmem_max/wmem_max unless the process may force it).
        force_buffer(&s, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, UDP_BUFFER);
        force_buffer(&s, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, UDP_BUFFER);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
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

/// The control plane's HTTPS listener, if `dashboard.listeners.https.enable`: its address and
/// TLS configuration (kept in `tls` for reloads, like the MQTT listeners'). Enabled without a
/// certificate and key is an error naming the missing key.
fn dashboard_https(
    config: &crate::config::Config,
    tls: &mut Vec<crate::tls::TlsListener>,
) -> Result<Option<(SocketAddr, Arc<rustls::ServerConfig>)>, String> {
    let d = &config.dashboard;
    if !d.https_enable {
        return Ok(None);
    }
    let key = "dashboard.listeners.https";
    let files = [
        ("certfile", &d.https_certfile),
        ("keyfile", &d.https_keyfile),
    ];
    for (name, path) in files {
        if path.as_os_str().is_empty() {
            return Err(format!(
                "{key}.ssl_options.{name}: required when {key}.enable is true"
            ));
        }
    }
    // The MQTT listeners' TLS defaults (TLS 1.3 and 1.2, every cipher suite, no client
    // certificates), with this certificate and key.
    let defaults = crate::config::Config::default().listeners.ssl.default;
    let options = crate::config::SslOptions {
        certfile: d.https_certfile.clone(),
        keyfile: d.https_keyfile.clone(),
        ..defaults.ssl_options
    };
    let config = tls_config(tls, key, &options, &config.crl_cache)?;
    let mut with_alpn = (*config).clone();
    with_alpn.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some((d.https_bind, Arc::new(with_alpn))))
}

/// Builds the TLS configuration of the listener under `key`, keeping it for reloads.
fn tls_config(
    tls: &mut Vec<crate::tls::TlsListener>,
    key: &str,
    o: &crate::config::SslOptions,
    crl_cache: &crate::config::CrlCache,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let listener = crate::tls::TlsListener::new(key, o, crl_cache)?;
    let config = listener.config();
    tls.push(listener);
    Ok(config)
}

/// Re-reads the TLS listeners' files on SIGHUP, or when one changes (checked every second),
/// until `stop` is set. Errors are logged and the listener keeps its certificate.
fn reload_loop(mut tls: Vec<crate::tls::TlsListener>, hup: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let asked = hup.swap(false, Ordering::AcqRel);
        let now = std::time::Instant::now();
        for l in &mut tls {
            for line in l.refresh_crls(now) {
                match line {
                    Ok(m) => log::info!("{m}"),
                    Err(e) => log::warn!("{e}"),
                }
            }
            match l.refresh_ocsp(now) {
                Some(Ok(())) => log::info!("{}: OCSP response stapled", l.prefix()),
                Some(Err(e)) => log::warn!("{e}"),
                None => {}
            }
            if !asked && !l.files_changed() {
                continue;
            }
            match l.reload() {
                Ok(()) => log::info!("{}: certificate files reloaded", l.prefix()),
                Err(e) => log::error!("{}: reload failed, keeping the old files: {e}", l.prefix()),
            }
        }
    }
}

/// The WebSocket options of the listener under `key`.
fn ws_options(
    key: &str,
    w: &crate::config::WebsocketOptions,
    max_packet_size: u32,
) -> Result<Arc<shard::ws::WsOptions>, String> {
    if !w.mqtt_path.starts_with('/') {
        return Err(format!(
            "{key}.websocket.mqtt_path: expected a path starting with '/', got {:?}",
            w.mqtt_path
        ));
    }
    if w.supported_subprotocols.is_empty() && w.fail_if_no_subprotocol {
        return Err(format!(
            "{key}.websocket.supported_subprotocols: empty while fail_if_no_subprotocol is \
             true: every client would be refused"
        ));
    }
    Ok(Arc::new(shard::ws::WsOptions {
        path: w.mqtt_path.clone(),
        subprotocols: w.supported_subprotocols.clone(),
        fail_if_no_subprotocol: w.fail_if_no_subprotocol,
        check_origin: w.check_origin_enable,
        allowed_origins: w.allowed_origins.clone(),
        proxy_address_header: w.proxy_address_header.clone(),
        // A WebSocket message carries at most a packet and a part of the next one.
        max_message: (max_packet_size as usize).saturating_mul(2).max(64 * 1024),
    }))
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
    let mut spec = match ServeSpec::from_config(config, cores) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let tls = std::mem::take(&mut spec.tls);
    // Handlers first: a supervisor may signal as soon as it sees the "listening" line.
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            log::error!("cannot install the handler for signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        log::error!("cannot install the handler for SIGHUP: {e}");
        return ExitCode::FAILURE;
    }
    let reloader = (!tls.is_empty()).then(|| {
        let stop = flag.clone();
        std::thread::Builder::new()
            .name("tls-reload".to_owned())
            .spawn(move || reload_loop(tls, hup, stop))
    });
    if let Some(Err(e)) = &reloader {
        log::error!("cannot start the certificate reload thread: {e}");
        return ExitCode::FAILURE;
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
    for (name, key, addr) in &running.listeners {
        log::info!("listening on {name} {addr} ({key}, {cores} shards)");
    }
    match running.wait() {
        Ok(stopped) => {
            for s in stopped {
                let st = &s.stats;
                log::info!(
                    "shard {} stopped: connections accepted {} established {}, messages \
                     received {} sent {} forwarded {}, quic datagrams handed over {}",
                    s.id,
                    st.connections_accepted,
                    st.connections_established,
                    st.messages_received,
                    st.messages_sent,
                    st.messages_forwarded,
                    st.quic_datagrams_forwarded
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
