//! Brokers for the end-to-end tests: our `broker` binary and Mosquitto, each on a free port,
//! stopped when dropped.
//!
//! Our broker: `perf` cannot name another package's binary (`CARGO_BIN_EXE_broker` exists only
//! in the broker's own tests), so the tests run `cargo build -p broker` once per test process
//! (a no-op when it is up to date; it also keeps a stale binary from being tested) in the
//! tests' own profile (`--release` for `cargo test --release`: a debug broker on a 2-core
//! machine falls behind the QUIC benches when tests run in parallel) and start
//! `<target dir>/{debug,release}/broker`, the target dir being `CARGO_TARGET_DIR` or
//! `<workspace>/target`. `PERF_TEST_BROKER=<path>` runs another broker binary instead (no
//! build).
//!
//! Mosquitto (`mosquitto`, `mosquitto_sub`; Debian packages `mosquitto mosquitto-clients`)
//! cannot listen on port 0: the tests pick a free port by binding port 0 and closing it, then
//! write a config file with `listener <port> 127.0.0.1` (another process could take the port
//! in between; accepted).
//!
//! For the transports: [`Broker::mosquitto_listeners`] adds TLS / WebSocket listeners to
//! Mosquitto, [`Broker::ours_tls`] starts our broker with its TLS listener (`ours_ws`,
//! `ours_wss`, `ours_quic` the others), and [`Pki`] makes the certificates (rcgen) at test
//! time.

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

