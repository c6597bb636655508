//! MQTT over QUIC through the real broker with aioquic (an independent QUIC implementation):
//! ALPN `mqtt`, single-stream mode, the broker's generated self-signed certificate, a message
//! to a mosquitto_sub on TCP, and garbage datagrams that disturb nobody.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, python, python_run, unique};

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
