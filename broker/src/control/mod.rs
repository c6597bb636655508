//! The control plane: one thread running a small tokio runtime that serves HTTP on
//! `dashboard.listeners.http.bind` (and HTTPS on `dashboard.listeners.https.bind`): the health
//! check (`/status`, EMQX's `/api/v5/status`), the Prometheus endpoint (`/metrics`, EMQX's
//! `/api/v5/prometheus/stats`), the REST API v5 (module `api`) behind access control
//! ([`crate::access`]) and its OpenAPI document (`/api-docs`).
//!
//! It never touches a shard's state. Figures come from the snapshot each shard publishes
//! twice a second (`shard::driver::ShardSpec::metrics`), so a scrape costs the shards nothing;
//! everything else is a request on the shards' rings (module `shards`), answered by each shard
//! between its other ring messages.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use shard::core::{ShardMsg, SysSnapshot};
use shard::ring::MeshEndpoint;

mod api;
mod https;
mod openapi;
mod prom;
mod shards;

/// The per-shard snapshot slots, in shard order.
pub type Slots = Vec<Arc<ArcSwapOption<SysSnapshot>>>;

/// The running control plane.
#[derive(Debug)]
pub struct Control {
    /// Where HTTP is served, if it is.
    pub addr: Option<SocketAddr>,
    /// Where HTTPS is served, if it is.
    pub https_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Control {
    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the control plane serves from.
#[derive(Debug)]
pub struct PlaneSpec {
    /// `node.name`.
    pub node: String,
    /// The shards' snapshot slots.
    pub slots: Slots,
    /// Each shard's I/O driver (`io_uring` or `epoll`).
    pub drivers: Vec<&'static str>,
    /// The control plane's endpoint of the ring mesh (the last one).
    pub mesh: MeshEndpoint<ShardMsg>,
    /// The listeners that run.
    pub listeners: Vec<ListenerInfo>,
    /// The REST API's users and keys, opened.
    pub access: Arc<crate::access::Access>,
    /// `dashboard.metrics_auth`: the Prometheus endpoints need credentials too.
    pub metrics_auth: bool,
    /// The HTTPS listener (already bound) and its TLS configuration, if enabled.
    pub https: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
}

/// A listener, as `GET /api/v5/listeners` shows it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Its kind: `tcp`, `ssl`, `ws`, `wss`, `quic`, `http`.
    pub name: &'static str,
    /// Its configuration key (`listeners.tcp.default`).
    pub key: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
}

pub(crate) struct Ctx {
    pub(crate) node: String,
    pub(crate) slots: Slots,
    /// Each shard's I/O driver (`io_uring` or `epoll`).
    pub(crate) drivers: Vec<&'static str>,
    /// Requests to the shards, over the rings.
    pub(crate) shards: shards::Shards,
    pub(crate) listeners: Vec<ListenerInfo>,
    /// When the control plane started (for uptime).
    pub(crate) started: std::time::Instant,
}

/// Serves HTTP on `http` and HTTPS on `spec.https` (already bound; at least one) from its own
/// thread. The caller opens the REST API's access control (`spec.access`) before the shards
/// start.
pub fn start(http: Option<std::net::TcpListener>, spec: PlaneSpec) -> io::Result<Control> {
    let addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
    if let Some(l) = &http {
        l.set_nonblocking(true)?;
    }
    let https = match spec.https {
        Some((l, tls)) => {
            l.set_nonblocking(true)?;
            Some((l.local_addr()?, l, tls))
        }
        None => None,
    };
    let https_addr = https.as_ref().map(|h| h.0);
    let access = spec.access;
    let metrics_auth = spec.metrics_auth;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (shards, pump) = shards::Shards::new(spec.mesh, spec.slots.len());
    let ctx = Arc::new(Ctx {
        node: spec.node,
        slots: spec.slots,
        drivers: spec.drivers,
        shards,
        listeners: spec.listeners,
        started: std::time::Instant::now(),
    });
    let thread = thread::Builder::new()
        .name("control".to_owned())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("control plane: cannot start its runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                tokio::spawn(pump.run());
                let router = app(ctx, access, metrics_auth);
                // One stop signal for both listeners.
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    let _ = rx.await;
                    let _ = stop_tx.send(true);
                });
                let https =
                    https.and_then(|(_, l, tls)| match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => Some(tokio::spawn(https::serve(
                            l,
                            tls,
                            router.clone(),
                            stop_rx.clone(),
                        ))),
                        Err(e) => {
                            log::error!("control plane: dashboard.listeners.https: {e}");
                            None
                        }
                    });
                if let Some(listener) = http {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            log::error!("control plane: {e}");
                            return;
                        }
                    };
                    let mut stop = stop_rx;
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.changed().await;
                        })
                        .await;
                    if let Err(e) = served {
                        log::error!("control plane: {e}");
                    }
                }
                if let Some(https) = https {
                    let _ = https.await;
                }
            });
        })?;
    Ok(Control {
        addr,
        https_addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Every route: the public ones (health, OpenAPI), the metrics (public unless
/// `dashboard.metrics_auth`), the REST API behind [`crate::access::authorize`], and access
/// control's own routes (login, users, API keys).
fn app(ctx: Arc<Ctx>, access: Arc<crate::access::Access>, metrics_auth: bool) -> Router {
    let guard = || axum::middleware::from_fn_with_state(access.clone(), crate::access::authorize);
    let public = Router::new()
        .route("/status", get(status))
        .route("/api/v5/status", get(status))
        .route("/api-docs", get(openapi::serve));
    let mut scrape = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v5/prometheus/stats", get(metrics));
    if metrics_auth {
        scrape = scrape.route_layer(guard());
    }
    let api = api::routes().route_layer(guard());
    public
        .merge(scrape)
        .merge(api)
        .with_state(ctx)
        .merge(crate::access::router(access))
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
}

/// Gives axum's own bodiless answers (405 for a method a path does not take) a JSON body
/// like every other error.
async fn json_errors(resp: axum::response::Response) -> axum::response::Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"code":"METHOD_NOT_ALLOWED","message":"this path does not take that method"}"#,
    )
        .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// EMQX's health check: 200 once every shard runs, 503 before.
async fn status(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    let running = ctx.slots.iter().all(|s| s.load().is_some());
    if running {
        (
            StatusCode::OK,
            format!("Node {} is started\nbroker is running\n", ctx.node),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Node {} is starting\n", ctx.node),
        )
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"code":"NOT_FOUND","message":"no such endpoint"}"#,
    )
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prom::render(&ctx.slots, &ctx.drivers),
    )
}
