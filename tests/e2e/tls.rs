//! MQTT over TLS through the real broker with mosquitto_pub/sub: server authentication,
//! mutual TLS (a missing or foreign client certificate refused), a revoked client certificate
//! refused by a CRL, a garbage TLS record answered with a close without disturbing other
//! clients, and unusable certificate files stopping the broker with the key and file named.
//! Certificates are made at test time with rcgen.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

/// A CA, a server certificate for 127.0.0.1/localhost, client certificates with serials 42
/// and 43, one from another CA, and a CRL revoking serial 42, as PEM files in a fresh
/// directory.
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn new() -> Self {
        Self::build(None)
    }

    /// Also client certificates `dp-50` (revoked) and `dp-51` naming the CRL distribution
    /// point `http://127.0.0.1:PORT/ca.crl`, and that CRL (DER, with an Issuing Distribution
    /// Point) in `DIR/www/ca.crl`.
    fn with_distribution_point(port: u16) -> Self {
        Self::build(Some(port))
    }

    fn build(dp_port: Option<u16>) -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "pki-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
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
        let (ca_cert, ca_key) = ca("test CA");
        let (rogue_cert, rogue_key) = ca("rogue CA");
        write("ca.pem", ca_cert.pem());
        write("ca.key", ca_key.serialize_pem());

        for (name, cn, serial) in [("server", "broker", 100u64), ("server2", "broker-2", 101)] {
            let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            sp.serial_number = Some(SerialNumber::from(serial));
            sp.subject_alt_names
                .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
            sp.distinguished_name.push(DnType::CommonName, cn);
            let sk = KeyPair::generate().unwrap();
            let server = sp.signed_by(&sk, &ca_cert, &ca_key).unwrap();
            write(&format!("{name}.pem"), server.pem());
            write(&format!("{name}.key"), sk.serialize_pem());
        }

        let client = |name: &str, serial: u64, issuer: &rcgen::Certificate, ik: &KeyPair| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.serial_number = Some(SerialNumber::from(serial));
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let k = KeyPair::generate().unwrap();
            let c = p.signed_by(&k, issuer, ik).unwrap();
            write(&format!("{name}.pem"), c.pem());
            write(&format!("{name}.key"), k.serialize_pem());
        };
        client("dev-42", 42, &ca_cert, &ca_key);
        client("dev-43", 43, &ca_cert, &ca_key);
        client("rogue", 44, &rogue_cert, &rogue_key);
        if let Some(port) = dp_port {
            let url = format!("http://127.0.0.1:{port}/ca.crl");
            let dp = || rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            };
            for (name, serial) in [("dp-50", 50u64), ("dp-51", 51)] {
                let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
                p.distinguished_name.push(DnType::CommonName, name);
                p.serial_number = Some(SerialNumber::from(serial));
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p.crl_distribution_points = vec![dp()];
                let k = KeyPair::generate().unwrap();
                let c = p.signed_by(&k, &ca_cert, &ca_key).unwrap();
                write(&format!("{name}.pem"), c.pem());
                write(&format!("{name}.key"), k.serialize_pem());
            }
            let crl = CertificateRevocationListParams {
                this_update: date_time_ymd(2024, 1, 1),
                next_update: date_time_ymd(2099, 1, 1),
                crl_number: SerialNumber::from(2u64),
                issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
                    distribution_point: dp(),
                    scope: Some(rcgen::CrlScope::UserCertsOnly),
                }),
                revoked_certs: vec![RevokedCertParams {
                    serial_number: SerialNumber::from(50u64),
                    revocation_time: date_time_ymd(2024, 6, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }],
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&ca_cert, &ca_key)
            .unwrap();
            std::fs::create_dir_all(dir.join("www")).unwrap();
            std::fs::write(dir.join("www/ca.crl"), crl.der()).unwrap();
        }

        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(42u64),
                revocation_time: date_time_ymd(2024, 6, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca_cert, &ca_key)
        .unwrap();
        write("crl.pem", crl.pem().unwrap());
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `--set` arguments for the TLS listener with this PKI's server certificate.
    pub(crate) fn server_sets(&self) -> Vec<String> {
        vec![
            "listeners.ssl.default.bind=127.0.0.1:0".to_owned(),
            format!(
                "listeners.ssl.default.ssl_options.certfile={}",
                self.path("server.pem")
            ),
            format!(
                "listeners.ssl.default.ssl_options.keyfile={}",
                self.path("server.key")
            ),
        ]
    }

    fn mutual_sets(&self) -> Vec<String> {
        let mut v = self.server_sets();
        v.push(format!(
            "listeners.ssl.default.ssl_options.cacertfile={}",
            self.path("ca.pem")
        ));
        v.push("listeners.ssl.default.ssl_options.verify=verify_peer".to_owned());
        v.push("listeners.ssl.default.ssl_options.fail_if_no_peer_cert=true".to_owned());
        v
    }
}

