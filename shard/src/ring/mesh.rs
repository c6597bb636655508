//! The full mesh of rings between endpoints (shards and the control plane).

use std::fmt;

use super::{Consumer, Doorbell, Producer, Wait, channel, sync::Arc};

/// A full mesh of rings between `n` endpoints, built once before the shards start.
///
/// Every ordered pair `i → j` with `i != j` gets its own ring of the same capacity, so there
/// are `n * (n - 1)` rings; their slots are allocated here, once. Endpoints are numbered
/// `0..n`; by convention the shards are `0..cores` and an optional control-plane endpoint is
/// the last one. Take the endpoints with [`into_endpoints`](Self::into_endpoints) and move
/// each into its thread.
///
/// Memory: `n * (n - 1) * capacity * size_of::<T>()` bytes of slots. Keep `T` small (box
/// large variants).
pub struct Mesh<T> {
    endpoints: Vec<MeshEndpoint<T>>,
}

impl<T> Mesh<T> {
    /// Builds the mesh of `endpoints` endpoints with rings of `capacity` slots each.
    ///
    /// # Panics
    ///
    /// If `capacity` is zero or not a power of two (see [`channel`]).
    pub fn new(endpoints: usize, capacity: usize) -> Self {
        let doorbells: Vec<Arc<Doorbell>> =
            (0..endpoints).map(|_| Arc::new(Doorbell::new())).collect();
        // `producers[i][j]` sends i → j; `consumers[j][i]` receives it.
        let mut producers: Vec<Vec<Option<Producer<T>>>> = (0..endpoints)
            .map(|_| (0..endpoints).map(|_| None).collect())
            .collect();
        let mut consumers: Vec<Vec<Option<Consumer<T>>>> = (0..endpoints)
            .map(|_| (0..endpoints).map(|_| None).collect())
            .collect();
        for (from, row) in producers.iter_mut().enumerate() {
            for (to, slot) in row.iter_mut().enumerate() {
                if from != to {
                    let (tx, rx) = channel(capacity);
                    *slot = Some(tx);
                    consumers[to][from] = Some(rx);
                }
            }
        }
        let endpoints = producers
            .into_iter()
            .zip(consumers)
            .zip(&doorbells)
            .enumerate()
            .map(|(id, ((producers, consumers), doorbell))| MeshEndpoint {
                id,
                producers,
                consumers,
                doorbell: Arc::clone(doorbell),
                peers: doorbells.clone(),
                cursor: (id + 1) % endpoints,
                unrung: vec![false; endpoints],
                unrung_list: Vec::with_capacity(endpoints),
            })
            .collect();
        Self { endpoints }
    }

    /// The number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The endpoints, indexed by id.
    pub fn into_endpoints(self) -> Vec<MeshEndpoint<T>> {
        self.endpoints
    }
}

impl<T> fmt::Debug for Mesh<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// One endpoint's share of a [`Mesh`]: its outgoing rings, its incoming rings, its doorbell
/// and its peers' doorbells.
///
/// `Send` (when `T: Send`), so it can be moved into the endpoint's thread; all operations
/// take `&mut self` or `&self` on that thread.
pub struct MeshEndpoint<T> {
    id: usize,
    /// Indexed by destination; `None` at `id`.
    producers: Vec<Option<Producer<T>>>,
    /// Indexed by source; `None` at `id`.
    consumers: Vec<Option<Consumer<T>>>,
    /// Rung by every producer into this endpoint.
    doorbell: Arc<Doorbell>,
    /// Every endpoint's doorbell, indexed by id (ours included, unused).
    peers: Vec<Arc<Doorbell>>,
    /// The source `recv_batch` serves first.
    cursor: usize,
    /// Destinations pushed to by `send_deferred` and not rung yet.
    unrung: Vec<bool>,
    unrung_list: Vec<usize>,
}

