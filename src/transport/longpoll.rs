//! Long polling: the request is held until an event is durable after the
//! cursor, the timeout passes (an empty 200), or the server shuts down.
//!
//! No polling loop: the handler waits on the user's durable-head watch,
//! which the group-commit thread raises right after the flush.

use std::time::Duration;

use hyper::Request;

use super::{page_response, PollRequest};
use crate::app::App;
use crate::http::reply::Response;
use crate::http::Error;
use crate::hub::Transport;
use crate::metrics::Label;
use crate::uid::Uid;

/// `GET /v1/longpoll?cursor=N&timeout=S&limit=L`
pub async fn handle<B>(app: &App, req: Request<B>) -> Result<Response, Error> {
    let poll = PollRequest::parse(app, &req).await?;
    let timeout = poll
        .query
        .u64_in("timeout", 1..=110, app.config.longpoll_timeout)?;
    // Subscribe before reading so that an event made durable in between
    // still wakes us.
    let mut head = app.store.watch(&poll.uid).await?;
    let mut page = poll.read(app).await?;
    if page.events.is_empty() {
        let _held = Held::new(app, &poll.uid);
        tokio::select! {
            _ = head.wait_for(|&h| h > poll.cursor) => {}
            _ = tokio::time::sleep(Duration::from_secs(timeout)) => {}
            _ = app.shutdown.cancelled() => {}
        }
        page = poll.read(app).await?;
    }
    let kind = if page.events.is_empty() {
        "empty"
    } else {
        "events"
    };
    app.metrics
        .longpoll_returns
        .get_or_create(&Label { kind })
        .inc();
    Ok(page_response(app, Transport::LongPoll, &page))
}

/// A held long-poll: counted in the metrics, and the user is online while it
/// is held (however long the client asked for) and for the grace period
/// after it returns. Also released when the client goes away and the
/// handler is dropped.
struct Held<'a> {
    app: &'a App,
    uid: &'a Uid,
}

impl<'a> Held<'a> {
    fn new(app: &'a App, uid: &'a Uid) -> Held<'a> {
        app.metrics.longpolls_held.inc();
        app.presence.try_connect(uid, usize::MAX);
        Held { app, uid }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.app.metrics.longpolls_held.dec();
        // Restart the grace period first so the user does not flap offline.
        self.app.presence.polled(self.uid);
        self.app.presence.disconnect(self.uid);
    }
}
