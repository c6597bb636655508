//! Running a [`Log`](crate::log::Log)'s jobs on the files of its directory.
//!
//! - [`Files`]: blocking calls, for admin commands, tests, and (through
//!   [`Executor::Blocking`]) a shard on the epoll fallback, where file operations would
//!   otherwise stall the event loop: there they run on the runtime's blocking thread.
//! - [`Executor::Uring`]: monoio's file operations, which on io_uring never block the shard.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::log::{Job, SegmentId};

/// The outcome of a job: for a failed write, its data back (to retry).
pub type Outcome = (io::Result<()>, Option<Vec<u8>>);

/// A shard directory's segment files, with blocking calls.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    open: HashMap<SegmentId, fs::File>,
}

impl Files {
    /// The files of `dir`, created if missing.
    pub fn new(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&mut self, seg: SegmentId) -> io::Result<&fs::File> {
        if !self.open.contains_key(&seg) {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(self.dir.join(seg.file_name()))?;
            self.open.insert(seg, f);
        }
        self.open
            .get(&seg)
            .ok_or_else(|| io::Error::other("segment not open"))
    }

    /// Runs one job.
    pub fn run(&mut self, job: Job) -> Outcome {
        match job {
            Job::Create { seg, header } => {
                // A file of that name can only be the leftover of a crash before its first
                // record: started again.
                let res = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.dir.join(seg.file_name()))
                    .and_then(|f| {
                        f.write_all_at(&header, 0)?;
                        self.open.insert(seg, f);
                        Ok(())
                    });
                (res, None)
            }
            Job::Write { seg, offset, data } => {
                match self.file(seg).and_then(|f| f.write_all_at(&data, offset)) {
                    Ok(()) => (Ok(()), None),
                    Err(e) => (Err(e), Some(data)),
                }
            }
            Job::Sync { seg } => (self.file(seg).and_then(|f| f.sync_data()), None),
            Job::SyncDir => (fs::File::open(&self.dir).and_then(|d| d.sync_all()), None),
            Job::Delete { seg } => {
                self.open.remove(&seg);
                (remove(&self.dir.join(seg.file_name())), None)
            }
        }
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs a shard's log jobs without blocking its event loop.
#[derive(Debug)]
pub enum Executor {
    /// io_uring file operations.
    Uring(UringFiles),
    /// Blocking calls on the runtime's blocking thread (`monoio::spawn_blocking`; the runtime
    /// must have a thread pool attached). `None` only while a job runs.
    Blocking(Option<Files>),
}

impl Executor {
    /// Runs one job.
    pub async fn run(&mut self, job: Job) -> Outcome {
        match self {
            Self::Uring(u) => u.run(job).await,
            Self::Blocking(slot) => {
                let Some(mut files) = slot.take() else {
                    return (Err(io::Error::other("storage executor busy")), None);
                };
                let joined = monoio::spawn_blocking(move || {
                    let out = files.run(job);
                    (files, out)
                })
                .await;
                match joined {
                    Ok((files, out)) => {
                        *slot = Some(files);
                        out
                    }
                    // The closure does not panic; if it did, the files are gone with it.
                    Err(_) => (Err(io::Error::other("storage thread failed")), None),
                }
            }
        }
    }
}

/// A shard directory's segment files, with monoio's (io_uring) file operations.
#[derive(Debug)]
pub struct UringFiles {
    dir: PathBuf,
    open: HashMap<SegmentId, Rc<monoio::fs::File>>,
}

impl UringFiles {
    /// The files of `dir`, which must exist.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
        }
    }

    async fn file(&mut self, seg: SegmentId) -> io::Result<Rc<monoio::fs::File>> {
        if let Some(f) = self.open.get(&seg) {
            return Ok(f.clone());
        }
        let f = Rc::new(
            monoio::fs::OpenOptions::new()
                .write(true)
                .open(self.dir.join(seg.file_name()))
                .await?,
        );
        self.open.insert(seg, f.clone());
        Ok(f)
    }

    /// Runs one job.
    pub async fn run(&mut self, job: Job) -> Outcome {
        match job {
            Job::Create { seg, header } => {
                let opened = monoio::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.dir.join(seg.file_name()))
                    .await;
                let f = match opened {
                    Ok(f) => Rc::new(f),
                    Err(e) => return (Err(e), None),
                };
                let (res, _) = f.write_all_at(header.to_vec(), 0).await;
                if res.is_ok() {
                    self.open.insert(seg, f);
                }
                (res, None)
            }
            Job::Write { seg, offset, data } => {
                let f = match self.file(seg).await {
                    Ok(f) => f,
                    Err(e) => return (Err(e), Some(data)),
                };
                let (res, data) = f.write_all_at(data, offset).await;
                match res {
                    Ok(()) => (Ok(()), None),
                    Err(e) => (Err(e), Some(data)),
                }
            }
            Job::Sync { seg } => match self.file(seg).await {
                Ok(f) => (f.sync_data().await, None),
                Err(e) => (Err(e), None),
            },
            Job::SyncDir => match monoio::fs::File::open(&self.dir).await {
                Ok(d) => (d.sync_all().await, None),
                Err(e) => (Err(e), None),
            },
            Job::Delete { seg } => {
                self.open.remove(&seg);
                let res = match monoio::fs::remove_file(self.dir.join(seg.file_name())).await {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
                (res, None)
            }
        }
    }
}
