//! Messages as they travel between sessions and shards.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use net::mqtt::{
    EncodeError, MqttStr, ProtocolVersion, Publish, PublishEncoder, PublishProperties, QoS,
};

use crate::slab::Key;

/// Where a message was published: the shard and the publisher's session, for No Local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Shard of the publishing connection.
    pub shard: u16,
    /// The publisher's session on that shard.
    pub session: Key,
}

/// An application message after it was accepted from a publisher. Shared by every shard and
/// session it goes to (`Arc`); the payload is the `Bytes` slice of the publisher's read buffer,
/// never copied. The parts of the PUBLISH every receiver shares are encoded once, here.
#[derive(Debug)]
pub struct Message {
    /// Unique in the process: the publishing shard in the top 16 bits, a sequence below.
    pub id: u64,
    /// Topic name (after topic alias resolution).
    pub topic: MqttStr,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// Payload.
    pub payload: Bytes,
    /// When the Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// When the broker accepted it (the shard's clock when it read the PUBLISH, or when a will
    /// or delayed publish came due), for the publish-to-deliver latency; `None` for messages
    /// whose deliveries it should not measure (a retained message delivered to a new
    /// subscription, a message recovered from the log).
    pub received_at: Option<Instant>,
    /// Publisher.
    pub origin: Origin,
    /// Payload Format Indicator, Content Type, Response Topic, Correlation Data, User
    /// Properties as published (Topic Alias and Subscription Identifiers removed).
    pub properties: PublishProperties,
    v3: PublishEncoder,
    v5: PublishEncoder,
}

impl Message {
    /// Builds the shared message from a received PUBLISH whose topic alias is resolved.
    pub fn new(
        id: u64,
        mut publish: Publish,
        origin: Origin,
        now: Instant,
    ) -> Result<Arc<Self>, EncodeError> {
        publish.properties.topic_alias = None;
        publish.properties.subscription_identifiers.clear();
        let expires_at = publish
            .properties
            .message_expiry_interval
            .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
        let v3 = PublishEncoder::new(&publish, ProtocolVersion::V3_1_1)?;
        let v5 = PublishEncoder::new(&publish, ProtocolVersion::V5)?;
        Ok(Arc::new(Self {
            id,
            topic: publish.topic,
            qos: publish.qos,
            retain: publish.retain,
            payload: publish.payload,
            expires_at,
            received_at: Some(now),
            origin,
            properties: publish.properties,
            v3,
            v5,
        }))
    }

    /// The fan-out encoder for a receiver speaking `version`.
    pub fn encoder(&self, version: ProtocolVersion) -> &PublishEncoder {
        match version {
            ProtocolVersion::V5 => &self.v5,
            _ => &self.v3,
        }
    }

    /// The Message Expiry Interval to send now: `Ok(None)` if the message has none,
    /// `Err(())` if it has expired (3.3.2.3.3: the remaining lifetime, rounded up).
    #[allow(clippy::result_unit_err)]
    pub fn remaining_expiry(&self, now: Instant) -> Result<Option<u32>, ()> {
        match self.expires_at {
            None => Ok(None),
            Some(at) if at <= now => Err(()),
            Some(at) => {
                let left = at - now;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Ok(Some(u32::try_from(secs).unwrap_or(u32::MAX)))
            }
        }
    }
}

impl Message {
    /// A copy whose topic, payload and properties have allocations of their own, for messages
    /// kept long (retained): a slice of the publisher's read buffer would pin that buffer.
    /// Everything else, the expiry deadline included, is unchanged, but for `received_at`
    /// (`None`: the copy's deliveries, to later subscriptions, are not publish-to-deliver
    /// latencies).
    pub fn detached(&self) -> Result<Arc<Self>, EncodeError> {
        let own = |s: &MqttStr| MqttStr::from(s.as_str().to_owned());
        let mut p = Publish::new(own(&self.topic), Bytes::copy_from_slice(&self.payload));
        p.qos = self.qos;
        p.retain = self.retain;
        let src = &self.properties;
        let props = &mut p.properties;
        props.payload_format_indicator = src.payload_format_indicator;
        props.message_expiry_interval = src.message_expiry_interval;
        props.content_type = src.content_type.as_ref().map(own);
        props.response_topic = src.response_topic.as_ref().map(own);
        props.correlation_data = src
            .correlation_data
            .as_ref()
            .map(|b| Bytes::copy_from_slice(b));
        props.user_properties = src
            .user_properties
            .iter()
            .map(|(k, v)| (own(k), own(v)))
            .collect();
        let v3 = PublishEncoder::new(&p, ProtocolVersion::V3_1_1)?;
        let v5 = PublishEncoder::new(&p, ProtocolVersion::V5)?;
        Ok(Arc::new(Self {
            id: self.id,
            topic: p.topic,
            qos: p.qos,
            retain: p.retain,
            payload: p.payload,
            expires_at: self.expires_at,
            received_at: None,
            origin: self.origin,
            properties: p.properties,
            v3,
            v5,
        }))
    }
}

/// `p` with its topic, payload and properties in allocations of their own, for a message kept
/// long: slices of the read buffer it arrived in would pin that whole buffer.
pub fn detach(mut p: Publish) -> Publish {
    let own = |s: &MqttStr| MqttStr::from(s.as_str().to_owned());
    p.topic = own(&p.topic);
    p.payload = Bytes::copy_from_slice(&p.payload);
    let props = &mut p.properties;
    props.content_type = props.content_type.as_ref().map(own);
    props.response_topic = props.response_topic.as_ref().map(own);
    props.correlation_data = props
        .correlation_data
        .as_ref()
        .map(|b| Bytes::copy_from_slice(b));
    props.user_properties = props
        .user_properties
        .iter()
        .map(|(k, v)| (own(k), own(v)))
        .collect();
    p
}
