//! Retained index throughput: `cargo bench -p shard --bench retained`.
//!
//! The index holds 10,000 or 100,000 distinct 5-level topics over a vocabulary that widens
//! with depth (8, 16, 64, 64, 16 words), one in ten under `$SYS/`. Each benchmark cycles
//! through 4096 filters built from stored topics, and counts one filter per element
//! (`Throughput::Elements(1)`); the setup prints the mean number of matches and node visits.
//!
//! * `exact/{10k,100k}`: a stored topic as the filter (the literal walk).
//! * `plus/{10k,100k}`: a stored topic with its third level replaced by `+`.
//! * `hash/{10k,100k}`: the first two levels of a stored topic and `/#` (a subtree).
//! * `churn/{10k,100k}`: `remove` then `insert` of one stored topic: a retained PUBLISH that
//!   clears a topic, then one that sets it again, pruning and node reuse included.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shard::retained::{Completion, RetainedIndex};

/// Words per level of a topic.
const WIDTH: [u64; 5] = [8, 16, 64, 64, 16];

/// Number of filters cycled through (a power of two).
const FILTERS: usize = 4096;

/// xorshift64: a deterministic workload without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` distinct 5-level topics.
fn topics(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut levels: Vec<String> = (0..5)
            .map(|d| format!("l{d}w{}", rng.below(WIDTH[d])))
            .collect();
        if rng.below(10) == 0 {
            levels.insert(0, "$SYS".to_owned());
        }
        let t = levels.join("/");
        if seen.insert(t.clone()) {
            out.push(t);
        }
    }
    out
}

/// Builds a filter from the levels of a stored topic.
type Shape = fn(&[&str]) -> String;

/// Filters derived from random stored topics by `shape`.
fn filters(rng: &mut Rng, topics: &[String], shape: Shape) -> Vec<String> {
    (0..FILTERS)
        .map(|_| {
            let t = &topics[rng.below(topics.len() as u64) as usize];
            shape(&t.split('/').collect::<Vec<_>>())
        })
        .collect()
}

fn exact(levels: &[&str]) -> String {
    levels.join("/")
}

fn plus(levels: &[&str]) -> String {
    let mut f = levels.to_vec();
    f[2] = "+";
    f.join("/")
}

fn hash(levels: &[&str]) -> String {
    format!("{}/{}/#", levels[0], levels[1])
}

fn build(topics: &[String]) -> RetainedIndex<u32> {
    let mut index = RetainedIndex::new();
    for (i, t) in topics.iter().enumerate() {
        index.insert(t, i as u32);
    }
    index
}

/// Node visits of a walk: the smallest budget that completes it.
fn visits(index: &RetainedIndex<u32>, filter: &str) -> usize {
    let mut n = 0;
    let mut state = index.for_each_match_limited(filter, 1, |_, _| {});
    while let Completion::Truncated(cursor) = state {
        n += 1;
        state = index
            .resume_match(filter, &cursor, 1, |_, _| {})
            .unwrap_or(Completion::Done);
    }
    n + 1
}

fn matching(c: &mut Criterion) {
    let shapes: [(&str, Shape); 3] = [("exact", exact), ("plus", plus), ("hash", hash)];
    for (n, label) in [(10_000, "10k"), (100_000, "100k")] {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ n as u64);
        let topics = topics(&mut rng, n);
        let index = build(&topics);
        for (name, shape) in shapes {
            let filters = filters(&mut rng, &topics, shape);
            let (mut matched, mut visited) = (0usize, 0usize);
            for f in &filters[..256] {
                index.for_each_match(f, |_, _| matched += 1);
                visited += visits(&index, f);
            }
            eprintln!(
                "{name}/{label}: {} topics, {} nodes, {:.1} matches and {:.1} visits per filter",
                index.len(),
                index.node_count(),
                matched as f64 / 256.0,
                visited as f64 / 256.0,
            );
            let mut group = c.benchmark_group(name);
            group.throughput(Throughput::Elements(1));
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                let mut i = 0;
                b.iter(|| {
                    let f = &filters[i % FILTERS];
                    i += 1;
                    let mut sum = 0u32;
                    index.for_each_match(black_box(f), |_, v| sum = sum.wrapping_add(*v));
                    sum
                });
            });
            group.finish();
        }
    }
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    group.throughput(Throughput::Elements(1));
    for (n, label) in [(10_000, "10k"), (100_000, "100k")] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        let topics = topics(&mut rng, n);
        let mut index = build(&topics);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            let mut i = 0;
            b.iter(|| {
                let k = i % n;
                let t = &topics[k];
                i += 1;
                let v = index.remove(black_box(t));
                index.insert(t, k as u32);
                v
            });
        });
    }
    group.finish();
}

criterion_group!(benches, matching, churn);
criterion_main!(benches);
