//! Short polling: answers at once with whatever is after the cursor (and
//! the group receipt totals waiting for the user, see `chat/signals.rs`).

use hyper::Request;

use super::{page_response, PollRequest, Riders};
use crate::app::App;
use crate::error::Error;
use crate::http::reply::Response;
use crate::hub::Transport;

/// `GET /v1/poll?cursor=N&epoch=E&limit=L`
pub async fn handle<B>(app: &App, req: Request<B>) -> Result<Response, Error> {
    let poll = PollRequest::parse(app, &req)?;
    let page = poll.read(app).await?;
    poll.settle(app, &page).await?;
    // A poller has no keepalive: the receipt totals waiting for one come
    // with its next poll (`--group-receipts keepalive`).
    let riders = Riders {
        signals: Vec::new(),
        receipts: app.signals.take_riders(&poll.uid),
    };
    Ok(page_response(app, Transport::Poll, &poll, &page, &riders))
}
