//! Client routes of group chat: post, history, read marks, receipts.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::command::Command;
use crate::app::App;
use crate::error::Error;
use crate::http::reply::{json, list_after, Response};
use crate::http::request::{json_body, parse_u64, Query};
use crate::uid::Uid;

/// A group message as a client sends it (HTTP body or WebSocket frame).
#[derive(Debug, Deserialize)]
pub struct Outgoing {
    pub body: serde_json::Value,
    #[serde(default)]
    pub cid: Option<String>,
}

/// Posts `msg` to `gid` from `from` (a member); returns the msgid.
pub async fn post(app: &App, gid: &str, from: &Uid, msg: Outgoing) -> Result<u64, Error> {
    let (gid, members) = app.groups.member_of(gid, from).await?;
    let target = crate::chat::hook::Target::Group(gid.as_str());
    let body = app
        .admission
        .admit(from, target, msg.body, &msg.cid)
        .await?;
    app.group_log
        .post(&gid, from, body, msg.cid, &members)
        .await
}

/// `POST /v1/groups/{gid}/messages {"body","cid"}` → `{"msgid"}` once durable.
pub async fn post_message(
    app: &Arc<App>,
    req: Request<Incoming>,
    gid: &str,
) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let msg: Outgoing = json_body(req, &app.config).await?;
    let gid = gid.to_owned();
    let posted = Command::GroupSend { gid, msg }.apply(app, &uid).await?;
    Ok(json(StatusCode::OK, &posted.fields()))
}

/// `GET /v1/groups/{gid}/messages?after=M&limit=L` → `{"messages":[…],"cursor":K}`.
pub async fn history(app: &App, req: Request<Incoming>, gid: &str) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let (gid, _) = app.groups.member_of(gid, &uid).await?;
    let query = Query::of(&req);
    let after = query.u64("after")?.unwrap_or(0);
    let limit = query.u64_in("limit", 1..=1000, 100)? as usize;
    let messages = app
        .group_log
        .history(&gid, after, limit, app.config.max_page_bytes())
        .await?;
    Ok(list_after("messages", &messages, "msgid", after))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadMark {
    msgid: u64,
}

/// Marks `gid` read up to `msgid` for `uid`; returns the last read msgid.
pub async fn mark_read(app: &Arc<App>, gid: &str, uid: &Uid, msgid: u64) -> Result<u64, Error> {
    let (gid, _) = app.groups.member_of(gid, uid).await?;
    app.group_reads.mark(&gid, uid, msgid).await
}

/// `POST /v1/groups/{gid}/read {"msgid":M}` → `{"last_read"}`.
pub async fn read(app: &Arc<App>, req: Request<Incoming>, gid: &str) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let mark: ReadMark = json_body(req, &app.config).await?;
    let gid = gid.to_owned();
    let msgid = mark.msgid;
    let last_read = Command::GroupRead { gid, msgid }.apply(app, &uid).await?;
    Ok(json(StatusCode::OK, &last_read.fields()))
}

/// `GET /v1/groups/{gid}/receipts?msgids=a,b` → per message: read and
/// unread counts and the readers.
pub async fn receipts(app: &App, req: Request<Incoming>, gid: &str) -> Result<Response, Error> {
    let uid = app.auth.user(&req)?;
    let (gid, members) = app.groups.member_of(gid, &uid).await?;
    let query = Query::of(&req);
    let msgids = query
        .get("msgids")
        .ok_or_else(|| Error::bad("bad_msgids", "msgids is required: a comma-separated list"))?
        .split(',')
        .map(|m| parse_u64("msgids", m.trim()))
        .collect::<Result<Vec<u64>, Error>>()?;
    if msgids.is_empty() || msgids.len() > 100 {
        return Err(Error::bad("bad_msgids", "give 1 to 100 msgids"));
    }
    let receipts = app.group_reads.receipts(&gid, &members, &msgids).await?;
    let list: Vec<_> = receipts
        .iter()
        .map(|r| json!({"msgid": r.msgid, "read": r.readers.len(), "unread": r.unread, "readers": r.readers}))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "gid": gid, "receipts": list }),
    ))
}
