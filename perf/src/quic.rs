//! MQTT over QUIC (`--quic`): quinn-proto driven sans-IO from the generator thread's runtime,
//! in single-stream mode (every MQTT packet on the first bidirectional stream, exactly like a
//! TCP connection) or, with `--quic-multi-stream`, in EMQX's multi-stream mode (EIP-0023): the
//! first bidirectional stream is the control stream (CONNECT, CONNACK, PINGREQ, DISCONNECT),
//! and each client opens one more, its data stream ([`QuicStream::open_data`]), for its
//! SUBSCRIBE and PUBLISH traffic and their acks. The broker answers on the stream a request
//! came on, so a multi-stream client reads both (client.rs: one decoder and buffer per stream,
//! one session).
//!
//! Each generator thread has one client [`Endpoint`] (a `quinn_proto::Endpoint`) on one UDP
//! socket per address family its targets need (normally one), its connections multiplexed on
//! it by connection ID. Three kinds of tasks share it, none holding a borrow across an await:
//!
//! - the endpoint's receive loop (one per socket): datagram → `Endpoint::handle` → the
//!   connection's `handle_event`; then it wakes that connection's driver;
//! - a driver per connection: fires its timers (`poll_timeout`, `handle_timeout`), sends what
//!   `poll_transmit` builds (`send_to` on the shared socket), hands the endpoint its
//!   connection-ID bookkeeping (`poll_endpoint_events`) and turns the connection's events
//!   (`poll`) into wake-ups of the client's reader and writer;
//! - the client's own reader and writer (client.rs; one of each per stream), which read an MQTT
//!   stream straight from quinn's receive buffer into the decoder's buffer ([`QuicRecv`]) and
//!   write the output buffer into quinn's send buffer ([`QuicSend`]), then wake the driver.
//!
//! What waits is bounded by QUIC itself: quinn's send buffer by the send window (a write
//! returns `Blocked` beyond it, and the writer waits for `Writable`), its receive buffers by the
//! stream receive window the broker must respect (per stream: two streams, two windows, the
//! connection's receive window over both).
//!
//! The wake-ups are per connection, not per stream: a [`Notify`] wakes every waiter, so the
//! readers (writers) of both streams wake on any stream's event and each looks at its own
//! stream; with at most two streams that costs one spurious poll, and keeps the driver's event
//! handling free of any stream table.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::udp::UdpSocket;
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event, ReadError,
    ReadableError, StreamEvent, StreamId, VarInt, WriteError,
};

use crate::cli::Common;
use crate::notify::Notify;
use crate::stats::Latency;
use crate::transport::TlsSpec;

/// The ALPN protocol of MQTT over QUIC.
pub(crate) const ALPN: &[u8] = b"mqtt";
/// Our idle timeout; the broker's may be shorter (the smaller applies).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A PING after this long without sending anything keeps an idle connection open whatever
/// MQTT's keep alive (PINGREQ every `-k`/2, 150 s by default), as long as the broker's idle
/// timeout is longer (our broker's default is 15 s). Every idle connection sends one datagram
/// (and gets an ACK) this often.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Most stream bytes quinn buffers for sending per connection: beyond it a write waits.
const SEND_WINDOW: u64 = 1024 * 1024;
/// The broker may have this much of the MQTT stream in flight to us (and unread).
const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Asked for the UDP socket's kernel buffers (the kernel caps it at its `rmem_max` and
/// `wmem_max`): many handshakes at once mean bursts of server flights.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// A datagram read from the socket: the largest UDP payload.
const DATAGRAM_MAX: usize = 65536;

/// `--quic`: the TLS 1.3 settings (ALPN `mqtt`) and quinn's client configuration, shared by
/// every connection of every thread.
#[derive(Debug, Clone)]
pub(crate) struct QuicSpec {
    /// The verification, the client certificate and the server name of each target, as for
    /// `--tls`.
    pub(crate) tls: TlsSpec,
    /// The server name each target's certificate must hold, as quinn takes it (same order as
    /// `Scenario::targets`).
    pub(crate) server_names: Vec<String>,
    /// `--quic-multi-stream`: each client opens a data stream beside the control stream.
    pub(crate) multi_stream: bool,
    config: quinn_proto::ClientConfig,
}

