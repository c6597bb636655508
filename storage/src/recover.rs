//! Recovery of one shard's directory at start: the newest complete snapshot, then the log
//! segments after it, in order. Damage never stops it: a torn tail of the last log segment (a
//! crash mid-write) is cut off; any other damaged stretch, unreadable file or missing segment
//! is skipped and reported with its file and offset, and everything else is recovered.
//!
//! Recovery runs before the shard's event loop starts, with plain blocking reads.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use crate::format::{self, Damage, HeaderError, Record, SegmentHeader, SegmentKind};
use crate::log::{Existing, KIND_SNAPSHOT_END, SegmentId};

/// Where a recovered record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Snapshot,
    Log,
}

/// One thing recovery skipped or repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A damaged stretch in the middle of a segment: its records are lost, the ones after it
    /// were recovered.
    Skipped {
        file: PathBuf,
        offset: u64,
        len: u64,
        why: Damage,
    },
    /// The last log segment ended in a partial record (a write cut short): cut off.
    TornTail {
        file: PathBuf,
        offset: u64,
        len: u64,
    },
    /// A segment other than the last one ends in bytes that are not a record: left as is.
    DamagedTail {
        file: PathBuf,
        offset: u64,
        len: u64,
    },
    /// A file that cannot be used at all.
    Unreadable { file: PathBuf, why: String },
    /// A log segment between the snapshot and the last segment is not there.
    MissingSegment { seq: u64 },
    /// Snapshot parts without their end (a crash while the snapshot was written): ignored.
    IncompleteSnapshot { from: u64, parts: usize },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Skipped {
                file,
                offset,
                len,
                why,
            } => write!(
                f,
                "{}: skipped {len} bytes at offset {offset} ({why}); the records in them are lost",
                file.display()
            ),
            Self::TornTail { file, offset, len } => write!(
                f,
                "{}: cut {len} bytes of a partial record at offset {offset} (a write cut short)",
                file.display()
            ),
            Self::DamagedTail { file, offset, len } => write!(
                f,
                "{}: {len} bytes at offset {offset} to the end are not records; skipped",
                file.display()
            ),
            Self::Unreadable { file, why } => {
                write!(f, "{}: skipped the whole file: {why}", file.display())
            }
            Self::MissingSegment { seq } => write!(
                f,
                "{} is missing: the records it held are lost",
                SegmentId::log(*seq).file_name()
            ),
            Self::IncompleteSnapshot { from, parts } => write!(
                f,
                "ignored an unfinished snapshot ({parts} part(s) of {}…)",
                SegmentId::snapshot(*from, 0).file_name()
            ),
        }
    }
}

/// What recovery found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The snapshot loaded: the log segment replayed from, its parts, its records.
    pub snapshot: Option<(u64, usize, u64)>,
    /// Log segments replayed and their records.
    pub log_segments: usize,
    pub log_records: u64,
    /// Records handed to the caller (snapshot and log).
    pub records: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when nothing was skipped (a torn tail, the normal trace of a crash, is not
    /// damage).
    pub fn is_clean(&self) -> bool {
        self.problems
            .iter()
            .all(|p| matches!(p, Problem::TornTail { .. }))
    }
}

/// The result of [`recover`]: what is on disk (for [`crate::log::Log::new`]) and the report.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub existing: Existing,
    pub report: Report,
}

