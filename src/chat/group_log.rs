//! Group messages, stored ONCE in the group's log with a group-scoped
//! increasing `msgid`; each member's queue only gets a small reference
//! `{"gid","msgid"}` that [`expand`] turns into the full `group_msg` event
//! on delivery, whatever the transport.
//!
//! Layout in the store's kv: `glog/{gid}/{msgid:020}` → the message JSON
//! (kept for `--history-retention`), `gnext/{gid}` → the newest msgid (so
//! msgids keep rising when old messages expire), `gcid/{gid}/{from}\0{cid}`
//! → `{msgid}` for idempotent sends (kept as long as idempotency keys are),
//! and `gpend/{gid}/{msgid:020}` while the members' references are being
//! appended. All of a post's records are written in one atomic batch; the
//! pending mark goes once every reference is durable, and a mark found at
//! start (a crash in between) has its references appended then, so no post
//! stays orphaned in the log. The references of a post are appended under
//! one idempotency key (`gref`), so finishing a post again gives no member
//! a second one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::chat::feed::Feed;
use crate::chat::groups::{Gid, Groups};
use crate::error::Error;
use crate::store::{event_json, now_ms, Append, PageLimit, Store, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

/// The message log of every group.
pub struct GroupLog {
    store: Arc<dyn Store>,
    /// Per group: the last msgid (0 until loaded), behind a lock that
    /// orders posts of one group. Dropped when no post holds it.
    last: SharedMap<Gid, Arc<tokio::sync::Mutex<Option<u64>>>>,
    /// How long messages are kept.
    history_ttl: Duration,
    /// How long cid records are kept.
    cid_ttl: Duration,
    /// References also go to the backend feed (`--feed`).
    feed: Feed,
}

#[derive(Serialize, Deserialize)]
struct CidRecord {
    msgid: u64,
    /// Written `false` by herald 0.5 until the references were durable.
    #[serde(default = "yes")]
    refs: bool,
}

fn yes() -> bool {
    true
}

fn next_key(gid: &Gid) -> String {
    format!("gnext/{gid}")
}

const PENDING: &str = "gpend/";

fn pending_key(gid: &Gid, msgid: u64) -> String {
    format!("{PENDING}{gid}/{msgid:020}")
}

fn log_prefix(gid: &Gid) -> String {
    format!("glog/{gid}/")
}

pub fn log_key(gid: &Gid, msgid: u64) -> String {
    format!("glog/{gid}/{msgid:020}")
}

impl GroupLog {
    /// With `feed`, every post's reference also goes to the backend feed.
    pub fn new(
        store: Arc<dyn Store>,
        history_ttl: Duration,
        cid_ttl: Duration,
        feed: Feed,
    ) -> GroupLog {
        GroupLog {
            store,
            last: SharedMap::default(),
            history_ttl,
            cid_ttl,
            feed,
        }
    }

    /// Appends the references of posts a crash interrupted (see the module
    /// comment), to the groups' current members.
    pub async fn recover(&self, groups: &Groups) -> Result<usize, StoreError> {
        let pending = self.store.kv_scan(PENDING).await?;
        for (key, _) in &pending {
            let parsed = key[PENDING.len()..]
                .rsplit_once('/')
                .and_then(|(gid, msgid)| Some((Gid::parse(gid).ok()?, msgid.parse().ok()?)));
            if let Some((gid, msgid)) = parsed {
                if let Some(members) = groups.members(&gid) {
                    self.append_refs(&gid, msgid, &members).await?;
                }
            }
            self.store.kv_stage_remove(key).await?;
        }
        self.store.sync().await?;
        Ok(pending.len())
    }

    /// Forgets the per-group locks no post holds; returns how many remain.
    pub fn forget_idle(&self) -> usize {
        self.last.retain(|_, lock| Arc::strong_count(lock) > 1);
        self.last.len()
    }

    /// The newest msgid of `gid` (0 if none).
    pub async fn newest(&self, gid: &Gid) -> Result<u64, StoreError> {
        let lock = self.last.entry(gid.clone()).or_default().clone();
        let mut last = lock.lock().await;
        *last = None; // another node may have posted
        self.loaded(gid, &mut last).await
    }

    async fn loaded(&self, gid: &Gid, last: &mut Option<u64>) -> Result<u64, StoreError> {
        if let Some(n) = *last {
            return Ok(n);
        }
        let recorded = self
            .store
            .kv_get(&next_key(gid))
            .await?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        // Groups written by herald 0.5 have no `gnext` record.
        let in_log = match recorded {
            0 => match self.store.kv_last(&log_prefix(gid)).await? {
                Some((key, _)) => key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                None => 0,
            },
            _ => 0,
        };
        let newest = recorded.max(in_log);
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
        // The lock spans every node of a deployment, and the newest msgid
        // is read again under it.
        let _lease = self.store.lock(&format!("glog/{gid}")).await?;
        *last = None;
        let cid_key = cid.as_ref().map(|cid| format!("gcid/{gid}/{from}\0{cid}"));
        if let Some(key) = &cid_key {
            if let Some(raw) = self.store.kv_get(key).await? {
                let record: CidRecord = serde_json::from_slice(&raw)
                    .map_err(|e| Error::Internal(format!("cid record: {e}")))?;
                if !record.refs {
                    self.send_refs(gid, record.msgid, members, key).await?;
                }
                self.store.sync().await?;
                return Ok(record.msgid);
            }
        }
        let msgid = self.loaded(gid, &mut last).await? + 1;
        let message = json!({"gid": gid, "msgid": msgid, "from": from, "body": body, "cid": cid, "ts": now_ms()});
        let log = log_key(gid, msgid);
        let pending = pending_key(gid, msgid);
        self.store.expire(&log, self.history_ttl).await?;
        let mut writes = vec![
            (log, message.to_string().into_bytes()),
            (next_key(gid), msgid.to_string().into_bytes()),
            (pending.clone(), Vec::new()),
        ];
        if let Some(key) = &cid_key {
            self.store.expire(key, self.cid_ttl).await?;
            writes.push((key.clone(), to_json(&CidRecord { msgid, refs: true })?));
        }
        self.store.kv_put_all(writes).await?;
        *last = Some(msgid);
        self.append_refs(gid, msgid, members).await?;
        // Durable with the next commit; a crash before it re-sends the
        // references at start.
        self.store.kv_stage_remove(&pending).await?;
        Ok(msgid)
    }

    /// The rest of a post made by herald 0.5 that a crash interrupted.
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
        // Every member, and the backend feed if kept (a reference expands
        // there too). Under one idempotency key per post: a post finished
        // again at start (or by two nodes at once) appends nothing twice.
        let batch: Vec<Append> = members
            .iter()
            .cloned()
            .chain(self.feed.reader(gid.as_str()))
            .map(|m| Append::new(m, "group_msg", &reference))
            .collect();
        if !batch.is_empty() {
            let key = format!("gref\0{gid}\0{msgid}");
            self.store.append_once(&key, msgid, batch).await?;
        }
        Ok(())
    }

    /// Up to `limit` messages of `gid` after `after`, oldest first, and
    /// past the first at most `max_bytes` of them.
    pub async fn history(
        &self,
        gid: &Gid,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let start = if after == 0 {
            log_prefix(gid)
        } else {
            log_key(gid, after)
        };
        let rows = self.store.kv_range(&log_prefix(gid), &start, limit).await?;
        let mut bytes = 0usize;
        Ok(rows
            .into_iter()
            .enumerate()
            .take_while(|(i, (_, v))| {
                bytes = bytes.saturating_add(v.len());
                *i == 0 || bytes <= max_bytes
            })
            .map(|(_, (_, v))| Bytes::from(v))
            .collect())
    }

    /// One message of `gid`.
    pub async fn get(&self, gid: &Gid, msgid: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.kv_get(&log_key(gid, msgid)).await
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
/// events (`data` = the stored message), in order, and drops the events
/// past `limit`'s byte budget (never the first). Other events pass as they
/// are. Returns whether events were dropped.
pub async fn expand(
    log: &GroupLog,
    events: &mut Vec<Bytes>,
    limit: PageLimit,
) -> Result<bool, StoreError> {
    let mut bytes = 0;
    for at in 0..events.len() {
        expand_one(log, &mut events[at]).await?;
        let len = events[at].len();
        if !limit.fits(at, bytes, len) {
            events.truncate(at);
            return Ok(true);
        }
        bytes += len;
    }
    Ok(false)
}

async fn expand_one(log: &GroupLog, event: &mut Bytes) -> Result<(), StoreError> {
    let head = &event[..event.len().min(48)];
    if !head.windows(19).any(|w| w == br#""type":"group_msg","#) {
        return Ok(());
    }
    let Ok(reference) = serde_json::from_slice::<Reference>(event) else {
        return Ok(());
    };
    if reference.data.from.is_some() {
        return Ok(()); // already a full message
    }
    if let Some(message) = log.get(&reference.data.gid, reference.data.msgid).await? {
        let message = String::from_utf8_lossy(&message);
        *event = Bytes::from(event_json(
            reference.seq,
            "group_msg",
            reference.ts,
            &message,
        ));
    }
    Ok(())
}
