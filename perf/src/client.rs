//! One client on a generator thread: connect, CONNECT/CONNACK, then its role (idle,
//! subscriber, publisher) until the run stops.
//!
//! A connected client is four tasks around one [`Conn`], as in the broker's driver:
//!
//! - the client task itself reads: socket → ([`Link::input`]: TLS, WebSocket) → [`Decoder`] →
//!   [`Session::handle`] → counting;
//! - a writer drains the output buffer into the socket (two buffers swapped, no copy; through
//!   [`Link::output`] with TLS or WebSocket), and on stop sends DISCONNECT (then the WebSocket
//!   Close frame and TLS `close_notify`) and shuts the socket down;
//! - a publisher task (publishers only) appends PUBLISH packets on its schedule;
//! - a pinger sends PINGREQ when nothing was written for half the keep alive.
//!
//! `--quic-multi-stream` gives a connection two MQTT byte streams, each a [`Lane`]: the control
//! stream (CONNECT, CONNACK, PINGREQ, DISCONNECT) and a data stream (SUBSCRIBE, PUBLISH and
//! the acks of what arrives on it), opened right after CONNECT is written. Each lane has its
//! own output buffer and writer, and its own reader (decoder and buffer: the streams' bytes
//! never mix); both readers run in the client task and feed the one [`Session`] (packet ids
//! are per session, whatever the stream), and a reply goes out on the lane the packet came on,
//! as the broker answers on the stream a request came on. Every other transport, and
//! single-stream QUIC, has the control lane only, which then carries everything.
//!
//! Nothing here panics on what the network sends: every failure becomes a counted error with
//! the broker's reason code where there is one.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller,
};
use monoio::net::TcpStream;
use net::mqtt::{
    ConnAck, Connect, Decoder, Delivery, Disconnect, MAX_PACKET_SIZE, MqttStr, Packet,
    ProtocolVersion, Publish, PublishEncoder, QoS, ReasonCode, Role as MqttRole,
};

use crate::clock::Clock;
use crate::notify::{Notify, yield_now};
use crate::payload::Header;
use crate::quic::ReadCanceller;
use crate::scenario::{ClientSpec, Kind, Role, Scenario};
use crate::seq::SeqTracker;
use crate::session::{Effect, Session};
use crate::stats::{Live, PubRecord, SubRecord, max_opt, min_opt};
use crate::stream::Stream;
use crate::thread::ThreadCtx;
use crate::transport::{self, Flow, Link, SetupIo};

/// Smallest free space offered to a read.
const READ_MIN: usize = 4096;
/// Largest read buffer a busy subscriber grows to.
const READ_MAX: usize = 256 * 1024;
/// A publisher stops appending while this much output is waiting for the writer.
const HIGH_WATER: usize = 64 * 1024;
/// Most messages a publisher appends before letting other tasks run.
const BATCH: u64 = 64;

/// One of a connection's MQTT byte streams (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The connection's stream; QUIC multi-stream: its control stream.
    Control,
    /// QUIC multi-stream: the data stream; elsewhere the control lane stands in for it.
    Data,
}

/// The output side of one lane.
struct LaneOut {
    /// Packets waiting for the lane's writer.
    out: RefCell<BytesMut>,
    /// Wakes the lane's writer: `out` has data.
    writer_wake: Notify,
    /// When the lane's writer last wrote.
    last_write: Cell<Instant>,
}

impl LaneOut {
    fn new() -> Self {
        Self {
            out: RefCell::new(BytesMut::new()),
            writer_wake: Notify::default(),
            last_write: Cell::new(Instant::now()),
        }
    }
}

/// The I/O state of one connection, shared by its tasks.
pub(crate) struct Conn {
    /// The connection's stream (QUIC multi-stream: its control stream).
    control: LaneOut,
    /// QUIC multi-stream: the data stream.
    data: Option<LaneOut>,
    /// Wakes the publisher: an ack freed the window, a writer drained its `out`, or the
    /// connection closed.
    events: Notify,
    closed: Cell<bool>,
    session: RefCell<Session>,
    /// A subscriber's counts and sequence checks, updated by the readers of both lanes.
    sub: RefCell<Option<SubRecord>>,
    canceller: RefCell<Option<Canceller>>,
    /// Messages the publisher has sent: sequences `0..sent`.
    sent: Cell<u64>,
    /// Counted in `Live::ready`.
    ready: Cell<bool>,
    /// Counted in `Live::pubs_done`.
    pub_done: Cell<bool>,
    /// TLS and WebSocket between the socket and the codec; `None` for plain TCP and QUIC.
    link: Option<RefCell<Link>>,
    /// QUIC: what cancels the pending read (`canceller` cancels the kernel's reads only).
    quic_cancel: Option<ReadCanceller>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("out", &self.control.out.borrow().len())
            .field(
                "data_out",
                &self.data.as_ref().map(|d| d.out.borrow().len()),
            )
            .field("closed", &self.closed.get())
            .field("session", &self.session)
            .field("sent", &self.sent.get())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// `data`: the connection has a data stream (QUIC multi-stream).
    fn new(
        session: Session,
        link: Option<Link>,
        quic_cancel: Option<ReadCanceller>,
        data: bool,
    ) -> Self {
        Self {
            control: LaneOut::new(),
            data: data.then(LaneOut::new),
            events: Notify::default(),
            closed: Cell::new(false),
            session: RefCell::new(session),
            sub: RefCell::new(None),
            canceller: RefCell::new(None),
            sent: Cell::new(0),
            ready: Cell::new(false),
            pub_done: Cell::new(false),
            link: link.map(RefCell::new),
            quic_cancel,
        }
    }

