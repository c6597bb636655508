//! MQTT over QUIC through the real broker with aioquic (an independent QUIC implementation):
//! ALPN `mqtt`, single-stream mode, the broker's generated self-signed certificate, a message
//! to a mosquitto_sub on TCP, and garbage datagrams that disturb nobody. Multi-stream mode
//! (EMQX EIP-0023): a control stream and data streams, each answer and each delivery on the
//! stream of its request or subscription, forbidden packets on a data stream resetting only
//! that stream, and data streams the client resets or finishes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Broker, Proc, mosquitto, python, python_run, script_result, unique};
use crate::raw;

const TIMEOUT: Duration = Duration::from_secs(20);

fn quic_broker() -> (Broker, u16) {
    let broker = Broker::start_with(&[
        "listeners.quic.default.enable=true",
        "listeners.quic.default.bind=127.0.0.1:0",
    ]);
    let port = broker.listener("quic").port();
    (broker, port)
}

/// Runs the aioquic client; returns the MQTT packet types (and PUBLISH topics) it received.
fn aioquic_round_trip(port: u16) -> serde_json::Value {
    let line = python_run("quic.py", &[port.to_string(), unique("quic")], TIMEOUT);
    line["got"].clone()
}

#[test]
fn aioquic_connects_subscribes_and_publishes_over_one_stream() {
    let (broker, port) = quic_broker();
    assert!(
        broker
            .log_text()
            .contains("QUIC uses the self-signed certificate"),
        "{}",
        broker.log_text()
    );
    let mut sub = Proc::spawn("mosquitto_sub", {
        let mut cmd = mosquitto("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-v", "-d"])
            .args(["-i", &unique("qsub"), "-t", "q/#", "-C", "1", "-W", "15"]);
        cmd
    })
    .unwrap();
    sub.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
    // Garbage first: it must not disturb the endpoint.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for n in [1usize, 20, 1200, 1500] {
        junk.send_to(&vec![0x5a; n], ("127.0.0.1", port)).unwrap();
    }
    let got = aioquic_round_trip(port);
    let types: Vec<u64> = got
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert_eq!(types.first(), Some(&0x20), "CONNACK first: {got}");
    let mut rest = types[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, [0x30, 0x40, 0x90], "PUBLISH, PUBACK, SUBACK: {got}");
    assert!(got.as_array().unwrap().iter().any(|v| v == "q/t"), "{got}");
    // The QUIC client's PUBLISH reached the TCP subscriber.
    let done = sub.finish(TIMEOUT);
    assert!(
        done.stdout.iter().any(|l| l == "q/t hi"),
        "{:?} {}",
        done.stdout,
        done.stderr
    );
    // And a second QUIC client after it all.
    let again = aioquic_round_trip(port);
    assert_eq!(again.as_array().map(Vec::len), Some(5), "{again}");
}

/// A UDP relay standing in for a NAT between the QUIC client and the broker: it forwards both
/// ways, and `rebind` moves its broker-side socket to a new port, as a NAT rebinding does.
struct Relay {
    /// The client-side socket (the client's server address).
    down: Arc<UdpSocket>,
    state: Arc<Mutex<RelayState>>,
}

struct RelayState {
    client: Option<SocketAddr>,
    upstream: Arc<UdpSocket>,
    generation: u64,
}

