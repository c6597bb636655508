//! A timer with microsecond precision for the publishing schedule.
//!
//! monoio's timer wheel has millisecond granularity: a publisher that sleeps until its next
//! slot wakes up to a millisecond late, and since latency is measured from the intended send
//! time (coordinated omission), that lateness would show up as broker latency. Busy-waiting
//! the last millisecond would cost a core per generator thread, which the broker under test
//! needs.
//!
//! Instead each generator thread has a ticker: a helper OS thread with 1 µs timer slack that
//! sleeps until the earliest deadline any publisher of the thread waits for, then wakes the
//! thread's timer task across threads (monoio's `sync` waker: an eventfd write), which wakes
//! the publishers whose deadline has come. The ticker costs one wake-up per deadline and a few
//! tens of microseconds of lateness; the publishers record their actual lateness in the `lag`
//! histogram so the report shows it.

use std::cell::{Cell, RefCell};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use atomic_waker::AtomicWaker;

use crate::clock::Clock;
use crate::notify::Notify;

/// No deadline armed.
const NONE: u64 = u64::MAX;

/// What the runtime thread and its ticker share.
#[derive(Debug, Default)]
struct Ticker {
    /// Monotonic ns the ticker sleeps until, or [`NONE`].
    deadline: AtomicU64,
    /// Incremented each time the ticker fires.
    fired: AtomicU64,
    /// The timer task's waker.
    waker: AtomicWaker,
    stop: AtomicBool,
}

/// One waiting publisher.
#[derive(Debug)]
struct Entry {
    deadline: u64,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// The precise timer of one generator thread (lives on that thread).
#[derive(Debug)]
pub(crate) struct Precise {
    ticker: Arc<Ticker>,
    thread: Option<JoinHandle<()>>,
    heap: RefCell<BinaryHeap<Reverse<Entry>>>,
    seq: Cell<u64>,
    /// Woken when an entry earlier than the armed deadline is added.
    earlier: Notify,
}

impl Precise {
    /// Starts the ticker thread (named after the generator thread `name`).
    pub(crate) fn start(name: &str) -> std::io::Result<Self> {
        let ticker = Arc::new(Ticker {
            deadline: AtomicU64::new(NONE),
            ..Ticker::default()
        });
        let t = ticker.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-tick"))
            .spawn(move || tick(&t))?;
        Ok(Self {
            ticker,
            thread: Some(thread),
            heap: RefCell::new(BinaryHeap::new()),
            seq: Cell::new(0),
            earlier: Notify::default(),
        })
    }

    /// Completes once the monotonic clock reads `deadline` ns.
    pub(crate) fn sleep_until(&self, deadline: u64) -> Sleep<'_> {
        Sleep {
            timer: self,
            deadline,
            registered: false,
        }
    }

    fn register(&self, deadline: u64, waker: Waker) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        let mut heap = self.heap.borrow_mut();
        let was = heap.peek().map_or(NONE, |Reverse(e)| e.deadline);
        heap.push(Reverse(Entry {
            deadline,
            seq,
            waker,
        }));
        if deadline < was {
            self.earlier.notify();
        }
    }

    /// The timer task: wakes the entries whose deadline has come, arms the ticker for the
    /// next one. Runs for the life of the generator thread.
    pub(crate) async fn run(&self) {
        loop {
            let now = Clock::Monotonic.now();
            let next = {
                let mut heap = self.heap.borrow_mut();
                while heap.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
                    if let Some(Reverse(e)) = heap.pop() {
                        e.waker.wake();
                    }
                }
                heap.peek().map(|Reverse(e)| e.deadline)
            };
            match next {
                None => self.earlier.notified().await,
                Some(d) => {
                    let fired = self.ticker.fired.load(Ordering::Acquire);
                    self.ticker.deadline.store(d, Ordering::Release);
                    if let Some(t) = &self.thread {
                        t.thread().unpark();
                    }
                    monoio::select! {
                        _ = Fired { ticker: &self.ticker, seen: fired } => {},
                        _ = self.earlier.notified() => {},
                    }
                }
            }
        }
    }
}

impl Drop for Precise {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// See [`Precise::sleep_until`].
#[derive(Debug)]
pub(crate) struct Sleep<'a> {
    timer: &'a Precise,
    deadline: u64,
    registered: bool,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Clock::Monotonic.now() >= self.deadline {
            return Poll::Ready(());
        }
        if !self.registered {
            self.timer.register(self.deadline, cx.waker().clone());
            self.registered = true;
        }
        Poll::Pending
    }
}

/// Completes when the ticker has fired since `seen`.
struct Fired<'a> {
    ticker: &'a Ticker,
    seen: u64,
}

impl Future for Fired<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ticker.fired.load(Ordering::Acquire) != self.seen {
            return Poll::Ready(());
        }
        self.ticker.waker.register(cx.waker());
        if self.ticker.fired.load(Ordering::Acquire) != self.seen {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The ticker thread.
fn tick(t: &Ticker) {
    set_timer_slack_1us();
    loop {
        if t.stop.load(Ordering::Acquire) {
            return;
        }
        let d = t.deadline.load(Ordering::Acquire);
        if d == NONE {
            std::thread::park();
            continue;
        }
        let now = Clock::Monotonic.now();
        if now < d {
            // Unparked early when an earlier deadline is armed.
            std::thread::park_timeout(Duration::from_nanos(d - now));
            continue;
        }
        if t.deadline
            .compare_exchange(d, NONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            t.fired.fetch_add(1, Ordering::AcqRel);
            t.waker.wake();
        }
    }
}

/// Timer slack 1 µs for this thread (Linux default 50 µs): best effort.
fn set_timer_slack_1us() {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and only changes the calling
    // thread's timer slack; it touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Many sleeps in one runtime, with deadlines out of order: each ends on time, within a
    /// bound far below monoio's millisecond granularity on an idle machine (loose for CI).
    #[test]
    fn wakes_each_deadline_precisely() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let lates = rt.block_on(async {
            let p = Rc::new(Precise::start("test").unwrap());
            let runner = p.clone();
            monoio::spawn(async move { runner.run().await });
            let base = Clock::Monotonic.now() + 5_000_000;
            let mut handles = Vec::new();
            for i in [7u64, 3, 9, 1, 5, 2, 8] {
                let p = p.clone();
                handles.push(monoio::spawn(async move {
                    let mut lates = Vec::new();
                    for k in 0..20 {
                        let d = base + k * 1_300_000 + i * 110_000;
                        p.sleep_until(d).await;
                        lates.push(Clock::Monotonic.now() - d);
                    }
                    lates
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await);
            }
            all
        });
        let mut lates = lates;
        lates.sort_unstable();
        let p50 = lates[lates.len() / 2];
        assert!(p50 < 500_000, "median lateness {p50} ns");
    }
}
