//! The QUIC layer without sockets or a runtime: a quinn-proto client and two shards' QUIC
//! endpoints exchange datagrams in memory on a virtual clock. The handshake, MQTT over the
//! first stream to the session core and back, a client address change whose datagrams the
//! kernel would give to the other shard (handed to the owner), and the idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{ClientConfig, ConnectionHandle, Dir, Endpoint, EndpointConfig, StreamId};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shard::quic::{QuicEndpoint, QuicOptions, owner_of};
use shard::{Settings, Shard};

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
}

impl World {
    fn new(idle: Duration, retry: bool) -> Self {
        let now = Instant::now();
        let server_addr: SocketAddr = "127.0.0.1:14567".parse().unwrap();
        let (config, options, cert) = server_config(idle, retry);
        let shards = [
            QuicEndpoint::new(config.clone(), &options, server_addr, 0, KEY),
            QuicEndpoint::new(config, &options, server_addr, 1, KEY),
        ];
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
            // Server → client, from shard 0 (owner) only: shard 1 never owns it here.
            for s in 0..2 {
                let ended = self.shards[s].pump(self.now, &mut self.core);
                for key in ended {
                    self.core.handle_closed(self.now, key);
                }
                while let Some((dest, data)) = self.shards[s].poll_transmit() {
                    assert_eq!(s, 0, "only the owner shard answers");
                    if dest != self.client_addr {
                        // To the old address (a path probe): the NAT mapping is gone.
                        continue;
                    }
                    moved = true;
                    let mut buf = Vec::new();
                    if let Some(quinn_proto::DatagramEvent::ConnectionEvent(_, ev)) =
                        self.client.handle(
                            self.now,
                            self.server_addr,
                            None,
                            None,
                            BytesMut::from(&data[..]),
                            &mut buf,
                        )
                    {
                        self.conn.handle_event(ev);
                    }
                }
            }
            while let Some(ev) = self.conn.poll_endpoint_events() {
                if let Some(back) = self.client.handle_event(self.ch, ev) {
                    self.conn.handle_event(back);
                }
            }
            while self.conn.poll().is_some() {}
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
    let (_, answer) = w.shards[0].poll_transmit().unwrap();
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
