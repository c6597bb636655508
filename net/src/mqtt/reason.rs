//! MQTT 5 reason codes (2.4) and their mapping to the 3.1.1 return codes.

use std::fmt;

use super::packet::PacketType;

/// An MQTT 5 reason code. A newtype rather than an enum so that a value this version does not
/// name survives decoding and re-encoding; [`ReasonCode::is_valid_for`] tells which codes a
/// packet type may carry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($name:ident = $value:literal, $text:literal, [$($pkt:ident),*];)*) => {
        impl ReasonCode {
            $(
                #[doc = $text]
                pub const $name: ReasonCode = ReasonCode($value);
            )*

            /// The name the specification gives this code, if it names it.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }

        /// Which packet types may carry a given reason code (table in 2.4).
        fn allowed(code: u8, packet: PacketType) -> bool {
            #[allow(unused_imports)]
            use PacketType::*;
            match code {
                $($value => matches!(packet, $($pkt)|*),)*
                _ => false,
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success", [ConnAck, PubAck, PubRec, PubRel, PubComp, UnsubAck, Auth, SubAck, Disconnect];
    GRANTED_QOS_1 = 0x01, "Granted QoS 1", [SubAck];
    GRANTED_QOS_2 = 0x02, "Granted QoS 2", [SubAck];
    DISCONNECT_WITH_WILL = 0x04, "Disconnect with Will Message", [Disconnect];
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers", [PubAck, PubRec];
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed", [UnsubAck];
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication", [Auth];
    RE_AUTHENTICATE = 0x19, "Re-authenticate", [Auth];
    UNSPECIFIED_ERROR = 0x80, "Unspecified error", [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    MALFORMED_PACKET = 0x81, "Malformed Packet", [ConnAck, Disconnect];
    PROTOCOL_ERROR = 0x82, "Protocol Error", [ConnAck, Disconnect];
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error", [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version", [ConnAck];
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid", [ConnAck];
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password", [ConnAck];
    NOT_AUTHORIZED = 0x87, "Not authorized", [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    SERVER_UNAVAILABLE = 0x88, "Server unavailable", [ConnAck];
    SERVER_BUSY = 0x89, "Server busy", [ConnAck, Disconnect];
    BANNED = 0x8A, "Banned", [ConnAck];
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down", [Disconnect];
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method", [ConnAck, Disconnect];
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout", [Disconnect];
    SESSION_TAKEN_OVER = 0x8E, "Session taken over", [Disconnect];
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid", [SubAck, UnsubAck, Disconnect];
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid", [ConnAck, PubAck, PubRec, Disconnect];
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use", [PubAck, PubRec, SubAck, UnsubAck];
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found", [PubRel, PubComp];
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded", [Disconnect];
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid", [Disconnect];
    PACKET_TOO_LARGE = 0x95, "Packet too large", [ConnAck, Disconnect];
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high", [Disconnect];
    QUOTA_EXCEEDED = 0x97, "Quota exceeded", [ConnAck, PubAck, PubRec, SubAck, Disconnect];
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action", [Disconnect];
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid", [ConnAck, PubAck, PubRec, Disconnect];
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported", [ConnAck, Disconnect];
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported", [ConnAck, Disconnect];
    USE_ANOTHER_SERVER = 0x9C, "Use another server", [ConnAck, Disconnect];
    SERVER_MOVED = 0x9D, "Server moved", [ConnAck, Disconnect];
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported", [SubAck, Disconnect];
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded", [ConnAck, Disconnect];
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time", [Disconnect];
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported", [SubAck, Disconnect];
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported", [SubAck, Disconnect];
}

impl ReasonCode {
    /// Normal disconnection: 0x00 on DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    /// Granted QoS 0: 0x00 on SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);

    /// `true` for codes below 0x80.
    pub fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// Whether `packet` may carry this code in MQTT 5 (2.4).
    pub fn is_valid_for(self, packet: PacketType) -> bool {
        allowed(self.0, packet)
    }

    /// The 3.1 / 3.1.1 CONNACK return code for this reason code. The six v3 codes map one to
    /// one; every other refusal becomes 3 (server unavailable), except the authorisation
    /// refusals, which become 5 (not authorized), as EMQX does.
    pub fn to_v3_connack(self) -> u8 {
        match self.0 {
            0x00 => 0,
            0x84 => 1,
            0x85 => 2,
            0x86 => 4,
            0x87 | 0x8A | 0x8C => 5,
            _ => 3,
        }
    }

    /// The reason code for a 3.1 / 3.1.1 CONNACK return code, `None` for the reserved 6..=255.
    pub fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => Self::SUCCESS,
            1 => Self::UNSUPPORTED_PROTOCOL_VERSION,
            2 => Self::CLIENT_IDENTIFIER_NOT_VALID,
            3 => Self::SERVER_UNAVAILABLE,
            4 => Self::BAD_USER_NAME_OR_PASSWORD,
            5 => Self::NOT_AUTHORIZED,
            _ => return None,
        })
    }

    /// The 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub fn to_v3_suback(self) -> u8 {
        if self.0 <= 2 { self.0 } else { 0x80 }
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "0x{:02X} ({n})", self.0),
            None => write!(f, "0x{:02X}", self.0),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_connack_codes_round_trip() {
        for c in 0..=5u8 {
            let rc = ReasonCode::from_v3_connack(c).unwrap();
            assert_eq!(rc.to_v3_connack(), c);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::BANNED.to_v3_connack(), 5);
        assert_eq!(ReasonCode::SERVER_BUSY.to_v3_connack(), 3);
    }

    #[test]
    fn validity_table() {
        assert!(ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_for(PacketType::PubAck));
        assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_for(PacketType::PubRel));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_for(PacketType::PubRel));
        assert!(!ReasonCode(0x03).is_valid_for(PacketType::Disconnect));
        assert_eq!(
            format!("{:?}", ReasonCode::PACKET_TOO_LARGE),
            "0x95 (Packet too large)"
        );
    }
}
