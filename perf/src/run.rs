//! The main thread: starts the generator threads, moves the run through its phases, prints
//! the progress line, and collects the threads' statistics at the end.
//!
//! Phases: *connecting* (clients connect, `-i` apart; subscribers subscribe) → *warmup* (with
//! `--warmup` only: every client is ready, publishers start on a common schedule at the "go"
//! instant; messages intended before go + warm-up are counted and sequence-checked but not
//! timed) → *running* (the measured phase: the schedule goes on without a break; lasts
//! `--duration`, until every publisher reached `-L`, or until Ctrl-C) → *draining* (publishers
//! wait for their acks, subscribers for the messages still on their way, at most the drain
//! time) → stop.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::Clock;
use crate::scenario::{Kind, Scenario};
use crate::stats::{Live, LiveSum, ThreadStats, Totals};
use crate::thread::{self, Shared, ThreadReport};

/// How often the main thread looks at the counters.
const TICK: Duration = Duration::from_millis(20);
/// Publishing starts this long after every client is ready, so every thread sees `go` first.
const LEAD: Duration = Duration::from_millis(20);

/// What a run produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) totals: Totals,
    /// The live counters at the end.
    pub(crate) live: LiveSum,
    /// "io_uring" or "epoll".
    pub(crate) driver: &'static str,
    pub(crate) started_at: SystemTime,
    pub(crate) ended_at: SystemTime,
    /// Stopped by Ctrl-C or SIGTERM.
    pub(crate) interrupted: bool,
    /// Every client ready + warm-up → stop (`None` if stopped before).
    pub(crate) measured: Option<Duration>,
    /// With `--warmup`: every client ready → end of the warm-up, or → stop if that came first.
    pub(crate) warmup: Option<Duration>,
    /// First publish of the measured phase (go + warm-up) → publishing over.
    pub(crate) publishing: Option<Duration>,
    /// Monotonic ns of the first publish of the measured phase (go + warm-up).
    pub(crate) publish_start: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Connecting,
    Warmup,
    Running,
    Draining(Instant),
    Done,
}

