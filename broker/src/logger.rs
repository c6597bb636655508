//! A minimal [`log`] backend: one line per record on standard error, with a UTC timestamp, the
//! level, the thread's name and the module:
//!
//! ```text
//! 2025-11-26T06:21:03.512Z INFO  [main] broker::cli: mqtt.max_inflight = 64 (env BROKER_MQTT__MAX_INFLIGHT)
//! ```
//!
//! Each line is written with one `write` on a locked handle, so lines from different shards
//! never interleave. The level comes from `log.level`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

/// Installs the logger at `level`. Fails if a logger is already installed (a second call, or
/// a test harness's own).
pub fn init(level: LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_logger(&StderrLogger)?;
    log::set_max_level(level);
    Ok(())
}

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes JSON lines (`log.format = json`) instead of text.
pub fn set_json(on: bool) {
    JSON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether lines are written as JSON.
pub fn is_json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Changes the level of the installed logger.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

#[derive(Debug)]
struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let json = JSON.load(std::sync::atomic::Ordering::Relaxed);
        let line = format_line(SystemTime::now(), record, json);
        // Nothing sensible is left to do when standard error is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().lock().flush();
    }
}

fn format_line(now: SystemTime, record: &Record<'_>, json: bool) -> String {
    let thread = std::thread::current();
    let thread = match thread.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", thread.id()),
    };
    if json {
        return format!(
            "{{\"time\":\"{}\",\"level\":\"{}\",\"thread\":{},\"target\":{},\"msg\":{}}}\n",
            timestamp(now),
            record.level(),
            shard::core::json_str(&thread),
            shard::core::json_str(record.target()),
            shard::core::json_str(&record.args().to_string())
        );
    }
    format!(
        "{} {:<5} [{thread}] {}: {}\n",
        timestamp(now),
        record.level(),
        record.target(),
        record.args()
    )
}

/// RFC 3339 in UTC with milliseconds: `2025-11-26T06:21:03.512Z`.
fn timestamp(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps() {
        let at = |secs: u64, ms: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_764_138_063, 512), "2025-11-26T06:21:03.512Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn line_format() {
        let args = format_args!("hello {}", 42);
        let record = Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("broker::test")
            .build();
        let line = format_line(UNIX_EPOCH, &record, false);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        assert_eq!(
            line,
            format!("1970-01-01T00:00:00.000Z WARN  [{name}] broker::test: hello 42\n")
        );
    }

    #[test]
    fn json_lines_parse_whatever_the_message_holds() {
        let args = format_args!("a \"quoted\" {}\nline\tand \\ and \u{1}", "value");
        let record = Record::builder()
            .args(args)
            .level(log::Level::Info)
            .target("broker::test")
            .build();
        let line = format_line(UNIX_EPOCH, &record, true);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "broker::test");
        assert_eq!(v["msg"], "a \"quoted\" value\nline\tand \\ and \u{1}");
    }
}
