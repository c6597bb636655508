//! Per-stream sequence checking: loss, duplicates and reordering.
//!
//! A stream is what one subscriber receives from one publisher: sequence numbers 0, 1, 2, ...
//! in the order sent. The tracker keeps the highest sequence seen and the gaps below it as a
//! short sorted list of ranges, so memory does not grow with the length of the run:
//!
//! - the next expected sequence: in order;
//! - above it: in order, and the sequences skipped become a gap (provisionally lost);
//! - below it, inside a gap: a late (out-of-order) arrival, no longer lost;
//! - below it, outside every gap: a duplicate.
//!
//! At most [`MAX_GAPS`] gaps are kept; when there are more, the oldest is written off as lost
//! and a late arrival into it is then counted as a duplicate (a bound that a run with a
//! thousand simultaneous holes in one stream would reach).

/// Most gaps remembered per stream.
pub(crate) const MAX_GAPS: usize = 1024;

/// The state of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeqTracker {
    /// One past the highest sequence seen (0 before the first message).
    next: u64,
    /// Sorted, disjoint, non-empty half-open ranges of sequences not received.
    gaps: Vec<(u64, u64)>,
    /// Sequences in gaps that were written off.
    written_off: u64,
    /// Distinct sequences received.
    pub(crate) unique: u64,
    /// Sequences received again.
    pub(crate) duplicates: u64,
    /// Sequences received after a higher one.
    pub(crate) out_of_order: u64,
}

/// How one message fitted into its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next one expected.
    InOrder,
    /// Ahead of the next expected: this many were skipped.
    Skipped(u64),
    /// Filled a gap.
    Late,
    /// Seen before.
    Duplicate,
}

impl SeqTracker {
    /// A stream expected to start at sequence 0.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A stream joined midway: the first message received sets the start (for `perf sub`,
    /// which cannot know what was published before it subscribed).
    pub(crate) fn starting_at(first: u64) -> Self {
        Self {
            next: first,
            ..Self::default()
        }
    }

    /// Records one received sequence number.
    pub(crate) fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            let skipped = seq - self.next;
            if skipped > 0 {
                if self.gaps.len() == MAX_GAPS {
                    let (a, b) = self.gaps.remove(0);
                    self.written_off += b - a;
                }
                self.gaps.push((self.next, seq));
            }
            self.next = seq + 1;
            self.unique += 1;
            return if skipped == 0 {
                Arrival::InOrder
            } else {
                Arrival::Skipped(skipped)
            };
        }
        // Below `next`: the last gap starting at or before `seq` may hold it.
        let i = self.gaps.partition_point(|&(a, _)| a <= seq);
        if i > 0 {
            let (a, b) = self.gaps[i - 1];
            if seq < b {
                match (seq == a, seq + 1 == b) {
                    (true, true) => {
                        self.gaps.remove(i - 1);
                    }
                    (true, false) => self.gaps[i - 1].0 = seq + 1,
                    (false, true) => self.gaps[i - 1].1 = seq,
                    (false, false) => {
                        self.gaps[i - 1].1 = seq;
                        if self.gaps.len() == MAX_GAPS {
                            // Splitting would exceed the bound: write off the oldest gap.
                            let (x, y) = self.gaps.remove(0);
                            self.written_off += y - x;
                            self.gaps.insert(i - 1, (seq + 1, b));
                        } else {
                            self.gaps.insert(i, (seq + 1, b));
                        }
                    }
                }
                self.unique += 1;
                self.out_of_order += 1;
                return Arrival::Late;
            }
        }
        self.duplicates += 1;
        Arrival::Duplicate
    }

    /// Sequences below [`Self::next`] never received.
    pub(crate) fn lost_in_gaps(&self) -> u64 {
        self.written_off + self.gaps.iter().map(|(a, b)| b - a).sum::<u64>()
    }

    /// Sequences lost when the publisher is known to have sent `sent` (0..sent): the gaps plus
    /// the tail that never arrived.
    pub(crate) fn lost_of(&self, sent: u64) -> u64 {
        self.lost_in_gaps() + sent.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = SeqTracker::new();
        for s in 0..100 {
            assert_eq!(t.record(s), Arrival::InOrder);
        }
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (100, 0, 0));
        assert_eq!(t.lost_of(100), 0);
        assert_eq!(t.lost_of(103), 3);
    }

    #[test]
    fn gaps_late_and_duplicates() {
        let mut t = SeqTracker::new();
        assert_eq!(t.record(0), Arrival::InOrder);
        assert_eq!(t.record(5), Arrival::Skipped(4)); // 1..5 missing
        assert_eq!(t.lost_in_gaps(), 4);
        assert_eq!(t.record(3), Arrival::Late); // splits into 1..3, 4..5
        assert_eq!(t.record(1), Arrival::Late);
        assert_eq!(t.record(4), Arrival::Late);
        assert_eq!(t.lost_in_gaps(), 1); // 2
        assert_eq!(t.record(3), Arrival::Duplicate);
        assert_eq!(t.record(5), Arrival::Duplicate);
        assert_eq!(t.record(0), Arrival::Duplicate);
        assert_eq!(t.record(2), Arrival::Late);
        assert_eq!(t.lost_in_gaps(), 0);
        assert_eq!((t.unique, t.duplicates, t.out_of_order), (6, 3, 4));
    }

    #[test]
    fn first_message_missing() {
        let mut t = SeqTracker::new();
        assert_eq!(t.record(2), Arrival::Skipped(2));
        assert_eq!(t.lost_of(3), 2);
        let mut j = SeqTracker::starting_at(2);
        assert_eq!(j.record(2), Arrival::InOrder);
        assert_eq!(j.lost_of(3), 0);
    }

    #[test]
    fn bounded_gaps() {
        let mut t = SeqTracker::new();
        // Every other sequence missing: more gaps than the bound.
        let n = (MAX_GAPS as u64 + 10) * 2;
        for s in (1..n).step_by(2) {
            t.record(s);
        }
        assert!(t.gaps.len() <= MAX_GAPS);
        assert_eq!(t.lost_in_gaps(), n / 2);
        assert_eq!(t.unique, n / 2);
        // A late arrival into a remembered gap still counts as late.
        assert_eq!(t.record(n - 2), Arrival::Late);
        assert_eq!(t.lost_in_gaps(), n / 2 - 1);
    }

    /// Against a naive model: a set of everything seen.
    #[test]
    fn matches_naive_model() {
        let mut rng = crate::template::SplitMix::new(7);
        for _ in 0..200 {
            let mut t = SeqTracker::new();
            let mut seen = std::collections::BTreeSet::new();
            let (mut dup, mut late, mut max) = (0u64, 0u64, None::<u64>);
            for _ in 0..300 {
                let s = rng.next_u64() % 200;
                let expect = if seen.contains(&s) {
                    dup += 1;
                    Arrival::Duplicate
                } else if max.is_some_and(|m| s < m) {
                    late += 1;
                    Arrival::Late
                } else {
                    let from = max.map_or(0, |m| m + 1);
                    if s == from {
                        Arrival::InOrder
                    } else {
                        Arrival::Skipped(s - from)
                    }
                };
                seen.insert(s);
                max = max.max(Some(s));
                assert_eq!(t.record(s), expect, "seq {s}");
            }
            let top = max.unwrap_or(0) + 1;
            assert_eq!(t.lost_in_gaps(), top - seen.len() as u64);
            assert_eq!(
                (t.unique, t.duplicates, t.out_of_order),
                (seen.len() as u64, dup, late)
            );
        }
    }
}
