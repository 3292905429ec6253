//! The client transports: thin views over the per-user queue.
//!
//! Each one authenticates the user, takes a cursor, and reads "events after
//! my cursor" from the store; they differ only in how they wait and how they
//! frame what they send.

pub mod command;
pub mod framer;
pub mod iframe;
pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod subscription;
pub mod ws;

use std::io::Write as _;

use hyper::{Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{raw_json, Response};
use crate::http::request::Query;
use crate::hub::Transport;
use crate::store::{event_json, event_seq, now_ms, Epoch, Follow, Page, PageLimit};
use crate::uid::Uid;

/// Default and largest page size of a poll.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// What a poll-like request asks for.
pub struct PollRequest {
    pub uid: Uid,
    pub cursor: u64,
    pub limit: usize,
    /// The epoch the cursor belongs to, if the client sent one.
    pub epoch: Option<Epoch>,
}

/// The `epoch` a client sent back: what a page or stream gave it.
pub fn parse_epoch(raw: Option<&str>) -> Result<Option<Epoch>, Error> {
    match raw {
        None | Some("") => Ok(None),
        Some(text) => Epoch::parse(text).map(Some).ok_or_else(|| {
            Error::bad(
                "bad_epoch",
                "epoch must be the 1-13 base-36 digits a page or stream gave",
            )
        }),
    }
}

impl PollRequest {
    /// Authenticates and parses `cursor` and `limit`. Changes nothing: see
    /// [`PollRequest::settle`].
    pub fn parse<B>(app: &App, req: &Request<B>) -> Result<PollRequest, Error> {
        let uid = app.auth.user(req)?;
        let query = Query::of(req);
        let cursor = query.u64("cursor")?.unwrap_or(0);
        let limit = query.u64_in("limit", 1..=MAX_LIMIT, DEFAULT_LIMIT)? as usize;
        let epoch = parse_epoch(query.get("epoch"))?;
        Ok(PollRequest {
            uid,
            cursor,
            limit,
            epoch,
        })
    }

    /// Acks the cursor (passing `cursor=N` on a poll acks N) and marks the
    /// user online. Call it once the request can no longer be refused, so
    /// that a refused one changes nothing. A cursor of another epoch than
    /// `page`'s acks nothing: it counts events of a history that is gone.
    pub async fn settle(&self, app: &App, page: &Page) -> Result<(), Error> {
        let same_history = self.epoch.is_none_or(|e| e == page.epoch);
        if self.cursor > 0 && same_history {
            app.receipts.ack(&self.uid, self.cursor).await?;
        }
        app.presence.polled(&self.uid);
        Ok(())
    }

    /// Reads the page after the cursor (409 if the cursor is beyond the
    /// head).
    pub async fn read(&self, app: &App) -> Result<Page, Error> {
        read_after(app, &self.uid, self.cursor, self.limit, self.epoch).await
    }
}

/// Reads events after `cursor`, group-message references expanded, at most
/// `limit` events and about `--max-page-bytes` (at least one event); a
/// cursor beyond the queue's head is a 409 so that the client resets
/// instead of waiting forever.
///
/// A cursor of another `epoch` than the queue's belongs to a history that
/// is gone (the store was wiped or recreated): the page then starts with a
/// `gap` event of seq 0 that names the new epoch, followed by the queue
/// from its start.
pub async fn read_after(
    app: &App,
    uid: &Uid,
    cursor: u64,
    events: usize,
    epoch: Option<Epoch>,
) -> Result<Page, Error> {
    read_following(app, uid, None, cursor, events, epoch).await
}

/// [`read_after`] for a reader that holds `follow` (see
/// [`crate::store::EventQueue::follow`]) on `uid`'s queue.
pub async fn read_following(
    app: &App,
    uid: &Uid,
    follow: Option<&Follow>,
    cursor: u64,
    events: usize,
    epoch: Option<Epoch>,
) -> Result<Page, Error> {
    let limit = PageLimit {
        events,
        bytes: app.config.max_page_bytes(),
    };
    let read = |after| async move {
        match follow {
            Some(follow) => app.store.read_followed(uid, follow, after, limit).await,
            None => app.store.read(uid, after, limit).await,
        }
    };
    let mut page = read(cursor).await?;
    if epoch.is_some_and(|e| e != page.epoch) {
        page = read(0).await?;
        let data = serde_json::json!({"from": 1, "to": cursor, "epoch": page.epoch.to_string()});
        let gap = event_json(0, "gap", now_ms(), &data.to_string());
        page.events.insert(0, bytes::Bytes::from(gap));
    } else if cursor > page.head {
        return Err(Error::cursor_ahead(cursor, page.head));
    }
    // References grow into whole messages here: the budget holds after.
    if crate::chat::group_log::expand(&app.group_log, &mut page.events, limit).await? {
        page.cursor = page
            .events
            .last()
            .and_then(|e| event_seq(e))
            .ok_or_else(|| Error::Internal("an event without a seq".into()))?;
    }
    Ok(page)
}

/// The response of a stream (SSE, iframe): `frames` as a chunked body
/// that no cache or proxy buffer holds back.
pub fn stream_response<S>(
    frames: S,
    content_type: &'static str,
    cache_control: &'static str,
) -> Response
where
    S: futures::Stream<Item = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>>
        + Send
        + 'static,
{
    use http_body_util::{BodyExt, StreamBody};
    use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
    let mut response = hyper::Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `{"events":[…],"cursor":M,"epoch":E}` (plus `"hints"` when there are
/// pull hints), written from the stored event JSON as is, counted as sent
/// on `transport`.
pub fn page_response(app: &App, transport: Transport, page: &Page) -> Response {
    let body = page_json(app, page, true);
    app.hub.sent(transport, page.events.len(), body.len());
    raw_json(StatusCode::OK, body)
}

/// The JSON of [`page_response`]; with `hints`, pull hints are added.
pub fn page_json(app: &App, page: &Page, hints: bool) -> Vec<u8> {
    let size: usize = page.events.iter().map(|e| e.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 40);
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    // Writing into a Vec cannot fail.
    let _ = write!(
        body,
        "],\"cursor\":{},\"epoch\":\"{}\"",
        page.cursor, page.epoch
    );
    if let Some(hints) = app.broadcasts.hints().filter(|_| hints) {
        let _ = write!(body, ",\"hints\":{hints}");
    }
    body.push(b'}');
    body
}
