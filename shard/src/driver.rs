//! The monoio driver of one shard: a thin loop around the sans-IO [`Shard`].
//!
//! One thread per shard (pinned to a CPU if the spec says so) runs one monoio runtime (io_uring, or epoll where
//! io_uring is unavailable or `node.driver = "epoll"`). Inside it:
//!
//! - an accept task per listener (each shard has its own `SO_REUSEPORT` socket);
//! - per connection a reader task (socket → [`Shard::handle_read`]) and a writer task
//!   ([`Shard::take_output`] → socket), woken by the shard's events;
//! - a ring task that drains the incoming rings into [`Shard::handle_message`] in bounded
//!   batches, sleeping on the shard's doorbell when they are empty;
//! - a timer task for [`Shard::handle_timeout`] and the shutdown flag;
//! - a backpressure task that retries messages a full ring refused; while any wait, readers do
//!   not read.
//!
//! All tasks share the shard through an `Rc<RefCell<..>>` that is never borrowed across an
//! `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::io::{
    AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, Splitable,
};
use monoio::net::{TcpListener, TcpStream};

use crate::core::{Event, Read, Shard, ShardId, ShardMsg};
use crate::quic::QuicEndpoint;
use crate::ring::MeshEndpoint;
use crate::settings::Settings;
use crate::slab::Key;
use crate::stats::{DriverStats, Latency, ListenerStats, Stats};
use crate::tls::{Decrypted, TlsConn};
use crate::udp;
use crate::ws::{WsConn, WsOptions, WsStatus};
use std::os::fd::AsRawFd as _;

/// Which I/O driver a shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only (start fails without it).
    IoUring,
    /// epoll only.
    Epoll,
}

/// How a listener's connections carry MQTT.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP, with this server configuration (certificate, client verification).
    Tls(Arc<rustls::ServerConfig>),
    /// WebSocket over TCP.
    Ws(Arc<WsOptions>),
    /// WebSocket over TLS.
    Wss(Arc<rustls::ServerConfig>, Arc<WsOptions>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "Tcp",
            Self::Tls(_) => "Tls",
            Self::Ws(_) => "Ws",
            Self::Wss(..) => "Wss",
        })
    }
}

/// The byte transformations between a connection's socket and the MQTT codec: TLS, WebSocket
/// framing, or both (WSS: WebSocket inside TLS).
struct Layer {
    tls: Option<TlsConn>,
    ws: Option<WsConn>,
    /// WSS: bytes TLS decrypted that WebSocket has not taken yet.
    mid: BytesMut,
}

impl Layer {
    fn new(transport: &Transport) -> Result<Option<Self>, rustls::Error> {
        let (tls, ws) = match transport {
            Transport::Tcp => return Ok(None),
            Transport::Tls(c) => (Some(TlsConn::new(c.clone())?), None),
            Transport::Ws(o) => (None, Some(WsConn::new(o.clone()))),
            Transport::Wss(c, o) => (Some(TlsConn::new(c.clone())?), Some(WsConn::new(o.clone()))),
        };
        Ok(Some(Self {
            tls,
            ws,
            mid: BytesMut::new(),
        }))
    }

    /// Socket bytes in `raw` → MQTT bytes appended to `plain`; `Ok(true)` once the peer has
    /// closed (TLS close_notify, WebSocket close frame).
    fn receive(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> io::Result<bool> {
        match (&mut self.tls, &mut self.ws) {
            (Some(t), None) => Ok(t.decrypt(raw, plain)? == Decrypted::Closed),
            (None, Some(w)) => Ok(w.receive(raw, plain)? == WsStatus::Closed),
            (Some(t), Some(w)) => {
                let tls_closed = t.decrypt(raw, &mut self.mid)? == Decrypted::Closed;
                let ws_closed = w.receive(&mut self.mid, plain)? == WsStatus::Closed;
                Ok(tls_closed || ws_closed)
            }
            (None, None) => {
                plain.extend_from_slice(raw);
                raw.clear();
                Ok(false)
            }
        }
    }

    /// MQTT bytes in `chunks` (drained) → socket bytes; `closing` starts the layers' closing
    /// handshakes (WebSocket close frame, TLS close_notify).
    fn send(&mut self, chunks: &mut Vec<Bytes>, closing: bool) -> io::Result<Vec<u8>> {
        let mut framed = Vec::new();
        if let Some(w) = &mut self.ws {
            w.send(chunks)?;
            chunks.clear();
            if closing {
                w.close();
            }
            w.take_output(&mut framed);
        }
        let Some(t) = &mut self.tls else {
            return Ok(framed);
        };
        if !framed.is_empty() {
            t.encrypt(&framed)?;
        }
        for c in chunks.drain(..) {
            t.encrypt(&c)?;
        }
        if closing {
            t.close();
        }
        let mut out = Vec::new();
        t.write_records(&mut out)?;
        Ok(out)
    }

    fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsConn::wants_write)
            || self.ws.as_ref().is_some_and(WsConn::wants_write)
    }

    /// Whether a handshake (TLS, WebSocket upgrade) is still running.
    fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsConn::is_handshaking)
            || self.ws.as_ref().is_some_and(|w| !w.is_open())
    }
}

/// One listening socket of a shard.
#[derive(Debug)]
pub struct ListenerSpec {
    /// Its name in logs (`tcp`, `ssl`).
    pub name: &'static str,
    /// The socket, bound with `SO_REUSEPORT`.
    pub socket: std::net::TcpListener,
    /// What runs over its connections.
    pub transport: Transport,
    /// Most connections this shard holds from it at once.
    pub max_connections: usize,
    /// TLS: how long the handshake may take before the connection is closed.
    pub handshake_timeout: Duration,
}

