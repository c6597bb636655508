//! The doorbell: how a consumer sleeps on its rings and how producers wake it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use super::{
    CachePadded,
    sync::{AtomicBool, AtomicU64, AtomicWaker, Ordering, fence},
};

/// One per consuming endpoint, shared by every ring into it.
///
/// The consumer's task [`wait`](Self::wait)s on it when all its rings are empty; a producer
/// calls [`ring`](Self::ring) after each successful push (or once after a batch of pushes).
/// `ring` costs a fence and a load of a read-mostly flag while the consumer is awake; only
/// when the consumer is armed (asleep or about to be) does it clear the flag and wake the
/// consumer's task, so the eventfd write underneath a cross-thread monoio wake happens at
/// most once per sleep, not once per message.
///
/// One task waits on a doorbell at a time: a second concurrent waiter would replace the
/// first one's waker.
///
/// The protocol is runtime-agnostic (any `Waker` works), so a tokio control plane can sit at
/// one end of a mesh.
pub struct Doorbell {
    /// Set by the consumer before it re-checks its rings and sleeps; cleared by the producer
    /// that wakes it, or by the consumer when it finds work after all. Alone on its cache
    /// line: producers on every other core read it on every `ring`.
    armed: CachePadded<AtomicBool>,
    waker: AtomicWaker,
    /// Wakes sent by producers.
    wakeups: AtomicU64,
    /// Times the consumer went to sleep (armed and returned `Pending`).
    sleeps: AtomicU64,
}

impl Doorbell {
    /// A disarmed doorbell.
    pub fn new() -> Self {
        Self {
            armed: CachePadded(AtomicBool::new(false)),
            waker: AtomicWaker::new(),
            wakeups: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
        }
    }

    /// Resolves once `has_work()` returns `true`.
    ///
    /// `has_work` must report whether any ring into this doorbell's endpoint holds an item
    /// (for a [`Consumer`](super::Consumer), `!is_empty()`), reading the rings afresh each
    /// time. It is checked first without arming (the fast path); otherwise the doorbell is
    /// armed with the current task's waker and `has_work` is checked again, so an item pushed
    /// concurrently is either seen by that re-check or followed by a wake.
    ///
    /// Dropping the future before it resolves disarms the doorbell.
    pub fn wait<F: Fn() -> bool>(&self, has_work: F) -> Wait<'_, F> {
        Wait {
            doorbell: self,
            has_work,
            spins: 0,
        }
    }

    /// The poll form of [`wait`](Self::wait), for hand-written futures and event loops.
    ///
    /// Returns `Ready` when `has_work()` is true; otherwise leaves the doorbell armed with
    /// `cx`'s waker and returns `Pending`. A caller that stops polling after a `Pending`
    /// should [`disarm`](Self::disarm) the doorbell to spare producers a useless wake.
    pub fn poll_wait(&self, cx: &mut Context<'_>, has_work: impl Fn() -> bool) -> Poll<()> {
        if has_work() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // `Release` so that a producer that `Acquire`s `armed == true` also sees the waker
        // registered above (the fence below orders it against our re-check as well).
        self.armed.store(true, Ordering::Release);
        // Pairs with the fence in `ring`: either the producer's ring-index store is visible
        // to the re-check below, or our `armed` store is visible to its load (Dekker).
        fence(Ordering::SeqCst);
        if has_work() {
            self.armed.store(false, Ordering::Relaxed);
            return Poll::Ready(());
        }
        self.sleeps.fetch_add(1, Ordering::Relaxed);
        Poll::Pending
    }

    /// Wakes the consumer if it is armed; returns whether it did.
    ///
    /// Call after a successful push (the push's `Release` store must come first). Several
    /// producers may ring concurrently: exactly one of them wakes a given sleep.
    #[inline]
    pub fn ring(&self) -> bool {
        // Pairs with the fence in `poll_wait`; see there.
        fence(Ordering::SeqCst);
        if !self.armed.load(Ordering::Relaxed) {
            return false;
        }
        if !self.armed.swap(false, Ordering::AcqRel) {
            // Another producer, or the consumer itself, disarmed it first.
            return false;
        }
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        self.waker.wake();
        true
    }

    /// Disarms the doorbell: producers stop waking the consumer until it arms it again.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// Whether the consumer is armed (asleep or about to be), as of now.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// How many wakes producers have sent through this doorbell.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// How many times the consumer has gone to sleep on this doorbell.
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::Relaxed)
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Doorbell")
            .field("armed", &self.is_armed())
            .field("wakeups", &self.wakeups())
            .field("sleeps", &self.sleeps())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`Doorbell::wait`].
