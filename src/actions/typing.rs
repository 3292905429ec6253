//! Typing signals: `POST /v1/typing {"to": uid}` or `{"gid": gid}`, and
//! the WebSocket's `{"op":"typing", …}`. Sent to the connections the
//! recipients have open now and forgotten (see `chat/signals.rs`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::command::Command;
use crate::app::App;
use crate::chat::signals::{typing_json, Target};
use crate::error::Error;
use crate::http::reply::{empty, Response};
use crate::http::request::json_body;
use crate::uid::Uid;

/// The largest group a typing signal goes to: each signal is one publish
/// per member (a large channel shows no one typing, as chat apps do).
const MAX_GROUP: usize = 1000;

/// Who a typing signal is for, as the client named them.
#[derive(Debug, Deserialize)]
pub struct Typing {
    #[serde(default)]
    to: Option<Uid>,
    #[serde(default)]
    gid: Option<String>,
}

/// The same, for an HTTP body: nothing else may be in it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    #[serde(default)]
    to: Option<Uid>,
    #[serde(default)]
    gid: Option<String>,
}

/// `POST /v1/typing` → 204 once handed to the recipients' nodes.
pub async fn post(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, Error> {
    let from = app.auth.user(&req)?;
    let TypingBody { to, gid } = json_body(req, &app.config).await?;
    Command::Typing(Typing { to, gid })
        .apply(app, &from)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Sends `from`'s typing signal: to one user, or to every other member of
/// a group `from` is in. Checked before the budget is taken: a refused
/// signal costs nothing.
pub async fn send(app: &App, from: &Uid, typing: Typing) -> Result<(), Error> {
    let (target, to) = match typing {
        Typing {
            to: Some(to),
            gid: None,
        } => {
            if &to == from {
                return Err(Error::bad("bad_to", "a typing signal goes to someone else"));
            }
            (Target::User(to.clone()), vec![to])
        }
        Typing {
            to: None,
            gid: Some(gid),
        } => {
            let (gid, members) = app.groups.member_of(&gid, from).await?;
            if members.len() > MAX_GROUP {
                return Err(Error::bad(
                    "group_too_large",
                    format!("typing signals go to groups of at most {MAX_GROUP} members"),
                ));
            }
            let others = members.iter().filter(|m| *m != from).cloned().collect();
            (Target::Group(gid), others)
        }
        _ => {
            return Err(Error::bad(
                "bad_target",
                "give either to (a user id) or gid (a group id)",
            ))
        }
    };
    app.signals.admit(from).await?;
    app.signals.send(&to, &typing_json(from, &target)).await
}