/// Everything a shard thread needs.
#[derive(Debug)]
pub struct ShardSpec {
    /// This shard.
    pub id: ShardId,
    /// Number of shards.
    pub shards: u16,
    /// CPU to pin the thread to.
    pub cpu: Option<usize>,
    /// Protocol settings.
    pub settings: Settings,
    /// The listeners (each socket bound with `SO_REUSEPORT` on every shard).
    pub listeners: Vec<ListenerSpec>,
    /// MQTT over QUIC, if its listener runs.
    pub quic: Option<QuicSpec>,
    /// I/O driver.
    pub driver: DriverKind,
    /// Ring messages handled per batch before other tasks run.
    pub ring_batch: usize,
    /// The shard's log, with what recovery found for it.
    pub storage: Option<StorageSpec>,
    /// Where the shard publishes a snapshot of its counters twice a second, for the control
    /// plane (no lock: the control plane reads the last one at scrape time).
    pub metrics: Option<Arc<arc_swap::ArcSwapOption<crate::core::SysSnapshot>>>,
    /// Where the shard's log lines go (a bounded channel to a logging thread: a full one drops
    /// lines rather than block the shard).
    pub log: Option<std::sync::mpsc::SyncSender<String>>,
}

/// A shard's log: where, how, and the state recovered for this shard.
#[derive(Debug)]
pub struct StorageSpec {
    /// The shard's log directory.
    pub dir: std::path::PathBuf,
    /// Policy and sizes.
    pub options: storage::log::LogOptions,
    /// The files already in `dir`.
    pub existing: storage::log::Existing,
    /// New session and message ids start above this.
    pub first_id: u64,
    /// The sessions this shard owns, from every shard's log.
    pub sessions: Vec<storage::image::SessionImage>,
    /// The retained messages of the topics this shard owns.
    pub retained: Vec<(String, storage::schema::MessageV1)>,
    /// The delayed publishes this shard holds.
    pub delayed: Vec<storage::schema::DelayedV1>,
    /// The message bodies they refer to (shared by every shard's spec).
    pub messages: Arc<HashMap<u64, storage::schema::MessageV1>>,
    /// Shared by every shard: log directories of shards that no longer exist (the shard count
    /// went down), deleted once every shard has its recovered state on disk.
    pub retire: Arc<Retire>,
}

/// Log directories to delete once every shard wrote its startup snapshot.
#[derive(Debug)]
pub struct Retire {
    /// Shards still writing.
    pub remaining: std::sync::atomic::AtomicUsize,
    /// The directories.
    pub dirs: Vec<std::path::PathBuf>,
}

impl Retire {
    /// A shard's snapshot is on disk; the last one deletes the directories.
    fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            for d in &self.dirs {
                if let Err(e) = std::fs::remove_dir_all(d) {
                    log_warn(&format!("cannot delete {}: {e}", d.display()));
                }
            }
        }
    }
}

/// A shard's part of the QUIC listener.
#[derive(Debug)]
pub struct QuicSpec {
    /// This shard's UDP socket, bound with `SO_REUSEPORT`.
    pub socket: std::net::UdpSocket,
    /// The QUIC server configuration (the same on every shard).
    pub config: Arc<quinn_proto::ServerConfig>,
    /// The listener's options.
    pub options: crate::quic::QuicOptions,
    /// The process-wide key of the connection IDs (the same on every shard).
    pub cid_key: u64,
}

/// What a shard reports once it runs.
#[derive(Debug, Clone)]
pub struct Started {
    /// The shard.
    pub id: ShardId,
    /// "io_uring" or "epoll".
    pub driver: &'static str,
}

/// What a shard reports when it stops.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The shard.
    pub id: ShardId,
    /// Its counters at the end.
    pub stats: Stats,
}

/// Runs a shard on the current thread until `shutdown` is set and its connections are closed.
/// `started` is called once the runtime is up.
pub fn run(
    spec: ShardSpec,
    mesh: MeshEndpoint<ShardMsg>,
    shutdown: Arc<AtomicBool>,
    started: impl FnOnce(Started),
) -> io::Result<Stopped> {
    if let Some(cpu) = spec.cpu {
        // Pinning is best effort: in a container the CPU may not be ours to pick.
        let _ = monoio::utils::bind_to_cpu_set([cpu]);
    }
    let entries = 1024;
    match spec.driver {
        DriverKind::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer()
                // File operations (the log) would block the loop on epoll: a helper thread
                // runs them.
                .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
                .build()?;
            started(Started {
                id: spec.id,
                driver: "epoll",
            });
            rt.block_on(serve(spec, mesh, shutdown, false))
        }
        DriverKind::IoUring => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            started(Started {
                id: spec.id,
                driver: "io_uring",
            });
            rt.block_on(serve(spec, mesh, shutdown, true))
        }
        DriverKind::Auto => {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(1)))
                .build()?;
            match rt {
                monoio::FusionRuntime::Uring(mut rt) => {
                    started(Started {
                        id: spec.id,
                        driver: "io_uring",
                    });
                    rt.block_on(serve(spec, mesh, shutdown, true))
                }
                monoio::FusionRuntime::Legacy(mut rt) => {
                    started(Started {
                        id: spec.id,
                        driver: "epoll",
                    });
                    rt.block_on(serve(spec, mesh, shutdown, false))
                }
            }
        }
    }
}

/// Per-connection I/O state shared by its reader and writer tasks.
#[derive(Default)]
struct ConnIo {
    writer: Notify,
    reader: Notify,
    /// The writer wrote everything it had.
    drained: Notify,
    closing: Cell<bool>,
    /// Cancels the reader's pending read when the connection closes.
    canceller: RefCell<Option<Canceller>>,
    /// Tasks (reader, writer) that have finished; the second one reports the close.
    finished: Cell<u8>,
    /// Index of the listener that accepted it.
    listener: usize,
    /// TLS and/or WebSocket, on such a listener. Boxed: a rustls session is over 1 KiB,
    /// which a plain TCP connection should not carry.
    layer: Option<Box<RefCell<Layer>>>,
}

