//! The REST API v5 (EMQX 5.1 paths and shapes) against the real broker, with reqwest: kicking
//! paho clients, publishing to a `mosquitto_sub`, the retained store, client and subscription
//! listings with paging and filters, subscribing a client through the API, the route table
//! across both shards, node figures, listeners, the log settings, and the OpenAPI document
//! checked by schemathesis against the live API.
//!
//! Every test starts its own broker (own data directory, ephemeral ports). The API may require
//! authentication: when the broker wrote `dashboard/initial_admin_password`, [`Api::start`]
//! logs in as `admin` and sends the bearer token with every request; otherwise it sends none.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{
    Broker, Proc, Stopped, args, mosquitto, python, scratch_dir, script_result, unique,
};

/// How long one HTTP request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a condition polled over the API may take to hold (shards publish their figures
/// twice a second; routes reach the other shard after the SUBACK).
const SETTLE: Duration = Duration::from_secs(10);

/// How long a client script may take for one step.
const STEP: Duration = Duration::from_secs(20);

/// Polling period of conditions observed over the API.
const POLL: Duration = Duration::from_millis(20);

/// The pip command of schemathesis, the version `tools/setup.sh` installs.
const SCHEMATHESIS_PIP: &str = "pip install schemathesis==4.32.5";

// ---------------------------------------------------------------------------------------------
// The API client
// ---------------------------------------------------------------------------------------------

/// A broker and an HTTP client for its REST API.
struct Api {
    broker: Option<Broker>,
    dir: PathBuf,
    http: SocketAddr,
    client: reqwest::blocking::Client,
    token: Option<String>,
}

/// An answer: status, content type, body, and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
struct Resp {
    what: String,
    status: u16,
    content_type: String,
    body: String,
    json: Value,
}

