//! One generator thread: a monoio runtime that owns its share of the clients.
//!
//! The main thread talks to a generator thread only through [`Shared`]: a few flags it sets
//! (go, publishing over, stop) and the thread's [`Live`] counters it reads. The thread's main
//! task mirrors the flags into its [`ThreadCtx`] every few milliseconds and wakes its clients
//! when one changes; nothing else crosses threads until the thread ends and returns its
//! [`ThreadStats`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Driver;
use crate::client::{self, Conn};
use crate::clock::Clock;
use crate::notify::Notify;
use crate::precise::Precise;
use crate::quic;
use crate::scenario::{Role, Scenario};
use crate::stats::{Live, ThreadStats};

/// How often a thread looks at the shared flags.
const POLL: Duration = Duration::from_millis(5);
/// How long clients get to close cleanly once the run stops.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// [`ThreadCtx::warmup_end`] before `go` when there is a warm-up: every message is warm-up.
const WARMUP_UNKNOWN: u64 = u64::MAX;

/// State shared by the main thread and every generator thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Set by Ctrl-C / SIGTERM or by the main thread at the end: every client closes.
    pub(crate) stop: Arc<AtomicBool>,
    /// Set once every client is ready: publishers start, the warm-up (if any) begins.
    pub(crate) go: AtomicBool,
    /// Where the publishers' schedules start, ns on their clock (valid once `go`).
    pub(crate) publish_start: AtomicU64,
    /// End of the warm-up, ns on each clock (indexed by [`Clock`]; valid once `go`): a message
    /// whose intended send time is earlier is a warm-up message. 0 without a warm-up. On the
    /// publishers' clock it is exactly `publish_start + warm-up`, so publishers and
    /// subscribers of one run classify every message alike.
    pub(crate) warmup_end: [AtomicU64; 2],
    /// Publishers stop publishing (duration over).
    pub(crate) publishing_over: AtomicBool,
    /// Monotonic ns at which client 0 connects; client k connects `k * interval` later.
    pub(crate) connect_epoch: u64,
    /// One block of live counters per thread.
    pub(crate) live: Box<[Live]>,
}

/// What a thread hands back.
#[derive(Debug)]
pub(crate) struct ThreadReport {
    /// "io_uring" or "epoll".
    pub(crate) driver: &'static str,
    pub(crate) stats: ThreadStats,
}

/// The state of one generator thread, shared by its tasks.
#[derive(Debug)]
pub(crate) struct ThreadCtx {
    pub(crate) scn: Arc<Scenario>,
    pub(crate) shared: Arc<Shared>,
    /// This thread's index.
    pub(crate) index: usize,
    pub(crate) stats: RefCell<ThreadStats>,
    /// Woken when `go`, `publishing_over` or `stopping` changes.
    pub(crate) changed: Notify,
    pub(crate) go: Cell<bool>,
    pub(crate) publish_start: Cell<u64>,
    /// [`Shared::warmup_end`] once mirrored; [`WARMUP_UNKNOWN`] before (with a warm-up).
    warmup_end: [Cell<u64>; 2],
    pub(crate) publishing_over: Cell<bool>,
    pub(crate) stopping: Cell<bool>,
    /// Open connections by client index, to cancel their reads if they do not close by
    /// themselves at the end.
    pub(crate) conns: RefCell<HashMap<usize, Weak<Conn>>>,
    /// Client tasks still running.
    pub(crate) running: Cell<usize>,
    /// The publishers' schedule timer (fixed-rate publishing only).
    pub(crate) precise: Option<Precise>,
    /// `--quic`: this thread's endpoint, or why it could not be set up (each client then
    /// fails with that).
    pub(crate) quic: Option<Result<Rc<quic::Endpoint>, String>>,
}

impl ThreadCtx {
    /// This thread's live counters.
    pub(crate) fn live(&self) -> &Live {
        // `index` is below the number of blocks: `run` creates one per thread.
        &self.shared.live[self.index]
    }

    /// End of the warm-up on `clock`, ns: messages intended before it are warm-up messages
    /// (none without a warm-up). Before `go` everything is warm-up; if this thread has not
    /// mirrored `go` yet, the shared value is read directly, so a thread that lags the main
    /// thread never mistakes a measured message for a warm-up one.
    pub(crate) fn warmup_end(&self, clock: Clock) -> u64 {
        let cell = &self.warmup_end[clock as usize];
        let end = cell.get();
        if end != WARMUP_UNKNOWN || !self.shared.go.load(Ordering::Acquire) {
            return end;
        }
        let end = self.shared.warmup_end[clock as usize].load(Ordering::Acquire);
        cell.set(end);
        end
    }