impl Relay {
    fn start(broker: SocketAddr) -> Self {
        let down = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let state = Arc::new(Mutex::new(RelayState {
            client: None,
            upstream: Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap()),
            generation: 0,
        }));
        // Client → broker, through the current upstream socket.
        let (st, d) = (state.clone(), down.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, from)) = d.recv_from(&mut buf) {
                let up = {
                    let mut g = st.lock().unwrap();
                    g.client = Some(from);
                    g.upstream.clone()
                };
                let _ = up.send_to(&buf[..n], broker);
            }
        });
        let relay = Self { down, state };
        relay.spawn_upstream_reader(0);
        relay
    }

    fn port(&self) -> u16 {
        self.down.local_addr().unwrap().port()
    }

    /// Broker → client, from the upstream socket of `generation` until it is replaced.
    fn spawn_upstream_reader(&self, generation: u64) {
        let (st, down) = (self.state.clone(), self.down.clone());
        let up = st.lock().unwrap().upstream.clone();
        up.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while st.lock().unwrap().generation == generation {
                if let Ok((n, _)) = up.recv_from(&mut buf) {
                    let client = st.lock().unwrap().client;
                    if let Some(c) = client {
                        let _ = down.send_to(&buf[..n], c);
                    }
                }
            }
        });
    }

    /// A new broker-side port: the broker sees the client at a new address.
    fn rebind(&self) {
        let generation = {
            let mut g = self.state.lock().unwrap();
            g.upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
            g.generation += 1;
            g.generation
        };
        self.spawn_upstream_reader(generation);
    }
}

#[test]
fn a_client_whose_address_changes_keeps_its_session_across_shards() {
    let (broker, port) = quic_broker();
    let relay = Relay::start(SocketAddr::from(([127, 0, 0, 1], port)));
    let rounds = 12;
    let mut sub = python(
        "quic_sub.py",
        &[relay.port().to_string(), unique("mig"), rounds.to_string()],
    );
    sub.wait_phase("subscribed", TIMEOUT);
    for round in 0..rounds {
        if round > 0 {
            relay.rebind();
        }
        let mut cmd = mosquitto("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port()]).args([
            "-i",
            &unique("mpub"),
            "-t",
            &format!("m/{round}"),
            "-m",
            "x",
        ]);
        assert!(
            Proc::spawn("mosquitto_pub", cmd)
                .unwrap()
                .finish(TIMEOUT)
                .status
                .success()
        );
        let got = sub.wait_phase("got", TIMEOUT);
        assert_eq!(got["topic"], format!("m/{round}"), "round {round}");
    }
    let stopped = broker.stop();
    let handed: u64 = stopped
        .log
        .lines()
        .filter_map(|l| l.split("quic datagrams handed over ").nth(1))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    assert!(
        handed > 0,
        "with {rounds} address changes on 2 shards, some datagrams should reach the other \
         shard's socket and be handed over:\n{}",
        stopped.log
    );
}

#[test]
fn a_reset_stream_and_extra_streams_are_handled_without_disturbing_others() {
    let (_broker, port) = quic_broker();
    let reset = python_run(
        "quic_bad.py",
        &[port.to_string(), "reset".to_owned()],
        TIMEOUT,
    );
    assert_eq!(reset["closed"], true, "{reset}");
    assert_eq!(reset["reason"], "stream ended", "{reset}");
    let streams = python_run(
        "quic_bad.py",
        &[port.to_string(), "streams".to_owned()],
        TIMEOUT,
    );
    assert_eq!(
        streams["ok"], true,
        "MQTT goes on on the first stream: {streams}"
    );
    // And a well-behaved client afterwards.
    let got = aioquic_round_trip(port);
    assert_eq!(got.as_array().map(Vec::len), Some(5), "{got}");
}

// ---------------------------------------------------------------------------------------------
// Multi-stream mode
// ---------------------------------------------------------------------------------------------

/// MQTT packet types (the first byte's high nibble, as the script reports them).
const CONNACK: u64 = 0x20;
const PUBLISH: u64 = 0x30;
const PUBACK: u64 = 0x40;
const PUBREC: u64 = 0x50;
const PUBCOMP: u64 = 0x70;
const SUBACK: u64 = 0x90;
const UNSUBACK: u64 = 0xB0;
const PINGRESP: u64 = 0xD0;

/// MQTT's Protocol Error, the application error code of a data stream the broker resets.
const PROTOCOL_ERROR: u64 = 0x82;

/// How long the script waits for one packet on one stream.
const READ_SECS: f64 = 3.0;