fn start(sets: &[String]) -> (Broker, String) {
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let broker = Broker::start_with(&refs);
    let port = broker.listener("ssl").port().to_string();
    (broker, port)
}

/// mosquitto_pub over TLS with `extra` (`--cert`/`--key`); whether it succeeded, and stderr.
fn tls_pub(pki: &Pki, port: &str, version: &str, extra: &[String]) -> (bool, String) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", port, "-V", version, "-q", "1"])
        .args(["--cafile", &pki.path("ca.pem")])
        .args(["-i", &unique("tpub"), "-t", "tls/t", "-m", "over-tls"])
        .args(extra);
    let done = Proc::spawn("mosquitto_pub", cmd).unwrap().finish(TIMEOUT);
    (done.status.success(), done.stderr)
}

fn client_cert(pki: &Pki, name: &str) -> Vec<String> {
    vec![
        "--cert".to_owned(),
        pki.path(&format!("{name}.pem")),
        "--key".to_owned(),
        pki.path(&format!("{name}.key")),
    ]
}

fn tls_sub(pki: &Pki, port: &str, version: &str, count: &str, extra: &[String]) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        version,
        "-q",
        "1",
        "-v",
        "-d",
    ])
    .args(["--cafile", &pki.path("ca.pem")])
    .args([
        "-i",
        &unique("tsub"),
        "-t",
        "tls/#",
        "-C",
        count,
        "-W",
        "10",
    ])
    .args(extra);
    Proc::spawn("mosquitto_sub", cmd).unwrap()
}

#[test]
fn publish_and_subscribe_over_tls() {
    let pki = Pki::new();
    tls_round_trip(&pki, &pki.server_sets(), &["mqttv311", "mqttv5"]);
}

#[test]
fn tls_on_the_epoll_driver() {
    let pki = Pki::new();
    let mut sets = pki.server_sets();
    sets.push("node.driver=epoll".to_owned());
    tls_round_trip(&pki, &sets, &["mqttv5"]);
}

fn tls_round_trip(pki: &Pki, sets: &[String], versions: &[&str]) {
    let (broker, port) = start(sets);
    for &version in versions {
        let mut sub = tls_sub(pki, &port, version, "2", &[]);
        sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
        let (ok, err) = tls_pub(pki, &port, version, &[]);
        assert!(ok, "{version}: {err}");
        // A plain TCP publisher reaches the TLS subscriber too.
        let mut cmd = mosquitto("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1"])
            .args(["-i", &unique("ppub"), "-t", "tls/plain", "-m", "over-tcp"]);
        assert!(
            Proc::spawn("mosquitto_pub", cmd)
                .unwrap()
                .finish(TIMEOUT)
                .status
                .success()
        );
        let done = sub.finish(TIMEOUT);
        assert!(done.status.success(), "{version}: {}", done.stderr);
        let got: Vec<&String> = done
            .stdout
            .iter()
            .filter(|l| l.starts_with("tls/"))
            .collect();
        assert_eq!(got, ["tls/t over-tls", "tls/plain over-tcp"], "{version}");
    }
}

