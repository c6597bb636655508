//! The log against real files: group commit, policies, rotation, snapshots, and recovery from
//! crashes and damage.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use storage::exec::Files;
use storage::log::{Job, Log, LogOptions, Policy, SegmentId, Ticket};
use storage::recover::{Problem, Recovered, Source, recover};

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("storage-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn options(policy: Policy, segment_bytes: u64) -> LogOptions {
    LogOptions {
        policy,
        segment_bytes,
        compact_min_bytes: 8 << 10,
        compact_ratio: 2,
    }
}

/// Runs jobs until the log has none; returns how many writes it took.
fn drive(log: &mut Log, files: &mut Files, now: Instant) -> usize {
    let mut writes = 0;
    while let Some(job) = log.poll_job(now) {
        writes += usize::from(matches!(job, Job::Write { .. }));
        let (res, data) = files.run(job);
        assert!(res.is_ok(), "{res:?}");
        log.complete(now, res, data);
    }
    writes
}

fn open(dir: &Path, o: LogOptions) -> (Log, Files, Vec<(Source, Vec<u8>)>, Recovered) {
    let mut got = Vec::new();
    let rec = recover(dir, true, |src, r| got.push((src, r.payload.to_vec())))
        .unwrap_or_else(|e| panic!("recover: {e}"));
    let files = Files::new(dir).unwrap_or_else(|e| panic!("files: {e}"));
    let log = Log::new(0, o, &rec.existing, Instant::now());
    (log, files, got, rec)
}

