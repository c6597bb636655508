//! The control plane: one thread running a small tokio runtime that serves HTTP on
//! `dashboard.listeners.http.bind` — for now the health check (`/status`, EMQX's
//! `/api/v5/status`) and the Prometheus endpoint (`/metrics`, EMQX's
//! `/api/v5/prometheus/stats`).
//!
//! It never touches a shard's state: each shard publishes a snapshot of its counters twice a
//! second (`shard::driver::ShardSpec::metrics`), and a scrape reads the latest ones, so
//! scraping costs the shards nothing.

use std::fmt::Write as _;
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
use shard::core::SysSnapshot;

/// The per-shard snapshot slots, in shard order.
pub type Slots = Vec<Arc<ArcSwapOption<SysSnapshot>>>;

/// The running control plane.
#[derive(Debug)]
pub struct Control {
    /// Where HTTP is served.
    pub addr: SocketAddr,
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

struct Ctx {
    node: String,
    slots: Slots,
    /// Each shard's I/O driver (`io_uring` or `epoll`).
    drivers: Vec<&'static str>,
}

/// Serves HTTP on `listener` (already bound) from its own thread.
pub fn start(
    listener: std::net::TcpListener,
    node: String,
    slots: Slots,
    drivers: Vec<&'static str>,
) -> io::Result<Control> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let ctx = Arc::new(Ctx {
        node,
        slots,
        drivers,
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
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("control plane: {e}");
                        return;
                    }
                };
                let app = Router::new()
                    .route("/status", get(status))
                    .route("/api/v5/status", get(status))
                    .route("/metrics", get(metrics))
                    .route("/api/v5/prometheus/stats", get(metrics))
                    .fallback(not_found)
                    .with_state(ctx);
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    log::error!("control plane: {e}");
                }
            });
        })?;
    Ok(Control {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
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
        render(&ctx.slots, &ctx.drivers),
    )
}

/// One metric family: name, help, type, and the value of each shard's snapshot.
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    value: fn(&SysSnapshot) -> u64,
}

macro_rules! counter {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            counter: true,
            value: |s| s.stats.$field,
        }
    };
}

const FAMILIES: &[Family] = &[
    Family {
        name: "broker_connections",
        help: "Open connections.",
        counter: false,
        value: |s| s.connections,
    },
    Family {
        name: "broker_sessions",
        help: "Sessions, online or not.",
        counter: false,
        value: |s| s.sessions,
    },
    Family {
        name: "broker_subscriptions",
        help: "Subscriptions (non-shared).",
        counter: false,
        value: |s| s.subscriptions,
    },
    Family {
        name: "broker_retained_messages",
        help: "Retained messages stored.",
        counter: false,
        value: |s| s.retained,
    },
    counter!(
        "broker_connections_accepted_total",
        "Sockets accepted.",
        connections_accepted
    ),
    counter!(
        "broker_client_connected_total",
        "Connections established (CONNACK with success).",
        connections_established
    ),
    counter!(
        "broker_client_connack_refused_total",
        "CONNECTs refused with a CONNACK error code.",
        connections_refused
    ),
    counter!(
        "broker_client_disconnected_total",
        "Established connections that ended.",
        connections_closed
    ),
    counter!(
        "broker_packets_received_total",
        "MQTT packets decoded.",
        packets_received
    ),
    counter!(
        "broker_packets_sent_total",
        "MQTT packets encoded.",
        packets_sent
    ),
    counter!(
        "broker_bytes_received_total",
        "Bytes of packets read from clients.",
        bytes_received
    ),
    counter!(
        "broker_bytes_sent_total",
        "Bytes handed to client sockets.",
        bytes_sent
    ),
    counter!(
        "broker_messages_received_total",
        "PUBLISH packets received from clients.",
        messages_received
    ),
    counter!(
        "broker_messages_sent_total",
        "PUBLISH packets sent to clients.",
        messages_sent
    ),
    counter!(
        "broker_messages_acked_total",
        "Outgoing QoS 1/2 messages acknowledged.",
        messages_acked
    ),
    counter!(
        "broker_messages_forwarded_total",
        "Messages handed to another shard.",
        messages_forwarded
    ),
    counter!(
        "broker_messages_retransmitted_total",
        "PUBLISH or PUBREL sent again.",
        messages_retransmitted
    ),
    counter!(
        "broker_messages_dropped_no_subscribers_total",
        "Published messages that matched no subscription.",
        dropped_no_subscribers
    ),
    counter!(
        "broker_delivery_dropped_queue_full_total",
        "Deliveries dropped because the session queue was full.",
        dropped_queue_full
    ),
    counter!(
        "broker_delivery_dropped_expired_total",
        "Deliveries whose Message Expiry Interval ran out.",
        dropped_expired
    ),
    counter!(
        "broker_delivery_dropped_too_large_total",
        "Deliveries over the client's Maximum Packet Size.",
        dropped_too_large
    ),
    counter!(
        "broker_messages_retained_delivered_total",
        "Retained messages delivered to new subscriptions.",
        retained_delivered
    ),
    counter!(
        "broker_messages_delayed_total",
        "Delayed publishes stored.",
        delayed_stored
    ),
    counter!(
        "broker_session_takeovers_total",
        "Sessions taken over by a new connection.",
        takeovers
    ),
    counter!(
        "broker_sessions_expired_total",
        "Offline sessions that expired.",
        sessions_expired
    ),
    counter!(
        "broker_wills_published_total",
        "Will Messages published.",
        wills_published
    ),
    counter!(
        "broker_protocol_errors_total",
        "Malformed packets and protocol errors.",
        protocol_errors
    ),
];

/// The Prometheus text exposition of every shard's last snapshot (label `shard`), and of
/// the process (CPU, RSS, open files).
fn render(slots: &Slots, drivers: &[&str]) -> String {
    let snaps: Vec<(usize, Arc<SysSnapshot>)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.load_full().map(|s| (i, s)))
        .collect();
    let mut out = String::with_capacity(8192);
    for f in FAMILIES {
        let kind = if f.counter { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (i, s) in &snaps {
            let _ = writeln!(out, "{}{{shard=\"{i}\"}} {}", f.name, (f.value)(s));
        }
    }
    out.push_str("# HELP broker_shard_info The I/O driver each shard runs on.\n");
    out.push_str("# TYPE broker_shard_info gauge\n");
    for (i, d) in drivers.iter().enumerate() {
        let _ = writeln!(out, "broker_shard_info{{shard=\"{i}\",driver=\"{d}\"}} 1");
    }
    process_metrics(&mut out);
    out
}

fn process_metrics(out: &mut String) {
    // SAFETY: sysconf has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14, stime 15 (1-based, whole line).
        let cpu = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if ticks > 0 {
            let secs = (cpu(11) + cpu(12)) / ticks as f64;
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total User and system CPU time.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {secs}"
            );
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(rss) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i64>().ok())
    {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident set size.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            rss * page
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
}
