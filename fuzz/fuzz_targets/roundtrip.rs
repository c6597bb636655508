//! Structured round trip: `arbitrary` builds a packet (any type, any field values, including
//! ones the encoder accepts but the decoder must refuse) and a protocol version, then
//!
//! * encoding must agree with `encoded_len`, write nothing on error, and for PUBLISH match the
//!   fan-out `PublishEncoder` byte for byte (`net_fuzz::encode_checked`);
//! * the bytes must decode as exactly one packet, and where decoding refuses them, only for a
//!   rule about the content (a topic, a reason code, a property value...), never for framing
//!   (lengths, varints, trailing bytes, properties the encoder itself placed);
//! * what decodes must equal the input packet as that version can express it (v5: all of it;
//!   3.1/3.1.1: no properties, v3 return codes, QoS-only subscription options...);
//! * and decode → encode → decode from there is a fixed point (`net_fuzz::check_reencode`).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use net::mqtt::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Disconnect, DisconnectProperties, Error, LastWill, Malformed, MqttStr,
    Packet, ProtocolVersion, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, Role,
    SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck,
    Unsubscribe, UnsubscribeProperties, WillProperties,
};
use net_fuzz::{check_reencode, decode_one, decoder_for, encode_checked, hex};

#[derive(Arbitrary, Debug)]
enum Version {
    V3,
    V4,
    V5,
}

#[derive(Arbitrary, Debug)]
struct Input {
    version: Version,
    /// For packets both ends send (PUBLISH, the acks, AUTH, v5 DISCONNECT): decode as client.
    client_side: bool,
    packet: APacket,
}

type Users = Vec<(String, String)>;

#[derive(Arbitrary, Debug)]
enum APacket {
    Connect(AConnect),
    ConnAck {
        session_present: bool,
        reason: u8,
        props: AConnAckProps,
    },
    Publish(APublish),
    PubAck(AAck),
    PubRec(AAck),
    PubRel(AAck),
    PubComp(AAck),
    Subscribe {
        packet_id: u16,
        subscription_identifier: Option<u32>,
        users: Users,
        filters: Vec<(String, u8)>,
    },
    SubAck {
        packet_id: u16,
        props: AAckProps,
        codes: Vec<u8>,
    },
    Unsubscribe {
        packet_id: u16,
        users: Users,
        filters: Vec<String>,
    },
    UnsubAck {
        packet_id: u16,
        props: AAckProps,
        codes: Vec<u8>,
    },
    PingReq,
    PingResp,
    Disconnect {
        reason: u8,
        session_expiry_interval: Option<u32>,
        server_reference: Option<String>,
        reason_string: Option<String>,
        users: Users,
    },
    Auth {
        reason: u8,
        method: Option<String>,
        data: Option<Vec<u8>>,
        reason_string: Option<String>,
        users: Users,
    },
}

