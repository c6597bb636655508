//! The client side of one MQTT connection after CONNACK, without I/O: packet ids and the
//! inflight window of a publisher, the QoS 1/2 acknowledgements a subscriber owes, and what
//! each packet from the broker means for the measurement.
//!
//! [`Session::handle`] takes a decoded packet, appends any reply to the caller's output
//! buffer and returns one [`Effect`]; the driver (`client.rs`) does the I/O and the counting.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use net::mqtt::{
    Ack, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription, SubscriptionOptions,
};

/// The packet id of the SUBSCRIBE a subscriber sends (its only one).
const SUBSCRIBE_ID: u16 = 1;

/// What a packet from the broker meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing to count (PINGRESP, PUBREL handled, ...).
    None,
    /// An application message to count and time (its first delivery; a QoS 2 retransmission
    /// before PUBREL is [`Effect::None`]).
    Message(Bytes),
    /// A QoS 1/2 message of ours was acknowledged (PUBACK, PUBCOMP): its slot in the window is
    /// free. `intended` is the send time written into it.
    Acked {
        /// Intended send time of the message, ns.
        intended: u64,
    },
    /// A QoS 1/2 message of ours was refused (PUBACK or PUBREC with a code >= 0x80); its slot
    /// is free.
    Refused {
        /// "PUBACK" or "PUBREC".
        packet: &'static str,
        /// The reason code.
        code: ReasonCode,
    },
    /// SUBACK: `Ok` if every filter was granted, the first refusal otherwise.
    SubAck(Result<(), ReasonCode>),
    /// DISCONNECT from the broker: the connection ends.
    Disconnect(ReasonCode),
    /// A packet the protocol allows but that makes no sense here (an ack for an unknown packet
    /// id, a SUBACK for another id): counted as an error, the connection goes on.
    Unexpected(String),
}

/// The state of one connection.
#[derive(Debug)]
pub(crate) struct Session {
    version: ProtocolVersion,
    /// QoS 1/2 messages sent and not completed: packet id → intended send time.
    inflight: HashMap<u16, u64>,
    /// Most messages in `inflight`.
    window: usize,
    /// The last packet id handed out.
    last_id: u16,
    /// QoS 2 messages received whose PUBREL has not come yet.
    awaiting_rel: HashSet<u16>,
}

impl Session {
    /// A session of `version` whose publisher may have `window` messages in flight.
    pub(crate) fn new(version: ProtocolVersion, window: usize) -> Self {
        Self {
            version,
            inflight: HashMap::new(),
            window: window.clamp(1, usize::from(u16::MAX)),
            last_id: SUBSCRIBE_ID,
            awaiting_rel: HashSet::new(),
        }
    }

    /// The protocol version.
    pub(crate) fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether another QoS 1/2 message fits in the window.
    pub(crate) fn can_send(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// QoS 1/2 messages not yet completed.
    pub(crate) fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Takes a free packet id for a QoS 1/2 message intended at `intended` ns. Call only when
    /// [`Self::can_send`].
    pub(crate) fn allocate(&mut self, intended: u64) -> u16 {
        // The window is below 65535, so a free id exists; ids 0 and the SUBSCRIBE's are skipped.
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id > SUBSCRIBE_ID && !self.inflight.contains_key(&self.last_id) {
                break;
            }
        }
        self.inflight.insert(self.last_id, intended);
        self.last_id
    }

    /// Appends the SUBSCRIBE for `filter` at `qos` (of `version`). Needs no session: over QUIC
    /// multi-stream it goes out before CONNACK, which the session is made from.
    pub(crate) fn subscribe(
        version: ProtocolVersion,
        filter: &str,
        qos: QoS,
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let filter = net::mqtt::MqttStr::from(filter.to_owned());
        let sub = Subscribe {
            packet_id: SUBSCRIBE_ID,
            properties: Default::default(),
            filters: vec![Subscription {
                filter,
                options: SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            }],
        };
        Packet::Subscribe(sub)
            .encode(version, out)
            .map_err(|e| format!("cannot encode SUBSCRIBE: {e}"))
    }

