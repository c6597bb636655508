#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests of the MQTT codec (`net::mqtt`):
//!
//! * every valid packet of every version survives `decode(encode(p)) == p`, and
//!   `encoded_len` is the number of bytes written;
//! * a stream of packets decodes to the same packets however it is split into reads, with
//!   `needed()` never over-asking;
//! * decoded PUBLISH topics, payloads and property fields are slices of the read buffer;
//! * the fan-out `PublishEncoder` writes the same bytes as `Packet::encode`;
//! * `max_packet_size` is enforced from the fixed header alone, to the byte.

use bytes::{Bytes, BytesMut};
use net::mqtt::{
    Ack, AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect,
    ConnectProperties, Decoder, Delivery, Disconnect, DisconnectProperties, Error, LastWill,
    MAX_PACKET_SIZE, MqttStr, Packet, PacketType, ProtocolVersion, Publish, PublishEncoder,
    PublishProperties, QoS, ReasonCode, RetainHandling, Role, SubAck, Subscribe,
    SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperty, WillProperties,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::{BoxedStrategy, Union};

use ProtocolVersion::{V3_1, V3_1_1, V5};

// ---------------------------------------------------------------------------------------------
// Primitive strategies
// ---------------------------------------------------------------------------------------------

/// Any character but U+0000, with `/` and ASCII over-represented.
fn string_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => proptest::char::range('a', 'z'),
        1 => Just('/'),
        1 => Just('$'),
    ]
    .prop_map(|c| if c == '\0' { 'z' } else { c })
}

/// A valid MQTT string (1.5.4): arbitrary unicode without U+0000.
fn mqtt_str(max: usize) -> impl Strategy<Value = MqttStr> {
    vec(string_char(), 0..=max).prop_map(|cs| MqttStr::from(cs.into_iter().collect::<String>()))
}

/// Mostly short strings, some long enough to push property blocks past 127 bytes.
fn small_str() -> impl Strategy<Value = MqttStr> {
    prop_oneof![6 => mqtt_str(8), 1 => mqtt_str(80)]
}

fn bin(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Payloads: mostly small, some with a two-byte and a few with a three-byte remaining length.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        16 => vec(any::<u8>(), 0..=48).prop_map(Bytes::from),
        4 => vec(any::<u8>(), 100..=400).prop_map(Bytes::from),
        1 => vec(any::<u8>(), 16_370..=16_600).prop_map(Bytes::from),
    ]
}

/// A character allowed in a topic name level: not U+0000, `+`, `#`.
fn topic_char() -> impl Strategy<Value = char> {
    string_char().prop_map(|c| if matches!(c, '+' | '#') { 'x' } else { c })
}

/// A valid topic name: non-empty, no wildcards, no U+0000.
fn topic_name() -> impl Strategy<Value = MqttStr> {
    vec(topic_char(), 1..=16).prop_map(|cs| MqttStr::from(cs.into_iter().collect::<String>()))
}

/// A character of a literal filter level or share name: no `/`, `+`, `#`, U+0000.
fn level_char() -> impl Strategy<Value = char> {
    topic_char().prop_map(|c| if c == '/' { 'y' } else { c })
}

fn level() -> impl Strategy<Value = String> {
    vec(level_char(), 0..=5).prop_map(|cs| cs.into_iter().collect())
}

/// A valid topic filter, wildcards included, optionally shared (`$share/{name}/{filter}`).
/// Returns the filter and whether it is shared.
fn topic_filter() -> impl Strategy<Value = (MqttStr, bool)> {
    let lvl = prop_oneof![4 => level(), 1 => Just("+".to_string())];
    let shared_name = vec(level_char(), 1..=4).prop_map(|cs| cs.into_iter().collect::<String>());
    (
        vec(lvl, 1..=4),
        any::<bool>(),
        option::weighted(0.25, shared_name),
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            if f.is_empty() {
                f.push('a');
            }
            // A non-shared filter must not read as a (broken) shared one.
            if f == "$share" || f.starts_with("$share/") {
                f.insert(0, 'x');
            }
            match share {
                Some(name) => (MqttStr::from(format!("$share/{name}/{f}")), true),
                None => (MqttStr::from(f), false),
            }
        })
}

