//! MQTT over QUIC, sans-IO: one `quinn_proto::Endpoint` per shard and its connections, between
//! the shard's UDP socket and the session core. Single-stream mode: the first bidirectional
//! stream a client opens carries every MQTT packet, exactly like a TCP connection; the session
//! core sees it as one more connection.
//!
//! The driver feeds datagrams in ([`QuicEndpoint::handle_datagram`]), calls
//! [`QuicEndpoint::handle_timeout`] when [`QuicEndpoint::poll_timeout`] says, moves MQTT bytes
//! both ways with [`QuicEndpoint::pump`], and sends what [`QuicEndpoint::poll_transmit`]
//! returns.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ServerConfig,
    StreamEvent, StreamId, VarInt,
};

use crate::core::{Read, Shard};
use crate::slab::Key;
use crate::udp::Transmit;

/// QUIC settings of a listener (`listeners.quic.*`, EMQX's names where they exist).
#[derive(Debug, Clone)]
pub struct QuicOptions {
    /// `idle_timeout`: a connection silent this long is closed.
    pub idle_timeout: Duration,
    /// `keep_alive_interval`: PINGs this often keep the connection (and NAT bindings) alive;
    /// zero is off.
    pub keep_alive_interval: Duration,
    /// `peer_bidi_stream_count`: bidirectional streams a client may open.
    pub peer_bidi_stream_count: u32,
    /// `peer_unidi_stream_count`: unidirectional streams a client may open.
    pub peer_unidi_stream_count: u32,
    /// `handshake_idle_timeout`: a handshake not complete after this long is abandoned.
    pub handshake_idle_timeout: Duration,
    /// Answer a new client's first Initial with a Retry (address validation) before any
    /// handshake work (`stateless_retry`, ours).
    pub stateless_retry: bool,
    /// Send runs of datagrams for one client with UDP GSO where the kernel has it (`gso`,
    /// ours).
    pub gso: bool,
}

/// The rustls configuration for QUIC (TLS 1.3, ALPN `mqtt`) and the options, as quinn-proto
/// wants them.
pub fn server_config(
    tls: Arc<rustls::ServerConfig>,
    o: &QuicOptions,
) -> Result<Arc<ServerConfig>, String> {
    let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC needs TLS 1.3 with AES-128-GCM: {e}"))?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_idle_timeout(o.idle_timeout.try_into().ok())
        .keep_alive_interval((!o.keep_alive_interval.is_zero()).then_some(o.keep_alive_interval))
        .max_concurrent_bidi_streams(VarInt::from_u32(o.peer_bidi_stream_count))
        .max_concurrent_uni_streams(VarInt::from_u32(o.peer_unidi_stream_count));
    config.transport_config(Arc::new(transport));
    Ok(Arc::new(config))
}

/// Length of the connection IDs this broker issues.
pub const CID_LEN: usize = 8;

/// Connection IDs that name the shard owning the connection without revealing it: 7 random
/// bytes, then the shard id XOR a keyed hash of those bytes. Every shard of the process shares
/// the key, so any shard finds the owner of a short-header packet ([`owner_of`]); an observer
/// without the key sees 8 random-looking bytes.
#[derive(Debug)]
pub struct ShardCids {
    shard: u16,
    key: u64,
    rng: u64,
}

