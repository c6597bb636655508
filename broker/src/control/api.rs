//! The REST API v5: EMQX 5.1's paths and JSON shapes, so EMQX scripts work unchanged.
//!
//! Node-wide figures (`/nodes`, `/stats`, `/metrics`) come from the shards' published
//! snapshots; everything about clients, subscriptions, topics and retained messages is asked
//! of the shards over the rings ([`super::shards`]) and merged here. Every error is JSON
//! `{"code": ..., "message": ...}` with its HTTP status.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use net::mqtt::{QoS, RetainHandling, SubscriptionOptions, topic};
use serde::{Deserialize, Serialize};
use shard::admin::{
    AdminOp, AdminPublish, AdminReply, ClientInfo, ClientQuery, Scan, SubInfo, SubQuery,
};
use utoipa::{IntoParams, ToSchema};

use super::Ctx;
pub(crate) use crate::access::{ApiError, JsonBody as J};

type St = State<Arc<Ctx>>;

/// The largest `limit` a listing accepts.
pub(crate) const MAX_LIMIT: u32 = 10_000;

/// Messages one `POST /publish/bulk` may carry.
const MAX_BULK: usize = 1_000;

/// The API's routes (authentication is layered on by the caller).
pub(crate) fn routes() -> Router<Arc<Ctx>> {
    Router::new()
        .route("/api/v5/nodes", get(nodes))
        .route("/api/v5/nodes/:node", get(node))
        .route("/api/v5/stats", get(stats))
        .route("/api/v5/metrics", get(metrics))
        .route("/api/v5/clients", get(clients))
        .route("/api/v5/clients/:clientid", get(client).delete(kick))
        .route(
            "/api/v5/clients/:clientid/subscriptions",
            get(client_subscriptions),
        )
        .route("/api/v5/clients/:clientid/subscribe", post(subscribe))
        .route("/api/v5/clients/:clientid/unsubscribe", post(unsubscribe))
        .route("/api/v5/subscriptions", get(subscriptions))
        .route("/api/v5/topics", get(topics))
        .route("/api/v5/publish", post(publish))
        .route("/api/v5/publish/bulk", post(publish_bulk))
        .route("/api/v5/listeners", get(listeners))
        .route("/api/v5/mqtt/retainer/messages", get(retained_list))
        .route(
            "/api/v5/mqtt/retainer/message/*topic",
            get(retained_get).delete(retained_delete),
        )
        .route(
            "/api/v5/mqtt/retainer/messages/*topic",
            get(retained_get).delete(retained_delete),
        )
        .route("/api/v5/configs/log", get(log_get).put(log_put))
}

// ---- errors and extractors --------------------------------------------------------------------

/// `Query`, with a JSON `{code, message}` 400 for bad parameters.
pub(crate) struct Q<T>(pub(crate) T);

#[axum::async_trait]
impl<T, S> FromRequestParts<S> for Q<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Q)
            .map_err(|e| ApiError::bad_request(format!("{}: {}", e.path(), e.inner())))
    }
}

// ---- paging -------------------------------------------------------------------------------------

/// `page` and `limit`, as every listing takes them.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Entries per page (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

impl Paging {
    /// (page, limit), checked.
    fn get(&self) -> Result<(usize, usize), ApiError> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(100);
        if page == 0 {
            return Err(ApiError::bad_request("page: must be at least 1"));
        }
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit: must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok((page as usize, limit as usize))
    }
}

/// The `meta` of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Meta {
    page: usize,
    limit: usize,
    /// Entries matching, over every page.
    count: usize,
    /// Whether a later page has entries.
    hasnext: bool,
}

impl Meta {
    fn new(page: usize, limit: usize, count: usize) -> Self {
        Self {
            page,
            limit,
            count,
            hasnext: count > page * limit,
        }
    }
}

/// Keeps the first `keep` of the entries gathered so far once they are twice that many, so a
/// walk over many steps holds a bounded list.
fn prune<T, K: Ord>(all: &mut Vec<T>, keep: usize, key: impl Fn(&T) -> K) {
    if all.len() > keep.saturating_mul(2) {
        all.sort_by_cached_key(|a| key(a));
        all.truncate(keep);
    }
}

/// Merges the shards' first entries (each sorted by `key`) and takes the page.
fn take_page<T, K: Ord>(
    mut all: Vec<T>,
    page: usize,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    all.sort_by_cached_key(|a| key(a));
    all.into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect()
}

// ---- nodes, stats, metrics ------------------------------------------------------------------

/// A node, as `GET /nodes` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Node {
    node: String,
    node_status: String,
    version: String,
    /// Milliseconds since the node started.
    uptime: u64,
    role: String,
    connections: u64,
    live_connections: u64,
    /// Shards (cores) serving MQTT.
    shards: usize,
    /// Each shard's I/O driver.
    drivers: Vec<String>,
    /// Open files allowed.
    max_fds: u64,
    /// Resident memory (bytes).
    memory_used: u64,
    /// Total memory of the machine (bytes).
    memory_total: u64,
    load1: f64,
    load5: f64,
    load15: f64,
}

