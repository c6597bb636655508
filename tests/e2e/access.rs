//! Access control of the REST API through the real broker: the generated first password,
//! login and bearer tokens, API keys with HTTP Basic, `broker admin passwd` on a running and a
//! restarted broker, `dashboard.metrics_auth`, and the HTTPS listener (a rustls client with
//! the test CA).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};

use crate::harness::{BROKER, Broker, scratch_dir};
use crate::tls::Pki;

const TIMEOUT: Duration = Duration::from_secs(20);

fn client() -> Client {
    Client::builder().timeout(TIMEOUT).build().unwrap()
}

/// Sends `req`; the status and the body as JSON (`Null` when empty).
fn call(req: RequestBuilder) -> (u16, Value) {
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
    };
    (status, body)
}

/// The path the log names as holding the generated password.
fn generated_password_file(broker: &Broker) -> PathBuf {
    let log = broker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("created dashboard user admin; its password is in "))
        .unwrap_or_else(|| panic!("no generated password in the log:\n{log}"));
    let path = line.rsplit("its password is in ").next().unwrap();
    PathBuf::from(path.trim())
}

fn read_password(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim_end().to_owned()
}

/// `POST /api/v5/login`: the status and body.
fn login(http: SocketAddr, username: &str, password: &str) -> (u16, Value) {
    call(
        client()
            .post(format!("http://{http}/api/v5/login"))
            .json(&json!({"username": username, "password": password})),
    )
}

fn token(http: SocketAddr, username: &str, password: &str) -> String {
    let (status, body) = login(http, username, password);
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Waits until `/status` answers 200: the broker logs its listeners once every shard's runtime
/// is up, and the health check turns 200 once each has published its first snapshot.
fn wait_ready(http: SocketAddr) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let status = client()
            .get(format!("http://{http}/status"))
            .send()
            .map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/status never answered 200: {status:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn assert_error(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(got.1["message"].is_string(), "{}", got.1);
}

#[test]
fn first_password_login_tokens_and_api_keys() {
    let broker = Broker::start();
    let http = broker.listener("http");
    wait_ready(http);
    let url = |path: &str| format!("http://{http}{path}");

    // The generated password: logged, mode 0600, under node.data_dir/dashboard.
    let file = generated_password_file(&broker);
    assert!(
        file.ends_with("dashboard/initial_admin_password"),
        "{file:?}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{file:?}");
    let password = read_password(&file);
    assert_eq!(password.len(), 24);

    // Protected without credentials; health and metrics stay public.
    let resp = client().get(url("/api/v5/api_key")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().unwrap();
    assert_eq!(body["code"], "UNAUTHORIZED", "{body}");
    for public in [
        "/status",
        "/api/v5/status",
        "/metrics",
        "/api/v5/prometheus/stats",
    ] {
        let status = client().get(url(public)).send().unwrap().status().as_u16();
        assert_eq!(status, 200, "{public}");
    }

    // Login: wrong password, malformed body, then right.
    let (status, body) = login(http, "admin", "not-the-password");
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"code": "BAD_USERNAME_OR_PWD", "message": "Auth failed"})
    );
    assert_error(
        call(client().post(url("/api/v5/login")).body("{\"username\":")),
        400,
        "BAD_REQUEST",
    );
    let (status, body) = login(http, "admin", &password);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "5.1.0");
    assert_eq!(body["license"]["edition"], "opensource");
    let token = body["token"].as_str().unwrap().to_owned();
    let bearer = |req: RequestBuilder| req.bearer_auth(&token);
    let (status, body) = call(bearer(client().get(url("/api/v5/api_key"))));
    assert_eq!((status, body), (200, json!([])));
    let (status, users) = call(bearer(client().get(url("/api/v5/users"))));
    assert_eq!(status, 200);
    assert_eq!(users[0]["username"], "admin", "{users}");
    assert_error(
        call(client().get(url("/api/v5/api_key")).bearer_auth("made-up")),
        401,
        "BAD_TOKEN",
    );

    // An API key: created (the secret shown once), used with Basic, disabled, deleted.
    let (status, key) = call(bearer(client().post(url("/api/v5/api_key")).json(&json!({
        "name": "ci-script",
        "desc": "e2e",
        "expired_at": "2099-01-01T00:00:00Z"
    }))));
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["enable"], true);
    assert_eq!(key["expired_at"], "2099-01-01T00:00:00Z");
    let (api_key, secret) = (
        key["api_key"].as_str().unwrap().to_owned(),
        key["api_secret"].as_str().unwrap().to_owned(),
    );
    let basic = |req: RequestBuilder| req.basic_auth(&api_key, Some(&secret));
    assert_error(
        call(bearer(
            client()
                .post(url("/api/v5/api_key"))
                .json(&json!({"name": "ci-script"})),
        )),
        400,
        "BAD_REQUEST",
    );
    assert_error(
        call(bearer(
            client()
                .post(url("/api/v5/api_key"))
                .json(&json!({"name": "9lives"})),
        )),
        400,
        "BAD_REQUEST",
    );
    let (status, list) = call(basic(client().get(url("/api/v5/api_key"))));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list[0]["name"], "ci-script");
    assert!(list[0].get("api_secret").is_none(), "{list}");
    // Again, from the cache of verified secrets.
    assert_eq!(
        call(basic(client().get(url("/api/v5/api_key/ci-script")))).0,
        200
    );
    assert_error(
        call(
            client()
                .get(url("/api/v5/api_key"))
                .basic_auth(&api_key, Some("wrong-secret")),
        ),
        401,
        "BAD_API_KEY_OR_SECRET",
    );
    let (status, _) = call(bearer(
        client()
            .put(url("/api/v5/api_key/ci-script"))
            .json(&json!({"enable": false})),
    ));
    assert_eq!(status, 200);
    assert_error(
        call(basic(client().get(url("/api/v5/api_key")))),
        401,
        "BAD_API_KEY_OR_SECRET",
    );
    let (status, _) = call(bearer(
        client()
            .put(url("/api/v5/api_key/ci-script"))
            .json(&json!({"enable": true})),
    ));
    assert_eq!(status, 200);
    assert_eq!(call(basic(client().get(url("/api/v5/api_key")))).0, 200);
    let (status, _) = call(basic(client().delete(url("/api/v5/api_key/ci-script"))));
    assert_eq!(status, 204);
    assert_error(
        call(basic(client().get(url("/api/v5/api_key")))),
        401,
        "BAD_API_KEY_OR_SECRET",
    );
    assert_error(
        call(bearer(client().get(url("/api/v5/api_key/ci-script")))),
        404,
        "NOT_FOUND",
    );

    // Logout ends the token.
    let (status, _) = call(bearer(
        client()
            .post(url("/api/v5/logout"))
            .json(&json!({"username": "admin"})),
    ));
    assert_eq!(status, 204);
    assert_error(
        call(bearer(client().get(url("/api/v5/api_key")))),
        401,
        "BAD_TOKEN",
    );
}

