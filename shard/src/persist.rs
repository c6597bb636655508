//! Durable sessions: the records a shard appends to its log (`storage`) as persistent sessions
//! change, and the actions held until those records are durable.
//!
//! A session is durable while its Session Expiry Interval is not zero. Its header (client id,
//! subscriptions, will, expiry) is rewritten whenever it changes; each QoS 1/2 delivery queued
//! for it is an `Enqueue` record (its message body written once per shard while any delivery
//! needs it), followed by `Sent` (packet identifier given), `Released` (PUBREC) and `Done`
//! (acknowledged or dropped). QoS 0 stays in memory.
//!
//! What must wait for the disk waits here ([`Persist::defer`]): an acknowledgement or a ring
//! message is released by [`Persist::poll_released`] once the log's durable ticket (per the
//! fsync policy) reaches the last record appended before it.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::BytesMut;
use net::mqtt::{Delivery, ProtocolVersion, QoS};
use rkyv::util::AlignedVec;
use storage::log::{Job, Log, Ticket};
use storage::schema::{
    DelayedV1, DoneV1, EnqueueV1, MessageV1, Record, ReleasedV1, RetainV1, RxQos2V1, SentV1,
    SessionEndV1, SessionV1, SubscriptionV1, V1, WillV1,
};

use crate::message::Message;
use crate::session::{Queued, Session, Stage};

/// A session's durable identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    /// Its id in this shard's log.
    pub sid: u64,
    /// Orders copies of one client's session across shards: the higher wins at recovery.
    pub incarnation: u64,
    /// The shard whose log holds it.
    pub shard: u16,
    /// The next queue position.
    pub next_seq: u64,
}

/// A shard's log and the bookkeeping of its durable sessions.
#[derive(Debug)]
pub struct Persist<T> {
    log: Log,
    shard: u16,
    /// Scratch for a record's payload.
    buf: AlignedVec<16>,
    /// Scratch for a message's PUBLISH encoding.
    packet: BytesMut,
    next_sid: u64,
    /// Message bodies in the log, by message id, with the number of live deliveries of each.
    bodies: HashMap<u64, u32>,
    /// Message bodies in the snapshot in progress.
    snap_bodies: std::collections::HashSet<u64>,
    /// Items waiting: for the log to reach the ticket, and for other shards to report the
    /// messages we sent them durable (shard, count).
    held: VecDeque<(Ticket, Needs, T)>,
}

/// Counts of our messages other shards must report durable: (shard, count).
pub type Needs = Vec<(u16, u64)>;

impl<T> Persist<T> {
    /// Persistence for shard `shard` into `log`; session ids start after `first_sid`.
    pub fn new(log: Log, shard: u16, first_sid: u64) -> Self {
        Self {
            log,
            shard,
            buf: AlignedVec::new(),
            packet: BytesMut::new(),
            next_sid: first_sid.max(1),
            bodies: HashMap::new(),
            snap_bodies: std::collections::HashSet::new(),
            held: VecDeque::new(),
        }
    }

    /// The log (its jobs are run by the driver).
    pub fn log(&mut self) -> &mut Log {
        &mut self.log
    }

    /// The log, to read.
    pub fn log_ref(&self) -> &Log {
        &self.log
    }

    /// The next file operation for the driver.
    pub fn poll_job(&mut self, now: Instant) -> Option<Job> {
        self.log.poll_job(now)
    }

    /// The outcome of the last job.
    pub fn complete(&mut self, now: Instant, result: std::io::Result<()>, data: Option<Vec<u8>>) {
        self.log.complete(now, result, data);
    }

    fn put(&mut self, r: &Record) -> Ticket {
        r.encode(&mut self.buf);
        self.log.append(r.kind(), V1, &self.buf)
    }