fn node_info(ctx: &Ctx) -> Node {
    let (mut conns, mut live) = (0, 0);
    for s in ctx.slots.iter().filter_map(|s| s.load_full()) {
        conns += s.sessions;
        live += s.connections;
    }
    let loads = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut l = loads
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    let running = ctx.slots.iter().all(|s| s.load().is_some());
    Node {
        node: ctx.node.clone(),
        node_status: if running { "running" } else { "starting" }.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        role: "core".to_owned(),
        connections: conns,
        live_connections: live,
        shards: ctx.slots.len(),
        drivers: ctx.drivers.iter().map(|d| (*d).to_owned()).collect(),
        max_fds: max_fds(),
        memory_used: super::prom::rss_bytes().unwrap_or(0),
        memory_total: mem_total(),
        load1: l.next().unwrap_or(0.0),
        load5: l.next().unwrap_or(0.0),
        load15: l.next().unwrap_or(0.0),
    }
}

fn max_fds() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The nodes of the cluster (this one).
#[utoipa::path(get, path = "/api/v5/nodes", tag = "Nodes",
    responses((status = 200, description = "The nodes", body = [Node])))]
pub(crate) async fn nodes(State(ctx): St) -> axum::Json<Vec<Node>> {
    axum::Json(vec![node_info(&ctx)])
}

/// One node.
#[utoipa::path(get, path = "/api/v5/nodes/{node}", tag = "Nodes",
    params(("node" = String, Path, description = "Node name")),
    responses((status = 200, description = "The node", body = Node),
        (status = 404, description = "No such node", body = ErrorBody)))]
pub(crate) async fn node(
    State(ctx): St,
    Path(name): Path<String>,
) -> Result<axum::Json<Node>, ApiError> {
    if name != ctx.node {
        return Err(ApiError::not_found(format!("node {name} not found")));
    }
    Ok(axum::Json(node_info(&ctx)))
}

/// `aggregate`, as `/stats` and `/metrics` take it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Aggregate {
    /// One object for the cluster instead of one per node.
    aggregate: Option<bool>,
}

fn snapshots(ctx: &Ctx) -> Vec<Arc<shard::core::SysSnapshot>> {
    ctx.slots.iter().filter_map(|s| s.load_full()).collect()
}

/// A JSON object of EMQX-named figures (`"connections.count": 3`).
type Figures = serde_json::Map<String, serde_json::Value>;

fn per_node(ctx: &Ctx, aggregate: bool, mut figures: Figures) -> axum::Json<serde_json::Value> {
    if aggregate {
        return axum::Json(serde_json::Value::Object(figures));
    }
    figures.insert("node".to_owned(), ctx.node.clone().into());
    axum::Json(serde_json::Value::Array(vec![serde_json::Value::Object(
        figures,
    )]))
}

