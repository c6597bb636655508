//! A catalogue of malformed inputs for the MQTT codec (`net::mqtt`).
//!
//! Every row is `(name, decoder setup, bytes, expected error, expected reason code)`. The
//! catalogue test decodes each row whole and one byte at a time in a fresh decoder and asserts
//! the exact `Error` value, its MQTT 5 reason code, that `rule()` is non-empty and that the
//! `Display` text names the rule. A second test feeds random and mutated byte strings to every
//! kind of decoder: no panic, the same outcome whole and byte at a time, and only the reason
//! codes a decoder may produce.
//!
//! Byte strings are written as hex pairs and `'ascii'` literals. `pkt(first, body)` computes the
//! remaining length; `raw(..)` is used where the fixed header itself is under test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::{BufMut, BytesMut};
use net::mqtt::topic::TopicError;
use net::mqtt::{
    Decoder, Error, Malformed, Packet, PacketType, PropertyId, ProtocolError, ProtocolVersion,
    ReasonCode, Role,
};

/// The size limit of the ordinary decoders: large enough never to matter.
const BIG: u32 = 1 << 20;
/// The size limit of the `*_small` decoders.
const SMALL: u32 = 128;

// ---------------------------------------------------------------------------------------------
// Byte strings
// ---------------------------------------------------------------------------------------------

/// Parses `"10 0C 00 04 'MQTT' 04"`: hex pairs and single-quoted ASCII literals.
fn hex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '\'' => {
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\'' {
                        closed = true;
                        break;
                    }
                    assert!(c.is_ascii(), "non-ASCII literal in {s:?}");
                    out.push(c as u8);
                }
                assert!(closed, "unterminated literal in {s:?}");
            }
            hi => {
                let lo = chars
                    .next()
                    .unwrap_or_else(|| panic!("odd hex digit in {s:?}"));
                let pair: String = [hi, lo].iter().collect();
                out.push(
                    u8::from_str_radix(&pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?}")),
                );
            }
        }
    }
    out
}

/// The bytes exactly as written (the fixed header is under test).
fn raw(s: &str) -> Vec<u8> {
    hex(s)
}

/// A packet: first byte, a correctly encoded remaining length, then `body`.
fn pkt(first: u8, body: &str) -> Vec<u8> {
    frame(first, &hex(body))
}

/// `first`, the remaining length of `body`, then `body`.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn to_hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        write!(s, "{x:02X}").unwrap();
    }
    s
}

// Variable headers used by many rows.
const M3: &str = "00 06 'MQIsdp' 03";
const M4: &str = "00 04 'MQTT' 04";
const M5: &str = "00 04 'MQTT' 05";

