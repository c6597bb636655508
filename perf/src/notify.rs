//! Single-threaded wake-ups between the tasks of one generator thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on it. A waiter is a future taken with [`Notify::notified`]: it
/// completes at the first [`Notify::notify`] after it was created, so the pattern "check the
/// condition, then await" loses no wake-up on one thread (nothing runs in between).
///
/// Each pending waiter holds one slot, which it updates when polled again and frees when
/// dropped: the slots are bounded by the live waiters, and a poll costs O(1). (Comparing wakers
/// with `Waker::will_wake` to avoid duplicates does not work with monoio: a task's cloned waker
/// may carry another copy of the vtable, so every poll of a waiter in a `select!` would add an
/// entry until the next notify.)
#[derive(Debug, Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    slots: RefCell<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Notify {
    /// Wakes every current waiter.
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = {
            let mut slots = self.slots.borrow_mut();
            slots.free.clear();
            std::mem::take(&mut slots.wakers)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// A future that completes at the next [`Notify::notify`].
    pub(crate) fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }

    #[cfg(test)]
    fn waiters(&self) -> usize {
        self.slots.borrow().wakers.iter().flatten().count()
    }
}

/// See [`Notify::notified`].
#[derive(Debug)]
pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// Its slot among the waiters of `generation`, once polled.
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            self.slot = None;
            return Poll::Ready(());
        }
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
        if let Some(i) = self.slot
            && self.notify.generation.get() == self.generation
        {
            let mut slots = self.notify.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

/// Yields once to the runtime's other tasks.
pub(crate) async fn yield_now() {
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
    YieldNow(false).await;
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

    #[test]
    fn waiters_are_bounded_by_live_futures_and_all_woken() {
        let n = Notify::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        // A task that waits in a loop (as in a `select!` whose other branch fires): each new
        // future replaces the dropped one's slot.
        for _ in 0..1000 {
            let mut f = Box::pin(n.notified());
            assert!(poll(&mut f, &waker).is_pending());
            // Polled again (a spurious wake-up): still one slot.
            assert!(poll(&mut f, &waker).is_pending());
            assert_eq!(n.waiters(), 1);
        }
        assert_eq!(n.waiters(), 0);
        let mut a = Box::pin(n.notified());
        let mut b = Box::pin(n.notified());
        assert!(poll(&mut a, &waker).is_pending());
        assert!(poll(&mut b, &waker).is_pending());
        assert_eq!(n.waiters(), 2);
        n.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(poll(&mut a, &waker).is_ready());
        assert!(poll(&mut b, &waker).is_ready());
        // Created before the notify, first polled after it: ready too.
        let mut c = Box::pin(n.notified());
        n.notify();
        assert!(poll(&mut c, &waker).is_ready());
        drop((a, b, c));
        assert_eq!(n.waiters(), 0);
    }
}
