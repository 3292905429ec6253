//! The records of the chat features on Redis: values in one hash, their
//! keys in a sorted set for ordered prefix ranges, deadlines in another
//! (`kv.lua`); plus the cluster's locks and change announcements.

use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::broadcast;

use super::{bad_reply, bytes, int, pairs, RedisStore, CHANGES, KV_DEADLINES, KV_INDEX, KV_VALUES};
use crate::store::event::now_ms;
use crate::store::{Lease, Records, StoreError};

/// How long a lock is held at most: a node killed while holding one blocks
/// the others no longer than this.
pub const LEASE: Duration = Duration::from_secs(10);

impl RedisStore {
    /// Removes the records whose deadline passed (at most 1000 per call);
    /// returns how many. Any node may run it: the script is atomic.
    pub async fn expire_due(&self) -> Result<u64, StoreError> {
        let removed: i64 = self
            .scripts
            .kv
            .key(KV_VALUES)
            .key(KV_INDEX)
            .key(KV_DEADLINES)
            .arg("expire_due")
            .arg(now_ms())
            .arg(1000)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(removed as u64)
    }

    async fn kv_op(&self, op: &str, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut call = self.scripts.kv.prepare_invoke();
        call.key(KV_VALUES).key(KV_INDEX).key(KV_DEADLINES).arg(op);
        for a in args {
            call.arg(*a);
        }
        Ok(call.invoke_async(&mut self.conn()).await?)
    }
}

#[async_trait]
impl Records for RedisStore {
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_op("put", &[key.as_bytes(), &value]).await?;
        Ok(())
    }

    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_put(key, value).await
    }

    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError> {
        self.kv_op("del", &[key.as_bytes()]).await?;
        Ok(())
    }

    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        let now = self
            .kv_op("raise", &[key.as_bytes(), value.to_string().as_bytes()])
            .await?;
        bytes(now)
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
            .ok_or_else(|| bad_reply("raise"))
    }

    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError> {
        let deadline = now_ms() + after.as_millis() as u64;
        let _: i64 = redis::cmd("ZADD")
            .arg(KV_DEADLINES)
            .arg(deadline)
            .arg(key)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(pairs.len() * 2);
        for (k, v) in &pairs {
            args.push(k.as_bytes());
            args.push(v);
        }
        self.kv_op("put", &args).await?;
        Ok(())
    }

    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (present, expected) = match &old {
            Some(v) => (&b"1"[..], v.as_slice()),
            None => (&b"0"[..], &b""[..]),
        };
        let swapped = self
            .kv_op("swap", &[key.as_bytes(), present, expected, &new])
            .await?;
        Ok(int(&swapped) == Some(1))
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("HGET")
            .arg(KV_VALUES)
            .arg(key)
            .query_async(&mut self.conn())
            .await?)
    }

    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = if after < prefix {
            format!("[{prefix}")
        } else {
            format!("({after}")
        };
        let reply = self
            .kv_op(
                "range",
                &[
                    prefix.as_bytes(),
                    start.as_bytes(),
                    limit.to_string().as_bytes(),
                ],
            )
            .await?;
        let mut found = pairs(reply)?;
        found.retain(|(k, _)| k.starts_with(prefix));
        Ok(found)
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
        // A byte 0xff sorts after every key of the prefix (keys are UTF-8).
        let end: Vec<u8> = if before.is_empty() {
            [b"[", prefix.as_bytes(), &[0xff]].concat()
        } else {
            [b"(", before.as_bytes()].concat()
        };
        let reply = self
            .kv_op(
                "back",
                &[prefix.as_bytes(), &end, limit.to_string().as_bytes()],
            )
            .await?;
        let mut found = pairs(reply)?;
        found.retain(|(k, _)| k.starts_with(prefix));
        Ok(found)
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.kv_range(prefix, &after, 1000).await?;
            let done = page.len() < 1000;
            if let Some((last, _)) = page.last() {
                after = last.clone();
            }
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    async fn announce(&self, change: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(CHANGES)
            .arg(change)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    fn changes(&self) -> broadcast::Receiver<String> {
        self.wakes.changes.subscribe()
    }

    async fn lock(&self, name: &str) -> Result<Lease, StoreError> {
        let mut wait = Duration::from_millis(1);
        let give_up = tokio::time::Instant::now() + LEASE;
        loop {
            if let Some(lease) = self.try_lock(name).await? {
                return Ok(lease);
            }
            if tokio::time::Instant::now() > give_up {
                return Err(StoreError::Unavailable(format!(
                    "lock {name} still held by another node after {LEASE:?}"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }

    async fn try_lock(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let key = format!("h:lock:{name}");
        let token = format!("{:x}", rand::random::<u64>());
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut self.conn())
            .await?;
        if set.is_none() {
            return Ok(None);
        }
        let (conn, release) = (self.conn(), self.scripts.release.clone());
        Ok(Some(Lease::new(move || {
            tokio::spawn(async move {
                let mut conn = conn;
                let _: Result<i64, _> = release.key(key).arg(token).invoke_async(&mut conn).await;
            });
        })))
    }
}
