//! Backend routes for notices: counters and the daily news.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::chat::notices::{news_key, valid_counter_name, valid_date, Change, CounterError};
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::uid::Uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterChange {
    name: String,
    delta: Option<i64>,
    value: Option<i64>,
}

/// `POST /api/v1/users/{uid}/counters {"name":…,"delta":n}` or `{"name":…,"value":n}`
/// → `{"name", "value"}` (the new total) once durable and pushed.
pub async fn change_counter(
    app: &App,
    req: Request<Incoming>,
    uid: &str,
) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let uid = Uid::parse(uid).map_err(|e| Error::bad("bad_uid", e.to_string()))?;
    let body: CounterChange = json_body(req, app.config.body_limits()).await?;
    if !valid_counter_name(&body.name) {
        return Err(Error::bad(
            "bad_counter",
            "name must be 1-32 characters of [a-z0-9_.-]",
        ));
    }
    let change = match (body.delta, body.value) {
        (Some(d), None) => Change::Delta(d),
        (None, Some(v)) => Change::Set(v),
        _ => {
            return Err(Error::bad(
                "bad_counter",
                "give exactly one of delta and value",
            ))
        }
    };
    let value = app
        .counters
        .change(&uid, &body.name, change)
        .await
        .map_err(|e| match e {
            CounterError::Store(e) => Error::Store(e),
            other => Error::Conflict("counter_limit", other.to_string()),
        })?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"name": body.name, "value": value}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct News {
    body: serde_json::Value,
}

/// `PUT /api/v1/news/{YYYY-MM-DD} {"body":…}` sets that day's news.
pub async fn put_news(app: &App, req: Request<Incoming>, date: &str) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    if !valid_date(date) {
        return Err(Error::bad(
            "bad_date",
            "the date must be a real day written YYYY-MM-DD",
        ));
    }
    let body: News = json_body(req, app.config.body_limits()).await?;
    if body.body.is_null() {
        return Err(Error::bad("bad_body", "body is required"));
    }
    let record = serde_json::to_vec(&serde_json::json!({"date": date, "body": body.body}))
        .map_err(|e| Error::Internal(e.to_string()))?;
    app.store.kv_put(&news_key(date), record).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"date": date})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Broadcast {
    body: serde_json::Value,
    #[serde(default = "push_mode")]
    mode: String,
    rate: Option<u32>,
}

fn push_mode() -> String {
    "push".into()
}

/// Most push deliveries per second a broadcast may ask for.
const MAX_RATE: u32 = 100_000;
const DEFAULT_RATE: u32 = 5_000;

/// `POST /api/v1/broadcast {"body":…,"mode":"push","rate":5000}` →
/// push: `202 {"bid","mode","recipients"}` (delivery proceeds at the rate);
/// pull: `200 {"bid","mode"}` once stored.
pub async fn broadcast(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let body: Broadcast = json_body(req, app.config.body_limits()).await?;
    if body.body.is_null() {
        return Err(Error::bad("bad_body", "body is required"));
    }
    match body.mode.as_str() {
        "push" => {
            let rate = body.rate.unwrap_or(DEFAULT_RATE);
            let rate = std::num::NonZeroU32::new(rate)
                .filter(|r| r.get() <= MAX_RATE)
                .ok_or_else(|| {
                    Error::bad(
                        "bad_rate",
                        format!("rate must be 1 to {MAX_RATE} per second"),
                    )
                })?;
            let recipients = app.presence.online_users().await?;
            let count = recipients.len();
            let bid = app.broadcasts.push(body.body, rate, recipients).await?;
            Ok(json(
                StatusCode::ACCEPTED,
                &serde_json::json!({"bid": bid, "mode": "push", "recipients": count, "rate": rate.get()}),
            ))
        }
        "pull" => {
            if body.rate.is_some() {
                return Err(Error::bad(
                    "bad_rate",
                    "rate applies to push broadcasts only",
                ));
            }
            let bid = app.broadcasts.store_for_pull(body.body).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({"bid": bid, "mode": "pull"}),
            ))
        }
        _ => Err(Error::bad("bad_mode", "mode must be push or pull")),
    }
}
