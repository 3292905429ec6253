//! Delivered and read receipts of direct messages, derived from acks and
//! read marks and pushed into the sender's queue (so an offline sender
//! finds them at its next login).
//!
//! Batched: one ack that covers many messages gives each sender one
//! `receipt` event listing all of its message ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::error::Error;
use crate::store::{Append, PageLimit};
use crate::uid::Uid;

/// Who sent a message to whom, kept as `msg/{id}` for read receipts.
#[derive(Serialize, Deserialize)]
pub struct MessageRecord {
    pub from: Uid,
    pub to: Uid,
}

pub fn record_key(id: u64) -> String {
    format!("msg/{id}")
}

/// Acks `uid`'s queue up to `seq` and sends `delivered` receipts for the
/// direct messages the ack newly covers. Returns the acked seq. A `seq`
/// beyond the newest event is refused (409 `cursor_ahead`) and acks
/// nothing: the client remembers a queue this server does not have.
pub async fn ack(app: &App, uid: &Uid, seq: u64) -> Result<u64, Error> {
    let head = *app.store.watch(uid).await?.borrow();
    if seq > head {
        return Err(crate::transport::cursor_ahead(seq, head));
    }
    let (before, after) = app.store.ack(uid, seq).await?;
    if after > before {
        let senders = senders_between(app, uid, before, after).await?;
        send_receipts(app, uid, "delivered", senders).await?;
    }
    Ok(after)
}

/// Marks messages `ids` (sent to `uid`) read: their senders get `read`
/// receipts. Unknown ids are 404, other users' messages 403; then nothing
/// is sent.
pub async fn mark_read(app: &App, uid: &Uid, ids: &[u64]) -> Result<(), Error> {
    let mut senders: BTreeMap<Uid, Vec<u64>> = BTreeMap::new();
    for &id in ids {
        let raw = app
            .store
            .kv_get(&record_key(id))?
            .ok_or_else(|| Error::NotFound(format!("no message {id}")))?;
        let record: MessageRecord = serde_json::from_slice(&raw)
            .map_err(|e| Error::Internal(format!("message record {id}: {e}")))?;
        if &record.to != uid {
            return Err(Error::Forbidden(format!(
                "message {id} was not sent to {uid}"
            )));
        }
        senders.entry(record.from).or_default().push(id);
    }
    send_receipts(app, uid, "read", senders).await
}

#[derive(Deserialize)]
struct MsgEvent {
    seq: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<MsgData>,
}

#[derive(Deserialize)]
struct MsgData {
    id: Option<u64>,
    from: Option<Uid>,
}

/// The direct messages in `uid`'s queue with seq in `(before, after]`, by sender.
async fn senders_between(
    app: &App,
    uid: &Uid,
    before: u64,
    after: u64,
) -> Result<BTreeMap<Uid, Vec<u64>>, Error> {
    let mut senders: BTreeMap<Uid, Vec<u64>> = BTreeMap::new();
    let mut cursor = before;
    while cursor < after {
        let limit = PageLimit {
            events: 1000,
            bytes: app.config.max_page_bytes(),
        };
        let page = app.store.read(uid, cursor, limit).await?;
        if page.events.is_empty() {
            break;
        }
        for raw in &page.events {
            let Ok(event) = serde_json::from_slice::<MsgEvent>(raw) else {
                continue;
            };
            if event.seq > after {
                break;
            }
            if let (
                true,
                Some(MsgData {
                    id: Some(id),
                    from: Some(from),
                }),
            ) = (event.kind == "msg", event.data)
            {
                senders.entry(from).or_default().push(id);
            }
        }
        cursor = page.cursor;
    }
    Ok(senders)
}

async fn send_receipts(
    app: &App,
    by: &Uid,
    kind: &str,
    senders: BTreeMap<Uid, Vec<u64>>,
) -> Result<(), Error> {
    let batch: Vec<Append> = senders
        .into_iter()
        .map(|(from, ids)| {
            Append::new(
                from,
                "receipt",
                &json!({"kind": kind, "ids": ids, "by": by}),
            )
        })
        .collect();
    if !batch.is_empty() {
        app.store.append(batch).await?;
    }
    Ok(())
}
