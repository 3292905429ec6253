//! The commands a WebSocket client sends up, parsed into a typed
//! [`Command`] before anything runs: a frame is a JSON object with an `op`,
//! an optional `id` echoed in the reply, and the op's fields.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::group_actions;
use crate::http::Error;
use crate::messages;

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
    GroupSend {
        gid: String,
        msg: group_actions::Outgoing,
    },
    /// `{"op":"group_read","gid","msgid"}`
    GroupRead { gid: String, msgid: u64 },
}

/// A parsed frame: the `id` to answer with (if the frame had one) and the
/// command, or why it is not one.
pub struct Frame {
    pub id: Option<Value>,
    pub command: Result<Command, Error>,
}

#[derive(Deserialize)]
struct Ack {
    seq: u64,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
struct GroupSend {
    #[serde(default)]
    gid: String,
    #[serde(flatten)]
    msg: group_actions::Outgoing,
}

#[derive(Deserialize)]
struct GroupRead {
    #[serde(default)]
    gid: String,
    msgid: u64,
}

/// Parses one text frame. Never panics; anything malformed is an error
/// with a code a client can act on.
pub fn parse(text: &str) -> Frame {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return Frame {
            id: None,
            command: Err(Error::bad("bad_frame", "frames must be JSON objects")),
        };
    };
    let id = fields.get("id").cloned();
    let op = fields.get("op").and_then(Value::as_str).map(str::to_owned);
    let frame = Value::Object(fields);
    let command = match op.as_deref() {
        Some("ack") => fields_of::<Ack>(frame, "bad_seq").map(|a| Command::Ack { seq: a.seq }),
        Some("send") => fields_of(frame, "bad_frame").map(Command::Send),
        Some("status") => {
            fields_of::<Status>(frame, "bad_status").map(|s| Command::Status(s.status))
        }
        Some("read") => crate::actions::read_ids(&frame).map(Command::Read),
        Some("group_send") => {
            fields_of::<GroupSend>(frame, "bad_frame").map(|g| Command::GroupSend {
                gid: g.gid,
                msg: g.msg,
            })
        }
        Some("group_read") => {
            fields_of::<GroupRead>(frame, "bad_msgid").map(|g| Command::GroupRead {
                gid: g.gid,
                msgid: g.msgid,
            })
        }
        Some(op) => Err(Error::bad("unknown_op", format!("unknown op {op:?}"))),
        None => Err(Error::bad("bad_frame", "op is required (a string)")),
    };
    Frame { id, command }
}

/// The op's fields as `T`, or a 400 with `code` saying what is wrong.
fn fields_of<T: DeserializeOwned>(frame: Value, code: &'static str) -> Result<T, Error> {
    serde_json::from_value(frame).map_err(|e| Error::bad(code, e.to_string()))
}
