//! The shard's side of the control plane's requests ([`crate::admin`]).
//!
//! Each request is answered from the shard's own state, in one call. Listings of sessions
//! (clients, subscriptions) look at a bounded range of session slots per request
//! ([`Scan`]) and say where the next range starts, so the control plane walks a shard's
//! sessions in steps with the shard's other work in between; in each step they keep the first
//! `keep` matches in order and count the rest. Topic and retained-message listings are one
//! pass over the shard's route table or retained messages.

use std::time::Instant;

use net::mqtt::{
    MqttStr, ProtocolVersion, Publish, ReasonCode, Subscribe, Subscription, SubscriptionOptions,
    topic,
};

use super::{Key, Shard, split_share};
use crate::admin::{
    AdminOp, AdminPublish, AdminReply, AdminRequest, ClientInfo, ClientQuery, RetainedInfo, Scan,
    SubInfo, SubQuery,
};

/// The origin of messages published through the API (no session; never equal to a slab key,
/// so No Local never drops them).
pub(super) const API_SESSION: Key = Key::API;

impl Shard {
    /// A request from the control plane.
    pub(super) fn on_admin(&mut self, now: Instant, req: AdminRequest) {
        let (op, reply) = req.into_parts();
        let answer = match op {
            AdminOp::Clients { query, keep, scan } => self.admin_clients(&query, keep, scan),
            AdminOp::Kick { client_id } => AdminReply::Done(self.admin_kick(now, &client_id)),
            AdminOp::Subscriptions { query, keep, scan } => {
                self.admin_subscriptions(&query, keep, scan)
            }
            AdminOp::Subscribe {
                client_id,
                filter,
                options,
            } => AdminReply::Subscribed(self.admin_subscribe(&client_id, &filter, options)),
            AdminOp::Unsubscribe { client_id, filter } => {
                AdminReply::Done(self.admin_unsubscribe(&client_id, &filter))
            }
            AdminOp::Topics { topic, keep } => self.admin_topics(topic.as_deref(), keep),
            AdminOp::Publish(p) => self.admin_publish(now, *p),
            AdminOp::Retained { topic, keep } => self.admin_retained(now, topic.as_deref(), keep),
            AdminOp::DeleteRetained { topic } => {
                AdminReply::Done(self.admin_delete_retained(now, &topic))
            }
        };
        reply(answer);
    }

