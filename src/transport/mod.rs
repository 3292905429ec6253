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

use hyper::{Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{raw_json, Response};
use crate::http::request::Query;
use crate::hub::Transport;
use crate::store::{event_seq, Page, PageLimit};
use crate::uid::Uid;

/// Default and largest page size of a poll.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

/// What a poll-like request asks for.
pub struct PollRequest {
    pub uid: Uid,
    pub cursor: u64,
    pub limit: usize,
}

impl PollRequest {
    /// Authenticates and parses `cursor` and `limit`. Changes nothing: see
    /// [`PollRequest::settle`].
    pub fn parse<B>(app: &App, req: &Request<B>) -> Result<PollRequest, Error> {
        let uid = app.auth.user(req)?;
        let query = Query::of(req);
        let cursor = query.u64("cursor")?.unwrap_or(0);
        let limit = query.u64_in("limit", 1..=MAX_LIMIT, DEFAULT_LIMIT)? as usize;
        Ok(PollRequest { uid, cursor, limit })
    }

    /// Acks the cursor (passing `cursor=N` on a poll acks N) and marks the
    /// user online. Call it once the request can no longer be refused, so
    /// that a refused one changes nothing.
    pub async fn settle(&self, app: &App) -> Result<(), Error> {
        if self.cursor > 0 {
            app.receipts.ack(&self.uid, self.cursor).await?;
        }
        app.presence.polled(&self.uid);
        Ok(())
    }

    /// Reads the page after the cursor (409 if the cursor is beyond the
    /// head).
    pub async fn read(&self, app: &App) -> Result<Page, Error> {
        read_after(app, &self.uid, self.cursor, self.limit).await
    }
}

/// Reads events after `cursor`, group-message references expanded, at most
/// `limit` events and about `--max-page-bytes` (at least one event); a
/// cursor beyond the queue's head is a 409 so that the client resets
/// instead of waiting forever.
pub async fn read_after(app: &App, uid: &Uid, cursor: u64, events: usize) -> Result<Page, Error> {
    let limit = PageLimit {
        events,
        bytes: app.config.max_page_bytes(),
    };
    let mut page = app.store.read(uid, cursor, limit).await?;
    if cursor > page.head {
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

/// `{"events":[…],"cursor":M}` (plus `"hints"` when there are pull
/// hints), written from the stored event JSON as is.
pub fn page_response(app: &App, transport: Transport, page: &Page) -> Response {
    let size: usize = page.events.iter().map(|e| e.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 40);
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event);
    }
    body.extend_from_slice(format!("],\"cursor\":{}", page.cursor).as_bytes());
    if let Some(hints) = app.broadcasts.hints() {
        body.extend_from_slice(format!(",\"hints\":{hints}").as_bytes());
    }
    body.push(b'}');
    app.hub.sent(transport, page.events.len(), body.len());
    raw_json(StatusCode::OK, body)
}