#[test]
fn mutual_tls_needs_a_certificate_from_the_ca() {
    let pki = Pki::new();
    let (_broker, port) = start(&pki.mutual_sets());
    let (ok, err) = tls_pub(&pki, &port, "mqttv311", &client_cert(&pki, "dev-43"));
    assert!(ok, "a certificate from the CA: {err}");
    let (ok, _) = tls_pub(&pki, &port, "mqttv311", &[]);
    assert!(!ok, "no client certificate must be refused");
    let (ok, _) = tls_pub(&pki, &port, "mqttv5", &client_cert(&pki, "rogue"));
    assert!(!ok, "a certificate from another CA must be refused");
}

#[test]
fn a_revoked_client_certificate_is_refused() {
    let pki = Pki::new();
    let mut sets = pki.mutual_sets();
    sets.push("listeners.ssl.default.ssl_options.enable_crl_check=true".to_owned());
    sets.push(format!(
        "listeners.ssl.default.ssl_options.crlfile={}",
        pki.path("crl.pem")
    ));
    let (_broker, port) = start(&sets);
    let (ok, _) = tls_pub(&pki, &port, "mqttv311", &client_cert(&pki, "dev-42"));
    assert!(!ok, "serial 42 is revoked");
    let (ok, err) = tls_pub(&pki, &port, "mqttv311", &client_cert(&pki, "dev-43"));
    assert!(ok, "serial 43 is not: {err}");
}

#[test]
fn garbage_tls_records_are_closed_without_disturbing_others() {
    let pki = Pki::new();
    let (_broker, port) = start(&pki.server_sets());
    let mut sub = tls_sub(&pki, &port, "mqttv311", "1", &[]);
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c,
        ][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(garbage).unwrap();
        let mut buf = [0u8; 512];
        // An alert and/or the close: read until EOF or a reset, never a hang.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    let (ok, err) = tls_pub(&pki, &port, "mqttv311", &[]);
    assert!(ok, "{err}");
    let done = sub.finish(TIMEOUT);
    assert!(
        done.stdout.iter().any(|l| l == "tls/t over-tls"),
        "the subscriber kept its session: {:?} {}",
        done.stdout,
        done.stderr
    );
}

