//! Group messages, stored ONCE in the group's log with a group-scoped
//! increasing `msgid`; each member's queue only gets a small reference
//! `{"gid","msgid"}` that [`expand`] turns into the full `group_msg` event
//! on delivery, whatever the transport.
//!
//! Layout in the store's kv: `glog/{gid}/{msgid:020}` → the message JSON,
//! and `gcid/{gid}/{from}\0{cid}` → `{msgid, refs}` for idempotent sends.
//! The body and its cid record are written in one atomic batch; `refs`
//! turns true once every member's reference is durable, so a retry after a
//! crash in between re-sends the references (clients de-duplicate by msgid)
//! instead of losing the message.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::groups::Gid;
use crate::http::Error;
use crate::store::{event_json, now_ms, Append, Store, StoreError};
use crate::uid::Uid;

/// The message log of every group.
pub struct GroupLog {
    store: Arc<dyn Store>,
    /// Per group: the last msgid (0 until loaded), behind a lock that
    /// orders posts of one group.
    last: DashMap<Gid, Arc<tokio::sync::Mutex<Option<u64>>>>,
}

#[derive(Serialize, Deserialize)]
struct CidRecord {
    msgid: u64,
    refs: bool,
}

fn log_prefix(gid: &Gid) -> String {
    format!("glog/{gid}/")
}

pub fn log_key(gid: &Gid, msgid: u64) -> String {
    format!("glog/{gid}/{msgid:020}")
}

impl GroupLog {
    pub fn new(store: Arc<dyn Store>) -> GroupLog {
        GroupLog {
            store,
            last: DashMap::new(),
        }
    }

    /// The newest msgid of `gid` (0 if none).
    pub async fn newest(&self, gid: &Gid) -> Result<u64, StoreError> {
        let lock = self.last.entry(gid.clone()).or_default().clone();
        let mut last = lock.lock().await;
        self.loaded(gid, &mut last)
    }

    fn loaded(&self, gid: &Gid, last: &mut Option<u64>) -> Result<u64, StoreError> {
        if let Some(n) = *last {
            return Ok(n);
        }
        let newest = match self.store.kv_last(&log_prefix(gid))? {
            Some((key, _)) => key
                .rsplit('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        *last = Some(newest);
        Ok(newest)
    }

    /// Posts `body` from `from` to `gid`: stored once, a reference appended
    /// to every member's queue; resolves with the msgid once all is durable.
    pub async fn post(
        &self,
        gid: &Gid,
        from: &Uid,
        body: serde_json::Value,
        cid: Option<String>,
        members: &HashSet<Uid>,
    ) -> Result<u64, Error> {
        let lock = self.last.entry(gid.clone()).or_default().clone();
        let mut last = lock.lock().await;
        let cid_key = cid.as_ref().map(|cid| format!("gcid/{gid}/{from}\0{cid}"));
        if let Some(key) = &cid_key {
            if let Some(raw) = self.store.kv_get(key)? {
                let record: CidRecord = serde_json::from_slice(&raw)
                    .map_err(|e| Error::Internal(format!("cid record: {e}")))?;
                if !record.refs {
                    self.send_refs(gid, record.msgid, members, key).await?;
                }
                self.store.sync().await?;
                return Ok(record.msgid);
            }
        }
        let msgid = self.loaded(gid, &mut last)? + 1;
        let message = json!({"gid": gid, "msgid": msgid, "from": from, "body": body, "cid": cid, "ts": now_ms()});
        let mut writes = vec![(log_key(gid, msgid), message.to_string().into_bytes())];
        if let Some(key) = &cid_key {
            writes.push((key.clone(), to_json(&CidRecord { msgid, refs: false })?));
        }
        self.store.kv_put_all(writes).await?;
        *last = Some(msgid);
        match &cid_key {
            Some(key) => self.send_refs(gid, msgid, members, key).await?,
            None => self.append_refs(gid, msgid, members).await?,
        }
        Ok(msgid)
    }

    async fn send_refs(
        &self,
        gid: &Gid,
        msgid: u64,
        members: &HashSet<Uid>,
        cid_key: &str,
    ) -> Result<(), Error> {
        self.append_refs(gid, msgid, members).await?;
        self.store
            .kv_put(cid_key, to_json(&CidRecord { msgid, refs: true })?)
            .await?;
        Ok(())
    }

    async fn append_refs(
        &self,
        gid: &Gid,
        msgid: u64,
        members: &HashSet<Uid>,
    ) -> Result<(), StoreError> {
        let reference = json!({"gid": gid, "msgid": msgid});
        let batch: Vec<Append> = members
            .iter()
            .map(|m| Append::new(m.clone(), "group_msg", &reference))
            .collect();
        if !batch.is_empty() {
            self.store.append(batch).await?;
        }
        Ok(())
    }

    /// Up to `limit` messages of `gid` after `after`, oldest first.
    pub fn history(&self, gid: &Gid, after: u64, limit: usize) -> Result<Vec<Bytes>, StoreError> {
        let start = if after == 0 {
            log_prefix(gid)
        } else {
            log_key(gid, after)
        };
        Ok(self
            .store
            .kv_range(&log_prefix(gid), &start, limit)?
            .into_iter()
            .map(|(_, v)| Bytes::from(v))
            .collect())
    }

    /// One message of `gid`.
    pub fn get(&self, gid: &Gid, msgid: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.kv_get(&log_key(gid, msgid))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))
}

#[derive(Deserialize)]
struct Reference {
    seq: u64,
    ts: u64,
    data: RefData,
}

#[derive(Deserialize)]
struct RefData {
    gid: Gid,
    msgid: u64,
    from: Option<serde::de::IgnoredAny>,
}

/// Turns the group-message references among `events` into full `group_msg`
/// events (`data` = the stored message). Other events pass as they are.
pub fn expand(log: &GroupLog, events: &mut [Bytes]) -> Result<(), StoreError> {
    for event in events.iter_mut() {
        let head = &event[..event.len().min(48)];
        if !head.windows(19).any(|w| w == br#""type":"group_msg","#) {
            continue;
        }
        let Ok(reference) = serde_json::from_slice::<Reference>(event) else {
            continue;
        };
        if reference.data.from.is_some() {
            continue; // already a full message
        }
        if let Some(message) = log.get(&reference.data.gid, reference.data.msgid)? {
            let message = String::from_utf8_lossy(&message);
            *event = Bytes::from(event_json(
                reference.seq,
                "group_msg",
                reference.ts,
                &message,
            ));
        }
    }
    Ok(())
}