impl ShardCids {
    /// The generator of `shard`, with the process-wide `key`.
    pub fn new(shard: u16, key: u64) -> Self {
        let seed = key ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ clock_seed();
        Self {
            shard,
            key,
            rng: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The keyed hash of a connection ID's random part.
fn mask(key: u64, random: &[u8]) -> u8 {
    let mut h = key ^ 0xcbf2_9ce4_8422_2325;
    for b in random {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    (h.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 56) as u8
}

impl quinn_proto::ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[..7].copy_from_slice(&self.next().to_le_bytes()[..7]);
        bytes[7] = (self.shard as u8) ^ mask(self.key, &bytes[..7]);
        quinn_proto::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The shard that owns the connection a datagram belongs to, when it can tell: a short-header
/// packet carries one of our connection IDs. Long-header packets (a new connection's Initial,
/// its Handshake) belong to the shard the kernel chose for the 4-tuple: `None`.
pub fn owner_of(datagram: &[u8], key: u64, shards: u16) -> Option<u16> {
    let first = *datagram.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let cid = datagram.get(1..1 + CID_LEN)?;
    let shard = u16::from(cid[7] ^ mask(key, &cid[..7]));
    (shard < shards).then_some(shard)
}

/// One QUIC connection and the session-core connection its MQTT streams feed.
struct QuicConn {
    conn: quinn_proto::Connection,
    /// Until when the handshake may run.
    handshake_deadline: Instant,
    /// The session-core connection, once the client opened its first stream.
    key: Option<Key>,
    /// The control stream: the first bidirectional stream the client opened (in single-stream
    /// mode, the only one). It is the core connection's lane 0.
    stream: Option<StreamId>,
    /// MQTT bytes received on the control stream, not yet decoded.
    inbox: BytesMut,
    /// MQTT bytes for the control stream that it has not taken yet.
    outbox: VecDeque<Bytes>,
    /// Data streams (multi-stream mode), each its own lane of the core connection.
    data: Vec<DataStream>,
    /// Bytes in all outboxes: the core's output is taken only while this is small, so a
    /// client that does not read leaves the backlog in the core, where it is bounded.
    pending: usize,
    /// The core closed the connection.
    closing: bool,
    /// The MQTT stream was finished at this time; the connection closes once the client has
    /// it all (or after [`LINGER`]), so a closing DISCONNECT is not lost.
    finished_at: Option<Instant>,
}

/// A data stream of a multi-stream connection (EMQX's EIP-0023): a further bidirectional
/// stream the client opened for PUBLISH and SUBSCRIBE traffic. Its answers, and the messages
/// of the subscriptions made on it, go back on it.
struct DataStream {
    id: StreamId,
    /// Its lane in the core connection: unique in the process (see [`next_lane`]), so a
    /// subscription made on a stream of an earlier connection of the session never names a
    /// stream of this one, and its messages go on the control stream.
    lane: u32,
    inbox: BytesMut,
    outbox: VecDeque<Bytes>,
    /// The client finished its side: once what it sent is handled and our output written, the
    /// stream ends and its lane's messages go on the control stream.
    fin: bool,
}

/// A lane number for a new data stream: never 0 (the control stream's), unique across every
/// shard until 2^32 - 1 data streams have been opened.
fn next_lane() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let lane = NEXT.fetch_add(1, Ordering::Relaxed);
        if lane != 0 {
            return lane;
        }
    }
}

/// QUIC application error code with which a data stream carrying a packet it may not carry is
/// reset: MQTT's Protocol Error reason code.
const PROTOCOL_ERROR: u32 = 0x82;

/// Core output is taken into the stream outboxes only while they hold less than this.
const OUTBOX_LIMIT: usize = 256 * 1024;

/// How long a closing connection waits for its last stream bytes to be acknowledged.
const LINGER: Duration = Duration::from_secs(1);

/// A shard's QUIC endpoint and connections.
pub struct QuicEndpoint {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, QuicConn>,
    by_key: HashMap<Key, ConnectionHandle>,
    local: SocketAddr,
    /// Datagrams to send: single ones, or runs for one client to send with GSO.
    transmits: VecDeque<Transmit>,
    /// Buffers of sent transmits, for the next ones ([`QuicEndpoint::recycle`]).
    spare: Vec<Vec<u8>>,
    /// Datagrams one transmit may carry: 1, or up to [`crate::udp::MAX_GSO_SEGMENTS`] with GSO.
    max_segments: usize,
    scratch: Vec<(u32, Bytes)>,
    handshake_idle_timeout: Duration,
    stateless_retry: bool,
    /// Connections with something to do (a datagram, a timer, core output) since the last
    /// pump: a pump visits these only, not every connection.
    dirty: Vec<ConnectionHandle>,
    /// Connections accepted since start, for metrics.
    accepted: u64,
}

impl std::fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// Most datagrams built per connection per pump.
const MAX_TRANSMITS: usize = 64;

/// Most spare transmit buffers kept.
const MAX_SPARE: usize = 256;

impl QuicEndpoint {
    /// The endpoint of shard `shard` accepting connections with `config`, on the socket bound
    /// to `local`; `cid_key` is the process-wide key of [`ShardCids`].
    pub fn new(
        config: Arc<ServerConfig>,
        options: &QuicOptions,
        local: SocketAddr,
        shard: u16,
        cid_key: u64,
    ) -> Self {
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config.cid_generator(move || Box::new(ShardCids::new(shard, cid_key)));
        Self {
            endpoint: Endpoint::new(Arc::new(endpoint_config), Some(config), true, None),
            conns: HashMap::new(),
            by_key: HashMap::new(),
            local,
            transmits: VecDeque::new(),
            spare: Vec::new(),
            max_segments: 1,
            scratch: Vec::new(),
            handshake_idle_timeout: options.handshake_idle_timeout,
            stateless_retry: options.stateless_retry,
            dirty: Vec::new(),
            accepted: 0,
        }
    }

    /// Lets one transmit carry up to `n` datagrams for one client (1 without GSO): the
    /// driver sends such a run in one UDP GSO send.
    pub fn set_max_segments(&mut self, n: usize) {
        self.max_segments = n.clamp(1, crate::udp::MAX_GSO_SEGMENTS);
    }

    /// Datagrams one transmit may carry (above 1: GSO runs).
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Gives back the buffer of a sent transmit.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < MAX_SPARE {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn push_transmit(&mut self, t: &quinn_proto::Transmit, mut data: Vec<u8>) {
        data.truncate(t.size);
        self.transmits.push_back(Transmit {
            dest: t.destination,
            segment: t.segment_size.unwrap_or(t.size),
            data,
        });
    }

    fn mark(&mut self, ch: ConnectionHandle) {
        if !self.dirty.contains(&ch) {
            self.dirty.push(ch);
        }
    }

    /// The core has output for (or closed) `key`: its connection is visited by the next pump.
    pub fn wake(&mut self, key: Key) {
        if let Some(ch) = self.by_key.get(&key).copied() {
            self.mark(ch);
        }
    }

    /// Open QUIC connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// QUIC connections accepted since start (handshakes begun).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Whether `key` is one of this endpoint's connections.
    pub fn owns(&self, key: Key) -> bool {
        self.by_key.contains_key(&key)
    }

    /// A datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        let mut buf = self.spare.pop().unwrap_or_default();
        let local_ip = Some(self.local.ip()).filter(|ip| !ip.is_unspecified());
        match self
            .endpoint
            .handle(now, from, local_ip, None, data, &mut buf)
        {
            Some(DatagramEvent::NewConnection(incoming)) => {
                let mut out = Vec::new();
                if self.stateless_retry && incoming.may_retry() {
                    // Address validation first: the client must echo the Retry token.
                    if let Ok(t) = self.endpoint.retry(incoming, &mut out) {
                        self.push_transmit(&t, out);
                    }
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut out, None) {
                    Ok((ch, conn)) => {
                        self.accepted += 1;
                        self.mark(ch);
                        self.conns.insert(
                            ch,
                            QuicConn {
                                conn,
                                handshake_deadline: now + self.handshake_idle_timeout,
                                key: None,
                                stream: None,
                                inbox: BytesMut::new(),
                                outbox: VecDeque::new(),
                                data: Vec::new(),
                                pending: 0,
                                closing: false,
                                finished_at: None,
                            },
                        );
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.push_transmit(&t, out);
                        }
                    }
                }
            }
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(event);
                    self.mark(ch);
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.push_transmit(&t, buf);
            }
            None => {}
        }
    }

