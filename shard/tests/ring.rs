//! Cross-thread tests of the rings on real monoio runtimes: one runtime per thread, as in
//! the broker, with the consumer sleeping on its doorbell and the producer applying
//! backpressure when the ring is full. Run under both drivers: the default one (io_uring,
//! falling back to epoll where io_uring is unavailable) and the epoll driver forced.
#![cfg(not(loom))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test setup failures should abort

use std::{
    future::{Future, poll_fn},
    sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc},
    task::Poll,
    thread,
    time::Duration,
};

use shard::ring::{Doorbell, Mesh, MeshEndpoint, channel};

/// Yields before a consumer arms its doorbell (see `Wait::spin`).
const SPIN: u32 = 16;

/// How long a test may take before it is declared hung (a lost wakeup sleeps forever).
const WATCHDOG: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug)]
enum Driver {
    /// `FusionDriver`: io_uring, or epoll where io_uring is unavailable.
    Fusion,
    /// `LegacyDriver`: epoll, always.
    Legacy,
}

/// Runs `fut` to completion on a fresh monoio runtime of the given driver, with timers.
fn block_on<F: Future>(driver: Driver, fut: F) -> F::Output {
    match driver {
        Driver::Fusion => {
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .build()
                .expect("build a fusion runtime");
            if matches!(rt, monoio::FusionRuntime::Legacy(_)) {
                eprintln!("io_uring unavailable: the fusion runtime fell back to epoll");
            }
            rt.block_on(fut)
        }
        Driver::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("build a legacy runtime")
            .block_on(fut),
    }
}

/// Yields to the runtime once (monoio 0.2 has no public `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// A closure to run on its own thread.
type Job<R> = Box<dyn FnOnce() -> R + Send>;

/// Runs each closure on its own thread and waits for all, failing the test if they do not
/// finish within [`WATCHDOG`] (the threads are then left behind; the test process fails).
fn run_threads<R: Send + 'static>(jobs: Vec<Job<R>>) -> Vec<R> {
    let (done_tx, done_rx) = mpsc::channel();
    let count = jobs.len();
    for (index, job) in jobs.into_iter().enumerate() {
        let done_tx = done_tx.clone();
        thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                let result = job();
                let _ = done_tx.send((index, result));
            })
            .unwrap();
    }
    drop(done_tx);
    let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
    for _ in 0..count {
        match done_rx.recv_timeout(WATCHDOG) {
            Ok((index, result)) => results[index] = Some(result),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: a wakeup was lost?"),
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a thread panicked"),
        }
    }
    results.into_iter().map(Option::unwrap).collect()
}

/// What each side of [`one_million_through_a_small_ring`] reports.
#[derive(Debug)]
enum Report {
    Producer { full: u64 },
    Consumer { received: u64 },
}

/// When the producer rings the doorbell.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ringing {
    /// After every successful push.
    PerMessage,
    /// Once per burst: after `BURST` pushes, and before yielding on a full ring (what a shard
    /// does at the end of an event-loop turn).
    PerBurst,
}

const BURST: u64 = 32;

