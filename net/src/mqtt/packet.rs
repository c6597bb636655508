//! Packets other than PUBLISH (which lives in `publish.rs`): their data model, body decoding
//! and encoding, for all three protocol versions.

use bytes::{BufMut, Bytes, BytesMut};

use super::MAX_REMAINING_LENGTH;
use super::decoder::Role;
use super::error::{EncodeError, Error, Malformed, ProtocolError};
use super::primitives::{MqttStr, Reader, check_len, put_binary, put_str, put_varint, varint_len};
use super::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, Ctx, DisconnectProperties,
    Props, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use super::publish::Publish;
use super::reason::ReasonCode;
use super::topic::{self, split_shared};

/// The protocol versions, by their CONNECT protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name "MQIsdp", level 3).
    V3_1 = 3,
    /// MQTT 3.1.1 (protocol name "MQTT", level 4).
    V3_1_1 = 4,
    /// MQTT 5.0 (protocol name "MQTT", level 5).
    V5 = 5,
}

impl ProtocolVersion {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// The version for a protocol level byte.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(Self::V3_1),
            4 => Some(Self::V3_1_1),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service (4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for 0, 1 or 2.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Control packet types (2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        use PacketType::*;
        Some(match v {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The flags the fixed header must carry ([MQTT-2.1.3-1]); `None` for PUBLISH, whose
    /// flags carry DUP, QoS and RETAIN.
    pub(crate) fn fixed_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }

    /// Whether a peer in `role` may receive this packet type in `version`.
    pub(crate) fn received_by(self, role: Role, version: Option<ProtocolVersion>) -> bool {
        use PacketType::*;
        match self {
            Publish | PubAck | PubRec | PubRel | PubComp | Auth => true,
            Connect | Subscribe | Unsubscribe | PingReq => role == Role::Server,
            ConnAck | SubAck | UnsubAck | PingResp => role == Role::Client,
            Disconnect => role == Role::Server || version == Some(ProtocolVersion::V5),
        }
    }
}

/// A control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes a packet body. `flags` are the low bits of the first header byte, already
    /// checked against [`PacketType::fixed_flags`].
    pub(crate) fn decode(
        ptype: PacketType,
        flags: u8,
        body: Bytes,
        version: ProtocolVersion,
        role: Role,
        strict_filters: bool,
    ) -> Result<Packet, Error> {
        let mut r = Reader::new(body);
        let v5 = version.is_v5();
        let packet = match ptype {
            PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(&mut r, version)?),
            PacketType::Publish => Packet::Publish(Publish::decode(&mut r, flags, version, role)?),
            PacketType::PubAck => Packet::PubAck(Ack::decode(&mut r, ptype, v5)?),
            PacketType::PubRec => Packet::PubRec(Ack::decode(&mut r, ptype, v5)?),
            PacketType::PubRel => Packet::PubRel(Ack::decode(&mut r, ptype, v5)?),
            PacketType::PubComp => Packet::PubComp(Ack::decode(&mut r, ptype, v5)?),
            PacketType::Subscribe => {
                Packet::Subscribe(Subscribe::decode(&mut r, v5, strict_filters)?)
            }
            PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, v5)?),
            PacketType::Unsubscribe => {
                Packet::Unsubscribe(Unsubscribe::decode(&mut r, v5, strict_filters)?)
            }
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, v5)?),
            PacketType::PingReq => Packet::PingReq,
            PacketType::PingResp => Packet::PingResp,
            PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, v5, role)?),
            PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
        };
        if !r.is_empty() {
            return Err(Malformed::TrailingBytes {
                packet: ptype,
                len: r.remaining(),
            }
            .into());
        }
        Ok(packet)
    }

    /// The size of the whole encoded packet in `version`, fixed header included: what the
    /// receiver's Maximum Packet Size is compared with.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        Ok(1 + varint_len(body) + body)
    }

    /// Appends the encoded packet to `buf`. On error nothing is written.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let body = self.body_len(version)?;
        buf.reserve(1 + varint_len(body) + body);
        let flags = match self {
            Packet::Publish(p) => p.header_flags(),
            _ => self.packet_type().fixed_flags().unwrap_or(0),
        };
        buf.put_u8(((self.packet_type() as u8) << 4) | flags);
        put_varint(buf, body);
        let start = buf.len();
        self.write_body(version, buf);
        debug_assert_eq!(buf.len() - start, body, "{:?}", self.packet_type());
        Ok(())
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        let n = match self {
            Packet::Connect(c) => c.body_len(v)?,
            Packet::ConnAck(c) => c.body_len(v)?,
            Packet::Publish(p) => p.body_len(v)?,
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(self.packet_type(), v)?
            }
            Packet::Subscribe(s) => s.body_len(v)?,
            Packet::SubAck(s) => s.body_len(v)?,
            Packet::Unsubscribe(u) => u.body_len(v)?,
            Packet::UnsubAck(u) => u.body_len(v)?,
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len(v)?,
            Packet::Auth(a) => a.body_len(v)?,
        };
        if n > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(n));
        }
        Ok(n)
    }

    fn write_body(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        match self {
            Packet::Connect(c) => c.write(v, buf),
            Packet::ConnAck(c) => c.write(v, buf),
            Packet::Publish(p) => p.write_body(v, buf),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.write(v, buf)
            }
            Packet::Subscribe(s) => s.write(v, buf),
            Packet::SubAck(s) => s.write(v, buf),
            Packet::Unsubscribe(u) => u.write(v, buf),
            Packet::UnsubAck(u) => u.write(v, buf),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => d.write(v, buf),
            Packet::Auth(a) => a.write(buf),
        }
    }
}

