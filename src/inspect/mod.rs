//! "Where is my message?": the user inspector and the delivery trace.
//!
//! [`user`] shows one user as the server sees them: the queue's marks,
//! every open connection on every node, presence, the send budget, group
//! read cursors and counters. [`event`] shows what happened to one event
//! of that user's queue: appended, durable, written to which connection,
//! acked, read ([`crate::trace`] keeps it, per node, in memory).
//!
//! A node knows only its own connections and traces. In a cluster the node
//! asked publishes the question on the nodes' bus ([`crate::store::NodeBus`]); every
//! other running node answers with what it knows, and the answer is put
//! together from those that answered within `--peer-timeout-ms`, naming
//! the nodes that did not.

pub mod peers;

use std::sync::Weak;
use std::time::Duration;

use serde_json::{json, Value};

use crate::app::App;
use crate::error::Error;
use crate::store::PageLimit;
use crate::uid::Uid;

/// Keeps this node in the list of running nodes and answers the other
/// nodes' questions, for as long as `app` runs (a store of one process has
/// no other node: it then only waits).
pub async fn serve(app: Weak<App>, lease: Duration) {
    let Some(peers) = app.upgrade().map(|a| a.peers.clone()) else {
        return;
    };
    let mut told = peers.told();
    let answer = async {
        while let Some(question) = peers.next_question(&mut told).await {
            let Some(app) = app.upgrade() else { return };
            let answer = match question.seq {
                None => json!({ "connections": connections_here(&app, &question.uid) }),
                Some(seq) => {
                    json!({ "steps": app.traces.steps(&question.uid, seq, question.message) })
                }
            };
            peers.reply(question, answer).await;
        }
    };
    tokio::select! {
        () = peers.keep_alive(lease) => {}
        () = answer => {}
    }
}

/// `uid`'s connections open on this node, as the inspector shows them.
fn connections_here(app: &App, uid: &Uid) -> Vec<Value> {
    app.hub
        .connections_of(uid)
        .iter()
        .map(|c| {
            let mut c = serde_json::to_value(c.as_ref()).unwrap_or(Value::Null);
            c["node"] = app.peers.node().into();
            c
        })
        .collect()
}

/// `GET /api/v1/users/{uid}`: the user as every node sees them.
pub async fn user(app: &App, uid: &Uid) -> Result<Value, Error> {
    let marks = app.store.ack(uid, 0).await?;
    let first = app
        .store
        .read(
            uid,
            0,
            PageLimit {
                events: 1,
                bytes: 1,
            },
        )
        .await?;
    // A gap up to the head: nothing is kept.
    let oldest = first
        .events
        .first()
        .map(|e| oldest_kept(e))
        .filter(|&oldest| oldest <= marks.head);
    let mut connections = connections_here(app, uid);
    let (answers, answered) = app.peers.ask(uid, None, None).await?;
    for (_, answer) in answers {
        if let Some(Value::Array(theirs)) = answer.get("connections") {
            connections.extend(theirs.iter().cloned());
        }
    }
    let (visible, chosen, leases) = app.presence.state(uid).await?;
    let mut groups = Vec::new();
    for gid in app.groups.of(uid) {
        let last_read = app.group_reads.last_read(&gid, uid).await?;
        let newest = app.group_log.newest(&gid).await?;
        groups.push(json!({"gid": gid, "last_read": last_read, "newest": newest}));
    }
    Ok(json!({
        "uid": uid,
        "queue": {
            "epoch": first.epoch.to_string(),
            "head": marks.head,
            "acked": marks.before,
            "oldest": oldest,
            "waiting": marks.head.saturating_sub(marks.before),
        },
        "connections": connections,
        "presence": {"visible": visible, "chosen": chosen, "leases": leases},
        "send_budget": app.sends.left(uid).await?,
        "groups": groups,
        "counters": app.counters.all(uid).await?,
        "node": app.peers.node(),
        "nodes": answered,
    }))
}

/// The seq of the oldest event kept, from the first event a read from 0
/// returns (a `gap` up to `to`: the one after it).
fn oldest_kept(event: &[u8]) -> u64 {
    let parsed: Value = serde_json::from_slice(event).unwrap_or(Value::Null);
    let seq = parsed["seq"].as_u64().unwrap_or(0);
    if parsed["type"] == "gap" {
        seq + 1
    } else {
        seq
    }
}

/// Sorts the steps of one event, gathered from every node, by time. The
/// node that appended it notes `durable` when its append call returns,
/// which can be after another node already wrote the event (woken by the
/// commit): the event was durable by its first write, wherever that was.
fn in_order(steps: &mut [Value]) {
    let at = |s: &Value| s["at"].as_u64().unwrap_or(0);
    let first_write = steps
        .iter()
        .filter(|s| s["step"] == "written")
        .map(at)
        .min();
    if let Some(first_write) = first_write {
        for step in steps.iter_mut().filter(|s| s["step"] == "durable") {
            if at(step) > first_write {
                step["at"] = first_write.into();
            }
        }
    }
    let rank = |s: &Value| {
        ["appended", "durable", "written", "acked", "read"]
            .iter()
            .position(|name| s["step"] == *name)
    };
    steps.sort_by_key(|s| (at(s), rank(s)));
}

/// `GET /api/v1/users/{uid}/events/{seq}`: what happened to that event,
/// on every node, oldest first.
pub async fn event(app: &App, uid: &Uid, seq: u64) -> Result<Value, Error> {
    let page = app
        .store
        .read(
            uid,
            seq.saturating_sub(1),
            PageLimit {
                events: 1,
                bytes: 1,
            },
        )
        .await?;
    if seq == 0 || seq > page.head {
        return Err(Error::NotFound(format!(
            "{uid} has no event {seq} (the newest is {})",
            page.head
        )));
    }
    let first: Value = page
        .events
        .first()
        .and_then(|e| serde_json::from_slice(e).ok())
        .unwrap_or(Value::Null);
    let kept = first["seq"].as_u64() == Some(seq) && first["type"] != "gap";
    let message = (first["type"] == "msg")
        .then(|| first["data"]["id"].as_u64())
        .flatten();
    let mut steps: Vec<Value> = app
        .traces
        .steps(uid, seq, message)
        .into_iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect();
    let (answers, answered) = app.peers.ask(uid, Some(seq), message).await?;
    for (_, answer) in answers {
        if let Some(Value::Array(theirs)) = answer.get("steps") {
            steps.extend(theirs.iter().cloned());
        }
    }
    in_order(&mut steps);
    let acked = app.store.ack(uid, 0).await?.before >= seq;
    Ok(json!({
        "uid": uid,
        "seq": seq,
        "status": if kept { "kept" } else { "expired" },
        "event": if kept { first } else { Value::Null },
        "acked": acked,
        "traced_for_minutes": app.config.trace_minutes,
        "steps": steps,
        "node": app.peers.node(),
        "nodes": answered,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_on_another_node_never_comes_before_the_event_was_durable() {
        let mut steps = vec![
            json!({"step": "acked", "at": 20}),
            json!({"step": "written", "at": 12, "node": "b"}),
            json!({"step": "durable", "at": 15, "node": "c"}),
            json!({"step": "appended", "at": 10, "node": "c"}),
            json!({"step": "written", "at": 14, "node": "c"}),
        ];
        in_order(&mut steps);
        let order: Vec<(&str, u64)> = steps
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["at"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                ("appended", 10),
                ("durable", 12),
                ("written", 12),
                ("written", 14),
                ("acked", 20)
            ]
        );
    }
}
