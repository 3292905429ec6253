//! The webhook (`--webhook-url`): the backend feed, pushed. One task reads
//! the feed after its cursor and `POST`s each page to the backend, in feed
//! order, as the same JSON `GET /api/v1/feed` answers with. A batch counts
//! as delivered when the backend answers 2xx; then the cursor (kept in the
//! store, so a restart resumes) moves past it and the feed is acked up to
//! it. Anything else (an error status, no answer within
//! `--webhook-timeout-ms`, no connection) is retried with the same events
//! after a backoff (0.5 s doubling to 30 s, at least a `Retry-After`):
//! delivery is at least once, and the events' `seq` is the idempotency key.
//! Each `POST` carries `Herald-Feed-Cursor` (its last seq),
//! `Herald-Feed-Partition` (with `--feed-partitions N`, one task per
//! partition, each with its own cursor and lock: partitions are pushed in
//! parallel, each in order) and `Herald-Signature: sha256=` HMAC-SHA256 of
//! the body keyed by the API key.
//!
//! Browsers never wait for it: the feed event is written with the message,
//! and this task reads it later. In a cluster every node runs the task and
//! the store's lock lets one `POST` at a time, so batches stay in order; a
//! node that finds the lock taken looks again a second later (a node killed
//! while posting holds it at most the lock's 10 s lease).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::chat::hook::backend_url;
use crate::pages::{page_json, read_after};
use crate::store::{Epoch, Page};
use crate::uid::Uid;

/// Where the webhook's cursor is kept.
const CURSOR_KEY: &str = "webhook/cursor";
/// Most events in one `POST`.
const BATCH: usize = 100;
/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long an idle task waits for the feed before it looks again anyway
/// (a wake-up lost by a cluster node costs at most this).
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// How soon a node that found another posting looks again.
const BUSY_RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Webhook {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
}

/// The webhook's position in the feed, as stored.
#[derive(Serialize, Deserialize, Default)]
struct Position {
    cursor: u64,
    epoch: Option<String>,
}

/// What one attempt did.
enum Attempt {
    Delivered,
    /// Nothing after the cursor.
    Idle,
    /// Another node holds the lock (it is posting).
    Busy,
}

/// Why a batch was not delivered, and how soon to try again at the
/// earliest.
struct Failed {
    reason: String,
    retry_after: Option<Duration>,
}

impl Webhook {
    /// A webhook at `url` (plain `http://`); `Err` with a reason otherwise.
    pub fn new(url: &str, timeout: Duration) -> Result<Webhook, String> {
        Ok(Webhook {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: backend_url("--webhook-url", url)?,
            timeout,
        })
    }

