//! Backend routes that shape the social graph: friend lists and groups.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use crate::app::App;
use crate::chat::friends::MAX_FRIENDS;
use crate::chat::groups::{Gid, MAX_MEMBERS};
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::json_body;
use crate::uid::Uid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FriendList {
    friends: Vec<Uid>,
}

/// `PUT /api/v1/users/{uid}/friends {"friends":[uids]}`: whom uid has added.
pub async fn put_friends(app: &App, req: Request<Incoming>, uid: &str) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let uid = Uid::parse(uid).map_err(|e| Error::bad("bad_uid", e.to_string()))?;
    let body: FriendList = json_body(req, &app.config).await?;
    if body.friends.len() > MAX_FRIENDS {
        return Err(Error::bad(
            "too_many_friends",
            format!("at most {MAX_FRIENDS} friends"),
        ));
    }
    let friends = app.friends.set(&uid, body.friends).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "uid": uid, "friends": friends }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberList {
    members: Vec<Uid>,
}

/// `PUT /api/v1/groups/{gid}/members {"members":[uids]}`
pub async fn put_members(app: &App, req: Request<Incoming>, gid: &str) -> Result<Response, Error> {
    app.auth.backend(&req)?;
    let gid = Gid::parse(gid).map_err(|e| Error::bad("bad_gid", e.to_string()))?;
    let body: MemberList = json_body(req, &app.config).await?;
    if body.members.len() > MAX_MEMBERS {
        return Err(Error::bad(
            "too_many_members",
            format!("at most {MAX_MEMBERS} members"),
        ));
    }
    let before = app.groups.members(&gid);
    let members = app.groups.set_members(&gid, body.members).await?;
    // Those who left lose their read cursor (a rejoin starts unread).
    if let Some(before) = before {
        let left: Vec<&Uid> = before.difference(&members).collect();
        app.group_reads.forget(&gid, &left).await?;
    }
    let count = members.len();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "gid": gid, "members": count }),
    ))
}
