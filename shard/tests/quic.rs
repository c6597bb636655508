//! The QUIC layer without sockets or a runtime: a quinn-proto client and two shards' QUIC
//! endpoints exchange datagrams in memory on a virtual clock. The handshake, MQTT over the
//! first stream to the session core and back, a client address change whose datagrams the
//! kernel would give to the other shard (handed to the owner), the idle timeout, and EMQX's
//! multi-stream mode (a control stream and data streams, answers on the stream they answer).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{ClientConfig, ConnectionHandle, Dir, Endpoint, EndpointConfig, StreamId};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shard::quic::{QuicEndpoint, QuicOptions, owner_of};
use shard::{Event, Settings, Shard};

const KEY: u64 = 0x5eed_cafe_f00d_beef;

fn server_config(
    idle: Duration,
    retry: bool,
) -> (
    Arc<quinn_proto::ServerConfig>,
    QuicOptions,
    CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    let options = QuicOptions {
        idle_timeout: idle,
        keep_alive_interval: Duration::ZERO,
        peer_bidi_stream_count: 10,
        peer_unidi_stream_count: 1,
        handshake_idle_timeout: Duration::from_secs(10),
        stateless_retry: retry,
        gso: true,
    };
    let config = shard::quic::server_config(Arc::new(tls), &options).unwrap();
    (config, options, der)
}