    /// Pushes partition `partition` of the feed until `app` shuts down.
    pub async fn run(self, app: Arc<App>, partition: u32) {
        let feed = Uid::feed_partition(partition);
        let at = Spot::of(partition);
        let mut backoff = MIN_BACKOFF;
        loop {
            let wait = match self.deliver_one(&app, &feed, &at).await {
                Ok(Attempt::Delivered) => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Ok(Attempt::Idle) => None,
                Ok(Attempt::Busy) => Some(BUSY_RECHECK),
                Err(failed) => {
                    tracing::warn!("webhook: {}; retrying", failed.reason);
                    app.metrics.webhook_failed.inc();
                    let jitter = backoff.mul_f64(rand::random::<f64>() / 4.0);
                    let wait = (backoff + jitter).max(failed.retry_after.unwrap_or_default());
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    Some(wait)
                }
            };
            let waited = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => self.idle(&app, &feed, &at).await,
                }
            };
            tokio::select! {
                _ = waited => {}
                _ = app.shutdown.cancelled() => return,
            }
        }
    }

    /// Waits until the feed may have something after the webhook's cursor.
    async fn idle(&self, app: &App, feed: &Uid, at: &Spot) {
        let Ok(mut head) = app.store.watch(feed).await else {
            return tokio::time::sleep(MIN_BACKOFF).await;
        };
        let cursor = match position(app, at).await {
            Ok(position) => position.cursor,
            Err(_) => return tokio::time::sleep(MIN_BACKOFF).await,
        };
        let _ = tokio::time::timeout(IDLE_RECHECK, head.wait_for(|&h| h > cursor)).await;
    }

    /// Posts the next batch of the feed, if there is one and no other node
    /// is posting.
    async fn deliver_one(&self, app: &App, feed: &Uid, spot: &Spot) -> Result<Attempt, Failed> {
        let failed = |reason: String| Failed {
            reason,
            retry_after: None,
        };
        // One node at a time, from the cursor as the last one left it.
        let lease = app
            .store
            .try_lock(&spot.lock)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let Some(_lease) = lease else {
            return Ok(Attempt::Busy);
        };
        let at = position(app, spot).await.map_err(failed)?;
        let epoch = at.epoch.as_deref().and_then(Epoch::parse);
        let page = read_after(app, feed, at.cursor, BATCH, epoch)
            .await
            .map_err(|e| failed(format!("reading the feed: {e}")))?;
        if page.events.is_empty() {
            return Ok(Attempt::Idle);
        }
        let body = Bytes::from(page_json(app, &page, false));
        let posted = self.post(app, &page, spot.partition, body);
        match tokio::time::timeout(self.timeout, posted).await {
            Ok(result) => result?,
            Err(_) => return Err(failed(format!("no answer within {:?}", self.timeout))),
        }
        let next = Position {
            cursor: page.cursor,
            epoch: Some(page.epoch.to_string()),
        };
        let stored = serde_json::to_vec(&next).map_err(|e| failed(e.to_string()))?;
        app.store
            .kv_put(&spot.cursor, stored)
            .await
            .map_err(|e| failed(format!("keeping the cursor: {e}")))?;
        app.store
            .ack(feed, page.cursor)
            .await
            .map_err(|e| failed(format!("acking the feed: {e}")))?;
        app.metrics
            .webhook_delivered
            .inc_by(page.events.len() as u64);
        Ok(Attempt::Delivered)
    }

    async fn post(
        &self,
        app: &App,
        page: &Page,
        partition: u32,
        body: Bytes,
    ) -> Result<(), Failed> {
        let failed = |reason: String| Failed {
            reason,
            retry_after: None,
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("herald-feed-cursor", page.cursor)
            .header("herald-feed-partition", partition)
            .header("herald-signature", app.auth.sign(&body))
            .body(Full::new(body))
            .map_err(|e| failed(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| failed(format!("{}: {e}", self.url)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(|s: u64| Duration::from_secs(s.min(MAX_BACKOFF.as_secs())));
        // Read (and drop) the answer so the connection can be used again.
        let _ = http_body_util::Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(Failed {
                reason: format!("{} answered {status}", self.url),
                retry_after,
            })
        }
    }
}

/// One partition's task: where its cursor is kept, and its lock.
struct Spot {
    partition: u32,
    cursor: String,
    lock: String,
}

impl Spot {
    /// Partition 0's are those of a feed without partitions.
    fn of(partition: u32) -> Spot {
        let (cursor, lock) = match partition {
            0 => (CURSOR_KEY.to_owned(), "webhook".to_owned()),
            p => (format!("{CURSOR_KEY}/{p}"), format!("webhook/{p}")),
        };
        Spot {
            partition,
            cursor,
            lock,
        }
    }
}

/// Where the webhook is in its partition (the start of it, the first time).
async fn position(app: &App, spot: &Spot) -> Result<Position, String> {
    match app.store.kv_get(&spot.cursor).await {
        Ok(Some(raw)) => {
            serde_json::from_slice(&raw).map_err(|e| format!("the stored webhook cursor: {e}"))
        }
        Ok(None) => Ok(Position::default()),
        Err(e) => Err(format!("reading the webhook cursor: {e}")),
    }
}
