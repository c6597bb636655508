//! `RetainedIndex::for_each_match` (and the bounded walk) allocates nothing: a counting global
//! allocator (one per test binary, hence this file) watches 2,000 wildcard and literal filters
//! matched against 20,000 retained topics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use shard::retained::{Completion, RetainedIndex};

/// Counts the calls of the thread that set `COUNTING`, so that the test harness's own threads
/// do not interfere.
struct CountingAlloc;

static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and without `Drop`: reading it never allocates, even from the allocator.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn record() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments to `System` unchanged; counting touches neither
// the memory nor the layout.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record();
        // SAFETY: `ptr` and `layout` come from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns the number of allocator calls it made on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = CALLS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    CALLS.load(Ordering::Relaxed) - before
}

/// xorshift64: deterministic and allocation-free.
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

/// Level `depth` of a topic: a few values near the root, more below.
fn word(rng: &mut Rng, depth: usize) -> String {
    let width = [4, 16, 32, 16, 8][depth.min(4)];
    format!("w{depth}-{}", rng.below(width))
}

#[test]
fn matching_does_not_allocate() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut index: RetainedIndex<(u8, u32)> = RetainedIndex::new();
    let mut k = 0;
    while index.len() < 20_000 {
        let depth = 1 + rng.below(5) as usize;
        let mut levels: Vec<String> = (0..depth).map(|d| word(&mut rng, d)).collect();
        if rng.below(10) == 0 {
            levels.insert(0, "$SYS".to_owned());
        }
        index.insert(&levels.join("/"), (1, k));
        k += 1;
    }
    // A topic at `mqtt.max_topic_levels`.
    let deep: Vec<String> = (0..128).map(|d| format!("d{d}")).collect();
    index.insert(&deep.join("/"), (3, 0));

    // Filters: literal topics, `+` at some levels, a trailing `#` at some depth.
    let mut filters: Vec<String> = (0..2_000)
        .map(|i| {
            let depth = 1 + rng.below(5) as usize;
            let mut f: Vec<String> = (0..depth)
                .map(|d| match rng.below(4) {
                    0 => "+".to_owned(),
                    _ => word(&mut rng, d),
                })
                .collect();
            if i % 3 == 0 {
                f.truncate(1 + rng.below(3) as usize);
                f.push("#".to_owned());
            }
            if i % 10 == 0 {
                f.insert(0, "$SYS".to_owned());
            }
            f.join("/")
        })
        .collect();
    filters[0] = deep.join("/");
    filters[1] = format!("{}/+/#", deep[..100].join("/"));
    filters[2] = "#".to_owned();
    filters[3] = "+/+/+".to_owned();

    let mut total = 0u64;
    let run = |total: &mut u64| {
        for f in &filters {
            index.for_each_match(f, |t, (n, k)| {
                *total += t.len() as u64 + u64::from(*n) + u64::from(*k & 1);
            });
        }
        // The bounded walk, resumed: same work, same matches.
        for f in &filters[..200] {
            let mut sum = 0u64;
            let mut add = |t: &str, v: &(u8, u32)| sum += t.len() as u64 + u64::from(v.1 & 1);
            let mut state = index.for_each_match_limited(f, 64, &mut add);
            while let Completion::Truncated(cursor) = state {
                state = index
                    .resume_match(f, &cursor, 64, &mut add)
                    .unwrap_or(Completion::Done);
            }
            *total += sum;
        }
    };
    // Warm-up.
    run(&mut total);
    let warm = total;
    assert!(warm > 100_000, "the workload must match: {warm}");

    total = 0;
    let calls = allocations(|| run(&mut total));
    assert_eq!(calls, 0, "for_each_match allocated");
    assert_eq!(total, warm, "same matches twice");

    // The counter does see allocations.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 2);
}
