//! The sled backend's family ([`Backend`]: presence and token buckets in
//! this process's memory) and its upkeep: the maintenance pass off the
//! async workers, and the deadlines of records a store carried over from
//! herald 0.5 lacks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::SledStore;
use crate::store::memory::{MemoryBuckets, MemoryPresence};
use crate::store::{Backend, OneNode, Records, Retention, StoreError, Upkeep};

/// The key that says every record has had its retention deadline.
const RECORDS_INDEXED: &str = "herald/records-have-deadlines";

impl SledStore {
    /// The store with what one process shares with itself, in memory.
    pub fn into_backend(self: Arc<Self>) -> Backend {
        Backend {
            store: self.clone(),
            presence: Arc::new(MemoryPresence::default()),
            buckets: Arc::new(MemoryBuckets::default()),
            upkeep: Arc::new(SledUpkeep(self)),
            nodes: Arc::new(OneNode),
        }
    }
}

/// [`Upkeep`] of a [`SledStore`].
struct SledUpkeep(Arc<SledStore>);

#[async_trait]
impl Upkeep for SledUpkeep {
    async fn maintain(&self, retention: Retention) -> Result<u64, StoreError> {
        let sled = self.0.clone();
        tokio::task::spawn_blocking(move || sled.maintain(retention))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
    }

    fn durability(&self) -> String {
        "fsync (sled, group commit)".into()
    }

    async fn index_legacy_records(&self, prefixes: &[(&str, Duration)]) -> Result<u64, StoreError> {
        let sled = &self.0;
        if sled.kv_get(RECORDS_INDEXED).await?.is_some() {
            return Ok(0);
        }
        let mut indexed = sled.index_every_once_key()? as u64;
        for (prefix, ttl) in prefixes {
            for (key, _) in sled.kv_scan(prefix).await? {
                sled.expire(&key, *ttl).await?;
                indexed += 1;
            }
        }
        sled.kv_put(RECORDS_INDEXED, b"1".to_vec()).await?;
        Ok(indexed)
    }
}