    /// The earliest timer of any connection.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| {
                let handshake = c.conn.is_handshaking().then_some(c.handshake_deadline);
                let linger = c.finished_at.map(|at| at + LINGER);
                [c.conn.poll_timeout(), handshake, linger]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .min()
    }

    /// Fires the timers that are due, and abandons handshakes past `handshake_idle_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut fired = Vec::new();
        for (ch, c) in &mut self.conns {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
                fired.push(*ch);
            }
            if c.finished_at.is_some_and(|at| now >= at + LINGER) {
                fired.push(*ch);
            }
            if c.conn.is_handshaking() && now >= c.handshake_deadline {
                c.conn.close(
                    now,
                    VarInt::from_u32(0),
                    Bytes::from_static(b"handshake timeout"),
                );
                fired.push(*ch);
            }
        }
        for ch in fired {
            self.mark(ch);
        }
    }

    /// The core closed `key`: close its QUIC connection once its output is sent.
    pub fn close(&mut self, key: Key) {
        if let Some(ch) = self.by_key.get(&key).copied() {
            if let Some(c) = self.conns.get_mut(&ch) {
                c.closing = true;
            }
            self.mark(ch);
        }
    }

    /// Moves bytes between the connections' streams and `shard`, handles connection events,
    /// and queues the datagrams to send. Returns the core connections that ended.
    pub fn pump(&mut self, now: Instant, shard: &mut Shard) -> Vec<Key> {
        let mut ended = Vec::new();
        let handles = std::mem::take(&mut self.dirty);
        let mut again = Vec::new();
        for ch in handles {
            let Some(c) = self.conns.get_mut(&ch) else {
                continue;
            };
            // Endpoint bookkeeping (connection ids, retirement).
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(back);
                }
            }
            let mut lost = false;
            while let Some(ev) = c.conn.poll() {
                match ev {
                    Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                        while let Some(id) = c.conn.streams().accept(Dir::Bi) {
                            match c.key {
                                None if c.stream.is_none() => {
                                    // The first stream: the control stream, lane 0.
                                    c.stream = Some(id);
                                    let peer = c.conn.remote_address();
                                    let key = shard.handle_accept(now, peer);
                                    shard.set_listener(key, "quic");
                                    shard.enable_lanes(key);
                                    c.key = Some(key);
                                    self.by_key.insert(key, ch);
                                }
                                Some(_) if !c.closing && c.finished_at.is_none() => {
                                    c.data.push(DataStream {
                                        id,
                                        lane: next_lane(),
                                        inbox: BytesMut::new(),
                                        outbox: VecDeque::new(),
                                        fin: false,
                                    });
                                }
                                _ => {
                                    let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(0));
                                }
                            }
                        }
                    }
                    Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                        while let Some(id) = c.conn.streams().accept(Dir::Uni) {
                            let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(0));
                        }
                    }
                    // The client stopped reading a data stream: it is gone, its lane's
                    // messages go on the control stream.
                    Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) != c.stream => {
                        if let Some(i) = c.data.iter().position(|d| d.id == id) {
                            let d = c.data.swap_remove(i);
                            c.pending -= d.outbox.iter().map(Bytes::len).sum::<usize>();
                            let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(0));
                        }
                    }
                    Event::ConnectionLost { .. } => lost = true,
                    // Everything we sent on the MQTT stream, the closing DISCONNECT included,
                    // has arrived: now the connection can close.
                    Event::Stream(StreamEvent::Finished { id })
                        if Some(id) == c.stream && c.finished_at.is_some() =>
                    {
                        c.finished_at = None;
                        c.conn.close(now, VarInt::from_u32(0), Bytes::new());
                    }
                    _ => {}
                }
            }
            let mut finished = false;
            if let (Some(id), Some(key)) = (c.stream, c.key) {
                // Control stream → core.
                match read_stream(&mut c.conn, id, &mut c.inbox) {
                    StreamRead::Open => {}
                    // The client finished or reset its control stream: the MQTT connection
                    // ends as if the socket closed (a will is due).
                    StreamRead::Finished | StreamRead::Reset => finished = true,
                }
                if !c.inbox.is_empty() {
                    // Bounded per pump: the core handles at most its per-read budget; the rest
                    // waits for the next pump.
                    if let Read::More = shard.handle_read(now, key, &mut c.inbox) {
                        again.push(ch);
                    }
                }
                // Data streams → core, once CONNACK is out (a data stream opened earlier
                // waits for it in quinn's receive buffer, within its flow-control window).
                if !finished && shard.is_connected(key) {
                    let mut i = 0;
                    while i < c.data.len() {
                        let d = &mut c.data[i];
                        let mut gone = false;
                        match read_stream(&mut c.conn, d.id, &mut d.inbox) {
                            StreamRead::Open => {}
                            StreamRead::Finished => d.fin = true,
                            StreamRead::Reset => gone = true,
                        }
                        if !gone && !d.inbox.is_empty() {
                            match shard.handle_read_lane(now, key, d.lane, &mut d.inbox) {
                                Read::More => again.push(ch),
                                Read::Refused => {
                                    let code = VarInt::from_u32(PROTOCOL_ERROR);
                                    let _ = c.conn.send_stream(d.id).reset(code);
                                    let _ = c.conn.recv_stream(d.id).stop(code);
                                    gone = true;
                                }
                                _ => {}
                            }
                        }
                        if gone {
                            let d = c.data.swap_remove(i);
                            c.pending -= d.outbox.iter().map(Bytes::len).sum::<usize>();
                            continue;
                        }
                        i += 1;
                    }
                }
                // Core → streams: each piece on its lane's stream; a lane without a stream
                // (ended, or from an earlier connection of the session) on the control stream.
                if c.pending < OUTBOX_LIMIT {
                    self.scratch.clear();
                    shard.take_output_lanes(key, &mut self.scratch);
                    for (lane, bytes) in self.scratch.drain(..) {
                        c.pending += bytes.len();
                        match c.data.iter_mut().find(|d| d.lane == lane && lane != 0) {
                            Some(d) => d.outbox.push_back(bytes),
                            None => c.outbox.push_back(bytes),
                        }
                    }
                }
                c.pending -= write_stream(&mut c.conn, id, &mut c.outbox);
                let mut i = 0;
                while i < c.data.len() {
                    let d = &mut c.data[i];
                    c.pending -= write_stream(&mut c.conn, d.id, &mut d.outbox);
                    if d.fin && d.outbox.is_empty() && !again.contains(&ch) {
                        let _ = c.conn.send_stream(d.id).finish();
                        c.data.swap_remove(i);
                        continue;
                    }
                    i += 1;
                }
                if c.closing && c.outbox.is_empty() && c.data.iter().all(|d| d.outbox.is_empty()) {
                    for d in c.data.drain(..) {
                        let _ = c.conn.send_stream(d.id).finish();
                    }
                    let _ = c.conn.send_stream(id).finish();
                    c.finished_at = Some(now);
                    c.closing = false;
                }
                if c.finished_at.is_some_and(|at| now >= at + LINGER) {
                    c.finished_at = None;
                    c.conn.close(now, VarInt::from_u32(0), Bytes::new());
                }
            }
            if (lost || finished) && c.key.is_some() {
                if let Some(key) = c.key.take() {
                    self.by_key.remove(&key);
                    ended.push(key);
                }
                if finished && !lost {
                    // No MQTT without its control stream: close the QUIC connection too.
                    c.conn.close(
                        now,
                        VarInt::from_u32(0),
                        Bytes::from_static(b"stream ended"),
                    );
                }
            }
            // Datagrams: up to `max_segments` per transmit (a GSO run for one client).
            let mut n = 0;
            loop {
                let mut buf = self.spare.pop().unwrap_or_default();
                match c.conn.poll_transmit(now, self.max_segments, &mut buf) {
                    Some(t) => {
                        n += t.size.div_ceil(t.segment_size.unwrap_or(t.size).max(1));
                        buf.truncate(t.size);
                        self.transmits.push_back(Transmit {
                            dest: t.destination,
                            segment: t.segment_size.unwrap_or(t.size),
                            data: buf,
                        });
                        if n >= MAX_TRANSMITS {
                            // More next pump, after other connections had theirs.
                            again.push(ch);
                            break;
                        }
                    }
                    None => {
                        self.spare.push(buf);
                        break;
                    }
                }
            }
            if c.conn.is_drained() {
                if let Some(key) = c.key.take() {
                    self.by_key.remove(&key);
                    ended.push(key);
                }
                self.conns.remove(&ch);
            }
        }
        for ch in again {
            self.mark(ch);
        }
        ended
    }

    /// Whether a pump has work waiting (a connection over its per-pump budget).
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The next transmit to send (give its buffer back with [`QuicEndpoint::recycle`]).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
}

