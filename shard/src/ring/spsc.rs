//! The bounded single-producer single-consumer ring.

use std::{fmt, marker::PhantomData, mem::MaybeUninit, ptr};

use super::{
    CachePadded,
    sync::{Arc, AtomicUsize, Ordering, UnsafeCell},
};

/// Builds a ring of `capacity` slots and returns its two halves.
///
/// The ring's storage is allocated once, here; pushes and pops never allocate.
///
/// # Panics
///
/// If `capacity` is zero or not a power of two. Ring sizes come from validated
/// configuration, before any shard starts.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity.is_power_of_two(),
        "ring capacity must be a non-zero power of two, got {capacity}"
    );
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        cached_head: 0,
        _not_sync: PhantomData,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        cached_tail: 0,
        _not_sync: PhantomData,
    };
    (producer, consumer)
}

/// The state both halves share.
///
/// `head` and `tail` are free-running counters: the number of items ever popped and pushed.
/// `tail - head` (wrapping) is the number of items in the ring, and is at most the capacity.
/// Slots `head..tail` (modulo capacity) hold initialised values, the others are uninitialised.
struct Shared<T> {
    /// Written only by the consumer (`Release`), read by the producer (`Acquire`).
    head: CachePadded<AtomicUsize>,
    /// Written only by the producer (`Release`), read by the consumer (`Acquire`).
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
}

impl<T> Shared<T> {
    #[inline(always)]
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    #[inline(always)]
    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        // The mask keeps the index in bounds, so this never panics.
        &self.slots[index & self.mask]
    }
}

// SAFETY: the ring moves `T` values from the producer's thread to the consumer's thread,
// which requires `T: Send`. The slots (the only non-`Sync` part) are accessed through the
// head/tail protocol: a slot in `head..tail` is read only by the consumer, one outside it is
// written only by the producer, and each side has exclusive access to its own half because
// `Producer` and `Consumer` are neither `Clone` nor `Sync` and their mutating methods take
// `&mut self`. Dropping `Shared` (last `Arc`) happens after both halves are gone.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: see the `Send` impl above; shared references to `Shared` only reach the atomics,
// and slot accesses are partitioned between the two halves as described there.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone: the last `Arc` drop synchronised with the other half's drop,
        // so plain (relaxed) loads see the final indices.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut index = head;
        while index != tail {
            // SAFETY: slots in `head..tail` hold initialised values that no one has moved out,
            // and nothing else can access them any more (`&mut self`). Each is dropped once.
            self.slot(index)
                .with_mut(|slot| unsafe { ptr::drop_in_place((*slot).as_mut_ptr()) });
            index = index.wrapping_add(1);
        }
    }
}

/// The sending half of a ring built by [`channel`].
///
/// Owned by exactly one thread (`Send`, not `Sync`, not `Clone`).
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// The authoritative tail: only this half writes it.
    tail: usize,
    /// The consumer's `head` as last seen; it only grows, so `tail - cached_head` is an upper
    /// bound on the number of items in the ring.
    cached_head: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> Producer<T> {
    /// Pushes `value` onto the ring, or hands it back in `Err` if the ring is full.
    ///
    /// This does not wake the consumer: ring its [`Doorbell`](super::Doorbell) after a
    /// successful push (or use [`MeshEndpoint::send`](super::MeshEndpoint::send), which does).
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        let tail = self.tail;
        if tail.wrapping_sub(self.cached_head) == self.shared.capacity() {
            // Pairs with the consumer's `Release` store of `head`: its reads of the freed
            // slots happen before we overwrite them.
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            if tail.wrapping_sub(self.cached_head) == self.shared.capacity() {
                return Err(value);
            }
        }
        // SAFETY: `tail - head < capacity`, so slot `tail` is outside `head..tail`: it holds
        // no live value, the consumer will not read it until we publish the new tail below,
        // and we are the only writer (`&mut self`, the producer is unique).
        self.shared
            .slot(tail)
            .with_mut(|slot| unsafe { ptr::write(slot, MaybeUninit::new(value)) });
        self.tail = tail.wrapping_add(1);
        // Publishes the slot written above to the consumer's `Acquire` load of `tail`.
        self.shared.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// The number of slots: a power of two.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// The number of items in the ring, for metrics and backpressure decisions.
    ///
    /// An upper bound: the consumer may be popping concurrently.
    #[inline]
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.shared.head.load(Ordering::Relaxed))
            .min(self.capacity())
    }

    /// Whether the ring holds no item (a snapshot: the consumer may pop concurrently, which
    /// only makes an empty ring stay empty).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the next [`try_push`](Self::try_push) would fail, as of now. The consumer may
    /// free slots concurrently, so `true` can be stale; `false` is reliable.
    #[inline]
    pub fn is_full(&self) -> bool {
        // The cached head is a lower bound of the real one: if it already says there is
        // room, there is, and the consumer's cache line is left alone.
        self.tail.wrapping_sub(self.cached_head) == self.capacity() && self.len() == self.capacity()
    }

    /// Whether the consumer half has been dropped. Items pushed from then on are only dropped
    /// with the ring.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// The receiving half of a ring built by [`channel`].
