//! Backend routes for notices: counters and the daily news.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::chat::idempotency::IdempotencyKey;
use crate::chat::notices::{news_key, valid_counter_name, valid_date, Change, CounterError};
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::{idempotency_key, json_body};
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
    let key = idempotency_key(&req)?;
    let body: CounterChange = json_body(req, &app.config).await?;
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
    let key = key.map(|key| {
        let (kind, n) = match change {
            Change::Delta(n) => ("delta", n),
            Change::Set(n) => ("value", n),
        };
        let content = [
            uid.as_str().as_bytes(),
            body.name.as_bytes(),
            kind.as_bytes(),
            &n.to_be_bytes(),
        ];
        // Per user: its record lives with the user's counters (one
        // partition of a Redis Cluster), written with the total at once.
        IdempotencyKey::new(&format!("counter/{uid}"), &key, &content)
    });
    let value = app
        .counters
        .change(&uid, &body.name, change, key.as_ref())
        .await
        .map_err(|e| match e {
            CounterError::Store(e) => Error::Store(e),
            CounterError::Key(e) => e,
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
    let body: News = json_body(req, &app.config).await?;
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
/// push: `202 {"bid","mode","recipients","rate"}` (delivery proceeds at the
/// rate); pull: `200 {"bid","mode"}` once stored. With an
/// `Idempotency-Key`, a retry answers the first answer and neither stores
/// nor queues a second broadcast.
pub async fn broadcast(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let key = idempotency_key(&req)?;
    let body: Broadcast = json_body(req, &app.config).await?;
    if body.body.is_null() {
        return Err(Error::bad("bad_body", "body is required"));
    }
    let rate = match (body.mode.as_str(), body.rate) {
        ("push", rate) => Some(
            std::num::NonZeroU32::new(rate.unwrap_or(DEFAULT_RATE))
                .filter(|r| r.get() <= MAX_RATE)
                .ok_or_else(|| {
                    Error::bad(
                        "bad_rate",
                        format!("rate must be 1 to {MAX_RATE} per second"),
                    )
                })?,
        ),
        ("pull", None) => None,
        ("pull", Some(_)) => {
            return Err(Error::bad(
                "bad_rate",
                "rate applies to push broadcasts only",
            ))
        }
        _ => return Err(Error::bad("bad_mode", "mode must be push or pull")),
    };
    let key = key.map(|key| {
        let rate = rate.map_or(0, |r| r.get()).to_be_bytes();
        let content = body.body.to_string();
        IdempotencyKey::new(
            "broadcast",
            &key,
            &[body.mode.as_bytes(), &rate, content.as_bytes()],
        )
    });
    let ttl = app.config.record_ttl();
    let bid = app.broadcasts.new_bid().await?;
    let Some(rate) = rate else {
        let mut answer = serde_json::json!({"bid": bid, "mode": "pull"});
        if let Some(key) = &key {
            answer = first_answer(key.reserve(&*app.store, &answer.to_string(), ttl).await?)?;
        }
        let bid = answer["bid"].as_u64().unwrap_or(bid);
        app.broadcasts.store_for_pull(bid, body.body).await?;
        return Ok(json(StatusCode::OK, &answer));
    };
    let recipients = app.presence.online_users().await?;
    let mut answer = serde_json::json!({"bid": bid, "mode": "push", "recipients": recipients.len(), "rate": rate.get()});
    let queue = match &key {
        None => true,
        Some(key) => {
            answer = first_answer(key.reserve(&*app.store, &answer.to_string(), ttl).await?)?;
            key.claim(&*app.store, "queued", ttl).await?
        }
    };
    if queue {
        let bid = answer["bid"].as_u64().unwrap_or(bid);
        app.broadcasts.push(bid, body.body, rate, recipients)?;
    }
    Ok(json(StatusCode::ACCEPTED, &answer))
}

/// The answer kept under an idempotency key.
fn first_answer(kept: String) -> Result<serde_json::Value, Error> {
    serde_json::from_str(&kept)
        .map_err(|e| Error::Internal(format!("a bad idempotency record: {e}")))
}
