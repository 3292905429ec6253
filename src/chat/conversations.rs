//! The history of direct (1:1) conversations: each message stored once,
//! under its pair of users, with its read state, for `--history-retention`.
//!
//! Keys are `conv/{a}\0{b}/{rev}` with `a < b` (uids cannot contain NUL)
//! and `rev` the message id subtracted from `u64::MAX`, in 16 hex digits:
//! a prefix range runs newest first, which is how a conversation opens.
//! A record is staged with its message, before the message's event is
//! appended, so the commit that makes the message durable covers it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::store::{now_ms, Store};
use crate::uid::Uid;

/// Most messages one history page returns, and the default.
pub const MAX_PAGE: usize = 100;
pub const DEFAULT_PAGE: usize = 50;

/// One message of a conversation, as stored and as answered.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub from: Uid,
    pub to: Uid,
    pub body: serde_json::Value,
    pub cid: Option<String>,
    pub ts: u64,
    /// The recipient marked it read.
    pub read: bool,
}

/// Which page of a conversation: the newest, or around a message id.
#[derive(Debug, Clone, Copy)]
pub enum Window {
    /// The newest `limit` messages older than the id (`None`: the newest).
    Before(Option<u64>, usize),
    /// The oldest `limit` messages newer than the id.
    After(u64, usize),
}

/// A page of history, oldest first (newest last).
pub struct Page {
    pub messages: Vec<Message>,
    /// More messages lie beyond the page in the direction asked.
    pub more: bool,
}

pub struct Conversations {
    store: Arc<dyn Store>,
    ttl: Duration,
}

fn prefix(a: &Uid, b: &Uid) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("conv/{lo}\0{hi}/")
}

/// The scope of the message ids of `a` and `b`'s conversation: its
/// history is in id order.
pub fn id_scope(a: &Uid, b: &Uid) -> String {
    prefix(a, b)
}

fn key(a: &Uid, b: &Uid, id: u64) -> String {
    format!("{}{:016x}", prefix(a, b), u64::MAX - id)
}

impl Conversations {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Conversations {
        Conversations { store, ttl }
    }

    /// Stages message `id` from `from` to `to` (durable with the next
    /// commit, which the message's own append waits for).
    pub async fn record(
        &self,
        from: &Uid,
        to: &Uid,
        id: u64,
        body: &serde_json::Value,
        cid: &Option<String>,
    ) -> Result<(), Error> {
        let message = Message {
            id,
            from: from.clone(),
            to: to.clone(),
            body: body.clone(),
            cid: cid.clone(),
            ts: now_ms(),
            read: false,
        };
        let raw = serde_json::to_vec(&message).map_err(|e| Error::Internal(e.to_string()))?;
        let key = key(from, to, id);
        self.store.expire(&key, self.ttl).await?;
        self.store.kv_stage(&key, raw).await?;
        Ok(())
    }

    /// Drops the record of a message that was not sent after all (a
    /// retried cid).
    pub async fn forget(&self, from: &Uid, to: &Uid, id: u64) -> Result<(), Error> {
        Ok(self.store.kv_stage_remove(&key(from, to, id)).await?)
    }

    /// Marks message `id` from `from` to `to` read, if its history is
    /// still kept.
    pub async fn mark_read(&self, from: &Uid, to: &Uid, id: u64) -> Result<(), Error> {
        let key = key(from, to, id);
        let Some(raw) = self.store.kv_get(&key).await? else {
            return Ok(());
        };
        let mut message: Message = serde_json::from_slice(&raw)
            .map_err(|e| Error::Internal(format!("history record {key:?}: {e}")))?;
        if !message.read {
            message.read = true;
            let raw = serde_json::to_vec(&message).map_err(|e| Error::Internal(e.to_string()))?;
            self.store.kv_stage(&key, raw).await?;
        }
        Ok(())
    }

    /// A page of the conversation of `me` with `other`, oldest first: at
    /// most the window's limit of messages and, past the first, at most
    /// `max_bytes` of them as stored. Reads no more than that from the
    /// store, however long the conversation.
    pub async fn page(
        &self,
        me: &Uid,
        other: &Uid,
        window: Window,
        max_bytes: usize,
    ) -> Result<Page, Error> {
        let prefix = prefix(me, other);
        let (rows, limit, newest_first) = match window {
            // Newest first from just past `before` (greater keys are older).
            Window::Before(before, limit) => {
                let after = before.map_or_else(String::new, |id| key(me, other, id));
                let rows = self.store.kv_range(&prefix, &after, limit + 1).await?;
                (rows, limit, true)
            }
            // Oldest first from just past `after`: the keys below its key,
            // greatest (oldest) first.
            Window::After(after, limit) => {
                let rows = self
                    .store
                    .kv_range_back(&prefix, &key(me, other, after), limit + 1)
                    .await?;
                (rows, limit, false)
            }
        };
        let mut more = rows.len() > limit;
        let mut messages = Vec::with_capacity(rows.len().min(limit));
        let mut bytes = 0usize;
        for (key, raw) in rows.into_iter().take(limit) {
            bytes = bytes.saturating_add(raw.len());
            if !messages.is_empty() && bytes > max_bytes {
                more = true;
                break;
            }
            messages.push(
                serde_json::from_slice::<Message>(&raw)
                    .map_err(|e| Error::Internal(format!("history record {key:?}: {e}")))?,
            );
        }
        if newest_first {
            messages.reverse();
        }
        Ok(Page { messages, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::parse(s).unwrap()
    }

    #[test]
    fn a_pair_shares_one_prefix_and_newer_ids_sort_first() {
        let (a, b) = (uid("alice"), uid("bob"));
        assert_eq!(prefix(&a, &b), prefix(&b, &a));
        assert!(key(&a, &b, 10) < key(&a, &b, 9));
        assert!(key(&a, &b, u64::MAX - 1) < key(&b, &a, 1));
        // Another pair never shares the prefix, whatever the uids.
        assert!(!key(&a, &uid("bobby"), 1).starts_with(&prefix(&a, &b)));
    }
}
