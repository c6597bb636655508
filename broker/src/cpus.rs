//! How many CPUs the broker may use.

use std::num::NonZeroUsize;

/// The CPUs this process may run on: its affinity mask (`sched_getaffinity`), which
/// `taskset` and container CPU sets restrict. Falls back to
/// [`std::thread::available_parallelism`] where the mask cannot be read. At least 1.
///
/// This is the most shards `broker run --cores` accepts: one pinned thread per CPU.
pub fn allowed() -> usize {
    affinity_count()
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(NonZeroUsize::get)
        })
        .unwrap_or(1)
        .max(1)
}

/// The default shard count: [`std::thread::available_parallelism`], which also honours a
/// cgroup CPU quota, and never more than [`allowed`].
pub fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .clamp(1, allowed())
}

/// The ids of the CPUs in this process's affinity mask, ascending: the CPUs to pin shards
/// to, shard `i` on the `i`-th. `None` where the mask cannot be read.
pub fn affinity() -> Option<Vec<usize>> {
    let set = affinity_mask()?;
    let ids = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `set` is an initialised `cpu_set_t` and `cpu` is below `CPU_SETSIZE`, the
        // number of CPUs it holds.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect::<Vec<_>>();
    (!ids.is_empty()).then_some(ids)
}

/// The ids of the CPUs in this process's affinity mask: unknown on this system.
#[cfg(not(target_os = "linux"))]
pub fn affinity() -> Option<Vec<usize>> {
    None
}

fn affinity_count() -> Option<usize> {
    affinity().map(|ids| ids.len())
}

#[cfg(target_os = "linux")]
fn affinity_mask() -> Option<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is a plain bit array; all-zero bytes are a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread, which inherited the process's mask; the kernel
    // writes at most `size_of::<cpu_set_t>()` bytes into `set`, which we own.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    // EINVAL on machines with more CPUs than a `cpu_set_t` holds (1024): the callers fall
    // back to `available_parallelism`.
    (rc == 0).then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_consistent() {
        let allowed = allowed();
        assert!(allowed >= 1);
        assert!((1..=allowed).contains(&default_count()));
        let ids = affinity().unwrap();
        assert_eq!(ids.len(), allowed);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