/// Connection, session, subscription and retained counts (EMQX's `emqx_stats`).
#[utoipa::path(get, path = "/api/v5/stats", tag = "Metrics", params(Aggregate),
    responses((status = 200, description = "One object per node (or one for the cluster with aggregate=true), keys such as connections.count", body = serde_json::Value),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn stats(State(ctx): St, Q(a): Q<Aggregate>) -> axum::Json<serde_json::Value> {
    let snaps = snapshots(&ctx);
    let mut f = Figures::new();
    let mut put = |k: &str, v: fn(&shard::core::SysSnapshot) -> u64| {
        f.insert(k.to_owned(), snaps.iter().map(|s| v(s)).sum::<u64>().into());
    };
    put("connections.count", |s| s.sessions);
    put("live_connections.count", |s| s.connections);
    put("sessions.count", |s| s.sessions);
    put("subscriptions.count", |s| s.subscriptions);
    put("suboptions.count", |s| s.subscriptions);
    put("subscribers.count", |s| s.subscriptions);
    put("retained.count", |s| s.retained);
    per_node(&ctx, a.aggregate.unwrap_or(false), f)
}

/// Message, packet and byte counters with EMQX's names (`messages.received`, ...).
#[utoipa::path(get, path = "/api/v5/metrics", tag = "Metrics", params(Aggregate),
    responses((status = 200, description = "One object per node (or one for the cluster with aggregate=true), keys such as messages.received", body = serde_json::Value),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn metrics(State(ctx): St, Q(a): Q<Aggregate>) -> axum::Json<serde_json::Value> {
    let snaps = snapshots(&ctx);
    let mut f = Figures::new();
    let mut put = |k: &str, v: fn(&shard::stats::Stats) -> u64| {
        f.insert(
            k.to_owned(),
            snaps.iter().map(|s| v(&s.stats)).sum::<u64>().into(),
        );
    };
    put("bytes.received", |s| s.bytes_received);
    put("bytes.sent", |s| s.bytes_sent);
    put("packets.received", |s| s.packets_received);
    put("packets.sent", |s| s.packets_sent);
    put("messages.received", |s| s.messages_received);
    put("messages.sent", |s| s.messages_sent);
    put("messages.acked", |s| s.messages_acked);
    put("messages.forward", |s| s.messages_forwarded);
    put("messages.retransmitted", |s| s.messages_retransmitted);
    put("messages.dropped.no_subscribers", |s| {
        s.dropped_no_subscribers
    });
    put("messages.dropped.await_pubrel_timeout", |s| {
        s.dropped_await_rel_timeout
    });
    put("messages.delayed", |s| s.delayed_stored);
    put("delivery.dropped.queue_full", |s| s.dropped_queue_full);
    put("delivery.dropped.expired", |s| s.dropped_expired);
    put("delivery.dropped.too_large", |s| s.dropped_too_large);
    put("client.connected", |s| s.connections_established);
    put("client.connack.failure", |s| s.connections_refused);
    put("client.disconnected", |s| s.connections_closed);
    put("session.takenover", |s| s.takeovers);
    put("session.expired", |s| s.sessions_expired);
    per_node(&ctx, a.aggregate.unwrap_or(false), f)
}

// ---- clients ------------------------------------------------------------------------------------

/// A client (a session, online or not), as `GET /clients` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Client {
    clientid: String,
    #[schema(nullable)]
    username: Option<String>,
    #[schema(nullable)]
    ip_address: Option<String>,
    #[schema(nullable)]
    port: Option<u16>,
    node: String,
    /// The listener of its connection (`tcp:default`).
    listener: String,
    proto_name: String,
    /// 3 (MQTT 3.1), 4 (3.1.1) or 5.
    proto_ver: u8,
    keepalive: u16,
    clean_start: bool,
    connected: bool,
    /// RFC 3339.
    connected_at: String,
    /// RFC 3339, when offline.
    #[schema(nullable)]
    disconnected_at: Option<String>,
    /// Session Expiry Interval (seconds).
    expiry_interval: u32,
    subscriptions_cnt: usize,
    inflight_cnt: usize,
    inflight_max: u16,
    mqueue_len: usize,
    mqueue_max: usize,
    awaiting_rel_cnt: usize,
    is_bridge: bool,
    /// The shard (core) holding the session.
    shard: u16,
}

fn client_json(node: &str, c: ClientInfo) -> Client {
    Client {
        clientid: c.client_id,
        username: c.username,
        ip_address: c.peer.map(|p| p.ip().to_string()),
        port: c.peer.map(|p| p.port()),
        node: node.to_owned(),
        listener: format!("{}:default", c.listener),
        proto_name: if c.proto_ver == 3 { "MQIsdp" } else { "MQTT" }.to_owned(),
        proto_ver: c.proto_ver,
        keepalive: c.keepalive,
        clean_start: c.clean_start,
        connected: c.connected,
        connected_at: rfc3339(c.connected_at),
        disconnected_at: c.disconnected_at.map(rfc3339),
        expiry_interval: c.expiry_interval,
        subscriptions_cnt: c.subscriptions,
        inflight_cnt: c.inflight,
        inflight_max: c.inflight_max,
        mqueue_len: c.mqueue_len,
        mqueue_max: c.mqueue_max,
        awaiting_rel_cnt: c.awaiting_rel,
        is_bridge: false,
        shard: c.shard,
    }
}

/// `GET /clients` query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ClientsParams {
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Entries per page (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Exactly this client id.
    clientid: Option<String>,
    /// Exactly this user name.
    username: Option<String>,
    /// The client's IP address.
    ip_address: Option<String>,
    /// `connected` or `disconnected`.
    conn_state: Option<String>,
    /// Clean Start of the last CONNECT.
    clean_start: Option<bool>,
    /// 3, 4 or 5.
    proto_ver: Option<u8>,
    /// Client id contains this.
    like_clientid: Option<String>,
    /// User name contains this.
    like_username: Option<String>,
    /// Connected at or after: RFC 3339 or Unix milliseconds.
    gte_connected_at: Option<String>,
    /// Connected at or before: RFC 3339 or Unix milliseconds.
    lte_connected_at: Option<String>,
}

/// A page of clients and its meta.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClientPage {
    data: Vec<Client>,
    meta: Meta,
}

/// The clients, filtered and paged.
#[utoipa::path(get, path = "/api/v5/clients", tag = "Clients", params(ClientsParams),
    responses((status = 200, description = "A page of clients", body = ClientPage),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn clients(
    State(ctx): St,
    Q(p): Q<ClientsParams>,
) -> Result<axum::Json<ClientPage>, ApiError> {
    let (page, limit) = Paging {
        page: p.page,
        limit: p.limit,
    }
    .get()?;
    let query = ClientQuery {
        client_id: p.clientid,
        username: p.username,
        ip_address: p
            .ip_address
            .map(|ip| {
                ip.parse().map_err(|_| {
                    ApiError::bad_request(format!("ip_address: not an IP address: {ip}"))
                })
            })
            .transpose()?,
        connected: p
            .conn_state
            .map(|s| match s.as_str() {
                "connected" => Ok(true),
                "disconnected" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "conn_state: expected connected or disconnected, got {s}"
                ))),
            })
            .transpose()?,
        clean_start: p.clean_start,
        proto_ver: p
            .proto_ver
            .map(|v| {
                if (3..=5).contains(&v) {
                    Ok(v)
                } else {
                    Err(ApiError::bad_request(format!(
                        "proto_ver: expected 3, 4 or 5, got {v}"
                    )))
                }
            })
            .transpose()?,
        like_clientid: p.like_clientid,
        like_username: p.like_username,
        gte_connected_at: p
            .gte_connected_at
            .map(|t| parse_time("gte_connected_at", &t))
            .transpose()?,
        lte_connected_at: p
            .lte_connected_at
            .map(|t| parse_time("lte_connected_at", &t))
            .transpose()?,
    };
    let keep = page * limit;
    let (mut count, mut all) = (0, Vec::new());
    ctx.shards
        .walk(
            |scan| AdminOp::Clients {
                query: query.clone(),
                keep,
                scan,
            },
            |r| {
                if let AdminReply::Clients { total, page, .. } = r {
                    count += total;
                    all.extend(page);
                    prune(&mut all, keep, |c| c.client_id.clone());
                }
            },
        )
        .await?;
    let data = take_page(all, page, limit, |c| c.client_id.clone())
        .into_iter()
        .map(|c| client_json(&ctx.node, c))
        .collect();
    Ok(axum::Json(ClientPage {
        data,
        meta: Meta::new(page, limit, count),
    }))
}

