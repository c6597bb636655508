//! Incremental framing: bytes in, packets out.

use bytes::BytesMut;

use super::MAX_PACKET_SIZE;
use super::error::{Error, Malformed, ProtocolError};
use super::packet::{Packet, PacketType, ProtocolVersion};
use super::primitives::{VarInt, decode_varint};

/// Which end of the connection decodes: the direction rules (which packets may arrive, the
/// first packet, Subscription Identifiers in PUBLISH) depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The broker: receives CONNECT first, then client packets.
    Server,
    /// A client: receives CONNACK first, then server packets.
    Client,
}

/// Decodes packets from a byte stream.
///
/// The caller reads from the socket into a [`BytesMut`] and calls [`Decoder::decode`] until it
/// returns `Ok(None)`; [`Decoder::needed`] then tells how many more bytes the next packet
/// needs at least. Each decoded packet is split off the front of the buffer and frozen, so its
/// payload and strings are slices of the bytes that were read, never copies.
///
/// The fixed header is checked as soon as its bytes are there: packet type, flags, direction,
/// and the size against `max_packet_size`, so an oversized packet is refused before its body
/// is buffered. After an error the connection must be closed.
#[derive(Debug, Clone)]
pub struct Decoder {
    role: Role,
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
    /// Set once the first packet (CONNECT for a server, CONNACK for a client) is decoded.
    started: bool,
    /// Refuse SUBSCRIBE / UNSUBSCRIBE with a malformed topic filter as a whole.
    strict_filters: bool,
    needed: usize,
}

impl Decoder {
    /// A server-side decoder. The protocol version is learnt from CONNECT.
    pub fn server(max_packet_size: u32) -> Self {
        Self {
            role: Role::Server,
            version: None,
            max_packet_size: max_packet_size.min(MAX_PACKET_SIZE),
            started: false,
            strict_filters: true,
            needed: 2,
        }
    }

    /// A client-side decoder for a connection that sent CONNECT with `version`.
    pub fn client(version: ProtocolVersion, max_packet_size: u32) -> Self {
        Self {
            role: Role::Client,
            version: Some(version),
            max_packet_size: max_packet_size.min(MAX_PACKET_SIZE),
            started: false,
            strict_filters: true,
            needed: 2,
        }
    }

    /// A decoder for a connection whose first exchange (CONNECT, CONNACK) is over: the
    /// connection's other end resumes with packets of `version`.
    pub fn resume(role: Role, version: ProtocolVersion, max_packet_size: u32) -> Self {
        Self {
            role,
            version: Some(version),
            max_packet_size: max_packet_size.min(MAX_PACKET_SIZE),
            started: true,
            strict_filters: true,
            needed: 2,
        }
    }

    /// Whether a SUBSCRIBE or UNSUBSCRIBE with a topic filter that breaks 4.7.1 or 4.8.2 is
    /// refused as a whole (`Error::TopicFilter`, the default). Off, such filters are kept
    /// (they are still valid UTF-8) for the receiver to refuse one by one, with SUBACK or
    /// UNSUBACK reason code 0x8F, as EMQX does; `topic::validate_topic_filter` tells which.
    pub fn set_strict_filters(&mut self, strict: bool) {
        self.strict_filters = strict;
    }

    /// The protocol version in use, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// The largest packet accepted, fixed header included.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the largest packet accepted (e.g. after CONNECT sets the session's limits).
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max.min(MAX_PACKET_SIZE);
    }

    /// After [`Decoder::decode`] returned `Ok(None)`: how many more bytes the next packet needs
    /// at least (exactly, once its fixed header is complete).
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Decodes the next packet from the front of `buf`, or returns `Ok(None)` if `buf` does not
    /// hold a whole packet yet. Bytes of an incomplete packet stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, Error> {
        let Some(&first) = buf.first() else {
            self.needed = 2;
            return Ok(None);
        };
        let ptype = self.check_first_byte(first)?;
        let (remaining, len_bytes) = match decode_varint(&buf[1..]) {
            VarInt::Value { value, len } => (value as usize, len),
            VarInt::Incomplete => {
                self.needed = 1;
                return Ok(None);
            }
            VarInt::TooLong => {
                return Err(Malformed::VarIntTooLong {
                    field: "remaining length",
                }
                .into());
            }
            VarInt::NonMinimal => {
                return Err(Malformed::NonMinimalVarInt {
                    field: "remaining length",
                }
                .into());
            }
        };
        let total = 1 + len_bytes + remaining;
        if total > self.max_packet_size as usize {
            return Err(Error::PacketTooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            self.needed = total - buf.len();
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        let body = frame.slice(1 + len_bytes..);
        // For a server before CONNECT the version is unknown; CONNECT reads its own.
        let version = self.version.unwrap_or(ProtocolVersion::V5);
        let packet = Packet::decode(
            ptype,
            first & 0x0F,
            body,
            version,
            self.role,
            self.strict_filters,
        )?;
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.protocol);
        }
        // AUTH before CONNACK does not end a client's handshake (4.12).
        if self.role == Role::Server || !matches!(packet, Packet::Auth(_)) {
            self.started = true;
        }
        self.needed = 2;
        Ok(Some(packet))
    }

    /// Checks what the first byte alone decides: type, flags, direction, first packet.
    fn check_first_byte(&self, first: u8) -> Result<PacketType, Error> {
        let raw = first >> 4;
        let ptype = PacketType::from_u8(raw).ok_or(Malformed::ReservedPacketType(raw))?;
        if ptype == PacketType::Auth && self.version.is_some_and(|v| v != ProtocolVersion::V5) {
            return Err(Malformed::ReservedPacketType(raw).into());
        }
        let flags = first & 0x0F;
        if let Some(required) = ptype.fixed_flags()
            && flags != required
        {
            return Err(Malformed::InvalidHeaderFlags {
                packet: ptype,
                flags,
            }
            .into());
        }
        if !ptype.received_by(self.role, self.version) {
            return Err(Error::Protocol(ProtocolError::UnexpectedPacket(ptype)));
        }
        match (self.role, self.started, ptype) {
            (Role::Server, false, PacketType::Connect) => {}
            (Role::Server, false, other) => {
                return Err(Error::Protocol(ProtocolError::FirstPacketNotConnect(other)));
            }
            (Role::Server, true, PacketType::Connect) => {
                return Err(Error::Protocol(ProtocolError::SecondConnect));
            }
            (Role::Client, false, PacketType::ConnAck) => {}
            // Enhanced authentication (4.12) exchanges AUTH before CONNACK.
            (Role::Client, false, PacketType::Auth) => {}
            (Role::Client, false, other) => {
                return Err(Error::Protocol(ProtocolError::FirstPacketNotConnAck(other)));
            }
            (Role::Client, true, PacketType::ConnAck) => {
                return Err(Error::Protocol(ProtocolError::SecondConnAck));
            }
            _ => {}
        }
        Ok(ptype)
    }
}