fn user_props() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((small_str(), small_str()), 0..=3)
}

/// A Variable Byte Integer value 1..=268,435,455, boundaries over-represented.
fn sub_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => select(vec![1u32, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455]),
        3 => 1..=268_435_455u32,
    ]
}

fn nonzero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3_1), Just(V3_1_1), Just(V5)]
}

/// Every reason code the MQTT 5 table allows on `packet`.
fn reason_for(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .map(ReasonCode)
        .filter(|c| c.is_valid_for(packet))
        .collect();
    select(codes)
}

/// `Some((method, data))` pairs: data only with a method.
fn auth_pair() -> impl Strategy<Value = (Option<MqttStr>, Option<Bytes>)> {
    option::of((small_str(), option::of(bin(12)))).prop_map(|o| match o {
        Some((m, d)) => (Some(m), d),
        None => (None, None),
    })
}

// ---------------------------------------------------------------------------------------------
// Property strategies (v5)
// ---------------------------------------------------------------------------------------------

fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        auth_pair(),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(nonzero_u16()),
        option::of(any::<u16>()),
        user_props(),
        option::of(1..=u32::MAX),
    )
        .prop_map(|(sei, (am, ad), rpi, rri, rm, tam, up, mps)| {
            let mut p = ConnectProperties::default();
            p.session_expiry_interval = sei;
            p.authentication_method = am;
            p.authentication_data = ad;
            p.request_problem_information = rpi;
            p.request_response_information = rri;
            p.receive_maximum = rm;
            p.topic_alias_maximum = tam;
            p.user_properties = up;
            p.maximum_packet_size = mps;
            p
        })
}

fn will_props() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(small_str()),
        option::of(topic_name()),
        option::of(bin(12)),
        option::of(any::<u32>()),
        user_props(),
    )
        .prop_map(|(pfi, mei, ct, rt, cd, wdi, up)| {
            let mut p = WillProperties::default();
            p.payload_format_indicator = pfi;
            p.message_expiry_interval = mei;
            p.content_type = ct;
            p.response_topic = rt;
            p.correlation_data = cd;
            p.will_delay_interval = wdi;
            p.user_properties = up;
            p
        })
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    let a = (
        option::of(any::<u32>()),
        option::of(small_str()),
        option::of(any::<u16>()),
        option::of(small_str()),
        option::of(bin(12)),
        option::of(small_str()),
        option::of(small_str()),
        option::of(small_str()),
    );
    let b = (
        option::of(nonzero_u16()),
        option::of(any::<u16>()),
        option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        option::of(any::<bool>()),
        user_props(),
        option::of(1..=u32::MAX),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    );
    (a, b).prop_map(
        |((sei, aci, ska, am, ad, ri, sr, rs), (rm, tam, mq, ra, up, mps, wsa, sia, ssa))| {
            let mut p = ConnAckProperties::default();
            p.session_expiry_interval = sei;
            p.assigned_client_identifier = aci;
            p.server_keep_alive = ska;
            p.authentication_method = am;
            p.authentication_data = ad;
            p.response_information = ri;
            p.server_reference = sr;
            p.reason_string = rs;
            p.receive_maximum = rm;
            p.topic_alias_maximum = tam;
            p.maximum_qos = mq;
            p.retain_available = ra;
            p.user_properties = up;
            p.maximum_packet_size = mps;
            p.wildcard_subscription_available = wsa;
            p.subscription_identifiers_available = sia;
            p.shared_subscription_available = ssa;
            p
        },
    )
}

