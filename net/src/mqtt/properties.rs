//! MQTT 5 properties (2.2.2): one struct per packet, so a packet can only hold the properties
//! the specification allows on it.
//!
//! Decoding goes through one loop ([`read_properties`]) that checks the identifier, whether it
//! may appear in this packet, duplicates and the value rules; each struct then only assigns
//! fields. Encoding goes through one visitor per struct ([`Props::visit`]) that is run twice,
//! once to count and once to write, so the length and the bytes cannot disagree. Properties are
//! written in ascending identifier order.

use bytes::{BufMut, Bytes};

use super::error::{EncodeError, Error, Malformed, ProtocolError};
use super::packet::{PacketType, QoS};
use super::primitives::{MqttStr, Reader, check_len, put_binary, put_varint, varint_len};

/// A User Property (0x26): a name/value pair, which may repeat and keeps its order.
pub type UserProperty = (MqttStr, MqttStr);

/// The property identifiers of MQTT 5 (2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// Where a property block sits: a packet, or the will properties of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Packet(PacketType),
    Will,
}

impl Ctx {
    fn packet(self) -> PacketType {
        match self {
            Ctx::Packet(p) => p,
            Ctx::Will => PacketType::Connect,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    U16,
    U32,
    VarInt,
    Str,
    Bin,
    Pair,
}

impl PropertyId {
    fn from_u32(v: u32) -> Option<Self> {
        use PropertyId::*;
        Some(match v {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQoS,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    fn kind(self) -> Kind {
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | RequestProblemInformation
            | RequestResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => Kind::Byte,
            ServerKeepAlive | ReceiveMaximum | TopicAliasMaximum | TopicAlias => Kind::U16,
            MessageExpiryInterval
            | SessionExpiryInterval
            | WillDelayInterval
            | MaximumPacketSize => Kind::U32,
            SubscriptionIdentifier => Kind::VarInt,
            ContentType
            | ResponseTopic
            | AssignedClientIdentifier
            | AuthenticationMethod
            | ResponseInformation
            | ServerReference
            | ReasonString => Kind::Str,
            CorrelationData | AuthenticationData => Kind::Bin,
            UserProperty => Kind::Pair,
        }
    }

    /// The table of 2.2.2.2: which packets may carry this property.
    fn allowed_in(self, ctx: Ctx) -> bool {
        use PacketType as P;
        use PropertyId::*;
        let Ctx::Packet(p) = ctx else {
            return matches!(
                self,
                PayloadFormatIndicator
                    | MessageExpiryInterval
                    | ContentType
                    | ResponseTopic
                    | CorrelationData
                    | WillDelayInterval
                    | UserProperty
            );
        };
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData
            | TopicAlias => p == P::Publish,
            SubscriptionIdentifier => matches!(p, P::Publish | P::Subscribe),
            SessionExpiryInterval => matches!(p, P::Connect | P::ConnAck | P::Disconnect),
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQoS
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => p == P::ConnAck,
            AuthenticationMethod | AuthenticationData => {
                matches!(p, P::Connect | P::ConnAck | P::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => p == P::Connect,
            WillDelayInterval => false,
            ServerReference => matches!(p, P::ConnAck | P::Disconnect),
            ReasonString => !matches!(
                p,
                P::Connect | P::Publish | P::Subscribe | P::Unsubscribe | P::PingReq | P::PingResp
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(p, P::Connect | P::ConnAck)
            }
            UserProperty => !matches!(p, P::PingReq | P::PingResp),
        }
    }

    fn repeatable(self, ctx: Ctx) -> bool {
        self == PropertyId::UserProperty
            || (self == PropertyId::SubscriptionIdentifier
                && ctx == Ctx::Packet(PacketType::Publish))
    }

    /// The statement a forbidden value breaks.
    pub(crate) fn value_rule(self) -> &'static str {
        use PropertyId::*;
        match self {
            ReceiveMaximum => "MQTT-3.1.2.11.3 / 3.2.2.3.3 (Receive Maximum 0)",
            MaximumPacketSize => "MQTT-3.1.2.11.4 / 3.2.2.3.6 (Maximum Packet Size 0)",
            TopicAlias => "MQTT-3.3.2.3.4 (Topic Alias 0)",
            SubscriptionIdentifier => "MQTT-3.8.2.1.2 (Subscription Identifier 0)",
            MaximumQoS => "MQTT-3.2.2.3.4 (Maximum QoS not 0 or 1)",
            _ => "MQTT-2.2.2.2 (byte property not 0 or 1)",
        }
    }
}

/// A decoded property value; its variant follows from the identifier.
pub(crate) enum Value {
    Int(u32),
    Str(MqttStr),
    Bin(Bytes),
    Pair(MqttStr, MqttStr),
}

/// Reads a property block (length, then properties) and hands each property to `set`.
fn read_properties(
    r: &mut Reader,
    ctx: Ctx,
    mut set: impl FnMut(PropertyId, Value) -> Option<()>,
) -> Result<(), Error> {
    let len = r.read_varint("property length")? as usize;
    let mut p = r.sub_reader(len, "properties")?;
    let mut seen = 0u64;
    while !p.is_empty() {
        let raw = p.read_varint("property identifier")?;
        let id = PropertyId::from_u32(raw).ok_or(Malformed::UnknownProperty(raw))?;
        if !id.allowed_in(ctx) {
            return Err(Malformed::PropertyNotAllowed {
                property: id,
                packet: ctx.packet(),
            }
            .into());
        }
        let bit = 1u64 << (id as u8);
        if seen & bit != 0 && !id.repeatable(ctx) {
            return Err(Error::Protocol(ProtocolError::DuplicateProperty(id)));
        }
        seen |= bit;
        let value = match id.kind() {
            Kind::Byte => Value::Int(u32::from(p.read_u8("property")?)),
            Kind::U16 => Value::Int(u32::from(p.read_u16("property")?)),
            Kind::U32 => Value::Int(p.read_u32("property")?),
            Kind::VarInt => Value::Int(p.read_varint("subscription identifier")?),
            Kind::Str => Value::Str(p.read_str("property")?),
            Kind::Bin => Value::Bin(p.read_binary("property")?),
            Kind::Pair => Value::Pair(p.read_str("user property")?, p.read_str("user property")?),
        };
        if let Value::Int(v) = value {
            check_value(id, v)?;
        }
        // `set` only fails if the allowed-table and the struct disagree, which the unit tests
        // rule out; answer with the same error as a disallowed property rather than panic.
        set(id, value).ok_or(Malformed::PropertyNotAllowed {
            property: id,
            packet: ctx.packet(),
        })?;
    }
    Ok(())
}

fn check_value(id: PropertyId, v: u32) -> Result<(), Error> {
    use PropertyId::*;
    let bad = match id {
        ReceiveMaximum | MaximumPacketSize | TopicAlias | SubscriptionIdentifier => v == 0,
        PayloadFormatIndicator
        | RequestProblemInformation
        | RequestResponseInformation
        | MaximumQoS
        | RetainAvailable
        | WildcardSubscriptionAvailable
        | SubscriptionIdentifierAvailable
        | SharedSubscriptionAvailable => v > 1,
        _ => false,
    };
    if bad {
        return Err(Error::Protocol(ProtocolError::InvalidPropertyValue {
            property: id,
            value: v,
        }));
    }
    Ok(())
}

/// What [`Props::visit`] writes to: a counter or a buffer.
pub(crate) trait Sink {
    fn int(&mut self, id: PropertyId, v: u32);
    fn bytes(&mut self, id: PropertyId, v: &[u8]);
    fn pair(&mut self, id: PropertyId, k: &str, v: &str);
}

/// Counts the encoded size of a property block and checks field lengths.
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) len: usize,
    pub(crate) err: Option<EncodeError>,
}

impl Counter {
    fn field(&mut self, b: &[u8]) -> usize {
        match check_len(b, "property") {
            Ok(n) => n,
            Err(e) => {
                self.err.get_or_insert(e);
                0
            }
        }
    }
}

impl Sink for Counter {
    fn int(&mut self, id: PropertyId, v: u32) {
        self.len += 1 + int_len(id, v);
        if id == PropertyId::SubscriptionIdentifier && !(1..=268_435_455).contains(&v) {
            self.err
                .get_or_insert(EncodeError::InvalidValue("subscription identifier"));
        }
    }
    fn bytes(&mut self, _: PropertyId, v: &[u8]) {
        self.len += 1 + self.field(v);
    }
    fn pair(&mut self, _: PropertyId, k: &str, v: &str) {
        self.len += 1 + self.field(k.as_bytes()) + self.field(v.as_bytes());
    }
}

fn int_len(id: PropertyId, v: u32) -> usize {
    match id.kind() {
        Kind::Byte => 1,
        Kind::U16 => 2,
        Kind::U32 => 4,
        _ => varint_len(v as usize),
    }
}

/// Writes properties into a buffer.
pub(crate) struct Writer<'a, B>(pub(crate) &'a mut B);

impl<B: BufMut> Sink for Writer<'_, B> {
    fn int(&mut self, id: PropertyId, v: u32) {
        self.0.put_u8(id as u8);
        match id.kind() {
            Kind::Byte => self.0.put_u8(v as u8),
            Kind::U16 => self.0.put_u16(v as u16),
            Kind::U32 => self.0.put_u32(v),
            _ => put_varint(self.0, v as usize),
        }
    }
    fn bytes(&mut self, id: PropertyId, v: &[u8]) {
        self.0.put_u8(id as u8);
        put_binary(self.0, v);
    }
    fn pair(&mut self, id: PropertyId, k: &str, v: &str) {
        self.0.put_u8(id as u8);
        put_binary(self.0, k.as_bytes());
        put_binary(self.0, v.as_bytes());
    }
}