#[derive(Arbitrary, Debug)]
struct AConnect {
    clean_start: bool,
    keep_alive: u16,
    session_expiry_interval: Option<u32>,
    authentication_method: Option<String>,
    authentication_data: Option<Vec<u8>>,
    request_problem_information: Option<bool>,
    request_response_information: Option<bool>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
    users: Users,
    maximum_packet_size: Option<u32>,
    client_id: String,
    will: Option<AWill>,
    username: Option<String>,
    password: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
struct AWill {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    payload_format_indicator: Option<bool>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    will_delay_interval: Option<u32>,
    users: Users,
}

#[derive(Arbitrary, Debug)]
struct AConnAckProps {
    session_expiry_interval: Option<u32>,
    assigned_client_identifier: Option<String>,
    server_keep_alive: Option<u16>,
    authentication_method: Option<String>,
    authentication_data: Option<Vec<u8>>,
    response_information: Option<String>,
    server_reference: Option<String>,
    reason_string: Option<String>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
    maximum_qos: Option<u8>,
    retain_available: Option<bool>,
    users: Users,
    maximum_packet_size: Option<u32>,
    wildcard_subscription_available: Option<bool>,
    subscription_identifiers_available: Option<bool>,
    shared_subscription_available: Option<bool>,
}

#[derive(Arbitrary, Debug)]
struct APublish {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    packet_id: u16,
    payload_format_indicator: Option<bool>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    subscription_identifiers: Vec<u32>,
    topic_alias: Option<u16>,
    users: Users,
    payload: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct AAck {
    packet_id: u16,
    reason: u8,
    props: AAckProps,
}

#[derive(Arbitrary, Debug)]
struct AAckProps {
    reason_string: Option<String>,
    users: Users,
}

fn s(v: String) -> MqttStr {
    MqttStr::from(v)
}

fn os(v: Option<String>) -> Option<MqttStr> {
    v.map(s)
}

fn ob(v: Option<Vec<u8>>) -> Option<Bytes> {
    v.map(Bytes::from)
}

fn users(v: Users) -> Vec<(MqttStr, MqttStr)> {
    v.into_iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn qos(v: u8) -> QoS {
    QoS::from_u8(v % 3).unwrap_or_default()
}

fn ack_props(a: AAckProps) -> AckProperties {
    let mut p = AckProperties::default();
    p.reason_string = os(a.reason_string);
    p.user_properties = users(a.users);
    p
}

fn ack(a: AAck) -> Ack {
    Ack {
        packet_id: a.packet_id,
        reason_code: ReasonCode(a.reason),
        properties: ack_props(a.props),
    }
}

fn build(p: APacket) -> Packet {
    match p {
        APacket::Connect(c) => {
            let mut props = ConnectProperties::default();
            props.session_expiry_interval = c.session_expiry_interval;
            props.authentication_method = os(c.authentication_method);
            props.authentication_data = ob(c.authentication_data);
            props.request_problem_information = c.request_problem_information;
            props.request_response_information = c.request_response_information;
            props.receive_maximum = c.receive_maximum;
            props.topic_alias_maximum = c.topic_alias_maximum;
            props.user_properties = users(c.users);
            props.maximum_packet_size = c.maximum_packet_size;
            let will = c.will.map(|w| {
                let mut wp = WillProperties::default();
                wp.payload_format_indicator = w.payload_format_indicator;
                wp.message_expiry_interval = w.message_expiry_interval;
                wp.content_type = os(w.content_type);
                wp.response_topic = os(w.response_topic);
                wp.correlation_data = ob(w.correlation_data);
                wp.will_delay_interval = w.will_delay_interval;
                wp.user_properties = users(w.users);
                LastWill {
                    topic: s(w.topic),
                    payload: Bytes::from(w.payload),
                    qos: qos(w.qos),
                    retain: w.retain,
                    properties: wp,
                }
            });
            Packet::Connect(Box::new(Connect {
                // Encoding takes the version from its argument, not from here.
                protocol: ProtocolVersion::V5,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                properties: props,
                client_id: s(c.client_id),
                will,
                username: os(c.username),
                password: ob(c.password),
            }))
        }
        APacket::ConnAck {
            session_present,
            reason,
            props: a,
        } => {
            let mut p = ConnAckProperties::default();
            p.session_expiry_interval = a.session_expiry_interval;
            p.assigned_client_identifier = os(a.assigned_client_identifier);
            p.server_keep_alive = a.server_keep_alive;
            p.authentication_method = os(a.authentication_method);
            p.authentication_data = ob(a.authentication_data);
            p.response_information = os(a.response_information);
            p.server_reference = os(a.server_reference);
            p.reason_string = os(a.reason_string);
            p.receive_maximum = a.receive_maximum;
            p.topic_alias_maximum = a.topic_alias_maximum;
            p.maximum_qos = a.maximum_qos.map(qos);
            p.retain_available = a.retain_available;
            p.user_properties = users(a.users);
            p.maximum_packet_size = a.maximum_packet_size;
            p.wildcard_subscription_available = a.wildcard_subscription_available;
            p.subscription_identifiers_available = a.subscription_identifiers_available;
            p.shared_subscription_available = a.shared_subscription_available;
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code: ReasonCode(reason),
                properties: p,
            })
        }
        APacket::Publish(a) => {
            let mut p = PublishProperties::default();
            p.payload_format_indicator = a.payload_format_indicator;
            p.message_expiry_interval = a.message_expiry_interval;
            p.content_type = os(a.content_type);
            p.response_topic = os(a.response_topic);
            p.correlation_data = ob(a.correlation_data);
            p.subscription_identifiers = a.subscription_identifiers;
            p.topic_alias = a.topic_alias;
            p.user_properties = users(a.users);
            Packet::Publish(Publish {
                dup: a.dup,
                qos: qos(a.qos),
                retain: a.retain,
                topic: s(a.topic),
                packet_id: a.packet_id,
                properties: p,
                payload: Bytes::from(a.payload),
            })
        }
        APacket::PubAck(a) => Packet::PubAck(ack(a)),
        APacket::PubRec(a) => Packet::PubRec(ack(a)),
        APacket::PubRel(a) => Packet::PubRel(ack(a)),
        APacket::PubComp(a) => Packet::PubComp(ack(a)),
        APacket::Subscribe {
            packet_id,
            subscription_identifier,
            users: u,
            filters,
        } => {
            let mut p = SubscribeProperties::default();
            p.subscription_identifier = subscription_identifier;
            p.user_properties = users(u);
            let filters = filters
                .into_iter()
                .map(|(f, b)| Subscription {
                    filter: s(f),
                    options: SubscriptionOptions {
                        qos: qos(b),
                        no_local: b & 0x04 != 0,
                        retain_as_published: b & 0x08 != 0,
                        retain_handling: match (b >> 4) % 3 {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendIfNew,
                            _ => RetainHandling::DoNotSend,
                        },
                    },
                })
                .collect();
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: p,
                filters,
            })
        }
        APacket::SubAck {
            packet_id,
            props,
            codes,
        } => Packet::SubAck(SubAck {
            packet_id,
            properties: ack_props(props),
            reason_codes: codes.into_iter().map(ReasonCode).collect(),
        }),
        APacket::Unsubscribe {
            packet_id,
            users: u,
            filters,
        } => {
            let mut p = UnsubscribeProperties::default();
            p.user_properties = users(u);
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: p,
                filters: filters.into_iter().map(s).collect(),
            })
        }
        APacket::UnsubAck {
            packet_id,
            props,
            codes,
        } => Packet::UnsubAck(UnsubAck {
            packet_id,
            properties: ack_props(props),
            reason_codes: codes.into_iter().map(ReasonCode).collect(),
        }),
        APacket::PingReq => Packet::PingReq,
        APacket::PingResp => Packet::PingResp,
        APacket::Disconnect {
            reason,
            session_expiry_interval,
            server_reference,
            reason_string,
            users: u,
        } => {
            let mut p = DisconnectProperties::default();
            p.session_expiry_interval = session_expiry_interval;
            p.server_reference = os(server_reference);
            p.reason_string = os(reason_string);
            p.user_properties = users(u);
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode(reason),
                properties: p,
            })
        }
        APacket::Auth {
            reason,
            method,
            data,
            reason_string,
            users: u,
        } => {
            let mut p = AuthProperties::default();
            p.authentication_method = os(method);
            p.authentication_data = ob(data);
            p.reason_string = os(reason_string);
            p.user_properties = users(u);
            Packet::Auth(Auth {
                reason_code: ReasonCode(reason),
                properties: p,
            })
        }
    }
}