/// Runs `broker run` with `sets` expecting it to refuse to start; returns its stderr.
fn refused(sets: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_broker"));
    cmd.args(["run", "--cores", "2"])
        .args(["--set", "listeners.tcp.default.bind=127.0.0.1:0"])
        .args(["--set", "listeners.ws.default.bind=127.0.0.1:0"])
        .args(["--set", "listeners.quic.default.bind=127.0.0.1:0"])
        .args(["--set", "dashboard.listeners.http.bind=127.0.0.1:0"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_certificate_files_stop_the_broker_naming_the_file() {
    let pki = Pki::new();
    let mut missing = pki.server_sets();
    missing[1] = "listeners.ssl.default.ssl_options.certfile=/nonexistent/server.pem".to_owned();
    let err = refused(&missing);
    assert!(
        err.contains("listeners.ssl.default.ssl_options.certfile /nonexistent/server.pem"),
        "{err}"
    );
    let mut mismatched = pki.server_sets();
    mismatched[2] = format!(
        "listeners.ssl.default.ssl_options.keyfile={}",
        pki.path("dev-42.key")
    );
    let err = refused(&mismatched);
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let mut not_pem = pki.server_sets();
    not_pem[2] = format!(
        "listeners.ssl.default.ssl_options.keyfile={}",
        pki.path("ca.pem")
    );
    let err = refused(&not_pem);
    assert!(
        err.contains("listeners.ssl.default.ssl_options.keyfile"),
        "{err}"
    );
    let mut no_ca = pki.mutual_sets();
    no_ca.retain(|s| !s.contains("cacertfile"));
    let err = refused(&no_ca);
    assert!(
        err.contains("listeners.ssl.default.ssl_options.cacertfile is not set"),
        "{err}"
    );
}

#[test]
fn the_certificate_common_name_becomes_username_and_client_id() {
    let pki = Pki::new();
    let mut sets = pki.mutual_sets();
    sets.push("mqtt.peer_cert_as_username=cn".to_owned());
    sets.push("mqtt.peer_cert_as_clientid=cn".to_owned());
    let (broker, port) = start(&sets);
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-v", "-d"])
        .args([
            "-i",
            &unique("certwatch"),
            "-t",
            "$SYS/brokers/+/clients/+/connected",
        ])
        .args(["-C", "1", "-W", "10"]);
    let mut watch = Proc::spawn("mosquitto_sub", cmd).unwrap();
    watch.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    let mut extra = client_cert(&pki, "dev-43");
    extra.extend(["-u".to_owned(), "someone-else".to_owned()]);
    let (ok, err) = tls_pub(&pki, &port, "mqttv5", &extra);
    assert!(ok, "{err}");
    let done = watch.finish(TIMEOUT);
    let line = done
        .stdout
        .iter()
        .find(|l| l.starts_with("$SYS/"))
        .unwrap_or_else(|| panic!("{:?} {}", done.stdout, done.stderr));
    assert!(
        line.contains("/clients/dev-43/connected "),
        "client id from the CN: {line}"
    );
    assert!(
        line.contains("\"username\":\"dev-43\""),
        "username from the CN: {line}"
    );
}

/// The subject the TLS listener presents, as `openssl s_client` prints it.
fn served_subject(pki: &Pki, port: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", &pki.path("ca.pem")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject from openssl s_client: {text}"))
        .to_owned()
}

/// Polls until the listener serves a certificate whose subject contains `cn`.
fn wait_subject(pki: &Pki, port: &str, cn: &str) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let subject = served_subject(pki, port);
        if subject.ends_with(cn) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {subject}, wanted {cn}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn certificates_are_reloaded_without_dropping_connections() {
    let pki = Pki::new();
    let copy = |from: &str, to: &str| std::fs::copy(pki.path(from), pki.path(to)).unwrap();
    copy("server.pem", "live.pem");
    copy("server.key", "live.key");
    let sets = vec![
        "listeners.ssl.default.bind=127.0.0.1:0".to_owned(),
        format!(
            "listeners.ssl.default.ssl_options.certfile={}",
            pki.path("live.pem")
        ),
        format!(
            "listeners.ssl.default.ssl_options.keyfile={}",
            pki.path("live.key")
        ),
    ];
    let (broker, port) = start(&sets);
    assert!(served_subject(&pki, &port).ends_with("broker"));
    let mut sub = tls_sub(&pki, &port, "mqttv5", "2", &[]);
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));

    // Rotation with SIGHUP.
    copy("server2.pem", "live.pem");
    copy("server2.key", "live.key");
    broker.signal(libc::SIGHUP);
    wait_subject(&pki, &port, "broker-2");
    let (ok, err) = tls_pub(&pki, &port, "mqttv5", &[]);
    assert!(ok, "{err}");

    // Rotation by changing the files alone (the broker notices within a second).
    std::thread::sleep(Duration::from_millis(1100));
    copy("server.pem", "live.pem");
    copy("server.key", "live.key");
    wait_subject(&pki, &port, "broker");
    let (ok, err) = tls_pub(&pki, &port, "mqttv5", &[]);
    assert!(ok, "{err}");

    // The subscriber connected before both rotations got both messages.
    let done = sub.finish(TIMEOUT);
    let got: Vec<&String> = done
        .stdout
        .iter()
        .filter(|l| l.starts_with("tls/"))
        .collect();
    assert_eq!(got, ["tls/t over-tls", "tls/t over-tls"], "{}", done.stderr);
    // A broken file is refused and the old certificate stays.
    std::fs::write(pki.path("live.pem"), "garbage").unwrap();
    broker.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(600));
    assert!(served_subject(&pki, &port).ends_with("broker"));
    let log = broker.log_text();
    assert!(
        log.contains(
            "reload failed, keeping the old files: listeners.ssl.default.ssl_options.certfile"
        ),
        "{log}"
    );
}