/// The control stream: the client's first bidirectional stream. Data streams: 4, 8, 12, ...
const CONTROL: u64 = 0;

/// One aioquic connection in multi-stream mode, driven command by command
/// (`clients/quic_multi.py`): the test says what goes on which stream and reads what came
/// back on which stream.
struct Multi {
    proc: Proc,
}

impl Multi {
    /// Connects (QUIC only: no MQTT yet).
    fn start(port: u16) -> Self {
        let mut proc = python("quic_multi.py", &[port.to_string()]);
        proc.wait_phase("ready", TIMEOUT);
        Self { proc }
    }

    fn cmd(&mut self, cmd: Value) -> Value {
        self.proc.send_line(&cmd.to_string());
        let reply = self.proc.wait_phase("reply", TIMEOUT);
        assert!(reply.get("error").is_none(), "{cmd}: {reply}");
        reply
    }

    /// Writes `[[stream, kind, args...], ...]` in one go (see the script).
    fn send(&mut self, sends: Value) -> Value {
        self.cmd(json!({"op": "send", "sends": sends}))
    }

    /// The next packet on `stream`, or how the wait ended.
    fn read(&mut self, stream: u64) -> Value {
        self.cmd(json!({"op": "read", "stream": stream, "timeout": READ_SECS}))
    }

    /// The next packet on `stream`, which must be a `kind`.
    fn expect(&mut self, stream: u64, kind: u64, what: &str) -> Value {
        let r = self.read(stream);
        assert_eq!(
            r["packet"]["type"],
            kind,
            "expected {what} (type {kind:#x}) on stream {stream}, got: {r}\nall streams: {}",
            self.status()
        );
        r["packet"].clone()
    }

    /// The next packet on `stream` is a PUBLISH of `payload` to `topic` at QoS 1; acknowledged
    /// on that stream.
    fn expect_message(&mut self, stream: u64, topic: &str, payload: &str) {
        let p = self.expect(
            stream,
            PUBLISH,
            &format!("the message {payload:?} to {topic}"),
        );
        assert_eq!(
            (
                p["topic"].as_str(),
                p["payload"].as_str(),
                p["qos"].as_u64()
            ),
            (Some(topic), Some(payload), Some(1)),
            "on stream {stream}: {p}"
        );
        self.send(json!([[stream, "puback", p["pid"]]]));
    }

    /// The stream `stream` was reset by the broker with MQTT's Protocol Error, having sent
    /// nothing; it also asked us to stop sending, if it did, with the same code.
    fn expect_reset(&mut self, stream: u64, what: &str) {
        let r = self.read(stream);
        assert_eq!(
            (r["end"].as_str(), r["stream"]["reset"].as_u64()),
            (Some("reset"), Some(PROTOCOL_ERROR)),
            "{what}: stream {stream} should be reset with 0x82: {r}"
        );
        let stop = &r["stream"]["stop_sending"];
        assert!(
            stop.is_null() || *stop == PROTOCOL_ERROR,
            "{what}: STOP_SENDING with another code: {r}"
        );
        assert_eq!(r["stream"]["received"], 0, "{what}: {r}");
    }

    /// CONNECT on the control stream; the CONNACK (success) comes back there.
    fn connect(&mut self, client_id: &str) {
        self.send(json!([[CONTROL, "connect", client_id]]));
        let ack = self.expect(CONTROL, CONNACK, "CONNACK");
        assert_eq!(ack["reason"], 0, "{ack}");
    }

    /// PINGREQ on the control stream: the very next packet there is the PINGRESP (nothing
    /// unexpected was queued before it), and by then the broker has read everything sent
    /// before.
    fn sync(&mut self) {
        self.send(json!([[CONTROL, "pingreq"]]));
        self.expect(CONTROL, PINGRESP, "PINGRESP");
    }

    fn status(&mut self) -> Value {
        self.cmd(json!({"op": "status"}))
    }

