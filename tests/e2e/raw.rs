//! Raw-wire MQTT for the tests that need exact bytes or misbehaving peers: a blocking
//! `std::net::TcpStream` with deadlines, packets written out by hand (NATS `proto_test`
//! style), and only enough framing on the read side to split the broker's answers into
//! packets. What a packet must contain is asserted byte by byte in the tests.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One packet from the broker: the first byte of its fixed header and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) first: u8,
    pub(crate) body: Vec<u8>,
}

impl Frame {
    /// The packet type (the high nibble of the first byte).
    pub(crate) fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// How a read ended without a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The broker closed the connection (FIN).
    Eof,
    /// The connection was reset (RST).
    Reset,
    /// Nothing arrived before the deadline.
    Timeout,
}

/// A raw client connection.
#[derive(Debug)]
pub(crate) struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to the broker (Nagle off, so each packet leaves at once).
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        // A broker that stops reading must fail the test, not block it.
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes`; errors (the broker may have closed already) are returned, not fatal.
    pub(crate) fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next packet, or why none came before `timeout`.
    pub(crate) fn read(&mut self, timeout: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.split_frame() {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(End::Timeout);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Reset),
            }
        }
    }

    /// The next packet; panics naming `what` if none comes.
    pub(crate) fn expect(&mut self, what: &str, timeout: Duration) -> Frame {
        self.read(timeout)
            .unwrap_or_else(|e| panic!("expected {what}, got {e:?} (buffered {:02x?})", self.buf))
    }

    /// Reads until the connection ends; returns how it ended and every packet before that.
    /// A connection still open at the deadline ends in `End::Timeout`.
    pub(crate) fn drain(&mut self, timeout: Duration) -> (End, Vec<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now())) {
                Ok(f) => frames.push(f),
                Err(end) => return (end, frames),
            }
        }
    }

    /// Asserts the broker closes the connection within `timeout` without sending anything
    /// more; returns how long that took.
    pub(crate) fn expect_closed(&mut self, what: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let (end, frames) = self.drain(timeout);
        assert!(
            frames.is_empty(),
            "{what}: expected the connection to close silently, got {frames:02x?}"
        );
        assert!(
            matches!(end, End::Eof | End::Reset),
            "{what}: the connection is still open after {timeout:?}"
        );
        start.elapsed()
    }

    /// Splits one whole packet off the front of the buffer.
    fn split_frame(&mut self) -> Option<Frame> {
        let (&first, rest) = self.buf.split_first()?;
        let mut len = 0usize;
        let mut used = 0;
        for (i, &b) in rest.iter().enumerate().take(4) {
            len |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                used = i + 1;
                break;
            }
        }
        if used == 0 || rest.len() < used + len {
            return None;
        }
        let body = rest[used..used + len].to_vec();
        self.buf.drain(..1 + used + len);
        Some(Frame { first, body })
    }
}

/// A packet: `first` byte, the remaining length, `body`.
pub(crate) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// An MQTT UTF-8 string: two length bytes, then the bytes.
pub(crate) fn string(s: &str) -> Vec<u8> {
    let mut out = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A CONNECT with any protocol name and level; `props` is the MQTT 5 property block
/// (length included) or `None` before MQTT 5.
pub(crate) fn connect_any(
    name: &str,
    level: u8,
    flags: u8,
    keep_alive: u16,
    props: Option<&[u8]>,
    client_id: &str,
) -> Vec<u8> {
    let mut body = string(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if let Some(p) = props {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(&string(client_id));
    packet(0x10, &body)
}

/// An MQTT 3.1.1 CONNECT, Clean Session as given.
pub(crate) fn connect_v311(client_id: &str, keep_alive: u16, clean: bool) -> Vec<u8> {
    let flags = if clean { 0x02 } else { 0x00 };
    connect_any("MQTT", 4, flags, keep_alive, None, client_id)
}

/// An MQTT 5 CONNECT, Clean Start as given, with a Session Expiry Interval if `expiry` is set.
pub(crate) fn connect_v5(
    client_id: &str,
    keep_alive: u16,
    clean: bool,
    expiry: Option<u32>,
) -> Vec<u8> {
    let flags = if clean { 0x02 } else { 0x00 };
    let props = match expiry {
        Some(e) => {
            let mut p = vec![5, 0x11];
            p.extend_from_slice(&e.to_be_bytes());
            p
        }
        None => vec![0],
    };
    connect_any("MQTT", 5, flags, keep_alive, Some(&props), client_id)
}

/// A SUBSCRIBE for one filter.
pub(crate) fn subscribe(v5: bool, packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(&string(filter));
    body.push(qos);
    packet(0x82, &body)
}

/// A PUBLISH; `packet_id` is ignored at QoS 0.
pub(crate) fn publish(v5: bool, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// A PUBACK.
pub(crate) fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

/// Connects, sends `connect` and checks the CONNACK is a success; returns the connection and
/// the CONNACK's Session Present flag.
pub(crate) fn open(addr: SocketAddr, connect: &[u8]) -> (Raw, bool) {
    let mut c = Raw::connect(addr);
    c.send(connect).unwrap();
    let ack = c.expect("CONNACK", Duration::from_secs(5));
    assert_eq!(ack.first, 0x20, "expected CONNACK, got {ack:02x?}");
    assert!(ack.body.len() >= 2, "short CONNACK {ack:02x?}");
    assert_eq!(ack.body[1], 0, "CONNACK refused: {ack:02x?}");
    (c, ack.body[0] & 1 == 1)
}

/// The reason code of an MQTT 5 DISCONNECT (0 when the body is empty, as the spec says).
pub(crate) fn disconnect_reason(f: &Frame) -> Option<u8> {
    (f.first == 0xe0).then(|| f.body.first().copied().unwrap_or(0))
}

/// The topic and payload of a PUBLISH (`v5`: skips the property block) and its packet id.
pub(crate) fn parse_publish(v5: bool, f: &Frame) -> (String, Option<u16>, Vec<u8>) {
    assert_eq!(f.kind(), 3, "expected PUBLISH, got {f:02x?}");
    let qos = (f.first >> 1) & 3;
    let b = &f.body;
    let tlen = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).unwrap();
    let mut at = 2 + tlen;
    let id = (qos > 0).then(|| {
        at += 2;
        u16::from_be_bytes([b[at - 2], b[at - 1]])
    });
    if v5 {
        // Property length: a variable byte integer.
        let mut len = 0usize;
        let mut i = 0;
        loop {
            let byte = b[at + i];
            len |= usize::from(byte & 0x7f) << (7 * i);
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        at += i + len;
    }
    (topic, id, b[at..].to_vec())
}

/// A PUBREL.
pub(crate) fn pubrel(packet_id: u16) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&[0x00, 0x00]);
    packet(0x62, &body)
}

/// A variable byte integer at the start of `b`: its value and its length in bytes.
fn varint(b: &[u8]) -> (usize, usize) {
    let mut value = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("bad variable byte integer {b:02x?}");
}

/// An MQTT 5 property block (its length first), as (identifier, value bytes) in order. The
/// value of a string, binary or string-pair property keeps its length prefixes.
pub(crate) fn properties(block: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (len, used) = varint(block);
    let mut b = &block[used..used + len];
    let mut out = Vec::new();
    while let Some((&id, rest)) = b.split_first() {
        let n = match id {
            // Byte.
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            // Two Byte Integer.
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            // Four Byte Integer.
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // Variable Byte Integer.
            0x0b => varint(rest).1,
            // UTF-8 string or binary data.
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
                2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]))
            }
            // String pair.
            0x26 => {
                let k = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                k + 2 + usize::from(u16::from_be_bytes([rest[k], rest[k + 1]]))
            }
            _ => panic!("unknown property {id:#04x} in {block:02x?}"),
        };
        out.push((id, rest[..n].to_vec()));
        b = &rest[n..];
    }
    out
}

/// The properties of an MQTT 5 CONNACK.
pub(crate) fn connack_properties(f: &Frame) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(f.first, 0x20, "expected CONNACK, got {f:02x?}");
    properties(&f.body[2..])
}