impl Resp {
    /// Asserts the status and returns the JSON body.
    #[track_caller]
    fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.body);
        &self.json
    }

    /// Asserts an error answer: the status, a JSON `{code, message}` body with `code`, and a
    /// message that mentions `mentions`. Returns the message.
    #[track_caller]
    fn error(&self, status: u16, code: &str, mentions: &str) -> String {
        assert_eq!(self.status, status, "{}: {}", self.what, self.body);
        assert!(
            self.content_type.starts_with("application/json"),
            "{}: content type {:?}: {}",
            self.what,
            self.content_type,
            self.body
        );
        assert_eq!(self.json["code"], code, "{}: {}", self.what, self.body);
        let message = self.json["message"].as_str().unwrap_or_else(|| {
            panic!("{}: no message: {}", self.what, self.body);
        });
        assert!(
            message.contains(mentions),
            "{}: the message does not mention {mentions:?}: {}",
            self.what,
            self.body
        );
        let keys: BTreeSet<&str> = self
            .json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["code", "message"]),
            "{}: {}",
            self.what,
            self.body
        );
        message.to_owned()
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&...`, encoded.
fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

impl Api {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker on a fresh data directory, waits until it reports itself started, and
    /// logs in if it has an admin password.
    fn start_with(sets: &[&str]) -> Self {
        let dir = scratch_dir();
        let broker = Broker::start_in(dir.clone(), sets);
        let http = broker.listener("http");
        let client = reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .unwrap();
        let mut api = Api {
            broker: Some(broker),
            dir,
            http,
            client,
            token: None,
        };
        api.wait_started();
        api.token = api.authenticate();
        api
    }

    fn broker(&self) -> &Broker {
        self.broker.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `GET /api/v5/status` until 200 (503 while the shards start).
    fn wait_started(&self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = self.send(reqwest::Method::GET, "/api/v5/status", None, false);
            if r.status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "the broker did not start: {r:?}");
            std::thread::sleep(POLL);
        }
    }

    /// The bearer token, if the API needs one: the broker writes the admin password before it
    /// serves, so either the file is there or the API answers without credentials.
    fn authenticate(&self) -> Option<String> {
        let file = self.dir.join("dashboard").join("initial_admin_password");
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Ok(password) = std::fs::read_to_string(&file)
                && !password.trim().is_empty()
            {
                let body = json!({"username": "admin", "password": password.trim()});
                let r = self.send(
                    reqwest::Method::POST,
                    "/api/v5/login",
                    Some(body.to_string()),
                    false,
                );
                let token = r.expect(200)["token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no token: {r:?}"));
                return Some(token.to_owned());
            }
            let r = self.send(reqwest::Method::GET, "/api/v5/nodes", None, false);
            if r.status == 200 {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "the API refuses requests without credentials but {} does not exist: {r:?}",
                file.display()
            );
            std::thread::sleep(POLL);
        }
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<String>, auth: bool) -> Resp {
        let what = format!("{method} {path}");
        let mut req = self.client.request(method, self.url(path));
        if auth && let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.text().unwrap_or_else(|e| panic!("{what}: {e}"));
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Resp {
            what,
            status,
            content_type,
            body,
            json,
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None, true)
    }

    fn get_q(&self, path: &str, query: &[(&str, &str)]) -> Resp {
        self.get(&with_query(path, query))
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(body.to_string()), true)
    }

    fn post_raw(&self, path: &str, body: &str) -> Resp {
        self.send(reqwest::Method::POST, path, Some(body.to_owned()), true)
    }

    fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(body.to_string()), true)
    }

    fn delete(&self, path: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, None, true)
    }

    /// Polls `GET path` until `pred` holds on its JSON; returns it. Panics with the last
    /// answer at the deadline.
    #[track_caller]
    fn get_until(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = self.get(path);
            if r.status == 200 && pred(&r.json) {
                return r.json;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: never held within {SETTLE:?}: {r:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The client ids `GET /api/v5/clients` lists with `query` (one page of 1,000), after
    /// checking the page's meta.
    #[track_caller]
    fn client_ids(&self, query: &[(&str, &str)]) -> Vec<String> {
        let mut q = vec![("limit", "1000")];
        q.extend_from_slice(query);
        let r = self.get_q("/api/v5/clients", &q);
        let v = r.expect(200);
        let ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["clientid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(v["meta"]["count"], ids.len(), "{}: {}", r.what, r.body);
        assert_eq!(v["meta"]["hasnext"], false);
        ids
    }

    /// Publishes `warm` through the API to `{prefix}/warmN` topics owned by each shard until
    /// each matches, so that the route of a new `{prefix}/#` subscription is known everywhere.
    fn warm_routes(&self, prefix: &str) {
        for shard in 0..2u16 {
            let topic = (0..)
                .map(|i| format!("{prefix}/warm{i}"))
                .find(|t| shard::core::owner_of(t, 2) == shard)
                .unwrap();
            self.publish_until_matched(&topic, "warm");
        }
    }

    /// Waits until the API shows `client_id`'s session offline (a client's DISCONNECT reaches
    /// the broker after the client has closed its socket).
    fn wait_offline(&self, client_id: &str) {
        self.get_until(
            &format!("/api/v5/clients/{}", enc(client_id)),
            "offline",
            |v| v["connected"] == false,
        );
    }

    /// Waits until `GET /clients/{client_id}` is a 404 `CLIENTID_NOT_FOUND`.
    fn wait_gone(&self, client_id: &str) {
        let path = format!("/api/v5/clients/{}", enc(client_id));
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = self.get(&path);
            if r.status == 404 {
                r.error(404, "CLIENTID_NOT_FOUND", "");
                return;
            }
            assert!(Instant::now() < deadline, "{client_id} stays: {r:?}");
            std::thread::sleep(POLL);
        }
    }

    /// Publishes `payload` to `topic` through the API until some subscriber matches (200), so
    /// that a new subscription's route has reached the topic's owner.
    fn publish_until_matched(&self, topic: &str, payload: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let r = self.post(
                "/api/v5/publish",
                &json!({"topic": topic, "payload": payload}),
            );
            if r.status == 200 {
                return;
            }
            r.expect(202);
            assert!(
                Instant::now() < deadline,
                "{topic}: no route within {SETTLE:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Stops the broker (SIGTERM) and checks it exited cleanly; removes the data directory.
    fn stop(mut self) -> Stopped {
        let stopped = self.broker.take().unwrap().stop();
        stopped.assert_clean();
        stopped
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        drop(self.broker.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The paho clients (`clients/api_clients.py`)
// ---------------------------------------------------------------------------------------------

/// `ID:USER:PROTO:CLEAN:EXPIRY`, as `api_clients.py` takes it.
fn spec(id: &str, user: Option<&str>, proto: &str, clean: bool, expiry: Option<u32>) -> String {
    format!(
        "{id}:{}:{proto}:{}:{}",
        user.unwrap_or("-"),
        u8::from(clean),
        expiry.map_or("-".to_owned(), |e| e.to_string())
    )
}

/// A running `api_clients.py`: its commands, and everything it reported.
struct Clients {
    proc: Proc,
    /// `{"phase": "message", ...}` lines so far.
    messages: Vec<Value>,
    /// `{"phase": "lost", ...}` lines so far.
    lost: Vec<Value>,
    lines: Vec<String>,
}

impl Clients {
    fn start(api: &Api, specs: &[String]) -> Self {
        let rest: Vec<&dyn std::fmt::Display> =
            specs.iter().map(|s| s as &dyn std::fmt::Display).collect();
        let proc = python("api_clients.py", &args(api.broker(), &rest));
        let mut c = Clients {
            proc,
            messages: Vec::new(),
            lost: Vec::new(),
            lines: Vec::new(),
        };
        c.wait("connected", |_| true);
        c
    }

    /// Reads lines until one with `phase` satisfies `pred`, recording messages and losses.
    fn wait(&mut self, phase: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        while let Some(line) = self.proc.next_line(deadline) {
            self.lines.push(line.clone());
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["phase"].as_str() {
                Some("message") => self.messages.push(v.clone()),
                Some("lost") => self.lost.push(v.clone()),
                _ => {}
            }
            if v["phase"] == phase && pred(&v) {
                return v;
            }
            assert!(
                v["ok"] != false,
                "api_clients.py failed:\n{}",
                self.lines.join("\n")
            );
        }
        panic!(
            "api_clients.py: no {phase:?} within {STEP:?}:\n{}",
            self.lines.join("\n")
        );
    }

    /// Sends a command and waits for its answer.
    fn command(&mut self, line: &str, phase: &str) -> Value {
        self.proc.send_line(line);
        self.wait(phase, |_| true)
    }

    fn connect(&mut self, specs: &[String]) {
        self.command(&format!("connect {}", specs.join(" ")), "connected");
    }

    fn subscribe(&mut self, id: &str, qos: u8, filter: &str) {
        let v = self.command(&format!("sub {id} {qos} {filter}"), "subscribed");
        assert_eq!(v["granted"], json!([qos]), "{v}");
    }

    /// Everything reported so far is in `messages` and `lost` (a barrier).
    fn sync(&mut self) {
        self.command("ping", "pong");
    }

    /// Waits for a message with `payload` to `client`.
    fn wait_message(&mut self, client: &str, payload: &str) -> Value {
        if let Some(m) = self
            .messages
            .iter()
            .find(|m| m["client"] == client && m["payload"] == payload)
        {
            return m.clone();
        }
        self.wait("message", |m| {
            m["client"] == client && m["payload"] == payload
        })
    }

    /// The payloads `client` received so far.
    fn payloads(&self, client: &str) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m["client"] == client)
            .map(|m| m["payload"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Closes standard input; the script disconnects everyone and reports.
    fn finish(self) -> Value {
        let done = self.proc.finish(STEP);
        script_result("api_clients.py", &done)
    }
}

// ---------------------------------------------------------------------------------------------
// Kicking
// ---------------------------------------------------------------------------------------------

#[test]
fn kick_disconnects_the_client_and_discards_its_session() {
    let api = Api::start();
    let id5 = unique("kick5-");
    let id3 = unique("kick3-");
    let offline = unique("kickoff-");
    let stay = unique("stay-");
    let mut c = Clients::start(
        &api,
        &[
            spec(&id5, Some("k"), "5", false, Some(3600)),
            spec(&id3, None, "311", false, None),
            spec(&offline, None, "5", false, Some(3600)),
            spec(&stay, None, "5", true, None),
        ],
    );
    c.command(&format!("disconnect {offline}"), "disconnected");
    api.wait_offline(&offline);
    let v = api.get(&format!("/api/v5/clients/{id5}"));
    let v = v.expect(200);
    assert_eq!(v["clientid"], id5.as_str());
    assert_eq!(v["connected"], true);
    assert_eq!(v["expiry_interval"], 3600);
    assert_eq!(v["proto_ver"], 5);
    assert_eq!(v["username"], "k");

    for (id, v5) in [(&id5, true), (&id3, false)] {
        let r = api.delete(&format!("/api/v5/clients/{id}"));
        r.expect(204);
        assert!(r.body.is_empty(), "{r:?}");
        let lost = c.wait("lost", |l| l["client"] == id.as_str());
        if v5 {
            assert_eq!(lost["reason"], 0x98, "Administrative action: {lost}");
            assert_eq!(
                lost["from_server"], true,
                "a DISCONNECT from the server: {lost}"
            );
        } else {
            assert_eq!(lost["from_server"], false, "no DISCONNECT in 3.1.1: {lost}");
        }
        // The session is discarded with the connection, despite its expiry interval.
        // (Polled: that the 204 comes only once it is gone is the next test's concern.)
        api.wait_gone(id);
        assert!(!api.client_ids(&[]).contains(id));
        api.delete(&format!("/api/v5/clients/{id}"))
            .error(404, "CLIENTID_NOT_FOUND", "");
    }

    // An offline persistent session is discarded too.
    let v = api.get(&format!("/api/v5/clients/{offline}"));
    assert_eq!(v.expect(200)["connected"], false);
    api.delete(&format!("/api/v5/clients/{offline}"))
        .expect(204);
    api.get(&format!("/api/v5/clients/{offline}"))
        .error(404, "CLIENTID_NOT_FOUND", "");
    api.delete("/api/v5/clients/nobody-at-all")
        .error(404, "CLIENTID_NOT_FOUND", "");

    assert_eq!(api.client_ids(&[]), std::slice::from_ref(&stay));
    c.sync();
    assert_eq!(
        c.lost.len(),
        2,
        "only the kicked clients lost their connection: {:?}",
        c.lost
    );
    let result = c.finish();
    assert_eq!(result["clients"][&stay]["lost"], json!([]));
    api.stop();
}

#[test]
fn a_kick_takes_effect_before_the_answer() {
    // The answer to DELETE comes once the session is gone: an immediate lookup must not find
    // it. Repeated, since the window is short.
    let api = Api::start();
    let ids: Vec<String> = (0..200)
        .map(|i| format!("{}-{i:03}", unique("race")))
        .collect();
    let specs: Vec<String> = ids
        .iter()
        .map(|id| spec(id, None, "5", false, Some(600)))
        .collect();
    let c = Clients::start(&api, &specs);
    let mut found = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        api.delete(&format!("/api/v5/clients/{id}")).expect(204);
        let r = api.get(&format!("/api/v5/clients/{id}"));
        if r.status != 404 {
            found.push(format!("#{i}: {} {}", r.status, r.body));
        }
    }
    assert!(
        found.is_empty(),
        "{} of {} lookups right after a kick's 204 still found the session:\n{}",
        found.len(),
        ids.len(),
        found.join("\n")
    );
    drop(c);
}

// ---------------------------------------------------------------------------------------------
// Publishing and the retained store
// ---------------------------------------------------------------------------------------------

/// A `mosquitto_sub -V mqttv5` on `filter` printing `topic|qos|retain|payload` lines.
fn subscriber(api: &Api, filter: &str, qos: &str, extra: &[&str]) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &api.broker().port(),
        "-V",
        "mqttv5",
    ])
    .args(["-i", &unique("apisub"), "-q", qos, "-t", filter])
    .args(["-F", "%t|%q|%r|%p"])
    .args(extra);
    Proc::spawn("mosquitto_sub", cmd).unwrap()
}

/// Reads `sub`'s lines until every one of `want` was seen (warm-up lines ignored); fails on
/// any other line. Returns the lines in arrival order.
fn expect_lines(sub: &mut Proc, want: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    let mut got = Vec::new();
    while !want.iter().all(|w| got.iter().any(|g: &String| g == w)) {
        let Some(line) = sub.next_line(deadline) else {
            panic!("mosquitto_sub: wanted {want:?}, got {got:?}");
        };
        if line.ends_with("|warm") {
            continue;
        }
        assert!(
            want.contains(&line.as_str()),
            "unexpected {line:?}; wanted {want:?}"
        );
        got.push(line);
    }
    got
}

#[test]
fn publish_through_the_api_reaches_a_subscriber() {
    let api = Api::start();
    let mut sub = subscriber(&api, "t/#", "1", &[]);
    api.warm_routes("t");
    let b64 = base64::engine::general_purpose::STANDARD;

    // Plain and base64 payloads, QoS 0 and 1.
    let r = api.post(
        "/api/v5/publish",
        &json!({"topic": "t/plain", "payload": "hello", "qos": 0}),
    );
    let id = r.expect(200)["id"].as_str().unwrap().to_owned();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(r.json.get("reason_code").is_none(), "{}", r.body);
    api.post(
        "/api/v5/publish",
        &json!({"topic": "t/b64", "payload": b64.encode("bytes \u{1}\u{2}"), "payload_encoding": "base64", "qos": 1}),
    )
    .expect(200);
    api.post(
        "/api/v5/publish",
        &json!({"topic": "t/q1", "payload": "one", "qos": 1, "properties": {"user_properties": {"k": "v"}, "content_type": "text/plain"}}),
    )
    .expect(200);
    expect_lines(
        &mut sub,
        &[
            "t/plain|0|0|hello",
            "t/b64|1|0|bytes \u{1}\u{2}",
            "t/q1|1|0|one",
        ],
    );

    // Nobody subscribes: 202 with reason code 16.
    let r = api.post(
        "/api/v5/publish",
        &json!({"topic": "nobody/here", "payload": "x"}),
    );
    let v = r.expect(202);
    assert_eq!(v["reason_code"], 16, "{}", r.body);
    assert!(v.get("id").is_none(), "{}", r.body);

    // Retained: delivered live (RETAIN 0, MQTT 5 without Retain As Published) and stored.
    let rb = b64.encode("kept \u{7f}!");
    api.post(
        "/api/v5/publish",
        &json!({"topic": "t/ret/a", "payload": rb, "payload_encoding": "base64", "qos": 1, "retain": true}),
    )
    .expect(200);
    api.post(
        "/api/v5/publish",
        &json!({"topic": "noone/ret", "payload": "also kept", "retain": true}),
    )
    .expect(202);
    expect_lines(&mut sub, &["t/ret/a|1|0|kept \u{7f}!"]);
    let list = api.get("/api/v5/mqtt/retainer/messages");
    let v = list.expect(200);
    let topics: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["noone/ret", "t/ret/a"], "{}", list.body);
    assert_eq!(v["meta"]["count"], 2);
    assert_eq!(v["data"][1]["qos"], 1);
    for path in [
        "/api/v5/mqtt/retainer/message/t/ret/a",
        "/api/v5/mqtt/retainer/message/t%2Fret%2Fa",
    ] {
        let r = api.get(path);
        let m = r.expect(200);
        assert_eq!(m["topic"], "t/ret/a", "{}", r.body);
        assert_eq!(m["payload"], rb.as_str(), "{}", r.body);
        assert_eq!(m["qos"], 1);
    }
    // A new subscriber gets it with RETAIN 1.
    let mut late = subscriber(&api, "t/ret/#", "1", &["-C", "1"]);
    expect_lines(&mut late, &["t/ret/a|1|1|kept \u{7f}!"]);
    assert!(late.finish(STEP).status.success());
    api.delete("/api/v5/mqtt/retainer/message/t/ret/a")
        .expect(204);
    api.get("/api/v5/mqtt/retainer/message/t/ret/a")
        .error(404, "NOT_FOUND", "");
    api.delete("/api/v5/mqtt/retainer/message/t/ret/a")
        .error(404, "NOT_FOUND", "");
    let v = api.get("/api/v5/mqtt/retainer/messages");
    assert_eq!(v.expect(200)["meta"]["count"], 1, "{}", v.body);

    // Bulk: one answer per message, 202 when one matched nobody, 200 when all did.
    let r = api.post(
        "/api/v5/publish/bulk",
        &json!([
            {"topic": "t/bulk/1", "payload": "b1"},
            {"topic": "t/bulk/2", "payload": b64.encode("b2"), "payload_encoding": "base64", "qos": 1},
            {"topic": "nobody/bulk", "payload": "b3"},
        ]),
    );
    let v = r.expect(202).as_array().unwrap();
    assert_eq!(v.len(), 3, "{}", r.body);
    assert!(
        v[0]["id"].is_string() && v[1]["id"].is_string(),
        "{}",
        r.body
    );
    assert_eq!(v[2]["reason_code"], 16, "{}", r.body);
    let r = api.post(
        "/api/v5/publish/bulk",
        &json!([{"topic": "t/bulk/3", "payload": "b4"}, {"topic": "t/bulk/4", "payload": "b5", "qos": 1}]),
    );
    assert_eq!(r.expect(200).as_array().unwrap().len(), 2);
    expect_lines(
        &mut sub,
        &[
            "t/bulk/1|0|0|b1",
            "t/bulk/2|1|0|b2",
            "t/bulk/3|0|0|b4",
            "t/bulk/4|1|0|b5",
        ],
    );

    // Bad requests: nothing is published, the message names the field.
    let bad = |body: &str, mentions: &str| {
        api.post_raw("/api/v5/publish", body)
            .error(400, "BAD_REQUEST", mentions);
    };
    bad(r#"{"topic": "t/+", "payload": "x"}"#, "topic");
    bad(r#"{"topic": "t/#", "payload": "x"}"#, "topic");
    bad(r#"{"topic": "", "payload": "x"}"#, "topic");
    bad(
        r#"{"topic": "t/x", "payload": "***", "payload_encoding": "base64"}"#,
        "payload",
    );
    bad(
        r#"{"topic": "t/x", "payload": "x", "payload_encoding": "hex"}"#,
        "payload_encoding",
    );
    bad(r#"{"topic": "t/x", "payload": "x", "qos": 3}"#, "qos");
    bad(r#"{"topic": 5, "payload": "x"}"#, "topic");
    bad(r#"{"payload": "x"}"#, "topic");
    bad(r#"{"topic": "t/x", "payload": "x""#, "JSON");
    bad("not json", "JSON");
    api.post_raw(
        "/api/v5/publish/bulk",
        r#"[{"topic": "t/ok", "payload": "x"}, {"topic": "t/+"}]"#,
    )
    .error(400, "BAD_REQUEST", "[1]: topic");
    api.post_raw("/api/v5/publish/bulk", "[]")
        .error(400, "BAD_REQUEST", "");
    // None of them reached the subscriber: the next line is this one.
    api.post(
        "/api/v5/publish",
        &json!({"topic": "t/last", "payload": "last"}),
    )
    .expect(200);
    expect_lines(&mut sub, &["t/last|0|0|last"]);
    drop(sub);
    api.stop();
}

// ---------------------------------------------------------------------------------------------
// Client listings
// ---------------------------------------------------------------------------------------------

/// Query parameters.
type Query<'a> = Vec<(&'a str, &'a str)>;

/// Unix milliseconds of an RFC 3339 time.
fn unix_ms(rfc3339: &str) -> u64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"));
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

#[test]
fn clients_are_listed_with_paging_and_filters() {
    let api = Api::start();
    let tag = unique("pg");
    let id = |i: usize| format!("{tag}-{i:02}");
    // Client i: MQTT 3.1.1 when i % 5 == 0, 3.1 when i % 5 == 1, else 5; user name `u-even`
    // or `u-odd-i`; Clean Start 0 (expiry 600) when i % 4 == 3.
    let spec_of = |i: usize| {
        let proto = match i % 5 {
            0 => "311",
            1 => "31",
            _ => "5",
        };
        let user = if i % 2 == 0 {
            "u-even".to_owned()
        } else {
            format!("u-odd-{i}")
        };
        let persistent = i % 4 == 3;
        spec(
            &id(i),
            Some(&user),
            proto,
            !persistent,
            (persistent && proto == "5").then_some(600),
        )
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let first: Vec<usize> = (0..13).collect();
    let second: Vec<usize> = (13..25).collect();
    let mut c = Clients::start(&api, &first.iter().map(|&i| spec_of(i)).collect::<Vec<_>>());
    // Pacing, so that the two batches' connection times differ.
    std::thread::sleep(Duration::from_millis(20));
    let offline = format!("{tag}-off");
    let mut later: Vec<String> = second.iter().map(|&i| spec_of(i)).collect();
    later.push(spec(&offline, Some("u-gone"), "5", false, Some(600)));
    c.connect(&later);
    c.command(&format!("disconnect {offline}"), "disconnected");
    api.wait_offline(&offline);
    let ids = |v: &[usize]| v.iter().map(|&i| id(i)).collect::<Vec<_>>();
    let connected = ids(&(0..25).collect::<Vec<_>>());
    let mut everyone = connected.clone();
    everyone.push(offline.clone());

    // Pages 1 to 3 of 10: disjoint, sorted, covering everyone.
    let mut seen = Vec::new();
    for (page, len, hasnext) in [(1, 10, true), (2, 10, true), (3, 6, false)] {
        let r = api.get_q(
            "/api/v5/clients",
            &[("page", &page.to_string()), ("limit", "10")],
        );
        let v = r.expect(200);
        assert_eq!(
            v["meta"],
            json!({"page": page, "limit": 10, "count": 26, "hasnext": hasnext}),
            "{}",
            r.body
        );
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), len, "{}", r.body);
        seen.extend(
            data.iter()
                .map(|c| c["clientid"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, everyone, "pages in client id order, each client once");
    let v = api.get_q("/api/v5/clients", &[("page", "4"), ("limit", "10")]);
    assert_eq!(v.expect(200)["data"], json!([]));
    let r = api.get("/api/v5/clients");
    let v = r.expect(200);
    assert_eq!(v["meta"]["limit"], 100);
    assert_eq!(v["meta"]["count"], 26);

    // One entry's fields.
    let all = &v["data"];
    let entry = |cid: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["clientid"] == cid)
            .unwrap()
            .clone()
    };
    let c3 = entry(&id(3));
    assert_eq!(c3["username"], "u-odd-3");
    assert_eq!(c3["proto_ver"], 5);
    assert_eq!(c3["proto_name"], "MQTT");
    assert_eq!(c3["clean_start"], false);
    assert_eq!(c3["connected"], true);
    assert_eq!(c3["expiry_interval"], 600);
    assert_eq!(c3["ip_address"], "127.0.0.1");
    assert_eq!(c3["listener"], "tcp:default");
    assert_eq!(c3["keepalive"], 60);
    assert!(c3["shard"] == 0 || c3["shard"] == 1, "{c3}");
    assert_eq!(entry(&id(1))["proto_name"], "MQIsdp");
    let connected_at = unix_ms(c3["connected_at"].as_str().unwrap());
    assert!(
        u128::from(connected_at) + 1_000 >= before && u128::from(connected_at) < before + 60_000,
        "{c3}"
    );
    let off = entry(&offline);
    assert_eq!(off["connected"], false);
    assert!(off["disconnected_at"].is_string(), "{off}");
    // Offline, the session shows its last connection, as EMQX does.
    assert_eq!(off["username"], "u-gone", "{off}");
    assert_eq!(off["ip_address"], "127.0.0.1", "{off}");
    assert_eq!(off["clean_start"], false, "{off}");

    let odd = ids(&(0..25).filter(|i| i % 2 == 1).collect::<Vec<_>>());
    let even = ids(&(0..25).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    let v311 = ids(&[0, 5, 10, 15, 20]);
    let v31 = ids(&[1, 6, 11, 16, 21]);
    let mut v5 = ids(&(0..25).filter(|i| i % 5 > 1).collect::<Vec<_>>());
    v5.push(offline.clone());
    let persistent = ids(&[3, 7, 11, 15, 19, 23]);
    let clean = ids(&(0..25).filter(|i| i % 4 != 3).collect::<Vec<_>>());
    let teens = ids(&(10..20).collect::<Vec<_>>());
    let teen_prefix = format!("{tag}-1");
    let id4 = id(4);
    let cases: Vec<(Query<'_>, Vec<String>)> = vec![
        (vec![("username", "u-even")], even.clone()),
        (vec![("username", "u-odd-7")], ids(&[7])),
        (vec![("username", "u-odd")], vec![]),
        (vec![("like_username", "odd")], odd.clone()),
        // The offline session's last user name counts too.
        (vec![("like_username", "u-")], everyone.clone()),
        (vec![("username", "u-gone")], vec![offline.clone()]),
        (vec![("like_clientid", &teen_prefix)], teens.clone()),
        (vec![("like_clientid", "-1")], teens.clone()),
        (vec![("clientid", &id4)], ids(&[4])),
        (vec![("proto_ver", "4")], v311.clone()),
        (vec![("proto_ver", "3")], v31.clone()),
        (vec![("proto_ver", "5")], v5.clone()),
        (vec![("conn_state", "connected")], connected.clone()),
        (vec![("conn_state", "disconnected")], vec![offline.clone()]),
        (
            vec![("clean_start", "false"), ("conn_state", "connected")],
            persistent.clone(),
        ),
        (
            vec![("clean_start", "false"), ("conn_state", "disconnected")],
            vec![offline.clone()],
        ),
        (vec![("clean_start", "true")], clean.clone()),
        (
            vec![("ip_address", "127.0.0.1"), ("conn_state", "connected")],
            connected.clone(),
        ),
        (vec![("ip_address", "127.0.0.1")], everyone.clone()),
        (vec![("ip_address", "10.1.2.3")], vec![]),
        (vec![("ip_address", "::1")], vec![]),
        (
            vec![("username", "u-even"), ("proto_ver", "4")],
            ids(&[0, 10, 20]),
        ),
    ];
    for (query, want) in &cases {
        assert_eq!(&api.client_ids(query), want, "{query:?}");
    }

    // Connection times: the first batch connected before the second. (Unix ms, RFC 3339,
    // client id) of each.
    let times = |batch: &[usize]| -> Vec<(u64, String, String)> {
        batch
            .iter()
            .map(|&i| {
                let t = entry(&id(i))["connected_at"].as_str().unwrap().to_owned();
                (unix_ms(&t), t, id(i))
            })
            .collect()
    };
    let (a, b) = (times(&first), times(&second));
    let last_a = a.iter().max().unwrap().clone();
    let first_b = b.iter().min().unwrap().clone();
    assert!(last_a.0 < first_b.0, "{last_a:?} {first_b:?}");
    let mut later_ids = ids(&second);
    later_ids.push(offline.clone());
    for v in [&last_a.1, &last_a.0.to_string()] {
        assert_eq!(
            api.client_ids(&[("lte_connected_at", v)]),
            ids(&first),
            "lte {v}"
        );
    }
    for v in [&first_b.1, &first_b.0.to_string()] {
        assert_eq!(
            api.client_ids(&[("gte_connected_at", v)]),
            later_ids,
            "gte {v}"
        );
    }
    let at = first_b.0.to_string();
    let exact = api.client_ids(&[("gte_connected_at", &at), ("lte_connected_at", &first_b.1)]);
    assert!(exact.contains(&first_b.2), "{exact:?} {first_b:?}");
    assert!(exact.iter().all(|i| later_ids.contains(i)), "{exact:?}");

    // Bad parameters.
    for (query, mentions) in [
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "10001")], "limit"),
        (vec![("page", "0")], "page"),
        (vec![("conn_state", "bogus")], "conn_state"),
        (vec![("proto_ver", "9")], "proto_ver"),
        (vec![("ip_address", "localhost")], "ip_address"),
        (vec![("gte_connected_at", "yesterday")], "gte_connected_at"),
        (
            vec![("lte_connected_at", "2026-13-01T00:00:00Z")],
            "lte_connected_at",
        ),
    ] {
        api.get_q("/api/v5/clients", &query)
            .error(400, "BAD_REQUEST", mentions);
    }
    drop(c);
    api.stop();
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

/// (clientid, topic, qos) of a subscription listing.
fn subs(v: &Value) -> Vec<(String, String, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["clientid"].as_str().unwrap().to_owned(),
                s["topic"].as_str().unwrap().to_owned(),
                s["qos"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn subscriptions_are_listed_and_managed_through_the_api() {
    let api = Api::start();
    let a = unique("suba-");
    let b = unique("subb-");
    let mut c = Clients::start(
        &api,
        &[
            spec(&a, None, "5", true, None),
            spec(&b, None, "311", false, None),
        ],
    );
    c.subscribe(&a, 1, "s/a/#");
    c.subscribe(&a, 0, "$share/g1/s/shared");
    c.subscribe(&b, 2, "s/b/+");
    c.subscribe(&b, 0, "s/a/#");

    let r = api.get(&format!("/api/v5/clients/{a}/subscriptions"));
    let v = r.expect(200);
    let s = |c: &str, t: &str, q: u64| (c.to_owned(), t.to_owned(), q);
    assert_eq!(
        subs(v),
        [s(&a, "$share/g1/s/shared", 0), s(&a, "s/a/#", 1)],
        "{}",
        r.body
    );
    let node = api.get("/api/v5/nodes").expect(200)[0]["node"].clone();
    assert_eq!(
        v[1],
        json!({"clientid": a, "topic": "s/a/#", "qos": 1, "nl": 0, "rap": 0, "rh": 0, "node": node})
    );
    api.get("/api/v5/clients/nobody/subscriptions")
        .error(404, "CLIENTID_NOT_FOUND", "");

    let list = |query: &[(&str, &str)]| {
        let r = api.get_q("/api/v5/subscriptions", query);
        let v = r.expect(200).clone();
        assert_eq!(
            v["meta"]["count"],
            v["data"].as_array().unwrap().len(),
            "{}",
            r.body
        );
        subs(&v["data"])
    };
    let all = vec![
        s(&a, "$share/g1/s/shared", 0),
        s(&a, "s/a/#", 1),
        s(&b, "s/a/#", 0),
        s(&b, "s/b/+", 2),
    ];
    assert_eq!(list(&[]), all);
    assert_eq!(list(&[("clientid", &a)]), all[..2]);
    assert_eq!(
        list(&[("topic", "s/a/#")]),
        [all[1].clone(), all[2].clone()]
    );
    assert_eq!(list(&[("qos", "2")]), [all[3].clone()]);
    assert_eq!(list(&[("qos", "0")]), [all[0].clone(), all[2].clone()]);
    assert_eq!(list(&[("share_group", "g1")]), [all[0].clone()]);
    assert_eq!(list(&[("share_group", "g2")]), []);
    assert_eq!(
        list(&[("match_topic", "s/a/x")]),
        [all[1].clone(), all[2].clone()]
    );
    assert_eq!(list(&[("match_topic", "s/b/1")]), [all[3].clone()]);
    assert_eq!(list(&[("match_topic", "s/shared")]), [all[0].clone()]);
    assert_eq!(list(&[("clientid", &b), ("qos", "2")]), [all[3].clone()]);
    // Pages of 3.
    for (page, want, hasnext) in [(1, &all[..3], true), (2, &all[3..], false)] {
        let r = api.get_q(
            "/api/v5/subscriptions",
            &[("limit", "3"), ("page", &page.to_string())],
        );
        let v = r.expect(200);
        assert_eq!(subs(&v["data"]), want, "{}", r.body);
        assert_eq!(v["meta"]["hasnext"], hasnext, "{}", r.body);
        assert_eq!(v["meta"]["count"], 4);
    }
    for (query, mentions) in [
        (vec![("qos", "3")], "qos"),
        (vec![("match_topic", "s/+")], "match_topic"),
        (vec![("limit", "0")], "limit"),
        (vec![("page", "0")], "page"),
    ] {
        api.get_q("/api/v5/subscriptions", &query)
            .error(400, "BAD_REQUEST", mentions);
    }

    // Subscribe A through the API: a later publish reaches it.
    let r = api.post(
        &format!("/api/v5/clients/{a}/subscribe"),
        &json!({"topic": "api/x", "qos": 1}),
    );
    let v = r.expect(200);
    assert_eq!(
        v,
        &json!({"clientid": a, "topic": "api/x", "qos": 1, "node": node}),
        "{}",
        r.body
    );
    let r = api.get(&format!("/api/v5/clients/{a}/subscriptions"));
    assert!(
        subs(r.expect(200)).contains(&s(&a, "api/x", 1)),
        "{}",
        r.body
    );
    api.publish_until_matched("api/x", "warm");
    api.post(
        "/api/v5/publish",
        &json!({"topic": "api/x", "payload": "after-sub", "qos": 1}),
    )
    .expect(200);
    let m = c.wait_message(&a, "after-sub");
    assert_eq!(
        (m["topic"].as_str(), m["qos"].as_u64()),
        (Some("api/x"), Some(1)),
        "{m}"
    );

    // Unsubscribe: 204, and publishes no longer arrive.
    api.post(
        &format!("/api/v5/clients/{a}/unsubscribe"),
        &json!({"topic": "api/x"}),
    )
    .expect(204);
    let r = api.get(&format!("/api/v5/clients/{a}/subscriptions"));
    assert!(
        !subs(r.expect(200)).iter().any(|s| s.1 == "api/x"),
        "{}",
        r.body
    );
    let r = api.post(
        "/api/v5/publish",
        &json!({"topic": "api/x", "payload": "after-unsub", "qos": 1}),
    );
    assert!(r.status == 200 || r.status == 202, "{r:?}");
    // A barrier: a message published later on a topic A still has.
    api.post(
        "/api/v5/publish",
        &json!({"topic": "s/a/barrier", "payload": "barrier", "qos": 1}),
    )
    .expect(200);
    c.wait_message(&a, "barrier");
    c.wait_message(&b, "barrier");
    c.sync();
    assert!(
        !c.payloads(&a).contains(&"after-unsub".to_owned()),
        "{:?}",
        c.payloads(&a)
    );
    // The route goes away everywhere.
    let deadline = Instant::now() + SETTLE;
    while api
        .post(
            "/api/v5/publish",
            &json!({"topic": "api/x", "payload": "gone?"}),
        )
        .status
        != 202
    {
        assert!(Instant::now() < deadline, "the route of api/x stays");
        std::thread::sleep(POLL);
    }
    c.sync();
    assert!(
        !c.payloads(&a).iter().any(|p| p == "gone?"),
        "{:?}",
        c.payloads(&a)
    );
    api.post(
        &format!("/api/v5/clients/{a}/unsubscribe"),
        &json!({"topic": "api/x"}),
    )
    .error(404, "NOT_FOUND", "");

    // Shared subscriptions through the API too; B (3.1.1) at QoS 2.
    api.post(
        &format!("/api/v5/clients/{b}/subscribe"),
        &json!({"topic": "$share/g1/s/shared", "qos": 2}),
    )
    .expect(200);
    assert_eq!(
        list(&[("share_group", "g1")]),
        [all[0].clone(), s(&b, "$share/g1/s/shared", 2)]
    );

    // Unknown clients, bad bodies.
    api.post("/api/v5/clients/nobody/subscribe", &json!({"topic": "x"}))
        .error(404, "CLIENTID_NOT_FOUND", "");
    api.post("/api/v5/clients/nobody/unsubscribe", &json!({"topic": "x"}))
        .error(404, "CLIENTID_NOT_FOUND", "");
    let sub_path = format!("/api/v5/clients/{a}/subscribe");
    api.post(&sub_path, &json!({"topic": "a/#/b"}))
        .error(400, "BAD_REQUEST", "topic");
    api.post(&sub_path, &json!({"topic": "a", "qos": 3}))
        .error(400, "BAD_REQUEST", "qos");
    api.post(&sub_path, &json!({"topic": "a", "rh": 3}))
        .error(400, "BAD_REQUEST", "rh");
    api.post(&sub_path, &json!({"qos": 1}))
        .error(400, "BAD_REQUEST", "topic");
    api.post_raw(&sub_path, "{")
        .error(400, "BAD_REQUEST", "JSON");
    // A session whose client is offline cannot be subscribed.
    c.command(&format!("disconnect {b}"), "disconnected");
    api.wait_offline(&b);
    let r = api.post(
        &format!("/api/v5/clients/{b}/subscribe"),
        &json!({"topic": "x"}),
    );
    r.error(404, "CLIENTID_NOT_FOUND", "");
    c.finish();
    api.stop();
}

// ---------------------------------------------------------------------------------------------
// Topics, nodes, stats, metrics, listeners, log
// ---------------------------------------------------------------------------------------------

#[test]
fn topics_nodes_stats_metrics_listeners_and_log() {
    let api = Api::start();
    let tag = unique("n");
    // Clients until both shards hold one (the kernel spreads connections over the shards).
    let mut n = 0;
    let mut specs = Vec::new();
    for _ in 0..4 {
        specs.push(spec(&format!("{tag}-{n:02}"), None, "5", true, None));
        n += 1;
    }
    let mut c = Clients::start(&api, &specs);
    let shard_of = |api: &Api| -> Vec<(String, u64)> {
        let r = api.get("/api/v5/clients");
        r.expect(200)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["clientid"].as_str().unwrap().to_owned(),
                    c["shard"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let (on0, on1) = loop {
        let shards = shard_of(&api);
        let on0 = shards.iter().find(|s| s.1 == 0).map(|s| s.0.clone());
        let on1 = shards.iter().find(|s| s.1 == 1).map(|s| s.0.clone());
        if let (Some(a), Some(b)) = (on0, on1) {
            break (a, b);
        }
        assert!(n < 64, "64 connections, all on one shard: {shards:?}");
        let more: Vec<String> = (n..n + 4)
            .map(|i| spec(&format!("{tag}-{i:02}"), None, "5", true, None))
            .collect();
        n += 4;
        c.connect(&more);
    };
    let clients = n;

    // The same filter from both shards: one route.
    c.subscribe(&on0, 0, "dup/#");
    c.subscribe(&on1, 1, "dup/#");
    c.subscribe(&on0, 0, "only/0");
    c.subscribe(&on1, 0, "only/1");
    c.subscribe(&on0, 0, "$share/g/dup/x");
    let r = api.get("/api/v5/topics");
    let v = r.expect(200);
    let node = api.get("/api/v5/nodes").expect(200)[0]["node"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        v["data"],
        json!([{"topic": "dup/#", "node": node}, {"topic": "only/0", "node": node}, {"topic": "only/1", "node": node}]),
        "{}",
        r.body
    );
    assert_eq!(v["meta"]["count"], 3);
    let v = api.get_q("/api/v5/topics", &[("topic", "dup/#")]);
    assert_eq!(v.expect(200)["meta"]["count"], 1, "{}", v.body);
    let v = api.get_q("/api/v5/topics", &[("limit", "2"), ("page", "2")]);
    let v = v.expect(200);
    assert_eq!(v["data"], json!([{"topic": "only/1", "node": node}]));
    assert_eq!(v["meta"]["hasnext"], false);
    api.get_q("/api/v5/topics", &[("limit", "0")])
        .error(400, "BAD_REQUEST", "limit");

    // Nodes.
    let r = api.get("/api/v5/nodes");
    let nodes = r.expect(200).as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{}", r.body);
    let me = &nodes[0];
    assert_eq!(me["node_status"], "running");
    assert_eq!(me["shards"], 2);
    assert_eq!(me["drivers"].as_array().unwrap().len(), 2);
    assert!(
        me["uptime"].as_u64().unwrap() > 0 && me["memory_used"].as_u64().unwrap() > 0,
        "{me}"
    );
    let r = api.get(&format!("/api/v5/nodes/{}", enc(&node)));
    assert_eq!(r.expect(200)["node"], node.as_str());
    api.get("/api/v5/nodes/other@elsewhere")
        .error(404, "NOT_FOUND", "other@elsewhere");

    // Stats: one object per node, or one for the cluster.
    let v = api.get_until("/api/v5/stats?aggregate=true", "connections.count", |v| {
        v["connections.count"] == clients && v["subscriptions.count"].as_u64() >= Some(4)
    });
    assert!(v.is_object(), "{v}");
    assert_eq!(v["live_connections.count"], clients);
    let r = api.get("/api/v5/stats");
    let per_node = r.expect(200).as_array().unwrap();
    assert_eq!(per_node.len(), 1, "{}", r.body);
    assert_eq!(per_node[0]["node"], node.as_str());
    assert!(per_node[0]["connections.count"].is_u64());

    // Metrics move with traffic: 10 QoS 1 messages from a client.
    let before = api.get("/api/v5/metrics?aggregate=true");
    let before = before.expect(200).clone();
    assert!(before.is_object(), "{before}");
    let received = before["messages.received"].as_u64().unwrap();
    for i in 0..10 {
        c.command(&format!("pub {on1} 1 dup/m{i} m{i}"), "published");
    }
    let after = api.get_until("/api/v5/metrics?aggregate=true", "messages.received", |v| {
        v["messages.received"].as_u64() >= Some(received + 10)
    });
    assert_eq!(after["messages.received"], received + 10, "{after}");
    assert!(
        after["packets.received"].as_u64()
            >= Some(before["packets.received"].as_u64().unwrap() + 10)
    );
    assert!(
        after["messages.sent"].as_u64() >= Some(before["messages.sent"].as_u64().unwrap() + 10),
        "{after}"
    );
    assert!(
        after["client.connected"].as_u64() >= Some(clients as u64),
        "{after}"
    );
    let r = api.get("/api/v5/metrics");
    let v = r.expect(200).as_array().unwrap();
    assert_eq!(v.len(), 1, "{}", r.body);
    assert_eq!(v[0]["node"], node.as_str());
    assert!(v[0]["messages.received"].as_u64() >= Some(received + 10));

    // Listeners: the TCP one is where the broker said it listens.
    let r = api.get("/api/v5/listeners");
    let ls = r.expect(200).as_array().unwrap();
    let tcp = ls
        .iter()
        .find(|l| l["type"] == "tcp")
        .unwrap_or_else(|| panic!("{}", r.body));
    assert_eq!(tcp["bind"], api.broker().addr().to_string());
    assert_eq!(tcp["id"], "tcp:default");
    assert_eq!(tcp["running"], true);
    let ws = ls
        .iter()
        .find(|l| l["type"] == "ws")
        .unwrap_or_else(|| panic!("{}", r.body));
    assert_eq!(ws["bind"], api.broker().listener("ws").to_string());

    // The log level, changed at run time and back.
    let r = api.get("/api/v5/configs/log");
    assert_eq!(r.expect(200)["console"]["level"], "info", "{}", r.body);
    let r = api.put(
        "/api/v5/configs/log",
        &json!({"console": {"level": "debug"}}),
    );
    assert_eq!(r.expect(200)["console"]["level"], "debug", "{}", r.body);
    assert_eq!(
        api.get("/api/v5/configs/log").expect(200)["console"]["level"],
        "debug"
    );
    let r = api.put(
        "/api/v5/configs/log",
        &json!({"console": {"level": "info"}}),
    );
    assert_eq!(r.expect(200)["console"]["level"], "info", "{}", r.body);
    api.put(
        "/api/v5/configs/log",
        &json!({"console": {"level": "loud"}}),
    )
    .error(400, "BAD_REQUEST", "console.level");
    api.put(
        "/api/v5/configs/log",
        &json!({"console": {"formatter": "xml"}}),
    )
    .error(400, "BAD_REQUEST", "console.formatter");
    api.send(
        reqwest::Method::PUT,
        "/api/v5/configs/log",
        Some("{".to_owned()),
        true,
    )
    .error(400, "BAD_REQUEST", "JSON");
    assert_eq!(
        api.get("/api/v5/configs/log").expect(200)["console"]["level"],
        "info"
    );

    // Anything else: JSON errors too.
    api.get("/api/v5/nothing-here").error(404, "NOT_FOUND", "");
    api.get("/api/v5/clients/x/nothing")
        .error(404, "NOT_FOUND", "");

    c.finish();
    let stopped = api.stop();
    assert!(
        stopped.log.contains("log level set to DEBUG")
            || stopped.log.contains("log level set to debug")
    );
}

#[test]
fn a_method_a_route_does_not_have_is_a_json_error() {
    let api = Api::start();
    for (method, path) in [
        (reqwest::Method::DELETE, "/api/v5/nodes"),
        (reqwest::Method::POST, "/api/v5/clients"),
        (reqwest::Method::PUT, "/api/v5/publish"),
    ] {
        let r = api.send(method, path, None, true);
        assert_eq!(r.status, 405, "{r:?}");
        assert!(
            r.content_type.starts_with("application/json")
                && r.json["code"].is_string()
                && r.json["message"].is_string(),
            "not a JSON {{code, message}} error: {r:?}"
        );
    }
    api.stop();
}

#[test]
fn query_values_of_the_wrong_type_are_refused_naming_the_parameter() {
    let api = Api::start();
    for (path, param) in [
        ("/api/v5/clients?limit=ten", "limit"),
        ("/api/v5/clients?page=-1", "page"),
        ("/api/v5/clients?proto_ver=x", "proto_ver"),
        ("/api/v5/clients?clean_start=maybe", "clean_start"),
        ("/api/v5/subscriptions?qos=one", "qos"),
        ("/api/v5/topics?limit=1.5", "limit"),
        ("/api/v5/mqtt/retainer/messages?page=x", "page"),
        ("/api/v5/stats?aggregate=maybe", "aggregate"),
        ("/api/v5/metrics?aggregate=1x", "aggregate"),
    ] {
        api.get(path).error(400, "BAD_REQUEST", param);
    }
    api.stop();
}

// ---------------------------------------------------------------------------------------------
// The OpenAPI document, checked by schemathesis
// ---------------------------------------------------------------------------------------------

/// `schemathesis` on the PATH, or a panic naming the install command.
fn require_schemathesis() {
    let ok = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the OpenAPI test needs schemathesis; install it with `{SCHEMATHESIS_PIP}` (tools/setup.sh does)"
    );
}

#[test]
fn the_openapi_document_declares_each_parameter_where_it_is_read() {
    let api = Api::start();
    let r = api.get("/api-docs");
    let doc = r.expect(200);
    let mut wrong = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let templated = path.contains(&format!("{{{name}}}"));
                let ok = match p["in"].as_str() {
                    Some("path") => templated && p["required"] == true,
                    Some("query") => !templated,
                    _ => false,
                };
                if !ok {
                    wrong.push(format!(
                        "{method} {path}: {name} in {} required {}",
                        p["in"], p["required"]
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} parameters declared where the handler does not read them (query parameters must be \
         `in: query`, optional):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    api.stop();
}

#[test]
fn the_openapi_document_matches_the_api() {
    require_schemathesis();
    let api = Api::start();
    let doc = api.get("/api-docs");
    let v = doc.expect(200);
    assert!(doc.content_type.starts_with("application/json"), "{doc:?}");
    assert!(
        v["openapi"].as_str().is_some_and(|s| s.starts_with("3.")),
        "{}",
        doc.body
    );
    // Something to find: a connected client with a subscription, a retained message.
    let holder = "st-client";
    let mut c = Clients::start(&api, &[spec(holder, Some("st"), "5", false, Some(600))]);
    c.subscribe(holder, 1, "st/#");
    api.post(
        "/api/v5/publish",
        &json!({"topic": "st/retained", "payload": "r", "retain": true}),
    )
    .expect(200);

    let work = scratch_dir();
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.clientid\" = \"{holder}\"\n\"path.topic\" = \"st/retained\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("schemathesis");
    cmd.current_dir(&work)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(api.url("/api-docs"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "20",
            "--seed",
            "20261126",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            // The client the other operations look at stays connected, and the token stays
            // valid (logout, another password, deleted users would end it).
            "--exclude-operation-id",
            "kick",
            "--exclude-path-regex",
            "^/api/v5/(logout|users/)",
        ]);
    if let Some(t) = &api.token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let mut label = format!("{cmd:?}");
    if let Some(t) = &api.token {
        label = label.replace(t.as_str(), "<token>");
    }
    let mut p = Proc::spawn("schemathesis", cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while p.next_line(deadline).is_some() {}
    let done = p.finish(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        done.status.success(),
        "{label} failed ({}):\n{}\n{}",
        done.status,
        done.stdout.join("\n"),
        done.stderr
    );
    // It did test the operations (not a run of 401s: the token still works).
    let tested = done.stdout.iter().find_map(|l| {
        l.trim()
            .strip_prefix("Tested: ")?
            .trim()
            .parse::<u32>()
            .ok()
    });
    assert!(
        tested.is_some_and(|n| n >= 20),
        "schemathesis tested {tested:?} operations:\n{}",
        done.stdout.join("\n")
    );
    api.get("/api/v5/nodes").expect(200);
    c.finish();
    api.stop();
}
