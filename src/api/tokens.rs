//! `POST /api/v1/tokens {"uid": "alice", "ttl_s": 3600}` → `{"token": "..."}`.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::error::Error;
use crate::http::auth::MAX_TOKEN_TTL;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::uid::Uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    uid: Uid,
    #[serde(default = "default_ttl")]
    ttl_s: u64,
}

fn default_ttl() -> u64 {
    3600
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let body: TokenRequest = json_body(req, &app.config).await?;
    if body.ttl_s == 0 || body.ttl_s > MAX_TOKEN_TTL.as_secs() {
        return Err(Error::bad(
            "bad_ttl",
            format!("ttl_s must be between 1 and {}", MAX_TOKEN_TTL.as_secs()),
        ));
    }
    let token = app.auth.mint(&body.uid, Duration::from_secs(body.ttl_s))?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"token": token, "uid": body.uid, "ttl_s": body.ttl_s}),
    ))
}
