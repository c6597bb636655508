//! The harness: the real `broker` binary on an ephemeral port, child processes (Python paho
//! scripts, mosquitto clients) with deadlines, and the broker's shutdown statistics.
//!
//! Everything waits with a deadline and panics with what it saw when the deadline passes: a
//! test never hangs. Child processes are killed when their handle is dropped, the broker gets
//! SIGTERM (then SIGKILL), so a failing test leaves nothing behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The broker under test, built by Cargo for this integration test.
pub(crate) const BROKER: &str = env!("CARGO_BIN_EXE_broker");

/// Where the Python client scripts live.
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/clients");

/// How long the broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the broker may take to exit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Polling period of the few waits that have nothing to block on (a child's exit).
const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------------------------
// The broker
// ---------------------------------------------------------------------------------------------

/// The broker's standard error, collected by a background thread so the pipe never fills.
#[derive(Debug, Default)]
struct LogBuf {
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

impl LogBuf {
    /// Waits until `f` finds something in the text (or the stream ends, or the deadline
    /// passes); returns what `f` found.
    fn wait_for<T>(&self, timeout: Duration, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.text.lock().unwrap();
        loop {
            if let Some(t) = f(&guard.0) {
                return Some(t);
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.grew.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    fn snapshot(&self) -> String {
        self.text.lock().unwrap().0.clone()
    }
}

/// A running broker: `broker run --cores 2` on `127.0.0.1:0`. Dropping it sends SIGTERM and
/// waits (SIGKILL after [`STOP_TIMEOUT`]); [`Broker::stop`] does the same and returns what the
/// broker reported.
#[derive(Debug)]
pub(crate) struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<LogBuf>,
    reader: Option<JoinHandle<()>>,
    data_dir: PathBuf,
    /// The data directory belongs to the test ([`Broker::start_in`]): kept.
    keep_dir: bool,
}

impl Broker {
    /// Starts the broker with the default settings of the tests.
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the broker with extra `--set KEY=VALUE` arguments.
    pub(crate) fn start_with(sets: &[&str]) -> Self {
        let mut b = Self::start_in(scratch_dir(), sets);
        b.keep_dir = false;
        b
    }

    /// Starts the broker on the data directory `data_dir`, which outlives it (a restart on
    /// the same directory, after [`Broker::kill`]).
    pub(crate) fn start_in(data_dir: PathBuf, sets: &[&str]) -> Self {
        let mut cmd = Command::new(BROKER);
        cmd.args(["run", "--cores", "2"])
            .args(["--set", "listeners.tcp.default.bind=127.0.0.1:0"])
            .args(["--set", "listeners.ws.default.bind=127.0.0.1:0"])
            .args(["--set", "listeners.quic.default.bind=127.0.0.1:0"])
            .args(["--set", "dashboard.listeners.http.bind=127.0.0.1:0"])
            .arg("--set")
            .arg(format!("node.data_dir={}", data_dir.display()));
        for s in sets {
            cmd.args(["--set", s]);
        }
        // Unknown BROKER_* variables stop the broker; none of the caller's may leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BROKER_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BROKER}: {e}"));
        let log = Arc::new(LogBuf::default());
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                let n = stderr.read(&mut chunk).unwrap_or(0);
                let mut g = sink.text.lock().unwrap();
                if n == 0 {
                    g.1 = true;
                } else {
                    g.0.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
                sink.grew.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        let mut broker = Broker {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            reader: Some(reader),
            data_dir,
            keep_dir: true,
        };
        let found = broker.log.wait_for(START_TIMEOUT, |text| {
            text.lines().find_map(|l| {
                let rest = l.split("listening on tcp ").nth(1)?;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            })
        });
        match found {
            Some(addr) => broker.addr = addr,
            None => {
                let log = broker.log.snapshot();
                drop(broker);
                panic!(
                    "the broker did not report its TCP address within {START_TIMEOUT:?}:\n{log}"
                );
            }
        }
        broker
    }

    /// The listener's address (127.0.0.1 and the port the kernel chose).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port as a string, for command lines.
    pub(crate) fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The address of the listener the log names `name` (`ssl`, ...), waiting for its line.
    pub(crate) fn listener(&self, name: &str) -> SocketAddr {
        let prefix = format!("listening on {name} ");
        self.log
            .wait_for(START_TIMEOUT, |text| {
                text.lines().find_map(|l| {
                    let rest = l.split(&prefix).nth(1)?;
                    rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
                })
            })
            .unwrap_or_else(|| panic!("no {name} listener in the log:\n{}", self.log.snapshot()))
    }

    /// Sends `sig` to the broker.
    pub(crate) fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill(2) with a child's pid and a valid signal number has no memory
            // effects; the child is not reaped yet (we own its `Child`), so the pid is ours.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// The broker's log so far.
    pub(crate) fn log_text(&self) -> String {
        self.log.snapshot()
    }

    /// Sends SIGTERM (without waiting).
    pub(crate) fn terminate(&self) {
        if let Some(child) = &self.child {
            let pid = libc::pid_t::try_from(child.id()).unwrap();
            // SAFETY: kill(2) with a child's pid and a valid signal number has no memory
            // effects; the child is not reaped yet (we own its `Child`), so the pid is ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// `kill -9`: the broker gets no chance to write anything more. Returns its log.
    pub(crate) fn kill(mut self) -> String {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.log.snapshot()
    }

    /// SIGTERM, then waits for the exit; returns the status, the time the exit took, the whole
    /// log and the per-shard statistics. Panics if the broker does not exit in time.
    pub(crate) fn stop(mut self) -> Stopped {
        let sent = Instant::now();
        self.terminate();
        let status = self.wait_exit(STOP_TIMEOUT);
        let exit_after = sent.elapsed();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log.snapshot();
        let Some(status) = status else {
            panic!("the broker did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{log}");
        };
        let shards = parse_stop_lines(&log);
        Stopped {
            status,
            exit_after,
            log,
            shards,
        }
    }

    /// Waits up to `timeout` for the broker to exit; SIGKILLs it after that (returns `None`),
    /// having appended what its threads were doing to the log.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        match wait_child(&mut child, timeout) {
            Some(s) => Some(s),
            None => {
                let dump = thread_dump(child.id());
                self.log.text.lock().unwrap().0.push_str(&dump);
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            let _ = self.wait_exit(STOP_TIMEOUT);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A fresh directory under the tests' scratch directory.
pub(crate) fn scratch_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "e2e-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What the threads of a hung process are doing: their names, kernel wait channels and
/// signal masks from `/proc`, and their stacks if `gdb` is installed.
fn thread_dump(pid: u32) -> String {
    let mut out = format!("\n--- threads of hung process {pid} ---\n");
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let path = t.path();
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            let signals: Vec<String> = read("status")
                .lines()
                .filter(|l| {
                    ["SigPnd", "ShdPnd", "SigBlk", "SigCgt"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .map(str::to_owned)
                .collect();
            out.push_str(&format!(
                "{} {} wchan={} {}\n",
                t.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan"),
                signals.join(" ")
            ));
        }
    }
    if let Ok(o) = Command::new("timeout")
        .args([
            "20",
            "gdb",
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(Stdio::null())
        .output()
    {
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// What a stopped broker reported.
#[derive(Debug)]
pub(crate) struct Stopped {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Time from SIGTERM to exit.
    pub(crate) exit_after: Duration,
    /// Everything it wrote to standard error.
    pub(crate) log: String,
    /// The `shard N stopped: ...` lines, by shard id.
    pub(crate) shards: Vec<ShardStats>,
}

/// One `shard N stopped: connections accepted A established E, messages received R sent S
/// forwarded F` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShardStats {
    pub(crate) id: u64,
    pub(crate) accepted: u64,
    pub(crate) established: u64,
    pub(crate) received: u64,
    pub(crate) sent: u64,
    pub(crate) forwarded: u64,
}

impl Stopped {
    /// Exit status 0, one stop line per shard, no error or panic in the log.
    pub(crate) fn assert_clean(&self) {
        assert!(
            self.status.success(),
            "broker exited with {}:\n{}",
            self.status,
            self.log
        );
        assert_eq!(
            self.shards.len(),
            2,
            "expected a stop line for each of the 2 shards:\n{}",
            self.log
        );
        for bad in [" ERROR ", "panicked"] {
            assert!(
                !self.log.contains(bad),
                "the broker log contains {bad:?}:\n{}",
                self.log
            );
        }
    }

    /// Both shards accepted connections, and messages crossed between them.
    pub(crate) fn assert_cross_shard(&self) {
        for s in &self.shards {
            assert!(
                s.accepted > 0 && s.established > 0,
                "shard {} served no connection: {:?}\n{}",
                s.id,
                self.shards,
                self.log
            );
        }
        assert!(
            self.total(|s| s.forwarded) > 0,
            "no message was forwarded between shards: {:?}",
            self.shards
        );
    }

    /// The sum of one counter over the shards.
    pub(crate) fn total(&self, f: impl Fn(&ShardStats) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }
}

/// Parses every `shard N stopped: ...` line of a broker log, ordered by shard id.
pub(crate) fn parse_stop_lines(log: &str) -> Vec<ShardStats> {
    let mut out: Vec<ShardStats> = log
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("shard ")? + "shard ".len()..];
            let (id, rest) = rest.split_once(" stopped: ")?;
            let words: Vec<&str> = rest
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|w| !w.is_empty())
                .collect();
            let fields: HashMap<&str, u64> = words
                .windows(2)
                .filter_map(|w| Some((w[0], w[1].parse().ok()?)))
                .collect();
            Some(ShardStats {
                id: id.parse().ok()?,
                accepted: *fields.get("accepted")?,
                established: *fields.get("established")?,
                received: *fields.get("received")?,
                sent: *fields.get("sent")?,
                forwarded: *fields.get("forwarded")?,
            })
        })
        .collect();
    out.sort_by_key(|s| s.id);
    out
}

/// Waits for `child` to exit, polling (a child's exit has nothing to block on with a timeout).
pub(crate) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process whose standard output is read line by line in the background, standard
/// error collected, standard input kept open for commands. Killed when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// A finished child: its status and everything it wrote.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<String>,
    pub(crate) stderr: String,
}

impl Proc {
    /// Spawns `cmd` with piped standard streams; `label` names it in failure messages.
    pub(crate) fn spawn(label: &str, mut cmd: Command) -> std::io::Result<Self> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let out_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err_reader = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            sink.lock().unwrap().push_str(&s);
        });
        Ok(Proc {
            label: label.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            readers: vec![out_reader, err_reader],
        })
    }

    /// The next line of standard output, or `None` at the deadline or end of output.
    pub(crate) fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.stdout.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Reads lines until one satisfies `pred`; panics with the output so far at the deadline.
    pub(crate) fn wait_line(&mut self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline) {
            if pred(&line) {
                return;
            }
        }
        self.fail(&format!("no {what} within {timeout:?}"));
    }

    /// Waits for a JSON progress line `{"phase": PHASE, ...}` and returns it.
    pub(crate) fn wait_phase(&mut self, phase: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["phase"] == phase
            {
                return v;
            }
            if line.contains("\"ok\": false") {
                self.fail(&format!("failed before phase {phase:?}"));
            }
        }
        self.fail(&format!("no phase {phase:?} within {timeout:?}"))
    }

    /// Writes one line to the child's standard input.
    pub(crate) fn send_line(&mut self, line: &str) {
        let ok = self
            .stdin
            .as_mut()
            .is_some_and(|s| writeln!(s, "{line}").and_then(|()| s.flush()).is_ok());
        if !ok {
            self.fail(&format!("cannot write {line:?} to its standard input"));
        }
    }

    /// Closes standard input and waits for the exit; kills the child and panics at the
    /// deadline.
    pub(crate) fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        self.stdin = None;
        let Some(status) = wait_child(&mut self.child, timeout) else {
            self.fail(&format!("did not exit within {timeout:?}"));
        };
        // The exit closed the pipes: the readers end soon.
        while self
            .next_line(deadline.max(Instant::now() + Duration::from_secs(2)))
            .is_some()
        {}
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }

    /// Kills the child and panics with everything it wrote.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        thread::sleep(Duration::from_millis(50));
        panic!(
            "{}: {why}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.stdout.join("\n"),
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python paho-mqtt scripts
// ---------------------------------------------------------------------------------------------

/// The pip command the tests need; named in every failure about a missing paho.
pub(crate) const PIP_INSTALL: &str = "pip install paho-mqtt==2.2.0";

/// Checks once that `python3` runs and imports paho-mqtt 2.2 or newer; panics with the fix
/// otherwise.
fn require_paho() {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let r = CHECK.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import paho.mqtt, paho.mqtt.enums; print(paho.mqtt.__version__)",
            ])
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            return Err(format!(
                "python3 cannot import paho-mqtt: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // 2.2.0 is the first to read the reason code of a DISCONNECT without properties
        // (`e0 01 8e`); 2.1.0 reports it as 0.
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (2, 2) {
            return Err(format!(
                "paho-mqtt {version} is installed, 2.2 or newer is needed"
            ));
        }
        Ok(version)
    });
    if let Err(e) = r {
        panic!(
            "the e2e tests need python3 with paho-mqtt >= 2.2 ({e}); install it with `{PIP_INSTALL}`"
        );
    }
}

/// Starts `python3 clients/SCRIPT ARGS...`.
pub(crate) fn python(script: &str, args: &[String]) -> Proc {
    require_paho();
    let mut cmd = Command::new("python3");
    // No __pycache__ in the source tree.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .arg("-u")
        .arg(format!("{CLIENTS}/{script}"))
        .args(args)
        .current_dir(CLIENTS);
    Proc::spawn(script, cmd).unwrap_or_else(|e| {
        panic!("cannot run python3 {script}: {e}; the e2e tests need python3 and `{PIP_INSTALL}`")
    })
}

/// Runs a script to its end and returns its result line (the last JSON line with "ok").
/// Panics with its output when it fails or exceeds `timeout`.
pub(crate) fn python_run(script: &str, args: &[String], timeout: Duration) -> serde_json::Value {
    let done = python(script, args).finish(timeout);
    script_result(script, &done)
}

/// The result line of a finished script; panics with its output unless it exited 0 with
/// `"ok": true`.
pub(crate) fn script_result(script: &str, done: &Finished) -> serde_json::Value {
    let result = done.stdout.iter().rev().find_map(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .filter(|v| v.get("ok").is_some())
    });
    match result {
        Some(v) if done.status.success() && v["ok"] == true => v,
        _ => panic!(
            "{script} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            done.status,
            done.stdout.join("\n"),
            done.stderr
        ),
    }
}