    /// The connection is open and no stream holds a packet the test has not read.
    fn assert_quiet(&mut self) {
        let st = self.status();
        assert!(st["closed"].is_null(), "the connection closed: {st}");
        for (id, s) in st["streams"].as_object().unwrap() {
            assert_eq!(s["pending"], json!([]), "unexpected on stream {id}: {st}");
            assert_eq!(s["partial"], "", "half a packet on stream {id}: {st}");
        }
    }

    /// DISCONNECT on the control stream ends the connection; the script exits cleanly.
    fn finish(mut self) {
        self.send(json!([[CONTROL, "disconnect"]]));
        let r = self.cmd(json!({"op": "wait_closed", "timeout": READ_SECS}));
        assert!(!r["closed"].is_null(), "still open after DISCONNECT: {r}");
        let done = self.proc.finish(TIMEOUT);
        script_result("quic_multi.py", &done);
    }
}

/// A TCP MQTT 5 client publishing at QoS 1 (each PUBLISH acknowledged before the next).
struct TcpPublisher {
    conn: raw::Raw,
    packet_id: u16,
}

impl TcpPublisher {
    fn open(broker: &Broker) -> Self {
        let connect = raw::connect_v5(&unique("qmpub"), 60, true, None);
        let (conn, _) = raw::open(broker.addr(), &connect);
        Self { conn, packet_id: 0 }
    }

    fn publish(&mut self, topic: &str, payload: &str) {
        self.packet_id += 1;
        let id = self.packet_id;
        self.conn
            .send(&raw::publish(true, topic, 1, id, payload.as_bytes()))
            .unwrap();
        let ack = self.conn.expect("PUBACK", TIMEOUT);
        assert_eq!(ack.kind(), 4, "expected PUBACK, got {ack:02x?}");
        assert_eq!(ack.body[..2], id.to_be_bytes(), "{ack:02x?}");
    }
}

#[test]
fn multi_stream_a_data_stream_written_before_connack_gets_its_suback_and_messages() {
    let (broker, port) = quic_broker();
    let topic = unique("qm/a/");
    let mut q = Multi::start(port);
    // CONNECT on the control stream and SUBSCRIBE on a data stream, in the same flight:
    // the SUBSCRIBE is on its way before any CONNACK.
    let sent = q.send(json!([
        [CONTROL, "connect", unique("qma")],
        [4, "subscribe", 1, topic, 1]
    ]));
    assert_eq!(sent["received"], json!({}), "{sent}");
    let ack = q.expect(CONTROL, CONNACK, "CONNACK");
    assert_eq!(ack["reason"], 0, "{ack}");
    let suback = q.expect(4, SUBACK, "the SUBACK of the data stream's SUBSCRIBE");
    assert_eq!(
        (suback["pid"].as_u64(), &suback["reasons"]),
        (Some(1), &json!([1])),
        "{suback}"
    );
    // A message from a TCP client arrives on the data stream...
    let mut tcp = TcpPublisher::open(&broker);
    tcp.publish(&topic, "to-data-stream");
    q.expect_message(4, &topic, "to-data-stream");
    // ... and nothing on the control stream: its next packet is the PINGRESP.
    q.sync();
    q.assert_quiet();
    q.finish();
}

