//! The log of one shard as a sans-IO state machine: records go in ([`Log::append`]), file
//! operations come out ([`Log::poll_job`]) for a driver to run one at a time and report back
//! ([`Log::complete`]). Which records are durable, and how, follows from the completions:
//! [`Log::written`] (handed to the kernel: survives `kill -9`) and [`Log::synced`] (fsynced:
//! survives power loss).
//!
//! Group commit falls out of running one job at a time: while a write or fsync is in flight,
//! appends gather in a buffer, and the next write takes them all.
//!
//! Snapshots bound the disk to the live state: [`Log::begin_snapshot`] starts a new log
//! segment S; the owner of the state then writes every live record with
//! [`Log::snapshot_record`] (a little per event-loop turn, while
//! [`Log::snapshot_backlog`] is small) and calls [`Log::finish_snapshot`]. Once the snapshot is
//! on disk, the log segments before S and older snapshots are deleted. Recovery loads the newest
//! complete snapshot and replays the log from S: a record changed during the snapshot is in
//! both, and replaying puts and deletes in order gives the same state.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::format::{self, SegmentHeader, SegmentKind};

/// When records reach the disk, and so what an acknowledgement promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// fsync before acknowledging: survives power loss. Writes and fsyncs are grouped.
    Always,
    /// Written to the kernel before acknowledging (survives `kill -9` and crashes of the
    /// process), fsynced every interval (a power loss loses at most the interval).
    Interval(Duration),
    /// Written to the kernel before acknowledging; fsynced only when a snapshot completes.
    Never,
}

/// The position of a record in the log: records up to a ticket are durable together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ticket(pub u64);

/// A segment file of a shard's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    pub kind: SegmentKind,
    /// Log: the segment's sequence number. Snapshot: the first log segment replayed after it
    /// times 2^16 plus the part number.
    pub seq: u64,
}

impl SegmentId {
    /// Log segment `seq`.
    pub const fn log(seq: u64) -> Self {
        Self {
            kind: SegmentKind::Log,
            seq,
        }
    }

    /// Part `part` of the snapshot replayed from log segment `from`.
    pub const fn snapshot(from: u64, part: u16) -> Self {
        Self {
            kind: SegmentKind::Snapshot,
            seq: (from << 16) | part as u64,
        }
    }

    /// The file's name in the shard's directory.
    pub fn file_name(&self) -> String {
        match self.kind {
            SegmentKind::Log => format!("log-{:016x}.seg", self.seq),
            SegmentKind::Snapshot => format!("snap-{:016x}.seg", self.seq),
        }
    }

    /// The segment a file name names.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, hex) = if let Some(h) = name.strip_prefix("log-") {
            (SegmentKind::Log, h)
        } else {
            (SegmentKind::Snapshot, name.strip_prefix("snap-")?)
        };
        let hex = hex.strip_suffix(".seg")?;
        if hex.len() != 16 {
            return None;
        }
        Some(Self {
            kind,
            seq: u64::from_str_radix(hex, 16).ok()?,
        })
    }

    /// For a snapshot part: the first log segment replayed after the snapshot.
    pub fn snapshot_from(&self) -> u64 {
        self.seq >> 16
    }

    /// For a snapshot part: its number.
    pub fn part(&self) -> u16 {
        self.seq as u16
    }
}

/// A file operation for the driver. Jobs run one at a time, in the order given.
#[derive(Debug)]
pub enum Job {
    /// Create the file (it must not exist) and write `header` at its start.
    Create {
        seg: SegmentId,
        header: [u8; format::SEGMENT_HEADER_LEN],
    },
    /// Write all of `data` at `offset`.
    Write {
        seg: SegmentId,
        offset: u64,
        data: Vec<u8>,
    },
    /// fdatasync the file.
    Sync { seg: SegmentId },
    /// fsync the directory (new and deleted files).
    SyncDir,
    /// Delete the file.
    Delete { seg: SegmentId },
}

/// Record kind that ends a snapshot (payload: parts u16, records u64, little-endian). Kinds
/// from 0xFF00 up are the log's own.
pub const KIND_SNAPSHOT_END: u16 = 0xFFFF;

/// Sizes and policy of a log.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub policy: Policy,
    /// A segment (log or snapshot part) is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// [`Log::wants_snapshot`] once the log since the last snapshot holds more than this…
    pub compact_min_bytes: u64,
    /// …and more than this many times the last snapshot.
    pub compact_ratio: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            policy: Policy::Interval(Duration::from_millis(100)),
            segment_bytes: 64 << 20,
            compact_min_bytes: 64 << 20,
            compact_ratio: 2,
        }
    }
}