    /// The output side of `lane`: the data lane is the control lane without a data stream.
    fn lane(&self, lane: Lane) -> &LaneOut {
        match (lane, &self.data) {
            (Lane::Data, Some(d)) => d,
            _ => &self.control,
        }
    }

    /// `what` happened on `lane`: named by its stream when the connection has two.
    fn name_lane(&self, lane: Lane, what: String) -> String {
        match (lane, &self.data) {
            (Lane::Data, Some(_)) => format!("data stream: {what}"),
            _ => what,
        }
    }

    /// Whether the link has something of its own to send.
    fn link_wants_write(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.borrow().wants_write())
    }

    /// Marks the connection closed and wakes its tasks.
    fn close(&self) {
        self.closed.set(true);
        self.control.writer_wake.notify();
        if let Some(d) = &self.data {
            d.writer_wake.notify();
        }
        self.events.notify();
    }

    /// Cancels the pending reads (of both lanes), which ends the client task.
    pub(crate) fn cancel_read(&self) {
        if let Some(c) = self.canceller.borrow_mut().take() {
            c.cancel();
        }
        if let Some(c) = &self.quic_cancel {
            c.cancel();
        }
    }
}

/// Decrements the thread's count of running clients when the client task ends.
struct Running<'a>(&'a ThreadCtx);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get().saturating_sub(1));
    }
}

/// Runs client `idx` of the scenario (already counted in `t.running`).
pub(crate) async fn run(t: Rc<ThreadCtx>, idx: usize) {
    let _running = Running(&t);
    let scn = t.scn.clone();
    let Some(spec) = scn.clients.get(idx) else {
        return;
    };
    let interval = u64::try_from(scn.interval.as_nanos()).unwrap_or(u64::MAX);
    let connect_at = t
        .shared
        .connect_epoch
        .saturating_add(interval.saturating_mul(idx as u64));
    while Clock::Monotonic.now() < connect_at {
        if t.stopping.get() {
            return;
        }
        wait(&t, None, Some(Clock::Monotonic.instant_at(connect_at))).await;
    }
    if t.stopping.get() {
        return;
    }
    {
        let mut st = t.stats.borrow_mut();
        st.first_attempt = min_opt(st.first_attempt, Some(Clock::Monotonic.now()));
    }
    let live = t.live();
    let est = match establish(&t, &scn, idx, spec).await {
        Ok(e) => e,
        Err(e) => {
            t.error(e);
            Live::add(&live.failed, 1);
            Live::add(&live.ready, 1);
            if let Role::Pub { id, topic, .. } = &spec.role {
                t.stats.borrow_mut().publishers.push(PubRecord {
                    id: *id,
                    topic: topic.clone(),
                    sent: 0,
                });
                Live::add(&live.pubs_done, 1);
            }
            return;
        }
    };
    Live::add(&live.established, 1);
    let window = match scn.publish.as_ref().map(|p| p.inflight) {
        Some(0) | None => usize::from(est.connack.properties.receive_maximum.unwrap_or(u16::MAX)),
        Some(w) => usize::from(w.min(est.connack.properties.receive_maximum.unwrap_or(u16::MAX))),
    };
    let (r, w, quic_cancel) = est.stream.into_split();
    // The data stream's cancel is the control stream's: a QUIC read cancel covers the
    // connection.
    let data = est.data.map(|d| {
        let (r, w, _) = d.into_split();
        (r, w)
    });
    let conn = Rc::new(Conn::new(
        Session::new(scn.version, window),
        est.link,
        quic_cancel,
        data.is_some(),
    ));
    t.conns.borrow_mut().insert(idx, Rc::downgrade(&conn));
    monoio::spawn(write_loop(t.clone(), conn.clone(), Lane::Control, w));
    let data_reader = data.map(|(r, w)| {
        monoio::spawn(write_loop(t.clone(), conn.clone(), Lane::Data, w));
        r
    });
    if scn.keepalive > 0 {
        monoio::spawn(ping_loop(t.clone(), conn.clone(), scn.keepalive));
    }
    match &spec.role {
        Role::Idle => mark_ready(&t, &conn),
        Role::Sub { filter } => {
            *conn.sub.borrow_mut() = Some(SubRecord {
                filter: filter.clone(),
                ..Default::default()
            });
            let lane = conn.lane(Lane::Data);
            let res = if est.subscribed {
                Ok(())
            } else {
                Session::subscribe(scn.version, filter, scn.sub_qos, &mut lane.out.borrow_mut())
            };
            match res {
                Ok(()) => {
                    lane.writer_wake.notify();
                    monoio::spawn(suback_timeout(t.clone(), conn.clone()));
                }
                Err(e) => {
                    t.error(e);
                    mark_ready(&t, &conn);
                }
            }
        }
        Role::Pub {
            id,
            topic,
            offset_ns,
            matches,
        } => {
            mark_ready(&t, &conn);
            monoio::spawn(publish_loop(
                t.clone(),
                conn.clone(),
                *id,
                topic.clone(),
                *offset_ns,
                *matches,
            ));
        }
    }
    // Whichever reader ends first ends the connection (`conn.close()`) and cancels the other
    // one's read, so the client task ends once, and whatever ended it is counted once (a reader
    // counts only while the connection is not closed).
    let control = async {
        read_loop(&t, &conn, Lane::Control, r, est.decoder, est.buf, est.raw).await;
        conn.close();
        conn.cancel_read();
    };
    match data_reader {
        None => control.await,
        Some(dr) => {
            // Its stream resumes after the control stream's CONNACK: no CONNACK of its own.
            let decoder = Decoder::resume(MqttRole::Client, scn.version, MAX_PACKET_SIZE);
            let data = async {
                read_loop(
                    &t,
                    &conn,
                    Lane::Data,
                    dr,
                    decoder,
                    BytesMut::new(),
                    BytesMut::new(),
                )
                .await;
                conn.close();
                conn.cancel_read();
            };
            monoio::join!(control, data);
        }
    }
    t.conns.borrow_mut().remove(&idx);
    conn.close();
    mark_ready(&t, &conn);
    let mut st = t.stats.borrow_mut();
    if let Some(s) = conn.sub.borrow_mut().take() {
        st.subscribers.push(s);
    }
    if let Role::Pub { id, topic, .. } = &spec.role {
        st.publishers.push(PubRecord {
            id: *id,
            topic: topic.clone(),
            sent: conn.sent.get(),
        });
        drop(st);
        finish_publisher(&t, &conn);
    }
}

