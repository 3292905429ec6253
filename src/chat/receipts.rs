//! Delivered and read receipts of direct messages, derived from acks and
//! read marks and pushed into the sender's queue (so an offline sender
//! finds them at its next login).
//!
//! Batched: one ack that covers many messages gives each sender one
//! `receipt` event listing all of its message ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::conversations::Conversations;
use crate::chat::feed::Feed;
use crate::error::Error;
use crate::store::{Append, PageLimit, Store};
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

/// Delivered and read receipts: the store they read and append to, and
/// the history whose read state they keep.
pub struct Receipts {
    store: Arc<dyn Store>,
    /// The byte budget of the pages an ack reads to find messages.
    page_bytes: usize,
    history: Arc<Conversations>,
    /// Receipts also go to the backend feed (`--feed`).
    feed: Feed,
}

impl Receipts {
    /// With `feed`, receipts also go to the backend feed.
    pub fn new(
        store: Arc<dyn Store>,
        page_bytes: usize,
        history: Arc<Conversations>,
        feed: Feed,
    ) -> Receipts {
        Receipts {
            store,
            page_bytes,
            history,
            feed,
        }
    }

    /// Acks `uid`'s queue up to `seq` and sends `delivered` receipts for the
    /// direct messages the ack newly covers. Returns the acked seq. A `seq`
    /// beyond the newest event is refused (409 `cursor_ahead`) and acks
    /// nothing: the client remembers a queue this server does not have.
    pub async fn ack(&self, uid: &Uid, seq: u64) -> Result<u64, Error> {
        let acked = self.store.ack(uid, seq).await?;
        if seq > acked.head {
            return Err(Error::cursor_ahead(seq, acked.head));
        }
        let (before, after) = (acked.before, acked.after);
        if after > before {
            let senders = self.senders_between(uid, before, after).await?;
            self.send_receipts(uid, "delivered", senders).await?;
        }
        Ok(after)
    }

    /// Marks messages `ids` (sent to `uid`) read: their senders get `read`
    /// receipts. Unknown ids are 404, other users' messages 403; then nothing
    /// is sent.
    pub async fn mark_read(&self, uid: &Uid, ids: &[u64]) -> Result<(), Error> {
        let mut senders: BTreeMap<Uid, Vec<u64>> = BTreeMap::new();
        for &id in ids {
            let raw = self
                .store
                .kv_get(&record_key(id))
                .await?
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
        // Staged before the receipts are appended: durable with them.
        for (from, ids) in &senders {
            for &id in ids {
                self.history.mark_read(from, uid, id).await?;
            }
        }
        self.send_receipts(uid, "read", senders).await
    }

    /// The direct messages in `uid`'s queue with seq in `(before, after]`, by sender.
    async fn senders_between(
        &self,
        uid: &Uid,
        before: u64,
        after: u64,
    ) -> Result<BTreeMap<Uid, Vec<u64>>, Error> {
        let mut senders: BTreeMap<Uid, Vec<u64>> = BTreeMap::new();
        let mut cursor = before;
        while cursor < after {
            let limit = PageLimit {
                events: 1000,
                bytes: self.page_bytes,
            };
            let page = self.store.read(uid, cursor, limit).await?;
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
        &self,
        by: &Uid,
        kind: &str,
        senders: BTreeMap<Uid, Vec<u64>>,
    ) -> Result<(), Error> {
        let mut batch: Vec<Append> = Vec::with_capacity(senders.len() + 1);
        let mut all = Vec::new();
        for (from, ids) in senders {
            all.extend_from_slice(&ids);
            batch.push(Append::new(
                from,
                "receipt",
                &json!({"kind": kind, "ids": ids, "by": by}),
            ));
        }
        if !all.is_empty() {
            // The backend feed: one event per mark or ack, every sender's ids.
            all.sort_unstable();
            let data = json!({"kind": kind, "ids": all, "by": by});
            batch.extend(self.feed.record("receipt", &data, by.as_str()));
        }
        if !batch.is_empty() {
            self.store.append(batch).await?;
        }
        Ok(())
    }
}