fn client_config(cert: CertificateDer<'static>) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    ClientConfig::new(Arc::new(
        quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

/// Two shards' endpoints (one core behind shard 0, where the connection lands), a client, and
/// the client's current address.
struct World {
    now: Instant,
    server_addr: SocketAddr,
    shards: [QuicEndpoint; 2],
    core: Shard,
    client: Endpoint,
    ch: ConnectionHandle,
    conn: quinn_proto::Connection,
    client_addr: SocketAddr,
    /// Which shard's socket the kernel hands the client's datagrams to.
    kernel_picks: usize,
    handed_over: usize,
    /// Transmits that carried several datagrams (GSO runs).
    gso_runs: usize,
}

impl World {
    fn new(idle: Duration, retry: bool) -> Self {
        let now = Instant::now();
        let server_addr: SocketAddr = "127.0.0.1:14567".parse().unwrap();
        let (config, options, cert) = server_config(idle, retry);
        let mut shards = [
            QuicEndpoint::new(config.clone(), &options, server_addr, 0, KEY),
            QuicEndpoint::new(config, &options, server_addr, 1, KEY),
        ];
        for s in &mut shards {
            s.set_max_segments(8);
        }
        let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let (ch, conn) = client
            .connect(now, client_config(cert), server_addr, "localhost")
            .unwrap();
        let mut core = Shard::new(0, 1, Settings::default());
        core.set_clock(now, 1_764_143_627_000);
        Self {
            now,
            server_addr,
            shards,
            core,
            client,
            ch,
            conn,
            client_addr: "10.0.0.1:50000".parse().unwrap(),
            kernel_picks: 0,
            handed_over: 0,
            gso_runs: 0,
        }
    }

    /// Moves datagrams both ways until nothing moves.
    fn exchange(&mut self) {
        for _ in 0..50 {
            let mut moved = false;
            // Client → server: the kernel picks a socket; a short-header packet for the other
            // shard's connection is handed over.
            loop {
                let mut buf = Vec::new();
                let Some(t) = self.conn.poll_transmit(self.now, 1, &mut buf) else {
                    break;
                };
                buf.truncate(t.size);
                moved = true;
                let mut target = self.kernel_picks;
                if let Some(owner) = owner_of(&buf, KEY, 2) {
                    if usize::from(owner) != target {
                        self.handed_over += 1;
                    }
                    target = usize::from(owner);
                }
                self.shards[target].handle_datagram(
                    self.now,
                    self.client_addr,
                    BytesMut::from(&buf[..]),
                );
            }
            // What the core has for its connections, as the driver tells the endpoints.
            while let Some(ev) = self.core.poll_event() {
                for q in &mut self.shards {
                    match ev {
                        Event::Write(k) | Event::Resume(k) => q.wake(k),
                        Event::Close(k) => q.close(k),
                    }
                }
            }
            // Server → client, from shard 0 (owner) only: shard 1 never owns it here.
            for s in 0..2 {
                let ended = self.shards[s].pump(self.now, &mut self.core);
                for key in ended {
                    self.core.handle_closed(self.now, key);
                }
                while let Some(t) = self.shards[s].poll_transmit() {
                    assert_eq!(s, 0, "only the owner shard answers");
                    if t.dest != self.client_addr {
                        // To the old address (a path probe): the NAT mapping is gone.
                        continue;
                    }
                    moved = true;
                    self.gso_runs += usize::from(t.count() > 1);
                    // What the kernel makes of a GSO run: one datagram per segment.
                    for data in t.datagrams() {
                        let mut buf = Vec::new();
                        if let Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) =
                            self.client.handle(
                                self.now,
                                self.server_addr,
                                None,
                                None,
                                BytesMut::from(data),
                                &mut buf,
                            )
                        {
                            self.conn.handle_event(ev);
                        }
                    }
                }
            }
            while let Some(ev) = self.conn.poll_endpoint_events() {
                if let Some(back) = self.client.handle_event(self.ch, ev) {
                    self.conn.handle_event(back);
                }
            }
            while let Some(ev) = self.conn.poll() {
                // RFC 9000, 3.5: STOP_SENDING is answered with RESET_STREAM (quinn-proto leaves
                // it to the application).
                if let quinn_proto::Event::Stream(quinn_proto::StreamEvent::Stopped {
                    id,
                    error_code,
                }) = ev
                {
                    let _ = self.conn.send_stream(id).reset(error_code);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn read(&mut self, id: StreamId) -> Vec<u8> {
        let mut out = Vec::new();
        if let Ok(mut chunks) = self.conn.recv_stream(id).read(true) {
            while let Ok(Some(c)) = chunks.next(usize::MAX) {
                out.extend_from_slice(&c.bytes);
            }
            let _ = chunks.finalize();
        }
        out
    }
}

const CONNECT: &[u8] = &[
    0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'q', b'1',
];
const PINGREQ: &[u8] = &[0xc0, 0x00];
const PINGRESP: &[u8] = &[0xd0, 0x00];

#[test]
fn handshake_stream_migration_and_idle_timeout() {
    let mut w = World::new(Duration::from_secs(5), false);
    w.exchange();
    assert!(!w.conn.is_handshaking(), "handshake done");
    assert_eq!(w.shards[0].connection_count(), 1);
    assert_eq!(w.shards[1].connection_count(), 0);

    // MQTT over the first bidirectional stream.
    let id = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(id).write(CONNECT).unwrap();
    w.exchange();
    assert_eq!(w.read(id), [0x20, 0x02, 0x00, 0x00], "CONNACK");
    assert_eq!(w.core.connection_count(), 1);

    // The client's address changes; the kernel now hands its datagrams to shard 1's socket.
    w.client_addr = "10.0.0.2:61000".parse().unwrap();
    w.kernel_picks = 1;
    w.conn.send_stream(id).write(PINGREQ).unwrap();
    w.exchange();
    assert!(
        w.handed_over > 0,
        "datagrams reached shard 1 and were handed to shard 0"
    );
    assert_eq!(
        w.read(id),
        PINGRESP,
        "the session goes on at the new address"
    );
    assert_eq!(
        w.shards[1].connection_count(),
        0,
        "shard 1 never took the connection"
    );

    // Silence: the connection times out and the core connection ends.
    for _ in 0..10 {
        w.now += Duration::from_secs(1);
        for s in &mut w.shards {
            s.handle_timeout(w.now);
        }
        let ended = w.shards[0].pump(w.now, &mut w.core);
        for key in ended {
            w.core.handle_closed(w.now, key);
        }
        while w.shards[0].poll_transmit().is_some() {}
    }
    assert_eq!(w.shards[0].connection_count(), 0, "idle connection drained");
    assert_eq!(
        w.core.connection_count(),
        0,
        "the MQTT connection ended with it"
    );
}

#[test]
fn stateless_retry_validates_the_address_first() {
    let mut w = World::new(Duration::from_secs(5), true);
    // The first answer to the client's Initial is a Retry (long header, type 3), and no
    // connection exists on the server yet.
    let mut buf = Vec::new();
    let t = w.conn.poll_transmit(w.now, 1, &mut buf).unwrap();
    buf.truncate(t.size);
    w.shards[0].handle_datagram(w.now, w.client_addr, BytesMut::from(&buf[..]));
    let answer = w.shards[0].poll_transmit().unwrap().data;
    assert_eq!(answer[0] & 0xb0, 0xb0, "a Retry packet: {:#04x}", answer[0]);
    assert_eq!(w.shards[0].connection_count(), 0);
    let mut scratch = Vec::new();
    if let Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) = w.client.handle(
        w.now,
        w.server_addr,
        None,
        None,
        BytesMut::from(&answer[..]),
        &mut scratch,
    ) {
        w.conn.handle_event(ev);
    }
    w.exchange();
    assert!(
        !w.conn.is_handshaking(),
        "the client followed the Retry and connected"
    );
    let id = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(id).write(CONNECT).unwrap();
    w.exchange();
    assert_eq!(w.read(id), [0x20, 0x02, 0x00, 0x00], "CONNACK");
}

#[test]
fn a_handshake_that_stalls_is_abandoned() {
    let mut w = World::new(Duration::from_secs(60), false);
    // The client's first flight reaches shard 0; nothing after it does.
    let mut buf = Vec::new();
    let t = w.conn.poll_transmit(w.now, 1, &mut buf).unwrap();
    buf.truncate(t.size);
    w.shards[0].handle_datagram(w.now, w.client_addr, BytesMut::from(&buf[..]));
    let _ = w.shards[0].pump(w.now, &mut w.core);
    assert_eq!(w.shards[0].connection_count(), 1);
    let deadline = w.shards[0].poll_timeout().unwrap();
    assert!(deadline <= w.now + Duration::from_secs(10));
    for _ in 0..40 {
        w.now += Duration::from_secs(1);
        w.shards[0].handle_timeout(w.now);
        let _ = w.shards[0].pump(w.now, &mut w.core);
        while w.shards[0].poll_transmit().is_some() {}
    }
    assert_eq!(
        w.shards[0].connection_count(),
        0,
        "gone after handshake_idle_timeout (10 s), long before the 60 s idle timeout"
    );
}

/// What the client's side of stream `id` ended with: the reset code if the server reset it.
fn reset_code(w: &mut World, id: StreamId) -> Option<u64> {
    let mut recv = w.conn.recv_stream(id);
    let mut chunks = recv.read(true).ok()?;
    let code = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(_)) => {}
            Err(quinn_proto::ReadError::Reset(code)) => break Some(code.into_inner()),
            _ => break None,
        }
    };
    let _ = chunks.finalize();
    code
}

