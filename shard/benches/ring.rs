//! Ring throughput: `cargo bench -p shard --bench ring`.
//!
//! Messages are 32 bytes (`[u64; 4]`), the size of a small ring message. Throughput is
//! criterion's `Elements`: messages per second.
//!
//! * `cross_thread/*`: a producer on the bench thread and a consumer on another thread, both
//!   spinning (no doorbell sleeps): the raw cost of moving a message between cores.
//!   `try_pop` pops one at a time, `pop_batch` drains up to 256 per call (one store of the
//!   head per batch), `push+ring` also rings a doorbell after every push, which the consumer
//!   never arms: the cost of the doorbell's fence on the producer's fast path.
//! * `same_thread/*`: push then pop on one thread: the instructions alone, no cache-line
//!   transfer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // setup failures should abort the bench

use std::{
    hint::black_box,
    thread,
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shard::ring::{Doorbell, channel};

/// A 32-byte message.
type Msg = [u64; 4];

#[derive(Clone, Copy)]
enum Pop {
    One,
    Batch,
}

/// Moves `count` messages from this thread to a consumer thread through a ring of
/// `capacity` slots; returns the time until the consumer has seen the last one.
fn cross_thread(count: u64, capacity: usize, pop: Pop, ring: bool) -> Duration {
    let (mut tx, mut rx) = channel::<Msg>(capacity);
    let bell = Doorbell::new();
    let consumer = thread::spawn(move || {
        let mut seen = 0u64;
        let mut sum = 0u64;
        while seen < count {
            match pop {
                Pop::One => match rx.try_pop() {
                    Some(msg) => {
                        sum = sum.wrapping_add(msg[0]);
                        seen += 1;
                    }
                    None => std::hint::spin_loop(),
                },
                Pop::Batch => {
                    let popped = rx.pop_batch(256, |msg| sum = sum.wrapping_add(msg[0]));
                    if popped == 0 {
                        std::hint::spin_loop();
                    }
                    seen += popped as u64;
                }
            }
        }
        black_box(sum);
    });
    let start = Instant::now();
    for i in 0..count {
        let mut msg = [i, i ^ 1, i ^ 2, i ^ 3];
        loop {
            match tx.try_push(msg) {
                Ok(()) => break,
                Err(back) => {
                    msg = back;
                    std::hint::spin_loop();
                }
            }
        }
        if ring {
            black_box(bell.ring());
        }
    }
    consumer.join().unwrap();
    start.elapsed()
}

fn bench_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for capacity in [64, 1024] {
        group.bench_function(format!("try_pop/cap{capacity}"), |b| {
            b.iter_custom(|iters| cross_thread(iters, capacity, Pop::One, false));
        });
        group.bench_function(format!("pop_batch/cap{capacity}"), |b| {
            b.iter_custom(|iters| cross_thread(iters, capacity, Pop::Batch, false));
        });
        group.bench_function(format!("push+ring/pop_batch/cap{capacity}"), |b| {
            b.iter_custom(|iters| cross_thread(iters, capacity, Pop::Batch, true));
        });
    }
    group.finish();
}

fn bench_same_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("same_thread");
    group.throughput(Throughput::Elements(1));
    let (mut tx, mut rx) = channel::<Msg>(64);
    group.bench_function("push_pop", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            tx.try_push(black_box([i; 4])).unwrap();
            black_box(rx.try_pop());
        });
    });
    group.finish();
}

criterion_group!(benches, bench_cross_thread, bench_same_thread);
criterion_main!(benches);