/// The packet that decoding `encode(p, v)` must give: `p` as far as version `v` can express it.
fn expected(p: &Packet, v: ProtocolVersion) -> Packet {
    let mut p = p.clone();
    let v5 = v == ProtocolVersion::V5;
    match &mut p {
        Packet::Connect(c) => {
            c.protocol = v;
            if !v5 {
                c.properties = ConnectProperties::default();
                if let Some(w) = &mut c.will {
                    w.properties = WillProperties::default();
                }
            }
        }
        Packet::ConnAck(c) => {
            if !v5 {
                c.properties = ConnAckProperties::default();
                c.reason_code = ReasonCode::from_v3_connack(c.reason_code.to_v3_connack())
                    .unwrap_or_else(|| panic!("to_v3_connack gave a code from_v3_connack refuses"));
                if v == ProtocolVersion::V3_1 {
                    // MQTT 3.1 has no Session Present flag.
                    c.session_present = false;
                }
            }
        }
        Packet::Publish(p) => {
            if p.qos == QoS::AtMostOnce {
                p.packet_id = 0;
            }
            if !v5 {
                p.properties = PublishProperties::default();
            }
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            if !v5 {
                a.reason_code = ReasonCode::SUCCESS;
                a.properties = AckProperties::default();
            }
        }
        Packet::Subscribe(sub) => {
            if !v5 {
                sub.properties = SubscribeProperties::default();
                for f in &mut sub.filters {
                    f.options = SubscriptionOptions {
                        qos: f.options.qos,
                        ..SubscriptionOptions::default()
                    };
                }
            }
        }
        Packet::SubAck(a) => {
            if !v5 {
                a.properties = AckProperties::default();
                for rc in &mut a.reason_codes {
                    *rc = ReasonCode(rc.to_v3_suback());
                }
            }
        }
        Packet::Unsubscribe(u) => {
            if !v5 {
                u.properties = UnsubscribeProperties::default();
            }
        }
        Packet::UnsubAck(a) => {
            if !v5 {
                a.properties = AckProperties::default();
                a.reason_codes.clear();
            }
        }
        Packet::Disconnect(d) => {
            if !v5 {
                *d = Disconnect::default();
            }
        }
        Packet::PingReq | Packet::PingResp | Packet::Auth(_) => {}
    }
    p
}

