//! The control plane's side of the ring mesh: requests to shards and their answers.
//!
//! The control plane owns the last endpoint of the mesh. Handlers do not touch it: they queue
//! `(shard, message)` on a bounded channel to one pump task that pushes onto the rings (a full
//! ring is retried after a millisecond, so a busy shard slows the API, never the other way
//! round). Shards answer through the request's reply callback, a oneshot channel.

use std::time::Duration;

use shard::admin::{AdminOp, AdminReply, AdminRequest, Scan};
use shard::core::ShardMsg;
use shard::ring::MeshEndpoint;
use tokio::sync::{mpsc, oneshot};

use super::api::ApiError;

/// Requests queued for the pump, at most.
const QUEUE: usize = 256;

/// Session slots one step of a listing looks at (see [`shard::admin::Scan`]): the most
/// work one listing request gives a shard in one event-loop turn.
pub(crate) const SCAN_SLOTS: u32 = 2048;

/// How long a shard may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Handle to the shards, for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct Shards {
    tx: mpsc::Sender<(usize, ShardMsg)>,
    count: usize,
}

/// The task that owns the mesh endpoint.
pub(crate) struct Pump {
    mesh: MeshEndpoint<ShardMsg>,
    rx: mpsc::Receiver<(usize, ShardMsg)>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump").finish_non_exhaustive()
    }
}

impl Pump {
    /// Pushes queued requests onto the rings until every handle is gone.
    pub(crate) async fn run(mut self) {
        while let Some((dest, mut msg)) = self.rx.recv().await {
            loop {
                match self.mesh.send(dest, msg) {
                    Ok(()) => break,
                    Err(back) => {
                        msg = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
    }
}

impl Shards {
    /// The handle and the pump for `mesh`, whose other endpoints are `count` shards.
    pub(crate) fn new(mesh: MeshEndpoint<ShardMsg>, count: usize) -> (Self, Pump) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx, count }, Pump { mesh, rx })
    }

    /// The number of shards.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Asks shard `shard`.
    pub(crate) async fn ask(&self, shard: usize, op: AdminOp) -> Result<AdminReply, ApiError> {
        let rx = self.send(shard, op).await?;
        answer(rx).await
    }

    /// Queues `op` for `shard`; the answer comes on the receiver.
    async fn send(
        &self,
        shard: usize,
        op: AdminOp,
    ) -> Result<oneshot::Receiver<AdminReply>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let req = AdminRequest::new(op, move |reply| {
            let _ = tx.send(reply);
        });
        self.tx
            .send((shard, ShardMsg::Admin(Box::new(req))))
            .await
            .map_err(|_| ApiError::unavailable("the broker is stopping"))?;
        Ok(rx)
    }

    /// Walks every shard's sessions in steps of [`SCAN_SLOTS`]: asks `op(step)` until the
    /// shard's answer names no next step, handing each answer to `each`. Other ring messages
    /// are handled between the steps.
    pub(crate) async fn walk(
        &self,
        op: impl Fn(Scan) -> AdminOp,
        mut each: impl FnMut(AdminReply),
    ) -> Result<(), ApiError> {
        for shard in 0..self.count {
            let mut from = Some(0);
            while let Some(start) = from {
                let reply = self
                    .ask(
                        shard,
                        op(Scan {
                            from: start,
                            slots: SCAN_SLOTS,
                        }),
                    )
                    .await?;
                from = match &reply {
                    AdminReply::Clients { next, .. } | AdminReply::Subscriptions { next, .. } => {
                        *next
                    }
                    _ => None,
                };
                each(reply);
            }
        }
        Ok(())
    }

    /// Asks every shard, concurrently; the answers in shard order.
    pub(crate) async fn ask_all(&self, op: AdminOp) -> Result<Vec<AdminReply>, ApiError> {
        let mut waits = Vec::with_capacity(self.count);
        for shard in 0..self.count {
            waits.push(self.send(shard, op.clone()).await?);
        }
        let mut replies = Vec::with_capacity(self.count);
        for rx in waits {
            replies.push(answer(rx).await?);
        }
        Ok(replies)
    }
}

/// A shard's answer, or 503 when it dropped the request or took longer than [`TIMEOUT`].
async fn answer(rx: oneshot::Receiver<AdminReply>) -> Result<AdminReply, ApiError> {
    match tokio::time::timeout(TIMEOUT, rx).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(ApiError::unavailable("a shard dropped the request")),
        Err(_) => Err(ApiError::unavailable("a shard did not answer in time")),
    }
}