impl QuicSpec {
    pub(crate) fn build(c: &Common) -> Result<Self, String> {
        let tls = TlsSpec::build_for(c, "--quic", &[&rustls::version::TLS13], &[ALPN])?;
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls.config.clone())
            .map_err(|e| format!("--quic: {e}"))?;
        let mut config = quinn_proto::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn_proto::TransportConfig::default();
        transport
            .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
            .keep_alive_interval(Some(KEEP_ALIVE))
            .send_window(SEND_WINDOW)
            .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
            .receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
            // The broker opens no stream towards a client, in either mode: in multi-stream mode
            // the client opens its data streams and the broker answers on them.
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(0));
        config.transport_config(Arc::new(transport));
        Ok(Self {
            tls,
            server_names: c.host.clone(),
            multi_stream: c.quic_multi_stream,
            config,
        })
    }

    /// The server name of target `i`.
    fn server_name(&self, i: usize) -> Option<&str> {
        self.server_names.get(i).map(String::as_str)
    }
}

/// One generator thread's QUIC client endpoint and its connections.
pub(crate) struct Endpoint {
    endpoint: RefCell<quinn_proto::Endpoint>,
    conns: RefCell<HashMap<ConnectionHandle, Rc<QuicConn>>>,
    /// The IPv4 and IPv6 sockets, those the targets need.
    v4: Option<Rc<UdpSocket>>,
    v6: Option<Rc<UdpSocket>>,
    spec: QuicSpec,
    /// First Initial sent → handshake confirmed, per connection.
    handshakes: RefCell<Latency>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.conns.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the sockets `targets` need (to `ifaddrs`' first address of each family, or the
    /// unspecified address) and starts their receive loops. Inside the runtime.
    pub(crate) fn start(
        spec: &QuicSpec,
        targets: &[SocketAddr],
        ifaddrs: &[IpAddr],
    ) -> Result<Rc<Self>, String> {
        let bind = |v6: bool| -> Result<Option<Rc<UdpSocket>>, String> {
            if !targets.iter().any(|t| t.is_ipv6() == v6) {
                return Ok(None);
            }
            let ip = ifaddrs
                .iter()
                .copied()
                .find(|a| a.is_ipv6() == v6)
                .unwrap_or(if v6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                });
            let local = SocketAddr::new(ip, 0);
            udp_socket(local)
                .map(|s| Some(Rc::new(s)))
                .map_err(|e| format!("QUIC: cannot bind a UDP socket to {local}: {e}"))
        };
        let ep = Rc::new(Self {
            endpoint: RefCell::new(quinn_proto::Endpoint::new(
                Arc::new(EndpointConfig::default()),
                None,
                true,
                None,
            )),
            conns: RefCell::new(HashMap::new()),
            v4: bind(false)?,
            v6: bind(true)?,
            spec: spec.clone(),
            handshakes: RefCell::new(Latency::default()),
        });
        for socket in ep.v4.iter().chain(ep.v6.iter()) {
            monoio::spawn(recv_loop(ep.clone(), socket.clone()));
        }
        Ok(ep)
    }

    /// The handshake times recorded so far (emptied).
    pub(crate) fn take_handshakes(&self) -> Latency {
        std::mem::take(&mut *self.handshakes.borrow_mut())
    }