#[must_use = "futures do nothing unless polled"]
pub struct Wait<'a, F> {
    doorbell: &'a Doorbell,
    has_work: F,
    /// Yields left before arming.
    spins: u32,
}

impl<F> Wait<'_, F> {
    /// Polls before sleeping: yield to the runtime up to `yields` times, re-checking
    /// `has_work` each time, before arming the doorbell.
    ///
    /// A consumer that arms as soon as its rings are empty can fall into lockstep with a
    /// producer that pushes one message at a time: each push finds it armed and pays a
    /// cross-core wake, the consumer pops one message and re-arms before the next push. A
    /// few yields (each lets the runtime run its other tasks and poll its I/O) are usually
    /// shorter than a wake and break the lockstep, at the cost of a little CPU on an idle
    /// shard: the idle-poll of Seastar's reactor.
    pub fn spin(mut self, yields: u32) -> Self {
        self.spins = yields;
        self
    }
}

// `has_work` is only ever called through a shared reference; nothing here is pinned.
impl<F> Unpin for Wait<'_, F> {}

impl<F: Fn() -> bool> Future for Wait<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.spins > 0 {
            if (this.has_work)() {
                return Poll::Ready(());
            }
            this.spins -= 1;
            // Yield: be polled again after the runtime's other ready tasks.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.doorbell.poll_wait(cx, &this.has_work)
    }
}

impl<F> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        // Resolved: already disarmed (by us or by the waking producer); a second store is
        // harmless. Cancelled while armed: stop producers from waking a task that no longer
        // waits here.
        self.doorbell.disarm();
    }
}

impl<F> fmt::Debug for Wait<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("doorbell", self.doorbell)
            .field("spins", &self.spins)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::{
        cell::Cell,
        pin::pin,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use super::*;

    /// Counts the wakes it receives.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker::default());
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn ready_at_once_when_there_is_work() {
        let bell = Doorbell::new();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(pin!(bell.wait(|| true)).poll(&mut cx).is_ready());
        assert!(!bell.is_armed());
        assert_eq!(bell.sleeps(), 0);
        assert!(!bell.ring());
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ring_wakes_an_armed_consumer_once() {
        let bell = Doorbell::new();
        let work = Cell::new(false);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(bell.wait(|| work.get()));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(bell.is_armed());
        assert_eq!(bell.sleeps(), 1);
        work.set(true);
        assert!(bell.ring());
        assert!(!bell.ring(), "a second ring finds the doorbell disarmed");
        assert_eq!(counter.0.load(Ordering::Relaxed), 1);
        assert_eq!(bell.wakeups(), 1);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn work_found_on_the_recheck_disarms() {
        let bell = Doorbell::new();
        let checks = Cell::new(0);
        let (_counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        // Empty on the first check, work on the re-check after arming.
        let has_work = || {
            checks.set(checks.get() + 1);
            checks.get() > 1
        };
        assert!(bell.poll_wait(&mut cx, has_work).is_ready());
        assert!(!bell.is_armed());
        assert_eq!(bell.sleeps(), 0);
        assert!(!bell.ring());
    }

    #[test]
    fn spin_yields_before_arming() {
        let bell = Doorbell::new();
        let work = Cell::new(false);
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(bell.wait(|| work.get()).spin(2));
        for yields in 1..=2 {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(!bell.is_armed(), "not armed while spinning");
            assert_eq!(
                counter.0.load(Ordering::Relaxed),
                yields,
                "a yield wakes itself"
            );
        }
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(bell.is_armed());
        assert_eq!(bell.sleeps(), 1);
        work.set(true);
        assert!(bell.ring());
        assert!(wait.as_mut().poll(&mut cx).is_ready());

        work.set(false);
        let mut wait = pin!(bell.wait(|| work.get()).spin(5));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        work.set(true);
        assert!(
            wait.as_mut().poll(&mut cx).is_ready(),
            "work found while spinning"
        );
        assert_eq!(bell.sleeps(), 1);
    }

    #[test]
    fn dropping_a_pending_wait_disarms() {
        let bell = Doorbell::new();
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        {
            let mut wait = pin!(bell.wait(|| false));
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(bell.is_armed());
        }
        assert!(!bell.is_armed());
        assert!(!bell.ring());
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
        assert_eq!(bell.wakeups(), 0);
    }
}
