//! The cost of the metrics' latency histogram: `cargo bench -p shard --bench stats`.
//!
//! * `latency/record`: one delivery's latency recorded (the hot-path cost, per delivery).
//! * `latency/snapshot_clone`: the copy a shard publishes every 500 ms.
//! * `latency/prometheus_buckets`: the 16 cumulative buckets a scrape computes, per shard,
//!   from a histogram with values spread over its range.
#![allow(clippy::unwrap_used, clippy::expect_used)] // setup failures should abort the bench

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shard::stats::Latency;

/// Prometheus bounds of `broker_message_delivery_latency_seconds`, in µs.
const BOUNDS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram with `n` values spread log-uniformly from 1 µs to about 30 s.
fn filled(n: u64) -> Latency {
    let mut l = Latency::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let us = 1u64 << (x % 25);
        l.record(Duration::from_micros(us + x % us.max(1)));
    }
    l
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("latency");
    let mut l = Latency::new();
    let mut ns = 1_000u64;
    g.bench_function("record", |b| {
        b.iter(|| {
            // Varying values, as deliveries have.
            ns = (ns * 7 + 13_579) % 50_000_000;
            l.record(black_box(Duration::from_nanos(ns)));
        });
    });
    let full = filled(1_000_000);
    g.bench_function("snapshot_clone", |b| {
        b.iter(|| black_box(Box::new(black_box(&full).clone())));
    });
    let mut out = [0u64; 16];
    g.bench_function("prometheus_buckets", |b| {
        b.iter(|| {
            black_box(&full).cumulative(&BOUNDS, &mut out);
            black_box(out);
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
