//! Bounded SPSC rings between shards, with doorbells.
//!
//! Shards never share a map or take a lock to talk to each other: every ordered pair of
//! endpoints (shards, plus optionally the control plane) gets its own bounded
//! single-producer single-consumer ring, built once before the shards start ([`Mesh`]). Each
//! endpoint owns one [`Doorbell`] that every ring into it shares; the consumer arms it before
//! it sleeps, and a producer pays for a wakeup (a `Waker::wake`, which for a monoio runtime on
//! another thread is an eventfd write) only when the doorbell is armed.
//!
//! The pieces, bottom-up:
//!
//! - [`channel`] builds one ring and returns its two halves, [`Producer`] and [`Consumer`].
//!   Both are `Send` (when `T: Send`), neither is `Sync` nor `Clone`: exactly one thread owns
//!   each end. A push onto a full ring hands the value back (`Err(value)`); nothing is ever
//!   dropped on the floor.
//! - [`Doorbell`] is the sleep/wake protocol: [`Doorbell::wait`] on the consumer side,
//!   [`Doorbell::ring`] on the producer side after a push.
//! - [`Mesh`] wires `n` endpoints into a full mesh and hands out one [`MeshEndpoint`] per
//!   endpoint, to be moved into its thread.
//!
//! # Memory ordering
//!
//! Ring indices are free-running `usize` counters (a slot is `index & mask`). The producer
//! publishes a slot with a `Release` store of `tail` after writing it; the consumer `Acquire`s
//! `tail` before reading the slot, then publishes the freed slot with a `Release` store of
//! `head`, which the producer `Acquire`s before overwriting the slot. Each side keeps a private
//! cached copy of the other side's index and reloads the shared one only when the cache says
//! the ring is full (producer) or empty (consumer), so in steady state a push or a pop touches
//! no cache line that the other core writes.
//!
//! The doorbell is a Dekker-style handshake: the consumer stores `armed = true` then issues a
//! `SeqCst` fence and re-checks its rings; the producer stores `tail` then issues a `SeqCst`
//! fence and loads `armed`. The two fences are totally ordered, so at least one side sees the
//! other's store: either the consumer finds the item on its re-check, or the producer finds
//! the doorbell armed and wakes it. The loom models in `tests/ring_loom.rs` check this.
//!
//! Under `cfg(loom)` the atomics, cells, `Arc` and `AtomicWaker` used here are loom's.
//!
//! # Thread-safety of the halves
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<shard::ring::Producer<u32>>();
//! ```
//!
//! ```compile_fail
//! fn shared<T: Sync>() {}
//! shared::<shard::ring::Consumer<u32>>();
//! ```
//!
//! ```compile_fail
//! fn cloned<T: Clone>() {}
//! cloned::<shard::ring::Producer<u32>>();
//! ```
//!
//! ```
//! fn sent<T: Send>() {}
//! sent::<shard::ring::Producer<String>>();
//! sent::<shard::ring::Consumer<String>>();
//! sent::<shard::ring::MeshEndpoint<String>>();
//! ```

mod doorbell;
mod mesh;
mod spsc;

pub use doorbell::{Doorbell, Wait};
pub use mesh::{Mesh, MeshEndpoint};
pub use spsc::{Consumer, Producer, channel};

/// The concurrency primitives the rings are built on: `std`'s normally, loom's under
/// `cfg(loom)`, so that the loom models exercise the real code.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::{
        cell::UnsafeCell,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
        },
    };

    #[cfg(not(loom))]
    pub(crate) use {
        atomic_waker::AtomicWaker,
        std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence},
        },
    };

    /// loom's `AtomicWaker` behind the `atomic-waker` crate's API.
    #[cfg(loom)]
    #[derive(Debug, Default)]
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    #[cfg(loom)]
    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            Self(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }

    /// `std::cell::UnsafeCell` behind loom's closure-based API (`with`, `with_mut`), so that
    /// the same code compiles against both.
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a shared pointer to the contents.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Calls `f` with a unique pointer to the contents.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// Pads and aligns a value to 128 bytes, so that two of them never share a cache line, nor
/// an adjacent-line prefetch pair (Intel's spatial prefetcher pulls lines in 128-byte pairs).
#[repr(align(128))]
#[derive(Debug, Default)]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}
