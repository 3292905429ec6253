//! Short polling: answers at once with whatever is after the cursor.

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
    Ok(page_response(
        app,
        Transport::Poll,
        &page,
        &Riders::default(),
    ))
}