fn read_packet_id(r: &mut Reader, ptype: PacketType) -> Result<u16, Error> {
    let id = r.read_u16("packet identifier")?;
    if id == 0 {
        return Err(Malformed::ZeroPacketId(ptype).into());
    }
    Ok(id)
}

fn check_packet_id(id: u16, ptype: PacketType) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId(ptype));
    }
    Ok(())
}

/// Length of a v5 property block, or 0 before v5.
fn props_len(p: &impl Props, v: ProtocolVersion) -> Result<usize, EncodeError> {
    if v.is_v5() { p.encoded_len() } else { Ok(0) }
}

/// Writes a v5 property block (nothing before v5). Lengths were checked by `props_len`.
fn write_props(p: &impl Props, v: ProtocolVersion, buf: &mut BytesMut) {
    if v.is_v5() {
        // `content_len` succeeded in `props_len` for the same value.
        let n = p.content_len().unwrap_or(0);
        p.write(n, buf);
    }
}

fn read_reason(r: &mut Reader, ptype: PacketType) -> Result<ReasonCode, Error> {
    let code = ReasonCode(r.read_u8("reason code")?);
    if !code.is_valid_for(ptype) {
        return Err(Malformed::InvalidReasonCode {
            packet: ptype,
            code: code.0,
        }
        .into());
    }
    Ok(code)
}

/// CONNECT (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested.
    pub protocol: ProtocolVersion,
    /// Clean Start (v5) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep Alive in seconds.
    pub keep_alive: u16,
    /// CONNECT properties (v5).
    pub properties: ConnectProperties,
    /// Client Identifier; may be empty.
    pub client_id: MqttStr,
    /// The Will Message.
    pub will: Option<LastWill>,
    /// User Name.
    pub username: Option<MqttStr>,
    /// Password.
    pub password: Option<Bytes>,
}

/// The Will Message of a CONNECT (3.1.2.5, 3.1.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic.
    pub topic: MqttStr,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (v5).
    pub properties: WillProperties,
}

