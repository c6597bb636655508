//! PUBLISH (3.3): decoding, encoding, and the fan-out encoder that writes one message to many
//! receivers without re-encoding what they share.

use bytes::{BufMut, Bytes, BytesMut};

use super::MAX_REMAINING_LENGTH;
use super::decoder::Role;
use super::error::{EncodeError, Error, Malformed, ProtocolError};
use super::packet::{PacketType, ProtocolVersion, QoS};
use super::primitives::{MqttStr, Reader, check_len, put_str, put_varint, varint_len};
use super::properties::{Counter, PropertyId, Props, PublishProperties, Sink, Writer};
use super::topic;

/// PUBLISH (3.3). The topic and payload are slices of the received packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name; empty only in v5 when a Topic Alias is present.
    pub topic: MqttStr,
    /// Packet Identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: PublishProperties,
    /// Application message.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 message.
    pub fn new(topic: impl Into<MqttStr>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    pub(crate) fn header_flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        v: ProtocolVersion,
        role: Role,
    ) -> Result<Self, Error> {
        let qos_bits = (flags >> 1) & 0x03;
        let qos = QoS::from_u8(qos_bits).ok_or(Malformed::InvalidQoS(qos_bits))?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(Malformed::DupOnQoS0.into());
        }
        let topic = r.read_str("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let id = r.read_u16("packet identifier")?;
            if id == 0 {
                return Err(Malformed::ZeroPacketId(PacketType::Publish).into());
            }
            id
        };
        let properties = if v == ProtocolVersion::V5 {
            PublishProperties::decode(r)?
        } else {
            Default::default()
        };
        if topic.is_empty() {
            if v != ProtocolVersion::V5 {
                return Err(Error::TopicName(topic::TopicError::Empty));
            }
            if properties.topic_alias.is_none() {
                return Err(Error::Protocol(ProtocolError::EmptyTopicWithoutAlias));
            }
        } else {
            topic::validate_topic_name(&topic).map_err(Error::TopicName)?;
        }
        if let Some(t) = &properties.response_topic {
            topic::validate_topic_name(t).map_err(Error::TopicName)?;
        }
        if role == Role::Server && !properties.subscription_identifiers.is_empty() {
            return Err(Error::Protocol(ProtocolError::SubscriptionIdFromClient));
        }
        Ok(Self {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.read_rest(),
        })
    }

    fn check(&self) -> Result<usize, EncodeError> {
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::Publish));
        }
        let id = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        Ok(check_len(self.topic.as_bytes(), "topic name")? + id)
    }

    pub(crate) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        let mut n = self.check()? + self.payload.len();
        if v == ProtocolVersion::V5 {
            n += self.properties.encoded_len()?;
        }
        Ok(n)
    }

    pub(crate) fn write_body(&self, v: ProtocolVersion, buf: &mut BytesMut) {
        put_str(buf, &self.topic);
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.packet_id);
        }
        if v == ProtocolVersion::V5 {
            let n = self.properties.content_len().unwrap_or(0);
            self.properties.write(n, buf);
        }
        buf.put_slice(&self.payload);
    }
}

/// The properties every receiver shares, in three parts that sit between the per-receiver
/// ones in ascending identifier order: 0 = payload format, 1 = content type, response topic,
/// correlation data, 2 = user properties.
fn shared_part(p: &PublishProperties, part: u8, s: &mut impl Sink) {
    match part {
        0 => {
            if let Some(v) = p.payload_format_indicator {
                s.int(PropertyId::PayloadFormatIndicator, u32::from(v));
            }
        }
        1 => {
            if let Some(v) = &p.content_type {
                s.bytes(PropertyId::ContentType, v.as_bytes());
            }
            if let Some(v) = &p.response_topic {
                s.bytes(PropertyId::ResponseTopic, v.as_bytes());
            }
            if let Some(v) = &p.correlation_data {
                s.bytes(PropertyId::CorrelationData, v);
            }
        }
        _ => {
            for (k, v) in &p.user_properties {
                s.pair(PropertyId::UserProperty, k, v);
            }
        }
    }
}

/// What differs between the copies of one message delivered to different receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// QoS of this delivery: the minimum of the message's and the subscription's.
    pub qos: QoS,
    /// DUP flag (a retransmission).
    pub dup: bool,
    /// RETAIN flag as delivered (retain-as-published, or a retained message on subscribe).
    pub retain: bool,
    /// Packet Identifier; 0 for QoS 0.
    pub packet_id: u16,
    /// Topic Alias to send (v5).
    pub topic_alias: Option<u16>,
    /// Send an empty topic name: the receiver already knows the alias.
    pub omit_topic: bool,
    /// Subscription Identifiers of the matching subscriptions (v5).
    pub subscription_ids: &'a [u32],
    /// Message Expiry Interval to send: the remaining lifetime (v5).
    pub message_expiry_interval: Option<u32>,
}

impl<'a> Delivery<'a> {
    /// The per-receiver fields exactly as they are in `publish`.
    pub fn of(publish: &'a Publish) -> Self {
        Self {
            qos: publish.qos,
            dup: publish.dup,
            retain: publish.retain,
            packet_id: publish.packet_id,
            topic_alias: publish.properties.topic_alias,
            omit_topic: publish.topic.is_empty(),
            subscription_ids: &publish.properties.subscription_identifiers,
            message_expiry_interval: publish.properties.message_expiry_interval,
        }
    }
}