/// A subscriber whose SUBACK does not come within the connect timeout is counted as an error
/// and as ready, so the run does not wait for it forever.
async fn suback_timeout(t: Rc<ThreadCtx>, conn: Rc<Conn>) {
    let timeout = t.scn.connect_timeout;
    let deadline = Instant::now() + timeout;
    while !conn.ready.get() && !conn.closed.get() && !t.stopping.get() {
        if Instant::now() >= deadline {
            t.error(format!("SUBACK: timed out after {}s", timeout.as_secs()));
            mark_ready(&t, &conn);
            return;
        }
        wait(&t, None, Some(deadline)).await;
    }
}

/// Counts the client as ready for the measured phase (once).
fn mark_ready(t: &ThreadCtx, conn: &Conn) {
    if !conn.ready.replace(true) {
        Live::add(&t.live().ready, 1);
        let mut st = t.stats.borrow_mut();
        st.last_ready = max_opt(st.last_ready, Some(Clock::Monotonic.now()));
    }
}

/// Counts the publisher as done (once).
fn finish_publisher(t: &ThreadCtx, conn: &Conn) {
    if !conn.pub_done.replace(true) {
        Live::add(&t.live().pubs_done, 1);
    }
}

/// Waits until `deadline`, a change of the thread's flags, or (with `conn`) an event of the
/// connection, whichever comes first. Callers check their conditions again afterwards.
async fn wait(t: &ThreadCtx, conn: Option<&Conn>, deadline: Option<Instant>) {
    let sleep = |d: Instant| monoio::time::sleep_until(monoio::time::Instant::from_std(d));
    match (conn, deadline) {
        (Some(c), Some(d)) => {
            monoio::select! {
                _ = sleep(d) => {},
                _ = t.changed.notified() => {},
                _ = c.events.notified() => {},
            }
        }
        (Some(c), None) => {
            monoio::select! {
                _ = t.changed.notified() => {},
                _ = c.events.notified() => {},
            }
        }
        (None, Some(d)) => {
            monoio::select! {
                _ = sleep(d) => {},
                _ = t.changed.notified() => {},
            }
        }
        (None, None) => t.changed.notified().await,
    }
}

/// A connection whose CONNACK accepted it.
struct Established {
    stream: Stream,
    /// `--quic-multi-stream`: the data stream.
    data: Option<Stream>,
    /// The SUBSCRIBE already went out (on the data stream, before CONNACK).
    subscribed: bool,
    /// TLS, WebSocket; `None` for plain TCP and QUIC.
    link: Option<Link>,
    decoder: Decoder,
    /// MQTT bytes read after the CONNACK.
    buf: BytesMut,
    /// Bytes read from the socket that no layer has taken yet (with a link).
    raw: BytesMut,
    connack: ConnAck,
}

