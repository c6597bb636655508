//! Codec errors. Every way a peer can send a bad packet is a variant that names the normative
//! statement it breaks ([`Error::rule`]) and the MQTT 5 reason code to answer with
//! ([`Error::reason_code`]): a CONNACK before the session exists, a DISCONNECT after.

use std::fmt;

use super::packet::PacketType;
use super::properties::PropertyId;
use super::reason::ReasonCode;
use super::topic::TopicError;

/// A decoding error. After one, the connection must be closed (4.13): the decoder does not
/// resynchronise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The packet cannot be parsed according to the specification (reason code 0x81).
    Malformed(Malformed),
    /// The packet parses but breaks a rule of the protocol (reason code 0x82).
    Protocol(ProtocolError),
    /// The fixed header announces a packet larger than the receiver's Maximum Packet Size
    /// (3.1.2.11.4 [MQTT-3.2.2-15] / [MQTT-3.1.2-24]; reason code 0x95). Detected before the
    /// body is buffered.
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// CONNECT with a protocol name and level pair this codec does not speak (3.1.2.1,
    /// 3.1.2.2 [MQTT-3.1.2-2]; reason code 0x84, return code 1 for 3.1.1 clients).
    UnsupportedProtocol {
        /// The protocol level byte (3, 4 and 5 are supported).
        level: u8,
        /// Whether the protocol name was one MQTT defines ("MQTT" or "MQIsdp").
        known_name: bool,
    },
    /// A topic name in PUBLISH or a will topic breaks the topic rules (4.7; reason code 0x90).
    TopicName(TopicError),
    /// A topic filter in SUBSCRIBE or UNSUBSCRIBE breaks the topic filter rules (4.7, 4.8.2;
    /// reason code 0x8F).
    TopicFilter(TopicError),
}

impl Error {
    /// The MQTT 5 reason code to send in CONNACK or DISCONNECT for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Error::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Error::Protocol(ProtocolError::InvalidPropertyValue {
                property: PropertyId::TopicAlias,
                ..
            }) => ReasonCode::TOPIC_ALIAS_INVALID,
            Error::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            Error::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Error::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            Error::TopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            Error::TopicFilter(_) => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }

    /// The normative statement (or section) of the MQTT 5.0 specification the packet breaks.
    /// Where 3.1.1 has the same rule it carries the same number or an equivalent one.
    pub fn rule(&self) -> &'static str {
        match self {
            Error::Malformed(m) => m.rule(),
            Error::Protocol(p) => p.rule(),
            Error::PacketTooLarge { .. } => "MQTT-3.1.2-24",
            Error::UnsupportedProtocol {
                known_name: false, ..
            } => "MQTT-3.1.2-1",
            Error::UnsupportedProtocol {
                known_name: true, ..
            } => "MQTT-3.1.2-2",
            Error::TopicName(t) | Error::TopicFilter(t) => t.rule(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(m) => write!(f, "malformed packet: {m}")?,
            Error::Protocol(p) => write!(f, "protocol error: {p}")?,
            Error::PacketTooLarge { size, max } => write!(
                f,
                "packet of {size} bytes exceeds the maximum packet size {max}"
            )?,
            Error::UnsupportedProtocol { level, known_name } => {
                if *known_name {
                    write!(f, "unsupported protocol level {level}")?
                } else {
                    write!(f, "unknown protocol name (level {level})")?
                }
            }
            Error::TopicName(t) => write!(f, "invalid topic name: {t}")?,
            Error::TopicFilter(t) => write!(f, "invalid topic filter: {t}")?,
        }
        write!(f, " [{}]", self.rule())
    }
}

impl std::error::Error for Error {}

