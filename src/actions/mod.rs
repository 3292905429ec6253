//! Client actions over HTTP, for transports without an upstream channel:
//! each route that acts builds the [`Command`] the WebSocket parses from a
//! frame and applies it (`command.rs`); `groups` holds the routes of group
//! chat.

pub mod command;
pub mod groups;
pub mod typing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use self::command::{Command, Outcome};
use crate::app::App;
use crate::chat::conversations::{Window, DEFAULT_PAGE, MAX_PAGE};
use crate::chat::feed::Feed;
use crate::chat::online::STATUSES;
use crate::chat::{messages, notices};
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::uid::Uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    seq: u64,
}

/// `POST /v1/ack {"seq":N}` → `{"acked":M}` once the ack is durable.
pub async fn ack(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let body: AckRequest = json_body(req, &app.config).await?;
    let acked = Command::Ack { seq: body.seq }.apply(app, &uid).await?;
    // Answered once durable (a WebSocket's acks are not waited for).
    app.store.sync().await?;
    Ok(json(StatusCode::OK, &acked.fields()))
}

/// `POST /v1/messages {"to","body","cid"}` → `{"id":…}` once durable.
pub async fn send_message(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, Error> {
    let from = app.auth.user(&req)?;
    let msg: messages::Outgoing = json_body(req, &app.config).await?;
    match Command::Send(msg).apply(app, &from).await? {
        Outcome::Sent(id) => Ok(json(StatusCode::OK, &serde_json::json!({ "id": id }))),
        other => Err(Error::Internal(format!("a send did {other:?}"))),
    }
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
    let body: DemoLogin = json_body(req, &app.config).await?;
    let token = app.auth.mint(&body.uid, DEMO_TOKEN_TTL)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"token": token, "uid": body.uid}),
    ))
}

/// Sets `uid`'s chosen status; returns it.
pub async fn set_status(app: &App, uid: &Uid, status: &str) -> Result<&'static str, Error> {
    let status = STATUSES.into_iter().find(|s| *s == status).ok_or_else(|| {
        Error::bad(
            "bad_status",
            "status must be one of online, busy, dnd, invisible",
        )
    })?;
    app.sends.take(uid).await?;
    let data = serde_json::json!({"uid": uid, "status": status});
    if let Some(record) = Feed::of(&app.config).record("status", &data, uid.as_str()) {
        app.store.append(vec![record]).await?;
    }
    app.presence.set_status(uid, status).await?;
    Ok(status)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
}

/// `PUT /v1/status {"status":"busy"}`
pub async fn put_status(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let body: StatusRequest = json_body(req, &app.config).await?;
    let status = Command::Status(body.status).apply(app, &uid).await?;
    Ok(json(StatusCode::OK, &status.fields()))
}

/// The visible statuses of `uids`, counted as pulled.
async fn statuses(app: &App, uids: Vec<Uid>) -> Result<BTreeMap<String, &'static str>, Error> {
    let visible = app.presence.visible(&uids).await?;
    let map: BTreeMap<String, &str> = uids
        .iter()
        .map(|u| u.as_str().to_owned())
        .zip(visible)
        .collect();
    app.metrics.presence_pulled.inc_by(map.len() as u64);
    Ok(map)
}

/// `GET /v1/friends/presence` → `{"friends": {uid: status}}` (login pull).
pub async fn friends_presence(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let friends = statuses(app, app.friends.of(&uid)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "friends": friends }),
    ))
}

/// `GET /v1/groups/{gid}/presence` → `{"gid", "members": {uid: status}}`,
/// for members only.
pub async fn group_presence(
    app: &App,
    req: Request<Incoming>,
    gid: &str,
) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let (gid, members) = app.groups.member_of(gid, &uid).await?;
    let members = statuses(app, members.iter().cloned().collect()).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "gid": gid, "members": members }),
    ))
}

