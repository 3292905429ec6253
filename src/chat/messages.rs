//! Direct (1:1) messages: appended to the recipient's queue as a `msg`
//! event, idempotent by the sender's `cid`.

use serde::Deserialize;
use serde_json::json;

use std::sync::Arc;
use std::time::Duration;

use crate::chat::admission::Admission;
use crate::chat::conversations::Conversations;
use crate::chat::feed::Feed;
use crate::chat::hook::Target;
use crate::chat::receipts::{record_key, MessageRecord};
use crate::error::Error;
use crate::store::{Append, IdempotentAppend, Store};
use crate::uid::Uid;

/// A direct message as a client sends it (HTTP body or WebSocket frame).
#[derive(Debug, Deserialize)]
pub struct Outgoing {
    pub to: Uid,
    pub body: serde_json::Value,
    #[serde(default)]
    pub cid: Option<String>,
}

/// Direct messages: the store they go to, the send limit they count
/// against, how long their records are kept, and their history.
pub struct Messages {
    store: Arc<dyn Store>,
    admission: Arc<Admission>,
    record_ttl: Duration,
    history: Arc<Conversations>,
    /// Messages also go to the backend feed (`--feed`).
    feed: Feed,
}

impl Messages {
    pub fn new(
        store: Arc<dyn Store>,
        admission: Arc<Admission>,
        record_ttl: Duration,
        history: Arc<Conversations>,
        feed: Feed,
    ) -> Messages {
        Messages {
            store,
            admission,
            record_ttl,
            history,
            feed,
        }
    }

    /// Sends `msg` from `from`; resolves with the message id once durable. A
    /// repeated `cid` from the same sender returns the first id and appends
    /// nothing. Counts against the sender's send limit (429 past it), then
    /// goes by the message hook, if one is set.
    pub async fn send(&self, from: &Uid, mut msg: Outgoing) -> Result<u64, Error> {
        // Admitted before anything is stored: a denied message is nowhere.
        let body = std::mem::take(&mut msg.body);
        msg.body = self
            .admission
            .admit(from, Target::Direct(&msg.to), body, &msg.cid)
            .await?;
        let id = self
            .store
            .next_id(&crate::chat::conversations::id_scope(from, &msg.to))
            .await?;
        // The record read receipts are checked against, written before the
        // event: the commit that makes the event durable (and visible) covers
        // it too, so no delivered message lacks one, for one flush.
        let record = serde_json::to_vec(&MessageRecord {
            from: from.clone(),
            to: msg.to.clone(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.store.expire(&record_key(id), self.record_ttl).await?;
        self.store.kv_stage(&record_key(id), record).await?;
        self.history
            .record(from, &msg.to, id, &msg.body, &msg.cid)
            .await?;
        let event = Append::new(
            msg.to.clone(),
            "msg",
            &json!({"id": id, "from": from, "to": msg.to, "body": msg.body, "cid": msg.cid}),
        );
        // The backend feed's copy, if kept, goes with it atomically: a
        // crash keeps both or neither.
        let conversation = crate::chat::conversations::id_scope(from, &msg.to);
        let copy = self.feed.copy_of(&event, &conversation);
        let appends: Vec<Append> = std::iter::once(event).chain(copy).collect();
        let Some(cid) = &msg.cid else {
            if appends.len() == 1 {
                self.store.append(appends).await?;
            } else {
                self.store.append_atomic(appends).await?;
            }
            return Ok(id);
        };
        // uids cannot contain NUL, so `from NUL cid` is unambiguous.
        let key = format!("msg\0{from}\0{cid}");
        match self.store.append_once(&key, id, appends).await? {
            IdempotentAppend::Appended { .. } => Ok(id),
            IdempotentAppend::Duplicate { tag, .. } => {
                // The retry's own records are for a message never sent.
                self.store.kv_stage_remove(&record_key(id)).await?;
                self.history.forget(from, &msg.to, id).await?;
                Ok(tag)
            }
        }
    }
}