/// PUBLISH properties; Subscription Identifiers only when `sub_ids` (server to client).
fn publish_props(sub_ids: bool) -> impl Strategy<Value = PublishProperties> {
    let ids = if sub_ids {
        vec(sub_id(), 0..=3).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(small_str()),
        option::of(topic_name()),
        option::of(bin(12)),
        ids,
        option::of(nonzero_u16()),
        user_props(),
    )
        .prop_map(|(pfi, mei, ct, rt, cd, ids, ta, up)| {
            let mut p = PublishProperties::default();
            p.payload_format_indicator = pfi;
            p.message_expiry_interval = mei;
            p.content_type = ct;
            p.response_topic = rt;
            p.correlation_data = cd;
            p.subscription_identifiers = ids;
            p.topic_alias = ta;
            p.user_properties = up;
            p
        })
}

fn ack_props() -> impl Strategy<Value = AckProperties> {
    (option::of(small_str()), user_props()).prop_map(|(rs, up)| {
        let mut p = AckProperties::default();
        p.reason_string = rs;
        p.user_properties = up;
        p
    })
}

fn subscribe_props() -> impl Strategy<Value = SubscribeProperties> {
    (option::of(sub_id()), user_props()).prop_map(|(id, up)| {
        let mut p = SubscribeProperties::default();
        p.subscription_identifier = id;
        p.user_properties = up;
        p
    })
}

fn unsubscribe_props() -> impl Strategy<Value = UnsubscribeProperties> {
    user_props().prop_map(|up| {
        let mut p = UnsubscribeProperties::default();
        p.user_properties = up;
        p
    })
}

fn disconnect_props() -> impl Strategy<Value = DisconnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(small_str()),
        option::of(small_str()),
        user_props(),
    )
        .prop_map(|(sei, sr, rs, up)| {
            let mut p = DisconnectProperties::default();
            p.session_expiry_interval = sei;
            p.server_reference = sr;
            p.reason_string = rs;
            p.user_properties = up;
            p
        })
}

/// AUTH always names its method (3.15.2.2.2).
fn auth_props() -> impl Strategy<Value = AuthProperties> {
    (
        small_str(),
        option::of(bin(12)),
        option::of(small_str()),
        user_props(),
    )
        .prop_map(|(am, ad, rs, up)| {
            let mut p = AuthProperties::default();
            p.authentication_method = Some(am);
            p.authentication_data = ad;
            p.reason_string = rs;
            p.user_properties = up;
            p
        })
}

/// `strategy` in v5, the default otherwise.
fn v5_or_default<T, S>(v: ProtocolVersion, strategy: S) -> BoxedStrategy<T>
where
    T: Default + Clone + std::fmt::Debug + 'static,
    S: Strategy<Value = T> + 'static,
{
    if v == V5 {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Packet strategies
// ---------------------------------------------------------------------------------------------

/// Which end decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client to server: the server decodes.
    ToServer,
    /// Server to client: the client decodes.
    ToClient,
}

impl Dir {
    fn role(self) -> Role {
        match self {
            Dir::ToServer => Role::Server,
            Dir::ToClient => Role::Client,
        }
    }
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::ToServer), Just(Dir::ToClient)]
}