/// Ways a packet can be malformed (reason code 0x81).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Packet type 0 or, before MQTT 5, 15 (AUTH) (2.1.2).
    ReservedPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires.
    InvalidHeaderFlags {
        /// Packet type.
        packet: PacketType,
        /// The low four bits of the first byte.
        flags: u8,
    },
    /// A Variable Byte Integer of more than four bytes (1.5.5, 2.1.4).
    VarIntTooLong {
        /// Field being read.
        field: &'static str,
    },
    /// A Variable Byte Integer not in its shortest form.
    NonMinimalVarInt {
        /// Field being read.
        field: &'static str,
    },
    /// The packet ends inside a field.
    UnexpectedEnd {
        /// Field being read.
        field: &'static str,
    },
    /// Bytes left over after the last field of the packet.
    TrailingBytes {
        /// Packet type.
        packet: PacketType,
        /// How many bytes were left.
        len: usize,
    },
    /// A string is not well-formed UTF-8 (surrogates included).
    InvalidUtf8 {
        /// Field being read.
        field: &'static str,
    },
    /// A string contains U+0000.
    NullCharacter {
        /// Field being read.
        field: &'static str,
    },
    /// A string longer than 65,535 bytes.
    StringTooLong {
        /// Field being read.
        field: &'static str,
    },
    /// QoS 3 in a PUBLISH fixed header.
    InvalidQoS(u8),
    /// DUP set on a QoS 0 PUBLISH.
    DupOnQoS0,
    /// A packet identifier of 0.
    ZeroPacketId(PacketType),
    /// The reserved bit of the CONNECT flags is set.
    ConnectReservedFlag,
    /// Will QoS non-zero while the Will Flag is clear.
    WillQoSWithoutWill,
    /// Will Retain set while the Will Flag is clear.
    WillRetainWithoutWill,
    /// Will QoS 3.
    InvalidWillQoS,
    /// Password Flag set while the User Name Flag is clear (3.1 and 3.1.1 only).
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags other than bit 0 set.
    ConnAckReservedFlags(u8),
    /// A CONNACK return code outside 0..=5 (3.1.1).
    InvalidReturnCode(u8),
    /// A reason code the packet type may not carry.
    InvalidReasonCode {
        /// Packet type.
        packet: PacketType,
        /// The code.
        code: u8,
    },
    /// A property identifier the specification does not define.
    UnknownProperty(u32),
    /// A property that is not valid in this packet.
    PropertyNotAllowed {
        /// The property.
        property: PropertyId,
        /// Packet type (or the will properties of CONNECT).
        packet: PacketType,
    },
    /// Reserved bits of the subscription options byte are set.
    SubscriptionOptionsReserved(u8),
    /// A requested QoS of 3 in SUBSCRIBE.
    InvalidSubscriptionQoS(u8),
    /// A SUBACK return code that is not a granted QoS or 0x80 (3.1.1).
    InvalidSubAckCode(u8),
}

impl Malformed {
    /// The normative statement broken.
    pub fn rule(&self) -> &'static str {
        match self {
            Malformed::ReservedPacketType(_) => "MQTT-2.1.2 (reserved packet type)",
            Malformed::InvalidHeaderFlags { .. } => "MQTT-2.1.3-1",
            Malformed::VarIntTooLong { .. } => "MQTT-1.5.5 (at most 4 bytes)",
            Malformed::NonMinimalVarInt { .. } => "MQTT-1.5.5-1",
            Malformed::UnexpectedEnd { .. } => "MQTT-4.13 (packet shorter than its fields)",
            Malformed::TrailingBytes { .. } => "MQTT-4.13 (packet longer than its fields)",
            Malformed::InvalidUtf8 { .. } => "MQTT-1.5.4-1",
            Malformed::NullCharacter { .. } => "MQTT-1.5.4-2",
            Malformed::StringTooLong { .. } => "MQTT-1.5.4 (at most 65,535 bytes)",
            Malformed::InvalidQoS(_) => "MQTT-3.3.1-4",
            Malformed::DupOnQoS0 => "MQTT-3.3.1-2",
            Malformed::ZeroPacketId(_) => "MQTT-2.2.1-3",
            Malformed::ConnectReservedFlag => "MQTT-3.1.2-3",
            Malformed::WillQoSWithoutWill => "MQTT-3.1.2-11",
            Malformed::WillRetainWithoutWill => "MQTT-3.1.2-13",
            Malformed::InvalidWillQoS => "MQTT-3.1.2-12",
            Malformed::PasswordWithoutUsername => "MQTT-3.1.2-22 (3.1.1)",
            Malformed::ConnAckReservedFlags(_) => "MQTT-3.2.2-1",
            Malformed::InvalidReturnCode(_) => "MQTT-3.2.2.3 (3.1.1 return codes 0-5)",
            Malformed::InvalidReasonCode { .. } => "MQTT-2.4 (reason code not valid for packet)",
            Malformed::UnknownProperty(_) => "MQTT-2.2.2.2 (unknown property identifier)",
            Malformed::PropertyNotAllowed { .. } => "MQTT-2.2.2.2 (property not valid for packet)",
            Malformed::SubscriptionOptionsReserved(_) => "MQTT-3.8.3-5",
            Malformed::InvalidSubscriptionQoS(_) => "MQTT-3.8.3-5 (QoS 3)",
            Malformed::InvalidSubAckCode(_) => "MQTT-3.9.3 (3.1.1 return codes)",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::ReservedPacketType(t) => write!(f, "reserved packet type {t}"),
            Malformed::InvalidHeaderFlags { packet, flags } => {
                write!(f, "{packet:?} with header flags {flags:#06b}")
            }
            Malformed::VarIntTooLong { field } => {
                write!(f, "{field}: variable byte integer over 4 bytes")
            }
            Malformed::NonMinimalVarInt { field } => {
                write!(f, "{field}: variable byte integer not minimally encoded")
            }
            Malformed::UnexpectedEnd { field } => write!(f, "packet ends inside {field}"),
            Malformed::TrailingBytes { packet, len } => {
                write!(f, "{len} bytes after the last field of {packet:?}")
            }
            Malformed::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            Malformed::NullCharacter { field } => write!(f, "{field} contains U+0000"),
            Malformed::StringTooLong { field } => write!(f, "{field} longer than 65535 bytes"),
            Malformed::InvalidQoS(q) => write!(f, "PUBLISH with QoS {q}"),
            Malformed::DupOnQoS0 => f.write_str("DUP flag set on a QoS 0 PUBLISH"),
            Malformed::ZeroPacketId(p) => write!(f, "{p:?} with packet identifier 0"),
            Malformed::ConnectReservedFlag => f.write_str("CONNECT reserved flag set"),
            Malformed::WillQoSWithoutWill => f.write_str("Will QoS set without the Will Flag"),
            Malformed::WillRetainWithoutWill => {
                f.write_str("Will Retain set without the Will Flag")
            }
            Malformed::InvalidWillQoS => f.write_str("Will QoS 3"),
            Malformed::PasswordWithoutUsername => {
                f.write_str("Password Flag set without the User Name Flag")
            }
            Malformed::ConnAckReservedFlags(b) => write!(f, "CONNACK flags {b:#04x}"),
            Malformed::InvalidReturnCode(c) => write!(f, "CONNACK return code {c}"),
            Malformed::InvalidReasonCode { packet, code } => {
                write!(f, "reason code {code:#04x} is not valid in {packet:?}")
            }
            Malformed::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            Malformed::PropertyNotAllowed { property, packet } => {
                write!(f, "property {property:?} is not valid in {packet:?}")
            }
            Malformed::SubscriptionOptionsReserved(b) => {
                write!(f, "subscription options {b:#04x} set reserved bits")
            }
            Malformed::InvalidSubscriptionQoS(q) => write!(f, "subscription with QoS {q}"),
            Malformed::InvalidSubAckCode(c) => write!(f, "SUBACK return code {c:#04x}"),
        }
    }
}