#[test]
fn multi_stream_answers_on_the_stream_of_the_request() {
    let mut w = World::new(Duration::from_secs(60), false);
    w.exchange();
    // Control stream: CONNECT. A data stream opened before CONNACK: SUBSCRIBE t (QoS 1).
    let control = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(control).write(CONNECT).unwrap();
    let data = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn
        .send_stream(data)
        .write(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x01])
        .unwrap();
    w.exchange();
    assert_eq!(
        w.read(control),
        [0x20, 0x02, 0x00, 0x00],
        "CONNACK on control"
    );
    assert_eq!(
        w.read(data),
        [0x90, 0x03, 0x00, 0x01, 0x01],
        "SUBACK on data"
    );

    // PUBLISH QoS 1 to t on the data stream: its PUBACK and the delivery of t come back on
    // the data stream; the control stream gets nothing.
    let publish = [0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x02, b'h', b'i'];
    w.conn.send_stream(data).write(&publish).unwrap();
    w.exchange();
    let got = w.read(data);
    let delivery = [0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x01, b'h', b'i'];
    let puback = [0x40, 0x02, 0x00, 0x02];
    assert_eq!(got, [&delivery[..], &puback[..]].concat(), "{got:02x?}");
    assert_eq!(w.read(control), b"", "nothing on the control stream");
    w.conn
        .send_stream(data)
        .write(&[0x40, 0x02, 0x00, 0x01])
        .unwrap();

    // PINGREQ belongs on the control stream: on a second data stream it resets that stream
    // (0x82, Protocol Error); the connection and the first data stream go on.
    let bad = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(bad).write(PINGREQ).unwrap();
    w.conn.send_stream(control).write(PINGREQ).unwrap();
    w.exchange();
    assert_eq!(reset_code(&mut w, bad), Some(0x82), "data stream reset");
    assert_eq!(w.read(control), PINGRESP, "control stream answers");
    assert_eq!(w.core.connection_count(), 1, "connection alive");

    // The client aborts the data stream: the connection stays, and t's messages (its
    // subscription was made there) now come on the control stream.
    w.conn
        .send_stream(data)
        .reset(quinn_proto::VarInt::from_u32(0))
        .unwrap();
    w.conn
        .recv_stream(data)
        .stop(quinn_proto::VarInt::from_u32(0))
        .unwrap();
    w.exchange();
    let other = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn
        .send_stream(other)
        .write(&[0x30, 0x05, 0x00, 0x01, b't', b'y', b'o'])
        .unwrap();
    w.exchange();
    assert_eq!(
        w.read(control),
        [0x30, 0x05, 0x00, 0x01, b't', b'y', b'o'],
        "delivered on the control stream once its stream is gone"
    );
    assert_eq!(w.read(other), b"", "not on the publisher's stream");
    assert_eq!(w.core.connection_count(), 1);
}