async fn find_client(ctx: &Ctx, client_id: &str) -> Result<ClientInfo, ApiError> {
    let query = ClientQuery {
        client_id: Some(client_id.to_owned()),
        ..ClientQuery::default()
    };
    let replies = ctx
        .shards
        .ask_all(AdminOp::Clients {
            query,
            keep: 1,
            scan: Scan::ALL,
        })
        .await?;
    replies
        .into_iter()
        .find_map(|r| match r {
            AdminReply::Clients { page, .. } => page.into_iter().next(),
            _ => None,
        })
        .ok_or_else(client_not_found)
}

/// One client.
#[utoipa::path(get, path = "/api/v5/clients/{clientid}", tag = "Clients",
    params(("clientid" = String, Path, description = "Client ID")),
    responses((status = 200, description = "The client", body = Client),
        (status = 404, description = "No such client", body = ErrorBody)))]
pub(crate) async fn client(
    State(ctx): St,
    Path(client_id): Path<String>,
) -> Result<axum::Json<Client>, ApiError> {
    let c = find_client(&ctx, &client_id).await?;
    Ok(axum::Json(client_json(&ctx.node, c)))
}

/// Kicks a client: its connection closes (DISCONNECT 0x98 "Administrative action" on MQTT 5)
/// and its session is discarded.
#[utoipa::path(delete, path = "/api/v5/clients/{clientid}", tag = "Clients",
    params(("clientid" = String, Path, description = "Client ID")),
    responses((status = 204, description = "Kicked"),
        (status = 404, description = "No such client", body = ErrorBody)))]
pub(crate) async fn kick(
    State(ctx): St,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let replies = ctx.shards.ask_all(AdminOp::Kick { client_id }).await?;
    if replies.iter().any(|r| matches!(r, AdminReply::Done(true))) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(client_not_found())
    }
}

/// A subscription, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Sub {
    clientid: String,
    /// The filter as subscribed (`$share/group/...` included).
    topic: String,
    qos: u8,
    /// No Local.
    nl: u8,
    /// Retain As Published.
    rap: u8,
    /// Retain Handling.
    rh: u8,
    node: String,
}

fn sub_json(node: &str, s: SubInfo) -> Sub {
    Sub {
        clientid: s.client_id,
        topic: s.topic,
        qos: s.options.qos as u8,
        nl: u8::from(s.options.no_local),
        rap: u8::from(s.options.retain_as_published),
        rh: s.options.retain_handling as u8,
        node: node.to_owned(),
    }
}

/// A client's subscriptions.
#[utoipa::path(get, path = "/api/v5/clients/{clientid}/subscriptions", tag = "Clients",
    params(("clientid" = String, Path, description = "Client ID")),
    responses((status = 200, description = "Its subscriptions", body = [Sub]),
        (status = 404, description = "No such client", body = ErrorBody)))]
pub(crate) async fn client_subscriptions(
    State(ctx): St,
    Path(client_id): Path<String>,
) -> Result<axum::Json<Vec<Sub>>, ApiError> {
    find_client(&ctx, &client_id).await?;
    let query = SubQuery {
        client_id: Some(client_id),
        ..SubQuery::default()
    };
    let replies = ctx
        .shards
        .ask_all(AdminOp::Subscriptions {
            query,
            keep: usize::MAX,
            scan: Scan::ALL,
        })
        .await?;
    let mut subs: Vec<SubInfo> = Vec::new();
    for r in replies {
        if let AdminReply::Subscriptions { page, .. } = r {
            subs.extend(page);
        }
    }
    subs.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(axum::Json(
        subs.into_iter().map(|s| sub_json(&ctx.node, s)).collect(),
    ))
}

/// `POST /clients/{clientid}/subscribe`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SubscribeBody {
    /// Topic filter.
    topic: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    qos: u8,
    /// No Local (0 or 1).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    nl: u8,
    /// Retain As Published (0 or 1).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    rap: u8,
    /// Retain Handling (0, 1 or 2).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    rh: u8,
}

/// The answer to a subscribe.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Subscribed {
    clientid: String,
    topic: String,
    /// Granted QoS.
    qos: u8,
    node: String,
}

fn qos_of(field: &str, v: u8) -> Result<QoS, ApiError> {
    QoS::from_u8(v)
        .ok_or_else(|| ApiError::bad_request(format!("{field}: expected 0, 1 or 2, got {v}")))
}

/// Subscribes a connected client, as if it had sent SUBSCRIBE.
#[utoipa::path(post, path = "/api/v5/clients/{clientid}/subscribe", tag = "Clients",
    params(("clientid" = String, Path, description = "Client ID")),
    request_body = SubscribeBody,
    responses((status = 200, description = "Subscribed", body = Subscribed),
        (status = 400, description = "Bad request or refused filter", body = ErrorBody),
        (status = 404, description = "No such connected client", body = ErrorBody)))]