/// 1,000,000 messages through a ring of 64 slots between two runtimes on two threads: the
/// producer retries (yielding) when the ring is full, the consumer drains in batches and
/// sleeps on the doorbell when the ring is empty.
fn one_million_through_a_small_ring(driver: Driver, ringing: Ringing, spin: u32) -> (u64, u64) {
    const MESSAGES: u64 = 1_000_000;
    let (mut tx, mut rx) = channel::<u64>(64);
    let bell = Arc::new(Doorbell::new());

    let producer_bell = Arc::clone(&bell);
    let producer = move || {
        block_on(driver, async move {
            let mut full = 0;
            for i in 0..MESSAGES {
                let mut msg = i;
                loop {
                    match tx.try_push(msg) {
                        Ok(()) => {
                            if ringing == Ringing::PerMessage || (i + 1) % BURST == 0 {
                                producer_bell.ring();
                            }
                            break;
                        }
                        Err(back) => {
                            msg = back;
                            full += 1;
                            // The consumer may be asleep on unrung messages: ring before
                            // yielding, or it never drains the ring.
                            producer_bell.ring();
                            yield_now().await;
                        }
                    }
                }
            }
            producer_bell.ring();
            Report::Producer { full }
        })
    };
    let consumer_bell = Arc::clone(&bell);
    let consumer = move || {
        block_on(driver, async move {
            let mut expected = 0;
            while expected < MESSAGES {
                let popped = rx.pop_batch(256, |msg| {
                    assert_eq!(msg, expected, "out of order");
                    expected += 1;
                });
                if popped == 0 {
                    consumer_bell.wait(|| !rx.is_empty()).spin(spin).await;
                }
            }
            assert_eq!(rx.try_pop(), None, "more than sent");
            Report::Consumer { received: expected }
        })
    };

    let reports = run_threads(vec![Box::new(producer), Box::new(consumer)]);
    let [Report::Producer { full }, Report::Consumer { received }] = reports[..] else {
        panic!("unexpected reports {reports:?}");
    };
    let (wakeups, sleeps) = (bell.wakeups(), bell.sleeps());
    eprintln!(
        "{driver:?}, {ringing:?}, spin {spin}: {received} messages, {wakeups} wakeups, \
         {sleeps} sleeps, {full} pushes onto a full ring"
    );
    assert_eq!(received, MESSAGES);
    // A consumer that spins before sleeping may never need to sleep when the producer keeps
    // the ring busy (it happens on a loaded machine); one that does not spin must.
    assert!(
        wakeups > 0 || spin > 0,
        "the consumer never slept on the doorbell"
    );
    assert!(!bell.is_armed());
    (MESSAGES, wakeups)
}

#[test]
fn one_million_messages_fusion_driver() {
    let _serial = serial();
    let (messages, wakeups) =
        one_million_through_a_small_ring(Driver::Fusion, Ringing::PerBurst, 0);
    assert!(
        wakeups * 10 < messages,
        "{wakeups} wakeups for {messages} messages: woken per message"
    );
}

#[test]
fn one_million_messages_legacy_epoll_driver() {
    let _serial = serial();
    let (messages, wakeups) =
        one_million_through_a_small_ring(Driver::Legacy, Ringing::PerBurst, 0);
    assert!(
        wakeups * 10 < messages,
        "{wakeups} wakeups for {messages} messages: woken per message"
    );
}

/// Ringing after every push is correct too, and never wakes more than once per push. How
/// far below the message count the wakeups stay then depends on the machine: where a
/// cross-core wake costs the producer more than the consumer takes to drain and re-arm, the
/// two fall into lockstep (one wake per message or two), which `Wait::spin` and ringing per
/// burst avoid.
#[test]
fn one_million_messages_ringing_per_message() {
    let _serial = serial();
    let (messages, wakeups) =
        one_million_through_a_small_ring(Driver::Fusion, Ringing::PerMessage, SPIN);
    assert!(wakeups <= messages, "more than one wake per push");
}

/// The heavy tests take the machine's cores: run them one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every endpoint of a 3-endpoint mesh sends `PER_PAIR` messages to each of the others while
/// receiving theirs, each on its own runtime and thread. Even endpoints ring per message
/// (`send`), odd ones once per burst (`send_deferred` + `flush`).
fn full_mesh(driver: Driver) {
    const ENDPOINTS: usize = 3;
    const PER_PAIR: u64 = 200_000;
    let endpoints = Mesh::<(usize, u64)>::new(ENDPOINTS, 32).into_endpoints();

    let jobs: Vec<Job<(usize, u64, u64)>> = endpoints
        .into_iter()
        .map(|endpoint| {
            let job = move || block_on(driver, run_endpoint(endpoint, PER_PAIR));
            Box::new(job) as Job<_>
        })
        .collect();
    let results = run_threads(jobs);
    let mut total_wakeups = 0;
    for (id, received, wakeups) in results {
        eprintln!("{driver:?}: endpoint {id}: {received} received, {wakeups} wakeups");
        assert_eq!(received, PER_PAIR * (ENDPOINTS as u64 - 1));
        total_wakeups += wakeups;
    }
    // Ringing per message may wake per message or two on a loaded machine (see
    // `one_million_messages_ringing_per_message`); never more.
    let messages = PER_PAIR * (ENDPOINTS * (ENDPOINTS - 1)) as u64;
    assert!(total_wakeups <= messages, "more than one wake per push");
}

