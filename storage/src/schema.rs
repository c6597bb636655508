//! The records a shard writes, version 1, encoded with rkyv.
//!
//! A record's kind says what it is; its version says which layout its payload has. A newer
//! broker keeps decoding every version it ever wrote (add `…V2` types and a match arm, never
//! change a `…V1`). Messages travel as MQTT 5 PUBLISH packets (`publish`), a format that is
//! itself stable and carries every property.
//!
//! Sessions are named by a shard-local durable id (`sid`), not by client id, so the records
//! about one session's messages stay small. `incarnation` orders copies of one client's
//! session across shards: a session that moves to another shard is written there with a
//! higher incarnation before the old shard deletes its copy, and recovery keeps the highest.

use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// A persistent session's header: everything but its messages.
pub const KIND_SESSION: u16 = 1;
/// A session ended (expired, discarded, or moved to another shard).
pub const KIND_SESSION_END: u16 = 2;
/// A message body, referenced by the deliveries queued for it on this shard.
pub const KIND_MESSAGE: u16 = 3;
/// A delivery queued for a session.
pub const KIND_ENQUEUE: u16 = 4;
/// A queued delivery sent with a packet identifier (now inflight).
pub const KIND_SENT: u16 = 5;
/// An inflight QoS 2 delivery's PUBREC arrived (PUBREL sent, PUBCOMP awaited).
pub const KIND_RELEASED: u16 = 6;
/// A delivery completed (acknowledged) or dropped.
pub const KIND_DONE: u16 = 7;
/// An incoming QoS 2 packet identifier awaiting PUBREL, or released.
pub const KIND_RX_QOS2: u16 = 8;
/// A retained message set or cleared.
pub const KIND_RETAIN: u16 = 9;
/// A delayed publish stored or published.
pub const KIND_DELAYED: u16 = 10;

/// Layout version of every `…V1` type.
pub const V1: u16 = 1;

/// One subscription of a session.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionV1 {
    pub filter: String,
    /// The options byte of an MQTT 5 SUBSCRIBE (QoS, No Local, Retain As Published, Retain
    /// Handling).
    pub options: u8,
    /// Subscription Identifier.
    pub id: Option<u32>,
}

/// A Will Message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WillV1 {
    /// MQTT 5 PUBLISH packet.
    pub publish: Vec<u8>,
    pub delay_s: u32,
}

/// [`KIND_SESSION`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionV1 {
    pub sid: u64,
    pub incarnation: u64,
    pub client_id: String,
    /// Protocol level of the last connection (3, 4 or 5).
    pub protocol: u8,
    pub expiry_interval_s: u32,
    /// While offline: when the session expires (Unix ms).
    pub expires_at_ms: Option<u64>,
    pub subscriptions: Vec<SubscriptionV1>,
    pub will: Option<WillV1>,
    /// A delayed will's due time (Unix ms).
    pub will_at_ms: Option<u64>,
    pub last_packet_id: u16,
}

/// [`KIND_SESSION_END`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEndV1 {
    pub sid: u64,
}

/// [`KIND_MESSAGE`], and the message inside [`RetainV1`] and [`DelayedV1`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageV1 {
    /// The broker's message id.
    pub mid: u64,
    /// When the Message Expiry Interval runs out (Unix ms).
    pub expires_at_ms: Option<u64>,
    /// MQTT 5 PUBLISH packet (packet identifier 0).
    pub publish: Vec<u8>,
}

/// [`KIND_ENQUEUE`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EnqueueV1 {
    pub sid: u64,
    /// Position in the session's queue (increasing).
    pub seq: u64,
    pub mid: u64,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

/// [`KIND_SENT`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentV1 {
    pub sid: u64,
    pub seq: u64,
    pub packet_id: u16,
}

/// [`KIND_RELEASED`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasedV1 {
    pub sid: u64,
    pub seq: u64,
}

/// [`KIND_DONE`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneV1 {
    pub sid: u64,
    pub seq: u64,
}

/// [`KIND_RX_QOS2`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxQos2V1 {
    pub sid: u64,
    pub packet_id: u16,
    /// PUBREL arrived: the identifier is free again.
    pub released: bool,
}

/// [`KIND_RETAIN`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RetainV1 {
    pub topic: String,
    /// `None`: cleared.
    pub message: Option<MessageV1>,
}

/// [`KIND_DELAYED`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DelayedV1 {
    pub id: u64,
    /// When it is due (Unix ms).
    pub due_ms: u64,
    /// `None`: published (or dropped).
    pub message: Option<MessageV1>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Session(SessionV1),
    SessionEnd(SessionEndV1),
    Message(MessageV1),
    Enqueue(EnqueueV1),
    Sent(SentV1),
    Released(ReleasedV1),
    Done(DoneV1),
    RxQos2(RxQos2V1),
    Retain(RetainV1),
    Delayed(DelayedV1),
}

/// Why a record could not be decoded (its checksum was right: a bug, or a record from a newer
/// broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A kind or version this broker does not know.
    Unknown { kind: u16, version: u16 },
    /// The payload does not validate as its type.
    Invalid { kind: u16, why: String },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown { kind, version } => write!(
                f,
                "record kind {kind} version {version} is unknown to this broker (written by a newer one?)"
            ),
            Self::Invalid { kind, why } => write!(f, "record kind {kind} does not decode: {why}"),
        }
    }
}