pub(crate) async fn subscribe(
    State(ctx): St,
    Path(client_id): Path<String>,
    J(b): J<SubscribeBody>,
) -> Result<axum::Json<Subscribed>, ApiError> {
    if topic::validate_topic_filter(&b.topic).is_err() {
        return Err(ApiError::bad_request(format!(
            "topic: invalid topic filter: {:?}",
            b.topic
        )));
    }
    if b.nl > 1 || b.rap > 1 {
        return Err(ApiError::bad_request("nl, rap: expected 0 or 1"));
    }
    let options = SubscriptionOptions {
        qos: qos_of("qos", b.qos)?,
        no_local: b.nl == 1,
        retain_as_published: b.rap == 1,
        retain_handling: match b.rh {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(ApiError::bad_request("rh: expected 0, 1 or 2")),
        },
    };
    let replies = ctx
        .shards
        .ask_all(AdminOp::Subscribe {
            client_id: client_id.clone(),
            filter: b.topic.clone(),
            options,
        })
        .await?;
    let code = replies.into_iter().find_map(|r| match r {
        AdminReply::Subscribed(Some(code)) => Some(code),
        _ => None,
    });
    match code {
        None => Err(client_not_found()),
        Some(code) if code >= 0x80 => Err(ApiError::bad_request(format!(
            "subscription refused: reason code 0x{code:02X}"
        ))),
        Some(qos) => Ok(axum::Json(Subscribed {
            clientid: client_id,
            topic: b.topic,
            qos,
            node: ctx.node.clone(),
        })),
    }
}

/// `POST /clients/{clientid}/unsubscribe`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UnsubscribeBody {
    /// Topic filter, as subscribed.
    topic: String,
}

/// Removes a subscription of a client.
#[utoipa::path(post, path = "/api/v5/clients/{clientid}/unsubscribe", tag = "Clients",
    params(("clientid" = String, Path, description = "Client ID")),
    request_body = UnsubscribeBody,
    responses((status = 204, description = "Unsubscribed"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "No such client or subscription", body = ErrorBody)))]
pub(crate) async fn unsubscribe(
    State(ctx): St,
    Path(client_id): Path<String>,
    J(b): J<UnsubscribeBody>,
) -> Result<StatusCode, ApiError> {
    find_client(&ctx, &client_id).await?;
    let replies = ctx
        .shards
        .ask_all(AdminOp::Unsubscribe {
            client_id,
            filter: b.topic,
        })
        .await?;
    if replies.iter().any(|r| matches!(r, AdminReply::Done(true))) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such subscription"))
    }
}

/// `GET /subscriptions` query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SubsParams {
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Entries per page (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Of this client.
    clientid: Option<String>,
    /// Exactly this filter.
    topic: Option<String>,
    /// With this QoS.
    #[param(minimum = 0, maximum = 2)]
    qos: Option<u8>,
    /// Shared subscriptions of this group.
    share_group: Option<String>,
    /// Filters matching this topic name.
    match_topic: Option<String>,
}

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SubPage {
    data: Vec<Sub>,
    meta: Meta,
}

/// Every subscription, filtered and paged.
#[utoipa::path(get, path = "/api/v5/subscriptions", tag = "Subscriptions", params(SubsParams),
    responses((status = 200, description = "A page of subscriptions", body = SubPage),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn subscriptions(
    State(ctx): St,
    Q(p): Q<SubsParams>,
) -> Result<axum::Json<SubPage>, ApiError> {
    let (page, limit) = Paging {
        page: p.page,
        limit: p.limit,
    }
    .get()?;
    if let Some(t) = &p.match_topic
        && topic::validate_topic_name(t).is_err()
    {
        return Err(ApiError::bad_request(format!(
            "match_topic: not a topic name: {t:?}"
        )));
    }
    let query = SubQuery {
        client_id: p.clientid,
        topic: p.topic,
        qos: p.qos.map(|q| qos_of("qos", q)).transpose()?,
        share_group: p.share_group,
        match_topic: p.match_topic,
    };
    let keep = page * limit;
    let (mut count, mut all) = (0, Vec::new());
    ctx.shards
        .walk(
            |scan| AdminOp::Subscriptions {
                query: query.clone(),
                keep,
                scan,
            },
            |r| {
                if let AdminReply::Subscriptions { total, page, .. } = r {
                    count += total;
                    all.extend(page);
                    prune(&mut all, keep, |s| (s.client_id.clone(), s.topic.clone()));
                }
            },
        )
        .await?;
    let data = take_page(all, page, limit, |s| (s.client_id.clone(), s.topic.clone()))
        .into_iter()
        .map(|s| sub_json(&ctx.node, s))
        .collect();
    Ok(axum::Json(SubPage {
        data,
        meta: Meta::new(page, limit, count),
    }))
}

/// `GET /topics` query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TopicsParams {
    /// Page number, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Entries per page (1 to 10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// Exactly this filter.
    topic: Option<String>,
}

/// A route: a topic filter some client subscribes to, and the node.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Route {
    topic: String,
    node: String,
}

/// A page of routes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoutePage {
    data: Vec<Route>,
    meta: Meta,
}

/// The route table: every topic filter with a subscriber (shared subscriptions excluded).
#[utoipa::path(get, path = "/api/v5/topics", tag = "Subscriptions", params(TopicsParams),
    responses((status = 200, description = "A page of routes", body = RoutePage),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn topics(
    State(ctx): St,
    Q(p): Q<TopicsParams>,
) -> Result<axum::Json<RoutePage>, ApiError> {
    let (page, limit) = Paging {
        page: p.page,
        limit: p.limit,
    }
    .get()?;
    // A filter can have subscribers on several shards: every shard lists all of its own, and
    // they are deduplicated here.
    let replies = ctx
        .shards
        .ask_all(AdminOp::Topics {
            topic: p.topic,
            keep: usize::MAX,
        })
        .await?;
    let mut all = BTreeSet::new();
    for r in replies {
        if let AdminReply::Topics { page, .. } = r {
            all.extend(page);
        }
    }
    let count = all.len();
    let data = all
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|topic| Route {
            topic,
            node: ctx.node.clone(),
        })
        .collect();
    Ok(axum::Json(RoutePage {
        data,
        meta: Meta::new(page, limit, count),
    }))
}