///
/// Owned by exactly one thread (`Send`, not `Sync`, not `Clone`).
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// The authoritative head: only this half writes it.
    head: usize,
    /// The producer's `tail` as last seen; it only grows, so `cached_tail - head` is a lower
    /// bound on the number of items in the ring.
    cached_tail: usize,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> Consumer<T> {
    /// Pops the oldest item, or returns `None` if the ring is empty.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let head = self.head;
        if head == self.cached_tail {
            // Pairs with the producer's `Release` store of `tail`: its write of the slot
            // happens before our read.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            if head == self.cached_tail {
                return None;
            }
        }
        // SAFETY: `head != tail`, so slot `head` holds an initialised value published by the
        // producer (acquired above or on an earlier reload); the producer will not touch it
        // until we publish the new head below, and we move it out exactly once.
        let value = self
            .shared
            .slot(head)
            .with(|slot| unsafe { (*slot).assume_init_read() });
        self.head = head.wrapping_add(1);
        // Hands the slot back to the producer's `Acquire` load of `head`.
        self.shared.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Pops up to `max` items, oldest first, passing each to `f`; returns how many.
    ///
    /// The freed slots are handed back to the producer once, at the end of the batch (or if
    /// `f` panics), so a batch costs one store to the shared line instead of one per item.
    /// Keep `max` bounded: it bounds the work of one event-loop turn.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut available = self.cached_tail.wrapping_sub(self.head);
        if available < max {
            // Same pairing as in `try_pop`.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            available = self.cached_tail.wrapping_sub(self.head);
        }
        let count = available.min(max);
        if count == 0 {
            return 0;
        }
        let guard = PublishHead(self);
        for _ in 0..count {
            let head = guard.0.head;
            // SAFETY: as in `try_pop`: `head` is in `head..cached_tail`, slots the producer
            // published and will not touch before we store the new head (done by the guard).
            // The local head is advanced before `f` runs, so if `f` panics the value is
            // already ours and the ring's `Drop` will not drop it a second time.
            let value = guard
                .0
                .shared
                .slot(head)
                .with(|slot| unsafe { (*slot).assume_init_read() });
            guard.0.head = head.wrapping_add(1);
            f(value);
        }
        drop(guard);
        count
    }

    /// The number of slots: a power of two.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// The number of items in the ring, for metrics. A lower bound: the producer may be
    /// pushing concurrently.
    #[inline]
    pub fn len(&self) -> usize {
        self.shared
            .tail
            .load(Ordering::Relaxed)
            .wrapping_sub(self.head)
            .min(self.capacity())
    }

    /// Whether the ring is empty, as of now.
    ///
    /// This reloads the producer's index (`Acquire`); it is what a doorbell's `has_work`
    /// check calls after arming.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.cached_tail && self.head == self.shared.tail.load(Ordering::Acquire)
    }

    /// Whether the ring is full, as of now (the producer's view may already be stale).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Whether the producer half has been dropped: once the ring is also empty, nothing more
    /// will arrive.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// Publishes the consumer's local head on drop: at the end of a batch, or during unwinding.
struct PublishHead<'a, T>(&'a mut Consumer<T>);