/// `broker admin passwd --data-dir DIR [USERNAME]` with `stdin` (or extra arguments).
fn passwd(dir: &Path, args: &[&str], stdin: &str) -> (Option<i32>, String) {
    let mut child = Command::new(BROKER)
        .args(["admin", "passwd", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn admin_passwd_changes_the_password_of_a_running_broker_and_after_a_restart() {
    let dir = scratch_dir();
    let broker = Broker::start_in(dir.clone(), &[]);
    let http = broker.listener("http");
    let first = read_password(&generated_password_file(&broker));
    let old_token = token(http, "admin", &first);

    let (code, out) = passwd(&dir, &[], "short\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("too short: at least 8 characters"), "{out}");
    let (code, out) = passwd(&dir, &[], "second-password\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("changed the password of dashboard user admin"),
        "{out}"
    );
    assert!(
        !dir.join("dashboard/initial_admin_password").exists(),
        "the generated password no longer works: its file is removed"
    );

    // The running broker: the old password and its sessions are gone, the new one works.
    assert_error(login(http, "admin", &first), 401, "BAD_USERNAME_OR_PWD");
    assert_error(
        call(
            client()
                .get(format!("http://{http}/api/v5/api_key"))
                .bearer_auth(&old_token),
        ),
        401,
        "BAD_TOKEN",
    );
    token(http, "admin", "second-password");
    // A new user, from a script.
    let (code, out) = passwd(&dir, &["--password", "ops-password", "ops"], "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created dashboard user ops"), "{out}");
    token(http, "ops", "ops-password");

    // After a restart: nothing generated, the same passwords.
    let log = broker.stop().log;
    assert!(log.contains("created dashboard user admin"), "{log}");
    let broker = Broker::start_in(dir.clone(), &[]);
    let http = broker.listener("http");
    assert!(
        !broker.log_text().contains("created dashboard user"),
        "{}",
        broker.log_text()
    );
    assert_error(login(http, "admin", &first), 401, "BAD_USERNAME_OR_PWD");
    token(http, "admin", "second-password");
    token(http, "ops", "ops-password");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_auth_protects_the_prometheus_endpoints_but_not_the_health_check() {
    let broker = Broker::start_with(&["dashboard.metrics_auth=true"]);
    let http = broker.listener("http");
    let password = read_password(&generated_password_file(&broker));
    for path in ["/metrics", "/api/v5/prometheus/stats"] {
        let url = format!("http://{http}{path}");
        assert_error(call(client().get(&url)), 401, "UNAUTHORIZED");
        let token = token(http, "admin", &password);
        let resp = client().get(&url).bearer_auth(token).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(
            resp.text().unwrap().contains("broker_connections"),
            "{path}"
        );
    }
    // The health check needs nothing (a 401 would never turn 200).
    wait_ready(http);
}

/// One HTTP/1.1 request over TLS, trusting `ca`; the status and the body.
fn https_request(addr: SocketAddr, ca: &str, request: &str) -> (u16, String) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // The answer ends with the connection (`Connection: close`); a peer that closes without
    // close_notify is an end too.
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the HTTPS answer: {e}"),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[test]
fn https_listener_serves_the_same_routes_and_survives_a_bad_handshake() {
    let pki = Pki::new();
    let sets = [
        "dashboard.listeners.https.enable=true".to_owned(),
        "dashboard.listeners.https.bind=127.0.0.1:0".to_owned(),
        format!(
            "dashboard.listeners.https.ssl_options.certfile={}",
            pki.path("server.pem")
        ),
        format!(
            "dashboard.listeners.https.ssl_options.keyfile={}",
            pki.path("server.key")
        ),
    ];
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let broker = Broker::start_with(&refs);
    let https = broker.listener("https");
    assert!(
        broker.log_text().contains(&format!(
            "listening on https {https} (dashboard.listeners.https"
        )),
        "{}",
        broker.log_text()
    );
    let ca = pki.path("ca.pem");
    let get = |path: &str| {
        https_request(
            https,
            &ca,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
    };
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (status, body) = loop {
        let (status, body) = get("/status");
        if status == 200 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("broker is running"), "{body}");

    // A client that does not speak TLS: its connection is closed, the listener goes on.
    let mut garbage = TcpStream::connect(https).unwrap();
    garbage.set_read_timeout(Some(TIMEOUT)).unwrap();
    garbage
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("broker is running"),
        "plain HTTP must not be answered on the HTTPS port"
    );

    let (status, body) = get("/api/v5/api_key");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"UNAUTHORIZED\""), "{body}");
    let password = read_password(&generated_password_file(&broker));
    let login = json!({"username": "admin", "password": password}).to_string();
    let (status, body) = https_request(
        https,
        &ca,
        &format!(
            "POST /api/v5/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{login}",
            login.len()
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"token\""), "{body}");
    // The plain HTTP listener serves too.
    let http = broker.listener("http");
    assert_eq!(
        client()
            .get(format!("http://{http}/status"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn https_without_a_certificate_is_refused_naming_the_key() {
    let dir = scratch_dir();
    let out = Command::new(BROKER)
        .args(["run", "--cores", "1"])
        .args(["--set", "listeners.tcp.default.bind=127.0.0.1:0"])
        .args(["--set", "listeners.ws.default.bind=127.0.0.1:0"])
        .args(["--set", "listeners.quic.default.bind=127.0.0.1:0"])
        .args(["--set", "dashboard.listeners.http.bind=127.0.0.1:0"])
        .args(["--set", "dashboard.listeners.https.enable=true"])
        .arg("--set")
        .arg(format!("node.data_dir={}", dir.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "dashboard.listeners.https.ssl_options.certfile: required when \
             dashboard.listeners.https.enable is true"
        ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