    /// Counts an error: in the tally by description, and in the live error counter.
    pub(crate) fn error(&self, what: String) {
        self.stats.borrow_mut().error(what);
        Live::add(&self.live().errors, 1);
    }
}

/// Runs generator thread `index` until the run stops.
pub(crate) fn run(
    index: usize,
    clients: Vec<usize>,
    scn: Arc<Scenario>,
    shared: Arc<Shared>,
) -> io::Result<ThreadReport> {
    let entries = 4096;
    match scn.driver {
        Driver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            Ok(rt.block_on(thread_main(index, clients, scn, shared, "epoll")))
        }
        Driver::IoUring => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            Ok(rt.block_on(thread_main(index, clients, scn, shared, "io_uring")))
        }
        Driver::Auto => {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            Ok(match rt {
                monoio::FusionRuntime::Uring(mut rt) => {
                    rt.block_on(thread_main(index, clients, scn, shared, "io_uring"))
                }
                monoio::FusionRuntime::Legacy(mut rt) => {
                    rt.block_on(thread_main(index, clients, scn, shared, "epoll"))
                }
            })
        }
    }
}

async fn thread_main(
    index: usize,
    clients: Vec<usize>,
    scn: Arc<Scenario>,
    shared: Arc<Shared>,
    driver: &'static str,
) -> ThreadReport {
    let fixed_rate = scn.publish.as_ref().is_some_and(|p| p.period_ns.is_some())
        && clients
            .iter()
            .any(|&c| matches!(scn.clients.get(c).map(|c| &c.role), Some(Role::Pub { .. })));
    let precise = if fixed_rate {
        match Precise::start(&format!("perf-{index}")) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("perf: no precise timer ({e}); publishing on the 1 ms timer");
                None
            }
        }
    } else {
        None
    };
    let quic = scn.transport.quic.as_ref().map(|spec| {
        // --ifaddr: round-robin over the threads (one socket per thread carries all of its
        // connections).
        let mut ifaddrs = scn.ifaddrs.clone();
        if !ifaddrs.is_empty() {
            let n = index % ifaddrs.len();
            ifaddrs.rotate_left(n);
        }
        quic::Endpoint::start(spec, &scn.targets, &ifaddrs)
    });
    let warmup_end = if scn.warmup.is_zero() {
        0
    } else {
        WARMUP_UNKNOWN
    };
    let ctx = Rc::new(ThreadCtx {
        scn,
        shared,
        index,
        stats: RefCell::new(ThreadStats::default()),
        changed: Notify::default(),
        go: Cell::new(false),
        publish_start: Cell::new(0),
        warmup_end: [Cell::new(warmup_end), Cell::new(warmup_end)],
        publishing_over: Cell::new(false),
        stopping: Cell::new(false),
        conns: RefCell::new(HashMap::new()),
        running: Cell::new(0),
        precise,
        quic,
    });
    if ctx.precise.is_some() {
        let c = ctx.clone();
        monoio::spawn(async move {
            if let Some(p) = &c.precise {
                p.run().await;
            }
        });
    }
    for c in clients {
        ctx.running.set(ctx.running.get() + 1);
        monoio::spawn(client::run(ctx.clone(), c));
    }
    loop {
        monoio::time::sleep(POLL).await;
        let s = &ctx.shared;
        let mut changed = false;
        if !ctx.go.get() && s.go.load(Ordering::Acquire) {
            ctx.publish_start
                .set(s.publish_start.load(Ordering::Acquire));
            for (cell, end) in ctx.warmup_end.iter().zip(&s.warmup_end) {
                cell.set(end.load(Ordering::Acquire));
            }
            ctx.go.set(true);
            changed = true;
        }
        if !ctx.publishing_over.get() && s.publishing_over.load(Ordering::Acquire) {
            ctx.publishing_over.set(true);
            changed = true;
        }
        if s.stop.load(Ordering::Acquire) {
            ctx.stopping.set(true);
            ctx.publishing_over.set(true);
            changed = true;
        }
        if changed {
            ctx.changed.notify();
        }
        if ctx.stopping.get() {
            break;
        }
    }
    // Clients send DISCONNECT and wait for the broker to close; give them a moment, then
    // cancel the reads of those still open.
    let deadline = Instant::now() + CLOSE_GRACE;
    while ctx.running.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if ctx.running.get() > 0 {
        let open: Vec<Rc<Conn>> = ctx
            .conns
            .borrow()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for c in open {
            c.cancel_read();
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while ctx.running.get() > 0 && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut stats = std::mem::take(&mut *ctx.stats.borrow_mut());
    if let Some(Ok(endpoint)) = &ctx.quic {
        stats.quic_handshake = endpoint.take_handshakes();
    }
    ThreadReport { driver, stats }
}