    /// Holds `item` until everything appended so far is durable here, and `needs` (other
    /// shards' counts of our messages) are reported durable there; returns it at once when
    /// nothing is pending.
    pub fn defer(&mut self, item: T, needs: Vec<(u16, u64)>) -> Option<T> {
        let t = self.log.appended();
        if t <= self.log.durable() && needs.is_empty() && self.held.is_empty() {
            return Some(item);
        }
        self.held.push_back((t, needs, item));
        None
    }

    /// Items whose conditions are met, in the order they were held; `remote[s]` is what shard
    /// `s` reported durable.
    pub fn poll_released(&mut self, remote: &[u64]) -> Option<T> {
        let durable = self.log.durable();
        let (t, needs, _) = self.held.front()?;
        let met = *t <= durable
            && needs
                .iter()
                .all(|(s, n)| remote.get(usize::from(*s)).is_some_and(|r| r >= n));
        if met {
            return self.held.pop_front().map(|(_, _, item)| item);
        }
        None
    }

    /// Items held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A new durable identity for a session of this shard (incarnation above `previous`).
    pub fn identity(&mut self, previous: Option<&Durable>) -> Durable {
        let sid = (u64::from(self.shard) << 48) | (self.next_sid & ((1 << 48) - 1));
        self.next_sid += 1;
        Durable {
            sid,
            incarnation: previous.map_or(1, |d| d.incarnation + 1),
            shard: self.shard,
            next_seq: previous.map_or(1, |d| d.next_seq),
        }
    }

    /// Writes a session's header. `unix_ms` converts its instants.
    pub fn header(&mut self, s: &Session, now: Instant, unix_ms: u64) {
        if let Some(r) = self.header_record(s, now, unix_ms) {
            self.put(&r);
        }
    }

    fn header_record(&mut self, s: &Session, now: Instant, unix_ms: u64) -> Option<Record> {
        let d = s.durable?;
        let at = |i: Option<Instant>| {
            i.map(|i| unix_ms.saturating_add(i.saturating_duration_since(now).as_millis() as u64))
        };
        let will = s.will.as_ref().map(|w| WillV1 {
            publish: encode_publish(&mut self.packet, &w.publish),
            delay_s: w.delay.as_secs().min(u64::from(u32::MAX)) as u32,
        });
        let mut subscriptions: Vec<SubscriptionV1> = s
            .subscriptions
            .iter()
            .map(|(filter, e)| SubscriptionV1 {
                filter: filter.to_string(),
                options: e.options.to_byte(true),
                id: e.id,
            })
            .collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        let r = Record::Session(SessionV1 {
            sid: d.sid,
            incarnation: d.incarnation,
            client_id: s.client_id.to_string(),
            protocol: s.version.level(),
            expiry_interval_s: s.expiry_interval.as_secs().min(u64::from(u32::MAX)) as u32,
            expires_at_ms: at(s.expires_at),
            subscriptions,
            will,
            will_at_ms: at(s.will_at),
            last_packet_id: s.last_packet_id,
        });
        Some(r)
    }

    /// Starts a snapshot (see [`storage::log::Log::begin_snapshot`]).
    pub fn snapshot_begin(&mut self) {
        self.log.begin_snapshot();
        self.snap_bodies.clear();
    }

    /// Ends the snapshot.
    pub fn snapshot_finish(&mut self) {
        self.log.finish_snapshot();
        self.snap_bodies.clear();
    }

    /// Snapshot bytes not yet written.
    pub fn snapshot_backlog(&self) -> usize {
        self.log.snapshot_backlog()
    }

    fn snap(&mut self, r: &Record) {
        r.encode(&mut self.buf);
        self.log.snapshot_record(r.kind(), V1, &self.buf);
    }