    /// Handles one packet from the broker; replies (PUBACK, PUBREC, PUBREL, PUBCOMP) are
    /// appended to `out`.
    pub(crate) fn handle(&mut self, packet: Packet, out: &mut BytesMut) -> Effect {
        match packet {
            Packet::Publish(p) => match p.qos {
                QoS::AtMostOnce => Effect::Message(p.payload),
                QoS::AtLeastOnce => {
                    self.reply(Packet::PubAck(Ack::new(p.packet_id)), out);
                    Effect::Message(p.payload)
                }
                QoS::ExactlyOnce => {
                    self.reply(Packet::PubRec(Ack::new(p.packet_id)), out);
                    // A retransmission (DUP) of a message whose PUBREL is pending is not a new
                    // delivery (4.3.3).
                    if self.awaiting_rel.insert(p.packet_id) {
                        Effect::Message(p.payload)
                    } else {
                        Effect::None
                    }
                }
            },
            Packet::PubAck(a) => self.complete("PUBACK", a),
            Packet::PubRec(a) => {
                if !self.inflight.contains_key(&a.packet_id) {
                    // Answer anyway so the broker can release the id (4.3.3).
                    self.reply(Packet::PubRel(Ack::new(a.packet_id)), out);
                    return Effect::Unexpected(format!(
                        "PUBREC for unknown packet id {}",
                        a.packet_id
                    ));
                }
                if !a.reason_code.is_success() {
                    self.inflight.remove(&a.packet_id);
                    return Effect::Refused {
                        packet: "PUBREC",
                        code: a.reason_code,
                    };
                }
                self.reply(Packet::PubRel(Ack::new(a.packet_id)), out);
                Effect::None
            }
            Packet::PubComp(a) => self.complete("PUBCOMP", a),
            Packet::PubRel(a) => {
                self.awaiting_rel.remove(&a.packet_id);
                self.reply(Packet::PubComp(Ack::new(a.packet_id)), out);
                Effect::None
            }
            Packet::SubAck(s) => {
                if s.packet_id != SUBSCRIBE_ID {
                    return Effect::Unexpected(format!("SUBACK for unknown id {}", s.packet_id));
                }
                match s.reason_codes.iter().find(|c| !c.is_success()) {
                    Some(&code) => Effect::SubAck(Err(code)),
                    None => Effect::SubAck(Ok(())),
                }
            }
            Packet::Disconnect(d) => Effect::Disconnect(d.reason_code),
            Packet::PingResp | Packet::UnsubAck(_) => Effect::None,
            // The decoder lets a client receive only server packets, and CONNACK only first.
            other => Effect::Unexpected(format!("unexpected {:?}", other.packet_type())),
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the message's flow is complete.
    fn complete(&mut self, packet: &'static str, a: Ack) -> Effect {
        match self.inflight.remove(&a.packet_id) {
            None => Effect::Unexpected(format!("{packet} for unknown packet id {}", a.packet_id)),
            Some(_) if !a.reason_code.is_success() => Effect::Refused {
                packet,
                code: a.reason_code,
            },
            Some(intended) => Effect::Acked { intended },
        }
    }

    fn reply(&self, packet: Packet, out: &mut BytesMut) {
        // Acks with a non-zero packet id always encode (the decoder rejected id 0).
        let _ = packet.encode(self.version, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::mqtt::{Decoder, Publish, Role, SubAck};

    /// Decodes what the session wrote, as the broker would.
    fn sent(out: &mut BytesMut, v: ProtocolVersion) -> Vec<Packet> {
        let mut d = Decoder::resume(Role::Server, v, net::mqtt::MAX_PACKET_SIZE);
        let mut packets = Vec::new();
        while let Some(p) = d.decode(out).unwrap() {
            packets.push(p);
        }
        assert!(out.is_empty());
        packets
    }

    fn publish(qos: QoS, id: u16) -> Packet {
        let mut p = Publish::new("t", Bytes::from_static(b"payload"));
        p.qos = qos;
        p.packet_id = id;
        Packet::Publish(p)
    }

    #[test]
    fn qos1_publisher_window() {
        let mut s = Session::new(ProtocolVersion::V5, 2);
        let mut out = BytesMut::new();
        let a = s.allocate(10);
        let b = s.allocate(20);
        assert_ne!(a, b);
        assert!(!s.can_send());
        assert_eq!(
            s.handle(Packet::PubAck(Ack::new(b)), &mut out),
            Effect::Acked { intended: 20 }
        );
        assert!(s.can_send());
        assert!(matches!(
            s.handle(Packet::PubAck(Ack::new(b)), &mut out),
            Effect::Unexpected(_)
        ));
        let mut refused = Ack::new(a);
        refused.reason_code = ReasonCode::NOT_AUTHORIZED;
        assert_eq!(
            s.handle(Packet::PubAck(refused), &mut out),
            Effect::Refused {
                packet: "PUBACK",
                code: ReasonCode::NOT_AUTHORIZED
            }
        );
        assert_eq!(s.inflight(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn qos2_publisher_flow() {
        let v = ProtocolVersion::V3_1_1;
        let mut s = Session::new(v, 8);
        let mut out = BytesMut::new();
        let id = s.allocate(5);
        assert_eq!(
            s.handle(Packet::PubRec(Ack::new(id)), &mut out),
            Effect::None
        );
        assert_eq!(sent(&mut out, v), vec![Packet::PubRel(Ack::new(id))]);
        assert_eq!(s.inflight(), 1);
        assert_eq!(
            s.handle(Packet::PubComp(Ack::new(id)), &mut out),
            Effect::Acked { intended: 5 }
        );
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn packet_ids_skip_used_and_reserved() {
        let mut s = Session::new(ProtocolVersion::V5, 10);
        let held = s.allocate(0);
        for _ in 0..200_000 {
            let id = s.allocate(0);
            assert!(id > SUBSCRIBE_ID && id != held, "{id}");
            s.inflight.remove(&id);
        }
    }

    #[test]
    fn subscriber_acks() {
        let v = ProtocolVersion::V5;
        let mut s = Session::new(v, 1);
        let mut out = BytesMut::new();
        let payload = Bytes::from_static(b"payload");
        assert_eq!(
            s.handle(publish(QoS::AtMostOnce, 0), &mut out),
            Effect::Message(payload.clone())
        );
        assert!(out.is_empty());
        assert_eq!(
            s.handle(publish(QoS::AtLeastOnce, 7), &mut out),
            Effect::Message(payload.clone())
        );
        assert_eq!(sent(&mut out, v), vec![Packet::PubAck(Ack::new(7))]);
        assert_eq!(
            s.handle(publish(QoS::ExactlyOnce, 9), &mut out),
            Effect::Message(payload.clone())
        );
        // Retransmitted before PUBREL: acknowledged again, not counted again.
        assert_eq!(
            s.handle(publish(QoS::ExactlyOnce, 9), &mut out),
            Effect::None
        );
        assert_eq!(
            s.handle(Packet::PubRel(Ack::new(9)), &mut out),
            Effect::None
        );
        assert_eq!(
            sent(&mut out, v),
            vec![
                Packet::PubRec(Ack::new(9)),
                Packet::PubRec(Ack::new(9)),
                Packet::PubComp(Ack::new(9))
            ]
        );
        // After PUBREL the id is free for a new message.
        assert_eq!(
            s.handle(publish(QoS::ExactlyOnce, 9), &mut out),
            Effect::Message(payload)
        );
    }

    #[test]
    fn suback_and_disconnect() {
        let v = ProtocolVersion::V5;
        let mut out = BytesMut::new();
        Session::subscribe(v, "a/#", QoS::AtLeastOnce, &mut out).unwrap();
        let [Packet::Subscribe(sub)] = &sent(&mut out, v)[..] else {
            panic!("not one SUBSCRIBE")
        };
        assert_eq!(sub.filters[0].filter, "a/#");
        assert_eq!(sub.filters[0].options.qos, QoS::AtLeastOnce);
        let mut s = Session::new(v, 1);
        let ack = |codes: Vec<ReasonCode>| {
            Packet::SubAck(SubAck {
                packet_id: SUBSCRIBE_ID,
                reason_codes: codes,
                ..Default::default()
            })
        };
        assert_eq!(
            s.handle(ack(vec![ReasonCode::GRANTED_QOS_1]), &mut out),
            Effect::SubAck(Ok(()))
        );
        assert_eq!(
            s.handle(ack(vec![ReasonCode::NOT_AUTHORIZED]), &mut out),
            Effect::SubAck(Err(ReasonCode::NOT_AUTHORIZED))
        );
        assert_eq!(
            s.handle(
                Packet::Disconnect(net::mqtt::Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
                &mut out
            ),
            Effect::Disconnect(ReasonCode::SESSION_TAKEN_OVER)
        );
    }
}
