//! Read state of group members and the receipts derived from it.
//!
//! Each member has one `last_read` msgid per group (kv
//! `gread/{gid}/{uid}`); a read mark for msgid M marks everything ≤ M read
//! and never moves backwards. Receipts are computed from these cursors
//! (readers of m = members other than its sender with last_read ≥ m): no
//! per-message-per-member rows. While a sender is online, changes to the
//! receipts of its messages are pushed as `group_receipt` events, at most
//! one per sender per group per second (or with `--group-receipts
//! keepalive` left for its next keepalive, see `signals.rs`); an offline
//! sender pulls them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::chat::feed::Feed;
use crate::chat::group_log::GroupLog;
use crate::chat::groups::Gid;
use crate::chat::groups::Groups;
use crate::chat::presence::Presence;
use crate::chat::signals::Signals;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::{Append, Store, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

/// At most one receipt push per sender per group in this window.
const PUSH_WINDOW: Duration = Duration::from_secs(1);

/// Receipt counts of one message.
pub struct Receipt {
    pub msgid: u64,
    pub readers: Vec<Uid>,
    pub unread: usize,
}

#[derive(Default)]
struct Pending {
    msgids: BTreeSet<u64>,
    last_push: Option<Instant>,
    scheduled: bool,
}

/// A cached read cursor, and whether it was used since the last sweep.
struct Cursor {
    last_read: u64,
    used: AtomicBool,
}

impl Cursor {
    fn new(last_read: u64) -> Cursor {
        Cursor {
            last_read,
            used: AtomicBool::new(true),
        }
    }
}

/// Members' read cursors and the coalesced receipt pushes.
///
/// Both maps only hold what is in use: [`GroupReads::forget_idle`] drops
/// cursors unused since the last sweep (the store has them) and windows
/// whose push is done and over.
pub struct GroupReads {
    me: Weak<GroupReads>,
    store: Arc<dyn Store>,
    log: Arc<GroupLog>,
    groups: Arc<Groups>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    last_read: SharedMap<(Gid, Uid), Cursor>,
    pending: SharedMap<(Uid, Gid), Pending>,
    /// Read marks also go to the backend feed (`--feed`).
    feed: Feed,
    /// `--group-receipts keepalive`: totals ride on the sender's next
    /// keepalive instead of a `group_receipt` event.
    keepalive: Option<Arc<Signals>>,
}

#[derive(Deserialize)]
struct Stored {
    msgid: u64,
    from: Uid,
}

fn read_key(gid: &Gid, uid: &Uid) -> String {
    format!("gread/{gid}/{uid}")
}

/// `uid`'s read cursor in `gid` as stored (0 if none).
async fn stored(store: &dyn Store, gid: &Gid, uid: &Uid) -> Result<u64, StoreError> {
    Ok(store
        .kv_get(&read_key(gid, uid))
        .await?
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0))
}

impl GroupReads {
    pub fn new(
        store: Arc<dyn Store>,
        log: Arc<GroupLog>,
        groups: Arc<Groups>,
        presence: Arc<Presence>,
        metrics: Arc<Metrics>,
        feed: Feed,
        keepalive: Option<Arc<Signals>>,
    ) -> Arc<GroupReads> {
        Arc::new_cyclic(|me| GroupReads {
            me: me.clone(),
            store,
            log,
            groups,
            presence,
            metrics,
            last_read: SharedMap::default(),
            pending: SharedMap::default(),
            feed,
            keepalive,
        })
    }

    /// `uid`'s last read msgid in `gid`.
    pub async fn last_read(&self, gid: &Gid, uid: &Uid) -> Result<u64, StoreError> {
        let key = (gid.clone(), uid.clone());
        if let Some(cursor) = self.last_read.get(&key) {
            cursor.used.store(true, Ordering::Relaxed);
            return Ok(cursor.last_read);
        }
        let stored = stored(self.store.as_ref(), gid, uid).await?;
        Ok(self.remember(key, stored))
    }

    /// Caches `key`'s cursor as at least `value` (a concurrent mark may
    /// have cached a higher one); returns the cached cursor.
    fn remember(&self, key: (Gid, Uid), value: u64) -> u64 {
        let mut cursor = self
            .last_read
            .entry(key)
            .or_insert_with(|| Cursor::new(value));
        cursor.last_read = cursor.last_read.max(value);
        *cursor.used.get_mut() = true;
        cursor.last_read
    }

