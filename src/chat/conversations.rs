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

    /// A page of the conversation of `me` with `other`, oldest first.
    pub async fn page(&self, me: &Uid, other: &Uid, window: Window) -> Result<Page, Error> {
        let prefix = prefix(me, other);
        let decode = |(key, raw): (String, Vec<u8>)| {
            serde_json::from_slice::<Message>(&raw)
                .map_err(|e| Error::Internal(format!("history record {key:?}: {e}")))
        };
        match window {
            Window::Before(before, limit) => {
                // Newest first from just past `before`.
                let after = before.map_or_else(String::new, |id| key(me, other, id));
                let mut rows = self.store.kv_range(&prefix, &after, limit + 1).await?;
                let more = rows.len() > limit;
                rows.truncate(limit);
                let mut messages = rows
                    .into_iter()
                    .map(decode)
                    .collect::<Result<Vec<_>, _>>()?;
                messages.reverse();
                Ok(Page { messages, more })
            }
            Window::After(after, limit) => {
                // Newest first down to `after`, then the oldest `limit` of them.
                let mut newer = Vec::new();
                let mut from = String::new();
                loop {
                    let rows = self.store.kv_range(&prefix, &from, 1000).await?;
                    let Some((last, _)) = rows.last() else { break };
                    from = last.clone();
                    let full = rows.len() == 1000;
                    for row in rows {
                        let message = decode(row)?;
                        if message.id <= after {
                            return Ok(oldest(newer, limit));
                        }
                        newer.push(message);
                    }
                    if !full {
                        break;
                    }
                }
                Ok(oldest(newer, limit))
            }
        }
    }
}

/// The oldest `limit` of `newest_first`, oldest first.
fn oldest(mut newest_first: Vec<Message>, limit: usize) -> Page {
    newest_first.reverse();
    let more = newest_first.len() > limit;
    newest_first.truncate(limit);
    Page {
        messages: newest_first,
        more,
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