/// What exists on disk when the log opens (from recovery).
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// Log segments, in order.
    pub logs: Vec<u64>,
    /// Parts of snapshots (complete or not).
    pub snapshots: Vec<SegmentId>,
    /// Bytes of the snapshot recovery loaded (0: none).
    pub snapshot_bytes: u64,
    /// Bytes of log replayed after it.
    pub log_bytes: u64,
}

#[derive(Debug)]
struct Snapshot {
    from: u64,
    part: u16,
    /// Bytes of the current part, queued or written.
    len: u64,
    buf: Vec<u8>,
    records: u64,
    bytes: u64,
    finishing: bool,
    /// The parts written so far (to sync at the end).
    parts: Vec<SegmentId>,
}

/// What a job's completion means.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    Control,
    /// A log write: on success, records up to `upto` are written.
    Write {
        upto: Ticket,
        seg: SegmentId,
        offset: u64,
    },
    /// A log fsync: on success, records up to `upto` are synced.
    Sync {
        upto: Ticket,
    },
    /// A snapshot write.
    SnapshotWrite {
        seg: SegmentId,
        offset: u64,
    },
}

/// One shard's log. See the module documentation.
#[derive(Debug)]
pub struct Log {
    shard: u32,
    o: LogOptions,
    /// The log segment appends go to.
    active: u64,
    /// Bytes of the active segment, written or in flight.
    active_len: u64,
    buf: Vec<u8>,
    appended: Ticket,
    written: Ticket,
    synced: Ticket,
    /// When the last interval fsync completed.
    last_sync: Instant,
    control: VecDeque<(InFlight, Job)>,
    in_flight: Option<(InFlight, Option<Job>)>,
    /// A job that failed, kept to run again at the instant given, and why it failed.
    retry: Option<(Instant, Job, InFlight)>,
    error: Option<String>,
    /// Log segments that exist (active included), oldest first.
    logs: VecDeque<u64>,
    /// Snapshot parts that exist.
    snapshots: Vec<SegmentId>,
    snapshot: Option<Snapshot>,
    /// Bytes of the last complete snapshot and of the log since it started.
    snapshot_bytes: u64,
    log_bytes: u64,
}