    /// Adds a durable session, as it is now, to the snapshot in progress.
    pub fn snapshot_session(&mut self, s: &Session, now: Instant, unix_ms: u64) {
        let Some(h) = self.header_record(s, now, unix_ms) else {
            return;
        };
        let Some(d) = s.durable else { return };
        self.snap(&h);
        let inflight = s.inflight.iter().map(|i| (&i.delivery, Some(i)));
        let queued = s.mqueue.iter().map(|q| (q, None));
        for (q, i) in inflight.chain(queued) {
            if q.seq == 0 {
                continue;
            }
            let m = &q.msg;
            if self.snap_bodies.insert(m.id) {
                let expires_at_ms = m.expires_at.map(|at| {
                    unix_ms.saturating_add(at.saturating_duration_since(now).as_millis() as u64)
                });
                let publish = encode_message(&mut self.packet, m);
                self.snap(&Record::Message(MessageV1 {
                    mid: m.id,
                    expires_at_ms,
                    publish,
                }));
            }
            self.snap(&Record::Enqueue(EnqueueV1 {
                sid: d.sid,
                seq: q.seq,
                mid: m.id,
                qos: q.qos as u8,
                retain: q.retain,
                sub_ids: q.sub_ids.as_slice().to_vec(),
            }));
            if let Some(i) = i {
                self.snap(&Record::Sent(SentV1 {
                    sid: d.sid,
                    seq: q.seq,
                    packet_id: i.packet_id,
                }));
                if i.stage == Stage::Released {
                    self.snap(&Record::Released(ReleasedV1 {
                        sid: d.sid,
                        seq: q.seq,
                    }));
                }
            }
        }
        for &packet_id in s.awaiting_rel.keys() {
            self.snap(&Record::RxQos2(RxQos2V1 {
                sid: d.sid,
                packet_id,
                released: false,
            }));
        }
    }

    /// Gives a restored session its queue positions (its records go to a snapshot).
    pub fn number(&mut self, s: &mut Session) {
        let Some(mut d) = s.durable else { return };
        for q in s
            .inflight
            .iter_mut()
            .map(|i| &mut i.delivery)
            .chain(s.mqueue.iter_mut())
        {
            if q.qos != QoS::AtMostOnce {
                q.seq = d.next_seq;
                d.next_seq += 1;
                *self.bodies.entry(q.msg.id).or_insert(0) += 1;
            }
        }
        s.durable = Some(d);
    }

    /// Writes a whole session: header, deliveries with their progress, incoming QoS 2
    /// identifiers (a session that moved here, or a snapshot).
    pub fn whole(&mut self, s: &mut Session, now: Instant, unix_ms: u64) {
        self.header(s, now, unix_ms);
        let Some(mut d) = s.durable else { return };
        for i in s.inflight.iter_mut() {
            let seq = self.delivery(&mut d, &mut i.delivery, now, unix_ms);
            if seq != 0 {
                self.put(&Record::Sent(SentV1 {
                    sid: d.sid,
                    seq,
                    packet_id: i.packet_id,
                }));
                if i.stage == Stage::Released {
                    self.put(&Record::Released(ReleasedV1 { sid: d.sid, seq }));
                }
            }
        }
        for q in s.mqueue.iter_mut() {
            self.delivery(&mut d, q, now, unix_ms);
        }
        for &packet_id in s.awaiting_rel.keys() {
            self.put(&Record::RxQos2(RxQos2V1 {
                sid: d.sid,
                packet_id,
                released: false,
            }));
        }
        s.durable = Some(d);
    }

    /// Writes a delivery queued for a durable session (QoS 1/2 only); sets its queue position.
    pub fn enqueue(&mut self, s: &mut Session, q: &mut Queued, now: Instant, unix_ms: u64) {
        if let Some(mut d) = s.durable {
            self.delivery(&mut d, q, now, unix_ms);
            s.durable = Some(d);
        }
    }