/// Runs the scenario to its end. `progress`: print a progress line on stderr every second.
pub(crate) fn run(scn: Arc<Scenario>, progress: bool) -> Result<Outcome, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal, once stopping, ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    let threads = scn.threads;
    let shared = Arc::new(Shared {
        stop: stop.clone(),
        go: AtomicBool::new(false),
        publish_start: AtomicU64::new(0),
        warmup_end: [AtomicU64::new(0), AtomicU64::new(0)],
        publishing_over: AtomicBool::new(false),
        connect_epoch: Clock::Monotonic.now() + nanos(LEAD),
        live: (0..threads).map(|_| Live::default()).collect(),
    });
    let started_at = SystemTime::now();
    let mut handles: Vec<JoinHandle<std::io::Result<ThreadReport>>> = Vec::new();
    for i in 0..threads {
        let clients: Vec<usize> = (i..scn.clients.len()).step_by(threads).collect();
        let (scn, shared) = (scn.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("perf-{i}"))
            .spawn(move || thread::run(i, clients, scn, shared));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                stop.store(true, Ordering::Release);
                return Err(format!("cannot start generator thread {i}: {e}"));
            }
        }
    }

    let total = scn.clients.len() as u64;
    let pubs = scn.pubs as u64;
    let mut phase = Phase::Connecting;
    let mut measure_start = None;
    // The go instant: publishing starts (LEAD after every client is ready), or, without
    // publishers, every client is ready. The warm-up runs from it; `--duration` follows.
    let mut go_instant = None;
    let mut publish_start = None;
    let mut publish_instant = None;
    let mut publish_end = None;
    let mut interrupted = false;
    let begin = Instant::now();
    let mut shown = (Instant::now(), LiveSum::default());
    loop {
        std::thread::sleep(TICK);
        if stop.load(Ordering::Acquire) {
            interrupted = true;
            break;
        }
        if handles.iter().any(JoinHandle::is_finished) {
            // A thread ended early: its runtime could not start.
            break;
        }
        let sum = LiveSum::of(&shared.live);
        let now = Instant::now();
        phase = match phase {
            Phase::Connecting if sum.ready >= total => {
                measure_start = Some(now);
                let publish = scn.publish.as_ref().filter(|_| pubs > 0);
                let lead = if publish.is_some() {
                    LEAD
                } else {
                    Duration::ZERO
                };
                // The go instant on each clock, indexed by `Clock`.
                let starts = [
                    Clock::Monotonic.now() + nanos(lead),
                    Clock::Realtime.now() + nanos(lead),
                ];
                let warmup = nanos(scn.warmup);
                for (end, start) in shared.warmup_end.iter().zip(starts) {
                    let at = if warmup == 0 {
                        0
                    } else {
                        start.saturating_add(warmup)
                    };
                    end.store(at, Ordering::Release);
                }
                if let Some(p) = publish {
                    publish_start = Some(starts[Clock::Monotonic as usize]);
                    publish_instant = Some(now + lead);
                    shared
                        .publish_start
                        .store(starts[p.clock as usize], Ordering::Release);
                }
                go_instant = Some(now + lead);
                shared.go.store(true, Ordering::Release);
                if scn.warmup.is_zero() {
                    Phase::Running
                } else {
                    Phase::Warmup
                }
            }
            Phase::Warmup | Phase::Running => {
                // `None`: too far to represent, never reached.
                let measured_from = go_instant.unwrap_or(now).checked_add(scn.warmup);
                let measured_end = measured_from
                    .zip(scn.duration)
                    .and_then(|(m, d)| m.checked_add(d));
                if measured_end.is_some_and(|e| now >= e) {
                    shared.publishing_over.store(true, Ordering::Release);
                    publish_end = Some(now);
                    if pubs > 0 {
                        Phase::Draining(now)
                    } else {
                        Phase::Done
                    }
                } else if pubs > 0 && sum.pubs_done >= pubs {
                    publish_end = Some(now);
                    Phase::Draining(now)
                } else if pubs == 0 && sum.connected() == 0 {
                    // Every client failed or was dropped: nothing left to hold or measure.
                    Phase::Done
                } else if measured_from.is_none_or(|m| now < m) {
                    Phase::Warmup
                } else {
                    Phase::Running
                }
            }
            Phase::Draining(since) => {
                let delivered = scn.kind != Kind::Bench || sum.received >= sum.expected;
                let late = now - since >= scn.drain + Duration::from_millis(500);
                if (sum.pubs_done >= pubs && delivered) || late {
                    Phase::Done
                } else {
                    Phase::Draining(since)
                }
            }
            p => p,
        };
        if progress && now - shown.0 >= Duration::from_secs(1) {
            print_progress(&scn, now - begin, now - shown.0, &shown.1, &sum, phase);
            shown = (now, sum);
        }
        if matches!(phase, Phase::Done) {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    let end = Instant::now();
    shared.publishing_over.store(true, Ordering::Release);
    stop.store(true, Ordering::Release);

    let mut stats: Vec<ThreadStats> = Vec::new();
    let mut driver = "";
    let mut failure = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => {
                driver = r.driver;
                stats.push(r.stats);
            }
            Ok(Err(e)) => failure = Some(format!("generator thread {i}: {e}")),
            Err(_) => failure = Some(format!("generator thread {i} panicked")),
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let publishing = publish_instant
        .and_then(|a| a.checked_add(scn.warmup))
        .and_then(|a| publish_end.unwrap_or(end).checked_duration_since(a))
        .filter(|d| !d.is_zero());
    let warmup = nanos(scn.warmup);
    Ok(Outcome {
        totals: Totals::merge(stats, scn.kind == Kind::Bench, scn.run_id),
        live: LiveSum::of(&shared.live),
        driver,
        started_at,
        ended_at: SystemTime::now(),
        interrupted,
        measured: measure_start
            .and_then(|s| s.checked_add(scn.warmup))
            .and_then(|s| end.checked_duration_since(s)),
        warmup: measure_start
            .filter(|_| !scn.warmup.is_zero())
            .map(|s| scn.warmup.min(end.saturating_duration_since(s))),
        publishing,
        publish_start: publish_start.map(|s| s.saturating_add(warmup)),
    })
}

fn print_progress(
    scn: &Scenario,
    elapsed: Duration,
    dt: Duration,
    prev: &LiveSum,
    sum: &LiveSum,
    phase: Phase,
) {
    let secs = dt.as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
    let total = scn.clients.len();
    let mut line = format!(
        "[{:>6.1}s] {:<10} conn {}/{} (+{:.0}/s)",
        elapsed.as_secs_f64(),
        match phase {
            Phase::Connecting => "connecting",
            Phase::Warmup => "warmup",
            Phase::Running => "running",
            Phase::Draining(_) => "draining",
            Phase::Done => "done",
        },
        sum.connected(),
        total,
        rate(sum.established, prev.established),
    );
    if scn.pubs > 0 {
        line += &format!("  pub {:.0}/s", rate(sum.sent, prev.sent));
        if scn
            .publish
            .as_ref()
            .is_some_and(|p| p.qos != net::mqtt::QoS::AtMostOnce)
        {
            line += &format!("  ack {:.0}/s", rate(sum.acked, prev.acked));
        }
    }
    if scn.subs > 0 {
        line += &format!("  recv {:.0}/s", rate(sum.received, prev.received));
    }
    line += &format!("  errors {}", sum.errors);
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