    fn socket_for(&self, dest: SocketAddr) -> Option<&Rc<UdpSocket>> {
        if dest.is_ipv6() {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }

    /// Connects to target `i` at `target`: the QUIC handshake (TLS 1.3, ALPN `mqtt`), then
    /// the MQTT stream (the control stream in multi-stream mode) opened. The error says why the
    /// handshake failed (the certificate, the broker's refusal, no answer).
    pub(crate) async fn connect(
        self: &Rc<Self>,
        target: SocketAddr,
        i: usize,
    ) -> Result<QuicStream, String> {
        let name = self
            .spec
            .server_name(i)
            .ok_or_else(|| "no QUIC server name for this broker".to_owned())?;
        let connected = self.endpoint.borrow_mut().connect(
            Instant::now(),
            self.spec.config.clone(),
            target,
            name,
        );
        let (handle, conn) = connected.map_err(|e| format!("QUIC: {e}"))?;
        let qc = Rc::new(QuicConn {
            handle,
            conn: RefCell::new(conn),
            wake: Notify::default(),
            readable: Notify::default(),
            writable: Notify::default(),
            connected: Cell::new(false),
            lost: RefCell::new(None),
            confirmed: Cell::new(false),
            first_sent: Cell::new(None),
            send_error: RefCell::new(None),
            cancelled: Cell::new(false),
        });
        self.conns.borrow_mut().insert(handle, qc.clone());
        monoio::spawn(drive(self.clone(), qc.clone()));
        // From here on, dropping `app` (an error, a timeout) closes the connection.
        let app = Rc::new(App(qc.clone()));
        loop {
            let wait = qc.writable.notified();
            if let Some(e) = qc.lost.borrow().as_ref() {
                return Err(handshake_error(e, qc.send_error.borrow().as_deref()));
            }
            if qc.connected.get() {
                break;
            }
            wait.await;
        }
        loop {
            let wait = qc.writable.notified();
            if let Some(e) = qc.lost.borrow().as_ref() {
                return Err(describe(e));
            }
            let opened = qc.conn.borrow_mut().streams().open(Dir::Bi);
            if let Some(id) = opened {
                return Ok(QuicStream::new(app, id));
            }
            wait.await;
        }
    }
}

/// A non-blocking UDP socket bound to `local`, with large kernel buffers (best effort).
fn udp_socket(local: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if local.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives the socket's datagrams and hands each to the endpoint, then to its connection.
async fn recv_loop(ep: Rc<Endpoint>, socket: Rc<UdpSocket>) {
    let mut buf: Vec<u8> = Vec::with_capacity(DATAGRAM_MAX);
    let mut response: Vec<u8> = Vec::new();
    loop {
        buf.clear();
        let (res, b) = socket.recv_from(buf).await;
        buf = b;
        let (n, from) = match res {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors and the like: nothing a connection can use; its timers handle
                // the loss.
                if e.kind() != io::ErrorKind::Interrupted {
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
        };
        let now = Instant::now();
        // A copy of just the datagram: quinn keeps slices of it (stream data) until read.
        let data = BytesMut::from(&buf[..n.min(buf.len())]);
        response.clear();
        let event = ep
            .endpoint
            .borrow_mut()
            .handle(now, from, None, None, data, &mut response);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                let qc = ep.conns.borrow().get(&handle).cloned();
                if let Some(qc) = qc {
                    let mut conn = qc.conn.borrow_mut();
                    conn.handle_event(event);
                    // Handshake confirmed (RFC 9001 4.1.2): the broker's HANDSHAKE_DONE.
                    if !qc.confirmed.get() && conn.stats().frame_rx.handshake_done > 0 {
                        qc.confirmed.set(true);
                        if let Some(first) = qc.first_sent.get() {
                            ep.handshakes
                                .borrow_mut()
                                .record(nanos(now.saturating_duration_since(first)));
                        }
                    }
                    drop(conn);
                    qc.wake.notify();
                }
            }
            Some(DatagramEvent::Response(t)) => {
                // A stateless reset or version negotiation of ours.
                response.truncate(t.size);
                let out = std::mem::take(&mut response);
                let (_, b) = socket.send_to(out, t.destination).await;
                response = b;
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                // No server configuration: never happens; refused quietly if it does.
                ep.endpoint.borrow_mut().ignore(incoming);
            }
            None => {}
        }
    }
}

/// One QUIC connection, shared by its driver, the receive loop and the client's tasks. The
/// streams are not kept here: each [`QuicRecv`] and [`QuicSend`] names its own.
struct QuicConn {
    handle: ConnectionHandle,
    conn: RefCell<quinn_proto::Connection>,
    /// Wakes the driver: a datagram came, something was written or read, the client closed.
    wake: Notify,
    /// Wakes the readers (of every stream): stream data, a stream's end, the connection's end, a
    /// cancel.
    readable: Notify,
    /// Wakes the writers (of every stream) and the set-up: connected, a stream writable or
    /// available, the end.
    writable: Notify,
    /// The handshake completed.
    connected: Cell<bool>,
    /// Why the connection ended.
    lost: RefCell<Option<ConnectionError>>,
    /// The broker's HANDSHAKE_DONE was received.
    confirmed: Cell<bool>,
    /// When the first datagram (the first Initial) was sent.
    first_sent: Cell<Option<Instant>>,
    /// The last error of a send (for a handshake that gets no answer).
    send_error: RefCell<Option<String>>,
    /// The pending reads (of every stream) are cancelled.
    cancelled: Cell<bool>,
}

impl QuicConn {
    /// The connection's events for the endpoint and for the client's tasks.
    fn process(&self, ep: &Endpoint) {
        let mut conn = self.conn.borrow_mut();
        while let Some(ev) = conn.poll_endpoint_events() {
            let back = ep.endpoint.borrow_mut().handle_event(self.handle, ev);
            if let Some(back) = back {
                conn.handle_event(back);
                self.wake.notify();
            }
        }
        while let Some(ev) = conn.poll() {
            match ev {
                Event::Connected => {
                    self.connected.set(true);
                    self.writable.notify();
                }
                Event::ConnectionLost { reason } => {
                    *self.lost.borrow_mut() = Some(reason);
                    self.readable.notify();
                    self.writable.notify();
                }
                Event::Stream(StreamEvent::Readable { .. }) => self.readable.notify(),
                Event::Stream(StreamEvent::Stopped { .. }) => {
                    // The writer learns it at its next write, the reader at once (see
                    // `QuicRecv::try_read`): a stream with nothing to write would not notice.
                    self.readable.notify();
                    self.writable.notify();
                }
                Event::Stream(StreamEvent::Writable { .. } | StreamEvent::Available { .. }) => {
                    self.writable.notify()
                }
                Event::Stream(StreamEvent::Opened { dir }) => {
                    // The broker has no stream to open, in either mode (our limits are 0).
                    while let Some(id) = conn.streams().accept(dir) {
                        let _ = conn.recv_stream(id).stop(VarInt::from_u32(0));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs one connection's timers and sends its datagrams until it is drained.
async fn drive(ep: Rc<Endpoint>, qc: Rc<QuicConn>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Taken first: a wake-up while this pass runs (during a send) makes it go round again.
        let wake = qc.wake.notified();
        let now = Instant::now();
        {
            let mut conn = qc.conn.borrow_mut();
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
        }
        loop {
            buf.clear();
            let transmit = qc
                .conn
                .borrow_mut()
                .poll_transmit(Instant::now(), 1, &mut buf);
            let Some(t) = transmit else {
                break;
            };
            buf.truncate(t.size);
            let Some(socket) = ep.socket_for(t.destination) else {
                continue;
            };
            if qc.first_sent.get().is_none() {
                qc.first_sent.set(Some(Instant::now()));
            }
            let (res, b) = socket
                .send_to(std::mem::take(&mut buf), t.destination)
                .await;
            buf = b;
            if let Err(e) = res {
                // Lost like any datagram; kept to explain a handshake that gets no answer.
                *qc.send_error.borrow_mut() = Some(format!("send to {}: {e}", t.destination));
            }
        }
        qc.process(&ep);
        if qc.conn.borrow().is_drained() {
            ep.conns.borrow_mut().remove(&qc.handle);
            if qc.lost.borrow().is_none() {
                *qc.lost.borrow_mut() = Some(ConnectionError::LocallyClosed);
            }
            qc.readable.notify();
            qc.writable.notify();
            return;
        }
        let deadline = qc.conn.borrow_mut().poll_timeout();
        match deadline {
            Some(d) => {
                let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(d));
                monoio::select! {
                    _ = sleep => {},
                    _ = wake => {},
                }
            }
            None => wake.await,
        }
    }
}

/// The client's side of a connection, shared by the halves of its streams: closing the
/// connection when the client drops the last of them.
struct App(Rc<QuicConn>);

impl Drop for App {
    fn drop(&mut self) {
        let mut conn = self.0.conn.borrow_mut();
        if !conn.is_closed() {
            conn.close(Instant::now(), VarInt::from_u32(0), Bytes::new());
            drop(conn);
            self.0.wake.notify();
        }
    }
}

/// One bidirectional MQTT stream of an established connection (the control stream, or a
/// data stream in multi-stream mode), before the client's tasks share it.
pub(crate) struct QuicStream {
    recv: QuicRecv,
    send: QuicSend,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicStream").finish_non_exhaustive()
    }
}

impl QuicStream {
    fn new(app: Rc<App>, id: StreamId) -> Self {
        Self {
            recv: QuicRecv {
                app: app.clone(),
                id,
            },
            send: QuicSend { app, id },
        }
    }

    /// `--quic-multi-stream`: opens a data stream, another bidirectional stream on this
    /// stream's connection. Nothing goes on the wire until something is written on it (QUIC
    /// has no "open" frame: the broker learns of a stream from its first STREAM frame).
    ///
    /// Fails at once if the broker allows no further stream: its limit came in its transport
    /// parameters with the handshake, and a broker that allows one bidirectional stream is a
    /// single-stream broker, so waiting for more (a MAX_STREAMS frame) would only turn a clear
    /// refusal into a CONNACK timeout.
    pub(crate) fn open_data(&self) -> Result<QuicStream, String> {
        let app = &self.recv.app;
        let qc = &app.0;
        if let Some(e) = qc.lost.borrow().as_ref() {
            return Err(describe(e));
        }
        let opened = qc.conn.borrow_mut().streams().open(Dir::Bi);
        match opened {
            Some(id) => Ok(QuicStream::new(app.clone(), id)),
            None => Err(
                "--quic-multi-stream: the broker allows no second bidirectional stream \
                         (a single-stream broker)"
                    .to_owned(),
            ),
        }
    }

    /// The reader's and the writer's halves.
    pub(crate) fn into_split(self) -> (QuicRecv, QuicSend) {
        (self.recv, self.send)
    }

    /// What cancels the reader's pending read.
    pub(crate) fn canceller(&self) -> ReadCanceller {
        ReadCanceller(self.recv.app.0.clone())
    }
}

impl AsyncReadRent for QuicStream {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.recv.read(buf)
    }

    fn readv<T: IoVecBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.recv.readv(buf)
    }
}

impl AsyncWriteRent for QuicStream {
    fn write<T: IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.send.write(buf)
    }

