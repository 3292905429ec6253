//! `POST /api/v1/publish {"to":[uids],"type":"notice","data":…}` appends one
//! event to each user's queue and answers `{"seqs":{uid:seq}}` once durable.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::chat::idempotency::IdempotencyKey;
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::{idempotency_key, json_body};
use crate::store::{Append, IdempotentAppend};
use crate::uid::Uid;

/// Most recipients of one publish call.
pub const MAX_RECIPIENTS: usize = 10_000;

/// Event types herald itself produces; a backend may not forge them.
const RESERVED_TYPES: &[&str] = &[
    "gap",
    "msg",
    "group_msg",
    "presence",
    "receipt",
    "group_receipt",
    "counter",
    "broadcast",
    "hb",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    to: Vec<Uid>,
    #[serde(rename = "type", default = "default_type")]
    kind: String,
    #[serde(default = "empty_object")]
    data: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn default_type() -> String {
    "notice".into()
}

/// A publishable type: `notice` or a custom lowercase name not herald's own.
fn check_type(kind: &str) -> Result<(), Error> {
    let well_formed = (1..=32).contains(&kind.len())
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !well_formed {
        return Err(Error::bad(
            "bad_type",
            "type must be 1-32 characters of [a-z0-9_.], starting with a letter",
        ));
    }
    if RESERVED_TYPES.contains(&kind) {
        return Err(Error::bad(
            "bad_type",
            format!("type {kind:?} is reserved for herald's own events"),
        ));
    }
    Ok(())
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let key = idempotency_key(&req)?;
    let body: PublishRequest = json_body(req, &app.config).await?;
    check_type(&body.kind)?;
    if body.to.is_empty() || body.to.len() > MAX_RECIPIENTS {
        return Err(Error::bad(
            "bad_recipients",
            format!("to must list 1 to {MAX_RECIPIENTS} uids"),
        ));
    }
    let mut to = body.to;
    to.sort();
    to.dedup();
    let event = Append::new(to[0].clone(), &body.kind, &body.data);
    let batch = to
        .iter()
        .map(|uid| Append {
            uid: uid.clone(),
            ..event.clone()
        })
        .collect();
    let seqs = match key {
        None => app.store.append(batch).await?,
        // All of it atomically with the key: a retry of a publish whose
        // outcome was unknown gets the first answer, whether the first
        // attempt landed before, after or never.
        Some(key) => {
            let recipients: Vec<&str> = to.iter().map(Uid::as_str).collect();
            let key = IdempotencyKey::new(
                "publish",
                &key,
                &[
                    body.kind.as_bytes(),
                    recipients.join("\0").as_bytes(),
                    event.data.get().as_bytes(),
                ],
            );
            match app
                .store
                .append_once(&key.record, key.fingerprint, batch)
                .await?
            {
                IdempotentAppend::Appended { seqs } => seqs,
                IdempotentAppend::Duplicate { tag, seqs } if tag == key.fingerprint => seqs,
                IdempotentAppend::Duplicate { .. } => return Err(IdempotencyKey::reused()),
            }
        }
    };
    Ok(json(
        StatusCode::OK,
        &Published {
            seqs: Seqs(&to, &seqs),
        },
    ))
}

/// `{"seqs":{uid:seq}}`, written straight from the sorted recipients (a
/// publish to 10 000 users built 10 000 JSON values for it).
#[derive(serde::Serialize)]
struct Published<'a> {
    seqs: Seqs<'a>,
}

struct Seqs<'a>(&'a [Uid], &'a [u64]);

impl serde::Serialize for Seqs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(Uid::as_str).zip(self.1))
    }
}