impl<T> MeshEndpoint<T> {
    /// This endpoint's id: its index in the mesh.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The number of endpoints in the mesh, this one included.
    pub fn endpoint_count(&self) -> usize {
        self.producers.len()
    }

    /// Pushes `msg` onto the ring to `dest` and rings `dest`'s doorbell.
    ///
    /// Hands `msg` back if that ring is full: the caller applies backpressure (stops reading
    /// the socket the message came from) and retries later; nothing is dropped. Also hands it
    /// back if `dest` is this endpoint or out of range, which is a caller bug (it panics in
    /// debug builds).
    #[inline]
    pub fn send(&mut self, dest: usize, msg: T) -> Result<(), T> {
        self.push(dest, msg)?;
        self.peers[dest].ring();
        Ok(())
    }

    /// Like [`send`](Self::send), but defers ringing `dest`'s doorbell to the next
    /// [`flush`](Self::flush), so a burst of messages to one destination costs one ring.
    ///
    /// Call `flush` before this endpoint's task yields or sleeps: until then `dest` may
    /// sleep with the message in its ring.
    #[inline]
    pub fn send_deferred(&mut self, dest: usize, msg: T) -> Result<(), T> {
        self.push(dest, msg)?;
        if !self.unrung[dest] {
            self.unrung[dest] = true;
            self.unrung_list.push(dest);
        }
        Ok(())
    }

    /// Rings the doorbells of the destinations that [`send_deferred`](Self::send_deferred)
    /// pushed to since the last flush.
    pub fn flush(&mut self) {
        for dest in self.unrung_list.drain(..) {
            self.unrung[dest] = false;
            self.peers[dest].ring();
        }
    }

    fn push(&mut self, dest: usize, msg: T) -> Result<(), T> {
        debug_assert!(
            dest != self.id && dest < self.producers.len(),
            "endpoint {} cannot send to {dest}",
            self.id
        );
        match self.producers.get_mut(dest) {
            Some(Some(producer)) => producer.try_push(msg),
            _ => Err(msg),
        }
    }

    /// Pops up to `max` messages from the incoming rings, passing each with its source id to
    /// `f`; returns how many.
    ///
    /// Sources are served round-robin, at most `ceil(max / sources)` messages from one source
    /// per pass, and each call starts one source further than the previous one, so one busy
    /// source cannot starve the others and none is always served last. `max` bounds the work
    /// of one event-loop turn; messages from one source arrive in the order they were sent.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(usize, T)) -> usize {
        let endpoints = self.consumers.len();
        let sources = endpoints.saturating_sub(1);
        if sources == 0 || max == 0 {
            return 0;
        }
        let start = self.cursor;
        self.cursor = self.next_source(start);
        let quantum = max.div_ceil(sources);
        let mut received = 0;
        loop {
            let mut progressed = false;
            let mut source = start;
            for _ in 0..sources {
                if let Some(consumer) = &mut self.consumers[source] {
                    let budget = quantum.min(max - received);
                    let got = consumer.pop_batch(budget, |msg| f(source, msg));
                    received += got;
                    progressed |= got > 0;
                    if received == max {
                        return received;
                    }
                }
                source = self.next_source(source);
            }
            if !progressed {
                return received;
            }
        }
    }

    /// The source after `source` in round-robin order, skipping this endpoint.
    fn next_source(&self, source: usize) -> usize {
        let endpoints = self.consumers.len();
        let next = (source + 1) % endpoints;
        if next == self.id {
            (next + 1) % endpoints
        } else {
            next
        }
    }

    /// Whether any incoming ring holds a message, as of now.
    pub fn has_incoming(&self) -> bool {
        self.consumers.iter().flatten().any(|c| !c.is_empty())
    }

    /// Resolves once an incoming ring holds a message; sleeps on this endpoint's doorbell
    /// until then (see [`Doorbell::wait`]).
    pub fn wait(&self) -> Wait<'_, impl Fn() -> bool + '_> {
        let consumers = &self.consumers;
        self.doorbell
            .wait(move || consumers.iter().flatten().any(|c| !c.is_empty()))
    }

    /// This endpoint's doorbell, for its metrics (wakeups received, sleeps).
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// The ring to `dest`, for metrics and backpressure (`len`, `is_full`); `None` for this
    /// endpoint's own id or an id out of range.
    pub fn producer(&self, dest: usize) -> Option<&Producer<T>> {
        self.producers.get(dest)?.as_ref()
    }

    /// The ring from `source`, for metrics (`len`); `None` for this endpoint's own id or an
    /// id out of range.
    pub fn consumer(&self, source: usize) -> Option<&Consumer<T>> {
        self.consumers.get(source)?.as_ref()
    }

    /// Messages waiting in this endpoint's outgoing rings, as of now, for metrics: the sum of
    /// [`Producer::len`], an upper bound (consumers may be popping concurrently). Reads each
    /// consumer's index once (a load of a line another core writes): not for the hot path.
    pub fn outgoing_len(&self) -> usize {
        self.producers.iter().flatten().map(Producer::len).sum()
    }
}

