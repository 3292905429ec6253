//! The commands a WebSocket client sends up, parsed into the typed
//! [`Command`] of the client's actions before anything runs: a frame is a
//! JSON object with an `op`, an optional `id` echoed in the reply, and the
//! op's fields.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actions::command::Command;
use crate::actions::groups;
use crate::app::App;
use crate::error::Error;
use crate::trace::Cause;
use crate::uid::Uid;

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
    msg: groups::Outgoing,
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
        Some("typing") => fields_of(frame, "bad_target").map(Command::Typing),
        Some(op) => Err(Error::bad("unknown_op", format!("unknown op {op:?}"))),
        None => Err(Error::bad("bad_frame", "op is required (a string)")),
    };
    Frame { id, command }
}

/// Runs one command frame of `uid`'s, sent over `transport` (named in
/// the trace); the reply to send back, if any: a frame with an `id` is
/// always answered, one without only when it failed.
pub async fn answer(app: &Arc<App>, uid: &Uid, transport: &str, text: &str) -> Option<Value> {
    let Frame { id, command } = parse(text);
    let result = match command {
        Ok(command) => {
            let cause = app
                .traces
                .enabled()
                .then(|| Cause::new(format!("{transport} {}", command.op()), None));
            Cause::scope(cause, command.apply(app, uid))
                .await
                .map(|outcome| outcome.fields())
        }
        Err(e) => Err(e),
    };
    match (result, id) {
        (Ok(mut fields), Some(id)) => {
            fields["op"] = json!("reply");
            fields["id"] = id;
            fields["ok"] = json!(true);
            Some(fields)
        }
        (Ok(_), None) => None,
        (Err(e), id) => Some(error_reply(id, e.code(), &e.to_string())),
    }
}

/// The reply to a command that failed.
pub fn error_reply(id: Option<Value>, code: &str, message: &str) -> Value {
    json!({"op": "reply", "id": id, "ok": false, "error": code, "message": message})
}

/// The op's fields as `T`, or a 400 with `code` saying what is wrong.
fn fields_of<T: DeserializeOwned>(frame: Value, code: &'static str) -> Result<T, Error> {
    serde_json::from_value(frame).map_err(|e| Error::bad(code, e.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CODES: [&str; 9] = [
        "bad_frame",
        "unknown_op",
        "bad_seq",
        "bad_status",
        "bad_ids",
        "bad_msgid",
        "bad_body",
        "bad_cid",
        "bad_target",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "[a-z_]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::hash_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_with_a_known_code(text in any::<String>()) {
            if let Err(e) = parse(&text).command {
                prop_assert!(CODES.contains(&e.code()), "{}", e.code());
            }
        }

        #[test]
        fn any_object_with_any_op_parses_or_is_refused_with_a_known_code(
            op in prop_oneof![
                "ack|send|status|read|group_send|group_read|typing",
                "[a-z_]{0,10}"
            ],
            fields in prop::collection::hash_map(
                "seq|to|body|cid|status|ids|msg_id|gid|msgid|id",
                value(),
                0..6,
            ),
        ) {
            let mut frame: serde_json::Map<String, Value> =
                fields.into_iter().collect();
            frame.insert("op".into(), Value::from(op));
            let parsed = parse(&Value::Object(frame.clone()).to_string());
            prop_assert_eq!(parsed.id, frame.get("id").cloned());
            if let Err(e) = parsed.command {
                prop_assert!(CODES.contains(&e.code()), "{}", e.code());
            }
        }
    }
}
