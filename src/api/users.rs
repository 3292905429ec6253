//! The user inspector and the delivery trace (API key): what an operator
//! asks when a user says a message never arrived.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::app::App;
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::parse_u64;
use crate::inspect;
use crate::uid::Uid;

/// `GET /api/v1/users/{uid}`
pub async fn inspect(app: &App, req: Request<Incoming>, uid: &str) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let uid = parse_uid(uid)?;
    Ok(json(StatusCode::OK, &inspect::user(app, &uid).await?))
}

/// `GET /api/v1/users/{uid}/events/{seq}`
pub async fn trace(
    app: &App,
    req: Request<Incoming>,
    uid: &str,
    seq: &str,
) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let uid = parse_uid(uid)?;
    let seq = parse_u64("seq", seq)?;
    Ok(json(StatusCode::OK, &inspect::event(app, &uid, seq).await?))
}

fn parse_uid(uid: &str) -> Result<Uid, Error> {
    Uid::parse(uid).map_err(|e| Error::bad("bad_uid", e.to_string()))
}
