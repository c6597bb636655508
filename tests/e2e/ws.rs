//! MQTT over WebSocket and WebSocket over TLS through the real broker: paho-mqtt
//! (`transport="websockets"`) and MQTT.js over `ws://` and `wss://`, the upgrade's path and
//! subprotocol checks, MQTT packets split across frames and packed into one, ping/pong, a text
//! frame and a garbage frame answered with a close without disturbing other clients, and the
//! client address taken from `X-Forwarded-For`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::harness::{Broker, Proc, mosquitto, python, unique};
use crate::tls::Pki;

const TIMEOUT: Duration = Duration::from_secs(15);

/// MQTT.js over `url`: `count` QoS 1 messages through a subscriber and a publisher.
fn mqtt_js(url: &str, version: u8, count: usize, ca: Option<&str>) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/e2e/clients/js/pubsub.mjs"
    );
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args([url, &version.to_string(), &count.to_string()]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let done = Proc::spawn("node", cmd).unwrap().finish(TIMEOUT);
    let line = done.stdout.last().cloned().unwrap_or_default();
    assert!(
        done.status.success(),
        "MQTT.js {url} v{version}: {line}\n{}\n(run tools/setup.sh for MQTT.js)",
        done.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let want: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    assert_eq!(v["got"], serde_json::json!(want), "{url} v{version}");
}

/// paho-mqtt over WebSocket: a subscriber on `ws_port`, a mosquitto_pub on plain TCP, and a
/// paho publisher on the WebSocket too.
fn paho_ws(broker: &Broker, ws_port: u16, version: &str, tls_ca: Option<&str>) {
    let mut args = vec![
        ws_port.to_string(),
        version.to_owned(),
        broker.port(),
        unique("wsc"),
    ];
    if let Some(ca) = tls_ca {
        args.push(ca.to_owned());
    }
    let mut p = python("ws.py", &args);
    let ready = p.wait_phase("subscribed", TIMEOUT);
    assert_eq!(ready["ok"], true, "{ready}");
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1"])
        .args(["-i", &unique("wspub"), "-t", "ws/tcp", "-m", "from-tcp"]);
    assert!(
        Proc::spawn("mosquitto_pub", cmd)
            .unwrap()
            .finish(TIMEOUT)
            .status
            .success()
    );
    let done = p.wait_phase("done", TIMEOUT);
    assert_eq!(
        done["got"],
        serde_json::json!(["ws/tcp from-tcp", "ws/ws from-ws"]),
        "{version}: {done}"
    );
}

fn ws_broker(extra: &[&str]) -> (Broker, u16) {
    let broker = Broker::start_with(extra);
    let port = broker.listener("ws").port();
    (broker, port)
}

#[test]
fn paho_and_mqtt_js_over_websocket() {
    let (broker, port) = ws_broker(&[]);
    paho_ws(&broker, port, "5", None);
    paho_ws(&broker, port, "4", None);
    mqtt_js(&format!("ws://127.0.0.1:{port}/mqtt"), 5, 20, None);
    mqtt_js(&format!("ws://127.0.0.1:{port}/mqtt"), 4, 20, None);
}

#[test]
fn paho_and_mqtt_js_over_websocket_over_tls() {
    let pki = Pki::new();
    let mut sets = vec!["listeners.wss.default.bind=127.0.0.1:0".to_owned()];
    for s in pki.server_sets().iter().skip(1) {
        sets.push(s.replace("listeners.ssl.", "listeners.wss."));
    }
    let refs: Vec<&str> = sets.iter().map(String::as_str).collect();
    let broker = Broker::start_with(&refs);
    let port = broker.listener("wss").port();
    let ca = pki.path("ca.pem");
    paho_ws(&broker, port, "5", Some(&ca));
    mqtt_js(&format!("wss://127.0.0.1:{port}/mqtt"), 5, 20, Some(&ca));
}

/// Sends a raw upgrade request and returns the status line of the answer.
fn upgrade_status(port: u16, path: &str, protocol: Option<&str>, extra: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let proto = protocol.map_or(String::new(), |p| {
        format!("Sec-WebSocket-Protocol: {p}\r\n")
    });
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}{extra}\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn the_upgrade_checks_path_subprotocol_and_origin() {
    let (_b, port) = ws_broker(&[]);
    assert!(upgrade_status(port, "/mqtt", Some("mqtt"), "").contains(" 101 "));
    assert!(upgrade_status(port, "/mqtt", Some("mqttv3.1"), "").contains(" 101 "));
    assert!(upgrade_status(port, "/other", Some("mqtt"), "").contains(" 404 "));
    assert!(upgrade_status(port, "/mqtt", None, "").contains(" 400 "));
    assert!(upgrade_status(port, "/mqtt", Some("chat"), "").contains(" 400 "));

    let (_b, port) = ws_broker(&[
        "listeners.ws.default.websocket.fail_if_no_subprotocol=false",
        "listeners.ws.default.websocket.mqtt_path=/",
        "listeners.ws.default.websocket.check_origin_enable=true",
        "listeners.ws.default.websocket.allowed_origins=https://ok.example, https://also.example",
    ]);
    let ok = "Origin: https://also.example\r\n";
    assert!(upgrade_status(port, "/", None, ok).contains(" 101 "));
    assert!(upgrade_status(port, "/", None, "Origin: https://evil.example\r\n").contains(" 403 "));
    assert!(
        upgrade_status(port, "/", None, "").contains(" 403 "),
        "no Origin at all"
    );
}

type Ws = WebSocket<TcpStream>;

/// A WebSocket client (tungstenite) that sends MQTT bytes as it is told to frame them.
fn ws_client(port: u16, headers: &[(&'static str, &str)]) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}/mqtt")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).unwrap());
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (ws, resp) = tungstenite::client::client(req, stream).unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "mqtt"
    );
    ws
}

/// Reads binary messages until `want` MQTT bytes have arrived (the broker may split or pack).
fn read_bytes(ws: &mut Ws, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        match ws.read().unwrap() {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

const CONNECT_311: &[u8] = &[
    0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'w',
];
const CONNACK: &[u8] = &[0x20, 0x02, 0x00, 0x00];
/// SUBSCRIBE packet id 1 to "f/x" QoS 0, and its SUBACK.
const SUBSCRIBE: &[u8] = &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'f', b'/', b'x', 0x00];
const SUBACK: &[u8] = &[0x90, 0x03, 0x00, 0x01, 0x00];
/// PUBLISH QoS 0 "f/x" = "hi".
const PUBLISH: &[u8] = &[0x30, 0x07, 0x00, 0x03, b'f', b'/', b'x', b'h', b'i'];

#[test]
fn packets_split_across_frames_and_packed_into_one() {
    let (_b, port) = ws_broker(&[]);
    let mut ws = ws_client(port, &[]);
    // CONNECT in three frames of odd sizes.
    for part in [&CONNECT_311[..1], &CONNECT_311[1..6], &CONNECT_311[6..]] {
        ws.send(Message::Binary(part.to_vec().into())).unwrap();
    }
    assert_eq!(read_bytes(&mut ws, 4), CONNACK);
    // SUBSCRIBE and a PUBLISH to itself in one frame.
    let packed: Vec<u8> = [SUBSCRIBE, PUBLISH].concat();
    ws.send(Message::Binary(packed.into())).unwrap();
    // The PUBLISH may come before the SUBACK (3.8.4 allows it).
    let got = read_bytes(&mut ws, SUBACK.len() + PUBLISH.len());
    assert!(
        got == [SUBACK, PUBLISH].concat() || got == [PUBLISH, SUBACK].concat(),
        "{got:?}"
    );
    // Ping → pong, and MQTT still flows.
    ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"p"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.send(Message::Binary(PUBLISH.to_vec().into())).unwrap();
    assert_eq!(read_bytes(&mut ws, PUBLISH.len()), PUBLISH);
}

/// Reads until the broker's close frame; returns its code.
fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn text_and_garbage_frames_are_closed_without_disturbing_others() {
    let (broker, port) = ws_broker(&[]);
    let mut sub = Proc::spawn("mosquitto_sub", {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-d", "-v"])
            .args(["-i", &unique("wsub"), "-t", "f/#", "-C", "1", "-W", "10"]);
        cmd
    })
    .unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));

    let mut text = ws_client(port, &[]);
    text.send(Message::Binary(CONNECT_311.to_vec().into()))
        .unwrap();
    assert_eq!(read_bytes(&mut text, 4), CONNACK);
    text.send(Message::Text("hello".into())).unwrap();
    assert_eq!(close_code(&mut text), Some(CloseCode::Unsupported));

    // A frame with a reserved opcode (0x3), masked, as a raw client would send it.
    let mut raw = ws_client(port, &[]);
    raw.get_mut()
        .write_all(&[0x83, 0x82, 1, 2, 3, 4, 0x10, 0x20])
        .unwrap();
    assert_eq!(close_code(&mut raw), Some(CloseCode::Protocol));

    let mut ok = ws_client(port, &[]);
    ok.send(Message::Binary(CONNECT_311.to_vec().into()))
        .unwrap();
    assert_eq!(read_bytes(&mut ok, 4), CONNACK);
    ok.send(Message::Binary(PUBLISH.to_vec().into())).unwrap();
    let done = sub.finish(TIMEOUT);
    assert!(
        done.stdout.iter().any(|l| l == "f/x hi"),
        "{:?} {}",
        done.stdout,
        done.stderr
    );
}

#[test]
fn the_client_address_comes_from_x_forwarded_for() {
    let (broker, port) = ws_broker(&[]);
    let mut sub = Proc::spawn("mosquitto_sub", {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-v", "-d"])
            .args([
                "-i",
                &unique("xff"),
                "-t",
                "$SYS/brokers/+/clients/w/connected",
            ])
            .args(["-C", "1", "-W", "10"]);
        cmd
    })
    .unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    let mut ws = ws_client(port, &[("x-forwarded-for", "203.0.113.9, 10.0.0.1")]);
    ws.send(Message::Binary(CONNECT_311.to_vec().into()))
        .unwrap();
    assert_eq!(read_bytes(&mut ws, 4), CONNACK);
    let done = sub.finish(TIMEOUT);
    let line = done
        .stdout
        .iter()
        .find(|l| l.starts_with("$SYS/") && l.contains("/clients/w/connected"))
        .unwrap_or_else(|| panic!("{:?} {}", done.stdout, done.stderr));
    assert!(line.contains("\"ipaddress\":\"203.0.113.9\""), "{line}");
}
