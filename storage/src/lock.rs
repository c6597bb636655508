//! The data directory's lock: one broker per directory.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Holds an exclusive `flock` on `DIR/LOCK` (which records the holder's pid) until dropped or
/// the process ends, however it ends.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
    path: PathBuf,
}

impl DirLock {
    /// Locks `dir` (created if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("LOCK");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another broker{who}: each broker needs its own node.data_dir",
                        dir.display()
                    ),
                ));
            }
            return Err(e);
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("storage-lock-{}", std::process::id()));
        let first = DirLock::acquire(&dir)?;
        // flock locks belong to open file descriptions: a second open in this process
        // conflicts just as another process would.
        let err = DirLock::acquire(&dir).err().map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("in use by another broker"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        let again = DirLock::acquire(&dir)?;
        drop(again);
        fs::remove_dir_all(&dir)
    }
}
