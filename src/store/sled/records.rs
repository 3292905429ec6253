//! The records of the chat features in sled's `kv` tree: staged writes
//! become durable with the next group commit, waited-for ones go through it.

use std::time::Duration;

use async_trait::async_trait;

use super::{expiry, SledStore};
use crate::store::{Records, StoreError};

#[async_trait]
impl Records for SledStore {
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv.insert(key, value)?;
        self.wait_durable(Vec::new()).await
    }

    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv.insert(key, value)?;
        Ok(())
    }

    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError> {
        self.kv.remove(key)?;
        Ok(())
    }

    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError> {
        self.index_expiry(expiry::KV, key.as_bytes(), after)
    }

    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in pairs {
            batch.insert(key.as_bytes(), value);
        }
        self.kv.apply_batch(batch)?;
        self.wait_durable(Vec::new()).await
    }

    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let swapped = self.kv.compare_and_swap(key, old, Some(new))?.is_ok();
        // Also when not swapped: the value that won may not be durable yet.
        self.wait_durable(Vec::new()).await?;
        Ok(swapped)
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv.get(key)?.map(|v| v.to_vec()))
    }

    // The ranges and scans run on tokio's blocking pool: a page may come
    // from disk, and an async worker must not wait on it.
    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let start = if after < prefix {
            Bound::Included(prefix.as_bytes().to_vec())
        } else {
            Bound::Excluded(after.as_bytes().to_vec())
        };
        let prefix = prefix.as_bytes().to_vec();
        let kv = self.kv.clone();
        off_worker(move || {
            let rows = kv
                .range::<Vec<u8>, _>((start, Bound::Unbounded))
                .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)));
            pairs(rows, limit)
        })
        .await
    }

    async fn kv_range_back(
        &self,
        prefix: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        if !before.is_empty() && before <= prefix {
            return Ok(Vec::new());
        }
        let (prefix, before) = (prefix.as_bytes().to_vec(), before.as_bytes().to_vec());
        let kv = self.kv.clone();
        off_worker(move || {
            let rows: sled::Iter = if before.is_empty() {
                kv.scan_prefix(&prefix)
            } else {
                kv.range(prefix.clone()..before)
            };
            let rows = rows
                .rev()
                .skip_while(|item| item.as_ref().is_ok_and(|(k, _)| !k.starts_with(&prefix)))
                .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)));
            pairs(rows, limit)
        })
        .await
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let kv = self.kv.clone();
        let prefix = prefix.to_owned();
        off_worker(move || pairs(kv.scan_prefix(prefix), usize::MAX)).await
    }

    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        let parse = |v: Option<&[u8]>| {
            v.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let now = self.kv.update_and_fetch(key, |old| {
            Some(parse(old).max(value).to_string().into_bytes())
        })?;
        Ok(parse(now.as_deref()))
    }
}

/// Runs `read` on tokio's blocking pool.
async fn off_worker<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| StoreError::Io(format!("a store read failed: {e}")))?
}

/// Up to `limit` of `rows` as string keys and values.
fn pairs(
    rows: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    rows.take(limit)
        .map(|item| {
            let (k, v) = item?;
            Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
        })
        .collect()
}