    /// Marks everything ≤ `msgid` read for `uid` (capped at the newest
    /// message; never backwards) and returns the last read msgid.
    pub async fn mark(&self, gid: &Gid, uid: &Uid, msgid: u64) -> Result<u64, Error> {
        let newest = self.log.newest(gid).await?;
        let target = msgid.min(newest);
        let before = self.last_read(gid, uid).await?;
        let after = if target > before {
            // Recorded first: after a crash before the cursor is raised,
            // the client marks again and the feed has the mark twice, which
            // is harmless (a consumer keeps the highest).
            let data = json!({"gid": gid, "by": uid, "msgid": target});
            if let Some(mark) = self.feed.record("group_read", &data, gid.as_str()) {
                self.store.append(vec![mark]).await?;
            }
            // The store keeps the highest of all raises, whatever order
            // concurrent marks (or nodes) reach it in; the cache follows.
            let stored = self.store.kv_raise(&read_key(gid, uid), target).await?;
            self.remember((gid.clone(), uid.clone()), stored)
        } else {
            before
        };
        // Answer only once the cursor answered with is durable (a concurrent
        // mark may have raised it).
        self.store.sync().await?;
        if after <= before {
            return Ok(after);
        }
        // Whose messages just got a reader: their senders' receipts changed.
        let limit = (after - before).min(1000) as usize;
        for raw in self.log.history(gid, before, limit, usize::MAX).await? {
            let Ok(message) = serde_json::from_slice::<Stored>(&raw) else {
                continue;
            };
            if &message.from != uid {
                self.changed(message.from, gid.clone(), message.msgid);
            }
        }
        Ok(after)
    }

    /// Drops the read cursors of members who left `gid`.
    pub async fn forget(&self, gid: &Gid, left: &[&Uid]) -> Result<(), StoreError> {
        for uid in left {
            self.last_read.remove(&(gid.clone(), (*uid).clone()));
            self.store.kv_stage_remove(&read_key(gid, uid)).await?;
        }
        Ok(())
    }

    /// Forgets cursors unused since the last call and receipt windows that
    /// are over; returns how many of each remain.
    pub fn forget_idle(&self) -> (usize, usize) {
        self.last_read
            .retain(|_, cursor| cursor.used.swap(false, Ordering::Relaxed));
        self.pending.retain(|_, p| {
            p.scheduled
                || !p.msgids.is_empty()
                || p.last_push.is_some_and(|at| at.elapsed() < PUSH_WINDOW)
        });
        (self.last_read.len(), self.pending.len())
    }

    /// Receipts of `msgids` of `gid`, whose members are `members`.
    pub async fn receipts(
        &self,
        gid: &Gid,
        members: &HashSet<Uid>,
        msgids: &[u64],
    ) -> Result<Vec<Receipt>, Error> {
        let mut cursors = BTreeMap::new();
        for member in members {
            cursors.insert(member.clone(), self.last_read(gid, member).await?);
        }
        let mut receipts = Vec::new();
        for &msgid in msgids {
            let raw = self
                .log
                .get(gid, msgid)
                .await?
                .ok_or_else(|| Error::NotFound(format!("no message {msgid} in {gid}")))?;
            let message: Stored = serde_json::from_slice(&raw)
                .map_err(|e| Error::Internal(format!("group message: {e}")))?;
            let others: Vec<(&Uid, &u64)> = cursors
                .iter()
                .filter(|(m, _)| **m != message.from)
                .collect();
            let readers: Vec<Uid> = others
                .iter()
                .filter(|(_, r)| **r >= msgid)
                .map(|(m, _)| (*m).clone())
                .collect();
            receipts.push(Receipt {
                msgid,
                unread: others.len() - readers.len(),
                readers,
            });
        }
        Ok(receipts)
    }