impl Connect {
    /// A CONNECT with the given version and client id, clean start, keep alive 60 s.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<MqttStr>) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, Error> {
        let name = r.read_str("protocol name")?;
        let level = r.read_u8("protocol level")?;
        let protocol = match (name.as_str(), level) {
            ("MQTT", 4) => ProtocolVersion::V3_1_1,
            ("MQTT", 5) => ProtocolVersion::V5,
            ("MQIsdp", 3) => ProtocolVersion::V3_1,
            ("MQTT" | "MQIsdp", _) => {
                return Err(Error::UnsupportedProtocol {
                    level,
                    known_name: true,
                });
            }
            _ => {
                return Err(Error::UnsupportedProtocol {
                    level,
                    known_name: false,
                });
            }
        };
        let flags = r.read_u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(Malformed::ConnectReservedFlag.into());
        }
        let has_will = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !has_will && will_qos != 0 {
            return Err(Malformed::WillQoSWithoutWill.into());
        }
        if !has_will && will_retain {
            return Err(Malformed::WillRetainWithoutWill.into());
        }
        let will_qos = QoS::from_u8(will_qos).ok_or(Malformed::InvalidWillQoS)?;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(Malformed::PasswordWithoutUsername.into());
        }
        let keep_alive = r.read_u16("keep alive")?;
        let properties = if protocol.is_v5() {
            let p = ConnectProperties::decode(r)?;
            if p.authentication_data.is_some() && p.authentication_method.is_none() {
                return Err(Error::Protocol(ProtocolError::AuthDataWithoutMethod));
            }
            p
        } else {
            ConnectProperties::default()
        };
        let client_id = r.read_str("client identifier")?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = r.read_str("will topic")?;
            topic::validate_topic_name(&topic).map_err(Error::TopicName)?;
            if let Some(t) = &properties.response_topic {
                topic::validate_topic_name(t).map_err(Error::TopicName)?;
            }
            let payload = r.read_binary("will payload")?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.read_str("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.read_binary("password")?)
        } else {
            None
        };
        Ok(Self {
            protocol,
            clean_start: flags & 0x02 != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        let mut n = 2 + v.protocol_name().len() + 1 + 1 + 2;
        n += props_len(&self.properties, v)?;
        n += check_len(self.client_id.as_bytes(), "client identifier")?;
        if let Some(w) = &self.will {
            n += props_len(&w.properties, v)?;
            n += check_len(w.topic.as_bytes(), "will topic")?;
            n += check_len(&w.payload, "will payload")?;
        }
        if let Some(u) = &self.username {
            n += check_len(u.as_bytes(), "user name")?;
        }
        if let Some(p) = &self.password {
            n += check_len(p, "password")?;
        }
        Ok(n)
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        put_str(buf, v.protocol_name());
        buf.put_u8(v.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        write_props(&self.properties, v, buf);
        put_str(buf, &self.client_id);
        if let Some(w) = &self.will {
            write_props(&w.properties, v, buf);
            put_str(buf, &w.topic);
            put_binary(buf, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(buf, u);
        }
        if let Some(p) = &self.password {
            put_binary(buf, p);
        }
    }
}

/// CONNACK (3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The v5 reason code; for 3.1/3.1.1 mapped to and from the return code
    /// ([`ReasonCode::to_v3_connack`]).
    pub reason_code: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    fn decode(r: &mut Reader, v: ProtocolVersion) -> Result<Self, Error> {
        let flags = r.read_u8("connect acknowledge flags")?;
        // In MQTT 3.1 the whole byte is reserved and unused: there is no Session Present.
        let flags = if v == ProtocolVersion::V3_1 { 0 } else { flags };
        if flags & 0xFE != 0 {
            return Err(Malformed::ConnAckReservedFlags(flags).into());
        }
        let session_present = flags & 0x01 != 0;
        let code = r.read_u8("connect reason code")?;
        let (reason_code, properties) = if v.is_v5() {
            let rc = ReasonCode(code);
            if !rc.is_valid_for(PacketType::ConnAck) {
                return Err(Malformed::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                }
                .into());
            }
            (rc, ConnAckProperties::decode(r)?)
        } else {
            let rc = ReasonCode::from_v3_connack(code).ok_or(Malformed::InvalidReturnCode(code))?;
            (rc, ConnAckProperties::default())
        };
        if session_present && !reason_code.is_success() {
            return Err(Error::Protocol(ProtocolError::SessionPresentOnError));
        }
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        Ok(2 + props_len(&self.properties, v)?)
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        // MQTT 3.1 has no Session Present flag: the byte is reserved.
        buf.put_u8(u8::from(self.session_present && v != ProtocolVersion::V3_1));
        if v.is_v5() {
            buf.put_u8(self.reason_code.0);
        } else {
            buf.put_u8(self.reason_code.to_v3_connack());
        }
        write_props(&self.properties, v, buf);
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP (3.4 to 3.7): the [`Packet`] variant tells which.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// Packet Identifier.
    pub packet_id: u16,
    /// Reason code (v5; always success before v5).
    pub reason_code: ReasonCode,
    /// Properties (v5).
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            ..Self::default()
        }
    }

    fn decode(r: &mut Reader, ptype: PacketType, v5: bool) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, ptype)?;
        let mut ack = Self::new(packet_id);
        if v5 && !r.is_empty() {
            ack.reason_code = read_reason(r, ptype)?;
            if !r.is_empty() {
                ack.properties = AckProperties::decode_in(r, Ctx::Packet(ptype))?;
            }
        }
        Ok(ack)
    }

    fn body_len(&self, ptype: PacketType, v: ProtocolVersion) -> Result<usize, EncodeError> {
        check_packet_id(self.packet_id, ptype)?;
        if !v.is_v5() {
            return Ok(2);
        }
        // Success without properties in the short form (3.4.2.1); anything else in full, with
        // the property length, as EMQX and MQTT.js write it (some clients misread the 3-byte
        // form).
        Ok(
            if self.properties.is_empty() && self.reason_code == ReasonCode::SUCCESS {
                2
            } else {
                3 + self.properties.encoded_len()?
            },
        )
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id);
        if !v.is_v5() {
            return;
        }
        if !self.properties.is_empty() || self.reason_code != ReasonCode::SUCCESS {
            buf.put_u8(self.reason_code.0);
            write_props(&self.properties, v, buf);
        }
    }
}