/// What reading a stream found.
enum StreamRead {
    /// Open: more may come.
    Open,
    /// The client finished its side (everything it sent is in the inbox).
    Finished,
    /// The client reset it, or it is gone.
    Reset,
}

/// Moves what stream `id` has received into `inbox` (bounded by the stream's flow-control
/// window).
fn read_stream(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    inbox: &mut BytesMut,
) -> StreamRead {
    let mut recv = conn.recv_stream(id);
    let mut chunks = match recv.read(true) {
        Ok(chunks) => chunks,
        Err(quinn_proto::ReadableError::ClosedStream) => return StreamRead::Finished,
        Err(_) => return StreamRead::Open,
    };
    let state = loop {
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => inbox.extend_from_slice(&chunk.bytes),
            Ok(None) => break StreamRead::Finished,
            Err(quinn_proto::ReadError::Reset(_)) => break StreamRead::Reset,
            Err(quinn_proto::ReadError::Blocked) => break StreamRead::Open,
        }
    };
    let _ = chunks.finalize();
    state
}

/// Writes what `outbox` holds to stream `id` as far as flow control lets it; returns the bytes
/// written, or dropped if the stream can no longer be written (stopped by the client).
fn write_stream(
    conn: &mut quinn_proto::Connection,
    id: StreamId,
    outbox: &mut VecDeque<Bytes>,
) -> usize {
    let mut done = 0;
    let mut send = conn.send_stream(id);
    while let Some(front) = outbox.front_mut() {
        match send.write(front) {
            Ok(n) if n == front.len() => {
                done += n;
                outbox.pop_front();
            }
            Ok(n) => {
                done += n;
                bytes::Buf::advance(front, n);
                break;
            }
            Err(quinn_proto::WriteError::Blocked) => break,
            Err(_) => {
                done += outbox.iter().map(Bytes::len).sum::<usize>();
                outbox.clear();
                break;
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use quinn_proto::ConnectionIdGenerator as _;

    use super::*;

    #[test]
    fn connection_ids_name_their_shard_to_the_key_holder_only() {
        let key = 0x1234_5678_9abc_def0;
        for shard in 0..4u16 {
            let mut g = ShardCids::new(shard, key);
            for _ in 0..200 {
                let cid = g.generate_cid();
                let mut short = vec![0x40];
                short.extend_from_slice(&cid[..]);
                short.extend_from_slice(&[0; 20]);
                assert_eq!(owner_of(&short, key, 4), Some(shard));
            }
        }
        // The last byte alone says nothing: across many ids of one shard it takes many values.
        let mut g = ShardCids::new(1, key);
        let last: std::collections::HashSet<u8> = (0..500).map(|_| g.generate_cid()[7]).collect();
        assert!(last.len() > 100, "{}", last.len());
        // Long headers (Initial, Handshake) stay where the kernel put them.
        assert_eq!(
            owner_of(&[0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8], key, 4),
            None
        );
        assert_eq!(owner_of(&[0x40, 1, 2], key, 4), None, "too short");
    }
}
