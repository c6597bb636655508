//! The durable state as replayed from records: what recovery hands the shards, what
//! `broker data check` counts and what `broker data compact` writes back as a snapshot.
//!
//! Replay is idempotent and order-sensitive only per key: a snapshot taken while the log goes
//! on may hold a newer value than the log records after its start, and replaying those older
//! records over it must end with the newest (the last record in log order wins).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::schema::{
    DelayedV1, DoneV1, EnqueueV1, MessageV1, Record, ReleasedV1, RetainV1, RxQos2V1, SentV1,
    SessionEndV1, SessionV1,
};

/// One queued or inflight delivery of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub enqueue: EnqueueV1,
    /// Sent with this packet identifier (inflight).
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

/// A session: its header, its deliveries by queue position, its incoming QoS 2 identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionImage {
    pub header: SessionV1,
    pub deliveries: BTreeMap<u64, Delivery>,
    pub rx_qos2: BTreeSet<u16>,
}

/// The state of one shard's records (or of several, merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub sessions: BTreeMap<u64, SessionImage>,
    /// Message bodies by message id (those no delivery references are dropped by
    /// [`Image::finish`]).
    pub messages: HashMap<u64, MessageV1>,
    pub retained: BTreeMap<String, MessageV1>,
    pub delayed: BTreeMap<u64, DelayedV1>,
    /// Records about a session that does not exist (ended, or never seen): ignored.
    pub orphans: u64,
}

/// Counts for operators (`broker data check`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    pub messages: usize,
    pub message_bytes: usize,
    pub retained: usize,
    pub delayed: usize,
}