/// A property block of one packet type.
pub(crate) trait Props: Sized + Default {
    const CTX: Ctx;

    /// Calls the sink for every property present, in ascending identifier order.
    fn visit(&self, s: &mut impl Sink);

    fn set(&mut self, id: PropertyId, v: Value) -> Option<()>;

    fn decode(r: &mut Reader) -> Result<Self, Error> {
        Self::decode_in(r, Self::CTX)
    }

    /// Decodes in the context of another packet with the same property set (the acks).
    fn decode_in(r: &mut Reader, ctx: Ctx) -> Result<Self, Error> {
        let mut props = Self::default();
        read_properties(r, ctx, |id, v| props.set(id, v))?;
        Ok(props)
    }

    /// Length of the properties without the length prefix.
    fn content_len(&self) -> Result<usize, EncodeError> {
        let mut c = Counter::default();
        self.visit(&mut c);
        match c.err {
            Some(e) => Err(e),
            None => Ok(c.len),
        }
    }

    /// Length including the Variable Byte Integer length prefix.
    fn encoded_len(&self) -> Result<usize, EncodeError> {
        let n = self.content_len()?;
        Ok(varint_len(n) + n)
    }

    /// Writes the length prefix and the properties; `content_len` comes from
    /// [`Props::content_len`].
    fn write(&self, content_len: usize, buf: &mut impl BufMut) {
        put_varint(buf, content_len);
        self.visit(&mut Writer(buf));
    }
}

