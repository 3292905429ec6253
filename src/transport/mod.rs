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
pub mod wt;

use hyper::{Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{raw_json, Response};
use crate::http::request::Query;
use crate::hub::Transport;
use crate::pages::{page_json, parse_epoch, read_after};
use crate::store::{Epoch, Page};
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

/// What a poll or long-poll answers besides its page: the signals that came
/// while it was held (typing), and the group receipt totals that waited
/// for a keepalive.
#[derive(Default)]
pub struct Riders {
    pub signals: Vec<bytes::Bytes>,
    pub receipts: Option<String>,
}

/// `{"events":[…],"cursor":M,"epoch":E}` (plus `"hints"` when there are
/// pull hints, and `"signals"` and `"receipts"` when there are some),
/// written from the stored event JSON as is, counted as sent on
/// `transport` (and traced as written to `poll`'s user).
pub fn page_response(
    app: &App,
    transport: Transport,
    poll: &PollRequest,
    page: &Page,
    riders: &Riders,
) -> Response {
    let mut body = page_json(app, page, true);
    body.pop();
    if !riders.signals.is_empty() {
        body.extend_from_slice(b",\"signals\":[");
        for (i, signal) in riders.signals.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(signal);
        }
        body.push(b']');
    }
    if let Some(receipts) = &riders.receipts {
        body.extend_from_slice(b",\"receipts\":");
        body.extend_from_slice(receipts.as_bytes());
    }
    body.push(b'}');
    app.hub.sent(transport, page.events.len(), body.len());
    if !page.events.is_empty() {
        app.hub
            .polled(&poll.uid, transport, poll.cursor, page.cursor);
    }
    raw_json(StatusCode::OK, body)
}