fn payload(i: u32) -> Vec<u8> {
    let mut p = i.to_le_bytes().to_vec();
    p.resize(4 + (i as usize * 7) % 300, i as u8);
    p
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn records_come_back_in_order_across_segments() {
    let dir = scratch("order");
    let (mut log, mut files, got, rec) = open(&dir, options(Policy::Always, 4096));
    assert!(got.is_empty() && rec.report.is_clean());
    let now = Instant::now();
    for i in 0..1000 {
        let t = log.append(1, 1, &payload(i));
        if i % 10 == 9 {
            drive(&mut log, &mut files, now);
            assert_eq!(log.durable(), t);
            assert_eq!(log.synced(), t);
        }
    }
    drop((log, files));
    let logs = names(&dir).iter().filter(|n| n.starts_with("log-")).count();
    assert!(logs > 20, "4 KiB segments: {logs}");
    let (_, _, got, rec) = open(&dir, options(Policy::Always, 4096));
    assert!(rec.report.is_clean(), "{:?}", rec.report.problems);
    let want: Vec<(Source, Vec<u8>)> = (0..1000).map(|i| (Source::Log, payload(i))).collect();
    assert_eq!(got, want);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn appends_during_a_write_go_out_together() {
    let dir = scratch("group");
    let (mut log, mut files, _, _) = open(&dir, options(Policy::Always, 64 << 20));
    let now = Instant::now();
    drive(&mut log, &mut files, now);
    let first = log.append(1, 1, b"a");
    let Some(job) = log.poll_job(now) else {
        panic!("a write")
    };
    assert!(matches!(job, Job::Write { .. }));
    // While it is in flight: 100 more, and no job.
    let mut last = first;
    for i in 0..100 {
        last = log.append(1, 1, &payload(i));
        assert!(log.poll_job(now).is_none());
    }
    let (res, data) = files.run(job);
    log.complete(now, res, data);
    assert_eq!(log.written(), first);
    assert_eq!(log.durable(), Ticket(0), "always: not synced yet");
    // The sync of the first write, then one write for the 100.
    assert!(matches!(log.poll_job(now), Some(Job::Sync { .. })));
    log.complete(now, Ok(()), None);
    assert_eq!(log.durable(), first);
    assert_eq!(drive(&mut log, &mut files, now), 1);
    assert_eq!(log.durable(), last);
    assert!(log.is_idle());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn interval_policy_acks_written_and_syncs_on_time() {
    let dir = scratch("interval");
    let every = Duration::from_millis(100);
    let (mut log, mut files, _, _) = open(&dir, options(Policy::Interval(every), 64 << 20));
    let t0 = Instant::now();
    drive(&mut log, &mut files, t0);
    let t = log.append(1, 1, b"x");
    drive(&mut log, &mut files, t0);
    assert_eq!(log.written(), t);
    assert_eq!(log.durable(), t, "written is enough to acknowledge");
    assert!(log.synced() < t);
    let due = log
        .poll_timeout()
        .unwrap_or_else(|| panic!("an fsync is due"));
    assert!(due <= t0 + every + Duration::from_millis(1));
    assert!(log.poll_job(due - Duration::from_millis(1)).is_none());
    drive(&mut log, &mut files, due);
    assert_eq!(log.synced(), t);
    assert_eq!(log.poll_timeout(), None);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn never_policy_does_not_sync_records() {
    let dir = scratch("never");
    let (mut log, mut files, _, _) = open(&dir, options(Policy::Never, 64 << 20));
    let now = Instant::now();
    let t = log.append(1, 1, b"x");
    let mut syncs = 0;
    while let Some(job) = log.poll_job(now) {
        syncs += usize::from(matches!(job, Job::Sync { .. }));
        let (r, d) = files.run(job);
        log.complete(now, r, d);
    }
    assert_eq!(syncs, 0);
    assert_eq!(log.durable(), t);
    let _ = fs::remove_dir_all(&dir);
}

/// A key-value state encoded in records: `[op, key, value…]`, op 1 = put, 2 = delete.
fn put(k: u8, v: &[u8]) -> Vec<u8> {
    let mut p = vec![1, k];
    p.extend_from_slice(v);
    p
}

fn del(k: u8) -> Vec<u8> {
    vec![2, k]
}

fn apply(state: &mut BTreeMap<u8, Vec<u8>>, rec: &[u8]) {
    match rec {
        [1, k, v @ ..] => {
            state.insert(*k, v.to_vec());
        }
        [2, k] => {
            state.remove(k);
        }
        _ => panic!("bad record {rec:?}"),
    }
}

fn recovered_state(got: &[(Source, Vec<u8>)]) -> BTreeMap<u8, Vec<u8>> {
    let mut s = BTreeMap::new();
    for (_, r) in got {
        apply(&mut s, r);
    }
    s
}

#[test]
fn snapshot_bounds_the_disk_and_recovers_the_state() {
    let dir = scratch("snapshot");
    let o = options(Policy::Always, 16 << 10);
    let (mut log, mut files, _, _) = open(&dir, o);
    let now = Instant::now();
    let mut model = BTreeMap::new();
    let mut snapshots = 0;
    for round in 0..40u32 {
        for k in 0..50u8 {
            let rec = if (k as u32 + round) % 7 == 0 {
                del(k)
            } else {
                put(k, &payload(round * 50 + k as u32))
            };
            apply(&mut model, &rec);
            log.append(1, 1, &rec);
        }
        drive(&mut log, &mut files, now);
        if log.wants_snapshot() {
            snapshots += 1;
            log.begin_snapshot();
            // The owner of the state writes it a little at a time, while changes go on.
            let live: Vec<(u8, Vec<u8>)> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
            for (i, (k, v)) in live.iter().enumerate() {
                log.snapshot_record(1, 1, &put(*k, v));
                if i % 10 == 0 {
                    let rec = put(*k, b"changed during the snapshot");
                    apply(&mut model, &rec);
                    log.append(1, 1, &rec);
                    drive(&mut log, &mut files, now);
                }
            }
            log.finish_snapshot();
            drive(&mut log, &mut files, now);
        }
    }
    assert!(snapshots >= 3, "snapshots taken: {snapshots}");
    drop((log, files));
    let listing = names(&dir);
    let bytes: u64 = listing
        .iter()
        .filter_map(|n| fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .sum();
    // 40 rounds × 50 records × ~150 B were appended (~300 KiB); the disk holds the live state
    // (≤ 50 keys) and the log since the last snapshot.
    assert!(bytes < 100 << 10, "{bytes} bytes on disk: {listing:?}");
    let (_, _, got, rec) = open(&dir, o);
    assert!(rec.report.is_clean(), "{:?}", rec.report.problems);
    assert!(rec.report.snapshot.is_some());
    assert!(got.iter().any(|(s, _)| *s == Source::Snapshot));
    assert_eq!(recovered_state(&got), model);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn unfinished_snapshot_is_ignored() {
    let dir = scratch("unfinished");
    let o = options(Policy::Always, 64 << 20);
    let (mut log, mut files, _, _) = open(&dir, o);
    let now = Instant::now();
    let mut model = BTreeMap::new();
    for k in 0..20u8 {
        let rec = put(k, &[k; 10]);
        apply(&mut model, &rec);
        log.append(1, 1, &rec);
    }
    drive(&mut log, &mut files, now);
    log.begin_snapshot();
    for k in 0..5u8 {
        log.snapshot_record(1, 1, &put(k, b"stale snapshot value"));
    }
    drive(&mut log, &mut files, now);
    let rec = del(3);
    apply(&mut model, &rec);
    log.append(1, 1, &rec);
    drive(&mut log, &mut files, now);
    // Crash before the snapshot ends.
    drop((log, files));
    let (_, _, got, rec) = open(&dir, o);
    assert!(
        rec.report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::IncompleteSnapshot { parts: 1, .. })),
        "{:?}",
        rec.report.problems
    );
    assert!(got.iter().all(|(s, _)| *s == Source::Log));
    assert_eq!(recovered_state(&got), model);
    let _ = fs::remove_dir_all(&dir);
}

/// Writes 30 records into one segment; returns the directory and the segment's path.
fn thirty(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let (mut log, mut files, _, _) = open(&dir, options(Policy::Always, 64 << 20));
    for i in 0..30 {
        log.append(1, 1, &payload(i));
    }
    drive(&mut log, &mut files, Instant::now());
    let seg = dir.join(SegmentId::log(1).file_name());
    (dir, seg)
}

#[test]
fn torn_tail_is_cut_and_the_rest_recovered() {
    let (dir, seg) = thirty("torn");
    let len = fs::metadata(&seg).map(|m| m.len()).unwrap_or(0);
    // Cut in the middle of the last record.
    let cut = len - 20;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(cut))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, _, got, rec) = open(&dir, options(Policy::Always, 64 << 20));
    assert_eq!(got.len(), 29);
    assert!(matches!(
        rec.report.problems.as_slice(),
        [Problem::TornTail { len: l, .. }] if *l > 0
    ));
    assert!(rec.report.is_clean(), "a torn tail is not damage");
    // Cut: the next recovery finds nothing to report in that segment.
    assert!(fs::metadata(&seg).map(|m| m.len()).unwrap_or(0) < cut);
    let (_, _, again, rec) = open(&dir, options(Policy::Always, 64 << 20));
    assert_eq!(again.len(), 29);
    assert!(rec.report.problems.is_empty(), "{:?}", rec.report.problems);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn flipped_bytes_skip_one_record_and_say_where() {
    let (dir, seg) = thirty("flipped");
    let mut bytes = fs::read(&seg).unwrap_or_default();
    let mut offsets = Vec::new();
    storage::format::scan(&bytes, |r| offsets.push(r.offset));
    let victim = offsets[10] as usize + 20;
    bytes[victim] ^= 0xFF;
    fs::write(&seg, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let (_, _, got, rec) = open(&dir, options(Policy::Always, 64 << 20));
    let want: Vec<Vec<u8>> = (0..30).filter(|&i| i != 10).map(payload).collect();
    assert_eq!(got.into_iter().map(|(_, p)| p).collect::<Vec<_>>(), want);
    match rec.report.problems.as_slice() {
        [Problem::Skipped { offset, .. }] => assert_eq!(*offset, offsets[10]),
        other => panic!("{other:?}"),
    }
    let text = rec.report.problems[0].to_string();
    assert!(text.contains(&format!("offset {}", offsets[10])), "{text}");
    assert!(!rec.report.is_clean());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn missing_and_unreadable_segments_are_reported() {
    let dir = scratch("missing");
    let (mut log, mut files, _, _) = open(&dir, options(Policy::Always, 2048));
    for i in 0..200 {
        log.append(1, 1, &payload(i));
        drive(&mut log, &mut files, Instant::now());
    }
    drop((log, files));
    let logs: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("log-"))
        .collect();
    assert!(logs.len() > 5);
    fs::remove_file(dir.join(&logs[2])).unwrap_or_else(|e| panic!("{e}"));
    fs::write(
        dir.join(&logs[4]),
        b"not a segment at all, just some bytes here",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, _, got, rec) = open(&dir, options(Policy::Always, 2048));
    let problems = &rec.report.problems;
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::MissingSegment { seq: 3 })),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Unreadable { file, .. } if file.ends_with(&logs[4]))),
        "{problems:?}"
    );
    // Everything else, in order.
    let seqs: Vec<u32> = got
        .iter()
        .map(|(_, p)| u32::from_le_bytes([p[0], p[1], p[2], p[3]]))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(seqs.len() > 100 && seqs.len() < 200, "{}", seqs.len());
    assert_eq!(seqs.last(), Some(&199));
    let _ = fs::remove_dir_all(&dir);
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Del(u8),
    Drive,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..16u8, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..16u8).prop_map(Op::Del),
        3 => Just(Op::Drive),
        1 => Just(Op::Snapshot),
    ]
}

