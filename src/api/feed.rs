//! `GET /api/v1/feed?partition=P&cursor=N&epoch=E&limit=L&timeout=S` (API
//! key; `partition` with `--feed-partitions`, default 0): the
//! backend feed, what clients do (direct and group messages, receipts,
//! group read marks, status choices; presence with `--feed-presence`),
//! durable and in order, read like a user's queue: the events
//! after the cursor, held up to `timeout` seconds (0, the default: answer
//! at once) when there are none. Passing `cursor=N` acks N, so acked events
//! follow the queue's retention (unless `--webhook-url` pushes the feed:
//! then the webhook acks); a cursor behind what is kept gets a `gap`.
//! A message and its feed event are committed together.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{raw_json, Response};
use crate::http::request::Query;
use crate::pages::{page_json, parse_epoch, read_after};
use crate::uid::Uid;

/// Default and largest page of the feed.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

pub async fn handle(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    if !app.config.feed {
        return Err(Error::NotFound(
            "the backend feed is off: start herald with --feed".into(),
        ));
    }
    let query = Query::of(&req);
    let cursor = query.u64("cursor")?.unwrap_or(0);
    let limit = query.u64_in("limit", 1..=MAX_LIMIT, DEFAULT_LIMIT)? as usize;
    let timeout = query.u64_in("timeout", 0..=110, 0)?;
    let epoch = parse_epoch(query.get("epoch"))?;
    let last = u64::from(app.config.feed_partitions.max(1)) - 1;
    let partition = query.u64_in("partition", 0..=last, 0)?;
    drop(req);
    let feed = Uid::feed_partition(partition as u32);
    // Refused (409, 400) before it acks anything.
    let mut page = read_after(app, &feed, cursor, limit, epoch).await?;
    // With the webhook on, its cursor is the one that acks.
    if epoch.is_none_or(|e| e == page.epoch) && cursor > 0 && app.config.webhook_url.is_none() {
        app.store.ack(&feed, cursor).await?;
    }
    if page.events.is_empty() && timeout > 0 {
        let mut head = app.store.watch(&feed).await?;
        // Acked: from here a store failure answers the empty page read
        // above (the consumer asks again) rather than a refusal.
        page = read_after(app, &feed, cursor, limit, epoch)
            .await
            .unwrap_or(page);
        if page.events.is_empty() {
            tokio::select! {
                _ = head.wait_for(|&h| h > cursor) => {}
                _ = tokio::time::sleep(Duration::from_secs(timeout)) => {}
                _ = app.shutdown.cancelled() => {}
            }
            page = read_after(app, &feed, cursor, limit, epoch)
                .await
                .unwrap_or(page);
        }
    }
    // Not a client's delivery: no pull hints, not counted per transport.
    Ok(raw_json(StatusCode::OK, page_json(app, &page, false)))
}