impl ConnIo {
    /// Stops both tasks: the writer flushes and shuts the socket down, the reader's pending
    /// read is cancelled.
    /// The reader's pending read is cancelled after [`LINGER`]: until then it drains what the
    /// client still sends (see `read_loop`).
    fn close(&self) {
        self.closing.set(true);
        self.writer.notify();
        self.reader.notify();
        self.drained.notify();
        if let Some(c) = self.canceller.borrow_mut().take() {
            monoio::spawn(async move {
                monoio::time::sleep(LINGER).await;
                c.cancel();
            });
        }
    }
}

/// How long a connection the broker closes keeps draining the client's input.
const LINGER: Duration = Duration::from_secs(1);

struct Ctx {
    shard: RefCell<Shard>,
    mesh: RefCell<MeshEndpoint<ShardMsg>>,
    conns: RefCell<HashMap<Key, Rc<ConnIo>>>,
    /// Open connections per listener (by index).
    per_listener: RefCell<Vec<usize>>,
    /// The QUIC endpoint, with a QUIC listener.
    quic: RefCell<Option<QuicEndpoint>>,
    /// Woken when the core has output for a QUIC connection.
    quic_wake: Notify,
    /// The transmits being sent (kept for its capacity).
    quic_batch: RefCell<Vec<udp::Transmit>>,
    /// (this shard, shards, connection id key): to find a QUIC datagram's owner shard.
    quic_route: Cell<Option<(u16, u16, u64)>>,
    /// Woken when messages refused by a full ring have been sent.
    unblocked: Notify,
    /// Woken when a message was refused by a full ring.
    blocked: Notify,
    ring_batch: usize,
    /// Woken when the shard has records for its log.
    storage_wake: Notify,
    /// The storage loop runs.
    storage_busy: Cell<bool>,
    /// See [`ShardSpec::log`].
    log: Option<std::sync::mpsc::SyncSender<String>>,
    /// The driver's own measurements, for the metrics snapshot.
    meters: Meters,
}

impl Ctx {
    /// Hands the shard's output to the tasks: events to connections, messages to the rings.
    fn pump(&self) {
        let mut shard = self.shard.borrow_mut();
        let conns = self.conns.borrow();
        let mut quic = self.quic.borrow_mut();
        while let Some(ev) = shard.poll_event() {
            match ev {
                Event::Write(k) | Event::Resume(k) if quic.as_ref().is_some_and(|q| q.owns(k)) => {
                    if let Some(q) = quic.as_mut() {
                        q.wake(k);
                    }
                    self.quic_wake.notify();
                }
                Event::Close(k) if quic.as_ref().is_some_and(|q| q.owns(k)) => {
                    if let Some(q) = quic.as_mut() {
                        q.close(k);
                    }
                    self.quic_wake.notify();
                }
                Event::Write(k) => {
                    if let Some(c) = conns.get(&k) {
                        c.writer.notify();
                    }
                }
                Event::Close(k) => {
                    if let Some(c) = conns.get(&k) {
                        c.close();
                    }
                }
                Event::Resume(k) => {
                    if let Some(c) = conns.get(&k) {
                        c.reader.notify();
                    }
                }
            }
        }
        drop(quic);
        let mut mesh = self.mesh.borrow_mut();
        let mut refused = false;
        while let Some((dest, msg)) = shard.poll_outgoing() {
            if let Err(msg) = mesh.send_deferred(usize::from(dest), msg) {
                shard.requeue_outgoing(dest, msg);
                refused = true;
                break;
            }
        }
        mesh.flush();
        if refused {
            self.blocked.notify();
        }
        self.meters.ring_refused(refused);
        if shard.storage_wanted() {
            self.storage_wake.notify();
        }
        while let Some(line) = shard.poll_log() {
            if let Some(tx) = &self.log {
                let _ = tx.try_send(line);
            }
        }
    }

    /// Called by each of a connection's two tasks when it ends; the second reports the close.
    fn task_finished(&self, key: Key, io: &ConnIo) {
        io.finished.set(io.finished.get() + 1);
        if io.finished.get() == 2 {
            self.conns.borrow_mut().remove(&key);
            if let Some(n) = self.per_listener.borrow_mut().get_mut(io.listener) {
                *n = n.saturating_sub(1);
            }
            self.shard.borrow_mut().handle_closed(Instant::now(), key);
            self.pump();
        }
    }
}