/// Retain Handling subscription option (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options (3.8.3.1). Before v5 only the QoS exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The options of a SUBSCRIBE options byte.
    pub fn decode(b: u8, v5: bool) -> Result<Self, Malformed> {
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if b & reserved != 0 {
            return Err(Malformed::SubscriptionOptionsReserved(b));
        }
        let qos = QoS::from_u8(b & 0x03).ok_or(Malformed::InvalidSubscriptionQoS(b & 0x03))?;
        let retain_handling = match (b >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            // Reported as a protocol error by the caller.
            _ => return Err(Malformed::SubscriptionOptionsReserved(b)),
        };
        Ok(Self {
            qos,
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling,
        })
    }

    /// The options byte of a SUBSCRIBE (`v5`: with No Local, Retain As Published and Retain
    /// Handling).
    pub fn to_byte(self, v5: bool) -> u8 {
        let mut b = self.qos as u8;
        if v5 {
            b |= (u8::from(self.no_local) << 2)
                | (u8::from(self.retain_as_published) << 3)
                | ((self.retain_handling as u8) << 4);
        }
        b
    }
}

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter: valid UTF-8, and valid by 4.7 and 4.8.2 unless the decoder was told to
    /// keep malformed filters ([`crate::mqtt::Decoder::set_strict_filters`]).
    pub filter: MqttStr,
    /// Options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE (3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: SubscribeProperties,
    /// At least one subscription.
    pub filters: Vec<Subscription>,
}