proptest! {
    // 64 cases by default (each fsyncs often); PROPTEST_CASES for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// Random changes, snapshots and writes; then a power loss that keeps an arbitrary part of
    /// what was written but not yet synced. The recovered state is the state after some prefix
    /// of the changes that includes every acknowledged (synced) one.
    #[test]
    fn recovery_keeps_every_acknowledged_change(ops in prop::collection::vec(op(), 1..120), keep in 0.0f64..1.0) {
        let dir = scratch(&format!("prop-{}", rand_suffix(&ops)));
        let o = options(Policy::Always, 1024);
        let (mut log, mut files, _, _) = open(&dir, o);
        let now = Instant::now();
        let mut model = BTreeMap::new();
        // The state after each number of applied changes.
        let mut states = vec![model.clone()];
        let mut tickets = vec![Ticket(0)];
        for op in &ops {
            match op {
                Op::Put(k, v) => {
                    let rec = put(*k, &[*v; 3]);
                    apply(&mut model, &rec);
                    tickets.push(log.append(1, 1, &rec));
                    states.push(model.clone());
                }
                Op::Del(k) => {
                    let rec = del(*k);
                    apply(&mut model, &rec);
                    tickets.push(log.append(1, 1, &rec));
                    states.push(model.clone());
                }
                Op::Drive => { drive(&mut log, &mut files, now); }
                Op::Snapshot => {
                    log.begin_snapshot();
                    for (k, v) in &model {
                        log.snapshot_record(1, 1, &put(*k, v));
                    }
                    log.finish_snapshot();
                    drive(&mut log, &mut files, now);
                }
            }
        }
        // Part of one more write reaches the disk, unsynced: a torn tail.
        let synced = log.synced();
        let acked = tickets.iter().rposition(|t| *t <= synced).unwrap_or(0);
        let pending = log.poll_job(now);
        if let Some(Job::Write { seg, offset, data }) = pending {
            let n = (data.len() as f64 * keep) as usize;
            let (r, _) = files.run(Job::Write { seg, offset, data: data[..n].to_vec() });
            prop_assert!(r.is_ok());
        }
        drop((log, files));
        let (_, _, got, rec) = open(&dir, o);
        prop_assert!(rec.report.is_clean(), "{:?}", rec.report.problems);
        let state = recovered_state(&got);
        let matches: Vec<usize> = (acked..states.len()).filter(|&i| states[i] == state).collect();
        prop_assert!(!matches.is_empty(), "recovered {:?}, acked prefix {} of {}", state, acked, states.len() - 1);
        let _ = fs::remove_dir_all(&dir);
    }
}

fn rand_suffix(ops: &[Op]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{ops:?}").hash(&mut h);
    format!("{:x}", h.finish())
}