/// Valid CONNECT packets of each version (client id "c", clean start, keep alive 60).
fn connect(v: ProtocolVersion) -> Vec<u8> {
    match v {
        ProtocolVersion::V3_1 => pkt(0x10, &format!("{M3} 02 00 3C 00 01 'c'")),
        ProtocolVersion::V3_1_1 => pkt(0x10, &format!("{M4} 02 00 3C 00 01 'c'")),
        ProtocolVersion::V5 => pkt(0x10, &format!("{M5} 02 00 3C 00 00 01 'c'")),
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder setups
// ---------------------------------------------------------------------------------------------

/// A named way to make a fresh decoder.
type Setup = (&'static str, fn() -> Decoder);

fn connected(v: ProtocolVersion) -> Decoder {
    let mut d = Decoder::server(BIG);
    let mut buf = BytesMut::from(&connect(v)[..]);
    match d.decode(&mut buf) {
        Ok(Some(Packet::Connect(c))) => assert_eq!(c.protocol, v),
        other => panic!("setup CONNECT {v:?} not decoded: {other:?}"),
    }
    assert!(buf.is_empty());
    d
}

const SERVER: Setup = ("server, before CONNECT", || Decoder::server(BIG));
const SERVER_SMALL: Setup = ("server (max 128), before CONNECT", || {
    Decoder::server(SMALL)
});
const SRV3_CONNECTED: Setup = ("server after a 3.1 CONNECT", || {
    connected(ProtocolVersion::V3_1)
});
const SRV4_CONNECTED: Setup = ("server after a 3.1.1 CONNECT", || {
    connected(ProtocolVersion::V3_1_1)
});
const SRV5_CONNECTED: Setup = ("server after a 5.0 CONNECT", || {
    connected(ProtocolVersion::V5)
});
const SRV3: Setup = ("server, resumed 3.1", || {
    Decoder::resume(Role::Server, ProtocolVersion::V3_1, BIG)
});
const SRV4: Setup = ("server, resumed 3.1.1", || {
    Decoder::resume(Role::Server, ProtocolVersion::V3_1_1, BIG)
});
const SRV5: Setup = ("server, resumed 5.0", || {
    Decoder::resume(Role::Server, ProtocolVersion::V5, BIG)
});
const SRV4_SMALL: Setup = ("server (max 128), resumed 3.1.1", || {
    Decoder::resume(Role::Server, ProtocolVersion::V3_1_1, SMALL)
});
const CLI3_FRESH: Setup = ("client 3.1, before CONNACK", || {
    Decoder::client(ProtocolVersion::V3_1, BIG)
});
const CLI4_FRESH: Setup = ("client 3.1.1, before CONNACK", || {
    Decoder::client(ProtocolVersion::V3_1_1, BIG)
});
const CLI5_FRESH: Setup = ("client 5.0, before CONNACK", || {
    Decoder::client(ProtocolVersion::V5, BIG)
});
const CLI3: Setup = ("client, resumed 3.1", || {
    Decoder::resume(Role::Client, ProtocolVersion::V3_1, BIG)
});
const CLI4: Setup = ("client, resumed 3.1.1", || {
    Decoder::resume(Role::Client, ProtocolVersion::V3_1_1, BIG)
});
const CLI5: Setup = ("client, resumed 5.0", || {
    Decoder::resume(Role::Client, ProtocolVersion::V5, BIG)
});
const CLI5_SMALL: Setup = ("client (max 128), resumed 5.0", || {
    Decoder::resume(Role::Client, ProtocolVersion::V5, SMALL)
});

// ---------------------------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------------------------

struct Case {
    name: &'static str,
    setup: Setup,
    input: Vec<u8>,
    /// The exact error.
    want: Error,
    code: ReasonCode,
}

fn case(name: &'static str, setup: Setup, input: Vec<u8>, want: Error, code: ReasonCode) -> Case {
    Case {
        name,
        setup,
        input,
        want,
        code,
    }
}

fn mal(m: Malformed) -> Error {
    Error::Malformed(m)
}

fn proto(p: ProtocolError) -> Error {
    Error::Protocol(p)
}

fn flags(packet: PacketType, flags: u8) -> Error {
    mal(Malformed::InvalidHeaderFlags { packet, flags })
}

fn end(field: &'static str) -> Error {
    mal(Malformed::UnexpectedEnd { field })
}

fn utf8(field: &'static str) -> Error {
    mal(Malformed::InvalidUtf8 { field })
}

fn trailing(packet: PacketType, len: usize) -> Error {
    mal(Malformed::TrailingBytes { packet, len })
}

fn not_allowed(property: PropertyId, packet: PacketType) -> Error {
    mal(Malformed::PropertyNotAllowed { property, packet })
}

fn bad_value(property: PropertyId, value: u32) -> Error {
    proto(ProtocolError::InvalidPropertyValue { property, value })
}

fn bad_reason(packet: PacketType, code: u8) -> Error {
    mal(Malformed::InvalidReasonCode { packet, code })
}

fn unsupported(level: u8, known_name: bool) -> Error {
    Error::UnsupportedProtocol { level, known_name }
}

#[rustfmt::skip]
fn catalogue() -> Vec<Case> {
    use PacketType as P;
    use PropertyId as Id;
    use ReasonCode as RC;
    const MALFORMED: RC = RC::MALFORMED_PACKET;
    const PROTOCOL: RC = RC::PROTOCOL_ERROR;
    const TOO_LARGE: RC = RC::PACKET_TOO_LARGE;
    const VERSION: RC = RC::UNSUPPORTED_PROTOCOL_VERSION;
    const NAME: RC = RC::TOPIC_NAME_INVALID;
    const FILTER: RC = RC::TOPIC_FILTER_INVALID;

    vec![
        // ---- Fixed header: packet type ------------------------------------------------------
        case("type 0 to a fresh server", SERVER, raw("00 00"),
            mal(Malformed::ReservedPacketType(0)), MALFORMED),
        case("type 0 to a 3.1.1 server", SRV4, raw("00 00"),
            mal(Malformed::ReservedPacketType(0)), MALFORMED),
        case("type 0 to a 5.0 client", CLI5, raw("00 00"),
            mal(Malformed::ReservedPacketType(0)), MALFORMED),
        case("AUTH on a 3.1.1 connection (server after CONNECT)", SRV4_CONNECTED, raw("F0 00"),
            mal(Malformed::ReservedPacketType(15)), MALFORMED),
        case("AUTH on a 3.1 connection (server after CONNECT)", SRV3_CONNECTED, raw("F0 00"),
            mal(Malformed::ReservedPacketType(15)), MALFORMED),
        case("AUTH to a 3.1.1 client", CLI4, pkt(0xF0, "18 00"),
            mal(Malformed::ReservedPacketType(15)), MALFORMED),
        case("AUTH to a 3.1.1 client before CONNACK", CLI4_FRESH, raw("F0 00"),
            mal(Malformed::ReservedPacketType(15)), MALFORMED),
        // ---- Fixed header: reserved flags of every non-PUBLISH type -------------------------
        case("CONNECT flags 0001", SERVER, pkt(0x11, &format!("{M4} 02 00 3C 00 01 'c'")),
            flags(P::Connect, 0b0001), MALFORMED),
        case("CONNACK flags 0010", CLI4_FRESH, pkt(0x22, "00 00"),
            flags(P::ConnAck, 0b0010), MALFORMED),
        case("PUBACK flags 0001", SRV4, pkt(0x41, "00 01"), flags(P::PubAck, 0b0001), MALFORMED),
        case("PUBREC flags 1000", SRV5, pkt(0x58, "00 01"), flags(P::PubRec, 0b1000), MALFORMED),
        case("PUBREL flags 0000", SRV4, pkt(0x60, "00 01"), flags(P::PubRel, 0), MALFORMED),
        case("PUBREL flags 0011", CLI5, pkt(0x63, "00 01"), flags(P::PubRel, 0b0011), MALFORMED),
        case("PUBCOMP flags 0010", CLI4, pkt(0x72, "00 01"), flags(P::PubComp, 0b0010), MALFORMED),
        case("SUBSCRIBE flags 0000", SRV4, pkt(0x80, "00 01 00 01 'a' 00"),
            flags(P::Subscribe, 0), MALFORMED),
        case("SUBSCRIBE flags 1010 (3.1 DUP bit)", SRV3, pkt(0x8A, "00 01 00 01 'a' 00"),
            flags(P::Subscribe, 0b1010), MALFORMED),
        case("SUBACK flags 0010", CLI4, pkt(0x92, "00 01 00"), flags(P::SubAck, 0b0010), MALFORMED),
        case("UNSUBSCRIBE flags 0000", SRV5, pkt(0xA0, "00 01 00 00 01 'a'"),
            flags(P::Unsubscribe, 0), MALFORMED),
        case("UNSUBACK flags 0001", CLI4, pkt(0xB1, "00 01"),
            flags(P::UnsubAck, 0b0001), MALFORMED),
        case("PINGREQ flags 0001", SRV4, raw("C1 00"), flags(P::PingReq, 0b0001), MALFORMED),
        case("PINGRESP flags 0100", CLI4, raw("D4 00"), flags(P::PingResp, 0b0100), MALFORMED),
        case("DISCONNECT flags 1111", SRV4, raw("EF 00"), flags(P::Disconnect, 0b1111), MALFORMED),
        case("AUTH flags 0001", SRV5, raw("F1 00"), flags(P::Auth, 0b0001), MALFORMED),
        // ---- Fixed header: remaining length -------------------------------------------------
        case("remaining length of 5 bytes", SRV4, raw("30 FF FF FF FF 7F"),
            mal(Malformed::VarIntTooLong { field: "remaining length" }), MALFORMED),
        case("remaining length 80 80 80 80 01", SRV5, raw("C0 80 80 80 80 01"),
            mal(Malformed::VarIntTooLong { field: "remaining length" }), MALFORMED),
        case("remaining length 80 00 (non-minimal 0)", SRV4, raw("C0 80 00"),
            mal(Malformed::NonMinimalVarInt { field: "remaining length" }), MALFORMED),
        case("remaining length FF 80 00 (non-minimal 127)", CLI5, raw("30 FF 80 00"),
            mal(Malformed::NonMinimalVarInt { field: "remaining length" }), MALFORMED),
        // ---- Fixed header: Maximum Packet Size, rejected from the header bytes alone ---------
        case("PUBLISH of 129 bytes, max 128 (header only)", SRV4_SMALL, raw("30 7F"),
            Error::PacketTooLarge { size: 129, max: SMALL }, TOO_LARGE),
        case("PUBLISH of 16386 bytes, max 128 (header only)", SRV4_SMALL, raw("30 FF 7F"),
            Error::PacketTooLarge { size: 16_386, max: SMALL }, TOO_LARGE),
        case("CONNECT of 131 bytes, max 128 (header only)", SERVER_SMALL, raw("10 80 01"),
            Error::PacketTooLarge { size: 131, max: SMALL }, TOO_LARGE),
        case("largest remaining length to a client, max 128 (header only)", CLI5_SMALL,
            raw("30 FF FF FF 7F"),
            Error::PacketTooLarge { size: 268_435_460, max: SMALL }, TOO_LARGE),
        case("largest remaining length to a server, max 1 MiB (header only)", SRV5,
            raw("30 FF FF FF 7F"),
            Error::PacketTooLarge { size: 268_435_460, max: BIG }, TOO_LARGE),
        // ---- Direction and order ------------------------------------------------------------
        case("first packet PUBLISH", SERVER, pkt(0x30, "00 01 'a' 'x'"),
            proto(ProtocolError::FirstPacketNotConnect(P::Publish)), PROTOCOL),
        case("first packet PINGREQ", SERVER, raw("C0 00"),
            proto(ProtocolError::FirstPacketNotConnect(P::PingReq)), PROTOCOL),
        case("first packet SUBSCRIBE", SERVER, pkt(0x82, "00 01 00 01 'a' 00"),
            proto(ProtocolError::FirstPacketNotConnect(P::Subscribe)), PROTOCOL),
        case("first packet AUTH", SERVER, pkt(0xF0, "18 00"),
            proto(ProtocolError::FirstPacketNotConnect(P::Auth)), PROTOCOL),
        case("first packet DISCONNECT", SERVER, raw("E0 00"),
            proto(ProtocolError::FirstPacketNotConnect(P::Disconnect)), PROTOCOL),
        case("second CONNECT (3.1.1)", SRV4_CONNECTED, connect(ProtocolVersion::V3_1_1),
            proto(ProtocolError::SecondConnect), PROTOCOL),
        case("second CONNECT (5.0 after 5.0)", SRV5_CONNECTED, connect(ProtocolVersion::V5),
            proto(ProtocolError::SecondConnect), PROTOCOL),
        case("second CONNECT (3.1.1 after 3.1)", SRV3_CONNECTED, connect(ProtocolVersion::V3_1_1),
            proto(ProtocolError::SecondConnect), PROTOCOL),
        case("CONNACK to a server", SRV4, pkt(0x20, "00 00"),
            proto(ProtocolError::UnexpectedPacket(P::ConnAck)), PROTOCOL),
        case("CONNACK to a fresh server", SERVER, pkt(0x20, "00 00"),
            proto(ProtocolError::UnexpectedPacket(P::ConnAck)), PROTOCOL),
        case("SUBACK to a server", SRV5, pkt(0x90, "00 01 00 00"),
            proto(ProtocolError::UnexpectedPacket(P::SubAck)), PROTOCOL),
        case("UNSUBACK to a server", SRV4, pkt(0xB0, "00 01"),
            proto(ProtocolError::UnexpectedPacket(P::UnsubAck)), PROTOCOL),
        case("PINGRESP to a server", SRV3, raw("D0 00"),
            proto(ProtocolError::UnexpectedPacket(P::PingResp)), PROTOCOL),
        case("CONNECT to a client", CLI4, connect(ProtocolVersion::V3_1_1),
            proto(ProtocolError::UnexpectedPacket(P::Connect)), PROTOCOL),
        case("SUBSCRIBE to a client", CLI5, pkt(0x82, "00 01 00 00 01 'a' 00"),
            proto(ProtocolError::UnexpectedPacket(P::Subscribe)), PROTOCOL),
        case("UNSUBSCRIBE to a client", CLI4, pkt(0xA2, "00 01 00 01 'a'"),
            proto(ProtocolError::UnexpectedPacket(P::Unsubscribe)), PROTOCOL),
        case("PINGREQ to a client", CLI5, raw("C0 00"),
            proto(ProtocolError::UnexpectedPacket(P::PingReq)), PROTOCOL),
        case("DISCONNECT to a 3.1.1 client", CLI4, raw("E0 00"),
            proto(ProtocolError::UnexpectedPacket(P::Disconnect)), PROTOCOL),
        case("DISCONNECT to a 3.1 client", CLI3, raw("E0 00"),
            proto(ProtocolError::UnexpectedPacket(P::Disconnect)), PROTOCOL),
        case("PUBLISH to a client before CONNACK", CLI4_FRESH, pkt(0x30, "00 01 'a'"),
            proto(ProtocolError::FirstPacketNotConnAck(P::Publish)), PROTOCOL),
        case("second CONNACK to a client", CLI5, pkt(0x20, "00 00 00"),
            proto(ProtocolError::SecondConnAck), PROTOCOL),
        // ---- CONNECT: protocol name and level -----------------------------------------------
        case("CONNECT protocol name MQTX", SERVER, pkt(0x10, "00 04 'MQTX' 04 02 00 3C 00 01 'c'"),
            unsupported(4, false), VERSION),
        case("CONNECT protocol name mqtt (lower case)", SERVER,
            pkt(0x10, "00 04 'mqtt' 05 02 00 3C 00 00 01 'c'"), unsupported(5, false), VERSION),
        case("CONNECT MQTT level 3", SERVER, pkt(0x10, "00 04 'MQTT' 03 02 00 3C 00 01 'c'"),
            unsupported(3, true), VERSION),
        case("CONNECT MQIsdp level 4", SERVER, pkt(0x10, "00 06 'MQIsdp' 04 02 00 3C 00 01 'c'"),
            unsupported(4, true), VERSION),
        case("CONNECT MQTT level 6", SERVER, pkt(0x10, "00 04 'MQTT' 06 02 00 3C 00 01 'c'"),
            unsupported(6, true), VERSION),
        case("CONNECT protocol name longer than the packet", SERVER, pkt(0x10, "00 09 'MQTT'"),
            end("protocol name"), MALFORMED),
        case("CONNECT protocol name not UTF-8", SERVER, pkt(0x10, "00 04 'MQ' C3 28 04 02 00 3C"),
            utf8("protocol name"), MALFORMED),
        case("CONNECT without protocol level", SERVER, pkt(0x10, "00 04 'MQTT'"),
            end("protocol level"), MALFORMED),
        // ---- CONNECT: flags ----------------------------------------------------------------
        case("CONNECT 3.1.1 reserved flag", SERVER, pkt(0x10, &format!("{M4} 03 00 3C 00 01 'c'")),
            mal(Malformed::ConnectReservedFlag), MALFORMED),
        case("CONNECT 5.0 reserved flag", SERVER,
            pkt(0x10, &format!("{M5} 01 00 3C 00 00 01 'c'")),
            mal(Malformed::ConnectReservedFlag), MALFORMED),
        case("CONNECT 3.1.1 will QoS 1 without will flag", SERVER,
            pkt(0x10, &format!("{M4} 0A 00 3C 00 01 'c'")),
            mal(Malformed::WillQoSWithoutWill), MALFORMED),
        case("CONNECT 5.0 will retain without will flag", SERVER,
            pkt(0x10, &format!("{M5} 22 00 3C 00 00 01 'c'")),
            mal(Malformed::WillRetainWithoutWill), MALFORMED),
        case("CONNECT 3.1 will retain without will flag", SERVER,
            pkt(0x10, &format!("{M3} 22 00 3C 00 01 'c'")),
            mal(Malformed::WillRetainWithoutWill), MALFORMED),
        case("CONNECT 3.1.1 will QoS 3", SERVER,
            pkt(0x10, &format!("{M4} 1E 00 3C 00 01 'c' 00 01 't' 00 00")),
            mal(Malformed::InvalidWillQoS), MALFORMED),
        case("CONNECT 5.0 will QoS 3", SERVER,
            pkt(0x10, &format!("{M5} 1E 00 3C 00 00 01 'c' 00 00 01 't' 00 00")),
            mal(Malformed::InvalidWillQoS), MALFORMED),
        case("CONNECT 3.1.1 password without user name", SERVER,
            pkt(0x10, &format!("{M4} 42 00 3C 00 01 'c' 00 01 'p'")),
            mal(Malformed::PasswordWithoutUsername), MALFORMED),
        case("CONNECT 3.1 password without user name", SERVER,
            pkt(0x10, &format!("{M3} 42 00 3C 00 01 'c' 00 01 'p'")),
            mal(Malformed::PasswordWithoutUsername), MALFORMED),
        // ---- CONNECT: payload ---------------------------------------------------------------
        case("CONNECT truncated keep alive", SERVER, pkt(0x10, &format!("{M4} 02 00")),
            end("keep alive"), MALFORMED),
        case("CONNECT truncated client id", SERVER, pkt(0x10, &format!("{M4} 02 00 3C 00 05 'ab'")),
            end("client identifier"), MALFORMED),
        case("CONNECT 5.0 truncated client id", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 00 00 05 'ab'")),
            end("client identifier"), MALFORMED),
        case("CONNECT client id invalid UTF-8 (C3 28)", SERVER,
            pkt(0x10, &format!("{M4} 02 00 3C 00 02 C3 28")),
            utf8("client identifier"), MALFORMED),
        case("CONNECT client id with U+0000", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 00 00 03 'a' 00 'b'")),
            mal(Malformed::NullCharacter { field: "client identifier" }), MALFORMED),
        case("CONNECT client id with encoded surrogate ED A0 80", SERVER,
            pkt(0x10, &format!("{M3} 02 00 3C 00 03 ED A0 80")),
            utf8("client identifier"), MALFORMED),
        case("CONNECT 3.1.1 will topic with #", SERVER,
            pkt(0x10, &format!("{M4} 06 00 3C 00 01 'c' 00 03 'a/#' 00 00")),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        case("CONNECT 5.0 will topic with +", SERVER,
            pkt(0x10, &format!("{M5} 06 00 3C 00 00 01 'c' 00 00 03 'a/+' 00 00")),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        case("CONNECT 3.1.1 empty will topic", SERVER,
            pkt(0x10, &format!("{M4} 06 00 3C 00 01 'c' 00 00 00 00")),
            Error::TopicName(TopicError::Empty), NAME),
        case("CONNECT will topic with code point above U+10FFFF", SERVER,
            pkt(0x10, &format!("{M4} 06 00 3C 00 01 'c' 00 04 F4 90 80 80 00 00")),
            utf8("will topic"), MALFORMED),
        case("CONNECT missing will payload", SERVER,
            pkt(0x10, &format!("{M4} 06 00 3C 00 01 'c' 00 01 't'")),
            end("will payload"), MALFORMED),
        case("CONNECT user name with lone continuation byte", SERVER,
            pkt(0x10, &format!("{M4} 82 00 3C 00 01 'c' 00 02 'u' 80")),
            utf8("user name"), MALFORMED),
        case("CONNECT missing password", SERVER,
            pkt(0x10, &format!("{M4} C2 00 3C 00 01 'c' 00 01 'u'")),
            end("password"), MALFORMED),
        case("CONNECT 3.1.1 trailing byte after password", SERVER,
            pkt(0x10, &format!("{M4} C2 00 3C 00 01 'c' 00 01 'u' 00 01 'p' FF")),
            trailing(P::Connect, 1), MALFORMED),
        case("CONNECT 5.0 trailing bytes after password", SERVER,
            pkt(0x10, &format!("{M5} C2 00 3C 00 00 01 'c' 00 01 'u' 00 01 'p' 00 00")),
            trailing(P::Connect, 2), MALFORMED),
        // ---- CONNECT: v5 properties ---------------------------------------------------------
        case("CONNECT duplicate Session Expiry Interval", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 0A 11 00 00 00 0A 11 00 00 00 0A 00 01 'c'")),
            proto(ProtocolError::DuplicateProperty(Id::SessionExpiryInterval)), PROTOCOL),
        case("CONNECT Receive Maximum 0", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 03 21 00 00 00 01 'c'")),
            bad_value(Id::ReceiveMaximum, 0), PROTOCOL),
        case("CONNECT Maximum Packet Size 0", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 05 27 00 00 00 00 00 01 'c'")),
            bad_value(Id::MaximumPacketSize, 0), PROTOCOL),
        case("CONNECT Request Problem Information 2", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 02 17 02 00 01 'c'")),
            bad_value(Id::RequestProblemInformation, 2), PROTOCOL),
        case("CONNECT Request Response Information 2", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 02 19 02 00 01 'c'")),
            bad_value(Id::RequestResponseInformation, 2), PROTOCOL),
        case("CONNECT with Topic Alias property", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 03 23 00 01 00 01 'c'")),
            not_allowed(Id::TopicAlias, P::Connect), MALFORMED),
        case("CONNECT with Server Keep Alive property", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 03 13 00 0A 00 01 'c'")),
            not_allowed(Id::ServerKeepAlive, P::Connect), MALFORMED),
        case("CONNECT unknown property 0x7F", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 01 7F 00 01 'c'")),
            mal(Malformed::UnknownProperty(0x7F)), MALFORMED),
        case("CONNECT unknown two-byte property 0x80 0x01", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 02 80 01 00 01 'c'")),
            mal(Malformed::UnknownProperty(0x80)), MALFORMED),
        case("CONNECT non-minimal property identifier 0x91 0x00", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 02 91 00 00 01 'c'")),
            mal(Malformed::NonMinimalVarInt { field: "property identifier" }), MALFORMED),
        case("CONNECT property length past the end", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 10 11 00 00")),
            end("properties"), MALFORMED),
        case("CONNECT property length of 5 bytes", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C FF FF FF FF 7F")),
            mal(Malformed::VarIntTooLong { field: "property length" }), MALFORMED),
        case("CONNECT property value past the property length", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 03 11 00 00 00 01 'c'")),
            end("property"), MALFORMED),
        case("CONNECT Session Expiry Interval in will properties", SERVER,
            pkt(0x10, &format!("{M5} 06 00 3C 00 00 01 'c' 05 11 00 00 00 01 00 01 't' 00 00")),
            not_allowed(Id::SessionExpiryInterval, P::Connect), MALFORMED),
        case("CONNECT Topic Alias in will properties", SERVER,
            pkt(0x10, &format!("{M5} 06 00 3C 00 00 01 'c' 03 23 00 01 00 01 't' 00 00")),
            not_allowed(Id::TopicAlias, P::Connect), MALFORMED),
        case("CONNECT will Payload Format Indicator 2", SERVER,
            pkt(0x10, &format!("{M5} 06 00 3C 00 00 01 'c' 02 01 02 00 01 't' 00 00")),
            bad_value(Id::PayloadFormatIndicator, 2), PROTOCOL),
        case("CONNECT Authentication Data without Method", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 04 16 00 01 AA 00 01 'c'")),
            proto(ProtocolError::AuthDataWithoutMethod), PROTOCOL),
        case("CONNECT duplicate Authentication Method", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 08 15 00 01 'a' 15 00 01 'b' 00 01 'c'")),
            proto(ProtocolError::DuplicateProperty(Id::AuthenticationMethod)), PROTOCOL),
        case("CONNECT user property value invalid UTF-8", SERVER,
            pkt(0x10, &format!("{M5} 02 00 3C 08 26 00 01 'k' 00 02 C3 28 00 01 'c'")),
            utf8("user property"), MALFORMED),
        // ---- PUBLISH -----------------------------------------------------------------------
        case("PUBLISH QoS 3 (3.1.1)", SRV4, pkt(0x36, "00 01 'a' 00 01"),
            mal(Malformed::InvalidQoS(3)), MALFORMED),
        case("PUBLISH QoS 3 (5.0 client)", CLI5, pkt(0x37, "00 01 'a' 00 01 00"),
            mal(Malformed::InvalidQoS(3)), MALFORMED),
        case("PUBLISH DUP on QoS 0", SRV4, pkt(0x38, "00 01 'a'"),
            mal(Malformed::DupOnQoS0), MALFORMED),
        case("PUBLISH DUP on QoS 0 (3.1)", SRV3, pkt(0x39, "00 01 'a'"),
            mal(Malformed::DupOnQoS0), MALFORMED),
        case("PUBLISH QoS 1 packet id 0", SRV4, pkt(0x32, "00 01 'a' 00 00"),
            mal(Malformed::ZeroPacketId(P::Publish)), MALFORMED),
        case("PUBLISH QoS 2 packet id 0 (5.0 client)", CLI5, pkt(0x34, "00 01 'a' 00 00 00"),
            mal(Malformed::ZeroPacketId(P::Publish)), MALFORMED),
        case("PUBLISH QoS 1 truncated packet id", SRV4, pkt(0x32, "00 01 'a' 00"),
            end("packet identifier"), MALFORMED),
        case("PUBLISH topic with +", SRV4, pkt(0x30, "00 03 'a/+' 'x'"),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        case("PUBLISH topic with # (5.0)", SRV5, pkt(0x30, "00 03 'a/#' 00 'x'"),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        case("PUBLISH topic with # to a 3.1 client", CLI3, pkt(0x30, "00 01 '#'"),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        case("PUBLISH empty topic (3.1.1)", SRV4, pkt(0x30, "00 00 'x'"),
            Error::TopicName(TopicError::Empty), NAME),
        case("PUBLISH empty topic (3.1)", SRV3, pkt(0x30, "00 00"),
            Error::TopicName(TopicError::Empty), NAME),
        case("PUBLISH empty topic without Topic Alias (5.0)", SRV5, pkt(0x30, "00 00 00 'x'"),
            proto(ProtocolError::EmptyTopicWithoutAlias), PROTOCOL),
        case("PUBLISH Topic Alias 0 (3.3.4: DISCONNECT 0x94)", SRV5,
            pkt(0x30, "00 01 'a' 03 23 00 00"),
            bad_value(Id::TopicAlias, 0), RC::TOPIC_ALIAS_INVALID),
        case("PUBLISH Subscription Identifier from a client", SRV5,
            pkt(0x30, "00 01 'a' 02 0B 01 'x'"),
            proto(ProtocolError::SubscriptionIdFromClient), PROTOCOL),
        case("PUBLISH Subscription Identifier 0 (to a client)", CLI5,
            pkt(0x30, "00 01 'a' 02 0B 00"),
            bad_value(Id::SubscriptionIdentifier, 0), PROTOCOL),
        case("PUBLISH Payload Format Indicator 2", SRV5, pkt(0x30, "00 01 'a' 02 01 02"),
            bad_value(Id::PayloadFormatIndicator, 2), PROTOCOL),
        case("PUBLISH duplicate Content Type", CLI5,
            pkt(0x30, "00 01 'a' 08 03 00 01 'x' 03 00 01 'y'"),
            proto(ProtocolError::DuplicateProperty(Id::ContentType)), PROTOCOL),
        case("PUBLISH duplicate Topic Alias", SRV5, pkt(0x30, "00 01 'a' 06 23 00 01 23 00 02"),
            proto(ProtocolError::DuplicateProperty(Id::TopicAlias)), PROTOCOL),
        case("PUBLISH Session Expiry Interval property", SRV5,
            pkt(0x30, "00 01 'a' 05 11 00 00 00 01"),
            not_allowed(Id::SessionExpiryInterval, P::Publish), MALFORMED),
        case("PUBLISH truncated topic", SRV4, pkt(0x30, "00 05 'a'"), end("topic name"), MALFORMED),
        case("PUBLISH topic length only one byte", CLI4, pkt(0x30, "00"), end("topic name"),
            MALFORMED),
        case("PUBLISH topic with invalid continuation byte (C3 28)", SRV4,
            pkt(0x30, "00 02 C3 28"), utf8("topic name"), MALFORMED),
        case("PUBLISH topic with overlong NUL (C0 80)", SRV4, pkt(0x30, "00 03 'a' C0 80"),
            utf8("topic name"), MALFORMED),
        case("PUBLISH topic with U+0000", CLI4, pkt(0x30, "00 03 'a' 00 'b'"),
            mal(Malformed::NullCharacter { field: "topic name" }), MALFORMED),
        case("PUBLISH user property name with U+0000", SRV5,
            pkt(0x30, "00 01 'a' 08 26 00 02 'k' 00 00 01 'v'"),
            mal(Malformed::NullCharacter { field: "user property" }), MALFORMED),
        case("PUBLISH properties past the end", SRV5, pkt(0x30, "00 01 'a' 05 02 00"),
            end("properties"), MALFORMED),
        case("PUBLISH Response Topic with wildcard [MQTT-3.3.2-14]", SRV5,
            pkt(0x30, "00 01 'a' 06 08 00 03 'b/#' 'x'"),
            Error::TopicName(TopicError::WildcardInTopicName), NAME),
        // ---- PUBACK / PUBREC / PUBREL / PUBCOMP --------------------------------------------
        case("PUBACK packet id 0", SRV4, pkt(0x40, "00 00"),
            mal(Malformed::ZeroPacketId(P::PubAck)), MALFORMED),
        case("PUBREC packet id 0 (5.0)", CLI5, pkt(0x50, "00 00"),
            mal(Malformed::ZeroPacketId(P::PubRec)), MALFORMED),
        case("PUBREL packet id 0", SRV3, pkt(0x62, "00 00"),
            mal(Malformed::ZeroPacketId(P::PubRel)), MALFORMED),
        case("PUBCOMP packet id 0 (5.0)", SRV5, pkt(0x70, "00 00 00"),
            mal(Malformed::ZeroPacketId(P::PubComp)), MALFORMED),
        case("PUBACK truncated packet id", SRV4, pkt(0x40, "00"),
            end("packet identifier"), MALFORMED),
        case("PUBACK reason 0x92", SRV5, pkt(0x40, "00 01 92"), bad_reason(P::PubAck, 0x92),
            MALFORMED),
        case("PUBREC reason 0x92", CLI5, pkt(0x50, "00 01 92"), bad_reason(P::PubRec, 0x92),
            MALFORMED),
        case("PUBREL reason 0x10", SRV5, pkt(0x62, "00 01 10"), bad_reason(P::PubRel, 0x10),
            MALFORMED),
        case("PUBCOMP reason 0x80", CLI5, pkt(0x70, "00 01 80"), bad_reason(P::PubComp, 0x80),
            MALFORMED),
        case("PUBACK Topic Alias property", SRV5, pkt(0x40, "00 01 00 03 23 00 01"),
            not_allowed(Id::TopicAlias, P::PubAck), MALFORMED),
        case("PUBREL Subscription Identifier property", CLI5, pkt(0x62, "00 01 00 02 0B 01"),
            not_allowed(Id::SubscriptionIdentifier, P::PubRel), MALFORMED),
        case("PUBCOMP duplicate Reason String", SRV5,
            pkt(0x70, "00 01 00 08 1F 00 01 'a' 1F 00 01 'b'"),
            proto(ProtocolError::DuplicateProperty(Id::ReasonString)), PROTOCOL),
        case("PUBREL user property value invalid UTF-8", SRV5,
            pkt(0x62, "00 01 00 08 26 00 01 'k' 00 02 C3 28"),
            utf8("user property"), MALFORMED),
        case("PUBACK 3.1.1 with 3 bytes", SRV4, pkt(0x40, "00 01 00"),
            trailing(P::PubAck, 1), MALFORMED),
        case("PUBREC 3.1 with 4 bytes", CLI3, pkt(0x50, "00 01 00 00"),
            trailing(P::PubRec, 2), MALFORMED),
        case("PUBACK 5.0 byte after the properties", SRV5, pkt(0x40, "00 01 00 00 00"),
            trailing(P::PubAck, 1), MALFORMED),
        // ---- SUBSCRIBE ---------------------------------------------------------------------
        case("SUBSCRIBE without filters (3.1.1)", SRV4, pkt(0x82, "00 01"),
            proto(ProtocolError::NoTopicFilters), PROTOCOL),
        case("SUBSCRIBE without filters (5.0)", SRV5, pkt(0x82, "00 01 00"),
            proto(ProtocolError::NoTopicFilters), PROTOCOL),
        case("SUBSCRIBE packet id 0", SRV4, pkt(0x82, "00 00 00 01 'a' 00"),
            mal(Malformed::ZeroPacketId(P::Subscribe)), MALFORMED),
        case("SUBSCRIBE 5.0 options 0xC0", SRV5, pkt(0x82, "00 01 00 00 01 'a' C0"),
            mal(Malformed::SubscriptionOptionsReserved(0xC0)), MALFORMED),
        case("SUBSCRIBE 3.1.1 options 0x04 (No Local bit is reserved)", SRV4,
            pkt(0x82, "00 01 00 01 'a' 04"),
            mal(Malformed::SubscriptionOptionsReserved(0x04)), MALFORMED),
        case("SUBSCRIBE 3.1.1 options 0x80", SRV4, pkt(0x82, "00 01 00 01 'a' 80"),
            mal(Malformed::SubscriptionOptionsReserved(0x80)), MALFORMED),
        case("SUBSCRIBE 3.1 options 0x21", SRV3, pkt(0x82, "00 01 00 01 'a' 21"),
            mal(Malformed::SubscriptionOptionsReserved(0x21)), MALFORMED),
        case("SUBSCRIBE 3.1.1 QoS 3", SRV4, pkt(0x82, "00 01 00 01 'a' 03"),
            mal(Malformed::InvalidSubscriptionQoS(3)), MALFORMED),
        case("SUBSCRIBE 5.0 QoS 3 (3.8.3.1: Protocol Error)", SRV5,
            pkt(0x82, "00 01 00 00 01 'a' 03"),
            proto(ProtocolError::InvalidSubscriptionQoS), PROTOCOL),
        case("SUBSCRIBE 5.0 Retain Handling 3", SRV5, pkt(0x82, "00 01 00 00 01 'a' 30"),
            proto(ProtocolError::InvalidRetainHandling), PROTOCOL),
        case("SUBSCRIBE No Local on $share", SRV5, pkt(0x82, "00 01 00 00 0A '$share/g/a' 04"),
            proto(ProtocolError::SharedSubscriptionNoLocal), PROTOCOL),
        case("SUBSCRIBE filter a/#/b", SRV4, pkt(0x82, "00 01 00 05 'a/#/b' 00"),
            Error::TopicFilter(TopicError::MultiLevelWildcardNotLast), FILTER),
        case("SUBSCRIBE filter a+", SRV5, pkt(0x82, "00 01 00 00 02 'a+' 00"),
            Error::TopicFilter(TopicError::SingleLevelWildcardNotAlone), FILTER),
        case("SUBSCRIBE filter $share//a", SRV5, pkt(0x82, "00 01 00 00 09 '$share//a' 00"),
            Error::TopicFilter(TopicError::InvalidShareName), FILTER),
        case("SUBSCRIBE filter $share/g", SRV4, pkt(0x82, "00 01 00 08 '$share/g' 00"),
            Error::TopicFilter(TopicError::SharedFilterMissing), FILTER),
        case("SUBSCRIBE filter $share/g+/x", SRV5, pkt(0x82, "00 01 00 00 0B '$share/g+/x' 01"),
            Error::TopicFilter(TopicError::InvalidShareName), FILTER),
        case("SUBSCRIBE empty filter", SRV4, pkt(0x82, "00 01 00 00 00"),
            Error::TopicFilter(TopicError::Empty), FILTER),
        case("SUBSCRIBE second filter invalid", SRV5,
            pkt(0x82, "00 01 00 00 01 'a' 00 00 02 '#a' 01"),
            Error::TopicFilter(TopicError::MultiLevelWildcardNotLast), FILTER),
        case("SUBSCRIBE two Subscription Identifiers", SRV5,
            pkt(0x82, "00 01 04 0B 01 0B 02 00 01 'a' 00"),
            proto(ProtocolError::DuplicateProperty(Id::SubscriptionIdentifier)), PROTOCOL),
        case("SUBSCRIBE Subscription Identifier 0", SRV5, pkt(0x82, "00 01 02 0B 00 00 01 'a' 00"),
            bad_value(Id::SubscriptionIdentifier, 0), PROTOCOL),
        case("SUBSCRIBE Subscription Identifier non-minimal", SRV5,
            pkt(0x82, "00 01 03 0B 81 00 00 01 'a' 00"),
            mal(Malformed::NonMinimalVarInt { field: "subscription identifier" }), MALFORMED),
        case("SUBSCRIBE missing options byte", SRV4, pkt(0x82, "00 01 00 01 'a'"),
            end("subscription options"), MALFORMED),
        case("SUBSCRIBE filter with overlong '/' (E0 80 AF)", SRV4,
            pkt(0x82, "00 01 00 04 'a' E0 80 AF 00"), utf8("topic filter"), MALFORMED),
        // ---- UNSUBSCRIBE -------------------------------------------------------------------
        case("UNSUBSCRIBE without filters (3.1.1)", SRV4, pkt(0xA2, "00 01"),
            proto(ProtocolError::NoUnsubscribeFilters), PROTOCOL),
        case("UNSUBSCRIBE without filters (5.0)", SRV5, pkt(0xA2, "00 01 00"),
            proto(ProtocolError::NoUnsubscribeFilters), PROTOCOL),
        case("UNSUBSCRIBE filter a#", SRV4, pkt(0xA2, "00 01 00 02 'a#'"),
            Error::TopicFilter(TopicError::MultiLevelWildcardNotLast), FILTER),
        case("UNSUBSCRIBE filter $share/g", SRV5, pkt(0xA2, "00 01 00 00 08 '$share/g'"),
            Error::TopicFilter(TopicError::SharedFilterMissing), FILTER),
        case("UNSUBSCRIBE packet id 0", SRV3, pkt(0xA2, "00 00 00 01 'a'"),
            mal(Malformed::ZeroPacketId(P::Unsubscribe)), MALFORMED),
        case("UNSUBSCRIBE Subscription Identifier property", SRV5,
            pkt(0xA2, "00 01 02 0B 01 00 01 'a'"),
            not_allowed(Id::SubscriptionIdentifier, P::Unsubscribe), MALFORMED),
        case("UNSUBSCRIBE filter with U+0000", SRV4, pkt(0xA2, "00 01 00 03 'a' 00 'b'"),
            mal(Malformed::NullCharacter { field: "topic filter" }), MALFORMED),
        // ---- SUBACK / UNSUBACK (client role) -----------------------------------------------
        case("SUBACK 3.1.1 return code 0x03", CLI4, pkt(0x90, "00 01 03"),
            mal(Malformed::InvalidSubAckCode(0x03)), MALFORMED),
        case("SUBACK 3.1 return code 0x81", CLI3, pkt(0x90, "00 01 00 81"),
            mal(Malformed::InvalidSubAckCode(0x81)), MALFORMED),
        case("SUBACK 5.0 reason 0x11", CLI5, pkt(0x90, "00 01 00 11"),
            bad_reason(P::SubAck, 0x11), MALFORMED),
        case("SUBACK packet id 0", CLI5, pkt(0x90, "00 00 00 00"),
            mal(Malformed::ZeroPacketId(P::SubAck)), MALFORMED),
        case("SUBACK 5.0 Topic Alias property", CLI5, pkt(0x90, "00 01 03 23 00 01 00"),
            not_allowed(Id::TopicAlias, P::SubAck), MALFORMED),
        case("UNSUBACK 5.0 reason 0x01", CLI5, pkt(0xB0, "00 01 00 01"),
            bad_reason(P::UnsubAck, 0x01), MALFORMED),
        case("UNSUBACK 3.1.1 with 3 bytes", CLI4, pkt(0xB0, "00 01 00"),
            trailing(P::UnsubAck, 1), MALFORMED),
        case("UNSUBACK packet id 0", CLI4, pkt(0xB0, "00 00"),
            mal(Malformed::ZeroPacketId(P::UnsubAck)), MALFORMED),
        // ---- CONNACK (client role) ---------------------------------------------------------
        case("CONNACK 3.1.1 flags 0x02", CLI4_FRESH, pkt(0x20, "02 00"),
            mal(Malformed::ConnAckReservedFlags(0x02)), MALFORMED),
        case("CONNACK 5.0 flags 0x80", CLI5_FRESH, pkt(0x20, "80 00 00"),
            mal(Malformed::ConnAckReservedFlags(0x80)), MALFORMED),
        case("CONNACK 3.1.1 return code 6", CLI4_FRESH, pkt(0x20, "00 06"),
            mal(Malformed::InvalidReturnCode(6)), MALFORMED),
        case("CONNACK 3.1 return code 0x80", CLI3_FRESH, pkt(0x20, "00 80"),
            mal(Malformed::InvalidReturnCode(0x80)), MALFORMED),
        case("CONNACK 3.1.1 session present with return code 5", CLI4_FRESH, pkt(0x20, "01 05"),
            proto(ProtocolError::SessionPresentOnError), PROTOCOL),
        case("CONNACK 5.0 session present with reason 0x87", CLI5_FRESH, pkt(0x20, "01 87 00"),
            proto(ProtocolError::SessionPresentOnError), PROTOCOL),
        case("CONNACK 5.0 reason 0x04", CLI5_FRESH, pkt(0x20, "00 04 00"),
            bad_reason(P::ConnAck, 0x04), MALFORMED),
        case("CONNACK 5.0 duplicate Receive Maximum", CLI5_FRESH,
            pkt(0x20, "00 00 06 21 00 0A 21 00 0A"),
            proto(ProtocolError::DuplicateProperty(Id::ReceiveMaximum)), PROTOCOL),
        case("CONNACK 5.0 Maximum QoS 2", CLI5_FRESH, pkt(0x20, "00 00 02 24 02"),
            bad_value(Id::MaximumQoS, 2), PROTOCOL),
        case("CONNACK 5.0 Retain Available 2", CLI5_FRESH, pkt(0x20, "00 00 02 25 02"),
            bad_value(Id::RetainAvailable, 2), PROTOCOL),
        case("CONNACK 5.0 Topic Alias property", CLI5_FRESH, pkt(0x20, "00 00 03 23 00 01"),
            not_allowed(Id::TopicAlias, P::ConnAck), MALFORMED),
        case("CONNACK 3.1.1 truncated", CLI4_FRESH, pkt(0x20, "00"),
            end("connect reason code"), MALFORMED),
        case("CONNACK 3.1.1 with 3 bytes", CLI4_FRESH, pkt(0x20, "00 00 00"),
            trailing(P::ConnAck, 1), MALFORMED),
        // ---- PINGREQ / PINGRESP / DISCONNECT / AUTH ----------------------------------------
        case("PINGREQ with remaining length 1", SRV4, pkt(0xC0, "00"),
            trailing(P::PingReq, 1), MALFORMED),
        case("PINGRESP with remaining length 2", CLI5, pkt(0xD0, "00 00"),
            trailing(P::PingResp, 2), MALFORMED),
        case("DISCONNECT 3.1.1 with a body", SRV4, pkt(0xE0, "00"),
            trailing(P::Disconnect, 1), MALFORMED),
        case("DISCONNECT 3.1 with a body", SRV3_CONNECTED, pkt(0xE0, "00 00"),
            trailing(P::Disconnect, 2), MALFORMED),
        case("DISCONNECT 5.0 reason 0x03", SRV5, pkt(0xE0, "03"),
            bad_reason(P::Disconnect, 0x03), MALFORMED),
        case("DISCONNECT 5.0 reason 0x18 (AUTH only)", CLI5, pkt(0xE0, "18 00"),
            bad_reason(P::Disconnect, 0x18), MALFORMED),
        case("DISCONNECT 5.0 Topic Alias property", SRV5, pkt(0xE0, "00 03 23 00 01"),
            not_allowed(Id::TopicAlias, P::Disconnect), MALFORMED),
        case("DISCONNECT 5.0 byte after the properties", SRV5, pkt(0xE0, "00 00 FF"),
            trailing(P::Disconnect, 1), MALFORMED),
        case("DISCONNECT from the server with Session Expiry Interval [MQTT-3.14.2-2]", CLI5,
            pkt(0xE0, "00 05 11 00 00 00 3C"),
            proto(ProtocolError::SessionExpiryFromServer), PROTOCOL),
        case("AUTH reason 0x01", SRV5, pkt(0xF0, "01"), bad_reason(P::Auth, 0x01), MALFORMED),
        case("AUTH reason 0x87 (to a client)", CLI5, pkt(0xF0, "87 00"),
            bad_reason(P::Auth, 0x87), MALFORMED),
        case("AUTH Authentication Data without Method", SRV5_CONNECTED,
            pkt(0xF0, "18 04 16 00 01 AA"),
            proto(ProtocolError::AuthWithoutMethod), PROTOCOL),
        case("AUTH Session Expiry Interval property", SRV5, pkt(0xF0, "18 05 11 00 00 00 01"),
            not_allowed(Id::SessionExpiryInterval, P::Auth), MALFORMED),
        case("AUTH continue without Authentication Method (3.15.2.2.2)", SRV5_CONNECTED,
            pkt(0xF0, "18 00"),
            proto(ProtocolError::AuthWithoutMethod), PROTOCOL),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

/// Checks one error against the row: exact value, reason code, rule, display.
fn check_error(c: &Case, e: &Error, how: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    if *e != c.want {
        problems.push(format!(
            "{how}: error\n      got:  {e:?}\n      want: {:?}",
            c.want
        ));
    }
    if e.reason_code() != c.code {
        problems.push(format!(
            "{how}: reason code\n      got:  {:?} (from {e:?})\n      want: {:?}",
            e.reason_code(),
            c.code
        ));
    }
    let rule = e.rule();
    if rule.trim().is_empty() {
        problems.push(format!("{how}: empty rule() for {e:?}"));
    }
    let text = e.to_string();
    if !text.contains(rule) {
        problems.push(format!(
            "{how}: Display {text:?} does not name the rule {rule:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

/// Decodes the whole input at once.
fn run_whole(c: &Case) -> Result<Error, String> {
    let mut d = (c.setup.1)();
    let mut buf = BytesMut::from(&c.input[..]);
    match d.decode(&mut buf) {
        Err(e) => check_error(c, &e, "whole").map(|()| e),
        Ok(Some(p)) => Err(format!("whole: accepted as a packet: {p:?}")),
        Ok(None) => Err(format!(
            "whole: no error, the decoder waits for {} more bytes",
            d.needed()
        )),
    }
}

/// Feeds the input one byte at a time; the same error must appear, and no packet.
fn run_bytewise(c: &Case, whole: Option<&Error>) -> Result<(), String> {
    let mut d = (c.setup.1)();
    let mut buf = BytesMut::new();
    for (i, &b) in c.input.iter().enumerate() {
        buf.put_u8(b);
        match d.decode(&mut buf) {
            Ok(None) => {}
            Ok(Some(p)) => {
                return Err(format!(
                    "byte at a time: accepted as a packet after {} of {} bytes: {p:?}",
                    i + 1,
                    c.input.len()
                ));
            }
            Err(e) => {
                if let Some(w) = whole
                    && &e != w
                {
                    return Err(format!(
                        "byte at a time: error after {} bytes differs from the whole-buffer \
                         error\n      got:  {e:?}\n      whole: {w:?}",
                        i + 1
                    ));
                }
                return check_error(c, &e, "byte at a time");
            }
        }
    }
    Err(format!(
        "byte at a time: no error after all {} bytes",
        c.input.len()
    ))
}

/// Runs a case, turning a panic into a failure.
fn run_case(c: &Case) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let whole = run_whole(c);
        let bytewise = run_bytewise(c, whole.as_ref().ok());
        match (whole, bytewise) {
            (Ok(_), Ok(())) => Ok(()),
            (w, b) => Err([w.err(), b.err()].into_iter().flatten().collect::<Vec<_>>()),
        }
    }));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(problems)) => Err(problems.join("\n    ")),
        Err(_) => Err("PANICKED (see the panic message above)".to_string()),
    }
}

#[test]
fn malformed_catalogue() {
    let cases = catalogue();
    assert!(cases.len() >= 70, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {:?}", c.name);
        assert!(!c.input.is_empty(), "{}: empty input", c.name);
    }

    let mut failures = String::new();
    let mut failed = 0;
    for c in &cases {
        if let Err(why) = run_case(c) {
            failed += 1;
            writeln!(
                failures,
                "\n[{}] {} ({})\n  input: {}\n    {why}",
                failed,
                c.name,
                c.setup.0,
                to_hex(&c.input)
            )
            .unwrap();
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} malformed-input cases failed:\n{failures}",
        cases.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Inputs that must be accepted (the counterparts of rules that depend on the version or role)
// ---------------------------------------------------------------------------------------------

/// Valid inputs next to the rules above that depend on the version or the role: each sequence
/// of packets must decode completely.
#[test]
fn accepted_counterparts() {
    let rows: Vec<(&str, Setup, Vec<Vec<u8>>)> = vec![
        (
            "5.0 CONNECT with password and no user name",
            SERVER,
            vec![pkt(0x10, &format!("{M5} 42 00 3C 00 00 01 'c' 00 01 'p'"))],
        ),
        (
            "5.0 PUBLISH with empty topic and Topic Alias",
            SRV5,
            vec![pkt(0x30, "00 00 03 23 00 01 'x'")],
        ),
        (
            "5.0 PUBLISH with Subscription Identifiers to a client",
            CLI5,
            vec![pkt(0x30, "00 01 'a' 04 0B 01 0B 02")],
        ),
        (
            "5.0 AUTH exchange after CONNECT",
            SERVER,
            vec![
                pkt(0x10, &format!("{M5} 02 00 3C 05 15 00 02 'am' 00 01 'c'")),
                pkt(0xF0, "18 05 15 00 02 'am'"),
            ],
        ),
        (
            // [MQTT-3.2.0-1]: "The Server MUST send a CONNACK with a 0x00 (Success) Reason Code
            // before sending any Packet other than AUTH"; 4.12 enhanced authentication has the
            // server send AUTH (0x18) before CONNACK.
            "5.0 client receives AUTH before CONNACK",
            CLI5_FRESH,
            vec![pkt(0xF0, "18 05 15 00 02 'am'"), pkt(0x20, "00 00 00")],
        ),
        (
            "3.1.1 SUBSCRIBE to a $share filter",
            SRV4,
            vec![pkt(0x82, "00 01 00 0A '$share/g/a' 01")],
        ),
    ];
    let mut failures = Vec::new();
    for (name, setup, packets) in &rows {
        let mut d = (setup.1)();
        for (i, bytes) in packets.iter().enumerate() {
            let mut buf = BytesMut::from(&bytes[..]);
            match d.decode(&mut buf) {
                Ok(Some(_)) if buf.is_empty() => {}
                other => {
                    failures.push(format!(
                        "{name} ({}): packet {} [{}] gave {other:?}",
                        setup.0,
                        i + 1,
                        to_hex(bytes)
                    ));
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "valid inputs rejected:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Random input
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Valid packets of every type and version, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        connect(ProtocolVersion::V3_1),
        connect(ProtocolVersion::V3_1_1),
        connect(ProtocolVersion::V5),
        pkt(
            0x10,
            &format!(
                "{M5} EE 00 3C 0A 11 00 00 00 0A 21 00 10 26 00 00 00 00 01 'c' 07 01 01 02 00 00 \
                 00 05 00 03 'w/t' 00 02 'hi' 00 01 'u' 00 01 'p'"
            ),
        ),
        pkt(
            0x10,
            &format!("{M4} EE 00 3C 00 01 'c' 00 03 'w/t' 00 02 'hi' 00 01 'u' 00 01 'p'"),
        ),
        pkt(0x20, "00 00"),
        pkt(0x20, "01 00 08 21 00 0A 24 01 25 00 28 01"),
        pkt(0x30, "00 03 'a/b' 'hello'"),
        pkt(0x3B, "00 03 'a/b' 12 34 'x'"),
        pkt(
            0x32,
            "00 03 'a/b' 00 07 12 01 01 02 00 00 00 0A 03 00 01 't' 0B 05 23 00 02 'x'",
        ),
        pkt(0x40, "00 07"),
        pkt(0x50, "00 07 10 04 1F 00 01 'r'"),
        pkt(0x62, "00 07"),
        pkt(0x70, "00 07 92"),
        pkt(0x82, "00 02 00 03 'a/+' 01 00 01 '#' 02"),
        pkt(0x82, "00 02 03 0B 81 01 00 0C '$share/g/a/#' 2A"),
        pkt(0x90, "00 02 00 01 80"),
        pkt(0xA2, "00 03 00 03 'a/b'"),
        pkt(0xA2, "00 03 00 00 01 '+'"),
        pkt(0xB0, "00 03 00 00 11"),
        raw("C0 00"),
        raw("D0 00"),
        raw("E0 00"),
        pkt(0xE0, "04 05 11 00 00 00 0A"),
        pkt(0xF0, "18 07 15 00 02 'am' 16 00 00"),
    ]
}

/// First bytes with a valid type and the flags it requires (PUBLISH: any QoS 0-2).
const FIRST_BYTES: [u8; 17] = [
    0x10, 0x20, 0x30, 0x32, 0x3D, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0,
    0xF0,
];

/// One random packet: mostly a mutated valid one, so that the body decoders are reached.
fn random_packet(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(8) {
        // Anything at all.
        0 => (0..rng.below(48)).map(|_| rng.byte()).collect(),
        // Any first byte, a consistent remaining length, a random body.
        1 => {
            let first = rng.byte();
            let body: Vec<u8> = (0..rng.below(40)).map(|_| rng.byte()).collect();
            frame(first, &body)
        }
        // A valid first byte, a consistent remaining length, a random body.
        2 | 3 => {
            let first = FIRST_BYTES[rng.below(FIRST_BYTES.len())];
            let body: Vec<u8> = (0..rng.below(40)).map(|_| rng.byte()).collect();
            frame(first, &body)
        }
        // A valid packet with a few bytes changed, dropped or added.
        _ => {
            let mut v = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(5) {
                    0..=2 if v.len() > 2 => {
                        // Leave the fixed header alone most of the time.
                        let i = if rng.below(8) == 0 {
                            rng.below(v.len())
                        } else {
                            2 + rng.below(v.len() - 2)
                        };
                        v[i] = if rng.below(2) == 0 {
                            rng.byte()
                        } else {
                            v[i] ^ (1 << rng.below(8))
                        };
                    }
                    3 if !v.is_empty() => v.truncate(rng.below(v.len())),
                    _ => v.push(rng.byte()),
                }
            }
            // Mostly keep the remaining length consistent with the mutated body.
            if rng.below(4) != 0 && v.len() >= 2 && v[1] < 0x80 {
                v[1] = (v.len() - 2).min(127) as u8;
            }
            v
        }
    }
}

/// A random input for a decoder: the packet that opens the connection (CONNECT for a fresh
/// server, CONNACK for a fresh client) most of the time, then one or two random packets.
fn random_input(rng: &mut Rng, setup: Setup, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    if rng.below(4) != 0 {
        match setup.0 {
            s if s == SERVER.0 => {
                let versions = [
                    ProtocolVersion::V3_1,
                    ProtocolVersion::V3_1_1,
                    ProtocolVersion::V5,
                ];
                v.extend(connect(versions[rng.below(3)]));
            }
            s if s == CLI4_FRESH.0 => v.extend(pkt(0x20, "00 00")),
            s if s == CLI5_FRESH.0 => v.extend(pkt(0x20, "00 00 00")),
            _ => {}
        }
    }
    for _ in 0..=rng.below(2) {
        v.extend(random_packet(rng, seeds));
    }
    v
}

/// What a decoder made of an input: packets, then possibly one error.
type Outcomes = Vec<Result<Packet, Error>>;

/// Decodes packets from `input` until the buffer runs dry or an error: whole, then one byte at
/// a time. Returns the outcomes of both.
fn outcomes(setup: Setup, input: &[u8]) -> (Outcomes, Outcomes) {
    let mut whole = Vec::new();
    let mut d = (setup.1)();
    let mut buf = BytesMut::from(input);
    for _ in 0..64 {
        match d.decode(&mut buf) {
            Ok(Some(p)) => whole.push(Ok(p)),
            Ok(None) => break,
            Err(e) => {
                whole.push(Err(e));
                break;
            }
        }
    }

    let mut split = Vec::new();
    let mut d = (setup.1)();
    let mut buf = BytesMut::new();
    'feed: for &b in input {
        buf.put_u8(b);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(p)) => split.push(Ok(p)),
                Ok(None) => break,
                Err(e) => {
                    split.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    (whole, split)
}

#[test]
fn random_input_never_panics() {
    const SETUPS: [Setup; 8] = [SERVER, SRV3, SRV4, SRV5, CLI4_FRESH, CLI5_FRESH, CLI4, CLI5];
    const ALLOWED: [u8; 7] = [0x81, 0x82, 0x84, 0x8F, 0x90, 0x94, 0x95];
    const PER_SETUP: usize = 1000;

    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut errors = 0usize;
    let mut packets = 0usize;
    for setup in SETUPS {
        for _ in 0..PER_SETUP {
            let input = random_input(&mut rng, setup, &seeds);
            let result = catch_unwind(AssertUnwindSafe(|| outcomes(setup, &input)));
            let Ok((whole, split)) = result else {
                panic!("decoder ({}) panicked on [{}]", setup.0, to_hex(&input));
            };
            assert_eq!(
                whole,
                split,
                "decoder ({}) gives different results whole and byte at a time for [{}]",
                setup.0,
                to_hex(&input)
            );
            for r in &whole {
                match r {
                    Ok(_) => packets += 1,
                    Err(e) => {
                        errors += 1;
                        assert!(
                            ALLOWED.contains(&e.reason_code().0),
                            "decoder ({}) gave reason code {:?} for {e:?} on [{}]",
                            setup.0,
                            e.reason_code(),
                            to_hex(&input)
                        );
                        assert!(!e.rule().is_empty(), "empty rule for {e:?}");
                        assert!(e.to_string().contains(e.rule()), "{e}");
                    }
                }
            }
        }
    }
    // The generator must reach both outcomes, or it tests nothing.
    assert!(errors > PER_SETUP, "only {errors} errors");
    assert!(packets > 200, "only {packets} packets decoded");
}
