//! `TopicTrie::for_each_match` allocates nothing: a counting global allocator (one per test
//! binary, hence this file) watches 10,000 matches on a trie of 10,000 filters.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use shard::trie::TopicTrie;

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
    let width = [4, 16, 64, 64, 8][depth.min(4)];
    format!("w{depth}-{}", rng.below(width))
}

#[test]
fn matching_does_not_allocate() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut trie: TopicTrie<u32, (u8, u32)> = TopicTrie::new();
    let mut k = 0;
    while trie.filter_count() < 10_000 {
        let mut levels = Vec::new();
        let depth = 1 + rng.below(5) as usize;
        for d in 0..depth {
            match rng.below(10) {
                0 | 1 => levels.push("+".to_owned()),
                2 if d > 0 => {
                    levels.push("#".to_owned());
                    break;
                }
                _ => levels.push(word(&mut rng, d)),
            }
        }
        if rng.below(10) == 0 {
            levels.insert(0, "$SYS".to_owned());
        }
        let filter = levels.join("/");
        trie.insert(&filter, k, (1, k));
        trie.insert(&filter, k + 1, (2, k));
        k += 2;
    }
    // A filter and a topic at `mqtt.max_topic_levels`.
    let deep: Vec<String> = (0..128).map(|d| format!("d{d}")).collect();
    trie.insert(&deep.join("/"), u32::MAX, (3, 0));
    trie.insert(&format!("{}/+/#", deep[..100].join("/")), u32::MAX, (3, 1));

    let mut topics: Vec<String> = (0..10_000)
        .map(|i| {
            let mut t: Vec<String> = (0..5).map(|d| word(&mut rng, d)).collect();
            if i % 10 == 0 {
                t.insert(0, "$SYS".to_owned());
            }
            t.join("/")
        })
        .collect();
    topics[1] = deep.join("/");

    let mut total = 0u64;
    let run = |total: &mut u64| {
        for t in &topics {
            trie.for_each_match(t, |k, (n, _)| *total += u64::from(*k & 1) + u64::from(*n));
        }
    };
    // Warm-up.
    run(&mut total);
    let warm = total;
    assert!(warm > 10_000, "the workload must match: {warm}");

    total = 0;
    let calls = allocations(|| run(&mut total));
    assert_eq!(calls, 0, "for_each_match allocated");
    assert_eq!(total, warm, "same matches twice");

    // The counter does see allocations.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 2);
}