/// `<target>/debug/broker` (`release/` when the tests are built in release), built first.
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
        // The release profile has no debug assertions (the workspace's Cargo.toml).
        let release = !cfg!(debug_assertions);
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "broker"]);
        // Without what `cargo test` sets for this test binary: ring's build script reruns when
        // `CARGO_MANIFEST_DIR` changes, so a build from here and one from a shell would each
        // rebuild ring and everything above it (the broker included), taking turns.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || k.starts_with("CARGO_BIN_")
                || k == "CARGO_CRATE_NAME"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
            {
                build.env_remove(&key);
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build.current_dir(&root).status().expect("cargo runs");
        assert!(status.success(), "cargo build -p broker failed");
        let profile = if release { "release" } else { "debug" };
        let bin = target.join(profile).join("broker");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A broker process, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Broker {
    child: Child,
    /// The port of the listener under test (plain TCP unless started for another one).
    pub(crate) port: u16,
    pub(crate) name: &'static str,
    /// [`Broker::ours_quic`]: the broker's self-signed QUIC certificate (PEM), for
    /// `--cacertfile`.
    pub(crate) quic_cert: Option<PathBuf>,
}

impl Broker {
    /// Our broker: `broker run --cores 2` on 127.0.0.1, port 0.
    pub(crate) fn ours() -> Self {
        Self::ours_with(&[], "tcp")
    }

    /// Our broker with a TLS listener on 127.0.0.1, port 0, with this certificate and key;
    /// `port` is the TLS listener's.
    pub(crate) fn ours_tls(certfile: &Path, keyfile: &Path) -> Self {
        Self::ours_with(
            &[
                "listeners.ssl.default.bind=127.0.0.1:0".to_owned(),
                format!(
                    "listeners.ssl.default.ssl_options.certfile={}",
                    certfile.display()
                ),
                format!(
                    "listeners.ssl.default.ssl_options.keyfile={}",
                    keyfile.display()
                ),
            ],
            "ssl",
        )
    }

    /// Our broker; `port` is its WebSocket listener's (`ws://127.0.0.1:PORT/mqtt`).
    pub(crate) fn ours_ws() -> Self {
        Self::ours_with(&[], "ws")
    }

    /// Our broker with a WebSocket over TLS listener with this certificate and key; `port` is
    /// that listener's.
    pub(crate) fn ours_wss(certfile: &Path, keyfile: &Path) -> Self {
        Self::ours_with(
            &[
                "listeners.wss.default.bind=127.0.0.1:0".to_owned(),
                format!(
                    "listeners.wss.default.ssl_options.certfile={}",
                    certfile.display()
                ),
                format!(
                    "listeners.wss.default.ssl_options.keyfile={}",
                    keyfile.display()
                ),
            ],
            "wss",
        )
    }

    /// Our broker with its QUIC listener on 127.0.0.1, port 0, and the self-signed certificate
    /// it generates (SANs localhost and 127.0.0.1) in a fresh `node.data_dir`; `port` is the
    /// QUIC listener's (UDP), `quic_cert` that certificate.
    pub(crate) fn ours_quic() -> Self {
        Self::ours_quic_with(&[])
    }

    /// [`Broker::ours_quic`] with these `--set`s too.
    pub(crate) fn ours_quic_with(sets: &[String]) -> Self {
        let dir = scratch(&format!("quic-data-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut all = vec![
            "listeners.quic.default.enable=true".to_owned(),
            "listeners.quic.default.bind=127.0.0.1:0".to_owned(),
            format!("node.data_dir={}", dir.display()),
        ];
        all.extend_from_slice(sets);
        let mut broker = Self::ours_with(&all, "quic");
        let pem = dir.join("quic-selfsigned.pem");
        assert!(pem.is_file(), "{} missing", pem.display());
        broker.quic_cert = Some(pem);
        broker
    }

    /// Our broker with these `--set`s; `port` is that of the listener logged as `listener`
    /// (`tcp`, `ssl`, `ws`, `wss`, `quic`).
    pub(crate) fn ours_with(sets: &[String], listener: &str) -> Self {
        let mut cmd = Command::new(broker_binary());
        cmd.args([
            "run",
            "--cores",
            "2",
            "--set",
            "listeners.tcp.default.bind=127.0.0.1:0",
            "--set",
            "listeners.ws.default.bind=127.0.0.1:0",
            "--set",
            "listeners.quic.default.bind=127.0.0.1:0",
            "--set",
            "dashboard.listeners.http.bind=127.0.0.1:0",
        ]);
        // The QUIC listener is on by default and writes its self-signed certificate into the
        // data directory (`./data`, i.e. perf/data, by default): a scratch one unless given.
        if !sets.iter().any(|s| s.starts_with("node.data_dir=")) {
            let dir = scratch(&format!("data-{}", unique()));
            std::fs::create_dir_all(&dir).unwrap();
            cmd.arg("--set")
                .arg(format!("node.data_dir={}", dir.display()));
        }
        for s in sets {
            cmd.arg("--set").arg(s);
        }
        let mut child = cmd
            .env_remove("BROKER_LISTENERS__TCP__DEFAULT__BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = format!("listening on {listener} 127.0.0.1:");
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.split(marker.as_str()).nth(1) {
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
            quic_cert: None,
        }
    }

    /// Mosquitto with `extra` configuration lines.
    pub(crate) fn mosquitto(extra: &str) -> Self {
        Self::mosquitto_listeners(extra, &[]).0
    }

    /// Mosquitto with `extra` configuration lines for its plain TCP listener (`port`) and one
    /// more listener on 127.0.0.1 per element of `listeners` (its configuration lines: `protocol
    /// websockets`, `certfile ...`), whose ports are returned in the same order. Mosquitto
    /// 2.0.11 does not start with a WebSocket listener alone, hence the TCP one.
    /// `set_tcp_nodelay true`: otherwise Nagle holds Mosquitto's CONNACK behind its TLS
    /// session tickets for a delayed ACK (40 ms).
    pub(crate) fn mosquitto_listeners(extra: &str, listeners: &[&str]) -> (Self, Vec<u16>) {
        let port = free_port();
        let conf = scratch(&format!("mosquitto-{port}.conf"));
        let anonymous = if extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        let mut text = format!("listener {port} 127.0.0.1\n{anonymous}{extra}\n");
        let mut ports = Vec::new();
        for l in listeners {
            let p = loop {
                let p = free_port();
                if p != port && !ports.contains(&p) {
                    break p;
                }
            };
            text += &format!("listener {p} 127.0.0.1\n{l}\n");
            ports.push(p);
        }
        if !listeners.is_empty() {
            text = format!("set_tcp_nodelay true\n{text}");
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Self {
            child,
            port,
            name: "mosquitto",
            quic_cert: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in std::iter::once(port).chain(ports.iter().copied()) {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Ok(Some(status)) = broker.child.try_wait() {
                    panic!(
                        "mosquitto exited ({status}) with this configuration:\n{}",
                        std::fs::read_to_string(&conf).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "mosquitto did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (broker, ports)
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

/// Certificates made at test time with rcgen, as PEM files in a fresh directory: a CA
/// (`ca.pem`), a server certificate for 127.0.0.1 and localhost signed by it (`server.pem`,
/// `server.key`), a client certificate signed by it (`client.pem`, `client.key`), and another
/// CA (`other-ca.pem`) with a client certificate of its own (`rogue.pem`, `rogue.key`).
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let dir = scratch(&format!("pki-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        // Readable by all: Mosquitto started as root reads them as user mosquitto.
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("perf test CA");
        let (other_cert, other_key) = ca("perf other CA");
        write("ca.pem", ca_cert.pem());
        write("other-ca.pem", other_cert.pem());
        let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        sp.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        sp.distinguished_name.push(DnType::CommonName, "broker");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let sk = KeyPair::generate().unwrap();
        let server = sp.signed_by(&sk, &ca_cert, &ca_key).unwrap();
        write("server.pem", server.pem());
        write("server.key", sk.serialize_pem());
        let client = |name: &str, issuer: &rcgen::Certificate, ik: &KeyPair| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let k = KeyPair::generate().unwrap();
            let c = p.signed_by(&k, issuer, ik).unwrap();
            write(&format!("{name}.pem"), c.pem());
            write(&format!("{name}.key"), k.serialize_pem());
        };
        client("client", &ca_cert, &ca_key);
        client("rogue", &other_cert, &other_key);
        Self { dir }
    }

    /// The file `name` of this PKI.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `path` as an argument.
    pub(crate) fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Mosquitto listener lines serving this PKI's server certificate.
    pub(crate) fn mosquitto_tls(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}",
            self.arg("ca.pem"),
            self.arg("server.pem"),
            self.arg("server.key")
        )
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