async fn serve(
    spec: ShardSpec,
    mesh: MeshEndpoint<ShardMsg>,
    shutdown: Arc<AtomicBool>,
    uring: bool,
) -> io::Result<Stopped> {
    let ctx = Rc::new(Ctx {
        shard: RefCell::new(Shard::new(spec.id, spec.shards, spec.settings.clone())),
        mesh: RefCell::new(mesh),
        conns: RefCell::new(HashMap::new()),
        per_listener: RefCell::new(Vec::new()),
        quic: RefCell::new(None),
        quic_wake: Notify::default(),
        quic_batch: RefCell::new(Vec::with_capacity(udp::BATCH)),
        quic_route: Cell::new(None),
        unblocked: Notify::default(),
        blocked: Notify::default(),
        ring_batch: spec.ring_batch.max(1),
        storage_wake: Notify::default(),
        storage_busy: Cell::new(false),
        log: spec.log.clone(),
        meters: Meters::default(),
    });
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ctx.shard.borrow_mut().set_clock(Instant::now(), unix_ms);
    let stop = Rc::new(Cell::new(false));
    let mut storage = None;
    if let Some(st) = spec.storage {
        std::fs::create_dir_all(&st.dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", st.dir.display())))?;
        let now = Instant::now();
        let log = storage::log::Log::new(u32::from(spec.id), st.options, &st.existing, now);
        {
            let mut shard = ctx.shard.borrow_mut();
            shard.attach_log(log, st.first_id);
            shard.restore(now, unix_ms, st.sessions, &st.messages, st.first_id);
            shard.restore_retained(now, unix_ms, st.retained);
            shard.restore_delayed(now, unix_ms, st.delayed);
            shard.snapshot_all(now);
        }
        let mut exec = if uring {
            storage::exec::Executor::Uring(storage::exec::UringFiles::new(&st.dir))
        } else {
            storage::exec::Executor::Blocking(Some(storage::exec::Files::new(&st.dir)?))
        };
        // The recovered state is in the snapshot on disk before anything else happens.
        run_storage(&ctx, &mut exec).await;
        if let Some(e) = ctx.shard.borrow().storage_error() {
            return Err(io::Error::other(format!("{}: {e}", st.dir.display())));
        }
        st.retire.done();
        storage = Some(exec);
    }
    ctx.pump();
    if let Some(exec) = storage.take() {
        monoio::spawn(storage_loop(ctx.clone(), exec, stop.clone()));
    }
    for (index, l) in spec.listeners.into_iter().enumerate() {
        l.socket.set_nonblocking(true)?;
        let listener = TcpListener::from_std(l.socket)?;
        ctx.per_listener.borrow_mut().push(0);
        ctx.meters.add_listener(l.name);
        let accept = Accept {
            index,
            name: l.name,
            transport: l.transport,
            max: l.max_connections,
            handshake_timeout: l.handshake_timeout,
        };
        monoio::spawn(accept_loop(ctx.clone(), listener, accept, stop.clone()));
    }
    if let Some(q) = spec.quic {
        q.socket.set_nonblocking(true)?;
        let local = q.socket.local_addr()?;
        let socket = Rc::new(monoio::net::udp::UdpSocket::from_std(q.socket)?);
        let mut endpoint = QuicEndpoint::new(q.config, &q.options, local, spec.id, q.cid_key);
        if q.options.gso && udp::gso_supported(socket.as_raw_fd()) {
            endpoint.set_max_segments(udp::MAX_GSO_SEGMENTS);
        }
        *ctx.quic.borrow_mut() = Some(endpoint);
        ctx.quic_route.set(Some((spec.id, spec.shards, q.cid_key)));
        monoio::spawn(quic_recv_loop(ctx.clone(), socket.clone(), stop.clone()));
        monoio::spawn(quic_tick_loop(ctx.clone(), socket, stop.clone()));
    }
    monoio::spawn(ring_loop(ctx.clone()));
    monoio::spawn(backpressure_loop(ctx.clone()));
    if let Some(slot) = spec.metrics {
        monoio::spawn(metrics_loop(ctx.clone(), slot, stop.clone()));
    }
    // The timer loop runs here; it returns once shutdown is complete.
    timer_loop(ctx.clone(), shutdown, stop).await;
    // The storage loop writes what is left, then ends.
    ctx.storage_wake.notify();
    while ctx.storage_busy.get() {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = ctx.shard.borrow().stats().clone();
    Ok(Stopped { id: spec.id, stats })
}

/// Publishes the shard's counters for the control plane every [`METRICS_EVERY`].
async fn metrics_loop(
    ctx: Rc<Ctx>,
    slot: Arc<arc_swap::ArcSwapOption<crate::core::SysSnapshot>>,
    stop: Rc<Cell<bool>>,
) {
    while !stop.get() {
        let mut snap = ctx.shard.borrow().sys_snapshot();
        snap.driver = ctx.driver_stats();
        slot.store(Some(Arc::new(snap)));
        monoio::time::sleep(METRICS_EVERY).await;
    }
}

/// How often a shard publishes its counters.
const METRICS_EVERY: Duration = Duration::from_millis(500);

/// An event loop late by more than this has stalled: a task held the thread that long without
/// yielding (`broker_event_loop_stalls_total`).
const STALL: Duration = Duration::from_millis(100);

/// Stalls are logged at most this often.
const STALL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the driver itself measures, for the metrics snapshot. Plain cells: only the shard's
/// thread touches them.
#[derive(Debug, Default)]
struct Meters {
    /// See [`DriverStats::ring_stalls`].
    ring_stalls: Cell<u64>,
    /// The last pump left messages that a full ring refused.
    ring_stalled: Cell<bool>,
    /// See [`DriverStats::loop_stalls`].
    loop_stalls: Cell<u64>,
    /// How late the timer task woke.
    loop_lag: RefCell<Latency>,
    /// When a stall was last logged.
    stall_logged: Cell<Option<Instant>>,
    /// Per TCP listener (by index): its id (`tcp:default`) and the connections it accepted.
    listeners: RefCell<Vec<(Arc<str>, u64)>>,
}

impl Meters {
    fn add_listener(&self, name: &str) {
        let id: Arc<str> = format!("{name}:default").into();
        self.listeners.borrow_mut().push((id, 0));
    }

    fn accepted(&self, listener: usize) {
        if let Some((_, n)) = self.listeners.borrow_mut().get_mut(listener) {
            *n += 1;
        }
    }

    /// After a pump: `refused` if a full ring refused a message. Counts the stalls, not every
    /// refused retry while one lasts.
    fn ring_refused(&self, refused: bool) {
        if refused && !self.ring_stalled.get() {
            self.ring_stalls.set(self.ring_stalls.get() + 1);
        }
        self.ring_stalled.set(refused);
    }

    /// The timer task woke at `now`, `late` after its deadline. It sleeps at most 100 ms at a
    /// time, so a thread held for more than [`STALL`] + 100 ms is always seen, a shorter hold
    /// may be. A stall is counted, and logged at most every [`STALL_LOG_EVERY`].
    fn lag(&self, now: Instant, late: Duration) {
        self.loop_lag.borrow_mut().record(late);
        if late <= STALL {
            return;
        }
        let stalls = self.loop_stalls.get() + 1;
        self.loop_stalls.set(stalls);
        if self
            .stall_logged
            .get()
            .is_none_or(|at| now.saturating_duration_since(at) >= STALL_LOG_EVERY)
        {
            self.stall_logged.set(Some(now));
            log_warn(&format!(
                "event loop stalled: a task held the thread for about {} ms ({stalls} stalls \
                 since start)",
                late.as_millis()
            ));
        }
    }
}

impl Ctx {
    /// The driver's part of the metrics snapshot.
    fn driver_stats(&self) -> DriverStats {
        let open = self.per_listener.borrow();
        let mut listeners: Vec<ListenerStats> = self
            .meters
            .listeners
            .borrow()
            .iter()
            .enumerate()
            .map(|(i, (id, accepted))| ListenerStats {
                id: id.clone(),
                connections: open.get(i).copied().unwrap_or(0) as u64,
                accepted: *accepted,
            })
            .collect();
        if let Some(q) = self.quic.borrow().as_ref() {
            listeners.push(ListenerStats {
                id: "quic:default".into(),
                connections: q.connection_count() as u64,
                accepted: q.accepted(),
            });
        }
        DriverStats {
            ring_occupancy: self.mesh.borrow().outgoing_len() as u64,
            ring_stalls: self.meters.ring_stalls.get(),
            loop_stalls: self.meters.loop_stalls.get(),
            loop_lag: Some(Box::new(self.meters.loop_lag.borrow().clone())),
            listeners,
        }
    }
}

/// Runs the log's jobs until it has none (start, shutdown).
async fn run_storage(ctx: &Rc<Ctx>, exec: &mut storage::exec::Executor) {
    loop {
        let job = ctx.shard.borrow_mut().poll_storage_job(Instant::now());
        let Some(job) = job else { return };
        let (res, data) = exec.run(job).await;
        let failed = res.is_err();
        ctx.shard
            .borrow_mut()
            .storage_complete(Instant::now(), res, data);
        ctx.pump();
        if failed {
            return;
        }
    }
}

/// Runs the log's jobs one at a time as records come (group commit: what is appended while a
/// job runs goes in the next write), fsyncs on the policy's interval, retries failed jobs;
/// after shutdown, writes what is left and ends.
async fn storage_loop(ctx: Rc<Ctx>, mut exec: storage::exec::Executor, stop: Rc<Cell<bool>>) {
    ctx.storage_busy.set(true);
    let mut last_error: Option<String> = None;
    loop {
        let wake = ctx.storage_wake.notified();
        let job = ctx.shard.borrow_mut().poll_storage_job(Instant::now());
        if let Some(job) = job {
            let (res, data) = exec.run(job).await;
            ctx.shard
                .borrow_mut()
                .storage_complete(Instant::now(), res, data);
            let error = ctx.shard.borrow().storage_error().map(str::to_owned);
            if error != last_error {
                match &error {
                    Some(e) => log_warn(&format!(
                        "log write failed, retrying every second; acknowledgements wait: {e}"
                    )),
                    None => log_warn("log writes work again"),
                }
                last_error = error;
            }
            ctx.pump();
            continue;
        }
        if stop.get() && !ctx.shard.borrow().storage_wanted() {
            // Shutdown, and nothing left but timed fsyncs: one last one.
            let now = Instant::now();
            let due = ctx.shard.borrow().storage_timeout();
            if let Some(at) = due {
                monoio::time::sleep(at.saturating_duration_since(now)).await;
                continue;
            }
            break;
        }
        let due = ctx.shard.borrow().storage_timeout();
        match due {
            Some(at) => {
                let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(at));
                monoio::select! {
                    _ = sleep => {},
                    _ = wake => {},
                }
            }
            None => {
                let tick = monoio::time::sleep(Duration::from_millis(100));
                monoio::select! {
                    _ = tick => {},
                    _ = wake => {},
                }
            }
        }
    }
    ctx.storage_busy.set(false);
}

/// What an accept loop needs to know about its listener.
struct Accept {
    index: usize,
    /// The listener's name (`tcp`, `ssl`, `ws`, `wss`).
    name: &'static str,
    transport: Transport,
    max: usize,
    handshake_timeout: Duration,
}

async fn accept_loop(ctx: Rc<Ctx>, listener: TcpListener, spec: Accept, stop: Rc<Cell<bool>>) {
    loop {
        let accepted = listener.accept().await;
        if stop.get() {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log_warn(&format!("accept failed: {e}"));
                monoio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if ctx
            .per_listener
            .borrow()
            .get(spec.index)
            .copied()
            .unwrap_or(0)
            >= spec.max
        {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let layer = match Layer::new(&spec.transport) {
            Ok(l) => l.map(|l| Box::new(RefCell::new(l))),
            Err(e) => {
                log_warn(&format!("TLS session for {peer}: {e}"));
                continue;
            }
        };
        let handshaking = layer.is_some();
        let io = spawn_connection(&ctx, stream, peer, (spec.index, spec.name), layer);
        if handshaking {
            monoio::spawn(handshake_deadline(io, spec.handshake_timeout));
        }
    }
}

/// Closes a connection whose TLS handshake or WebSocket upgrade has not finished within
/// `timeout`.
async fn handshake_deadline(io: Rc<ConnIo>, timeout: Duration) {
    monoio::time::sleep(timeout).await;
    let late = io
        .layer
        .as_ref()
        .is_some_and(|l| l.borrow().is_handshaking());
    if late && !io.closing.get() {
        io.close();
    }
}

fn spawn_connection(
    ctx: &Rc<Ctx>,
    stream: TcpStream,
    peer: SocketAddr,
    (listener, name): (usize, &'static str),
    layer: Option<Box<RefCell<Layer>>>,
) -> Rc<ConnIo> {
    let key = {
        let mut shard = ctx.shard.borrow_mut();
        let key = shard.handle_accept(Instant::now(), peer);
        shard.set_listener(key, name);
        key
    };
    let io = Rc::new(ConnIo {
        listener,
        layer,
        ..ConnIo::default()
    });
    if let Some(n) = ctx.per_listener.borrow_mut().get_mut(listener) {
        *n += 1;
    }
    ctx.meters.accepted(listener);
    ctx.conns.borrow_mut().insert(key, io.clone());
    let (r, w) = stream.into_split();
    monoio::spawn(read_loop(ctx.clone(), key, io.clone(), r));
    monoio::spawn(write_loop(ctx.clone(), key, io.clone(), w));
    io
}

async fn read_loop<R: CancelableAsyncReadRent>(ctx: Rc<Ctx>, key: Key, io: Rc<ConnIo>, mut r: R) {
    let canceller = Canceller::new();
    let cancel = canceller.handle();
    *io.canceller.borrow_mut() = Some(canceller);
    // Idle connections keep a small buffer; a read that fills it doubles the next one, up to
    // MAX_READ, so busy connections read in large chunks.
    const MIN_READ: usize = 64;
    const MAX_READ: usize = 64 * 1024;
    let mut chunk = MIN_READ;
    let mut buf = BytesMut::with_capacity(chunk);
    // Ciphertext not yet decrypted (TLS only).
    let mut raw = BytesMut::new();
    let mut peer_closed = false;
    let mut eof = false;
    'conn: loop {
        // Handle what is buffered.
        let need = loop {
            let res = ctx
                .shard
                .borrow_mut()
                .handle_read(Instant::now(), key, &mut buf);
            ctx.pump();
            match res {
                Read::NeedMore(n) => break n,
                Read::More => YieldNow(false).await,
                Read::Paused => {
                    io.reader.notified().await;
                    if io.closing.get() {
                        break 'conn;
                    }
                }
                Read::WriteBlocked => {
                    io.drained.notified().await;
                    if io.closing.get() {
                        break 'conn;
                    }
                }
                // Lane 0 (a socket's only one) refuses nothing.
                Read::Closing | Read::Refused => break 'conn,
            }
        };
        // Backpressure: a full ring stops reading.
        while ctx.shard.borrow().is_backpressured() && !io.closing.get() {
            ctx.unblocked.notified().await;
        }
        if io.closing.get() {
            break;
        }
        if peer_closed {
            eof = true;
            break;
        }
        let want = need.max(chunk);
        // TLS: the socket's bytes go to `raw` and come out of the session as plaintext in
        // `buf`; plain TCP reads straight into `buf`.
        let (res, spare) = match &io.layer {
            None => {
                let (res, spare, b) = read_more(&mut r, buf, want, &cancel).await;
                buf = b;
                (res, spare)
            }
            Some(_) => {
                let (res, spare, b) = read_more(&mut r, raw, want, &cancel).await;
                raw = b;
                (res, spare)
            }
        };
        match res {
            Ok(0) | Err(_) => {
                eof = true;
                break;
            }
            Ok(n) if n == spare => chunk = (chunk * 2).min(MAX_READ),
            Ok(_) => {}
        }
        if let Some(layer) = &io.layer {
            let mut layer = layer.borrow_mut();
            let was_handshaking = layer.is_handshaking();
            let res = layer.receive(&mut raw, &mut buf);
            if layer.wants_write() {
                // Handshake messages, pongs, an alert or an HTTP error to send.
                io.writer.notify();
            }
            let opened = was_handshaking && !layer.is_handshaking();
            let forwarded = match (&layer.ws, opened) {
                (Some(w), true) => w.forwarded_for(),
                _ => None,
            };
            let cert = match (&layer.tls, opened) {
                (Some(t), true) => t
                    .peer_certificate()
                    .and_then(|c| crate::tls::PeerCert::from_der(c)),
                _ => None,
            };
            drop(layer);
            if let Some(cert) = cert {
                ctx.shard.borrow_mut().set_peer_cert(key, cert);
            }
            if let Some(ip) = forwarded {
                // Behind a proxy: the client is the address the proxy header names.
                let port = ctx.shard.borrow().peer(key).map_or(0, |p| p.port());
                ctx.shard
                    .borrow_mut()
                    .set_peer(key, SocketAddr::new(ip, port));
            }
            match res {
                Ok(false) => {}
                // Handle the bytes that came with the close (a DISCONNECT, say) first.
                Ok(true) => peer_closed = true,
                Err(_) => {
                    ctx.shard.borrow_mut().note_tls_failure(key);
                    break;
                }
            }
        }
    }
    io.close();
    if !eof {
        // Lingering close: the broker is closing (a protocol error, a takeover, shutdown). Read
        // and discard until the client closes or LINGER passes, so bytes it is still sending do
        // not make the kernel reset the connection before it has read our DISCONNECT.
        loop {
            buf.clear();
            buf.reserve(MIN_READ);
            let (res, b) = r.cancelable_read(buf, cancel.clone()).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                break;
            }
        }
    }
    ctx.task_finished(key, &io);
}

async fn write_loop<W: AsyncWriteRent>(ctx: Rc<Ctx>, key: Key, io: Rc<ConnIo>, mut w: W) {
    let mut chunks: Vec<Bytes> = Vec::new();
    'conn: loop {
        loop {
            ctx.shard.borrow_mut().take_output(key, &mut chunks);
            if let Some(layer) = &io.layer {
                // Frame and/or encrypt what the shard wrote, then send it (with any handshake
                // messages, pongs or alerts the layers have queued).
                let records = match layer.borrow_mut().send(&mut chunks, io.closing.get()) {
                    Ok(out) => out,
                    Err(_) => break 'conn,
                };
                if records.is_empty() {
                    break;
                }
                let (res, _) = w.write_all(records).await;
                if res.is_err() {
                    break 'conn;
                }
                continue;
            }
            if chunks.is_empty() {
                break;
            }
            for chunk in chunks.drain(..) {
                let (res, _) = w.write_all(chunk).await;
                if res.is_err() {
                    break 'conn;
                }
            }
        }
        io.drained.notify();
        if io.closing.get() {
            break;
        }
        io.writer.notified().await;
    }
    let _ = w.shutdown().await;
    io.close();
    ctx.task_finished(key, &io);
}

/// Receives QUIC datagrams and hands them to the endpoint.
async fn quic_recv_loop(
    ctx: Rc<Ctx>,
    socket: Rc<monoio::net::udp::UdpSocket>,
    stop: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::with_capacity(65536);
    loop {
        buf.clear();
        buf.reserve(65536);
        let (res, b) = socket.recv_from(buf).await;
        buf = b;
        if stop.get() {
            return;
        }
        match res {
            Ok((n, from)) => {
                let data = buf.split_to(n);
                // A connection another shard owns (its client's address changed and the kernel
                // picked this socket): hand the datagram to the owner over the ring.
                if let Some((me, shards, key)) = ctx.quic_route.get()
                    && let Some(owner) = crate::quic::owner_of(&data, key, shards)
                    && owner != me
                {
                    let mut shard = ctx.shard.borrow_mut();
                    shard.note_quic_forwarded();
                    shard.requeue_outgoing(owner, ShardMsg::QuicDatagram(Box::new((from, data))));
                    drop(shard);
                    ctx.pump();
                    continue;
                }
                if let Some(q) = ctx.quic.borrow_mut().as_mut() {
                    q.handle_datagram(Instant::now(), from, data);
                }
                quic_process(&ctx, &socket).await;
            }
            Err(e) => {
                log_warn(&format!("QUIC socket: {e}"));
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Fires the QUIC connections' timers, and moves the core's output to their streams when it
/// has some.
async fn quic_tick_loop(
    ctx: Rc<Ctx>,
    socket: Rc<monoio::net::udp::UdpSocket>,
    stop: Rc<Cell<bool>>,
) {
    loop {
        let deadline = ctx
            .quic
            .borrow_mut()
            .as_mut()
            .and_then(QuicEndpoint::poll_timeout);
        let wait = deadline.map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(Instant::now())
        });
        monoio::select! {
            _ = monoio::time::sleep(wait) => {},
            _ = ctx.quic_wake.notified() => {},
        }
        if stop.get() {
            return;
        }
        if let Some(q) = ctx.quic.borrow_mut().as_mut() {
            q.handle_timeout(Instant::now());
        }
        quic_process(&ctx, &socket).await;
    }
}

/// Pumps the QUIC endpoint with the shard, reports ended connections, sends the datagrams.
async fn quic_process(ctx: &Rc<Ctx>, socket: &monoio::net::udp::UdpSocket) {
    let now = Instant::now();
    let ended = {
        let mut quic = ctx.quic.borrow_mut();
        let Some(q) = quic.as_mut() else {
            return;
        };
        let mut shard = ctx.shard.borrow_mut();
        q.pump(now, &mut shard)
    };
    for key in ended {
        ctx.shard.borrow_mut().handle_closed(now, key);
    }
    if ctx
        .quic
        .borrow()
        .as_ref()
        .is_some_and(QuicEndpoint::has_work)
    {
        // A connection over its per-pump budget: another turn soon, after other tasks.
        ctx.quic_wake.notify();
    }
    ctx.pump();
    quic_send(ctx, socket).await;
}

/// Sends what the QUIC endpoint queued: up to [`udp::BATCH`] transmits per `sendmmsg` call,
/// runs for one client as one GSO send. A full socket buffer falls back to the runtime's send,
/// which waits for room; a socket that cannot segment turns GSO off for good.
async fn quic_send(ctx: &Rc<Ctx>, socket: &monoio::net::udp::UdpSocket) {
    let fd = socket.as_raw_fd();
    let mut batch = std::mem::take(&mut *ctx.quic_batch.borrow_mut());
    loop {
        let mut gso = false;
        if let Some(q) = ctx.quic.borrow_mut().as_mut() {
            while batch.len() < udp::BATCH {
                let Some(t) = q.poll_transmit() else {
                    break;
                };
                batch.push(t);
            }
            gso = q.max_segments() > 1;
        }
        if batch.is_empty() {
            break;
        }
        let mut sent = 0;
        while sent < batch.len() {
            match udp::send_batch(fd, &batch[sent..], gso) {
                Ok(n) => sent += n.max(1),
                Err(e) => {
                    if gso && udp::is_gso_error(&e) {
                        log_warn(&format!(
                            "QUIC socket: GSO refused ({e}); sending datagram by datagram"
                        ));
                        gso = false;
                        if let Some(q) = ctx.quic.borrow_mut().as_mut() {
                            q.set_max_segments(1);
                        }
                    } else if e.kind() != io::ErrorKind::WouldBlock {
                        log_warn(&format!("QUIC send to {}: {e}", batch[sent].dest));
                        sent += 1;
                        continue;
                    }
                    // Wait for room (or send without GSO), one datagram at a time.
                    let t = &batch[sent];
                    for d in t.datagrams() {
                        let (res, _) = socket.send_to(d.to_vec(), t.dest).await;
                        if let Err(e) = res {
                            log_warn(&format!("QUIC send to {}: {e}", t.dest));
                            break;
                        }
                    }
                    sent += 1;
                }
            }
        }
        if let Some(q) = ctx.quic.borrow_mut().as_mut() {
            for t in batch.drain(..) {
                q.recycle(t.data);
            }
        } else {
            batch.clear();
        }
    }
    *ctx.quic_batch.borrow_mut() = batch;
}

/// Reads once from `r` into the spare capacity of `buf` (at least `want` bytes of it), after
/// the bytes already there. Returns the result, the spare capacity offered, and the buffer.
async fn read_more<R: CancelableAsyncReadRent>(
    r: &mut R,
    mut buf: BytesMut,
    want: usize,
    cancel: &monoio::io::CancelHandle,
) -> (io::Result<usize>, usize, BytesMut) {
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    let spare = buf.capacity() - buf.len();
    // monoio writes at the start of the buffer it is given: hand it the spare part, after the
    // bytes of an unfinished packet.
    let at = buf.len();
    let (res, b) = r
        .cancelable_read(monoio::buf::IoBufMut::slice_mut(buf, at..), cancel.clone())
        .await;
    (res, spare, b.into_inner())
}

async fn ring_loop(ctx: Rc<Ctx>) {
    let mut batch = Vec::with_capacity(ctx.ring_batch);
    loop {
        RingReady(&ctx).await;
        ctx.mesh
            .borrow_mut()
            .recv_batch(ctx.ring_batch, |from, msg| batch.push((from, msg)));
        let now = Instant::now();
        let mut quic_in = false;
        for (from, msg) in batch.drain(..) {
            if let ShardMsg::QuicDatagram(d) = msg {
                // A datagram for one of this shard's QUIC connections, from another socket.
                let (addr, data) = *d;
                if let Some(q) = ctx.quic.borrow_mut().as_mut() {
                    q.handle_datagram(now, addr, data);
                    quic_in = true;
                }
                continue;
            }
            ctx.shard
                .borrow_mut()
                .handle_message(now, from as ShardId, msg);
        }
        if quic_in {
            ctx.quic_wake.notify();
        }
        ctx.pump();
        YieldNow(false).await;
    }
}

async fn backpressure_loop(ctx: Rc<Ctx>) {
    loop {
        ctx.blocked.notified().await;
        while ctx.shard.borrow().is_backpressured() {
            monoio::time::sleep(Duration::from_micros(100)).await;
            ctx.pump();
        }
        ctx.unblocked.notify();
    }
}

async fn timer_loop(ctx: Rc<Ctx>, shutdown: Arc<AtomicBool>, stop: Rc<Cell<bool>>) {
    const TICK: Duration = Duration::from_millis(100);
    let mut shutting_down: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let next = ctx.shard.borrow().poll_timeout();
        let wait = next.map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        if !wait.is_zero() {
            monoio::time::sleep(wait).await;
            // How late the runtime polled this task again: the time other tasks held the
            // thread (see `Meters::lag`).
            let woke = Instant::now();
            ctx.meters
                .lag(woke, woke.saturating_duration_since(now + wait));
        }
        let now = Instant::now();
        ctx.shard.borrow_mut().handle_timeout(now);
        ctx.pump();
        if shutting_down.is_none() && shutdown.load(Ordering::Acquire) {
            stop.set(true);
            ctx.shard.borrow_mut().shutdown(now);
            ctx.pump();
            shutting_down = Some(now);
        }
        if let Some(since) = shutting_down
            && (ctx.conns.borrow().is_empty() || now - since > Duration::from_secs(5))
        {
            return;
        }
    }
}

/// A single-threaded notification: `notify` wakes every task waiting in `notified`, or the next
/// one to wait if none is waiting.
///
/// Each pending waiter holds one slot, which it updates when polled again and frees when
/// dropped, so the slots are bounded by the live waiters and a poll costs O(1). (Deduplicating
/// wakers with `Waker::will_wake` does not work with monoio: a cloned task waker may carry
/// another copy of the vtable, and a waiter polled in a `select!` loop would add an entry per
/// turn until the next notify.)
#[derive(Debug, Default)]
struct Notify {
    pending: Cell<bool>,
    generation: Cell<u64>,
    slots: RefCell<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Notify {
    fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = {
            let mut slots = self.slots.borrow_mut();
            slots.free.clear();
            std::mem::take(&mut slots.wakers)
        };
        let mut woke = false;
        for w in wakers.into_iter().flatten() {
            w.wake();
            woke = true;
        }
        if !woke {
            self.pending.set(true);
        }
    }

    fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: None,
            slot: None,
        }
    }
}