fn last_will(v: ProtocolVersion) -> impl Strategy<Value = LastWill> {
    (
        topic_name(),
        bin(40),
        qos(),
        any::<bool>(),
        v5_or_default(v, will_props()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    // Before v5 a password needs a user name ([MQTT-3.1.2-22]).
    let creds = if v == V5 {
        (option::of(small_str()), option::of(bin(12))).boxed()
    } else {
        option::of((small_str(), option::of(bin(12))))
            .prop_map(|o| match o {
                Some((u, p)) => (Some(u), p),
                None => (None, None),
            })
            .boxed()
    };
    (
        any::<bool>(),
        any::<u16>(),
        v5_or_default(v, connect_props()),
        mqtt_str(23),
        option::of(last_will(v)),
        creds,
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, (username, password))| {
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
        .boxed()
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v == V5 {
        reason_for(PacketType::ConnAck).boxed()
    } else {
        // The six codes the v3 return codes map to one to one.
        select(vec![
            ReasonCode::SUCCESS,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ReasonCode::SERVER_UNAVAILABLE,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ReasonCode::NOT_AUTHORIZED,
        ])
        .boxed()
    };
    (code, any::<bool>(), v5_or_default(v, connack_props()))
        .prop_map(move |(reason_code, sp, properties)| {
            Packet::ConnAck(ConnAck {
                // Only with success; MQTT 3.1 has no Session Present flag.
                session_present: sp && reason_code == ReasonCode::SUCCESS && v != V3_1,
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn publish(v: ProtocolVersion, d: Dir) -> BoxedStrategy<Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        nonzero_u16(),
        v5_or_default(v, publish_props(d == Dir::ToClient)),
        payload(),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, properties, payload, empty_topic)| {
                let q0 = qos == QoS::AtMostOnce;
                // An empty topic only in v5, only with a Topic Alias.
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    MqttStr::default()
                } else {
                    topic
                };
                Publish {
                    dup: dup && !q0,
                    qos,
                    retain,
                    topic,
                    packet_id: if q0 { 0 } else { id },
                    properties,
                    payload,
                }
            },
        )
        .boxed()
}

fn ack(v: ProtocolVersion, pt: PacketType) -> BoxedStrategy<Ack> {
    let code = if v == V5 {
        reason_for(pt).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (nonzero_u16(), code, v5_or_default(v, ack_props()))
        .prop_map(|(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let sub = (
        topic_filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(move |((filter, shared), qos, nl, rap, rh)| {
            let options = if v == V5 {
                SubscriptionOptions {
                    qos,
                    // Not on a shared subscription ([MQTT-3.8.3-4]).
                    no_local: nl && !shared,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            };
            Subscription { filter, options }
        });
    (
        nonzero_u16(),
        v5_or_default(v, subscribe_props()),
        vec(sub, 1..=5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn suback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v == V5 {
        reason_for(PacketType::SubAck).boxed()
    } else {
        select(vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80),
        ])
        .boxed()
    };
    (
        nonzero_u16(),
        v5_or_default(v, ack_props()),
        vec(code, 1..=5),
    )
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn unsubscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        nonzero_u16(),
        v5_or_default(v, unsubscribe_props()),
        vec(topic_filter().prop_map(|(f, _)| f), 1..=5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = if v == V5 {
        vec(reason_for(PacketType::UnsubAck), 1..=5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (nonzero_u16(), v5_or_default(v, ack_props()), codes)
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn disconnect(v: ProtocolVersion, d: Dir) -> BoxedStrategy<Packet> {
    if v != V5 {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (reason_for(PacketType::Disconnect), disconnect_props())
        .prop_map(move |(reason_code, mut properties)| {
            // Only the client may send Session Expiry Interval ([MQTT-3.14.2-2]).
            if d == Dir::ToClient {
                properties.session_expiry_interval = None;
            }
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (reason_for(PacketType::Auth), auth_props())
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// Every packet but CONNECT / CONNACK that may travel in direction `d` in version `v`;
/// PUBLISH and SUBSCRIBE, the packets with the most structure, over-represented.
fn body_packet(v: ProtocolVersion, d: Dir) -> BoxedStrategy<Packet> {
    let mut s: Vec<(u32, BoxedStrategy<Packet>)> = vec![
        (4, publish(v, d).prop_map(Packet::Publish).boxed()),
        (
            1,
            ack(v, PacketType::PubAck).prop_map(Packet::PubAck).boxed(),
        ),
        (
            1,
            ack(v, PacketType::PubRec).prop_map(Packet::PubRec).boxed(),
        ),
        (
            1,
            ack(v, PacketType::PubRel).prop_map(Packet::PubRel).boxed(),
        ),
        (
            1,
            ack(v, PacketType::PubComp)
                .prop_map(Packet::PubComp)
                .boxed(),
        ),
    ];
    match d {
        Dir::ToServer => {
            s.push((3, subscribe(v)));
            s.push((2, unsubscribe(v)));
            s.push((1, Just(Packet::PingReq).boxed()));
            s.push((1, disconnect(v, d)));
        }
        Dir::ToClient => {
            s.push((2, suback(v)));
            s.push((2, unsuback(v)));
            s.push((1, Just(Packet::PingResp).boxed()));
            // Before v5 only the client sends DISCONNECT.
            if v == V5 {
                s.push((1, disconnect(v, d)));
            }
        }
    }
    if v == V5 {
        s.push((2, auth()));
    }
    Union::new_weighted(s).boxed()
}

/// The first packet of direction `d`: CONNECT to the server, CONNACK to the client.
fn first_packet(v: ProtocolVersion, d: Dir) -> BoxedStrategy<Packet> {
    match d {
        Dir::ToServer => connect(v),
        Dir::ToClient => connack(v),
    }
}

/// Any packet of direction `d`, the first packets over-represented.
fn any_packet(v: ProtocolVersion, d: Dir) -> BoxedStrategy<Packet> {
    prop_oneof![1 => first_packet(v, d), 5 => body_packet(v, d)].boxed()
}

/// (version, direction, packet).
fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Dir, Packet)> {
    (version(), dir()).prop_flat_map(|(v, d)| (Just(v), Just(d), any_packet(v, d)))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The decoder that receives `p` first-hand: server for CONNECT, client for CONNACK, a resumed
/// connection for the rest.
fn decoder_for(p: &Packet, v: ProtocolVersion, d: Dir, max: u32) -> Decoder {
    match p {
        Packet::Connect(_) => Decoder::server(max),
        Packet::ConnAck(_) => Decoder::client(v, max),
        _ => Decoder::resume(d.role(), v, max),
    }
}

fn encode(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).unwrap();
    buf
}

/// Bytes of the fixed header of an encoded packet: type byte plus remaining length.
fn fixed_header_len(bytes: &[u8]) -> usize {
    1 + bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep the test directory to this file: no regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// How a byte stream is cut into reads.
#[derive(Debug, Clone)]
enum Split {
    /// One byte per read.
    Bytewise,
    /// All at once.
    Whole,
    /// At these positions (mapped into the stream's length).
    Cuts(Vec<Index>),
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        1 => Just(Split::Bytewise),
        1 => Just(Split::Whole),
        4 => vec(any::<Index>(), 1..=40).prop_map(Split::Cuts),
    ]
}

/// The chunk boundaries of a stream of `len` bytes, ascending, ending with `len`.
fn cut_points(s: &Split, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = match s {
        Split::Bytewise => (1..=len).collect(),
        Split::Whole => vec![len],
        Split::Cuts(ix) => ix.iter().map(|i| i.index(len + 1)).collect(),
    };
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// The per-delivery fields of a fan-out, owning its subscription identifiers.
#[derive(Debug, Clone)]
struct DeliverySpec {
    qos: QoS,
    dup: bool,
    retain: bool,
    packet_id: u16,
    topic_alias: Option<u16>,
    omit_topic: bool,
    subscription_ids: Vec<u32>,
    message_expiry_interval: Option<u32>,
}

impl DeliverySpec {
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            qos: self.qos,
            dup: self.dup,
            retain: self.retain,
            packet_id: self.packet_id,
            topic_alias: self.topic_alias,
            omit_topic: self.omit_topic,
            subscription_ids: &self.subscription_ids,
            message_expiry_interval: self.message_expiry_interval,
        }
    }
}

fn delivery(v: ProtocolVersion) -> impl Strategy<Value = DeliverySpec> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        nonzero_u16(),
        option::of(nonzero_u16()),
        any::<bool>(),
        vec(sub_id(), 0..=3),
        option::of(any::<u32>()),
    )
        .prop_map(
            move |(qos, dup, retain, id, topic_alias, omit, subscription_ids, expiry)| {
                let q0 = qos == QoS::AtMostOnce;
                DeliverySpec {
                    qos,
                    dup: dup && !q0,
                    retain,
                    packet_id: if q0 { 0 } else { id },
                    topic_alias,
                    omit_topic: omit && topic_alias.is_some() && v == V5,
                    subscription_ids,
                    message_expiry_interval: expiry,
                }
            },
        )
}

/// `p` with the fields of `d` substituted: what the fan-out encoder must write.
fn apply(p: &Publish, d: &DeliverySpec) -> Publish {
    let mut q = p.clone();
    q.qos = d.qos;
    q.dup = d.dup;
    q.retain = d.retain;
    q.packet_id = d.packet_id;
    q.properties.topic_alias = d.topic_alias;
    q.properties.subscription_identifiers = d.subscription_ids.clone();
    q.properties.message_expiry_interval = d.message_expiry_interval;
    if d.omit_topic {
        q.topic = MqttStr::default();
    }
    q
}

/// What a v`v` receiver decodes from `p`: without properties before v5.
fn as_received(mut p: Publish, v: ProtocolVersion) -> Publish {
    if v != V5 {
        p.properties = PublishProperties::default();
    }
    p
}

fn in_range(range: &std::ops::Range<usize>, b: &[u8]) -> bool {
    let p = b.as_ptr() as usize;
    b.is_empty() || (range.contains(&p) && p + b.len() <= range.end)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(4000))]

    /// decode(encode(p)) == p, all bytes consumed, `encoded_len` == bytes written.
    #[test]
    fn round_trip((v, d, p) in versioned_packet()) {
        let mut buf = encode(&p, v);
        prop_assert_eq!(p.encoded_len(v).unwrap(), buf.len());
        let mut dec = decoder_for(&p, v, d, MAX_PACKET_SIZE);
        let back = dec.decode(&mut buf).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&p));
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(dec.version(), Some(v));
        prop_assert_eq!(dec.decode(&mut buf).unwrap(), None);
        prop_assert_eq!(dec.needed(), 2);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// A stream of packets decodes to the same packets whatever the reads look like.
    #[test]
    fn any_split(
        (v, d, packets) in (version(), dir()).prop_flat_map(|(v, d)| {
            (Just(v), Just(d), first_packet(v, d), vec(body_packet(v, d), 0..=19))
                .prop_map(|(v, d, first, mut rest)| {
                    rest.insert(0, first);
                    (v, d, rest)
                })
        }),
        split in split(),
    ) {
        let mut stream = BytesMut::new();
        let mut ends = Vec::new();
        for p in &packets {
            p.encode(v, &mut stream).unwrap();
            ends.push(stream.len());
        }
        let stream = stream.freeze();
        let mut dec = match d {
            Dir::ToServer => Decoder::server(MAX_PACKET_SIZE),
            Dir::ToClient => Decoder::client(v, MAX_PACKET_SIZE),
        };
        let mut buf = BytesMut::new();
        let mut next = 0; // index of the packet being decoded
        let mut fed = 0;
        for cut in cut_points(&split, stream.len()) {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(p)) => {
                        prop_assert!(next < packets.len(), "extra packet {:?}", p);
                        prop_assert_eq!(&p, &packets[next], "packet {}", next);
                        next += 1;
                    }
                    Ok(None) => {
                        if next == packets.len() {
                            break;
                        }
                        let start = if next == 0 { 0 } else { ends[next - 1] };
                        prop_assert_eq!(buf.len(), fed - start);
                        let missing = ends[next] - fed;
                        let needed = dec.needed();
                        prop_assert!(needed >= 1, "needed 0 with {} missing", missing);
                        prop_assert!(
                            needed <= missing,
                            "needed {} > {} missing (packet {}, {} buffered)",
                            needed, missing, next, buf.len()
                        );
                        // Exact once the fixed header is complete.
                        if buf.len() >= fixed_header_len(&stream[start..]) {
                            prop_assert_eq!(needed, missing, "packet {}", next);
                        }
                        break;
                    }
                    Err(e) => prop_assert!(false, "packet {}: {:?}", next, e),
                }
            }
        }
        prop_assert_eq!(next, packets.len());
        prop_assert!(buf.is_empty());
        prop_assert_eq!(dec.version(), Some(v));
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Topic, payload and the string/binary properties of a decoded PUBLISH are slices of
    /// the read buffer, not copies.
    #[test]
    fn publish_is_zero_copy(
        (v, d, p) in (version(), dir()).prop_flat_map(|(v, d)| (Just(v), Just(d), publish(v, d))),
    ) {
        let packet = Packet::Publish(p);
        let mut buf = encode(&packet, v);
        let start = buf.as_ptr() as usize;
        let range = start..start + buf.len();
        let mut dec = Decoder::resume(d.role(), v, MAX_PACKET_SIZE);
        let Some(Packet::Publish(back)) = dec.decode(&mut buf).unwrap() else {
            panic!("not a PUBLISH");
        };
        prop_assert_eq!(&Packet::Publish(back.clone()), &packet);
        prop_assert!(in_range(&range, &back.payload), "payload copied");
        prop_assert!(in_range(&range, back.topic.as_bytes()), "topic copied");
        let pr = &back.properties;
        for s in [&pr.content_type, &pr.response_topic].into_iter().flatten() {
            prop_assert!(in_range(&range, s.as_bytes()), "property string copied");
        }
        if let Some(c) = &pr.correlation_data {
            prop_assert!(in_range(&range, c), "correlation data copied");
        }
        for (k, val) in &pr.user_properties {
            prop_assert!(in_range(&range, k.as_bytes()), "user property name copied");
            prop_assert!(in_range(&range, val.as_bytes()), "user property value copied");
        }
    }
}

/// A PUBLISH with a non-empty topic (the fan-out source) and a version.
fn fanout_source() -> impl Strategy<Value = (ProtocolVersion, Publish)> {
    version().prop_flat_map(|v| {
        (
            Just(v),
            publish(v, Dir::ToClient).prop_flat_map(|p| {
                // Make sure the shared topic is not empty (a source message always has one).
                (Just(p), topic_name()).prop_map(|(mut p, t)| {
                    if p.topic.is_empty() {
                        p.topic = t;
                    }
                    p
                })
            }),
        )
    })
}

proptest! {
    #![proptest_config(config(2000))]

    /// `PublishEncoder` writes exactly what `Packet::encode` writes for the substituted
    /// PUBLISH, `encoded_len` agrees, and head + payload == whole.
    #[test]
    fn fanout_matches_packet_encode(
        (v, p, d) in fanout_source().prop_flat_map(|(v, p)| (Just(v), Just(p), delivery(v))),
    ) {
        let enc = PublishEncoder::new(&p, v).unwrap();
        let dl = d.delivery();
        let mut got = BytesMut::new();
        enc.encode(&dl, &mut got).unwrap();
        let expected_packet = Packet::Publish(apply(&p, &d));
        let expected = encode(&expected_packet, v);
        prop_assert_eq!(&got[..], &expected[..]);
        prop_assert_eq!(enc.encoded_len(&dl).unwrap(), got.len());
        prop_assert_eq!(expected_packet.encoded_len(v).unwrap(), got.len());
        let mut head = BytesMut::new();
        enc.encode_head(&dl, &mut head).unwrap();
        prop_assert_eq!(head.len() + enc.payload().len(), got.len());
        head.extend_from_slice(enc.payload());
        prop_assert_eq!(&head[..], &got[..]);
        // And the receiver gets the substituted message.
        let mut dec = Decoder::resume(Role::Client, v, MAX_PACKET_SIZE);
        let back = dec.decode(&mut got).unwrap();
        prop_assert_eq!(back, Some(Packet::Publish(as_received(apply(&p, &d), v))));
        prop_assert!(got.is_empty());
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// One encoder, 100 deliveries in a row: each one is right (no state leaks between them).
    #[test]
    fn fanout_encoder_is_reusable(
        (v, p, ds) in fanout_source()
            .prop_flat_map(|(v, p)| (Just(v), Just(p), vec(delivery(v), 100))),
    ) {
        let enc = PublishEncoder::new(&p, v).unwrap();
        let mut dec = Decoder::resume(Role::Client, v, MAX_PACKET_SIZE);
        // One buffer for all of them, as a connection's write buffer would be.
        let mut out = BytesMut::new();
        for (i, d) in ds.iter().enumerate() {
            let dl = d.delivery();
            enc.encode(&dl, &mut out).unwrap();
            let expected = apply(&p, d);
            prop_assert_eq!(
                &out[..],
                &encode(&Packet::Publish(expected.clone()), v)[..],
                "delivery {}", i
            );
            let Some(Packet::Publish(back)) = dec.decode(&mut out).unwrap() else {
                panic!("delivery {i}: not a PUBLISH");
            };
            prop_assert!(out.is_empty());
            let expected = as_received(expected, v);
            prop_assert_eq!(back.qos, d.qos, "delivery {}", i);
            prop_assert_eq!(back.dup, d.dup, "delivery {}", i);
            prop_assert_eq!(back.retain, d.retain, "delivery {}", i);
            prop_assert_eq!(back.packet_id, d.packet_id, "delivery {}", i);
            prop_assert_eq!(&back.topic, &expected.topic, "delivery {}", i);
            prop_assert_eq!(&back.payload, &p.payload, "delivery {}", i);
            prop_assert_eq!(&back.properties, &expected.properties, "delivery {}", i);
            if v == V5 {
                prop_assert_eq!(back.properties.topic_alias, d.topic_alias);
                prop_assert_eq!(&back.properties.subscription_identifiers, &d.subscription_ids);
                prop_assert_eq!(
                    back.properties.message_expiry_interval,
                    d.message_expiry_interval
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    /// A packet of `s` bytes passes a limit of `s` and is refused by a limit of `s - 1`
    /// from its fixed header alone.
    #[test]
    fn max_packet_size_is_exact((v, d, p) in versioned_packet()) {
        let bytes = encode(&p, v).freeze();
        let s = bytes.len();
        let header = fixed_header_len(&bytes);

        let mut ok = decoder_for(&p, v, d, u32::try_from(s).unwrap());
        let mut buf = BytesMut::from(&bytes[..]);
        let back = ok.decode(&mut buf).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&p));
        prop_assert!(buf.is_empty());

        let max = u32::try_from(s - 1).unwrap();
        let mut small = decoder_for(&p, v, d, max);
        // The first byte alone does not tell the size yet.
        let mut buf = BytesMut::from(&bytes[..1]);
        prop_assert_eq!(small.decode(&mut buf).unwrap(), None);
        prop_assert_eq!(small.needed(), 1);
        // The rest of the fixed header does.
        buf.extend_from_slice(&bytes[1..header]);
        prop_assert_eq!(small.decode(&mut buf), Err(Error::PacketTooLarge { size: s, max }));
        prop_assert_eq!(buf.len(), header);
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// PUBLISH packets with a four-byte remaining length (2,097,152 bytes and more): round
    /// trip, length, size limit and zero-copy at the top of the Variable Byte Integer range.
    #[test]
    fn four_byte_remaining_length(
        (v, d, mut p) in (version(), dir()).prop_flat_map(|(v, d)| (Just(v), Just(d), publish(v, d))),
        (byte, len) in (any::<u8>(), 2_097_152usize..=2_097_400),
    ) {
        p.payload = Bytes::from(vec![byte; len]);
        let packet = Packet::Publish(p);
        let mut buf = encode(&packet, v);
        let s = buf.len();
        prop_assert_eq!(packet.encoded_len(v).unwrap(), s);
        prop_assert_eq!(fixed_header_len(&buf), 5);

        let max = u32::try_from(s - 1).unwrap();
        let mut small = Decoder::resume(d.role(), v, max);
        let mut head = BytesMut::from(&buf[..5]);
        prop_assert_eq!(small.decode(&mut head), Err(Error::PacketTooLarge { size: s, max }));

        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + s;
        let mut dec = Decoder::resume(d.role(), v, u32::try_from(s).unwrap());
        let back = dec.decode(&mut buf).unwrap();
        prop_assert!(buf.is_empty());
        let Some(Packet::Publish(back)) = back else { panic!("not a PUBLISH") };
        prop_assert!(in_range(&range, &back.payload), "payload copied");
        prop_assert_eq!(Packet::Publish(back), packet);
    }
}