// ---- publish ------------------------------------------------------------------------------------

/// MQTT 5 properties of a message published through the API.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct PublishProps {
    /// 0 (bytes) or 1 (UTF-8).
    #[schema(minimum = 0, maximum = 1)]
    payload_format_indicator: Option<u8>,
    /// Seconds.
    message_expiry_interval: Option<u32>,
    response_topic: Option<String>,
    /// Correlation Data (as a string).
    correlation_data: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    user_properties: std::collections::BTreeMap<String, String>,
}

/// `POST /publish`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct PublishBody {
    /// Topic Name (no wildcards).
    topic: String,
    /// Payload, as `payload_encoding` says.
    #[serde(default)]
    payload: String,
    /// `plain` (default) or `base64`.
    #[serde(default)]
    payload_encoding: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    /// Shown as the publisher (EMQX's field; informational).
    #[serde(default)]
    #[allow(dead_code)]
    clientid: Option<String>,
    #[serde(default)]
    properties: Option<PublishProps>,
}

/// The answer to one publish: its id, or why it reached nobody.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Published {
    /// The message id (hex), when some subscriber matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// 16 (no matching subscribers) when nobody matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn admin_publish(b: PublishBody) -> Result<AdminPublish, ApiError> {
    if topic::validate_topic_name(&b.topic).is_err() || b.topic.starts_with("$SYS/") {
        return Err(ApiError::bad_request(format!(
            "topic: not a topic name one may publish to: {:?}",
            b.topic
        )));
    }
    let payload = match b.payload_encoding.as_deref().unwrap_or("plain") {
        "plain" => bytes::Bytes::from(b.payload.into_bytes()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(b.payload.as_bytes())
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::bad_request(format!("payload: not base64: {e}")))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding: expected plain or base64, got {other:?}"
            )));
        }
    };
    let mut properties = net::mqtt::PublishProperties::default();
    if let Some(p) = b.properties {
        match p.payload_format_indicator {
            None | Some(0) => {}
            Some(1) => {
                if std::str::from_utf8(&payload).is_err() {
                    return Err(ApiError::bad_request(
                        "payload: payload_format_indicator is 1 but the payload is not UTF-8",
                    ));
                }
            }
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "properties.payload_format_indicator: expected 0 or 1, got {v}"
                )));
            }
        }
        properties.payload_format_indicator = p.payload_format_indicator.map(|v| v == 1);
        properties.message_expiry_interval = p.message_expiry_interval;
        if let Some(t) = p.response_topic {
            if topic::validate_topic_name(&t).is_err() {
                return Err(ApiError::bad_request(format!(
                    "properties.response_topic: not a topic name: {t:?}"
                )));
            }
            properties.response_topic = Some(t.into());
        }
        properties.correlation_data = p
            .correlation_data
            .map(|c| bytes::Bytes::from(c.into_bytes()));
        properties.content_type = p.content_type.map(Into::into);
        properties.user_properties = p
            .user_properties
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    }
    Ok(AdminPublish {
        topic: b.topic,
        payload,
        qos: qos_of("qos", b.qos)?,
        retain: b.retain,
        properties,
    })
}

async fn publish_one(ctx: &Ctx, p: AdminPublish) -> Result<Published, ApiError> {
    // The shard that owns the topic publishes it (its retained store is there too).
    let shard = usize::from(shard::core::owner_of(&p.topic, ctx.shards.count() as u16));
    match ctx.shards.ask(shard, AdminOp::Publish(Box::new(p))).await? {
        AdminReply::Published { matched: true, id } => Ok(Published {
            id: Some(format!("{id:016X}")),
            reason_code: None,
            message: None,
        }),
        _ => Ok(Published {
            id: None,
            reason_code: Some(16),
            message: Some("no_matching_subscribers".to_owned()),
        }),
    }
}

/// Publishes a message as the broker. 200 with its id when some subscriber matched; 202 with
/// reason code 16 when none did (a retained message is stored either way).
#[utoipa::path(post, path = "/api/v5/publish", tag = "Publish", request_body = PublishBody,
    responses((status = 200, description = "Delivered to the matching subscribers", body = Published),
        (status = 202, description = "No subscriber matched", body = Published),
        (status = 400, description = "Bad message", body = ErrorBody)))]
pub(crate) async fn publish(State(ctx): St, J(b): J<PublishBody>) -> Result<Response, ApiError> {
    let p = admin_publish(b)?;
    let r = publish_one(&ctx, p).await?;
    let status = if r.id.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(r)).into_response())
}

/// Publishes several messages; one answer per message, in order. 200 when every one matched
/// a subscriber, 202 otherwise. Every message is checked before any is published.
#[utoipa::path(post, path = "/api/v5/publish/bulk", tag = "Publish", request_body = [PublishBody],
    responses((status = 200, description = "Every message matched", body = [Published]),
        (status = 202, description = "Some message matched nobody", body = [Published]),
        (status = 400, description = "Bad message (nothing published)", body = ErrorBody)))]