/// Reads shard directory `dir` (missing: empty) and calls `apply` with every record to
/// replay, in order: the snapshot's records, then the log's. Only an error listing the
/// directory fails; damage is reported. With `repair`, a torn tail is cut off the last log
/// segment (as a broker does at start); without it nothing is changed (`broker data check`).
pub fn recover(
    dir: &Path,
    repair: bool,
    mut apply: impl FnMut(Source, Record<'_>),
) -> io::Result<Recovered> {
    let mut out = Recovered::default();
    let mut logs = Vec::new();
    let mut snaps: BTreeMap<u64, Vec<SegmentId>> = BTreeMap::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                let Some(seg) = e.file_name().to_str().and_then(SegmentId::parse) else {
                    continue;
                };
                match seg.kind {
                    SegmentKind::Log => logs.push(seg.seq),
                    SegmentKind::Snapshot => {
                        snaps.entry(seg.snapshot_from()).or_default().push(seg);
                        out.existing.snapshots.push(seg);
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    }
    logs.sort_unstable();
    out.existing.logs = logs.clone();
    let mut buf = AlignedVec::<16>::new();

    // The newest complete snapshot: parts 0..n all there, the last one ending with an end
    // record that counts n parts.
    let mut chosen = None;
    for (&from, parts) in snaps.iter_mut().rev() {
        parts.sort_unstable();
        let contiguous = parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.part() as usize == i);
        let complete = contiguous
            && parts.last().is_some_and(|last| {
                read(dir, *last, &mut buf).is_ok()
                    && end_parts(&buf).is_some_and(|n| n as usize == parts.len())
            });
        if complete {
            chosen = Some((from, parts.clone()));
            break;
        }
        out.report.problems.push(Problem::IncompleteSnapshot {
            from,
            parts: parts.len(),
        });
    }
    let mut replay_from = logs.first().copied().unwrap_or(1);
    if let Some((from, parts)) = chosen {
        let mut records = 0;
        for seg in &parts {
            let file = dir.join(seg.file_name());
            if let Err(why) = read(dir, *seg, &mut buf) {
                out.report.problems.push(Problem::Unreadable { file, why });
                continue;
            }
            let r = format::scan(&buf, |rec| {
                if rec.kind != KIND_SNAPSHOT_END {
                    records += 1;
                    apply(Source::Snapshot, rec);
                }
            });
            out.existing.snapshot_bytes += r.valid_end;
            note(&mut out.report, file, &r, false, buf.len() as u64);
        }
        out.report.records += records;
        out.report.snapshot = Some((from, parts.len(), records));
        replay_from = from;
    } else if replay_from > 1 {
        // No snapshot, and the log does not start at the beginning.
        for seq in 1..replay_from.min(1 + 1024) {
            out.report.problems.push(Problem::MissingSegment { seq });
        }
    }

    let replay: Vec<u64> = logs.iter().copied().filter(|&s| s >= replay_from).collect();
    let mut expect = replay_from;
    for (i, &seq) in replay.iter().enumerate() {
        for missing in expect..seq {
            out.report
                .problems
                .push(Problem::MissingSegment { seq: missing });
        }
        expect = seq + 1;
        let seg = SegmentId::log(seq);
        let file = dir.join(seg.file_name());
        if let Err(why) = read(dir, seg, &mut buf) {
            out.report.problems.push(Problem::Unreadable { file, why });
            continue;
        }
        let mut records = 0;
        let r = format::scan(&buf, |rec| {
            records += 1;
            apply(Source::Log, rec);
        });
        out.report.log_segments += 1;
        out.report.log_records += records;
        out.report.records += records;
        out.existing.log_bytes += r.valid_end;
        let last = i + 1 == replay.len();
        note(&mut out.report, file.clone(), &r, last, buf.len() as u64);
        if last && repair && r.torn_tail.is_some() {
            fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|f| f.set_len(r.valid_end).and_then(|()| f.sync_all()))?;
        }
    }
    Ok(out)
}

/// Reads a whole segment into `buf`, its header checked.
fn read(dir: &Path, seg: SegmentId, buf: &mut AlignedVec<16>) -> Result<(), String> {
    buf.clear();
    let mut f = fs::File::open(dir.join(seg.file_name())).map_err(|e| e.to_string())?;
    buf.extend_from_reader(&mut f).map_err(|e| e.to_string())?;
    let h = SegmentHeader::decode(buf).map_err(|e: HeaderError| e.to_string())?;
    if h.kind != seg.kind || h.seq != seg.seq {
        return Err(format!(
            "its header names {:?} segment {:x}, not this file",
            h.kind, h.seq
        ));
    }
    Ok(())
}

/// The part count in the end record of a snapshot part, if it has one.
fn end_parts(seg: &[u8]) -> Option<u16> {
    let mut parts = None;
    format::scan(seg, |r| {
        if r.kind == KIND_SNAPSHOT_END && r.payload.len() >= 2 {
            parts = Some(u16::from_le_bytes([r.payload[0], r.payload[1]]));
        }
    });
    parts
}

fn note(report: &mut Report, file: PathBuf, r: &format::ScanReport, last: bool, total: u64) {
    for s in &r.skipped {
        report.problems.push(Problem::Skipped {
            file: file.clone(),
            offset: s.offset,
            len: s.len,
            why: s.why,
        });
    }
    if let Some((offset, _)) = r.torn_tail {
        report.problems.push(if last {
            Problem::TornTail {
                file,
                offset,
                len: total - offset,
            }
        } else {
            Problem::DamagedTail {
                file,
                offset,
                len: total - offset,
            }
        });
    }
}