/// The receiving end of `p`.
fn role_for(p: &Packet, v: ProtocolVersion, client_side: bool) -> Role {
    match p {
        Packet::Connect(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::PingReq => {
            Role::Server
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            Role::Client
        }
        Packet::Disconnect(_) if v != ProtocolVersion::V5 => Role::Server,
        // PUBLISH with Subscription Identifiers only goes from server to client.
        Packet::Publish(p) if !p.properties.subscription_identifiers.is_empty() => Role::Client,
        _ if client_side => Role::Client,
        _ => Role::Server,
    }
}

/// Errors our own encoder's output can never cause: the framing is the encoder's job.
fn is_framing_error(e: &Error) -> bool {
    matches!(
        e,
        Error::PacketTooLarge { .. }
            | Error::Malformed(
                Malformed::ReservedPacketType(_)
                    | Malformed::InvalidHeaderFlags { .. }
                    | Malformed::VarIntTooLong { .. }
                    | Malformed::NonMinimalVarInt { .. }
                    | Malformed::UnexpectedEnd { .. }
                    | Malformed::TrailingBytes { .. }
                    | Malformed::StringTooLong { .. }
                    | Malformed::UnknownProperty(_)
                    | Malformed::PropertyNotAllowed { .. }
            )
            | Error::Protocol(net::mqtt::ProtocolError::DuplicateProperty(_))
    )
}

fuzz_target!(|input: Input| {
    let v = match input.version {
        Version::V3 => ProtocolVersion::V3_1,
        Version::V4 => ProtocolVersion::V3_1_1,
        Version::V5 => ProtocolVersion::V5,
    };
    let packet = build(input.packet);
    let Some(bytes) = encode_checked(&packet, v) else {
        return;
    };
    let role = role_for(&packet, v, input.client_side);
    match decode_one(decoder_for(&packet, v, role), &bytes) {
        Ok(decoded) => {
            assert_eq!(
                decoded,
                expected(&packet, v),
                "decode(encode(p)) is not p as {v:?} expresses it; bytes {}",
                hex(&bytes)
            );
            check_reencode(&decoded, v, role);
        }
        Err(e) => assert!(
            !is_framing_error(&e),
            "our own encoding of {packet:?} in {v:?} fails to frame: {e:?}; bytes {}",
            hex(&bytes)
        ),
    }
});