impl Record {
    /// The record's kind.
    pub fn kind(&self) -> u16 {
        match self {
            Self::Session(_) => KIND_SESSION,
            Self::SessionEnd(_) => KIND_SESSION_END,
            Self::Message(_) => KIND_MESSAGE,
            Self::Enqueue(_) => KIND_ENQUEUE,
            Self::Sent(_) => KIND_SENT,
            Self::Released(_) => KIND_RELEASED,
            Self::Done(_) => KIND_DONE,
            Self::RxQos2(_) => KIND_RX_QOS2,
            Self::Retain(_) => KIND_RETAIN,
            Self::Delayed(_) => KIND_DELAYED,
        }
    }

    /// The payload of the record (version [`V1`]), in `out` (cleared first).
    pub fn encode(&self, out: &mut AlignedVec<16>) {
        out.clear();
        let taken = std::mem::take(out);
        let res = match self {
            Self::Session(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::SessionEnd(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Message(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Enqueue(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Sent(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Released(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Done(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::RxQos2(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Retain(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
            Self::Delayed(r) => rkyv::api::high::to_bytes_in::<_, RkyvError>(r, taken),
        };
        // Serializing into memory fails only on allocation failure, which aborts first.
        if let Ok(bytes) = res {
            *out = bytes;
        }
    }

    /// Decodes a record's payload (which must be 16-byte aligned, as recovery hands it).
    pub fn decode(kind: u16, version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if version != V1 {
            return Err(DecodeError::Unknown { kind, version });
        }
        fn de<T>(kind: u16, payload: &[u8]) -> Result<T, DecodeError>
        where
            T: Archive,
            T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, RkyvError>>
                + Deserialize<T, rkyv::api::high::HighDeserializer<RkyvError>>,
        {
            rkyv::from_bytes::<T, RkyvError>(payload).map_err(|e| DecodeError::Invalid {
                kind,
                why: e.to_string(),
            })
        }
        Ok(match kind {
            KIND_SESSION => Self::Session(de(kind, payload)?),
            KIND_SESSION_END => Self::SessionEnd(de(kind, payload)?),
            KIND_MESSAGE => Self::Message(de(kind, payload)?),
            KIND_ENQUEUE => Self::Enqueue(de(kind, payload)?),
            KIND_SENT => Self::Sent(de(kind, payload)?),
            KIND_RELEASED => Self::Released(de(kind, payload)?),
            KIND_DONE => Self::Done(de(kind, payload)?),
            KIND_RX_QOS2 => Self::RxQos2(de(kind, payload)?),
            KIND_RETAIN => Self::Retain(de(kind, payload)?),
            KIND_DELAYED => Self::Delayed(de(kind, payload)?),
            _ => return Err(DecodeError::Unknown { kind, version }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        let msg = MessageV1 {
            mid: 7 << 48 | 42,
            expires_at_ms: Some(1_800_000_000_000),
            publish: vec![0x32, 5, 0, 1, b't', 0, 1],
        };
        vec![
            Record::Session(SessionV1 {
                sid: 3,
                incarnation: 9,
                client_id: "sensor-17".into(),
                protocol: 5,
                expiry_interval_s: 3600,
                expires_at_ms: None,
                subscriptions: vec![SubscriptionV1 {
                    filter: "a/+/c".into(),
                    options: 0b0010_0110,
                    id: Some(12),
                }],
                will: Some(WillV1 {
                    publish: vec![0x30, 3, 0, 1, b'w'],
                    delay_s: 5,
                }),
                will_at_ms: Some(1),
                last_packet_id: 65535,
            }),
            Record::SessionEnd(SessionEndV1 { sid: 3 }),
            Record::Message(msg.clone()),
            Record::Enqueue(EnqueueV1 {
                sid: 3,
                seq: 100,
                mid: msg.mid,
                qos: 2,
                retain: false,
                sub_ids: vec![1, 2],
            }),
            Record::Sent(SentV1 {
                sid: 3,
                seq: 100,
                packet_id: 7,
            }),
            Record::Released(ReleasedV1 { sid: 3, seq: 100 }),
            Record::Done(DoneV1 { sid: 3, seq: 100 }),
            Record::RxQos2(RxQos2V1 {
                sid: 3,
                packet_id: 9,
                released: true,
            }),
            Record::Retain(RetainV1 {
                topic: "r/t".into(),
                message: Some(msg.clone()),
            }),
            Record::Retain(RetainV1 {
                topic: "r/t".into(),
                message: None,
            }),
            Record::Delayed(DelayedV1 {
                id: 5,
                due_ms: 99,
                message: Some(msg),
            }),
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let mut buf = AlignedVec::<16>::new();
        for r in samples() {
            r.encode(&mut buf);
            assert_eq!(Record::decode(r.kind(), V1, &buf), Ok(r.clone()));
        }
    }

    #[test]
    fn unknown_and_invalid_records_are_errors() {
        let mut buf = AlignedVec::<16>::new();
        Record::SessionEnd(SessionEndV1 { sid: 1 }).encode(&mut buf);
        assert!(matches!(
            Record::decode(KIND_SESSION_END, 2, &buf),
            Err(DecodeError::Unknown { version: 2, .. })
        ));
        assert!(matches!(
            Record::decode(999, V1, &buf),
            Err(DecodeError::Unknown { kind: 999, .. })
        ));
        // A session header's bytes read as a session header: its string lengths point
        // outside the 8 bytes of a SessionEnd.
        assert!(matches!(
            Record::decode(KIND_SESSION, V1, &buf),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(Record::decode(KIND_SESSION, V1, &[]).is_err());
    }
}
