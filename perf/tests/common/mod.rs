//! Brokers for the end-to-end tests: our `broker` binary and Mosquitto, each on a free port,
//! stopped when dropped.
//!
//! Our broker: `perf` cannot name another package's binary (`CARGO_BIN_EXE_broker` exists only
//! in the broker's own tests), so the tests run `cargo build -p broker` once per test process
//! (a no-op when it is up to date; it also keeps a stale binary from being tested) and start
//! `<target dir>/debug/broker`, the target dir being `CARGO_TARGET_DIR` or `<workspace>/target`.
//! `PERF_TEST_BROKER=<path>` runs another broker binary instead (no build).
//!
//! Mosquitto (`mosquitto`, `mosquitto_sub`; Debian packages `mosquitto mosquitto-clients`)
//! cannot listen on port 0: the tests pick a free port by binding port 0 and closing it, then
//! write a config file with `listener <port> 127.0.0.1` (another process could take the port
//! in between; accepted).

// Test helpers panic on setup failures by design.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("perf/ has a parent")
        .to_path_buf()
}

/// A scratch directory for this test binary.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("perf-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

/// `<target>/debug/broker`, built first.
fn broker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PERF_TEST_BROKER") {
            return PathBuf::from(bin);
        }
        let root = workspace();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "broker"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p broker failed");
        let bin = target.join("debug").join("broker");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A broker process, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Broker {
    child: Child,
    pub(crate) port: u16,
    pub(crate) name: &'static str,
}

impl Broker {
    /// Our broker: `broker run --cores 2` on 127.0.0.1, port 0.
    pub(crate) fn ours() -> Self {
        let mut child = Command::new(broker_binary())
            .args([
                "run",
                "--cores",
                "2",
                "--set",
                "listeners.tcp.default.bind=127.0.0.1:0",
            ])
            .env_remove("BROKER_LISTENERS__TCP__DEFAULT__BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split("listening on tcp 127.0.0.1:").nth(1) {
                    let port: u16 = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let _ = tx.send(port);
                    sent = true;
                }
                // Keep draining so the broker never blocks on a full pipe.
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the broker logs its port");
        Self {
            child,
            port,
            name: "broker",
        }
    }

    /// Mosquitto with `extra` configuration lines.
    pub(crate) fn mosquitto(extra: &str) -> Self {
        let port = free_port();
        let conf = scratch(&format!("mosquitto-{port}.conf"));
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{anonymous}{extra}\n"),
        )
        .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            name: "mosquitto",
        }
    }

    pub(crate) fn port_arg(&self) -> String {
        self.port.to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped (we wait below), so it names
        // that process; kill(2) touches no memory.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mosquitto's binary; fails the test with the install command when it is missing.
pub(crate) fn mosquitto_binary() -> PathBuf {
    which(
        "mosquitto",
        &["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"],
    )
}

/// mosquitto_sub's binary.
pub(crate) fn mosquitto_sub_binary() -> PathBuf {
    which("mosquitto_sub", &["/usr/bin/mosquitto_sub"])
}

fn which(name: &str, fallbacks: &[&str]) -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.exists())
    });
    from_path
        .or_else(|| fallbacks.iter().map(PathBuf::from).find(|p| p.exists()))
        .unwrap_or_else(|| {
            panic!("{name} is not installed: apt-get install mosquitto mosquitto-clients")
        })
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `perf` with `args` plus `--json <file>`; returns the process output and the JSON.
pub(crate) fn perf(args: &[&str]) -> (Output, Value) {
    let json = scratch(&format!("perf-{}.json", unique()));
    let output = Command::new(env!("CARGO_BIN_EXE_perf"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("perf runs");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON from perf ({e}); status {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, serde_json::from_str(&text).unwrap())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The output, for assertion messages.
pub(crate) fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `v[path...]` as u64.
pub(crate) fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count: {cur}"))
}

/// `v[path...]` as f64.
pub(crate) fn float(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {cur}"))
}