    /// The session of `client_id` on this shard, or the sessions in the slots `scan` covers;
    /// and where the next step of the walk starts.
    #[allow(clippy::type_complexity)]
    fn sessions_of<'a>(
        &'a self,
        client_id: Option<&str>,
        scan: Scan,
    ) -> (
        Box<dyn Iterator<Item = (Key, &'a crate::session::Session)> + 'a>,
        Option<u32>,
    ) {
        match client_id {
            Some(id) => (
                Box::new(
                    self.by_client
                        .get(&MqttStr::from(id.to_owned()))
                        .and_then(|&k| self.sessions.get(k).map(|s| (k, s)))
                        .into_iter(),
                ),
                None,
            ),
            None => {
                let end = scan.from.saturating_add(scan.slots);
                let next = (end < self.sessions.slot_count()).then_some(end);
                (Box::new(self.sessions.iter_slots(scan.from, end)), next)
            }
        }
    }

    fn admin_clients(&self, q: &ClientQuery, keep: usize, scan: Scan) -> AdminReply {
        let mut matched: Vec<(&str, Key)> = Vec::new();
        let (sessions, next) = self.sessions_of(q.client_id.as_deref(), scan);
        for (sid, s) in sessions {
            let who = self.who(s);
            let username = who.username;
            if q.connected.is_some_and(|want| want != who.connected)
                || q.username.as_deref().is_some_and(|u| username != Some(u))
                || q.like_username
                    .as_deref()
                    .is_some_and(|u| !username.is_some_and(|n| n.contains(u)))
                || q.like_clientid
                    .as_deref()
                    .is_some_and(|c| !s.client_id.contains(c))
                || q.ip_address
                    .is_some_and(|ip| who.peer.is_none_or(|p| p.ip() != ip))
                || q.clean_start.is_some_and(|cs| who.clean_start != Some(cs))
                || q.proto_ver.is_some_and(|v| proto_ver(s.version) != v)
                || q.gte_connected_at.is_some_and(|t| s.connected_at < t)
                || q.lte_connected_at.is_some_and(|t| s.connected_at > t)
            {
                continue;
            }
            matched.push((&s.client_id, sid));
        }
        let total = matched.len();
        let page = first_sorted(&mut matched, keep, |(id, _)| *id)
            .iter()
            .filter_map(|&(_, sid)| self.client_info(sid))
            .collect();
        AdminReply::Clients { total, page, next }
    }

    /// Who `s`'s connection is, or was while offline (nothing known of a session restored from
    /// the log that has not connected since).
    fn who<'a>(&'a self, s: &'a crate::session::Session) -> Who<'a> {
        if let Some(c) = s.conn.and_then(|c| self.conns.get(c)) {
            return Who {
                connected: true,
                username: c.username.as_deref(),
                peer: Some(c.peer),
                clean_start: Some(c.clean_start),
                keep_alive: super::keep_alive_secs(
                    c.keep_alive,
                    self.settings.keepalive_multiplier,
                ),
                listener: c.listener,
            };
        }
        match s.last_conn.as_deref() {
            Some(l) => Who {
                connected: false,
                username: l.username.as_deref(),
                peer: Some(l.peer),
                clean_start: Some(l.clean_start),
                keep_alive: l.keep_alive,
                listener: l.listener,
            },
            None => Who {
                connected: false,
                username: None,
                peer: None,
                clean_start: None,
                keep_alive: 0,
                listener: "tcp",
            },
        }
    }

    fn client_info(&self, sid: Key) -> Option<ClientInfo> {
        let s = self.sessions.get(sid)?;
        let who = self.who(s);
        Some(ClientInfo {
            client_id: s.client_id.to_string(),
            username: who.username.map(str::to_owned),
            peer: who.peer,
            listener: who.listener,
            proto_ver: proto_ver(s.version),
            keepalive: who.keep_alive,
            clean_start: who.clean_start.unwrap_or(false),
            connected: who.connected,
            connected_at: s.connected_at,
            disconnected_at: s.disconnected_at,
            expiry_interval: u32::try_from(s.expiry_interval.as_secs()).unwrap_or(u32::MAX),
            subscriptions: s.subscriptions.len(),
            inflight: s.inflight.len(),
            inflight_max: s.window,
            mqueue_len: s.mqueue.len(),
            mqueue_max: self.settings.max_mqueue_len,
            awaiting_rel: s.awaiting_rel.len(),
            shard: self.id,
        })
    }

    /// EMQX's kick: the connection closes (DISCONNECT 0x98 on MQTT 5; the will is published,
    /// as for any connection the client did not end) and the session is discarded.
    fn admin_kick(&mut self, now: Instant, client_id: &str) -> bool {
        let Some(&sid) = self.by_client.get(&MqttStr::from(client_id.to_owned())) else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        match s.conn {
            Some(conn) => {
                // Zero expiry: the session ends with the connection.
                s.expiry_interval = std::time::Duration::ZERO;
                self.header_changed(sid);
                if let Some(c) = self.conns.get_mut(conn) {
                    c.close_reason = "kicked";
                }
                self.disconnect_quiet(conn, ReasonCode::ADMINISTRATIVE_ACTION);
                self.close(conn);
                // Detached now, not when the socket is gone: the session is discarded before
                // the answer, so the client is gone from the next listing.
                self.detach(now, conn);
            }
            None => self.discard_session(now, sid),
        }
        true
    }

    fn admin_subscriptions(&self, q: &SubQuery, keep: usize, scan: Scan) -> AdminReply {
        let mut matched: Vec<(&str, &str, Key)> = Vec::new();
        let (sessions, next) = self.sessions_of(q.client_id.as_deref(), scan);
        for (sid, s) in sessions {
            for (filter, entry) in &s.subscriptions {
                let share = split_share(filter);
                let plain = share.map_or(&**filter, |(_, f)| f);
                if q.topic.as_deref().is_some_and(|t| t != &**filter)
                    || q.qos.is_some_and(|qos| qos != entry.options.qos)
                    || q.share_group
                        .as_deref()
                        .is_some_and(|g| share.is_none_or(|(group, _)| group != g))
                    || q.match_topic
                        .as_deref()
                        .is_some_and(|t| !topic::matches(plain, t))
                {
                    continue;
                }
                matched.push((&s.client_id, filter, sid));
            }
        }
        let total = matched.len();
        let page = first_sorted(&mut matched, keep, |(c, f, _)| (*c, *f))
            .iter()
            .filter_map(|&(client_id, filter, sid)| {
                let entry = self
                    .sessions
                    .get(sid)?
                    .subscriptions
                    .get(&MqttStr::from(filter.to_owned()))?;
                Some(SubInfo {
                    client_id: client_id.to_owned(),
                    topic: filter.to_owned(),
                    options: entry.options,
                })
            })
            .collect();
        AdminReply::Subscriptions { total, page, next }
    }

    /// Subscribes a connected client as if it had sent SUBSCRIBE without a SUBACK; the
    /// answer is the granted QoS (a SUBACK reason code) or the refusal.
    fn admin_subscribe(
        &mut self,
        client_id: &str,
        filter: &str,
        options: SubscriptionOptions,
    ) -> Option<u8> {
        let sid = *self.by_client.get(&MqttStr::from(client_id.to_owned()))?;
        let conn = self.sessions.get(sid)?.conn?;
        if self.conns.get(conn).is_none_or(|c| c.session != Some(sid)) {
            return None;
        }
        if topic::validate_topic_filter(filter).is_err() {
            return Some(ReasonCode::TOPIC_FILTER_INVALID.0);
        }
        let sub = Subscribe {
            packet_id: 0,
            properties: Default::default(),
            filters: vec![Subscription {
                filter: MqttStr::from(filter.to_owned()),
                options,
            }],
        };
        // An exclusive subscription's lock answers later: reported as granted at the QoS
        // asked for (capped), as its SUBACK would be once the lock is taken.
        let granted = ReasonCode(options.qos.min(self.settings.max_qos_allowed) as u8);
        Some(
            self.on_subscribe(conn, sid, sub, false)
                .unwrap_or(granted)
                .0,
        )
    }

    fn admin_unsubscribe(&mut self, client_id: &str, filter: &str) -> bool {
        let Some(&sid) = self.by_client.get(&MqttStr::from(client_id.to_owned())) else {
            return false;
        };
        let existed = self.sessions.get_mut(sid).is_some_and(|s| {
            s.subscriptions
                .remove(&MqttStr::from(filter.to_owned()))
                .is_some()
        });
        if !existed {
            return false;
        }
        self.header_changed(sid);
        if split_share(filter).is_some() {
            self.announce_shared(sid, filter, None);
        } else {
            self.unlock_exclusive(filter, sid);
            self.remove_subscription(sid, filter);
        }
        true
    }

    /// The topic filters this shard's sessions subscribe to (the route table's local part).
    fn admin_topics(&self, only: Option<&str>, keep: usize) -> AdminReply {
        let mut matched: Vec<&str> = self
            .route_refs
            .keys()
            .map(String::as_str)
            .filter(|f| only.is_none_or(|t| t == *f))
            .collect();
        let total = matched.len();
        let page = first_sorted(&mut matched, keep, |f| *f)
            .iter()
            .map(|f| (*f).to_owned())
            .collect();
        AdminReply::Topics { total, page }
    }

    fn admin_publish(&mut self, now: Instant, p: AdminPublish) -> AdminReply {
        let mut publish = Publish::new(MqttStr::from(p.topic), p.payload);
        publish.qos = p.qos;
        publish.retain = p.retain;
        publish.properties = p.properties;
        let matched = self.publish_message(now, API_SESSION, publish);
        if !matched {
            self.stats.dropped_no_subscribers += 1;
        }
        AdminReply::Published {
            matched,
            id: self.last_message_id(),
        }
    }

    fn admin_retained(&self, now: Instant, only: Option<&str>, keep: usize) -> AdminReply {
        let mut matched: Vec<(&str, &super::Retained)> = match only {
            Some(t) => self.retained.get(t).map(|r| (t, r)).into_iter().collect(),
            None => self.retained.iter().collect(),
        };
        matched.retain(|(t, r)| !t.starts_with("$SYS/") && r.expires_at.is_none_or(|at| at > now));
        let total = matched.len();
        let page = first_sorted(&mut matched, keep, |(t, _)| *t)
            .iter()
            .map(|(t, r)| RetainedInfo {
                topic: (*t).to_owned(),
                payload: r.msg.payload.clone(),
                qos: r.msg.qos as u8,
                id: r.msg.id,
            })
            .collect();
        AdminReply::Retained { total, page }
    }

    fn admin_delete_retained(&mut self, now: Instant, topic: &str) -> bool {
        if self.retained.get(topic).is_none() {
            return false;
        }
        let mut clear = Publish::new(MqttStr::from(topic.to_owned()), bytes::Bytes::new());
        clear.retain = true;
        let origin = crate::message::Origin {
            shard: self.id,
            session: API_SESSION,
        };
        match crate::message::Message::new(0, clear, origin, now) {
            Ok(msg) => {
                self.store_retained(now, &msg);
                true
            }
            Err(_) => false,
        }
    }
}

/// What the REST API shows of a session's current or last connection.
struct Who<'a> {
    connected: bool,
    username: Option<&'a str>,
    peer: Option<std::net::SocketAddr>,
    clean_start: Option<bool>,
    keep_alive: u16,
    listener: &'static str,
}

/// The protocol level of `v`: 3, 4 or 5.
fn proto_ver(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V3_1 => 3,
        ProtocolVersion::V3_1_1 => 4,
        ProtocolVersion::V5 => 5,
    }
}

/// Sorts the first `keep` of `items` by `key` (the rest are dropped): selection, then a sort
/// of what is kept.
fn first_sorted<T, K: Ord>(items: &mut Vec<T>, keep: usize, key: impl Fn(&T) -> K) -> &[T] {
    if keep == 0 {
        items.clear();
        return items;
    }
    if items.len() > keep {
        items.select_nth_unstable_by(keep - 1, |a, b| key(a).cmp(&key(b)));
        items.truncate(keep);
    }
    items.sort_unstable_by_key(|a| key(a));
    items
}
