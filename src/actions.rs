//! Client actions over HTTP, for transports without an upstream channel.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::http::Error;
use crate::messages;
use crate::uid::Uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    seq: u64,
}

/// `POST /v1/ack {"seq":N}` → `{"acked":M}` once the ack is durable.
pub async fn ack(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let body: AckRequest = json_body(req, app.config.max_body).await?;
    let acked = app.store.ack(&uid, body.seq).await?;
    app.store.sync().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "acked": acked })))
}

/// `POST /v1/messages {"to","body","cid"}` → `{"id":…}` once durable.
pub async fn send_message(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let from = app.auth.user(&req)?;
    let msg: messages::Outgoing = json_body(req, app.config.max_body).await?;
    let id = messages::send(app, &from, msg).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "id": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoLogin {
    uid: Uid,
}

/// Lifetime of a demo-mode token.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// `POST /v1/demo/login {"uid":"alice"}` → `{"token":"..."}` (demo mode only).
pub async fn demo_login(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let body: DemoLogin = json_body(req, app.config.max_body).await?;
    let token = app.auth.mint(&body.uid, DEMO_TOKEN_TTL)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"token": token, "uid": body.uid}),
    ))
}