/// Rules broken by a packet that parses (reason code 0x82).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The first packet from a client is not CONNECT.
    FirstPacketNotConnect(PacketType),
    /// A second CONNECT on the same connection.
    SecondConnect,
    /// The first packet from a server is neither CONNACK nor (v5) AUTH.
    FirstPacketNotConnAck(PacketType),
    /// A second CONNACK on the same connection.
    SecondConnAck,
    /// A packet the receiver's role never receives (a server receiving CONNACK, say).
    UnexpectedPacket(PacketType),
    /// A property that may appear once appears twice.
    DuplicateProperty(PropertyId),
    /// A property with a value the specification forbids (0 for Receive Maximum, 2 for a
    /// boolean, ...).
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// The value received.
        value: u32,
    },
    /// SUBSCRIBE without any topic filter.
    NoTopicFilters,
    /// UNSUBSCRIBE without any topic filter.
    NoUnsubscribeFilters,
    /// No Local set on a shared subscription.
    SharedSubscriptionNoLocal,
    /// Retain Handling 3.
    InvalidRetainHandling,
    /// A client sent a Subscription Identifier in PUBLISH.
    SubscriptionIdFromClient,
    /// A v5 PUBLISH with an empty topic name and no Topic Alias.
    EmptyTopicWithoutAlias,
    /// A CONNACK with Session Present set and a non-zero reason code.
    SessionPresentOnError,
    /// Authentication Data without an Authentication Method.
    AuthDataWithoutMethod,
    /// An AUTH packet without an Authentication Method.
    AuthWithoutMethod,
    /// Maximum QoS 3 in the v5 subscription options.
    InvalidSubscriptionQoS,
    /// A server sent Session Expiry Interval in DISCONNECT.
    SessionExpiryFromServer,
}