impl Subscribe {
    fn decode(r: &mut Reader, v5: bool, strict_filters: bool) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::Subscribe)?;
        let properties = if v5 {
            SubscribeProperties::decode(r)?
        } else {
            Default::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.read_str("topic filter")?;
            let b = r.read_u8("subscription options")?;
            if v5 && b & 0xC0 == 0 {
                // MQTT 5 calls these two Protocol Errors (3.8.3.1); 3.1.1 malformed.
                if b & 0x03 == 3 {
                    return Err(Error::Protocol(ProtocolError::InvalidSubscriptionQoS));
                }
                if (b >> 4) & 0x03 == 3 {
                    return Err(Error::Protocol(ProtocolError::InvalidRetainHandling));
                }
            }
            let options = SubscriptionOptions::decode(b, v5)?;
            if strict_filters {
                topic::validate_topic_filter(&filter).map_err(Error::TopicFilter)?;
            }
            if options.no_local && split_shared(&filter).is_some() {
                return Err(Error::Protocol(ProtocolError::SharedSubscriptionNoLocal));
            }
            filters.push(Subscription { filter, options });
        }
        if filters.is_empty() {
            return Err(Error::Protocol(ProtocolError::NoTopicFilters));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        check_packet_id(self.packet_id, PacketType::Subscribe)?;
        let mut n = 2 + props_len(&self.properties, v)?;
        for s in &self.filters {
            n += check_len(s.filter.as_bytes(), "topic filter")? + 1;
        }
        Ok(n)
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id);
        write_props(&self.properties, v, buf);
        for s in &self.filters {
            put_str(buf, &s.filter);
            buf.put_u8(s.options.to_byte(v.is_v5()));
        }
    }
}

/// SUBACK (3.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: AckProperties,
    /// One reason code per filter; before v5 the granted QoS or 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    fn decode(r: &mut Reader, v5: bool) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::SubAck)?;
        let properties = if v5 {
            AckProperties::decode_in(r, Ctx::Packet(PacketType::SubAck))?
        } else {
            Default::default()
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            if v5 {
                reason_codes.push(read_reason(r, PacketType::SubAck)?);
            } else {
                let c = r.read_u8("return code")?;
                if !matches!(c, 0 | 1 | 2 | 0x80) {
                    return Err(Malformed::InvalidSubAckCode(c).into());
                }
                reason_codes.push(ReasonCode(c));
            }
        }
        Ok(Self {
            packet_id,
            properties,
            reason_codes,
        })
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        check_packet_id(self.packet_id, PacketType::SubAck)?;
        Ok(2 + props_len(&self.properties, v)? + self.reason_codes.len())
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id);
        write_props(&self.properties, v, buf);
        for rc in &self.reason_codes {
            buf.put_u8(if v.is_v5() { rc.0 } else { rc.to_v3_suback() });
        }
    }
}

/// UNSUBSCRIBE (3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: UnsubscribeProperties,
    /// At least one topic filter.
    pub filters: Vec<MqttStr>,
}

impl Unsubscribe {
    fn decode(r: &mut Reader, v5: bool, strict_filters: bool) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::Unsubscribe)?;
        let properties = if v5 {
            UnsubscribeProperties::decode(r)?
        } else {
            Default::default()
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let f = r.read_str("topic filter")?;
            if strict_filters {
                topic::validate_topic_filter(&f).map_err(Error::TopicFilter)?;
            }
            filters.push(f);
        }
        if filters.is_empty() {
            return Err(Error::Protocol(ProtocolError::NoUnsubscribeFilters));
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        check_packet_id(self.packet_id, PacketType::Unsubscribe)?;
        let mut n = 2 + props_len(&self.properties, v)?;
        for f in &self.filters {
            n += check_len(f.as_bytes(), "topic filter")?;
        }
        Ok(n)
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id);
        write_props(&self.properties, v, buf);
        for f in &self.filters {
            put_str(buf, f);
        }
    }
}