    fn delivery(&mut self, d: &mut Durable, q: &mut Queued, now: Instant, unix_ms: u64) -> u64 {
        if q.qos == QoS::AtMostOnce {
            q.seq = 0;
            return 0;
        }
        let m = &q.msg;
        let refs = self.bodies.entry(m.id).or_insert(0);
        *refs += 1;
        if *refs == 1 {
            let expires_at_ms = m.expires_at.map(|at| {
                unix_ms.saturating_add(at.saturating_duration_since(now).as_millis() as u64)
            });
            let publish = encode_message(&mut self.packet, m);
            self.put(&Record::Message(MessageV1 {
                mid: m.id,
                expires_at_ms,
                publish,
            }));
        }
        let seq = d.next_seq;
        d.next_seq += 1;
        q.seq = seq;
        self.put(&Record::Enqueue(EnqueueV1 {
            sid: d.sid,
            seq,
            mid: m.id,
            qos: q.qos as u8,
            retain: q.retain,
            sub_ids: q.sub_ids.as_slice().to_vec(),
        }));
        seq
    }

    /// A queued delivery was sent with `packet_id`.
    pub fn sent(&mut self, s: &Session, q: &Queued, packet_id: u16) {
        if let (Some(d), true) = (s.durable, q.seq != 0) {
            self.put(&Record::Sent(SentV1 {
                sid: d.sid,
                seq: q.seq,
                packet_id,
            }));
        }
    }

    /// A QoS 2 delivery's PUBREC arrived.
    pub fn released(&mut self, s: &Session, q: &Queued) {
        if let (Some(d), true) = (s.durable, q.seq != 0) {
            self.put(&Record::Released(ReleasedV1 {
                sid: d.sid,
                seq: q.seq,
            }));
        }
    }

    /// A delivery completed or was dropped.
    pub fn done(&mut self, s: &Session, q: &Queued) {
        let Some(d) = s.durable else { return };
        if q.seq == 0 {
            return;
        }
        self.put(&Record::Done(DoneV1 {
            sid: d.sid,
            seq: q.seq,
        }));
        if let Some(refs) = self.bodies.get_mut(&q.msg.id) {
            *refs -= 1;
            if *refs == 0 {
                self.bodies.remove(&q.msg.id);
            }
        }
    }

    /// A retained message was set (`Some`) or cleared on `topic`; `expires_at` is when it goes.
    pub fn retain(
        &mut self,
        topic: &str,
        msg: Option<(&Message, Option<Instant>)>,
        now: Instant,
        unix_ms: u64,
        snapshot: bool,
    ) {
        let message = msg.map(|(m, expires_at)| MessageV1 {
            mid: m.id,
            expires_at_ms: expires_at.map(|at| {
                unix_ms.saturating_add(at.saturating_duration_since(now).as_millis() as u64)
            }),
            publish: encode_message(&mut self.packet, m),
        });
        let r = Record::Retain(RetainV1 {
            topic: topic.to_owned(),
            message,
        });
        if snapshot {
            self.snap(&r);
        } else {
            self.put(&r);
        }
    }

    /// A delayed publish `id` was stored (`Some`: the PUBLISH and when it is due) or published.
    pub fn delayed(
        &mut self,
        id: u64,
        stored: Option<(&net::mqtt::Publish, Instant)>,
        now: Instant,
        unix_ms: u64,
        snapshot: bool,
    ) {
        let (due_ms, message) = match stored {
            Some((p, at)) => (
                unix_ms.saturating_add(at.saturating_duration_since(now).as_millis() as u64),
                Some(MessageV1 {
                    mid: id,
                    expires_at_ms: None,
                    publish: encode_publish(&mut self.packet, p),
                }),
            ),
            None => (0, None),
        };
        let r = Record::Delayed(DelayedV1 {
            id,
            due_ms,
            message,
        });
        if snapshot {
            self.snap(&r);
        } else {
            self.put(&r);
        }
    }

    /// An incoming QoS 2 packet identifier is awaiting PUBREL (`released` false) or released.
    pub fn rx_qos2(&mut self, s: &Session, packet_id: u16, released: bool) {
        if let Some(d) = s.durable {
            self.put(&Record::RxQos2(RxQos2V1 {
                sid: d.sid,
                packet_id,
                released,
            }));
        }
    }