struct Notified<'a> {
    notify: &'a Notify,
    generation: Option<u64>,
    /// Its slot among the waiters of `generation`, once registered.
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.generation {
            None => {
                if self.notify.pending.replace(false) {
                    return Poll::Ready(());
                }
                self.generation = Some(self.notify.generation.get());
            }
            Some(g) if g != self.notify.generation.get() => {
                self.slot = None;
                return Poll::Ready(());
            }
            Some(_) => {}
        }
        // First poll, or a spurious one: (re-)register in its own slot.
        let mut slots = self.notify.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.wakers[i] = waker;
                        i
                    }
                    None => {
                        slots.wakers.push(waker);
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        // A slot of an earlier generation was taken by `notify`.
        if let (Some(i), Some(g)) = (self.slot, self.generation)
            && g == self.notify.generation.get()
        {
            let mut slots = self.notify.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

/// Yields once to the other tasks of the runtime.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Resolves when an incoming ring has a message; sleeps on the shard's doorbell otherwise.
struct RingReady<'a>(&'a Ctx);

impl Future for RingReady<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mesh = self.0.mesh.borrow();
        mesh.doorbell().poll_wait(cx, || mesh.has_incoming())
    }
}

fn log_warn(msg: &str) {
    eprintln!("WARN shard: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: &mut Pin<Box<Notified<'_>>>, waker: &Waker) -> Poll<()> {
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    fn waiters(n: &Notify) -> usize {
        n.slots.borrow().wakers.iter().flatten().count()
    }

    #[test]
    fn plain_connection_state_stays_small() {
        // Every idle connection pays for this; TLS and WebSocket state is boxed (`layer`).
        let size = std::mem::size_of::<ConnIo>();
        assert!(size <= 384, "ConnIo is {size} bytes");
    }

    #[test]
    fn notify_waiters_are_bounded_by_live_futures() {
        let n = Notify::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        // A loop waiting in a `select!` whose other branch fires: each new waiter takes the
        // dropped one's slot.
        for _ in 0..1000 {
            let mut f = Box::pin(n.notified());
            assert!(poll(&mut f, &waker).is_pending());
            assert!(poll(&mut f, &waker).is_pending());
            assert_eq!(waiters(&n), 1);
        }
        assert_eq!(waiters(&n), 0);
        // Nobody waiting: the notification is kept for the next waiter.
        n.notify();
        let mut f = Box::pin(n.notified());
        assert!(poll(&mut f, &waker).is_ready());
        let mut a = Box::pin(n.notified());
        let mut b = Box::pin(n.notified());
        assert!(poll(&mut a, &waker).is_pending());
        assert!(poll(&mut b, &waker).is_pending());
        n.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut a, &waker).is_ready());
        assert!(poll(&mut b, &waker).is_ready());
        // Woken waiters consumed it: the next one waits.
        let mut c = Box::pin(n.notified());
        assert!(poll(&mut c, &waker).is_pending());
        drop((f, a, b, c));
        assert_eq!(waiters(&n), 0);
    }
}