/// `openssl ocsp` as a responder for the test CA on a free port: serial 0x64 (the server
/// certificate) is good.
fn ocsp_responder(pki: &Pki) -> (Proc, u16) {
    let index = pki.path("index.txt");
    std::fs::write(&index, "V\t491231235959Z\t\t64\tunknown\t/CN=broker\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Its progress goes to stderr: merged into stdout to wait for it. (A probe connection
    // would not do: the responder serves one connection at a time and stalls on one that
    // closes without a request.)
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "exec openssl ocsp -index {index} -port {port} -CA {ca} -rsigner {ca} -rkey {key} \
         -ignore_err 2>&1",
        ca = pki.path("ca.pem"),
        key = pki.path("ca.key"),
    ));
    let mut p = Proc::spawn("openssl ocsp", cmd).unwrap();
    p.wait_line(TIMEOUT, "the responder's start", |l| {
        l.contains("waiting for OCSP client connections")
    });
    (p, port)
}

/// What `openssl s_client -status` says about the stapled OCSP response.
fn stapled(pki: &Pki, port: &str) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-status",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-CAfile", &pki.path("ca.pem")])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_ocsp_response_is_stapled() {
    let pki = Pki::new();
    let (_responder, rport) = ocsp_responder(&pki);
    let mut sets = pki.server_sets();
    sets.push("listeners.ssl.default.ssl_options.ocsp.enable_ocsp_stapling=true".to_owned());
    sets.push(format!(
        "listeners.ssl.default.ssl_options.ocsp.responder_url=http://127.0.0.1:{rport}"
    ));
    sets.push(format!(
        "listeners.ssl.default.ssl_options.ocsp.issuer_pem={}",
        pki.path("ca.pem")
    ));
    sets.push("listeners.ssl.default.ssl_options.ocsp.refresh_interval=1s".to_owned());
    let (broker, port) = start(&sets);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let out = stapled(&pki, &port);
        if out.contains("OCSP Response Status: successful") {
            assert!(out.contains("Cert Status: good"), "{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stapled response: {out}\n{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // MQTT works over the stapled session too.
    let (ok, err) = tls_pub(&pki, &port, "mqttv5", &[]);
    assert!(ok, "{err}");
}

#[test]
fn an_unreachable_ocsp_responder_is_logged_and_tls_goes_on() {
    let pki = Pki::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sets = pki.server_sets();
    sets.push("listeners.ssl.default.ssl_options.ocsp.enable_ocsp_stapling=true".to_owned());
    sets.push(format!(
        "listeners.ssl.default.ssl_options.ocsp.responder_url=http://127.0.0.1:{dead}/"
    ));
    sets.push(format!(
        "listeners.ssl.default.ssl_options.ocsp.issuer_pem={}",
        pki.path("ca.pem")
    ));
    let (broker, port) = start(&sets);
    let (ok, err) = tls_pub(&pki, &port, "mqttv311", &[]);
    assert!(ok, "{err}");
    assert!(stapled(&pki, &port).contains("OCSP response: no response sent"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !broker
        .log_text()
        .contains("listeners.ssl.default.ssl_options.ocsp: http://127.0.0.1:")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A wrong issuer is refused at start, naming the key.
    let mut wrong = pki.server_sets();
    wrong.push("listeners.ssl.default.ssl_options.ocsp.enable_ocsp_stapling=true".to_owned());
    wrong
        .push("listeners.ssl.default.ssl_options.ocsp.responder_url=http://127.0.0.1:1".to_owned());
    wrong.push(format!(
        "listeners.ssl.default.ssl_options.ocsp.issuer_pem={}",
        pki.path("dev-42.pem")
    ));
    let err = refused(&wrong);
    assert!(err.contains("ssl_options.ocsp.issuer_pem"), "{err}");
}

#[test]
fn crls_are_fetched_from_the_certificates_distribution_points() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pki = Pki::with_distribution_point(port);
    let mut cmd = Command::new("python3");
    cmd.args([
        "-u",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .args(["--directory", &pki.path("www")]);
    let mut www = Proc::spawn("http.server", cmd).unwrap();
    www.wait_line(TIMEOUT, "http.server's start", |l| {
        l.contains("Serving HTTP")
    });
    let mut sets = pki.mutual_sets();
    sets.push("listeners.ssl.default.ssl_options.enable_crl_check=true".to_owned());
    let (broker, tls_port) = start(&sets);
    // The first handshake names a distribution point the broker has no CRL for: refused, and
    // the CRL is fetched; then dp-51 (not revoked) gets in and dp-50 (revoked) does not.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (ok, _) = tls_pub(&pki, &tls_port, "mqttv311", &client_cert(&pki, "dp-51"));
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            broker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        broker.log_text().contains("/ca.crl fetched"),
        "{}",
        broker.log_text()
    );
    let (ok, _) = tls_pub(&pki, &tls_port, "mqttv311", &client_cert(&pki, "dp-50"));
    assert!(!ok, "dp-50 is revoked by the distribution point's CRL");
    // A certificate without a distribution point is not affected.
    let (ok, err) = tls_pub(&pki, &tls_port, "mqttv311", &client_cert(&pki, "dev-43"));
    assert!(ok, "{err}");
}

/// `openssl s_client` with `args`; the negotiated "Protocol, Cipher" line, if the handshake
/// succeeded.
fn negotiated(pki: &Pki, port: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", &pki.path("ca.pem")])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("New, TLS"))
        .map(str::to_owned)
}

#[test]
fn versions_and_ciphers_limit_what_is_offered() {
    let pki = Pki::new();
    let mut sets = pki.server_sets();
    sets.push(r#"listeners.ssl.default.ssl_options.versions=["tlsv1.3"]"#.to_owned());
    sets.push(r#"listeners.ssl.default.ssl_options.ciphers=["TLS_AES_128_GCM_SHA256"]"#.to_owned());
    let (_broker, port) = start(&sets);
    let ok = negotiated(&pki, &port, &["-tls1_3"]);
    assert_eq!(
        ok.as_deref(),
        Some("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256")
    );
    assert_eq!(
        negotiated(&pki, &port, &["-tls1_2"]),
        None,
        "TLS 1.2 is off"
    );
    let other = ["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"];
    assert_eq!(negotiated(&pki, &port, &other), None, "only AES-128-GCM");

    let mut sets = pki.server_sets();
    sets.push(r#"listeners.ssl.default.ssl_options.versions=["tlsv1.2"]"#.to_owned());
    let (_broker, port) = start(&sets);
    let ok = negotiated(&pki, &port, &[]).unwrap_or_default();
    assert!(ok.starts_with("New, TLSv1.2,"), "{ok}");

    let mut bad = pki.server_sets();
    bad.push(r#"listeners.ssl.default.ssl_options.versions=["tlsv1.2"]"#.to_owned());
    bad.push(r#"listeners.ssl.default.ssl_options.ciphers=["TLS_AES_128_GCM_SHA256"]"#.to_owned());
    let err = refused(&bad);
    assert!(
        err.contains("listeners.ssl.default.ssl_options.ciphers"),
        "{err}"
    );
}