/// Message ids of a read mark: `{"msg_id": N}` or `{"ids": [N, …]}`.
pub fn read_ids(frame: &serde_json::Value) -> Result<Vec<u64>, Error> {
    let bad = || {
        Error::bad(
            "bad_ids",
            "give msg_id (an integer) or ids (1-1000 integers)",
        )
    };
    if let Some(id) = frame.get("msg_id") {
        return id.as_u64().map(|id| vec![id]).ok_or_else(bad);
    }
    let ids = frame
        .get("ids")
        .and_then(|v| v.as_array())
        .ok_or_else(bad)?;
    if ids.is_empty() || ids.len() > 1000 {
        return Err(bad());
    }
    ids.iter().map(|v| v.as_u64().ok_or_else(bad)).collect()
}

/// `POST /v1/messages/{id}/read` → the sender gets a `read` receipt.
pub async fn message_read(
    app: &Arc<App>,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let id = crate::http::request::parse_u64("message id", id)?;
    let read = Command::Read(vec![id]).apply(app, &uid).await?;
    Ok(json(StatusCode::OK, &read.fields()))
}

/// `GET /v1/counters` → `{"counters": {name: value}}` (the login pull).
pub async fn counters(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let counters = app.counters.all(&uid).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "counters": counters }),
    ))
}

/// `GET /v1/news` → today's (UTC) news on the user's first call of the day,
/// else 204. The per-user last-seen date is swapped atomically, so two
/// tabs racing see the news once between them.
pub async fn news(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let today = notices::today();
    let Some(news) = app.store.kv_get(&notices::news_key(&today)).await? else {
        return Ok(crate::http::reply::empty(StatusCode::NO_CONTENT));
    };
    let seen_key = notices::news_seen_key(&uid);
    let seen = app.store.kv_get(&seen_key).await?;
    if seen.as_deref() == Some(today.as_bytes()) {
        return Ok(crate::http::reply::empty(StatusCode::NO_CONTENT));
    }
    if !app
        .store
        .kv_swap(&seen_key, seen, today.into_bytes())
        .await?
    {
        return Ok(crate::http::reply::empty(StatusCode::NO_CONTENT));
    }
    Ok(crate::http::reply::raw_json(StatusCode::OK, news))
}

/// `GET /v1/broadcasts?after=B&limit=L` → `{"broadcasts":[…],"cursor":K}`:
/// the pull-mode broadcasts after B.
pub async fn broadcasts(app: &App, req: Request<Incoming>) -> Result<Response, Error> {
    app.auth.user(&req)?;
    let query = crate::http::request::Query::of(&req);
    let after = query.u64("after")?.unwrap_or(0);
    let limit = query.u64_in("limit", 1..=100, 20)? as usize;
    let list = app.broadcasts.after(after, limit).await?;
    Ok(crate::http::reply::list_after(
        "broadcasts",
        &list,
        "bid",
        after,
    ))
}

/// `GET /v1/conversations/{uid}/messages?before=ID|after=ID&limit=L` → the
/// caller's direct messages with uid, oldest first: `{"with", "messages":
/// [{id, from, to, body, cid, ts, read}], "more"}`. Without `before` or
/// `after`, the newest; `more` says whether the history goes on in the
/// direction asked.
pub async fn conversation(
    app: &App,
    req: Request<Incoming>,
    other: &str,
) -> Result<Response, Error> {
    let me = app.auth.user(&req)?;
    let other = Uid::parse(other).map_err(|e| Error::bad("bad_uid", e.to_string()))?;
    let query = crate::http::request::Query::of(&req);
    let limit = query.u64_in("limit", 1..=MAX_PAGE as u64, DEFAULT_PAGE as u64)? as usize;
    let window = match (query.u64("before")?, query.u64("after")?) {
        (Some(_), Some(_)) => {
            return Err(Error::bad("bad_window", "give before or after, not both"))
        }
        (before, None) => Window::Before(before, limit),
        (None, Some(after)) => Window::After(after, limit),
    };
    let page = app
        .conversations
        .page(&me, &other, window, app.config.max_page_bytes())
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "with": other, "messages": page.messages, "more": page.more }),
    ))
}