/// UNSUBACK (3.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: AckProperties,
    /// One reason code per filter (v5 only; empty before v5).
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    fn decode(r: &mut Reader, v5: bool) -> Result<Self, Error> {
        let packet_id = read_packet_id(r, PacketType::UnsubAck)?;
        let mut ack = Self {
            packet_id,
            ..Self::default()
        };
        if v5 {
            ack.properties = AckProperties::decode_in(r, Ctx::Packet(PacketType::UnsubAck))?;
            while !r.is_empty() {
                ack.reason_codes.push(read_reason(r, PacketType::UnsubAck)?);
            }
        }
        Ok(ack)
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        check_packet_id(self.packet_id, PacketType::UnsubAck)?;
        if !v.is_v5() {
            return Ok(2);
        }
        Ok(2 + self.properties.encoded_len()? + self.reason_codes.len())
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id);
        if v.is_v5() {
            write_props(&self.properties, v, buf);
            for rc in &self.reason_codes {
                buf.put_u8(rc.0);
            }
        }
    }
}

/// DISCONNECT (3.14).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (v5).
    pub reason_code: ReasonCode,
    /// Properties (v5).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    fn decode(r: &mut Reader, v5: bool, role: Role) -> Result<Self, Error> {
        let mut d = Self::default();
        if v5 && !r.is_empty() {
            d.reason_code = read_reason(r, PacketType::Disconnect)?;
            if !r.is_empty() {
                d.properties = DisconnectProperties::decode(r)?;
            }
        }
        if role == Role::Client && d.properties.session_expiry_interval.is_some() {
            return Err(Error::Protocol(ProtocolError::SessionExpiryFromServer));
        }
        Ok(d)
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if !v.is_v5() {
            return Ok(0);
        }
        // Normal disconnection without properties in the short form (3.14.2.1); anything else
        // in full, with the property length (paho-mqtt 2.1 misreads `e0 01 rc`).
        Ok(
            if self.properties.is_empty() && self.reason_code == ReasonCode::NORMAL_DISCONNECTION {
                0
            } else {
                1 + self.properties.encoded_len()?
            },
        )
    }

    fn write(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        if !v.is_v5() {
            return;
        }
        if !self.properties.is_empty() || self.reason_code != ReasonCode::NORMAL_DISCONNECTION {
            buf.put_u8(self.reason_code.0);
            write_props(&self.properties, v, buf);
        }
    }
}

/// AUTH (3.15), MQTT 5 only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Reason code: success, continue authentication or re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

impl Auth {
    fn decode(r: &mut Reader) -> Result<Self, Error> {
        let mut a = Self::default();
        if r.is_empty() {
            // The short form: Success without properties (3.15.2.1).
            return Ok(a);
        }
        a.reason_code = read_reason(r, PacketType::Auth)?;
        if !r.is_empty() {
            a.properties = AuthProperties::decode(r)?;
        }
        // `f0 02 00 00` means the same as the short form `f0 00` (3.15.2.1); anything else
        // names its method.
        let short_form = a.reason_code == ReasonCode::SUCCESS && a.properties.is_empty();
        if a.properties.authentication_method.is_none() && !short_form {
            return Err(Error::Protocol(ProtocolError::AuthWithoutMethod));
        }
        Ok(a)
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if !v.is_v5() {
            return Err(EncodeError::NotInVersion(PacketType::Auth));
        }
        // Always the full form: some client libraries reject the legal empty AUTH.
        Ok(1 + self.properties.encoded_len()?)
    }

    fn write(&self, buf: &mut BytesMut) {
        buf.put_u8(self.reason_code.0);
        write_props(&self.properties, ProtocolVersion::V5, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_options_bits() {
        let o = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(o.to_byte(true), 0b0010_1110);
        assert_eq!(SubscriptionOptions::decode(0b0010_1110, true), Ok(o));
        assert_eq!(o.to_byte(false), 2);
        assert!(SubscriptionOptions::decode(0b0000_0110, false).is_err());
    }
}
