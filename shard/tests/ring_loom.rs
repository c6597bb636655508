//! Loom models of the rings and the doorbell: every interleaving (within loom's bounds) of
//! the atomics, checked against the C++11 memory model, including `SeqCst` fences.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p shard --test ring_loom --release`
#![cfg(loom)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed expectation is the test failing

use loom::{
    future::block_on,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};
use shard::ring::{Doorbell, channel};

/// Runs `f` under loom with a preemption bound (loom's recommended way to keep the larger
/// models tractable; bugs almost always show within two or three preemptions).
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

/// Three values through a ring of two slots: they arrive in order, exactly once, and a push
/// onto the full ring hands its value back.
#[test]
fn push_pop_visibility_capacity_two() {
    model(3, || {
        let (mut tx, mut rx) = channel::<Box<u32>>(2);
        let producer = thread::spawn(move || {
            for i in 0..3 {
                let mut value = Box::new(i);
                loop {
                    match tx.try_push(value) {
                        Ok(()) => break,
                        Err(back) => {
                            assert_eq!(*back, i, "a refused value comes back intact");
                            value = back;
                            thread::yield_now();
                        }
                    }
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            match rx.try_pop() {
                Some(value) => {
                    assert_eq!(*value, next);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(rx.try_pop(), None);
    });
}

/// The same with `pop_batch`, which publishes the freed slots once per batch.
#[test]
fn pop_batch_visibility_capacity_two() {
    model(3, || {
        let (mut tx, mut rx) = channel::<Box<u32>>(2);
        let producer = thread::spawn(move || {
            for i in 0..3 {
                let mut value = Box::new(i);
                while let Err(back) = tx.try_push(value) {
                    value = back;
                    thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            let popped = rx.pop_batch(2, |value| {
                assert_eq!(*value, next);
                next += 1;
            });
            if popped == 0 {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
    });
}

/// A full ring refuses a push until the consumer frees a slot, then accepts it.
#[test]
fn full_ring_hands_the_value_back() {
    model(3, || {
        let (mut tx, mut rx) = channel::<u32>(2);
        tx.try_push(0).unwrap();
        tx.try_push(1).unwrap();
        let consumer = thread::spawn(move || {
            assert_eq!(rx.try_pop(), Some(0));
            rx
        });
        // Either the pop has not been seen yet and the value comes back, or it has.
        match tx.try_push(2) {
            Ok(()) => {}
            Err(back) => assert_eq!(back, 2),
        }
        let mut rx = consumer.join().unwrap();
        assert_eq!(rx.try_pop(), Some(1));
    });
}

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The halves dropped on two threads: the items left in the ring are dropped exactly once,
/// by whichever half goes last.
#[test]
fn items_left_in_the_ring_are_dropped_once() {
    model(3, || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = channel(2);
        assert!(tx.try_push(Tracked(drops.clone())).is_ok());
        assert!(tx.try_push(Tracked(drops.clone())).is_ok());
        let consumer = thread::spawn(move || {
            drop(rx.try_pop());
            drop(rx);
        });
        drop(tx);
        consumer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// No lost wakeup: a push and ring racing with the consumer arming its doorbell ends either
/// with the consumer seeing the item on its re-check or with a wake. A lost wakeup leaves
/// the consumer blocked forever, which loom reports as a deadlock.
#[test]
fn doorbell_no_lost_wakeup() {
    model(3, || {
        let (mut tx, mut rx) = channel::<u32>(2);
        let bell = Arc::new(Doorbell::new());
        let producer_bell = bell.clone();
        let producer = thread::spawn(move || {
            tx.try_push(7).unwrap();
            producer_bell.ring();
        });
        block_on(bell.wait(|| !rx.is_empty()));
        assert_eq!(rx.try_pop(), Some(7));
        producer.join().unwrap();
        assert!(bell.wakeups() <= 1);
    });
}

/// The same with the consumer idle-polling before it arms.
#[test]
fn doorbell_no_lost_wakeup_after_spinning() {
    model(3, || {
        let (mut tx, mut rx) = channel::<u32>(2);
        let bell = Arc::new(Doorbell::new());
        let producer_bell = bell.clone();
        let producer = thread::spawn(move || {
            tx.try_push(7).unwrap();
            producer_bell.ring();
        });
        block_on(bell.wait(|| !rx.is_empty()).spin(1));
        assert_eq!(rx.try_pop(), Some(7));
        producer.join().unwrap();
    });
}

/// A consumer that sleeps repeatedly: two pushes, each followed by a ring, are both
/// received, whatever the interleaving with the consumer's drain/arm cycles.
#[test]
fn doorbell_no_lost_wakeup_across_sleeps() {
    model(2, || {
        let (mut tx, mut rx) = channel::<u32>(2);
        let bell = Arc::new(Doorbell::new());
        let producer_bell = bell.clone();
        let producer = thread::spawn(move || {
            for i in 0..2 {
                tx.try_push(i).unwrap();
                producer_bell.ring();
            }
        });
        let mut next = 0;
        while next < 2 {
            match rx.try_pop() {
                Some(value) => {
                    assert_eq!(value, next);
                    next += 1;
                }
                None => block_on(bell.wait(|| !rx.is_empty())),
            }
        }
        producer.join().unwrap();
    });
}

/// Two producers on two rings into one doorbell (a shard's mesh): exactly one of them may
/// wake a given sleep, and the consumer still gets both messages.
#[test]
fn doorbell_two_producers() {
    model(2, || {
        let (mut tx_a, mut rx_a) = channel::<u32>(2);
        let (mut tx_b, mut rx_b) = channel::<u32>(2);
        let bell = Arc::new(Doorbell::new());
        let bell_a = bell.clone();
        let producer_a = thread::spawn(move || {
            tx_a.try_push(1).unwrap();
            bell_a.ring();
        });
        let bell_b = bell.clone();
        let producer_b = thread::spawn(move || {
            tx_b.try_push(2).unwrap();
            bell_b.ring();
        });
        let mut got = 0;
        while got < 2 {
            let mut popped = false;
            for rx in [&mut rx_a, &mut rx_b] {
                if rx.try_pop().is_some() {
                    got += 1;
                    popped = true;
                }
            }
            if !popped {
                block_on(bell.wait(|| !rx_a.is_empty() || !rx_b.is_empty()));
            }
        }
        producer_a.join().unwrap();
        producer_b.join().unwrap();
        assert!(bell.wakeups() <= 2, "at most one wake per ring");
    });
}