/// One endpoint's event loop: send a bounded burst, flush, receive a bounded batch; sleep on
/// the doorbell once everything is sent and nothing is incoming, yield when only blocked by
/// full rings. Returns (id, messages received, wakeups received).
async fn run_endpoint(
    mut endpoint: MeshEndpoint<(usize, u64)>,
    per_pair: u64,
) -> (usize, u64, u64) {
    let id = endpoint.id();
    let n = endpoint.endpoint_count();
    let deferred = id % 2 == 1;
    let mut next_seq = vec![0u64; n];
    next_seq[id] = per_pair;
    let mut expected = vec![0u64; n];
    let mut received = 0u64;
    let to_receive = per_pair * (n as u64 - 1);
    loop {
        let mut blocked = false;
        for dest in (0..n).filter(|&d| d != id) {
            for _ in 0..16 {
                let seq = next_seq[dest];
                if seq == per_pair {
                    break;
                }
                let sent = if deferred {
                    endpoint.send_deferred(dest, (id, seq))
                } else {
                    endpoint.send(dest, (id, seq))
                };
                match sent {
                    Ok(()) => next_seq[dest] += 1,
                    Err(back) => {
                        assert_eq!(back, (id, seq), "a refused message comes back intact");
                        blocked = true;
                        break;
                    }
                }
            }
        }
        endpoint.flush();
        let got = endpoint.recv_batch(64, |source, (from, seq)| {
            assert_eq!(source, from, "message from the wrong ring");
            assert_eq!(seq, expected[source], "out of order from {source}");
            expected[source] += 1;
            received += 1;
        });
        let sending_done = next_seq.iter().all(|&s| s == per_pair);
        if sending_done && received == to_receive {
            break;
        }
        if got == 0 {
            if sending_done {
                endpoint.wait().spin(SPIN).await;
            } else if blocked {
                yield_now().await;
            }
        }
    }
    assert!(!endpoint.has_incoming(), "more than sent");
    (id, received, endpoint.doorbell().wakeups())
}

#[test]
fn full_mesh_of_three_fusion_driver() {
    let _serial = serial();
    full_mesh(Driver::Fusion);
}

#[test]
fn full_mesh_of_three_legacy_epoll_driver() {
    let _serial = serial();
    full_mesh(Driver::Legacy);
}

/// A runtime-agnostic consumer: a plain thread parked on a `std` waker (as a control plane
/// outside monoio would be) still gets every message.
#[test]
fn doorbell_wakes_a_plain_thread() {
    let _serial = serial();
    const MESSAGES: u64 = 100_000;
    let (mut tx, mut rx) = channel::<u64>(16);
    let bell = Arc::new(Doorbell::new());
    let consumer_bell = Arc::clone(&bell);
    let jobs: Vec<Job<()>> = vec![
        Box::new(move || {
            for i in 0..MESSAGES {
                let mut msg = i;
                while let Err(back) = tx.try_push(msg) {
                    msg = back;
                    thread::yield_now();
                }
                bell.ring();
            }
        }),
        Box::new(move || {
            let waker = std::task::Waker::from(Arc::new(ThreadWaker(thread::current())));
            let mut cx = std::task::Context::from_waker(&waker);
            let mut expected = 0;
            while expected < MESSAGES {
                let popped = rx.pop_batch(64, |msg| {
                    assert_eq!(msg, expected);
                    expected += 1;
                });
                if popped == 0
                    && consumer_bell
                        .poll_wait(&mut cx, || !rx.is_empty())
                        .is_pending()
                {
                    thread::park();
                }
            }
        }),
    ];
    run_threads(jobs);
}

/// Unparks a thread.
struct ThreadWaker(thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}