    fn writev<T: IoVecBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.send.writev(buf)
    }

    fn flush(&mut self) -> impl Future<Output = io::Result<()>> {
        self.send.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        self.send.shutdown()
    }
}

/// Cancels a connection's pending (or next) reads, on every stream: they fail with `ECANCELED`,
/// like a cancelled monoio read.
#[derive(Clone)]
pub(crate) struct ReadCanceller(Rc<QuicConn>);

impl std::fmt::Debug for ReadCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCanceller").finish_non_exhaustive()
    }
}

impl ReadCanceller {
    pub(crate) fn cancel(&self) {
        self.0.cancelled.set(true);
        self.0.readable.notify();
    }
}

/// The reading half of stream `id`: its bytes straight from quinn's receive buffer.
pub(crate) struct QuicRecv {
    app: Rc<App>,
    id: StreamId,
}

impl std::fmt::Debug for QuicRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicRecv").finish_non_exhaustive()
    }
}

impl QuicRecv {
    /// What a read into `dst` returns now: bytes (written from its start), the end (0), an
    /// error; `None`: nothing yet.
    fn try_read(&self, dst: &mut [MaybeUninit<u8>]) -> Option<io::Result<usize>> {
        let len = dst.len();
        let qc = &self.app.0;
        if qc.cancelled.get() {
            return Some(Err(io::Error::from_raw_os_error(libc::ECANCELED)));
        }
        if len == 0 {
            return Some(Ok(0));
        }
        let mut conn = qc.conn.borrow_mut();
        let mut recv = conn.recv_stream(self.id);
        let mut chunks = match recv.read(true) {
            Ok(c) => c,
            // Finished and read, or gone with the connection.
            Err(ReadableError::ClosedStream) => return Some(qc.end()),
            Err(e) => return Some(Err(io::Error::other(format!("QUIC: {e}")))),
        };
        let mut n = 0;
        let mut end = None;
        while n < len {
            match chunks.next(len - n) {
                Ok(Some(chunk)) => {
                    // `next` returns at most `len - n` bytes.
                    let m = chunk.bytes.len().min(len - n);
                    for (d, s) in dst[n..n + m].iter_mut().zip(&chunk.bytes[..m]) {
                        d.write(*s);
                    }
                    n += m;
                }
                Ok(None) => {
                    end = Some(Ok(0));
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(code)) => {
                    end = Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("QUIC: stream reset by broker (code {code})"),
                    )));
                    break;
                }
            }
        }
        if chunks.finalize().should_transmit() {
            // Flow-control credit for the broker.
            qc.wake.notify();
        }
        if n > 0 {
            return Some(Ok(n));
        }
        if end.is_some() {
            return end;
        }
        // STOP_SENDING from the broker: it reads nothing more of this stream, so no request or
        // ack of ours can go on it, and whatever waits for an answer on it would wait for
        // ever (a SUBSCRIBE's SUBACK, an idle stream's next message): the stream's end, once
        // what the broker sent before is read. A single-stream broker stops a second stream;
        // a multi-stream broker one that carried a packet a data stream may not carry.
        if let Ok(Some(code)) = conn.send_stream(self.id).stopped() {
            return Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("QUIC: stream stopped by broker (code {code})"),
            )));
        }
        drop(conn);
        if qc.lost.borrow().is_some() {
            return Some(qc.end());
        }
        None
    }
}

