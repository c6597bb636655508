//! The MQTT 3.1, 3.1.1 and 5.0 codec.
//!
//! # Shape
//!
//! * [`Decoder`] turns a byte stream into [`Packet`]s. It is incremental: feed it any split of
//!   the stream (down to a byte at a time) and it yields the same packets; between packets it
//!   reports how many more bytes it needs ([`Decoder::needed`]). The size limit
//!   (`max_packet_size`) is checked from the fixed header, before the body is buffered.
//! * Decoding is zero-copy: the read buffer is frozen into [`bytes::Bytes`] one packet at a time
//!   and payloads, topic names and every string or binary field are slices of it.
//! * [`Packet::encode`] writes into a caller-owned [`bytes::BytesMut`]. For fan-out,
//!   [`PublishEncoder`] encodes the parts of a PUBLISH that are the same for every receiver
//!   once and writes only the per-receiver header (QoS, packet id, topic alias, subscription
//!   identifiers, message expiry) for each delivery; the payload is never re-encoded and can be
//!   handed to a vectored write as the same `Bytes`.
//! * Every violation of the packet format rules of either specification is an [`Error`] value
//!   that names the normative statement it breaks and carries the MQTT 5 reason code to send.
//!   Nothing on the decoding path panics.
//!
//! One data model serves all three versions: fields and properties that a version does not have
//! are left empty when decoding it and ignored when encoding it, and v3 return codes are mapped
//! to and from the v5 reason codes (see [`ReasonCode`]).

mod decoder;
mod error;
mod packet;
mod primitives;
mod properties;
mod publish;
mod reason;
pub mod topic;

pub use decoder::{Decoder, Role};
pub use error::{EncodeError, Error, Malformed, ProtocolError};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketType, ProtocolVersion, QoS,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use primitives::MqttStr;
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PropertyId, PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty,
    WillProperties,
};
pub use publish::{Delivery, Publish, PublishEncoder};
pub use reason::ReasonCode;

/// The largest remaining length the fixed header can express (2.1.4 / 1.5.5).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The largest packet size the protocol allows: remaining length plus a 5-byte fixed header.
pub const MAX_PACKET_SIZE: u32 = 268_435_460;