    /// Notes that receipts of `sender`'s `msgid` changed; pushes now or at
    /// the end of the sender's window.
    fn changed(&self, sender: Uid, gid: Gid, msgid: u64) {
        let key = (sender, gid);
        let mut pending = self.pending.entry(key.clone()).or_default();
        pending.msgids.insert(msgid);
        if pending.scheduled {
            return;
        }
        pending.scheduled = true;
        let wait = pending
            .last_push
            .map(|at| PUSH_WINDOW.saturating_sub(at.elapsed()))
            .unwrap_or_default();
        drop(pending);
        let me = self.me.clone();

        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(me) = me.upgrade() {
                if let Err(e) = me.push(key).await {
                    tracing::warn!("group receipt push failed: {e}");
                }
            }
        });
    }

    /// Pushes one `group_receipt` event with the counts of every pending
    /// message, if the sender is online.
    async fn push(&self, key: (Uid, Gid)) -> Result<(), Error> {
        let msgids: Vec<u64> = match self.pending.get_mut(&key) {
            Some(mut p) => {
                p.scheduled = false;
                p.last_push = Some(Instant::now());
                std::mem::take(&mut p.msgids).into_iter().collect()
            }
            None => return Ok(()),
        };
        let (sender, gid) = key;
        if msgids.is_empty() || !self.presence.is_online(&sender).await? {
            return Ok(()); // an offline sender pulls its receipts at login
        }
        let Some(members) = self.groups.members(&gid) else {
            return Ok(());
        };
        let receipts = self.receipts(&gid, &members, &msgids).await?;
        let newest = receipts
            .last()
            .map(|r| (r.msgid, r.readers.len(), r.unread));
        let Some((msgid, read, unread)) = newest else {
            return Ok(());
        };
        if let Some(signals) = &self.keepalive {
            let counts: Vec<(u64, u64, u64)> = receipts
                .iter()
                .map(|r| (r.msgid, r.readers.len() as u64, r.unread as u64))
                .collect();
            return signals.ride(&sender, gid.as_str(), &counts).await;
        }
        let all: Vec<Value> = receipts
            .iter()
            .map(|r| json!({"msgid": r.msgid, "read": r.readers.len(), "unread": r.unread}))
            .collect();
        let data =
            json!({"gid": gid, "msgid": msgid, "read": read, "unread": unread, "receipts": all});
        self.store
            .append(vec![Append::new(sender, "group_receipt", &data)])
            .await?;
        self.metrics.group_receipts_pushed.inc();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_cursors_never_go_back_and_receipts_are_derived_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &[]).await;
        let uid = |u: &str| Uid::parse(u).unwrap();
        let (gid, alice, bob, carol) = (uid("g"), uid("alice"), uid("bob"), uid("carol"));
        let members = app
            .groups
            .set_members(&gid, vec![alice.clone(), bob.clone(), carol.clone()])
            .await
            .unwrap();
        for i in 0..3 {
            app.group_log
                .post(&gid, &alice, serde_json::json!(i), None, &members)
                .await
                .unwrap();
        }
        let reads = &app.group_reads;
        assert_eq!(reads.mark(&gid, &bob, 2).await.unwrap(), 2);
        assert_eq!(
            reads.mark(&gid, &bob, 1).await.unwrap(),
            2,
            "never backwards"
        );
        assert_eq!(
            reads.mark(&gid, &carol, 99).await.unwrap(),
            3,
            "capped at the newest"
        );

        let receipts = reads.receipts(&gid, &members, &[1, 3]).await.unwrap();
        let counts: Vec<(u64, usize, usize)> = receipts
            .iter()
            .map(|r| (r.msgid, r.readers.len(), r.unread))
            .collect();
        assert_eq!(
            counts,
            vec![(1, 2, 0), (3, 1, 1)],
            "the sender is neither reader nor unread"
        );

        // Swept out of memory, a cursor comes back from the store as high.
        assert_eq!(reads.forget_idle().0, 3);
        assert_eq!(reads.forget_idle().0, 0);
        assert_eq!(reads.last_read(&gid, &bob).await.unwrap(), 2);
        assert_eq!(reads.mark(&gid, &bob, 1).await.unwrap(), 2);

        // Leaving the group drops the cursor.
        reads.forget(&gid, &[&bob]).await.unwrap();
        assert_eq!(reads.last_read(&gid, &bob).await.unwrap(), 0);
    }
}