/// TCP connect, TLS handshake, WebSocket upgrade (or the QUIC handshake), CONNECT, (QUIC
/// multi-stream: the data stream opened and a subscriber's SUBSCRIBE written on it), CONNACK;
/// the error is the description counted.
async fn establish(
    t: &ThreadCtx,
    scn: &Scenario,
    idx: usize,
    spec: &ClientSpec,
) -> Result<Established, String> {
    // `Scenario::build` resolved at least one address.
    let ti = idx % scn.targets.len().max(1);
    let Some(&target) = scn.targets.get(ti) else {
        return Err("no broker address".to_owned());
    };
    let timeout = scn.connect_timeout;
    let timed_out = |what: &str| format!("{what}: timed out after {}s", timeout.as_secs());
    let t0 = Instant::now();
    let (mut stream, mut link, mut io) = match &t.quic {
        Some(endpoint) => {
            let endpoint = endpoint.as_ref().map_err(Clone::clone)?;
            let hs = endpoint.connect(target, ti);
            let s = match monoio::time::timeout(timeout, hs).await {
                Err(_) => return Err(timed_out("QUIC handshake")),
                Ok(r) => r?,
            };
            (Stream::Quic(s), None, SetupIo::default())
        }
        None => {
            let (s, link, io) = tcp_setup(t, scn, idx, target, ti).await?;
            (Stream::Tcp(s), link, io)
        }
    };
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(scn, &spec.client_id)))
        .encode(scn.version, &mut out)
        .map_err(|e| format!("cannot encode CONNECT: {e}"))?;
    let h0 = Instant::now();
    match &mut link {
        None => {
            let (res, _) = stream.write_all(out).await;
            res.map_err(|e| format!("write: {e}"))?;
        }
        Some(l) => {
            l.output(&mut out, &mut io.wire)?;
            io.send(&mut stream)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
    }
    // Multi-stream: the data stream now, before CONNACK, as MQTT lets a client send right after
    // CONNECT (MQTT 5 3.1.4, 3.1.1 3.1.4): a subscriber's SUBSCRIBE goes in the same flight as
    // its CONNECT, and the broker holds the data stream's bytes until it has sent CONNACK. A
    // publisher's stream carries nothing until its first PUBLISH, an idle client's nothing
    // at all (QUIC announces a stream with its first bytes). Inside `handshake_us`, as writing
    // CONNECT is: a few microseconds of buffering into quinn.
    let mut data = None;
    let mut subscribed = false;
    if let Stream::Quic(s) = &stream
        && scn.transport.quic.as_ref().is_some_and(|q| q.multi_stream)
    {
        let mut d = s.open_data()?;
        if let Role::Sub { filter } = &spec.role {
            let mut sub = BytesMut::new();
            Session::subscribe(scn.version, filter, scn.sub_qos, &mut sub)?;
            // Quinn takes it at once (a new stream, far below its windows); bounded anyway.
            match monoio::time::timeout(timeout, d.write_all(sub)).await {
                Err(_) => return Err(timed_out("data stream: SUBSCRIBE")),
                Ok((res, _)) => res.map_err(|e| format!("data stream: write: {e}"))?,
            };
            subscribed = true;
        }
        data = Some(Stream::Quic(d));
    }
    let mut decoder = Decoder::client(scn.version, MAX_PACKET_SIZE);
    let closed_early = || "connection closed by broker before CONNACK".to_owned();
    let read = async {
        let mut buf = BytesMut::with_capacity(READ_MIN);
        loop {
            // What the layers hold (records that came with the handshake's last ones), then
            // what was just read.
            let mut flow = Flow::Open;
            if let Some(l) = &mut link {
                flow = l.input(&mut io.raw, &mut buf)?;
                if l.wants_write() {
                    l.output(&mut BytesMut::new(), &mut io.wire)?;
                    io.send(&mut stream)
                        .await
                        .map_err(|e| format!("write: {e}"))?;
                }
            }
            match decoder.decode(&mut buf) {
                Ok(Some(Packet::ConnAck(a))) => return Ok((a, buf)),
                Ok(Some(p)) => {
                    return Err(format!("expected CONNACK, got {:?}", p.packet_type()));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("CONNACK: {e}")),
            }
            if flow != Flow::Open {
                return Err(closed_early());
            }
            let res = if link.is_some() {
                io.recv(&mut stream).await
            } else {
                buf.reserve(decoder.needed().max(READ_MIN));
                let at = buf.len();
                let (res, b) = stream.read(buf.slice_mut(at..)).await;
                buf = b.into_inner();
                res
            };
            match res {
                Ok(0) => return Err(closed_early()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    let (connack, buf) = match monoio::time::timeout(timeout, read).await {
        Err(_) => return Err(timed_out("CONNACK")),
        Ok(r) => r?,
    };
    {
        let mut st = t.stats.borrow_mut();
        st.handshake.record(nanos(h0.elapsed()));
        st.setup.record(nanos(t0.elapsed()));
    }
    if !connack.reason_code.is_success() {
        return Err(match scn.version {
            ProtocolVersion::V5 => format!("CONNACK refused: {}", connack.reason_code),
            _ => format!(
                "CONNACK refused: return code {} {}",
                connack.reason_code.to_v3_connack(),
                connack.reason_code
            ),
        });
    }
    Ok(Established {
        stream,
        data,
        subscribed,
        link,
        decoder,
        buf,
        raw: io.raw,
        connack,
    })
}

/// TCP connect, TLS handshake, WebSocket upgrade: the stream, its link and what the
/// handshakes left unread.
async fn tcp_setup(
    t: &ThreadCtx,
    scn: &Scenario,
    idx: usize,
    target: SocketAddr,
    ti: usize,
) -> Result<(TcpStream, Option<Link>, SetupIo), String> {
    let ifaddr = scn.ifaddrs.get(idx % scn.ifaddrs.len().max(1)).copied();
    let timeout = scn.connect_timeout;
    let timed_out = |what: &str| format!("{what}: timed out after {}s", timeout.as_secs());
    let t0 = Instant::now();
    let mut stream = match monoio::time::timeout(timeout, tcp_connect(target, ifaddr)).await {
        Err(_) => return Err(timed_out("connect")),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    t.stats.borrow_mut().tcp_connect.record(nanos(t0.elapsed()));
    let _ = stream.set_nodelay(true);
    let mut io = SetupIo::default();
    let mut tls = None;
    if let Some(spec) = &scn.transport.tls {
        let mut conn = transport::tls_connection(spec, ti)?;
        let t1 = Instant::now();
        let hs = transport::tls_handshake(&mut stream, &mut conn, &mut io);
        match monoio::time::timeout(timeout, hs).await {
            Err(_) => return Err(timed_out("TLS handshake")),
            Ok(r) => r?,
        }
        t.stats
            .borrow_mut()
            .tls_handshake
            .record(nanos(t1.elapsed()));
        tls = Some(conn);
    }
    let mut ws = None;
    if let Some(spec) = &scn.transport.ws {
        let request = spec.request(ti)?;
        let t2 = Instant::now();
        let hs = transport::ws_handshake(&mut stream, tls.as_mut(), request, &mut io);
        ws = Some(match monoio::time::timeout(timeout, hs).await {
            Err(_) => return Err(timed_out("WebSocket handshake")),
            Ok(r) => r?,
        });
        t.stats
            .borrow_mut()
            .ws_handshake
            .record(nanos(t2.elapsed()));
    }
    Ok((stream, Link::new(tls, ws), io))
}

fn connect_packet(scn: &Scenario, client_id: &str) -> Connect {
    let mut c = Connect::new(scn.version, MqttStr::from(client_id.to_owned()));
    c.clean_start = scn.clean;
    c.keep_alive = scn.keepalive;
    c.username = scn.username.clone().map(MqttStr::from);
    c.password = scn.password.clone().map(|p| Bytes::from(p.into_bytes()));
    if scn.version == ProtocolVersion::V5 && scn.session_expiry > 0 {
        c.properties.session_expiry_interval = Some(scn.session_expiry);
    }
    c
}

/// Connects to `target`, from `ifaddr` when given (bound before connecting; the port is left
/// to the connect, so many connections can share a source address).
async fn tcp_connect(target: SocketAddr, ifaddr: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(local) = ifaddr else {
        return TcpStream::connect_addr(target).await;
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    bind_address_no_port(&socket);
    socket.bind(&SocketAddr::new(local, 0).into())?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let probe = socket.try_clone()?;
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable(false).await?;
    if let Some(e) = probe.take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// `IP_BIND_ADDRESS_NO_PORT`: best effort (an older kernel just picks the port at bind).
fn bind_address_no_port(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a socket owned by `socket` for the whole call, and the option value
    // points at a live `c_int` whose size is passed alongside.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Clock readings taken at most once per read.
struct Now {
    mono: u64,
    real: Option<u64>,
}

impl Now {
    fn on(&mut self, clock: Clock) -> u64 {
        match clock {
            Clock::Monotonic => self.mono,
            Clock::Realtime => *self.real.get_or_insert_with(|| Clock::Realtime.now()),
        }
    }
}

/// Reads and handles the packets of `lane` until the connection ends; replies go out on the
/// same lane.
async fn read_loop<R: CancelableAsyncReadRent>(
    t: &ThreadCtx,
    conn: &Conn,
    lane: Lane,
    mut r: R,
    mut decoder: Decoder,
    mut buf: BytesMut,
    mut raw: BytesMut,
) {
    // Only the control lane can be a kernel socket's (a data lane is QUIC's, whose reads
    // `conn.quic_cancel` cancels), so the connection keeps the control lane's canceller only.
    let canceller = Canceller::new();
    let cancel = canceller.handle();
    if lane == Lane::Control {
        *conn.canceller.borrow_mut() = Some(canceller);
    }
    let lane_out = conn.lane(lane);
    let closed = |why: String| closed_by_peer(t, conn.name_lane(lane, why));
    let mut target = READ_MIN;
    // The broker ended the session at the TLS or WebSocket level: handle what came before,
    // then stop.
    let mut peer_closed: Option<String> = None;
    loop {
        let mut now = Now {
            mono: Clock::Monotonic.now(),
            real: None,
        };
        let mut woke_publisher = false;
        let mut end = None;
        loop {
            let packet = match decoder.decode(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    end = Some(format!("bad packet from broker: {e}"));
                    break;
                }
            };
            let effect = conn
                .session
                .borrow_mut()
                .handle(packet, &mut lane_out.out.borrow_mut());
            match effect {
                Effect::None => {}
                Effect::Message(payload) => {
                    on_message(t, &mut conn.sub.borrow_mut(), &payload, &mut now);
                }
                Effect::Acked { intended } => {
                    Live::add(&t.live().acked, 1);
                    if let Some(p) = &t.scn.publish {
                        if intended < t.warmup_end(p.clock) {
                            t.stats.borrow_mut().warmup_acked += 1;
                        } else {
                            let n = now.on(p.clock);
                            t.stats
                                .borrow_mut()
                                .ack_latency
                                .record(n.saturating_sub(intended));
                        }
                    }
                    woke_publisher = true;
                }
                Effect::Refused { packet, code } => {
                    t.error(format!("{packet} refused: {code}"));
                    woke_publisher = true;
                }
                Effect::SubAck(Ok(())) => {
                    Live::add(&t.live().subscribed, 1);
                    mark_ready(t, conn);
                }
                Effect::SubAck(Err(code)) => {
                    t.error(format!("SUBACK refused: {code}"));
                    mark_ready(t, conn);
                }
                Effect::Disconnect(code) => {
                    end = Some(format!("DISCONNECT from broker: {code}"));
                    break;
                }
                Effect::Unexpected(what) => t.error(what),
            }
        }
        if !lane_out.out.borrow().is_empty() {
            lane_out.writer_wake.notify();
        }
        if woke_publisher {
            conn.events.notify();
        }
        if let Some(e) = end {
            if !conn.closed.get() {
                closed(e);
            }
            return;
        }
        if let Some(why) = peer_closed.take() {
            if !t.stopping.get() && !conn.closed.get() {
                closed(why);
            }
            return;
        }
        // Plain TCP reads straight into the decoder's buffer; with a link, into `raw`, which
        // the link turns into MQTT bytes.
        let layered = conn.link.is_some();
        let into = if layered { &mut raw } else { &mut buf };
        let free = into.capacity() - into.len();
        if free < READ_MIN {
            let want = if layered {
                target
            } else {
                decoder.needed().max(target)
            };
            into.reserve(want);
        }
        // monoio reads into the start of the buffer it is given: offer only the free space
        // after what is buffered (an incomplete packet or record).
        let at = into.len();
        let offered = into.capacity() - at;
        let (res, b) = r
            .cancelable_read(std::mem::take(into).slice_mut(at..), cancel.clone())
            .await;
        *into = b.into_inner();
        match res {
            Ok(0) => {
                if !t.stopping.get() && !conn.closed.get() {
                    closed("connection closed by broker".to_owned());
                }
                return;
            }
            Ok(n) => {
                if n == offered {
                    target = (target * 2).min(READ_MAX);
                }
                if let Some(link) = &conn.link {
                    let res = link.borrow_mut().input(&mut raw, &mut buf);
                    match res {
                        Ok(Flow::Open) => {}
                        Ok(Flow::Closed(why)) => peer_closed = Some(why),
                        Err(e) => {
                            if !t.stopping.get() && !conn.closed.get() {
                                closed(e);
                            }
                            return;
                        }
                    }
                    if link.borrow().wants_write() {
                        lane_out.writer_wake.notify();
                    }
                }
            }
            Err(e) => {
                // A write error closed the connection and cancelled this read: counted there.
                if !t.stopping.get() && !conn.closed.get() {
                    closed(format!("read: {e}"));
                }
                return;
            }
        }
    }
}

/// The broker ended a connection before the run did.
fn closed_by_peer(t: &ThreadCtx, why: String) {
    t.error(why);
    Live::add(&t.live().dropped, 1);
}

/// Counts, times and sequence-checks one received message. A warm-up message (intended before
/// the end of the warm-up) is counted and sequence-checked but not timed; a foreign one has no
/// intended send time, so it is never warm-up.
fn on_message(t: &ThreadCtx, sub: &mut Option<SubRecord>, payload: &Bytes, now: &mut Now) {
    Live::add(&t.live().received, 1);
    let header = Header::read(payload);
    let warmup = header.is_some_and(|h| h.timestamp < t.warmup_end(h.clock));
    let arrived = now.mono >= t.warmup_end(Clock::Monotonic);
    let mut st = t.stats.borrow_mut();
    if arrived {
        st.arrived += 1;
        st.first_arrived = min_opt(st.first_arrived, Some(now.mono));
        st.last_arrived = max_opt(st.last_arrived, Some(now.mono));
    }
    if warmup {
        st.warmup_received += 1;
    } else {
        st.first_received = min_opt(st.first_received, Some(now.mono));
        st.last_received = max_opt(st.last_received, Some(now.mono));
    }
    let Some(h) = header else {
        st.foreign += 1;
        return;
    };
    if !warmup {
        let n = now.on(h.clock);
        if h.timestamp > n {
            st.clock_skew += 1;
        }
        st.latency.record(n.saturating_sub(h.timestamp));
    }
    if let Some(s) = sub {
        // In `perf bench` the subscribers are ready before the first message is published, so
        // a stream of this run starts at 0; otherwise it starts where this subscriber joined.
        let from_zero = t.scn.kind == Kind::Bench && h.run == t.scn.run_id;
        s.streams
            .entry((h.run, h.publisher))
            .or_insert_with(|| {
                if from_zero {
                    SeqTracker::new()
                } else {
                    SeqTracker::starting_at(h.seq)
                }
            })
            .record(h.seq);
    }
}

/// Writes `lane`'s output buffer to its stream until the connection closes or the run stops;
/// then, on the control lane, says goodbye.
async fn write_loop<W: AsyncWriteRent>(t: Rc<ThreadCtx>, conn: Rc<Conn>, lane: Lane, mut w: W) {
    let lane_out = conn.lane(lane);
    let mut spare = BytesMut::new();
    // With a link: the framed and encrypted bytes.
    let mut wire: Vec<u8> = Vec::new();
    loop {
        if !lane_out.out.borrow().is_empty() || conn.link_wants_write() {
            let mut chunk = std::mem::replace(&mut *lane_out.out.borrow_mut(), spare);
            let res = match &conn.link {
                None => {
                    let (res, c) = w.write_all(chunk).await;
                    chunk = c;
                    res.map(|_| ()).map_err(|e| format!("write: {e}"))
                }
                Some(link) => {
                    let encoded = link.borrow_mut().output(&mut chunk, &mut wire);
                    match encoded {
                        Err(e) => Err(e),
                        Ok(()) if wire.is_empty() => Ok(()),
                        Ok(()) => {
                            let (res, mut v) = w.write_all(std::mem::take(&mut wire)).await;
                            v.clear();
                            wire = v;
                            res.map(|_| ()).map_err(|e| format!("write: {e}"))
                        }
                    }
                }
            };
            conn.events.notify();
            if let Err(e) = res {
                if !t.stopping.get() && !conn.closed.get() {
                    closed_by_peer(&t, conn.name_lane(lane, e));
                }
                conn.close();
                conn.cancel_read();
                return;
            }
            lane_out.last_write.set(Instant::now());
            chunk.clear();
            spare = chunk;
            continue;
        }
        if conn.closed.get() {
            return;
        }
        if t.stopping.get() {
            break;
        }
        monoio::select! {
            _ = lane_out.writer_wake.notified() => {},
            _ = t.changed.notified() => {},
        }
    }
    if lane == Lane::Data && conn.data.is_some() {
        // The data stream has flushed its acks; the goodbye goes on the control stream, and
        // the broker's close of the connection ends both streams.
        return;
    }
    // The run stops: say goodbye (DISCONNECT, then the WebSocket Close frame and TLS
    // close_notify). The broker then closes, which ends the reader.
    let mut bye = BytesMut::new();
    let version = conn.session.borrow().version();
    let packet = Packet::Disconnect(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION));
    if packet.encode(version, &mut bye).is_ok() {
        match &conn.link {
            None => {
                let _ = w.write_all(bye).await;
            }
            Some(link) => {
                let encoded = {
                    let mut l = link.borrow_mut();
                    l.output(&mut bye, &mut wire)
                        .and_then(|()| l.close(&mut wire))
                };
                if encoded.is_ok() {
                    let _ = w.write_all(wire).await;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Sends PINGREQ whenever nothing was written on the control stream for half the keep alive.
/// QUIC multi-stream: a busy data stream does not count, so a publisher still pings; one
/// PINGREQ per half keep alive is nothing, and it does not depend on whether the broker counts
/// a data stream's packets as keep-alive traffic.
async fn ping_loop(t: Rc<ThreadCtx>, conn: Rc<Conn>, keepalive: u16) {
    let idle = Duration::from_secs(u64::from(keepalive)) / 2;
    let control = &conn.control;
    loop {
        if conn.closed.get() || t.stopping.get() {
            return;
        }
        let due = control.last_write.get() + idle;
        if Instant::now() >= due {
            let version = conn.session.borrow().version();
            let _ = Packet::PingReq.encode(version, &mut control.out.borrow_mut());
            control.last_write.set(Instant::now());
            control.writer_wake.notify();
            continue;
        }
        wait(&t, None, Some(due)).await;
    }
}

/// Publishes on the scenario's schedule until the limit, the end of the measured phase, or
/// the connection's end; then waits (bounded by the drain time) for the acks.
async fn publish_loop(
    t: Rc<ThreadCtx>,
    conn: Rc<Conn>,
    id: u32,
    topic: String,
    offset_ns: u64,
    matches: u64,
) {
    let scn = t.scn.clone();
    let Some(spec) = scn.publish.as_ref() else {
        finish_publisher(&t, &conn);
        return;
    };
    let template = Publish::new(MqttStr::from(topic), Bytes::from(vec![0u8; spec.size]));
    let enc = match PublishEncoder::new(&template, scn.version) {
        Ok(e) => e,
        Err(e) => {
            t.error(format!("cannot encode PUBLISH: {e}"));
            finish_publisher(&t, &conn);
            return;
        }
    };
    while !t.go.get() {
        if t.publishing_over.get() || conn.closed.get() {
            finish_publisher(&t, &conn);
            return;
        }
        wait(&t, Some(&conn), None).await;
    }
    let start = t.publish_start.get().saturating_add(offset_ns);
    // Messages intended before this are warm-up messages: sent and counted, never timed.
    let warmup_end = t.warmup_end(spec.clock);
    let live = t.live();
    // PUBLISH goes on the data stream (QUIC multi-stream), its acks come back there.
    let lane = conn.lane(Lane::Data);
    let mut k: u64 = conn.sent.get();
    let limited = |k: u64| spec.limit > 0 && k >= spec.limit;
    'publish: loop {
        if conn.closed.get() || t.publishing_over.get() || limited(k) {
            break;
        }
        let window_full = spec.qos != QoS::AtMostOnce && !conn.session.borrow().can_send();
        if window_full || lane.out.borrow().len() >= HIGH_WATER {
            wait(&t, Some(&conn), None).await;
            continue;
        }
        let now = spec.clock.now();
        let next = match spec.period_ns {
            Some(p) => start.saturating_add(k.saturating_mul(p)),
            None => start,
        };
        if next > now {
            match &t.precise {
                Some(p) => {
                    let deadline = Clock::Monotonic.now() + (next - now);
                    monoio::select! {
                        _ = p.sleep_until(deadline) => {},
                        _ = t.changed.notified() => {},
                    }
                }
                None => wait(&t, Some(&conn), Some(spec.clock.instant_at(next))).await,
            }
            continue;
        }
        let mut n: u64 = 0;
        {
            let mut out = lane.out.borrow_mut();
            let mut session = conn.session.borrow_mut();
            let mut stats = t.stats.borrow_mut();
            while n < BATCH && out.len() < HIGH_WATER && !limited(k) {
                // Fixed rate: each message carries its own slot in the schedule, however late
                // it goes out (coordinated omission); otherwise the time it is written.
                let intended = match spec.period_ns {
                    Some(p) => start.saturating_add(k.saturating_mul(p)),
                    None => now,
                };
                if intended > now {
                    break;
                }
                if intended < warmup_end {
                    stats.warmup_sent += 1;
                } else if spec.period_ns.is_some() {
                    stats.lag.record(now - intended);
                }
                let packet_id = if spec.qos == QoS::AtMostOnce {
                    0
                } else if session.can_send() {
                    session.allocate(intended)
                } else {
                    break;
                };
                let d = Delivery {
                    qos: spec.qos,
                    retain: spec.retain,
                    packet_id,
                    ..Delivery::default()
                };
                if let Err(e) = enc.encode_head(&d, &mut out) {
                    drop((out, session, stats));
                    t.error(format!("cannot encode PUBLISH: {e}"));
                    break 'publish;
                }
                Header {
                    clock: spec.clock,
                    run: scn.run_id,
                    publisher: id,
                    seq: k,
                    timestamp: intended,
                }
                .write(spec.size, &mut out);
                k += 1;
                n += 1;
            }
        }
        conn.sent.set(k);
        Live::add(&live.sent, n);
        Live::add(&live.expected, n * matches);
        lane.writer_wake.notify();
        if spec.period_ns.is_none() {
            yield_now().await;
        }
    }
    let deadline = Instant::now() + scn.drain;
    while conn.session.borrow().inflight() > 0
        && !conn.closed.get()
        && !t.stopping.get()
        && Instant::now() < deadline
    {
        wait(&t, Some(&conn), Some(deadline)).await;
    }
    finish_publisher(&t, &conn);
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
