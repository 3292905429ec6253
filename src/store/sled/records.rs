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
        self.kv
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|item| {
                item.as_ref()
                    .map_or(true, |(k, _)| k.starts_with(prefix.as_bytes()))
            })
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    async fn kv_last(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match self.kv.scan_prefix(prefix).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((String::from_utf8_lossy(&k).into_owned(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.kv
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
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
