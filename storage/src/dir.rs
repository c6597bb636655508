//! A broker's data directory as a whole: one log directory per shard under
//! `<node.data_dir>/storage/shard-<i>`, and the operator commands on it (`broker data check`,
//! `broker data compact`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rkyv::util::AlignedVec;

use crate::exec::Files;
use crate::image::{Counts, Image};
use crate::lock::DirLock;
use crate::log::{Log, LogOptions, Policy};
use crate::recover::{self, Problem, Report};
use crate::schema::{self, DecodeError};

/// The storage directory of a data directory.
pub fn storage_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// The log directory of shard `shard`.
pub fn shard_dir(data_dir: &Path, shard: u32) -> PathBuf {
    storage_dir(data_dir).join(format!("shard-{shard}"))
}

/// The shard log directories that exist, by shard number.
pub fn shard_dirs(data_dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(storage_dir(data_dir)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        if e.file_type()?.is_dir() {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One shard directory read back.
#[derive(Debug, Clone)]
pub struct ShardState {
    pub shard: u32,
    pub dir: PathBuf,
    pub image: Image,
    pub report: Report,
    /// The directory's files, for [`crate::log::Log::new`].
    pub existing: crate::log::Existing,
    /// Records whose checksum was right but which do not decode, and the first reason.
    pub undecodable: u64,
    pub first_undecodable: Option<DecodeError>,
    /// Bytes of the directory's segment files.
    pub bytes: u64,
}

/// Reads shard directory `dir` into an image. With `repair`, a torn tail is cut off.
pub fn load_shard(shard: u32, dir: &Path, repair: bool) -> io::Result<ShardState> {
    let mut image = Image::default();
    let mut undecodable = 0;
    let mut first_undecodable = None;
    let rec = recover::recover(dir, repair, |_, r| {
        match schema::Record::decode(r.kind, r.version, r.payload) {
            Ok(rec) => image.apply(rec),
            Err(e) => {
                undecodable += 1;
                first_undecodable.get_or_insert(e);
            }
        }
    })?;
    image.finish();
    Ok(ShardState {
        shard,
        dir: dir.to_path_buf(),
        image,
        report: rec.report,
        existing: rec.existing,
        undecodable,
        first_undecodable,
        bytes: dir_bytes(dir),
    })
}

/// Bytes of the segment files in `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What `broker data check` found.
#[derive(Debug, Clone)]
pub struct Check {
    pub shards: Vec<ShardState>,
    /// Everything, merged as a broker would load it.
    pub total: Counts,
}

impl Check {
    /// True when nothing was skipped and every record decoded.
    pub fn is_clean(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.report.is_clean() && s.undecodable == 0)
    }
}

/// The highest counter (lower 48 bits) of any session or message id in `image`: new ids start
/// above it.
pub fn max_id(image: &Image) -> u64 {
    let low = |id: u64| id & ((1 << 48) - 1);
    let sessions = image.sessions.keys().map(|&sid| low(sid));
    let messages = image.messages.keys().map(|&mid| low(mid));
    let retained = image.retained.values().map(|m| low(m.mid));
    let delayed = image
        .delayed
        .values()
        .flat_map(|d| d.message.as_ref().map(|m| low(m.mid)));
    sessions
        .chain(messages)
        .chain(retained)
        .chain(delayed)
        .max()
        .unwrap_or(0)
}

/// Reads every shard directory of `data_dir` without changing anything.
pub fn check(data_dir: &Path) -> io::Result<Check> {
    let mut shards = Vec::new();
    let mut all = Image::default();
    for (shard, dir) in shard_dirs(data_dir)? {
        let s = load_shard(shard, &dir, false)?;
        all.merge(s.image.clone());
        shards.push(s);
    }
    Ok(Check {
        shards,
        total: all.counts(),
    })
}

/// What `broker data compact` did to one shard directory.
#[derive(Debug, Clone)]
pub struct Compacted {
    pub shard: u32,
    pub before: u64,
    pub after: u64,
    pub records: usize,
    pub problems: Vec<Problem>,
}

/// Rewrites each shard directory of `data_dir` as one snapshot of its live state, deleting
/// the segments it replaces. Refuses while a broker holds the directory.
pub fn compact(data_dir: &Path) -> io::Result<Vec<Compacted>> {
    let _lock = DirLock::acquire(data_dir)?;
    let mut out = Vec::new();
    for (shard, dir) in shard_dirs(data_dir)? {
        let s = load_shard(shard, &dir, true)?;
        let existing = s.existing.clone();
        let o = LogOptions {
            policy: Policy::Always,
            ..LogOptions::default()
        };
        let now = Instant::now();
        let mut log = Log::new(shard, o, &existing, now);
        let mut files = Files::new(&dir)?;
        log.begin_snapshot();
        let records = s.image.records();
        let mut buf = AlignedVec::<16>::new();
        for r in &records {
            r.encode(&mut buf);
            log.snapshot_record(r.kind(), schema::V1, &buf);
        }
        log.finish_snapshot();
        while let Some(job) = log.poll_job(now) {
            let (res, data) = files.run(job);
            log.complete(now, res, data);
            if let Some(e) = log.error() {
                return Err(io::Error::other(format!("{}: {e}", dir.display())));
            }
        }
        out.push(Compacted {
            shard,
            before: s.bytes,
            after: dir_bytes(&dir),
            records: records.len(),
            problems: s.report.problems,
        });
    }
    Ok(out)
}