impl Image {
    /// Applies one record.
    pub fn apply(&mut self, r: Record) {
        match r {
            Record::Session(h) => match self.sessions.get_mut(&h.sid) {
                Some(s) => s.header = h,
                None => {
                    self.sessions.insert(
                        h.sid,
                        SessionImage {
                            header: h,
                            deliveries: BTreeMap::new(),
                            rx_qos2: BTreeSet::new(),
                        },
                    );
                }
            },
            Record::SessionEnd(SessionEndV1 { sid }) => {
                self.sessions.remove(&sid);
            }
            Record::Message(m) => {
                self.messages.insert(m.mid, m);
            }
            Record::Enqueue(e) => match self.sessions.get_mut(&e.sid) {
                Some(s) => {
                    // A snapshot copy and a log copy of one delivery: keep its progress.
                    s.deliveries.entry(e.seq).or_insert(Delivery {
                        enqueue: e,
                        packet_id: None,
                        released: false,
                    });
                }
                None => self.orphans += 1,
            },
            Record::Sent(SentV1 {
                sid,
                seq,
                packet_id,
            }) => match self.delivery(sid, seq) {
                Some(d) => d.packet_id = Some(packet_id),
                None => self.orphans += 1,
            },
            Record::Released(ReleasedV1 { sid, seq }) => match self.delivery(sid, seq) {
                Some(d) => d.released = true,
                None => self.orphans += 1,
            },
            Record::Done(DoneV1 { sid, seq }) => {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.deliveries.remove(&seq);
                }
            }
            Record::RxQos2(RxQos2V1 {
                sid,
                packet_id,
                released,
            }) => match self.sessions.get_mut(&sid) {
                Some(s) if released => {
                    s.rx_qos2.remove(&packet_id);
                }
                Some(s) => {
                    s.rx_qos2.insert(packet_id);
                }
                None => self.orphans += 1,
            },
            Record::Retain(RetainV1 { topic, message }) => match message {
                Some(m) => {
                    self.retained.insert(topic, m);
                }
                None => {
                    self.retained.remove(&topic);
                }
            },
            Record::Delayed(d) => {
                if d.message.is_some() {
                    self.delayed.insert(d.id, d);
                } else {
                    self.delayed.remove(&d.id);
                }
            }
        }
    }

    fn delivery(&mut self, sid: u64, seq: u64) -> Option<&mut Delivery> {
        self.sessions.get_mut(&sid)?.deliveries.get_mut(&seq)
    }

    /// Drops message bodies no delivery references.
    pub fn finish(&mut self) {
        let used: BTreeSet<u64> = self
            .sessions
            .values()
            .flat_map(|s| s.deliveries.values().map(|d| d.enqueue.mid))
            .collect();
        self.messages.retain(|mid, _| used.contains(mid));
    }

    /// Adds another shard's image. A client's session present in both is kept from the
    /// higher incarnation; retained messages and delayed publishes are keyed by topic and id,
    /// which one shard owns at a time. Session ids must not collide (each shard's ids carry
    /// the shard).
    pub fn merge(&mut self, other: Image) {
        let mut by_client: HashMap<String, u64> = self
            .sessions
            .iter()
            .map(|(sid, s)| (s.header.client_id.clone(), *sid))
            .collect();
        for (sid, s) in other.sessions {
            match by_client.get(&s.header.client_id) {
                Some(&mine) => {
                    let keep_other = self
                        .sessions
                        .get(&mine)
                        .is_some_and(|m| s.header.incarnation > m.header.incarnation);
                    if keep_other {
                        self.sessions.remove(&mine);
                        by_client.insert(s.header.client_id.clone(), sid);
                        self.sessions.insert(sid, s);
                    }
                }
                None => {
                    by_client.insert(s.header.client_id.clone(), sid);
                    self.sessions.insert(sid, s);
                }
            }
        }
        self.messages.extend(other.messages);
        self.retained.extend(other.retained);
        self.delayed.extend(other.delayed);
        self.orphans += other.orphans;
        self.finish();
    }

    /// The records that rebuild this image, for a snapshot: per session its header, the
    /// bodies of its messages (each once), its deliveries and their progress, its incoming
    /// QoS 2 identifiers; then retained messages and delayed publishes.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut written = BTreeSet::new();
        for s in self.sessions.values() {
            out.push(Record::Session(s.header.clone()));
            for d in s.deliveries.values() {
                let e = &d.enqueue;
                if written.insert(e.mid)
                    && let Some(m) = self.messages.get(&e.mid)
                {
                    out.push(Record::Message(m.clone()));
                }
                out.push(Record::Enqueue(e.clone()));
                if let Some(packet_id) = d.packet_id {
                    out.push(Record::Sent(SentV1 {
                        sid: e.sid,
                        seq: e.seq,
                        packet_id,
                    }));
                }
                if d.released {
                    out.push(Record::Released(ReleasedV1 {
                        sid: e.sid,
                        seq: e.seq,
                    }));
                }
            }
            for &packet_id in &s.rx_qos2 {
                out.push(Record::RxQos2(RxQos2V1 {
                    sid: s.header.sid,
                    packet_id,
                    released: false,
                }));
            }
        }
        for (topic, m) in &self.retained {
            out.push(Record::Retain(RetainV1 {
                topic: topic.clone(),
                message: Some(m.clone()),
            }));
        }
        for d in self.delayed.values() {
            out.push(Record::Delayed(d.clone()));
        }
        out
    }

    /// What the image holds.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            sessions: self.sessions.len(),
            messages: self.messages.len(),
            message_bytes: self.messages.values().map(|m| m.publish.len()).sum(),
            retained: self.retained.len(),
            delayed: self.delayed.len(),
            ..Counts::default()
        };
        for s in self.sessions.values() {
            c.subscriptions += s.header.subscriptions.len();
            for d in s.deliveries.values() {
                if d.packet_id.is_some() {
                    c.inflight += 1;
                } else {
                    c.queued += 1;
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sid: u64, client: &str, incarnation: u64) -> SessionV1 {
        SessionV1 {
            sid,
            incarnation,
            client_id: client.into(),
            protocol: 5,
            expiry_interval_s: 60,
            expires_at_ms: None,
            subscriptions: Vec::new(),
            will: None,
            will_at_ms: None,
            last_packet_id: 0,
        }
    }

    fn msg(mid: u64) -> MessageV1 {
        MessageV1 {
            mid,
            expires_at_ms: None,
            publish: vec![mid as u8; 4],
        }
    }

    fn enq(sid: u64, seq: u64, mid: u64) -> Record {
        Record::Enqueue(EnqueueV1 {
            sid,
            seq,
            mid,
            qos: 1,
            retain: false,
            sub_ids: Vec::new(),
        })
    }

    #[test]
    fn deliveries_follow_their_records() {
        let mut i = Image::default();
        i.apply(Record::Session(header(1, "a", 1)));
        i.apply(Record::Message(msg(10)));
        i.apply(enq(1, 1, 10));
        i.apply(enq(1, 2, 10));
        i.apply(Record::Sent(SentV1 {
            sid: 1,
            seq: 1,
            packet_id: 5,
        }));
        i.apply(Record::Done(DoneV1 { sid: 1, seq: 2 }));
        i.apply(enq(9, 1, 10));
        i.finish();
        let c = i.counts();
        assert_eq!((c.sessions, c.inflight, c.queued, c.messages), (1, 1, 0, 1));
        assert_eq!(i.orphans, 1);
        i.apply(Record::Done(DoneV1 { sid: 1, seq: 1 }));
        i.finish();
        assert_eq!(i.counts().messages, 0, "unreferenced bodies go");
    }

    #[test]
    fn records_rebuild_the_image() {
        let mut i = Image::default();
        i.apply(Record::Session(header(1, "a", 1)));
        i.apply(Record::Message(msg(10)));
        i.apply(Record::Message(msg(11)));
        i.apply(enq(1, 1, 10));
        i.apply(enq(1, 2, 11));
        i.apply(enq(1, 3, 10));
        i.apply(Record::Sent(SentV1 {
            sid: 1,
            seq: 1,
            packet_id: 5,
        }));
        i.apply(Record::Released(ReleasedV1 { sid: 1, seq: 1 }));
        i.apply(Record::RxQos2(RxQos2V1 {
            sid: 1,
            packet_id: 3,
            released: false,
        }));
        i.apply(Record::Retain(RetainV1 {
            topic: "t".into(),
            message: Some(msg(12)),
        }));
        i.apply(Record::Delayed(DelayedV1 {
            id: 4,
            due_ms: 9,
            message: Some(msg(13)),
        }));
        i.finish();
        let mut j = Image::default();
        for r in i.records() {
            j.apply(r);
        }
        j.finish();
        assert_eq!(i, j);
        // Replaying the log over the snapshot (older records of the same keys) changes
        // nothing that the log did not change.
        j.apply(enq(1, 1, 10));
        assert_eq!(j.sessions[&1].deliveries[&1].packet_id, Some(5));
    }

    #[test]
    fn merge_keeps_the_newest_incarnation() {
        let mut a = Image::default();
        a.apply(Record::Session(header(1, "c", 3)));
        a.apply(Record::Message(msg(10)));
        a.apply(enq(1, 1, 10));
        let mut b = Image::default();
        b.apply(Record::Session(header(1 << 48 | 1, "c", 4)));
        b.apply(Record::Session(header(1 << 48 | 2, "d", 1)));
        a.merge(b.clone());
        assert_eq!(a.sessions.len(), 2);
        assert_eq!(a.sessions[&(1 << 48 | 1)].header.incarnation, 4);
        assert!(
            a.messages.is_empty(),
            "the old copy's messages went with it"
        );
        // The other way round: the newer one stays.
        b.merge(a.clone());
        assert_eq!(b.sessions.len(), 2);
    }
}
