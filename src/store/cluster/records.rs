//! The records of the chat features on a Redis Cluster: each partition
//! keeps its own records (`kv.lua`), and a record lives in the partition
//! of its owner, the entity its key names: `glog/G/…`, `gnext/G`,
//! `gpend/G/…`, `group/G` in G's; `counter/U/…`, `friends/U` in U's;
//! `conv/A\0B/…` in the conversation's; `idem/WRITE/OWNER/…` in its
//! owner's. So the records one write changes together are in one
//! partition, and a range under `family/OWNER/` is read from one; a range
//! over a whole family (`group/`, at start) asks every partition.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::try_join_all;
use redis::cluster_async::ClusterConnection;
use tokio::sync::broadcast;

use super::{partition_of, ClusterStore, PARTITIONS};
use crate::store::redis::records::{lock, signal_message, try_lock, Kv};
use crate::store::{Lease, Records, StoreError};
use crate::uid::Uid;

/// The owner segment of `key` (see the module), and whether `key` goes on
/// past it (so that every key under `key` as a prefix has that owner).
fn owner(key: &str) -> Option<(&str, bool)> {
    let mut segments = key.split('/');
    let family = segments.next()?;
    if family == "idem" {
        segments.next()?;
    }
    let owner = segments.next()?;
    Some((owner, segments.next().is_some()))
}

/// The partition of the record `key`.
fn partition_of_key(key: &str) -> usize {
    partition_of(owner(key).map_or(key, |(owner, _)| owner))
}

/// The one partition every key under `prefix` is in, if there is one.
fn partition_of_prefix(prefix: &str) -> Option<usize> {
    match owner(prefix) {
        Some((owner, true)) => Some(partition_of(owner)),
        _ => None,
    }
}

impl ClusterStore {
    fn kv(&self, p: usize) -> Kv<'_, ClusterConnection> {
        Kv {
            script: &self.scripts.kv,
            conn: self.conn(),
            keys: ["kv:v", "kv:i", "kv:x"].map(|k| self.key(p, k)),
        }
    }

    fn kv_of(&self, key: &str) -> Kv<'_, ClusterConnection> {
        self.kv(partition_of_key(key))
    }

    /// Removes the records past their deadline, in every partition.
    pub(super) async fn expire_due(&self) -> Result<u64, StoreError> {
        let removed = try_join_all((0..PARTITIONS).map(|p| self.kv(p).expire_due())).await?;
        Ok(removed.into_iter().sum())
    }
}

#[async_trait]
impl Records for ClusterStore {
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_of(key).put_all(&[(key.to_owned(), value)]).await
    }

    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_put(key, value).await
    }

    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError> {
        self.kv_of(key).remove(key).await
    }

    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        self.kv_of(key).raise(key, value).await
    }

    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError> {
        self.kv_of(key).expire(key, after).await
    }

    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let Some((first, _)) = pairs.first() else {
            return Ok(());
        };
        let p = partition_of_key(first);
        // Atomic in one script: the records written together share an
        // owner by design (see the module).
        if let Some((other, _)) = pairs.iter().find(|(k, _)| partition_of_key(k) != p) {
            return Err(StoreError::Io(format!(
                "records {first:?} and {other:?} written together have different owners"
            )));
        }
        self.kv(p).put_all(&pairs).await
    }

    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.kv_of(key).swap(key, old, new).await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv_of(key).get(key).await
    }

    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if let Some(p) = partition_of_prefix(prefix) {
            return self.kv(p).range(prefix, after, limit).await;
        }
        let found = try_join_all(
            (0..PARTITIONS).map(|p| async move { self.kv(p).range(prefix, after, limit).await }),
        )
        .await?;
        let mut all: Vec<_> = found.into_iter().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(limit);
        Ok(all)
    }

    async fn kv_range_back(
        &self,
        prefix: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if let Some(p) = partition_of_prefix(prefix) {
            return self.kv(p).range_back(prefix, before, limit).await;
        }
        let found =
            try_join_all((0..PARTITIONS).map(|p| self.kv(p).range_back(prefix, before, limit)))
                .await?;
        let mut all: Vec<_> = found.into_iter().flatten().collect();
        all.sort_by(|a, b| b.0.cmp(&a.0));
        all.truncate(limit);
        Ok(all)
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if let Some(p) = partition_of_prefix(prefix) {
            return self.kv(p).scan(prefix).await;
        }
        let found = try_join_all((0..PARTITIONS).map(|p| self.kv(p).scan(prefix))).await?;
        let mut all: Vec<_> = found.into_iter().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    async fn announce(&self, change: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("SPUBLISH")
            .arg(self.changes_channel())
            .arg(change)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<String> {
        self.wakes.changes.subscribe()
    }

    async fn signal(&self, uid: &Uid, json: &[u8]) -> Result<bool, StoreError> {
        let _: i64 = redis::cmd("SPUBLISH")
            .arg(self.wake_channel(partition_of(uid.as_str())))
            .arg(signal_message(uid, json))
            .query_async(&mut self.conn())
            .await?;
        Ok(true)
    }

    fn signals(&self) -> broadcast::Receiver<(Uid, Bytes)> {
        self.wakes.signals.subscribe()
    }

    async fn lock(&self, name: &str) -> Result<Lease, StoreError> {
        lock(self, name).await
    }

    async fn try_lock(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        try_lock(self.conn(), &self.scripts.release, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_records_of_one_write_share_a_partition() {
        // A group post's records.
        let g = [
            "glog/g1/00000000000000000007",
            "gnext/g1",
            "gpend/g1/00000000000000000007",
            "gcid/g1/u\0c",
            "group/g1",
            "gread/g1/u",
        ];
        assert!(
            g.iter().all(|k| partition_of_key(k) == partition_of("g1")),
            "{g:?}"
        );
        // A counter's total and its idempotency record.
        assert_eq!(
            partition_of_key("counter/alice/unread"),
            partition_of("alice")
        );
        assert_eq!(
            partition_of_key("idem/counter/alice/key-1"),
            partition_of("alice")
        );
        // A conversation's history is read from one partition.
        assert_eq!(
            partition_of_prefix("conv/a\0b/"),
            Some(partition_of("a\0b"))
        );
        assert_eq!(
            partition_of_prefix("counter/alice/"),
            Some(partition_of("alice"))
        );
        // A family is read from all of them.
        for family in ["group/", "friends/", "gpend/", "bcast/", "idem/publish/"] {
            assert_eq!(partition_of_prefix(family), None, "{family}");
        }
    }
}