/// How long a failed job waits before it runs again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Log {
    /// A log for shard `shard` whose directory holds `existing`; appends go to a new segment
    /// after the existing ones.
    pub fn new(shard: u32, o: LogOptions, existing: &Existing, now: Instant) -> Self {
        let active = existing.logs.iter().max().map_or(1, |s| s + 1);
        let mut log = Self {
            shard,
            o,
            active,
            active_len: format::SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
            appended: Ticket(0),
            written: Ticket(0),
            synced: Ticket(0),
            last_sync: now,
            control: VecDeque::new(),
            in_flight: None,
            retry: None,
            error: None,
            logs: existing.logs.iter().copied().collect(),
            snapshots: existing.snapshots.clone(),
            snapshot: None,
            snapshot_bytes: existing.snapshot_bytes,
            log_bytes: existing.log_bytes,
        };
        log.logs.push_back(active);
        log.push_control(log.create(SegmentId::log(active)));
        log.push_control(Job::SyncDir);
        log
    }

    fn push_control(&mut self, job: Job) {
        self.control.push_back((InFlight::Control, job));
    }

    fn create(&self, seg: SegmentId) -> Job {
        Job::Create {
            seg,
            header: SegmentHeader {
                kind: seg.kind,
                shard: self.shard,
                seq: seg.seq,
            }
            .encode(),
        }
    }

    /// Appends a record; it is durable once [`Log::written`] or [`Log::synced`] reaches the
    /// ticket.
    pub fn append(&mut self, kind: u16, version: u16, payload: &[u8]) -> Ticket {
        format::encode_record(&mut self.buf, kind, version, payload);
        self.appended = Ticket(self.appended.0 + 1);
        self.appended
    }

    /// The last record appended.
    pub fn appended(&self) -> Ticket {
        self.appended
    }

    /// Records up to here are in the kernel (survive `kill -9`).
    pub fn written(&self) -> Ticket {
        self.written
    }

    /// Records up to here are on disk (survive power loss).
    pub fn synced(&self) -> Ticket {
        self.synced
    }

    /// Records up to here may be acknowledged under the log's policy.
    pub fn durable(&self) -> Ticket {
        match self.o.policy {
            Policy::Always => self.synced,
            Policy::Interval(_) | Policy::Never => self.written,
        }
    }

    /// Bytes appended and not yet handed to a write.
    pub fn backlog(&self) -> usize {
        self.buf.len()
    }

    /// The last I/O error, while the job that failed has not succeeded since.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// True while nothing is queued, in flight or waiting for an fsync.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_none()
            && self.retry.is_none()
            && self.control.is_empty()
            && self.buf.is_empty()
            && self.snapshot.as_ref().is_none_or(|s| s.buf.is_empty())
            && (self.o.policy != Policy::Always || self.synced == self.written)
    }

    /// When [`Log::poll_job`] has something to do without new input (an interval fsync, a
    /// retry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some((at, _, _)) = &self.retry {
            return Some(*at);
        }
        match self.o.policy {
            Policy::Interval(every) if self.synced < self.written => Some(self.last_sync + every),
            _ => None,
        }
    }

    /// The next file operation, if any and none is in flight.
    pub fn poll_job(&mut self, now: Instant) -> Option<Job> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some((at, _, _)) = &self.retry {
            if now < *at {
                return None;
            }
            let (_, job, what) = self.retry.take()?;
            return Some(self.start(what, job));
        }
        if let Some((what, job)) = self.control.pop_front() {
            return Some(self.start(what, job));
        }
        let sync_due = self.synced < self.written
            && match self.o.policy {
                Policy::Always => true,
                Policy::Interval(every) => now >= self.last_sync + every,
                Policy::Never => false,
            };
        if sync_due {
            let upto = self.written;
            return Some(self.start(
                InFlight::Sync { upto },
                Job::Sync {
                    seg: SegmentId::log(self.active),
                },
            ));
        }
        if !self.buf.is_empty() {
            if self.active_len > format::SEGMENT_HEADER_LEN as u64
                && self.active_len + self.buf.len() as u64 > self.o.segment_bytes
            {
                self.rotate();
                return self.poll_job(now);
            }
            let (what, job) = self.take_write();
            return Some(self.start(what, job));
        }
        self.poll_snapshot_job(now)
    }

    /// The appended records as a write to the active segment.
    fn take_write(&mut self) -> (InFlight, Job) {
        let data = std::mem::take(&mut self.buf);
        let seg = SegmentId::log(self.active);
        let offset = self.active_len;
        self.active_len += data.len() as u64;
        self.log_bytes += data.len() as u64;
        let what = InFlight::Write {
            upto: self.appended,
            seg,
            offset,
        };
        (what, Job::Write { seg, offset, data })
    }

    fn start(&mut self, what: InFlight, job: Job) -> Job {
        // The job is kept (without its data) to run again if it fails.
        let copy = match &job {
            Job::Create { seg, header } => Some(Job::Create {
                seg: *seg,
                header: *header,
            }),
            Job::Write { .. } => None,
            Job::Sync { seg } => Some(Job::Sync { seg: *seg }),
            Job::SyncDir => Some(Job::SyncDir),
            Job::Delete { seg } => Some(Job::Delete { seg: *seg }),
        };
        self.in_flight = Some((what, copy));
        job
    }

    /// Starts a new log segment: the rest of the appends go there. Unsynced records of the old
    /// one are synced first (unless the policy never syncs).
    fn rotate(&mut self) {
        // Writes queued before this point are in the control queue or done.
        let upto = self
            .control
            .iter()
            .rev()
            .find_map(|(w, _)| match w {
                InFlight::Write { upto, .. } => Some(*upto),
                _ => None,
            })
            .unwrap_or(self.written);
        if self.synced < upto && self.o.policy != Policy::Never {
            let seg = SegmentId::log(self.active);
            self.control
                .push_back((InFlight::Sync { upto }, Job::Sync { seg }));
        }
        self.active += 1;
        self.active_len = format::SEGMENT_HEADER_LEN as u64;
        self.logs.push_back(self.active);
        self.push_control(self.create(SegmentId::log(self.active)));
        if self.o.policy != Policy::Never {
            self.push_control(Job::SyncDir);
        }
    }

    /// Reports the outcome of the job [`Log::poll_job`] returned last. A failed write must be
    /// handed back (`data`) to run again; other jobs are kept by the log.
    pub fn complete(&mut self, now: Instant, result: io::Result<()>, data: Option<Vec<u8>>) {
        let Some((what, copy)) = self.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                self.error = None;
                match what {
                    InFlight::Write { upto, .. } => {
                        self.written = self.written.max(upto);
                        if self.o.policy == Policy::Never {
                            // Nothing will sync it: count it as synced for `is_idle`.
                            self.synced = upto;
                        }
                    }
                    InFlight::Sync { upto } => {
                        self.synced = self.synced.max(upto);
                        self.last_sync = now;
                    }
                    InFlight::Control | InFlight::SnapshotWrite { .. } => {}
                }
            }
            Err(e) => {
                self.error = Some(e.to_string());
                let job = match (what, copy, data) {
                    (
                        InFlight::Write { seg, offset, .. }
                        | InFlight::SnapshotWrite { seg, offset },
                        _,
                        Some(data),
                    ) => Some(Job::Write { seg, offset, data }),
                    (_, Some(job), _) => Some(job),
                    _ => None,
                };
                if let Some(job) = job {
                    self.retry = Some((now + RETRY_AFTER, job, what));
                }
            }
        }
    }

    /// True when the log since the last snapshot is large enough to compact.
    pub fn wants_snapshot(&self) -> bool {
        self.snapshot.is_none()
            && self.log_bytes > self.o.compact_min_bytes
            && self.log_bytes > self.snapshot_bytes.saturating_mul(self.o.compact_ratio)
    }

    /// True while a snapshot is being written.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Starts a snapshot: appends from now on go to a new log segment, and the live state
    /// goes to [`Log::snapshot_record`]. Ignored while one is in progress.
    pub fn begin_snapshot(&mut self) {
        if self.snapshot.is_some() {
            return;
        }
        // Records appended before the snapshot stay in the old segment: their write goes
        // first, then the rotation.
        if !self.buf.is_empty() {
            let (what, job) = self.take_write();
            self.control.push_back((what, job));
        }
        // Always a new segment, even an empty one: each snapshot is named after the segment
        // it replays from, so two never share a name.
        self.rotate();
        let from = self.active;
        self.log_bytes = 0;
        let first = SegmentId::snapshot(from, 0);
        self.push_control(self.create(first));
        self.snapshot = Some(Snapshot {
            from,
            part: 0,
            len: format::SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
            records: 0,
            bytes: 0,
            finishing: false,
            parts: vec![first],
        });
    }

    /// Adds a live record to the snapshot in progress.
    pub fn snapshot_record(&mut self, kind: u16, version: u16, payload: &[u8]) {
        if let Some(s) = &mut self.snapshot {
            format::encode_record(&mut s.buf, kind, version, payload);
            s.records += 1;
        }
    }

    /// Snapshot bytes not yet handed to a write: the state's owner adds records while this is
    /// small.
    pub fn snapshot_backlog(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.buf.len())
    }

    /// Ends the snapshot: once it is on disk, older segments are deleted.
    pub fn finish_snapshot(&mut self) {
        let Some(s) = &mut self.snapshot else {
            return;
        };
        let mut end = Vec::with_capacity(10);
        end.extend_from_slice(&(s.part + 1).to_le_bytes());
        end.extend_from_slice(&s.records.to_le_bytes());
        format::encode_record(&mut s.buf, KIND_SNAPSHOT_END, 1, &end);
        s.finishing = true;
    }

    fn poll_snapshot_job(&mut self, now: Instant) -> Option<Job> {
        let s = self.snapshot.as_mut()?;
        if !s.buf.is_empty() {
            if s.len > format::SEGMENT_HEADER_LEN as u64
                && s.len + s.buf.len() as u64 > self.o.segment_bytes
                && s.part < u16::MAX
            {
                // The next part; the snapshot's end names how many there are.
                s.part += 1;
                s.len = format::SEGMENT_HEADER_LEN as u64;
                let seg = SegmentId::snapshot(s.from, s.part);
                s.parts.push(seg);
                let job = self.create(seg);
                return Some(self.start(InFlight::Control, job));
            }
            let data = std::mem::take(&mut s.buf);
            let offset = s.len;
            s.len += data.len() as u64;
            s.bytes += data.len() as u64;
            let seg = SegmentId::snapshot(s.from, s.part);
            return Some(self.start(
                InFlight::SnapshotWrite { seg, offset },
                Job::Write { seg, offset, data },
            ));
        }
        if !s.finishing {
            return None;
        }
        // Everything is written: sync the parts, then drop what the snapshot replaces.
        let s = self.snapshot.take()?;
        for seg in &s.parts {
            self.push_control(Job::Sync { seg: *seg });
        }
        // The snapshot's files must exist before the old ones go.
        self.push_control(Job::SyncDir);
        while self.logs.front().is_some_and(|&l| l < s.from) {
            if let Some(l) = self.logs.pop_front() {
                self.push_control(Job::Delete {
                    seg: SegmentId::log(l),
                });
            }
        }
        for seg in std::mem::take(&mut self.snapshots) {
            self.push_control(Job::Delete { seg });
        }
        self.push_control(Job::SyncDir);
        self.snapshots = s.parts;
        self.snapshot_bytes = s.bytes;
        self.poll_job(now)
    }
}
