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
use crate::ring::MeshEndpoint;
use crate::settings::Settings;
use crate::slab::Key;
use crate::stats::Stats;

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
    /// The TCP listener, bound with `SO_REUSEPORT` (`None` when disabled).
    pub tcp: Option<std::net::TcpListener>,
    /// Most connections this shard accepts at once.
    pub max_connections: usize,
    /// I/O driver.
    pub driver: DriverKind,
    /// Ring messages handled per batch before other tasks run.
    pub ring_batch: usize,
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
                .build()?;
            started(Started {
                id: spec.id,
                driver: "epoll",
            });
            rt.block_on(serve(spec, mesh, shutdown))
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
            rt.block_on(serve(spec, mesh, shutdown))
        }
        DriverKind::Auto => {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            match rt {
                monoio::FusionRuntime::Uring(mut rt) => {
                    started(Started {
                        id: spec.id,
                        driver: "io_uring",
                    });
                    rt.block_on(serve(spec, mesh, shutdown))
                }
                monoio::FusionRuntime::Legacy(mut rt) => {
                    started(Started {
                        id: spec.id,
                        driver: "epoll",
                    });
                    rt.block_on(serve(spec, mesh, shutdown))
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
    /// Woken when messages refused by a full ring have been sent.
    unblocked: Notify,
    /// Woken when a message was refused by a full ring.
    blocked: Notify,
    ring_batch: usize,
}

impl Ctx {
    /// Hands the shard's output to the tasks: events to connections, messages to the rings.
    fn pump(&self) {
        let mut shard = self.shard.borrow_mut();
        let conns = self.conns.borrow();
        while let Some(ev) = shard.poll_event() {
            match ev {
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
    }

    /// Called by each of a connection's two tasks when it ends; the second reports the close.
    fn task_finished(&self, key: Key, io: &ConnIo) {
        io.finished.set(io.finished.get() + 1);
        if io.finished.get() == 2 {
            self.conns.borrow_mut().remove(&key);
            self.shard.borrow_mut().handle_closed(Instant::now(), key);
            self.pump();
        }
    }
}

async fn serve(
    spec: ShardSpec,
    mesh: MeshEndpoint<ShardMsg>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<Stopped> {
    let ctx = Rc::new(Ctx {
        shard: RefCell::new(Shard::new(spec.id, spec.shards, spec.settings.clone())),
        mesh: RefCell::new(mesh),
        conns: RefCell::new(HashMap::new()),
        unblocked: Notify::default(),
        blocked: Notify::default(),
        ring_batch: spec.ring_batch.max(1),
    });
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ctx.shard.borrow_mut().set_clock(Instant::now(), unix_ms);
    ctx.pump();
    let stop = Rc::new(Cell::new(false));
    if let Some(l) = spec.tcp {
        l.set_nonblocking(true)?;
        let listener = TcpListener::from_std(l)?;
        monoio::spawn(accept_loop(
            ctx.clone(),
            listener,
            spec.max_connections,
            stop.clone(),
        ));
    }
    monoio::spawn(ring_loop(ctx.clone()));
    monoio::spawn(backpressure_loop(ctx.clone()));
    // The timer loop runs here; it returns once shutdown is complete.
    timer_loop(ctx.clone(), shutdown, stop).await;
    let stats = ctx.shard.borrow().stats().clone();
    Ok(Stopped { id: spec.id, stats })
}

async fn accept_loop(ctx: Rc<Ctx>, listener: TcpListener, max: usize, stop: Rc<Cell<bool>>) {
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
        if ctx.conns.borrow().len() >= max {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        spawn_connection(&ctx, stream, peer);
    }
}

fn spawn_connection(ctx: &Rc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let key = ctx.shard.borrow_mut().handle_accept(Instant::now(), peer);
    let io = Rc::new(ConnIo::default());
    ctx.conns.borrow_mut().insert(key, io.clone());
    let (r, w) = stream.into_split();
    monoio::spawn(read_loop(ctx.clone(), key, io.clone(), r));
    monoio::spawn(write_loop(ctx.clone(), key, io, w));
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
                Read::Closing => break 'conn,
            }
        };
        // Backpressure: a full ring stops reading.
        while ctx.shard.borrow().is_backpressured() && !io.closing.get() {
            ctx.unblocked.notified().await;
        }
        if io.closing.get() {
            break;
        }
        let want = need.max(chunk);
        if buf.capacity() - buf.len() < want {
            buf.reserve(want);
        }
        let spare = buf.capacity() - buf.len();
        // monoio writes at the start of the buffer it is given: hand it the spare part, after
        // the bytes of an unfinished packet.
        let at = buf.len();
        let (res, b) = r
            .cancelable_read(monoio::buf::IoBufMut::slice_mut(buf, at..), cancel.clone())
            .await;
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => {
                eof = true;
                break;
            }
            Ok(n) if n == spare => chunk = (chunk * 2).min(MAX_READ),
            Ok(_) => {}
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

async fn ring_loop(ctx: Rc<Ctx>) {
    let mut batch = Vec::with_capacity(ctx.ring_batch);
    loop {
        RingReady(&ctx).await;
        ctx.mesh
            .borrow_mut()
            .recv_batch(ctx.ring_batch, |from, msg| batch.push((from, msg)));
        let now = Instant::now();
        for (from, msg) in batch.drain(..) {
            ctx.shard
                .borrow_mut()
                .handle_message(now, from as ShardId, msg);
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
#[derive(Debug, Default)]
struct Notify {
    pending: Cell<bool>,
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        if waiters.is_empty() {
            self.pending.set(true);
        }
        for w in waiters {
            w.wake();
        }
    }

    fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: None,
        }
    }
}

struct Notified<'a> {
    notify: &'a Notify,
    generation: Option<u64>,
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
            Some(g) if g != self.notify.generation.get() => return Poll::Ready(()),
            Some(_) => {}
        }
        // First poll, or a spurious one: (re-)register.
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
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