pub(crate) async fn publish_bulk(
    State(ctx): St,
    J(bodies): J<Vec<PublishBody>>,
) -> Result<Response, ApiError> {
    if bodies.is_empty() || bodies.len() > MAX_BULK {
        return Err(ApiError::bad_request(format!(
            "expected 1 to {MAX_BULK} messages, got {}",
            bodies.len()
        )));
    }
    let mut msgs = Vec::with_capacity(bodies.len());
    for (i, b) in bodies.into_iter().enumerate() {
        msgs.push(
            admin_publish(b)
                .map_err(|e| ApiError::bad_request(format!("[{i}]: {}", e.message())))?,
        );
    }
    let mut out = Vec::with_capacity(msgs.len());
    for p in msgs {
        out.push(publish_one(&ctx, p).await?);
    }
    let status = if out.iter().all(|r| r.id.is_some()) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(out)).into_response())
}

// ---- listeners ----------------------------------------------------------------------------------

/// A listener.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Listener {
    /// `tcp:default`.
    id: String,
    /// `tcp`, `ssl`, `ws`, `wss`, `quic`, `http`.
    #[serde(rename = "type")]
    kind: String,
    name: String,
    /// Where it listens.
    bind: String,
    /// Its configuration key.
    config_key: String,
    enable: bool,
    running: bool,
}

/// The listeners that run.
#[utoipa::path(get, path = "/api/v5/listeners", tag = "Listeners",
    responses((status = 200, description = "The listeners", body = [Listener])))]
pub(crate) async fn listeners(State(ctx): St) -> axum::Json<Vec<Listener>> {
    axum::Json(
        ctx.listeners
            .iter()
            .map(|l| Listener {
                id: format!("{}:default", l.name),
                kind: l.name.to_owned(),
                name: "default".to_owned(),
                bind: l.addr.to_string(),
                config_key: l.key.to_owned(),
                enable: true,
                running: true,
            })
            .collect(),
    )
}

// ---- retained -----------------------------------------------------------------------------------

/// A retained message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetainedMsg {
    /// The message id (hex).
    msgid: String,
    topic: String,
    qos: u8,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
}

/// A page of retained messages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RetainedPage {
    data: Vec<RetainedMsg>,
    meta: Meta,
}

/// The retained messages (without payloads), in topic order.
#[utoipa::path(get, path = "/api/v5/mqtt/retainer/messages", tag = "Retainer", params(Paging),
    responses((status = 200, description = "A page of retained messages", body = RetainedPage),
        (status = 400, description = "Bad parameters", body = ErrorBody)))]
pub(crate) async fn retained_list(
    State(ctx): St,
    Q(p): Q<Paging>,
) -> Result<axum::Json<RetainedPage>, ApiError> {
    let (page, limit) = p.get()?;
    let replies = ctx
        .shards
        .ask_all(AdminOp::Retained {
            topic: None,
            keep: page * limit,
        })
        .await?;
    let (mut count, mut all) = (0, Vec::new());
    for r in replies {
        if let AdminReply::Retained { total, page } = r {
            count += total;
            all.extend(page);
        }
    }
    let data = take_page(all, page, limit, |r| r.topic.clone())
        .into_iter()
        .map(|r| RetainedMsg {
            msgid: format!("{:016X}", r.id),
            topic: r.topic,
            qos: r.qos,
            payload: None,
        })
        .collect();
    Ok(axum::Json(RetainedPage {
        data,
        meta: Meta::new(page, limit, count),
    }))
}

/// The retained message of a topic, with its payload (base64).
#[utoipa::path(get, path = "/api/v5/mqtt/retainer/message/{topic}", tag = "Retainer",
    params(("topic" = String, Path, description = "Topic name (slashes may stay unescaped)")),
    responses((status = 200, description = "The message", body = RetainedMsg),
        (status = 404, description = "No retained message on the topic", body = ErrorBody)))]
pub(crate) async fn retained_get(
    State(ctx): St,
    Path(topic): Path<String>,
) -> Result<axum::Json<RetainedMsg>, ApiError> {
    let shard = usize::from(shard::core::owner_of(&topic, ctx.shards.count() as u16));
    let reply = ctx
        .shards
        .ask(
            shard,
            AdminOp::Retained {
                topic: Some(topic),
                keep: 1,
            },
        )
        .await?;
    match reply {
        AdminReply::Retained { page, .. } if !page.is_empty() => {
            let r = page.into_iter().next().ok_or_else(no_retained)?;
            Ok(axum::Json(RetainedMsg {
                msgid: format!("{:016X}", r.id),
                topic: r.topic,
                qos: r.qos,
                payload: Some(base64::engine::general_purpose::STANDARD.encode(&r.payload)),
            }))
        }
        _ => Err(no_retained()),
    }
}

fn no_retained() -> ApiError {
    ApiError::not_found("Viewed message doesn't exist")
}

/// Deletes the retained message of a topic.
#[utoipa::path(delete, path = "/api/v5/mqtt/retainer/message/{topic}", tag = "Retainer",
    params(("topic" = String, Path, description = "Topic name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No retained message on the topic", body = ErrorBody)))]
pub(crate) async fn retained_delete(
    State(ctx): St,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    let shard = usize::from(shard::core::owner_of(&topic, ctx.shards.count() as u16));
    match ctx
        .shards
        .ask(shard, AdminOp::DeleteRetained { topic })
        .await?
    {
        AdminReply::Done(true) => Ok(StatusCode::NO_CONTENT),
        _ => Err(no_retained()),
    }
}