impl<T> fmt::Debug for MeshEndpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshEndpoint")
            .field("id", &self.id)
            .field("endpoint_count", &self.endpoint_count())
            .field("doorbell", &*self.doorbell)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn every_pair_gets_a_ring() {
        let mesh = Mesh::<u32>::new(4, 8);
        assert_eq!(mesh.endpoint_count(), 4);
        let endpoints = mesh.into_endpoints();
        for (id, e) in endpoints.iter().enumerate() {
            assert_eq!(e.id(), id);
            assert_eq!(e.endpoint_count(), 4);
            for other in 0..4 {
                assert_eq!(e.producer(other).is_some(), other != id);
                assert_eq!(e.consumer(other).is_some(), other != id);
            }
            assert!(e.producer(4).is_none());
            assert_eq!(e.producer((id + 1) % 4).map(Producer::capacity), Some(8));
        }
    }

    #[test]
    fn messages_reach_their_destination_with_their_source() {
        let mut endpoints = Mesh::<(usize, u32)>::new(3, 4).into_endpoints();
        for (from, e) in endpoints.iter_mut().enumerate() {
            for to in 0..3 {
                if from != to {
                    e.send(to, (from, 7)).unwrap();
                }
            }
        }
        for (id, e) in endpoints.iter_mut().enumerate() {
            assert!(e.has_incoming());
            let mut got = Vec::new();
            assert_eq!(e.recv_batch(16, |src, m| got.push((src, m))), 2);
            got.sort_unstable();
            let expected: Vec<_> = (0..3).filter(|&s| s != id).map(|s| (s, (s, 7))).collect();
            assert_eq!(got, expected);
            assert!(!e.has_incoming());
        }
    }

    #[test]
    fn outgoing_len_counts_what_consumers_have_not_taken() {
        let mut endpoints = Mesh::<u32>::new(3, 4).into_endpoints();
        assert_eq!(endpoints[0].outgoing_len(), 0);
        endpoints[0].send(1, 1).unwrap();
        endpoints[0].send(1, 2).unwrap();
        endpoints[0].send(2, 3).unwrap();
        assert_eq!(endpoints[0].outgoing_len(), 3);
        // Incoming rings are not counted.
        assert_eq!(endpoints[1].outgoing_len(), 0);
        assert_eq!(endpoints[1].recv_batch(1, |_, _| {}), 1);
        assert_eq!(endpoints[0].outgoing_len(), 2);
        assert_eq!(endpoints[2].recv_batch(8, |_, _| {}), 1);
        assert_eq!(endpoints[1].recv_batch(8, |_, _| {}), 1);
        assert_eq!(endpoints[0].outgoing_len(), 0);
        // A full ring counts its capacity.
        for i in 0..4 {
            endpoints[0].send(2, i).unwrap();
        }
        assert_eq!(endpoints[0].send(2, 9), Err(9));
        assert_eq!(endpoints[0].outgoing_len(), 4);
    }

    #[test]
    fn full_ring_hands_the_message_back() {
        let mut endpoints = Mesh::<u32>::new(2, 2).into_endpoints();
        endpoints[0].send(1, 1).unwrap();
        endpoints[0].send(1, 2).unwrap();
        assert_eq!(endpoints[0].send(1, 3), Err(3));
        assert!(endpoints[0].producer(1).is_some_and(Producer::is_full));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "cannot send"))]
    fn sending_to_itself_is_refused() {
        let mut endpoints = Mesh::<u32>::new(2, 2).into_endpoints();
        assert_eq!(endpoints[0].send(0, 1), Err(1));
        assert_eq!(endpoints[0].send(9, 1), Err(1));
    }

    #[test]
    fn recv_batch_is_bounded_and_fair() {
        let mut endpoints = Mesh::<u32>::new(4, 64).into_endpoints();
        // Sources 1 and 2 are busy, source 3 sends a little.
        for i in 0..40 {
            endpoints[1].send(0, 100 + i).unwrap();
            endpoints[2].send(0, 200 + i).unwrap();
        }
        for i in 0..2 {
            endpoints[3].send(0, 300 + i).unwrap();
        }
        let receiver = &mut endpoints[0];
        let mut got = Vec::new();
        assert_eq!(receiver.recv_batch(12, |src, m| got.push((src, m))), 12);
        let from = |got: &[(usize, u32)], s| got.iter().filter(|(src, _)| *src == s).count();
        // Every source with data is served within one call.
        assert_eq!(from(&got, 3), 2);
        assert!(from(&got, 1) >= 4 && from(&got, 2) >= 4, "{got:?}");
        // Keep draining: totals are right, per-source order is kept.
        while receiver.recv_batch(12, |src, m| got.push((src, m))) > 0 {}
        assert_eq!(got.len(), 82);
        for s in 1..4 {
            let seq: Vec<u32> = got
                .iter()
                .filter(|(src, _)| *src == s)
                .map(|m| m.1)
                .collect();
            let mut sorted = seq.clone();
            sorted.sort_unstable();
            assert_eq!(seq, sorted);
        }
    }

    #[test]
    fn recv_batch_rotates_the_first_source() {
        let mut endpoints = Mesh::<u32>::new(3, 8).into_endpoints();
        for i in 0..4 {
            endpoints[1].send(0, 10 + i).unwrap();
            endpoints[2].send(0, 20 + i).unwrap();
        }
        let receiver = &mut endpoints[0];
        let mut firsts = Vec::new();
        for _ in 0..4 {
            let mut first = None;
            assert_eq!(
                receiver.recv_batch(2, |src, _| {
                    first.get_or_insert(src);
                }),
                2
            );
            firsts.extend(first);
        }
        assert!(firsts.contains(&1) && firsts.contains(&2), "{firsts:?}");
    }

    #[test]
    fn deferred_sends_ring_on_flush() {
        let mut endpoints = Mesh::<u32>::new(2, 8).into_endpoints();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let (a, b) = endpoints.split_at_mut(1);
        let (sender, receiver) = (&mut a[0], &mut b[0]);
        {
            let mut wait = std::pin::pin!(receiver.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(receiver.doorbell().is_armed());
            sender.send_deferred(1, 1).unwrap();
            sender.send_deferred(1, 2).unwrap();
            assert!(receiver.doorbell().is_armed(), "no ring before flush");
            sender.flush();
            assert!(!receiver.doorbell().is_armed());
            assert_eq!(receiver.doorbell().wakeups(), 1);
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
        sender.flush();
        assert_eq!(receiver.doorbell().wakeups(), 1, "nothing left to ring");
        assert_eq!(receiver.recv_batch(8, |_, _| {}), 2);
    }
}