/// Arguments for a script: the broker's host and port, then `rest`.
pub(crate) fn args(broker: &Broker, rest: &[&dyn std::fmt::Display]) -> Vec<String> {
    let mut v = vec!["127.0.0.1".to_owned(), broker.port()];
    v.extend(rest.iter().map(|a| a.to_string()));
    v
}

/// A tag unique to this test process and call, for client ids and topics.
pub(crate) fn unique(name: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------------------------

/// The apt command the tests need; named in every failure about missing mosquitto clients.
pub(crate) const APT_INSTALL: &str = "apt-get install -y mosquitto-clients";

/// A `Command` for a mosquitto client binary, after checking it exists. It runs under
/// `stdbuf -oL` (coreutils): piped, its standard output would otherwise be block-buffered and
/// progress lines (`-d`) would arrive only at exit.
pub(crate) fn mosquitto(bin: &str) -> Command {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECK.get_or_init(|| {
        for b in ["mosquitto_pub", "mosquitto_sub"] {
            Command::new(b)
                .arg("--help")
                .output()
                .map_err(|e| format!("cannot run {b}: {e}"))?;
        }
        Ok(())
    });
    if let Err(e) = r {
        panic!("the e2e tests need the mosquitto clients ({e}); install them with `{APT_INSTALL}`");
    }
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", bin]);
    cmd
}

#[test]
fn stop_lines_are_parsed() {
    let log = "2026-01-01T00:00:00.000Z INFO  [main] broker::server: shard 1 stopped: connections \
               accepted 7 established 6, messages received 5 sent 4 forwarded 3\n\
               x INFO  [main] broker::server: shard 0 stopped: connections accepted 17 \
               established 16, messages received 15 sent 14 forwarded 13\n\
               x INFO  [main] broker::server: shut down\n";
    let s = parse_stop_lines(log);
    assert_eq!(
        s,
        vec![
            ShardStats {
                id: 0,
                accepted: 17,
                established: 16,
                received: 15,
                sent: 14,
                forwarded: 13
            },
            ShardStats {
                id: 1,
                accepted: 7,
                established: 6,
                received: 5,
                sent: 4,
                forwarded: 3
            },
        ]
    );
}