    /// The session ended (or its copy here is replaced by one on another shard). Its
    /// deliveries' bodies are released.
    pub fn end(&mut self, sid: u64, deliveries: impl Iterator<Item = (u64, u64)>) {
        self.put(&Record::SessionEnd(SessionEndV1 { sid }));
        for (mid, seq) in deliveries {
            if seq == 0 {
                continue;
            }
            if let Some(refs) = self.bodies.get_mut(&mid) {
                *refs -= 1;
                if *refs == 0 {
                    self.bodies.remove(&mid);
                }
            }
        }
    }
}

/// A message as an MQTT 5 PUBLISH (QoS and RETAIN as published, no packet identifier, no
/// expiry: the record carries the deadline).
fn encode_message(buf: &mut BytesMut, m: &Message) -> Vec<u8> {
    buf.clear();
    let enc = m.encoder(ProtocolVersion::V5);
    let d = Delivery {
        qos: m.qos,
        dup: false,
        retain: m.retain,
        packet_id: if m.qos == QoS::AtMostOnce { 0 } else { 1 },
        topic_alias: None,
        omit_topic: false,
        subscription_ids: &[],
        message_expiry_interval: None,
    };
    let mut out = Vec::new();
    if enc.encode_head(&d, buf).is_ok() {
        out.reserve(buf.len() + enc.payload().len());
        out.extend_from_slice(buf);
        out.extend_from_slice(enc.payload());
    }
    out
}

/// A will's PUBLISH as an MQTT 5 packet.
fn encode_publish(buf: &mut BytesMut, p: &net::mqtt::Publish) -> Vec<u8> {
    buf.clear();
    let mut p = p.clone();
    if p.qos != QoS::AtMostOnce {
        p.packet_id = 1;
    }
    match net::mqtt::Packet::Publish(p).encode(ProtocolVersion::V5, buf) {
        Ok(()) => buf.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// A recovered message, decoded once and shared by every delivery of it.
pub fn restore_message(
    m: &MessageV1,
    now: Instant,
    unix_ms: u64,
    cache: &mut HashMap<u64, std::sync::Arc<Message>>,
) -> Option<std::sync::Arc<Message>> {
    if let Some(msg) = cache.get(&m.mid) {
        return Some(msg.clone());
    }
    let mut p = decode_publish(&m.publish)?;
    // The deadline is the record's; the packet carries none.
    p.properties.message_expiry_interval = None;
    let origin = crate::message::Origin {
        // Nobody: No Local compares with the publisher's session, gone with the old process.
        shard: u16::MAX,
        session: crate::slab::Key::from_u64(u64::MAX),
    };
    let mut msg = Message::new(m.mid, p, origin, now).ok()?;
    if let Some(inner) = std::sync::Arc::get_mut(&mut msg) {
        if let Some(at) = m.expires_at_ms {
            inner.expires_at = Some(instant_at(at, now, unix_ms));
        }
        // When it was received, before the restart, is not known: its deliveries are not
        // measured.
        inner.received_at = None;
    }
    cache.insert(m.mid, msg.clone());
    Some(msg)
}

/// The PUBLISH of a record.
pub fn decode_publish(bytes: &[u8]) -> Option<net::mqtt::Publish> {
    let mut d = net::mqtt::Decoder::resume(net::mqtt::Role::Server, ProtocolVersion::V5, u32::MAX);
    let mut buf = BytesMut::from(bytes);
    match d.decode(&mut buf) {
        Ok(Some(net::mqtt::Packet::Publish(p))) => Some(p),
        _ => None,
    }
}

/// The instant of Unix time `at_ms`, given that `now` is `unix_ms` (past times are `now`).
pub fn instant_at(at_ms: u64, now: Instant, unix_ms: u64) -> Instant {
    now + std::time::Duration::from_millis(at_ms.saturating_sub(unix_ms))
}
