//! The client's actions as one typed command, however it came: the
//! WebSocket parses each frame into a [`Command`] (`transport/command.rs`),
//! the HTTP routes build one from their request, and [`Command::apply`]
//! runs it on the chat services (mini-redis's `Command::from_frame` then
//! `apply`): one home for each action's behaviour.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::actions::{groups, typing};
use crate::app::App;
use crate::chat::messages;
use crate::error::Error;
use crate::uid::Uid;

/// One client command.
#[derive(Debug)]
pub enum Command {
    /// `{"op":"ack","seq":N}`
    Ack { seq: u64 },
    /// `{"op":"send","to","body","cid"}`
    Send(messages::Outgoing),
    /// `{"op":"status","status"}`
    Status(String),
    /// `{"op":"read","msg_id":N}` or `{"op":"read","ids":[…]}`
    Read(Vec<u64>),
    /// `{"op":"group_send","gid","body","cid"}`
    GroupSend { gid: String, msg: groups::Outgoing },
    /// `{"op":"group_read","gid","msgid"}`
    GroupRead { gid: String, msgid: u64 },
    /// `{"op":"typing","to"}` or `{"op":"typing","gid"}`
    Typing(typing::Typing),
}

/// What a command did, for its answer (each edge writes it its way).
#[derive(Debug)]
pub enum Outcome {
    /// The user's acked seq now.
    Acked(u64),
    /// The direct message's id.
    Sent(u64),
    /// The status set.
    Status(&'static str),
    /// The message ids marked read.
    Read(Vec<u64>),
    /// The group message's msgid.
    Posted(u64),
    /// The group's last read msgid now.
    LastRead(u64),
    /// A typing signal went out.
    Signalled,
}

impl Outcome {
    /// The fields of the answer: a WebSocket reply's, and an HTTP route's
    /// body (which names a sent message's id `id`, not `msg_id`).
    pub fn fields(&self) -> Value {
        match self {
            Outcome::Acked(acked) => json!({ "acked": acked }),
            Outcome::Sent(id) => json!({ "msg_id": id }),
            Outcome::Status(status) => json!({ "status": status }),
            Outcome::Read(ids) => json!({ "read": ids }),
            Outcome::Posted(msgid) => json!({ "msgid": msgid }),
            Outcome::LastRead(last) => json!({ "last_read": last }),
            Outcome::Signalled => json!({}),
        }
    }
}

impl Command {
    /// The command's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            Command::Ack { .. } => "ack",
            Command::Send(_) => "send",
            Command::Status(_) => "status",
            Command::Read(_) => "read",
            Command::GroupSend { .. } => "group_send",
            Command::GroupRead { .. } => "group_read",
            Command::Typing(_) => "typing",
        }
    }

    /// Runs the command as `uid`.
    pub async fn apply(self, app: &Arc<App>, uid: &Uid) -> Result<Outcome, Error> {
        Ok(match self {
            Command::Ack { seq } => Outcome::Acked(app.receipts.ack(uid, seq).await?),
            Command::Send(msg) => Outcome::Sent(app.messages.send(uid, msg).await?),
            Command::Status(status) => Outcome::Status(super::set_status(app, uid, &status).await?),
            Command::Read(ids) => {
                app.receipts.mark_read(uid, &ids).await?;
                for &id in &ids {
                    app.traces.read(uid, id);
                }
                Outcome::Read(ids)
            }
            Command::GroupSend { gid, msg } => {
                Outcome::Posted(groups::post(app, &gid, uid, msg).await?)
            }
            Command::GroupRead { gid, msgid } => {
                Outcome::LastRead(groups::mark_read(app, &gid, uid, msgid).await?)
            }
            Command::Typing(target) => {
                typing::send(app, uid, target).await?;
                Outcome::Signalled
            }
        })
    }
}
