//! Backend routes for notices: counters and the daily news.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::http::Error;
use crate::notices::{news_key, valid_counter_name, valid_date, Change, CounterError};
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
    let body: CounterChange = json_body(req, app.config.max_body).await?;
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
    let body: News = json_body(req, app.config.max_body).await?;
    if body.body.is_null() {
        return Err(Error::bad("bad_body", "body is required"));
    }
    let record = serde_json::to_vec(&serde_json::json!({"date": date, "body": body.body}))
        .map_err(|e| Error::Internal(e.to_string()))?;
    app.store.kv_put(&news_key(date), record).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({"date": date})))
}