impl ProtocolError {
    /// The normative statement broken.
    pub fn rule(&self) -> &'static str {
        match self {
            ProtocolError::FirstPacketNotConnect(_) => "MQTT-3.1.0-1",
            ProtocolError::SecondConnect => "MQTT-3.1.0-2",
            ProtocolError::FirstPacketNotConnAck(_) => "MQTT-3.2.0-1",
            ProtocolError::SecondConnAck => "MQTT-3.2.0-2",
            ProtocolError::UnexpectedPacket(_) => "MQTT-2.1.2 (packet direction)",
            ProtocolError::DuplicateProperty(_) => {
                "MQTT-2.2.2.2 (property included more than once)"
            }
            ProtocolError::InvalidPropertyValue { property, .. } => property.value_rule(),
            ProtocolError::NoTopicFilters => "MQTT-3.8.3-2",
            ProtocolError::NoUnsubscribeFilters => "MQTT-3.10.3-2",
            ProtocolError::SharedSubscriptionNoLocal => "MQTT-3.8.3-4",
            ProtocolError::InvalidRetainHandling => "MQTT-3.8.3.1 (Retain Handling 3)",
            ProtocolError::SubscriptionIdFromClient => "MQTT-3.3.4-6",
            ProtocolError::EmptyTopicWithoutAlias => "MQTT-3.3.2-1 / 3.3.2.3.4",
            ProtocolError::SessionPresentOnError => "MQTT-3.2.2-6",
            ProtocolError::AuthDataWithoutMethod => "MQTT-3.1.2.11.10",
            ProtocolError::AuthWithoutMethod => "MQTT-3.15.2.2.2",
            ProtocolError::InvalidSubscriptionQoS => "MQTT-3.8.3.1 (Maximum QoS 3)",
            ProtocolError::SessionExpiryFromServer => "MQTT-3.14.2-2",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::FirstPacketNotConnect(p) => {
                write!(f, "first packet is {p:?}, not CONNECT")
            }
            ProtocolError::SecondConnect => f.write_str("second CONNECT on one connection"),
            ProtocolError::FirstPacketNotConnAck(p) => {
                write!(f, "first packet from the server is {p:?}, not CONNACK")
            }
            ProtocolError::SecondConnAck => f.write_str("second CONNACK on one connection"),
            ProtocolError::UnexpectedPacket(p) => write!(f, "{p:?} sent in the wrong direction"),
            ProtocolError::DuplicateProperty(p) => write!(f, "property {p:?} included twice"),
            ProtocolError::InvalidPropertyValue { property, value } => {
                write!(f, "property {property:?} has the forbidden value {value}")
            }
            ProtocolError::NoTopicFilters => f.write_str("SUBSCRIBE without topic filters"),
            ProtocolError::NoUnsubscribeFilters => f.write_str("UNSUBSCRIBE without topic filters"),
            ProtocolError::SharedSubscriptionNoLocal => {
                f.write_str("No Local set on a shared subscription")
            }
            ProtocolError::InvalidRetainHandling => f.write_str("Retain Handling 3"),
            ProtocolError::SubscriptionIdFromClient => {
                f.write_str("PUBLISH from a client carries a Subscription Identifier")
            }
            ProtocolError::EmptyTopicWithoutAlias => {
                f.write_str("PUBLISH with an empty topic name and no Topic Alias")
            }
            ProtocolError::SessionPresentOnError => {
                f.write_str("CONNACK with Session Present and a failure reason code")
            }
            ProtocolError::AuthDataWithoutMethod => {
                f.write_str("Authentication Data without Authentication Method")
            }
            ProtocolError::AuthWithoutMethod => f.write_str("AUTH without Authentication Method"),
            ProtocolError::InvalidSubscriptionQoS => f.write_str("subscription with Maximum QoS 3"),
            ProtocolError::SessionExpiryFromServer => {
                f.write_str("DISCONNECT from the server carries Session Expiry Interval")
            }
        }
    }
}

/// An encoding error: the packet given cannot be expressed on the wire in this version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field over 65,535 bytes.
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The remaining length would exceed 268,435,455 bytes.
    PacketTooLarge(usize),
    /// QoS 1 or 2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE or an acknowledgement with packet id 0.
    ZeroPacketId(PacketType),
    /// The packet type does not exist in this protocol version (AUTH before MQTT 5).
    NotInVersion(PacketType),
    /// A value outside its field (Subscription Identifier 0 or above 268,435,455, say).
    InvalidValue(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::FieldTooLong { field, len } => {
                write!(f, "{field} is {len} bytes, more than 65535")
            }
            EncodeError::PacketTooLarge(n) => write!(f, "remaining length {n} exceeds 268435455"),
            EncodeError::ZeroPacketId(p) => write!(f, "{p:?} needs a non-zero packet identifier"),
            EncodeError::NotInVersion(p) => write!(f, "{p:?} does not exist in this MQTT version"),
            EncodeError::InvalidValue(what) => write!(f, "invalid value for {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}