impl<T> Drop for PublishHead<'_, T> {
    fn drop(&mut self) {
        // Hands the slots read in the batch back to the producer's `Acquire` load of `head`.
        self.0.shared.head.store(self.0.head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::{
        cell::Cell,
        panic::{AssertUnwindSafe, catch_unwind},
        rc::Rc,
    };

    use super::*;

    /// Counts its drops in a shared counter.
    struct Tracked(Rc<Cell<usize>>, u32);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn push_pop_in_order_across_many_wraps() {
        let (mut tx, mut rx) = channel::<u64>(4);
        let mut next_out = 0;
        for i in 0..1000 {
            tx.try_push(i).unwrap();
            if i % 3 == 2 {
                while let Some(v) = rx.try_pop() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
        }
        while let Some(v) = rx.try_pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 1000);
        assert!(rx.is_empty());
    }

    #[test]
    fn indices_wrap_around_usize() {
        let (mut tx, mut rx) = channel::<u32>(4);
        // Start the free-running counters just below the wrap of `usize`.
        let start = usize::MAX - 5;
        tx.tail = start;
        tx.cached_head = start;
        rx.head = start;
        rx.cached_tail = start;
        rx.shared.head.store(start, Ordering::Relaxed);
        rx.shared.tail.store(start, Ordering::Relaxed);
        for round in 0..5u32 {
            for i in 0..4 {
                tx.try_push(round * 10 + i).unwrap();
            }
            assert!(tx.is_full());
            assert_eq!(tx.len(), 4);
            assert_eq!(rx.len(), 4);
            assert_eq!(tx.try_push(99), Err(99));
            for i in 0..4 {
                assert_eq!(rx.try_pop(), Some(round * 10 + i));
            }
            assert_eq!(rx.try_pop(), None);
        }
        assert!(tx.tail < start, "the tail wrapped");
    }

    #[test]
    fn full_ring_hands_the_value_back() {
        let (mut tx, mut rx) = channel::<String>(2);
        assert_eq!(tx.capacity(), 2);
        tx.try_push("a".into()).unwrap();
        tx.try_push("b".into()).unwrap();
        assert!(tx.is_full());
        assert!(rx.is_full());
        assert_eq!(tx.try_push("c".into()), Err("c".to_string()));
        assert_eq!(rx.try_pop().as_deref(), Some("a"));
        assert!(!tx.is_full());
        tx.try_push("c".into()).unwrap();
        assert_eq!(rx.try_pop().as_deref(), Some("b"));
        assert_eq!(rx.try_pop().as_deref(), Some("c"));
        assert_eq!(rx.try_pop(), None);
    }

    #[test]
    fn capacity_one() {
        let (mut tx, mut rx) = channel::<u8>(1);
        for i in 0..10 {
            tx.try_push(i).unwrap();
            assert_eq!(tx.try_push(i), Err(i));
            assert_eq!(rx.try_pop(), Some(i));
        }
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        let _ = channel::<u8>(3);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_not_be_zero() {
        let _ = channel::<u8>(0);
    }

    #[test]
    fn dropping_the_ring_drops_remaining_items() {
        let drops = Rc::new(Cell::new(0));
        let (mut tx, mut rx) = channel(8);
        for i in 0..6 {
            assert!(tx.try_push(Tracked(drops.clone(), i)).is_ok());
        }
        drop(rx.try_pop());
        drop(rx.try_pop());
        assert_eq!(drops.get(), 2);
        drop(tx);
        assert_eq!(drops.get(), 2, "items stay while the consumer lives");
        assert!(rx.is_abandoned());
        drop(rx);
        assert_eq!(drops.get(), 6);
    }

    #[test]
    fn dropping_a_wrapped_ring_drops_remaining_items() {
        let drops = Rc::new(Cell::new(0));
        let (mut tx, mut rx) = channel(4);
        for i in 0..3 {
            assert!(tx.try_push(Tracked(drops.clone(), i)).is_ok());
        }
        assert_eq!(rx.pop_batch(3, drop), 3);
        // These straddle the end of the slot array.
        for i in 0..4 {
            assert!(tx.try_push(Tracked(drops.clone(), i)).is_ok());
        }
        drop(rx);
        assert!(tx.is_abandoned());
        assert_eq!(drops.get(), 3);
        drop(tx);
        assert_eq!(drops.get(), 7);
    }

    #[test]
    fn full_push_returns_the_value_without_dropping_it() {
        let drops = Rc::new(Cell::new(0));
        let (mut tx, _rx) = channel(1);
        assert!(tx.try_push(Tracked(drops.clone(), 1)).is_ok());
        let back = tx.try_push(Tracked(drops.clone(), 2)).err().unwrap();
        assert_eq!(back.1, 2);
        assert_eq!(drops.get(), 0);
    }

    #[test]
    fn pop_batch_is_bounded_by_max_and_by_the_contents() {
        let (mut tx, mut rx) = channel::<u32>(16);
        for i in 0..10 {
            tx.try_push(i).unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(rx.pop_batch(4, |v| seen.push(v)), 4);
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(rx.pop_batch(0, |v| seen.push(v)), 0);
        assert_eq!(rx.pop_batch(100, |v| seen.push(v)), 6);
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(rx.pop_batch(100, |v| seen.push(v)), 0);
        // The freed slots are visible to the producer again.
        for i in 0..16 {
            tx.try_push(i).unwrap();
        }
        assert!(tx.is_full());
        assert_eq!(rx.pop_batch(usize::MAX, drop), 16);
    }

    #[test]
    fn pop_batch_sees_items_pushed_after_the_cache_was_filled() {
        let (mut tx, mut rx) = channel::<u32>(8);
        tx.try_push(0).unwrap();
        assert_eq!(rx.try_pop(), Some(0));
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        let mut seen = Vec::new();
        assert_eq!(rx.pop_batch(8, |v| seen.push(v)), 2);
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn panicking_batch_callback_neither_leaks_nor_double_drops() {
        let drops = Rc::new(Cell::new(0));
        let (mut tx, mut rx) = channel(8);
        for i in 0..5 {
            assert!(tx.try_push(Tracked(drops.clone(), i)).is_ok());
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            rx.pop_batch(5, |v| {
                if v.1 == 2 {
                    panic!("callback fails");
                }
            })
        }));
        assert!(result.is_err());
        // Items 0, 1 and 2 were handed to the callback and dropped there (2 while unwinding).
        assert_eq!(drops.get(), 3);
        // The head was published: the producer sees the three freed slots.
        assert_eq!(tx.len(), 2);
        assert_eq!(rx.try_pop().map(|v| v.1), Some(3));
        drop((tx, rx));
        assert_eq!(drops.get(), 5);
    }

    #[test]
    fn len_and_is_empty_track_both_sides() {
        let (mut tx, mut rx) = channel::<u8>(4);
        assert!(tx.is_empty() && rx.is_empty());
        assert_eq!((tx.len(), rx.len()), (0, 0));
        tx.try_push(1).unwrap();
        tx.try_push(2).unwrap();
        assert_eq!((tx.len(), rx.len()), (2, 2));
        assert!(!rx.is_empty());
        rx.try_pop();
        assert_eq!((tx.len(), rx.len()), (1, 1));
        assert!(!tx.is_full() && !rx.is_full());
    }

    #[test]
    fn zero_sized_items() {
        let (mut tx, mut rx) = channel::<()>(2);
        tx.try_push(()).unwrap();
        tx.try_push(()).unwrap();
        assert_eq!(tx.try_push(()), Err(()));
        assert_eq!(rx.pop_batch(10, |()| {}), 2);
    }

    #[test]
    fn halves_move_to_other_threads() {
        let (mut tx, mut rx) = channel::<Box<u64>>(8);
        let producer = std::thread::spawn(move || {
            for i in 0..10_000u64 {
                let mut v = Box::new(i);
                loop {
                    match tx.try_push(v) {
                        Ok(()) => break,
                        Err(back) => {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                }
            }
        });
        let mut expected = 0;
        while expected < 10_000 {
            match rx.try_pop() {
                Some(v) => {
                    assert_eq!(*v, expected);
                    expected += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
    }
}