fn opt_int(s: &mut impl Sink, id: PropertyId, v: Option<u32>) {
    if let Some(v) = v {
        s.int(id, v);
    }
}

fn opt_bool(s: &mut impl Sink, id: PropertyId, v: Option<bool>) {
    opt_int(s, id, v.map(u32::from));
}

fn opt_str(s: &mut impl Sink, id: PropertyId, v: &Option<MqttStr>) {
    if let Some(v) = v {
        s.bytes(id, v.as_bytes());
    }
}

fn opt_bin(s: &mut impl Sink, id: PropertyId, v: &Option<Bytes>) {
    if let Some(v) = v {
        s.bytes(id, v);
    }
}

fn users(s: &mut impl Sink, v: &[UserProperty]) {
    for (k, v) in v {
        s.pair(PropertyId::UserProperty, k, v);
    }
}

impl Value {
    fn int(self) -> Option<u32> {
        match self {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
    fn u16(self) -> Option<u16> {
        self.int().and_then(|v| u16::try_from(v).ok())
    }
    fn bool(self) -> Option<bool> {
        self.int().map(|v| v == 1)
    }
    fn str(self) -> Option<MqttStr> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn bin(self) -> Option<Bytes> {
        match self {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }
    fn pair(self) -> Option<UserProperty> {
        match self {
            Value::Pair(k, v) => Some((k, v)),
            _ => None,
        }
    }
}

/// Declares a property struct: its fields, and which identifier each maps to, in ascending
/// identifier order. Field kinds: `int` (u32), `u16`, `bool`, `qos`, `str`, `bin`, `users`,
/// `ints` (repeated varint).
macro_rules! props {
    (
        $(#[$meta:meta])*
        $name:ident, $ctx:expr, {
            $($(#[$fmeta:meta])* $field:ident: $kind:ident = $id:ident,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            $($(#[$fmeta])* pub $field: props!(@ty $kind),)*
        }

        impl Props for $name {
            const CTX: Ctx = $ctx;

            fn visit(&self, s: &mut impl Sink) {
                $(props!(@visit s, self.$field, $kind, PropertyId::$id);)*
            }

            fn set(&mut self, id: PropertyId, v: Value) -> Option<()> {
                match id {
                    $(PropertyId::$id => props!(@set self.$field, $kind, v),)*
                    #[allow(unreachable_patterns)]
                    _ => return None,
                }
                Some(())
            }
        }

        impl $name {
            /// `true` when no property is set.
            pub fn is_empty(&self) -> bool {
                *self == Self::default()
            }
        }
    };
    (@ty int) => { Option<u32> };
    (@ty u16) => { Option<u16> };
    (@ty bool) => { Option<bool> };
    (@ty qos) => { Option<QoS> };
    (@ty str) => { Option<MqttStr> };
    (@ty bin) => { Option<Bytes> };
    (@ty users) => { Vec<UserProperty> };
    (@ty ints) => { Vec<u32> };
    (@visit $s:ident, $f:expr, int, $id:expr) => { opt_int($s, $id, $f) };
    (@visit $s:ident, $f:expr, u16, $id:expr) => { opt_int($s, $id, $f.map(u32::from)) };
    (@visit $s:ident, $f:expr, bool, $id:expr) => { opt_bool($s, $id, $f) };
    (@visit $s:ident, $f:expr, qos, $id:expr) => { opt_int($s, $id, $f.map(|q| q as u32)) };
    (@visit $s:ident, $f:expr, str, $id:expr) => { opt_str($s, $id, &$f) };
    (@visit $s:ident, $f:expr, bin, $id:expr) => { opt_bin($s, $id, &$f) };
    (@visit $s:ident, $f:expr, users, $id:expr) => { users($s, &$f) };
    (@visit $s:ident, $f:expr, ints, $id:expr) => { for v in &$f { $s.int($id, *v) } };
    (@set $f:expr, int, $v:ident) => { $f = Some($v.int()?) };
    (@set $f:expr, u16, $v:ident) => { $f = Some($v.u16()?) };
    (@set $f:expr, bool, $v:ident) => { $f = Some($v.bool()?) };
    (@set $f:expr, qos, $v:ident) => { $f = Some(QoS::from_u8($v.int()? as u8)?) };
    (@set $f:expr, str, $v:ident) => { $f = Some($v.str()?) };
    (@set $f:expr, bin, $v:ident) => { $f = Some($v.bin()?) };
    (@set $f:expr, users, $v:ident) => { $f.push($v.pair()?) };
    (@set $f:expr, ints, $v:ident) => { $f.push($v.int()?) };
}

props! {
    /// CONNECT properties (3.1.2.11).
    ConnectProperties, Ctx::Packet(PacketType::Connect), {
        session_expiry_interval: int = SessionExpiryInterval,
        authentication_method: str = AuthenticationMethod,
        authentication_data: bin = AuthenticationData,
        request_problem_information: bool = RequestProblemInformation,
        request_response_information: bool = RequestResponseInformation,
        receive_maximum: u16 = ReceiveMaximum,
        topic_alias_maximum: u16 = TopicAliasMaximum,
        user_properties: users = UserProperty,
        maximum_packet_size: int = MaximumPacketSize,
    }
}

props! {
    /// Will properties (3.1.3.2).
    WillProperties, Ctx::Will, {
        payload_format_indicator: bool = PayloadFormatIndicator,
        message_expiry_interval: int = MessageExpiryInterval,
        content_type: str = ContentType,
        response_topic: str = ResponseTopic,
        correlation_data: bin = CorrelationData,
        will_delay_interval: int = WillDelayInterval,
        user_properties: users = UserProperty,
    }
}

props! {
    /// CONNACK properties (3.2.2.3).
    ConnAckProperties, Ctx::Packet(PacketType::ConnAck), {
        session_expiry_interval: int = SessionExpiryInterval,
        assigned_client_identifier: str = AssignedClientIdentifier,
        server_keep_alive: u16 = ServerKeepAlive,
        authentication_method: str = AuthenticationMethod,
        authentication_data: bin = AuthenticationData,
        response_information: str = ResponseInformation,
        server_reference: str = ServerReference,
        reason_string: str = ReasonString,
        receive_maximum: u16 = ReceiveMaximum,
        topic_alias_maximum: u16 = TopicAliasMaximum,
        maximum_qos: qos = MaximumQoS,
        retain_available: bool = RetainAvailable,
        user_properties: users = UserProperty,
        maximum_packet_size: int = MaximumPacketSize,
        wildcard_subscription_available: bool = WildcardSubscriptionAvailable,
        subscription_identifiers_available: bool = SubscriptionIdentifierAvailable,
        shared_subscription_available: bool = SharedSubscriptionAvailable,
    }
}

props! {
    /// PUBLISH properties (3.3.2.3).
    PublishProperties, Ctx::Packet(PacketType::Publish), {
        payload_format_indicator: bool = PayloadFormatIndicator,
        message_expiry_interval: int = MessageExpiryInterval,
        content_type: str = ContentType,
        response_topic: str = ResponseTopic,
        correlation_data: bin = CorrelationData,
        /// Present only on PUBLISH from server to client ([MQTT-3.3.4-6]).
        subscription_identifiers: ints = SubscriptionIdentifier,
        topic_alias: u16 = TopicAlias,
        user_properties: users = UserProperty,
    }
}

props! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties, Ctx::Packet(PacketType::PubAck), {
        reason_string: str = ReasonString,
        user_properties: users = UserProperty,
    }
}

props! {
    /// SUBSCRIBE properties (3.8.2.1).
    SubscribeProperties, Ctx::Packet(PacketType::Subscribe), {
        subscription_identifier: int = SubscriptionIdentifier,
        user_properties: users = UserProperty,
    }
}

props! {
    /// UNSUBSCRIBE properties (3.10.2.1).
    UnsubscribeProperties, Ctx::Packet(PacketType::Unsubscribe), {
        user_properties: users = UserProperty,
    }
}

props! {
    /// DISCONNECT properties (3.14.2.2).
    DisconnectProperties, Ctx::Packet(PacketType::Disconnect), {
        session_expiry_interval: int = SessionExpiryInterval,
        server_reference: str = ServerReference,
        reason_string: str = ReasonString,
        user_properties: users = UserProperty,
    }
}

props! {
    /// AUTH properties (3.15.2.2).
    AuthProperties, Ctx::Packet(PacketType::Auth), {
        authentication_method: str = AuthenticationMethod,
        authentication_data: bin = AuthenticationData,
        reason_string: str = ReasonString,
        user_properties: users = UserProperty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PropertyId; 27] = {
        use PropertyId::*;
        [
            PayloadFormatIndicator,
            MessageExpiryInterval,
            ContentType,
            ResponseTopic,
            CorrelationData,
            SubscriptionIdentifier,
            SessionExpiryInterval,
            AssignedClientIdentifier,
            ServerKeepAlive,
            AuthenticationMethod,
            AuthenticationData,
            RequestProblemInformation,
            WillDelayInterval,
            RequestResponseInformation,
            ResponseInformation,
            ServerReference,
            ReasonString,
            ReceiveMaximum,
            TopicAliasMaximum,
            TopicAlias,
            MaximumQoS,
            RetainAvailable,
            UserProperty,
            MaximumPacketSize,
            WildcardSubscriptionAvailable,
            SubscriptionIdentifierAvailable,
            SharedSubscriptionAvailable,
        ]
    };

    fn sample(id: PropertyId) -> Value {
        match id.kind() {
            Kind::Byte | Kind::U16 | Kind::U32 | Kind::VarInt => Value::Int(1),
            Kind::Str => Value::Str(MqttStr::from_static("s")),
            Kind::Bin => Value::Bin(Bytes::from_static(b"b")),
            Kind::Pair => Value::Pair(MqttStr::from_static("k"), MqttStr::from_static("v")),
        }
    }

    /// Every property the allowed-table admits for a struct's context is a field of that
    /// struct, and no other: the table and the structs cannot drift apart.
    fn check<P: Props>() {
        for id in ALL {
            let accepted = P::default().set(id, sample(id)).is_some();
            assert_eq!(accepted, id.allowed_in(P::CTX), "{id:?} in {:?}", P::CTX);
        }
    }

    #[test]
    fn structs_match_the_table() {
        check::<ConnectProperties>();
        check::<WillProperties>();
        check::<ConnAckProperties>();
        check::<PublishProperties>();
        check::<AckProperties>();
        check::<SubscribeProperties>();
        check::<UnsubscribeProperties>();
        check::<DisconnectProperties>();
        check::<AuthProperties>();
    }

    #[test]
    fn ack_properties_fit_every_ack() {
        for p in [
            PacketType::PubAck,
            PacketType::PubRec,
            PacketType::PubRel,
            PacketType::PubComp,
            PacketType::SubAck,
            PacketType::UnsubAck,
        ] {
            for id in ALL {
                assert_eq!(
                    id.allowed_in(Ctx::Packet(p)),
                    id.allowed_in(AckProperties::CTX),
                    "{id:?} in {p:?}"
                );
            }
        }
    }

    #[test]
    fn round_trip_all_connack_properties() {
        let props = ConnAckProperties {
            session_expiry_interval: Some(7),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(60),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(&[1, 2])),
            response_information: Some("ri".into()),
            server_reference: Some("other".into()),
            reason_string: Some("why".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            maximum_packet_size: Some(1024),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
        };
        let n = props.content_len().unwrap();
        let mut buf = Vec::new();
        props.write(n, &mut buf);
        assert_eq!(buf.len(), props.encoded_len().unwrap());
        let back = ConnAckProperties::decode(&mut Reader::new(Bytes::from(buf))).unwrap();
        assert_eq!(back, props);
    }
}