#[test]
fn multi_stream_answers_and_deliveries_go_to_the_stream_of_their_request() {
    let (broker, port) = quic_broker();
    let (ta, tb, tc) = (unique("qm/b/a"), unique("qm/b/b"), unique("qm/b/c"));
    let mut q = Multi::start(port);
    q.connect(&unique("qmb"));
    // Two data streams and the control stream, each subscribed to its own topic.
    q.send(json!([
        [4, "subscribe", 1, ta, 1],
        [8, "subscribe", 2, tb, 1],
        [CONTROL, "subscribe", 3, tc, 1],
    ]));
    for (stream, pid) in [(4, 1), (8, 2), (CONTROL, 3)] {
        let suback = q.expect(stream, SUBACK, &format!("the SUBACK of SUBSCRIBE {pid}"));
        assert_eq!(suback["pid"], pid, "{suback}");
        assert_eq!(suback["reasons"], json!([1]), "{suback}");
    }
    let mut tcp = TcpPublisher::open(&broker);
    for (topic, payload) in [
        (&ta, "a1"),
        (&tb, "b1"),
        (&tc, "c1"),
        (&ta, "a2"),
        (&tb, "b2"),
    ] {
        tcp.publish(topic, payload);
    }
    // Each stream gets only its own topic's messages, in order (a message for another
    // stream's subscription would have come first).
    q.expect_message(4, &ta, "a1");
    q.expect_message(4, &ta, "a2");
    q.expect_message(8, &tb, "b1");
    q.expect_message(8, &tb, "b2");
    q.expect_message(CONTROL, &tc, "c1");

    // The client publishes on a third data stream: QoS 1 → PUBACK there.
    q.send(json!([[12, "publish", ta, 1, 10, "q1"]]));
    let puback = q.expect(12, PUBACK, "the PUBACK of a QoS 1 PUBLISH on stream 12");
    assert_eq!(
        (puback["pid"].as_u64(), puback["reason"].as_u64()),
        (Some(10), Some(0)),
        "{puback}"
    );
    q.expect_message(4, &ta, "q1");
    // QoS 2 → PUBREC there, and PUBREL there → PUBCOMP there.
    q.send(json!([[12, "publish", tb, 2, 11, "q2"]]));
    let pubrec = q.expect(12, PUBREC, "the PUBREC of a QoS 2 PUBLISH on stream 12");
    assert_eq!(
        (pubrec["pid"].as_u64(), pubrec["reason"].as_u64()),
        (Some(11), Some(0)),
        "{pubrec}"
    );
    q.send(json!([[12, "pubrel", 11]]));
    let pubcomp = q.expect(12, PUBCOMP, "the PUBCOMP of a PUBREL on stream 12");
    assert_eq!(
        (pubcomp["pid"].as_u64(), pubcomp["reason"].as_u64()),
        (Some(11), Some(0)),
        "{pubcomp}"
    );
    q.expect_message(8, &tb, "q2");

    // UNSUBSCRIBE on a data stream → UNSUBACK there; its topic is delivered no more.
    q.send(json!([[8, "unsubscribe", 4, tb]]));
    let unsuback = q.expect(8, UNSUBACK, "the UNSUBACK of UNSUBSCRIBE on stream 8");
    assert_eq!(
        (unsuback["pid"].as_u64(), &unsuback["reasons"]),
        (Some(4), &json!([0])),
        "{unsuback}"
    );
    tcp.publish(&tb, "b3");
    tcp.publish(&ta, "a3");
    q.expect_message(4, &ta, "a3");
    q.sync();
    q.assert_quiet();
    q.finish();
}

/// A data stream with `forbidden` (a control-stream packet) on it: the broker resets that
/// stream with 0x82; the control stream and the other data streams go on.
fn forbidden_on_a_data_stream(forbidden: Value, what: &str) {
    let (broker, port) = quic_broker();
    let topic = unique("qm/c/");
    let mut q = Multi::start(port);
    q.connect(&unique("qmc"));
    q.send(json!([[4, "subscribe", 1, topic, 1]]));
    q.expect(4, SUBACK, "SUBACK");
    let mut send = json!([8]);
    send.as_array_mut()
        .unwrap()
        .extend(forbidden.as_array().unwrap().iter().cloned());
    q.send(json!([send]));
    q.expect_reset(8, what);
    // The connection, the control stream and the other data streams go on.
    q.sync();
    let mut tcp = TcpPublisher::open(&broker);
    tcp.publish(&topic, "still-here");
    q.expect_message(4, &topic, "still-here");
    q.send(json!([[12, "subscribe", 2, unique("qm/c2/"), 0]]));
    let suback = q.expect(12, SUBACK, "SUBACK on a data stream opened after the reset");
    assert_eq!(suback["pid"], 2, "{suback}");
    q.sync();
    q.assert_quiet();
    q.finish();
}