// ---- log ----------------------------------------------------------------------------------------

/// The console log's settings (EMQX's `log.console`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LogConsole {
    /// `error`, `warning`, `notice`, `info`, `debug` (EMQX's names; `warn` and `trace`
    /// also accepted).
    #[serde(default)]
    level: Option<String>,
    /// `text` or `json`.
    #[serde(default)]
    formatter: Option<String>,
    #[serde(default)]
    enable: Option<bool>,
}

/// `GET|PUT /configs/log`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct LogConfig {
    console: LogConsole,
}

fn log_now() -> LogConfig {
    let level = match log::max_level() {
        log::LevelFilter::Off => "none",
        log::LevelFilter::Error => "error",
        log::LevelFilter::Warn => "warning",
        log::LevelFilter::Info => "info",
        log::LevelFilter::Debug => "debug",
        log::LevelFilter::Trace => "trace",
    };
    LogConfig {
        console: LogConsole {
            level: Some(level.to_owned()),
            formatter: Some(
                if crate::logger::is_json() {
                    "json"
                } else {
                    "text"
                }
                .to_owned(),
            ),
            enable: Some(true),
        },
    }
}

/// The log's level and format.
#[utoipa::path(get, path = "/api/v5/configs/log", tag = "Configs",
    responses((status = 200, description = "The log settings", body = LogConfig)))]
pub(crate) async fn log_get() -> axum::Json<LogConfig> {
    axum::Json(log_now())
}

/// Changes the log's level and format at run time (not saved to the configuration file).
#[utoipa::path(put, path = "/api/v5/configs/log", tag = "Configs", request_body = LogConfig,
    responses((status = 200, description = "The new settings", body = LogConfig),
        (status = 400, description = "Bad value", body = ErrorBody)))]
pub(crate) async fn log_put(J(c): J<LogConfig>) -> Result<axum::Json<LogConfig>, ApiError> {
    let level = c
        .console
        .level
        .as_deref()
        .map(|l| match l {
            "emergency" | "alert" | "critical" | "error" => Ok(log::LevelFilter::Error),
            "warning" | "warn" | "notice" => Ok(log::LevelFilter::Warn),
            "info" => Ok(log::LevelFilter::Info),
            "debug" => Ok(log::LevelFilter::Debug),
            "trace" | "all" => Ok(log::LevelFilter::Trace),
            "none" => Ok(log::LevelFilter::Off),
            other => Err(ApiError::bad_request(format!(
                "console.level: expected error, warning, info, debug, trace or none, got {other:?}"
            ))),
        })
        .transpose()?;
    let json = c
        .console
        .formatter
        .as_deref()
        .map(|f| match f {
            "text" => Ok(false),
            "json" => Ok(true),
            other => Err(ApiError::bad_request(format!(
                "console.formatter: expected text or json, got {other:?}"
            ))),
        })
        .transpose()?;
    if let Some(level) = level {
        crate::logger::set_level(level);
        log::warn!("log level set to {level} through the REST API");
    }
    if let Some(json) = json {
        crate::logger::set_json(json);
    }
    Ok(axum::Json(log_now()))
}

// ---- time ---------------------------------------------------------------------------------------

fn client_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "CLIENTID_NOT_FOUND",
        "Client ID not found",
    )
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds, as EMQX writes them
/// (`2026-11-26T15:04:09.123+00:00`).
pub(crate) fn rfc3339(ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => ms.to_string(),
    }
}

/// Unix milliseconds from `1700000000000` or RFC 3339 (`2026-11-26T14:54:09Z`,
/// `...09.5+01:00`).
pub(crate) fn parse_time(field: &str, s: &str) -> Result<u64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}: expected Unix milliseconds or an RFC 3339 time, got {s:?}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(rfc3339(1_795_705_449_123), "2026-11-26T15:04:09.123+00:00");
        let parse = |s: &str| parse_time("t", s).ok();
        for ms in [0, 951_782_400_000, 1_795_705_449_123, 4_102_444_800_999] {
            assert_eq!(parse(&rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse("2026-11-26T16:04:09+01:00"), Some(1_795_705_449_000));
        assert_eq!(parse("2026-11-26T15:04:09.5Z"), Some(1_795_705_449_500));
        assert_eq!(parse("1700000000000"), Some(1_700_000_000_000));
        for bad in [
            "",
            "yesterday",
            "2026-11-26",
            "2026-13-26T00:00:00Z",
            "2026-11-26T00:00:00",
            "x026-11-26T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paging_is_checked() {
        let p = |page, limit| {
            Paging { page, limit }
                .get()
                .map_err(|e| e.message().to_owned())
        };
        assert_eq!(p(None, None).ok(), Some((1, 100)));
        assert!(p(Some(0), None).is_err());
        assert!(p(None, Some(0)).is_err());
        assert!(p(None, Some(MAX_LIMIT + 1)).is_err());
        assert_eq!(p(Some(3), Some(7)).ok(), Some((3, 7)));
        let page = take_page(vec![5, 3, 9, 1, 7], 2, 2, |v| *v);
        assert_eq!(page, vec![5, 7]);
        assert!(Meta::new(2, 2, 5).hasnext);
        assert!(!Meta::new(3, 2, 5).hasnext);
    }
}
