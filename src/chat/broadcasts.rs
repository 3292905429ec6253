//! Broadcasts from the system to many users, in two modes.
//!
//! - `push`: one `broadcast` event to every user online when it starts,
//!   paced by a token bucket at the requested rate so a broadcast cannot
//!   stampede the server; broadcasts queue behind each other on one worker.
//! - `pull`: stored once (kv `bcast/{bid:020}`); every keepalive of every
//!   transport carries the hint `{"broadcast": newest bid}` and clients
//!   fetch `GET /v1/broadcasts?after=B`, which spreads the load over one
//!   heartbeat interval.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::store::{now_ms, Append, Store, StoreError, TokenBuckets};
use crate::uid::Uid;

const PREFIX: &str = "bcast/";

fn key(bid: u64) -> String {
    format!("{PREFIX}{bid:020}")
}

struct PushJob {
    bid: u64,
    body: serde_json::Value,
    rate: NonZeroU32,
    recipients: Vec<Uid>,
}

pub struct Broadcasts {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    newest_pull: AtomicU64,
    jobs: mpsc::UnboundedSender<PushJob>,
}

impl Broadcasts {
    /// Loads the newest pull broadcast and starts the push worker.
    pub async fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        pacer: Pacer,
    ) -> Result<Arc<Broadcasts>, StoreError> {
        let newest = store
            .kv_last(PREFIX)
            .await?
            .and_then(|(k, _)| k[PREFIX.len()..].parse().ok())
            .unwrap_or(0);
        let (jobs, queue) = mpsc::unbounded_channel();
        let broadcasts = Arc::new(Broadcasts {
            store: store.clone(),
            metrics: metrics.clone(),
            newest_pull: AtomicU64::new(newest),
            jobs,
        });
        tokio::spawn(push_worker(queue, store, metrics, pacer));
        Ok(broadcasts)
    }

    /// A new broadcast id.
    pub async fn new_bid(&self) -> Result<u64, StoreError> {
        self.store.next_id(PREFIX).await
    }

    /// Queues push broadcast `bid` of `body` to `recipients` at `rate` per
    /// second.
    pub fn push(
        &self,
        bid: u64,
        body: serde_json::Value,
        rate: NonZeroU32,
        recipients: Vec<Uid>,
    ) -> Result<(), StoreError> {
        self.metrics
            .broadcast_pending
            .inc_by(recipients.len() as i64);
        self.jobs
            .send(PushJob {
                bid,
                body,
                rate,
                recipients,
            })
            .map_err(|_| StoreError::Closed)
    }

    /// Stores pull broadcast `bid` (again, the same, for a retry); the hints
    /// point to it once it is durable.
    pub async fn store_for_pull(
        &self,
        bid: u64,
        body: serde_json::Value,
    ) -> Result<(), StoreError> {
        let record = json!({"bid": bid, "body": body, "ts": now_ms()});
        self.store
            .kv_put(&key(bid), record.to_string().into_bytes())
            .await?;
        self.newest_pull.fetch_max(bid, Ordering::SeqCst);
        self.store.announce(PREFIX).await
    }

    /// Rereads the newest pull broadcast if an announced change (a key of
    /// [`crate::store::Records::announce`]) says another node stored one,
    /// or may have (`""`).
    pub async fn changed(&self, change: &str) -> Result<(), StoreError> {
        if !change.is_empty() && change != PREFIX {
            return Ok(());
        }
        if let Some(newest) = self
            .store
            .kv_last(PREFIX)
            .await?
            .and_then(|(k, _)| k[PREFIX.len()..].parse().ok())
        {
            self.newest_pull.fetch_max(newest, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Pull broadcasts after `after`, oldest first.
    pub async fn after(&self, after: u64, limit: usize) -> Result<Vec<Bytes>, StoreError> {
        let start = if after == 0 {
            PREFIX.to_owned()
        } else {
            key(after)
        };
        Ok(self
            .store
            .kv_range(PREFIX, &start, limit)
            .await?
            .into_iter()
            .map(|(_, v)| Bytes::from(v))
            .collect())
    }

    /// The hints every keepalive carries, as a JSON object, if any.
    pub fn hints(&self) -> Option<String> {
        match self.newest_pull.load(Ordering::SeqCst) {
            0 => None,
            bid => Some(format!(r#"{{"broadcast":{bid}}}"#)),
        }
    }
}

/// The pace of push broadcasts: a token bucket of the backend's per
/// broadcast ([`TokenBuckets`]), so the rate asked for is the whole
/// deployment's.
pub struct Pacer {
    buckets: Arc<dyn TokenBuckets>,
}

impl Pacer {
    pub fn new(buckets: Arc<dyn TokenBuckets>) -> Pacer {
        Pacer { buckets }
    }

    /// Waits until `n` more deliveries of broadcast `bid` fit its `rate`
    /// per second (`n` is at most a twentieth of a second's worth, or 1).
    async fn admit(&self, bid: u64, rate: NonZeroU32, n: NonZeroU32) {
        let burst = n.get().max(rate.get() / 20);
        loop {
            match self
                .buckets
                .take(&format!("bcast:{bid}"), rate.get(), burst, n.get())
                .await
            {
                Ok(wait) if wait.is_zero() => return,
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(e) => {
                    tracing::warn!("broadcast {bid} waits for the store: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

async fn push_worker(
    mut queue: mpsc::UnboundedReceiver<PushJob>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    pacer: Pacer,
) {
    while let Some(job) = queue.recv().await {
        // Appends go out in chunks of 1/20 s worth of deliveries.
        let chunk = (job.rate.get() / 20).max(1) as usize;
        let data = json!({"bid": job.bid, "body": job.body});
        for group in job.recipients.chunks(chunk) {
            let n = NonZeroU32::new(group.len() as u32).unwrap_or(NonZeroU32::MIN);
            pacer.admit(job.bid, job.rate, n).await;
            let batch = group
                .iter()
                .map(|u| Append::new(u.clone(), "broadcast", &data))
                .collect();
            match store.append(batch).await {
                Ok(_) => {
                    metrics.broadcast_delivered.inc_by(group.len() as u64);
                }
                Err(e) => {
                    tracing::warn!("broadcast {} to {} users failed: {e}", job.bid, group.len())
                }
            }
            metrics.broadcast_pending.dec_by(group.len() as i64);
        }
    }
}