#[test]
fn multi_stream_a_pingreq_on_a_data_stream_resets_only_that_stream() {
    forbidden_on_a_data_stream(json!(["pingreq"]), "PINGREQ on a data stream");
}

#[test]
fn multi_stream_a_connect_on_a_data_stream_resets_only_that_stream() {
    forbidden_on_a_data_stream(
        json!(["connect", unique("qmc2")]),
        "CONNECT on a data stream",
    );
}

#[test]
fn multi_stream_a_data_stream_the_client_resets_hands_its_subscriptions_to_the_control_stream() {
    let (broker, port) = quic_broker();
    let (t4, t8, t12) = (unique("qm/d/4"), unique("qm/d/8"), unique("qm/d/12"));
    let mut q = Multi::start(port);
    q.connect(&unique("qmd"));
    q.send(json!([
        [4, "subscribe", 1, t4, 1],
        [8, "subscribe", 2, t8, 1],
        [12, "subscribe", 3, t12, 1],
    ]));
    for (stream, pid) in [(4, 1), (8, 2), (12, 3)] {
        let suback = q.expect(stream, SUBACK, "SUBACK");
        assert_eq!(suback["pid"], pid, "{suback}");
    }
    let mut tcp = TcpPublisher::open(&broker);
    tcp.publish(&t4, "before");
    q.expect_message(4, &t4, "before");
    // Stream 4: RESET_STREAM (our sending side); stream 8: aborted both ways (RESET_STREAM
    // and STOP_SENDING). The sync makes sure the broker has seen both.
    q.cmd(json!({"op": "reset", "stream": 4, "code": 0}));
    q.cmd(json!({"op": "reset", "stream": 8, "code": 0, "stop": true}));
    q.sync();
    tcp.publish(&t4, "after-reset");
    tcp.publish(&t8, "after-abort");
    tcp.publish(&t12, "untouched");
    // The session lives on: the reset streams' subscriptions deliver on the control stream.
    q.expect_message(CONTROL, &t4, "after-reset");
    q.expect_message(CONTROL, &t8, "after-abort");
    q.expect_message(12, &t12, "untouched");
    q.sync();
    q.assert_quiet();
    q.finish();
}

#[test]
fn multi_stream_a_data_stream_the_client_finishes_hands_its_subscriptions_to_the_control_stream() {
    let (broker, port) = quic_broker();
    let topic = unique("qm/e/");
    let mut q = Multi::start(port);
    q.connect(&unique("qme"));
    q.send(json!([[4, "subscribe", 1, topic, 1]]));
    q.expect(4, SUBACK, "SUBACK");
    q.cmd(json!({"op": "fin", "stream": 4}));
    q.sync();
    let mut tcp = TcpPublisher::open(&broker);
    tcp.publish(&topic, "after-fin");
    q.expect_message(CONTROL, &topic, "after-fin");
    q.sync();
    q.assert_quiet();
    q.finish();
}

#[test]
fn multi_stream_ending_the_control_stream_ends_the_connection() {
    let (_broker, port) = quic_broker();
    let mut q = Multi::start(port);
    q.connect(&unique("qmf"));
    q.send(json!([[4, "subscribe", 1, unique("qm/f/"), 0]]));
    q.expect(4, SUBACK, "SUBACK");
    // FIN on the control stream, no DISCONNECT.
    q.cmd(json!({"op": "fin", "stream": CONTROL}));
    let r = q.cmd(json!({"op": "wait_closed", "timeout": READ_SECS}));
    assert!(
        !r["closed"].is_null(),
        "still open after the control stream ended: {r}"
    );
    let done = q.proc.finish(TIMEOUT);
    script_result("quic_multi.py", &done);
}