#[test]
fn a_connect_on_a_data_stream_resets_that_stream_only() {
    let mut w = World::new(Duration::from_secs(60), false);
    w.exchange();
    let control = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(control).write(CONNECT).unwrap();
    w.exchange();
    assert_eq!(w.read(control), [0x20, 0x02, 0x00, 0x00]);
    // More data streams than the 10 allowed at once, each starting a second CONNECT (its
    // first byte is enough to refuse it): each is reset, which frees its slot for the next.
    let mut reset = 0;
    for _ in 0..12 {
        let d = w
            .conn
            .streams()
            .open(Dir::Bi)
            .unwrap_or_else(|| panic!("no stream credit after {reset} resets"));
        w.conn.send_stream(d).write(&[0x10]).unwrap();
        w.exchange();
        assert_eq!(reset_code(&mut w, d), Some(0x82));
        reset += 1;
        assert!(!w.conn.is_closed());
    }
    assert_eq!(reset, 12);
    w.conn.send_stream(control).write(PINGREQ).unwrap();
    w.exchange();
    assert_eq!(w.read(control), PINGRESP, "the connection goes on");
}

#[test]
fn a_backlog_goes_out_in_gso_runs_the_client_reads_whole() {
    let mut w = World::new(Duration::from_secs(60), false);
    w.exchange();
    let control = w.conn.streams().open(Dir::Bi).unwrap();
    w.conn.send_stream(control).write(CONNECT).unwrap();
    // SUBSCRIBE big (QoS 0), then 40 PUBLISHes of 4 KiB to it: 160 KiB back in one go.
    w.conn
        .send_stream(control)
        .write(&[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'b', b'i', b'g', 0x00])
        .unwrap();
    w.exchange();
    assert_eq!(
        w.read(control),
        [0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00]
    );
    let mut publish = vec![0x30, 0x85, 0x20, 0x00, 0x03, b'b', b'i', b'g'];
    // Remaining length 2 + 3 + 4096 = 4101: varint 0x85 0x20.
    publish.extend(vec![7u8; 4096]);
    for _ in 0..40 {
        w.conn.send_stream(control).write(&publish).unwrap();
        w.exchange();
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(w.read(control));
        w.exchange();
    }
    assert_eq!(got.len(), 40 * publish.len(), "every byte, in order");
    assert!(got.chunks(publish.len()).all(|p| p == publish));
    assert!(w.gso_runs > 0, "some transmits carried several datagrams");
}