impl QuicConn {
    /// The read result once the stream has nothing more: its end, or why the connection
    /// ended.
    fn end(&self) -> io::Result<usize> {
        match self.lost.borrow().as_ref() {
            // The broker closed (as a TCP broker's FIN), or we did.
            None
            | Some(ConnectionError::ApplicationClosed(_))
            | Some(ConnectionError::LocallyClosed) => Ok(0),
            Some(e) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                describe(e),
            )),
        }
    }
}

impl AsyncReadRent for QuicRecv {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            let wait = self.app.0.readable.notified();
            let len = buf.bytes_total();
            // SAFETY: an `IoBufMut` is valid for writes of `bytes_total` bytes at `write_ptr`
            // while it lives, and nothing else touches it during this call.
            let dst = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr().cast(), len) };
            if let Some(res) = self.try_read(dst) {
                if let Ok(n) = res {
                    // SAFETY: `try_read` wrote `n` bytes from the start of the buffer.
                    unsafe { buf.set_init(n) };
                }
                return (res, buf);
            }
            wait.await;
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf`, which outlives it (kept here).
        let raw = unsafe { RawBuf::new_from_iovec_mut(&mut buf) };
        let Some(raw) = raw else {
            return (Ok(0), buf);
        };
        let (res, _) = self.read(raw).await;
        if let Ok(n) = res {
            // SAFETY: the read wrote `n` bytes at the start of the first vector.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl monoio::io::CancelableAsyncReadRent for QuicRecv {
    /// The handle is monoio's, for its own operations; a QUIC read is cancelled by
    /// [`ReadCanceller`].
    fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        _c: monoio::io::CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.read(buf)
    }

    fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        _c: monoio::io::CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.readv(buf)
    }
}

/// The writing half of stream `id`: into quinn's send buffer, then the driver sends.
pub(crate) struct QuicSend {
    app: Rc<App>,
    id: StreamId,
}

impl std::fmt::Debug for QuicSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSend").finish_non_exhaustive()
    }
}

impl QuicSend {
    /// Writes what quinn takes of `src` now; `None`: nothing (flow control), wait.
    fn try_write(&self, src: &[u8]) -> Option<io::Result<usize>> {
        let qc = &self.app.0;
        if let Some(e) = qc.lost.borrow().as_ref() {
            return Some(Err(io::Error::new(io::ErrorKind::BrokenPipe, describe(e))));
        }
        if src.is_empty() {
            return Some(Ok(0));
        }
        let res = qc.conn.borrow_mut().send_stream(self.id).write(src);
        match res {
            Ok(n) => {
                qc.wake.notify();
                Some(Ok(n))
            }
            Err(WriteError::Blocked) => None,
            Err(WriteError::Stopped(code)) => Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("QUIC: stream stopped by broker (code {code})"),
            ))),
            Err(WriteError::ClosedStream) => Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "QUIC: stream closed",
            ))),
        }
    }
}

impl AsyncWriteRent for QuicSend {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        loop {
            let wait = self.app.0.writable.notified();
            // SAFETY: `IoBuf` guarantees `bytes_init` initialised bytes at `read_ptr`
            // while `buf` lives and is not moved out of, as here.
            let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            if let Some(res) = self.try_write(src) {
                return (res, buf);
            }
            wait.await;
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer points into `buf_vec`, which outlives it (kept here).
        let raw = unsafe { RawBuf::new_from_iovec(&buf_vec) };
        let Some(raw) = raw else {
            return (Ok(0), buf_vec);
        };
        let (res, _) = self.write(raw).await;
        (res, buf_vec)
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Finishes the stream (a FIN after what was written).
    async fn shutdown(&mut self) -> io::Result<()> {
        let qc = &self.app.0;
        let _ = qc.conn.borrow_mut().send_stream(self.id).finish();
        qc.wake.notify();
        Ok(())
    }
}

/// Why a handshake failed, with a hint where the cause is usually on the command line.
fn handshake_error(e: &ConnectionError, send_error: Option<&str>) -> String {
    match e {
        ConnectionError::TransportError(t) if t.reason.starts_with("invalid peer certificate") => {
            format!(
                "QUIC handshake: {} (--cacertfile gives the CA of the broker's certificate, \
                 --insecure skips the check)",
                t.reason
            )
        }
        ConnectionError::TransportError(t) => format!("QUIC handshake: {t}"),
        ConnectionError::ConnectionClosed(c) => format!("QUIC handshake: refused by broker: {c}"),
        ConnectionError::ApplicationClosed(c) => {
            format!("QUIC handshake: closed by broker: {c}")
        }
        ConnectionError::TimedOut => match send_error {
            Some(s) => format!("QUIC handshake: no answer from the broker ({s})"),
            None => "QUIC handshake: no answer from the broker".to_owned(),
        },
        ConnectionError::VersionMismatch => {
            "QUIC handshake: the broker speaks no QUIC version of ours".to_owned()
        }
        e => format!("QUIC handshake: {e}"),
    }
}

/// Why an established connection ended.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(c) => format!("connection closed by broker ({c})"),
        ConnectionError::ConnectionClosed(c) => {
            format!("connection closed by broker (QUIC: {c})")
        }
        ConnectionError::TimedOut => "QUIC: idle timeout".to_owned(),
        ConnectionError::Reset => "QUIC: stateless reset by broker".to_owned(),
        e => format!("QUIC: {e}"),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
