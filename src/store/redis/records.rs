//! The records of the chat features on Redis: values in one hash, their
//! keys in a sorted set for ordered prefix ranges, deadlines in another
//! (`kv.lua`); plus the cluster's locks and change announcements.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Script, Value};
use tokio::sync::broadcast;

use super::{
    bad_reply, bytes, int, pairs, wake_channel, RedisStore, CHANGES, KV_DEADLINES, KV_INDEX,
    KV_VALUES,
};
use crate::store::event::now_ms;
use crate::store::{Lease, Records, StoreError};
use crate::uid::Uid;

/// How long a lock is held at most: a node killed while holding one blocks
/// the others no longer than this.
pub const LEASE: Duration = Duration::from_secs(10);

/// One set of record keys (values, key index, deadlines) and the
/// connection that reaches them: all of one Redis, or one partition of a
/// Redis Cluster.
pub(in crate::store) struct Kv<'a, C> {
    pub script: &'a Script,
    pub conn: C,
    pub keys: [String; 3],
}

impl<C: ConnectionLike + Send + Sync> Kv<'_, C> {
    async fn op(&mut self, op: &str, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.keys[0])
            .key(&self.keys[1])
            .key(&self.keys[2])
            .arg(op);
        for a in args {
            call.arg(*a);
        }
        Ok(call.invoke_async(&mut self.conn).await?)
    }

    /// Removes the records whose deadline passed (at most 1000 per call);
    /// returns how many. Any node may run it: the script is atomic.
    pub async fn expire_due(mut self) -> Result<u64, StoreError> {
        let now = now_ms().to_string();
        let removed = self.op("expire_due", &[now.as_bytes(), b"1000"]).await?;
        Ok(int(&removed).unwrap_or(0) as u64)
    }

    pub async fn put_all(mut self, pairs: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(pairs.len() * 2);
        for (k, v) in pairs {
            args.push(k.as_bytes());
            args.push(v);
        }
        self.op("put", &args).await?;
        Ok(())
    }

    pub async fn remove(mut self, key: &str) -> Result<(), StoreError> {
        self.op("del", &[key.as_bytes()]).await?;
        Ok(())
    }

    pub async fn raise(mut self, key: &str, value: u64) -> Result<u64, StoreError> {
        let now = self
            .op("raise", &[key.as_bytes(), value.to_string().as_bytes()])
            .await?;
        bytes(now)
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
            .ok_or_else(|| bad_reply("raise"))
    }

    pub async fn expire(mut self, key: &str, after: Duration) -> Result<(), StoreError> {
        let deadline = now_ms() + after.as_millis() as u64;
        let _: i64 = redis::cmd("ZADD")
            .arg(&self.keys[2])
            .arg(deadline)
            .arg(key)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    pub async fn swap(
        mut self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let (present, expected) = match &old {
            Some(v) => (&b"1"[..], v.as_slice()),
            None => (&b"0"[..], &b""[..]),
        };
        let swapped = self
            .op("swap", &[key.as_bytes(), present, expected, &new])
            .await?;
        Ok(int(&swapped) == Some(1))
    }

    pub async fn get(mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(redis::cmd("HGET")
            .arg(&self.keys[0])
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// Up to `limit` pairs under `prefix` after `after`, in key order.
    pub async fn range(
        &mut self,
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
            .op(
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

    /// Up to `limit` pairs under `prefix` before `before`, greatest first.
    pub async fn range_back(
        mut self,
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
            .op(
                "back",
                &[prefix.as_bytes(), &end, limit.to_string().as_bytes()],
            )
            .await?;
        let mut found = pairs(reply)?;
        found.retain(|(k, _)| k.starts_with(prefix));
        Ok(found)
    }

    /// Every pair under `prefix`, in key order.
    pub async fn scan(mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.range(prefix, &after, 1000).await?;
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
}

impl RedisStore {
    /// The records, all in this Redis.
    fn kv(&self) -> Kv<'_, ConnectionManager> {
        Kv {
            script: &self.scripts.kv,
            conn: self.conn(),
            keys: [KV_VALUES.into(), KV_INDEX.into(), KV_DEADLINES.into()],
        }
    }

    /// See [`Kv::expire_due`].
    pub async fn expire_due(&self) -> Result<u64, StoreError> {
        self.kv().expire_due().await
    }
}

#[async_trait]
impl Records for RedisStore {
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv().put_all(&[(key.to_owned(), value)]).await
    }

    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.kv_put(key, value).await
    }

    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError> {
        self.kv().remove(key).await
    }

    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        self.kv().raise(key, value).await
    }

    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError> {
        self.kv().expire(key, after).await
    }

    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.kv().put_all(&pairs).await
    }

    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.kv().swap(key, old, new).await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv().get(key).await
    }

    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.kv().range(prefix, after, limit).await
    }

    async fn kv_range_back(
        &self,
        prefix: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.kv().range_back(prefix, before, limit).await
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.kv().scan(prefix).await
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

    async fn signal(&self, uid: &Uid, json: &[u8]) -> Result<bool, StoreError> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(wake_channel(uid))
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

/// A signal as published on a wake channel: `uid {json}` (an append's
/// wake is `uid seq`).
pub(in crate::store) fn signal_message(uid: &Uid, json: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(uid.as_str().len() + 1 + json.len());
    message.extend_from_slice(uid.as_str().as_bytes());
    message.push(b' ');
    message.extend_from_slice(json);
    message
}

/// Waits for `records`' lock `name` (polling [`Records::try_lock`]), at
/// most [`LEASE`].
pub(in crate::store) async fn lock(
    records: &(impl Records + ?Sized),
    name: &str,
) -> Result<Lease, StoreError> {
    let mut wait = Duration::from_millis(1);
    let give_up = tokio::time::Instant::now() + LEASE;
    loop {
        if let Some(lease) = records.try_lock(name).await? {
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

/// Takes the lock `name` (`h:lock:NAME`, in its own slot) on `conn` if
/// nobody holds it; the lease releases it with `release`.
pub(in crate::store) async fn try_lock<C>(
    mut conn: C,
    release: &Script,
    name: &str,
) -> Result<Option<Lease>, StoreError>
where
    C: ConnectionLike + Send + Sync + 'static,
{
    let key = format!("h:lock:{name}");
    let token = format!("{:x}", rand::random::<u64>());
    let set: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(LEASE.as_millis() as u64)
        .query_async(&mut conn)
        .await?;
    if set.is_none() {
        return Ok(None);
    }
    let release = release.clone();
    Ok(Some(Lease::new(move || {
        tokio::spawn(async move {
            let _: Result<i64, _> = release.key(key).arg(token).invoke_async(&mut conn).await;
        });
    })))
}
