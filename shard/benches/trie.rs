//! Topic trie throughput: `cargo bench -p shard --bench trie`.
//!
//! * `match/{hasher}/{10k,100k}`: `TopicTrie::for_each_match` of one 5-level topic against
//!   10,000 or 100,000 filters (`Throughput::Elements`: topics matched per second). Filters
//!   have 1 to 5 levels over a vocabulary that widens with depth (8, 32, 64, 64, 16 words);
//!   each level is `+` with probability 0.12, and `#` ends the filter with probability 0.08
//!   below the first level. Half of the 4096 topics (cycled) instantiate a random filter, half
//!   are random, so most topics match something; the setup prints the mean number of matches.
//!   `hasher` is `sip` (the default `RandomState`) or `fx` (an FxHash-style multiply-rotate
//!   hasher defined here) to show what the hash function costs.
//! * `churn/sip/{10k,100k}`: `remove` then `insert` of one existing subscription: the cost
//!   of a SUBSCRIBE/UNSUBSCRIBE pair on the index, pruning and node reuse included.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shard::trie::TopicTrie;

/// Words per level of a topic.
const WIDTH: [u64; 5] = [8, 32, 64, 64, 16];

/// Number of topics cycled through by the match benchmarks (a power of two).
const TOPICS: usize = 4096;

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

fn word(rng: &mut Rng, depth: usize) -> String {
    format!("l{depth}w{}", rng.below(WIDTH[depth]))
}

/// `n` distinct filters, each with one subscriber key.
fn filters(rng: &mut Rng, n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let depth = [5, 5, 5, 4, 3, 2, 1][rng.below(7) as usize];
        let mut levels = Vec::with_capacity(depth);
        for d in 0..depth {
            match rng.below(100) {
                0..12 => levels.push("+".to_owned()),
                12..20 if d > 0 => {
                    levels.push("#".to_owned());
                    break;
                }
                _ => levels.push(word(rng, d)),
            }
        }
        let f = levels.join("/");
        if seen.insert(f.clone()) {
            out.push(f);
        }
    }
    out
}

/// 5-level topics: even ones instantiate a filter, odd ones are random.
fn topics(rng: &mut Rng, filters: &[String]) -> Vec<String> {
    (0..TOPICS)
        .map(|i| {
            let mut levels: Vec<String> = (0..5).map(|d| word(rng, d)).collect();
            if i % 2 == 0 {
                let f = &filters[rng.below(filters.len() as u64) as usize];
                for (d, l) in f.split('/').enumerate() {
                    match l {
                        "+" => {}
                        "#" => break,
                        l => levels[d] = l.to_owned(),
                    }
                }
            }
            levels.join("/")
        })
        .collect()
}

/// FxHash's word-at-a-time multiply-rotate: fast, not keyed (not for untrusted input).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Fx = BuildHasherDefault<FxHasher>;

fn build<S: BuildHasher + Clone>(filters: &[String], hasher: S) -> TopicTrie<u32, u32, S> {
    let mut trie = TopicTrie::with_hasher(hasher);
    for (i, f) in filters.iter().enumerate() {
        trie.insert(f, i as u32, i as u32);
    }
    trie
}

fn bench_match<S: BuildHasher + Clone>(
    c: &mut Criterion,
    name: &str,
    hasher: S,
    sizes: &[(usize, &str)],
) {
    let mut group = c.benchmark_group(format!("match/{name}"));
    group.throughput(Throughput::Elements(1));
    for &(n, label) in sizes {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ n as u64);
        let filters = filters(&mut rng, n);
        let topics = topics(&mut rng, &filters);
        let trie = build(&filters, hasher.clone());
        let mut matched = 0usize;
        for t in &topics {
            trie.for_each_match(t, |_, _| matched += 1);
        }
        eprintln!(
            "match/{name}/{label}: {} filters, {} nodes, {:.1} matches per topic",
            trie.filter_count(),
            trie.node_count(),
            matched as f64 / TOPICS as f64
        );
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            let mut i = 0;
            b.iter(|| {
                let t = &topics[i % TOPICS];
                i += 1;
                let mut sum = 0u32;
                trie.for_each_match(black_box(t), |k, _| sum = sum.wrapping_add(*k));
                sum
            });
        });
    }
    group.finish();
}

fn matching(c: &mut Criterion) {
    let sizes = [(10_000, "10k"), (100_000, "100k")];
    bench_match(c, "sip", std::hash::RandomState::new(), &sizes);
    bench_match(c, "fx", Fx::default(), &sizes);
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn/sip");
    group.throughput(Throughput::Elements(1));
    for (n, label) in [(10_000, "10k"), (100_000, "100k")] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        let filters = filters(&mut rng, n);
        let mut trie = build(&filters, std::hash::RandomState::new());
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            let mut i = 0;
            b.iter(|| {
                let k = (i % n) as u32;
                let f = &filters[k as usize];
                i += 1;
                let v = trie.remove(black_box(f), &k);
                trie.insert(f, k, k);
                v
            });
        });
    }
    group.finish();
}

criterion_group!(benches, matching, churn);
criterion_main!(benches);