/// Encodes one message for many receivers.
///
/// [`PublishEncoder::new`] encodes the properties every receiver shares once, in three slices
/// that interleave with the per-receiver ones so that the result is byte-identical to
/// [`super::Packet::encode`] (properties in ascending identifier order).
/// [`PublishEncoder::encode_head`] then writes everything but the payload for one receiver,
/// a few dozen bytes, and the caller either appends the payload or hands the shared
/// [`PublishEncoder::payload`] to a vectored write: the payload is never copied or re-encoded.
#[derive(Debug, Clone)]
pub struct PublishEncoder {
    version: ProtocolVersion,
    topic: MqttStr,
    /// Shared properties, encoded: `[0x01][0x03 0x08 0x09][0x26...]`.
    shared: Bytes,
    /// End of the Payload Format Indicator part and of the content type..correlation part.
    split: [usize; 2],
    payload: Bytes,
}

impl PublishEncoder {
    /// Prepares `publish` for `version`. The per-receiver fields of `publish` (QoS, flags,
    /// packet id, alias, subscription ids, expiry) are ignored; they come with each
    /// [`Delivery`].
    pub fn new(publish: &Publish, version: ProtocolVersion) -> Result<Self, EncodeError> {
        check_len(publish.topic.as_bytes(), "topic name")?;
        let mut shared = BytesMut::new();
        let mut split = [0; 2];
        if version == ProtocolVersion::V5 {
            let p = &publish.properties;
            // Validate every length once, here, rather than per receiver.
            let mut c = Counter::default();
            for part in 0..3 {
                shared_part(p, part, &mut c);
            }
            if let Some(e) = c.err {
                return Err(e);
            }
            shared.reserve(c.len);
            shared_part(p, 0, &mut Writer(&mut shared));
            split[0] = shared.len();
            shared_part(p, 1, &mut Writer(&mut shared));
            split[1] = shared.len();
            shared_part(p, 2, &mut Writer(&mut shared));
        }
        Ok(Self {
            version,
            topic: publish.topic.clone(),
            shared: shared.freeze(),
            split,
            payload: publish.payload.clone(),
        })
    }

    /// The payload, to append or to pass to a vectored write after [`Self::encode_head`].
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The size of the whole packet for this delivery, to compare with the receiver's
    /// Maximum Packet Size before encoding.
    pub fn encoded_len(&self, d: &Delivery<'_>) -> Result<usize, EncodeError> {
        let (body, _) = self.body_len(d)?;
        Ok(1 + varint_len(body) + body)
    }

    /// Writes the fixed header and variable header for one receiver: everything but the
    /// payload, which follows immediately on the wire.
    pub fn encode_head(&self, d: &Delivery<'_>, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let (body, props) = self.body_len(d)?;
        buf.reserve(1 + varint_len(body) + body - self.payload.len());
        let flags = (u8::from(d.dup) << 3) | ((d.qos as u8) << 1) | u8::from(d.retain);
        buf.put_u8(((PacketType::Publish as u8) << 4) | flags);
        put_varint(buf, body);
        put_str(buf, if d.omit_topic { "" } else { &self.topic });
        if d.qos != QoS::AtMostOnce {
            buf.put_u16(d.packet_id);
        }
        if self.version == ProtocolVersion::V5 {
            put_varint(buf, props);
            let s = &self.shared;
            buf.put_slice(&s[..self.split[0]]);
            let mut w = Writer(buf);
            if let Some(e) = d.message_expiry_interval {
                w.int(PropertyId::MessageExpiryInterval, e);
            }
            w.0.put_slice(&s[self.split[0]..self.split[1]]);
            for id in d.subscription_ids {
                w.int(PropertyId::SubscriptionIdentifier, *id);
            }
            if let Some(a) = d.topic_alias {
                w.int(PropertyId::TopicAlias, u32::from(a));
            }
            w.0.put_slice(&s[self.split[1]..]);
        }
        Ok(())
    }

    /// Writes the whole packet for one receiver, payload included (one copy of the payload
    /// into `buf`).
    pub fn encode(&self, d: &Delivery<'_>, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_head(d, buf)?;
        buf.put_slice(&self.payload);
        Ok(())
    }

    /// (remaining length, property content length).
    fn body_len(&self, d: &Delivery<'_>) -> Result<(usize, usize), EncodeError> {
        if d.qos != QoS::AtMostOnce && d.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId(PacketType::Publish));
        }
        let topic = if d.omit_topic { 0 } else { self.topic.len() };
        let mut n = 2 + topic + if d.qos == QoS::AtMostOnce { 0 } else { 2 };
        let mut props = 0;
        if self.version == ProtocolVersion::V5 {
            let mut c = Counter {
                len: self.shared.len(),
                err: None,
            };
            if let Some(e) = d.message_expiry_interval {
                c.int(PropertyId::MessageExpiryInterval, e);
            }
            for id in d.subscription_ids {
                c.int(PropertyId::SubscriptionIdentifier, *id);
            }
            if let Some(a) = d.topic_alias {
                c.int(PropertyId::TopicAlias, u32::from(a));
            }
            if let Some(e) = c.err {
                return Err(e);
            }
            props = c.len;
            n += varint_len(props) + props;
        }
        n += self.payload.len();
        if n > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge(n));
        }
        Ok((n, props))
    }
}
