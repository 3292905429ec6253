//! Long polling: the request is held until an event is durable after the
//! cursor, the timeout passes (an empty 200), a newer connection of the
//! same user needs its slot (an empty 200 too), or the server shuts down.
//!
//! A held long-poll also answers a signal for its user (typing: in
//! `"signals"`, with the cursor where it was), and its empty answer
//! carries the group receipt totals that waited for a keepalive
//! (`"receipts"`, `--group-receipts keepalive`).
//!
//! A long-poll that finds events answers at once, like a poll. Otherwise
//! no polling loop: the handler waits on the user's durable-head watch,
//! which the store raises once an event is durable (sled: the group-commit
//! thread after its flush; Redis: an append on any node).

use std::time::Duration;

use hyper::Request;

use super::{page_response, PollRequest, Riders};
use crate::app::App;
use crate::error::Error;
use crate::http::reply::Response;
use crate::http::request::{client_of, Query};
use crate::hub::Transport;
use crate::store::Page;

/// `GET /v1/longpoll?cursor=N&epoch=E&timeout=S&limit=L`
pub async fn handle<B>(app: &App, req: Request<B>) -> Result<Response, Error> {
    let poll = PollRequest::parse(app, &req)?;
    let timeout = Query::of(&req).u64_in("timeout", 1..=110, app.config.longpoll_timeout)?;
    let client = client_of(&req);
    // A held long-poll keeps only what it needs: not the request and its
    // headers (a few KiB per held request otherwise).
    drop(req);
    let mut page = poll.read(app).await?;
    if !page.events.is_empty() {
        // Answered at once, like a poll: it holds no slot.
        poll.settle(app, &page).await?;
        return Ok(answer(app, &poll, &page, &Riders::default()));
    }
    // Subscribe, then read again, so that an event made durable since the
    // first read still wakes us.
    let mut head = app.store.watch(&poll.uid).await?;
    page = poll.read(app).await?;
    // Counts toward the user's connection cap while it lasts (and keeps
    // the user online); a newer connection may end it early. Taken before
    // the ack: a long-poll refused for the cap acks nothing.
    let connection = app
        .hub
        .connect(&poll.uid, Transport::LongPoll, client, poll.cursor)?;
    poll.settle(app, &page).await?;
    let mut riders = Riders::default();
    if page.events.is_empty() {
        let mut listener = app.signals.listen(&poll.uid);
        let _held = Held::new(app);
        tokio::select! {
            _ = head.wait_for(|&h| h > poll.cursor) => {}
            () = listener.changed() => riders.signals = listener.take(),
            _ = tokio::time::sleep(Duration::from_secs(timeout)) => {}
            _ = app.shutdown.cancelled() => {}
            _ = connection.evicted() => {}
        }
        // The cursor is acked: this request can no longer be refused (a
        // refusal changes nothing). A store that fails now gets the page
        // read before the hold (nothing new) as the answer; the client
        // polls again at once and meets the failure there, unacked.
        page = poll.read(app).await.unwrap_or(page);
        if page.events.is_empty() {
            riders.receipts = listener.riders();
        }
    }
    drop(connection);
    Ok(answer(app, &poll, &page, &riders))
}

/// The answer, counted as useful or empty.
fn answer(app: &App, poll: &PollRequest, page: &Page, riders: &Riders) -> Response {
    let returns = if page.events.is_empty() {
        &app.metrics.longpoll_empty
    } else {
        &app.metrics.longpoll_useful
    };
    returns.inc();
    page_response(app, Transport::LongPoll, poll, page, riders)
}

/// A long-poll being held, counted in `herald_longpolls_held` until it
/// returns or its client goes away (the handler is dropped).
struct Held<'a>(&'a App);

impl<'a> Held<'a> {
    fn new(app: &'a App) -> Held<'a> {
        app.metrics.longpolls_held.inc();
        Held(app)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.metrics.longpolls_held.dec();
    }
}
