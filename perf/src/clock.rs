//! Clocks: the raw nanosecond readings written into payloads and compared on receipt.
//!
//! Timestamps cross threads and processes, so they are `clock_gettime` readings, not
//! [`std::time::Instant`]s: `CLOCK_MONOTONIC` is one clock for every process of a host (Linux),
//! `CLOCK_REALTIME` is comparable between hosts whose clocks are synchronised.

use std::time::{Duration, Instant};

/// Which clock a timestamp was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// `CLOCK_MONOTONIC`.
    Monotonic = 0,
    /// `CLOCK_REALTIME`.
    Realtime = 1,
}

impl Clock {
    /// The clock for its wire value.
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Monotonic),
            1 => Some(Self::Realtime),
            _ => None,
        }
    }

    /// The name used in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Monotonic => "monotonic",
            Self::Realtime => "realtime",
        }
    }

    /// Nanoseconds on this clock now.
    pub(crate) fn now(self) -> u64 {
        let id = match self {
            Self::Monotonic => libc::CLOCK_MONOTONIC,
            Self::Realtime => libc::CLOCK_REALTIME,
        };
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and both
        // clock ids exist on every Linux kernel; the call has no other effect.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    }

    /// The [`Instant`] at which this clock will read `ns` (now if it already has), for the
    /// runtime's timers.
    pub(crate) fn instant_at(self, ns: u64) -> Instant {
        let now = self.now();
        Instant::now() + Duration::from_nanos(ns.saturating_sub(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance() {
        for c in [Clock::Monotonic, Clock::Realtime] {
            let a = c.now();
            std::thread::sleep(Duration::from_millis(2));
            let b = c.now();
            assert!(b >= a + 1_000_000, "{c:?}: {a} → {b}");
            assert_eq!(Clock::from_u8(c as u8), Some(c));
        }
        assert_eq!(Clock::from_u8(2), None);
    }
}
