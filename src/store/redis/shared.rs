//! What the nodes of a cluster share besides queues and records, in Redis:
//! the [`PresenceTable`] (`presence.lua`) and the [`TokenBuckets`]
//! (`rate.lua`).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::{Script, Value};

use super::{array, bad_reply, bytes, int, RedisStore};
use crate::store::shared::{NodeBus, OnNode, PresenceTable, TokenBuckets};
use crate::store::{now_ms, StoreError};
use crate::uid::Uid;

/// An array reply's strings.
pub(crate) fn strings(reply: Value) -> Vec<String> {
    array(reply)
        .unwrap_or_default()
        .into_iter()
        .filter_map(bytes)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

impl RedisStore {
    async fn presence_op(&self, args: &[&str]) -> Result<Value, StoreError> {
        let mut call = self.scripts.presence.prepare_invoke();
        call.key("h:alive")
            .key("h:status")
            .key("h:shown")
            .key("h:{u:*}:on");
        for a in args {
            call.arg(*a);
        }
        Ok(call.invoke_async(&mut self.conn()).await?)
    }
}

#[async_trait]
impl PresenceTable for RedisStore {
    /// Records whether `uid` is online on `node` (`on`, `off` or `keep`)
    /// for `lease`, and the status it chose if it changes; returns its
    /// visible status cluster-wide, and whether this call is the one that
    /// changed it (then the caller pushes it).
    async fn set(
        &self,
        uid: &Uid,
        node: &str,
        here: OnNode,
        lease: Duration,
        chosen: Option<&str>,
    ) -> Result<(bool, String), StoreError> {
        let lease = lease.as_millis().to_string();
        let state = match here {
            OnNode::On => "on",
            OnNode::Off => "off",
            OnNode::Keep => "keep",
        };
        let chosen = chosen.unwrap_or("");
        let reply = self
            .presence_op(&["set", uid.as_str(), node, state, &lease, chosen])
            .await?;
        let mut parts = array(reply)
            .ok_or_else(|| bad_reply("presence"))?
            .into_iter();
        let changed = parts.next().and_then(|v| int(&v)) == Some(1);
        let status = parts
            .next()
            .and_then(bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .ok_or_else(|| bad_reply("presence"))?;
        Ok((changed, status))
    }

    /// Renews `node`'s lease on each of `uids` (its online users).
    async fn refresh(&self, node: &str, lease: Duration, uids: &[Uid]) -> Result<(), StoreError> {
        let lease = lease.as_millis().to_string();
        for chunk in uids.chunks(1000) {
            let mut args = vec!["refresh", node, &lease];
            args.extend(chunk.iter().map(Uid::as_str));
            self.presence_op(&args).await?;
        }
        Ok(())
    }

    /// Whether each of `uids` is online on any node, and the status it chose.
    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<String>)>, StoreError> {
        let mut out = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(1000) {
            let mut args = vec!["states"];
            args.extend(chunk.iter().map(Uid::as_str));
            let reply = array(self.presence_op(&args).await?).ok_or_else(|| bad_reply("states"))?;
            let mut it = reply.into_iter();
            while let (Some(online), Some(chosen)) = (it.next(), it.next()) {
                let chosen = bytes(chosen).filter(|c| !c.is_empty());
                out.push((
                    int(&online) == Some(1),
                    chosen.map(|c| String::from_utf8_lossy(&c).into_owned()),
                ));
            }
        }
        Ok(out)
    }

    /// Every user online on any node.
    async fn online(&self) -> Result<Vec<Uid>, StoreError> {
        let reply = array(self.presence_op(&["online"]).await?).unwrap_or_default();
        Ok(reply
            .into_iter()
            .filter_map(bytes)
            .filter_map(|b| Uid::parse(&String::from_utf8_lossy(&b)).ok())
            .collect())
    }

    async fn leases(&self, uid: &Uid) -> Result<Vec<String>, StoreError> {
        Ok(strings(self.presence_op(&["leases", uid.as_str()]).await?))
    }

    /// Users whose nodes all stopped renewing them, with their new visible
    /// status; each is returned to one caller only.
    async fn sweep(&self) -> Result<Vec<(Uid, String)>, StoreError> {
        let reply = array(self.presence_op(&["sweep", "500"]).await?).unwrap_or_default();
        let mut out = Vec::new();
        let mut it = reply.into_iter();
        while let (Some(uid), Some(status)) = (it.next(), it.next()) {
            let (Some(uid), Some(status)) = (bytes(uid), bytes(status)) else {
                continue;
            };
            if let Ok(uid) = Uid::parse(&String::from_utf8_lossy(&uid)) {
                out.push((uid, String::from_utf8_lossy(&status).into_owned()));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TokenBuckets for RedisStore {
    /// Takes `n` tokens from the shared bucket `name` that refills
    /// `per_second` and holds `burst`; returns how long to wait if they
    /// are not there (nothing is taken then).
    async fn take(
        &self,
        name: &str,
        per_second: u32,
        burst: u32,
        n: u32,
    ) -> Result<Duration, StoreError> {
        take(
            &self.scripts.rate,
            self.conn(),
            name,
            (per_second, burst, n),
        )
        .await
    }

    async fn left(&self, name: &str, per_second: u32, burst: u32) -> Result<u32, StoreError> {
        left(&self.scripts.rate, self.conn(), name, (per_second, burst)).await
    }
}

/// The channel of the nodes' bus; the same name on a Redis Cluster (one
/// slot, by its hash tag).
pub(in crate::store) const BUS: &str = "h:{nodes}:bus";
/// The ZSET of running nodes, scored by the end of their lease (ms).
const NODES: &str = "h:{nodes}:z";

/// [`NodeBus::alive`] on `conn`.
pub(in crate::store) async fn node_alive<C: ConnectionLike + Send>(
    mut conn: C,
    node: &str,
    lease: Duration,
) -> Result<(), StoreError> {
    let now = now_ms();
    redis::pipe()
        .zadd(NODES, node, now + lease.as_millis() as u64)
        .ignore()
        .zrembyscore(NODES, "-inf", now)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// [`NodeBus::tell`] on `conn` with `publish` (`PUBLISH`, or `SPUBLISH` on
/// a Redis Cluster).
pub(in crate::store) async fn tell<C: ConnectionLike + Send>(
    mut conn: C,
    publish: &str,
    message: &[u8],
) -> Result<(), StoreError> {
    redis::cmd(publish)
        .arg(BUS)
        .arg(message)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

/// [`NodeBus::nodes`] on `conn`.
pub(in crate::store) async fn nodes_alive<C: ConnectionLike + Send>(
    mut conn: C,
) -> Result<Vec<String>, StoreError> {
    Ok(redis::cmd("ZRANGEBYSCORE")
        .arg(NODES)
        .arg(now_ms())
        .arg("+inf")
        .query_async(&mut conn)
        .await?)
}

#[async_trait]
impl NodeBus for RedisStore {
    async fn alive(&self, node: &str, lease: Duration) -> Result<(), StoreError> {
        node_alive(self.conn(), node, lease).await
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        nodes_alive(self.conn()).await
    }

    async fn tell(&self, message: &[u8]) -> Result<(), StoreError> {
        tell(self.conn(), "PUBLISH", message).await
    }

    fn told(&self) -> tokio::sync::broadcast::Receiver<bytes::Bytes> {
        self.wakes.bus.subscribe()
    }
}

/// [`TokenBuckets::left`] with `rate.lua` on `conn`.
pub(in crate::store) async fn left<C: ConnectionLike + Send>(
    rate: &Script,
    mut conn: C,
    name: &str,
    (per_second, burst): (u32, u32),
) -> Result<u32, StoreError> {
    let interval = 1000.0 / f64::from(per_second.max(1));
    Ok(rate
        .key(format!("h:rate:{name}"))
        .arg(interval)
        .arg(burst)
        .arg(0)
        .arg("left")
        .invoke_async(&mut conn)
        .await?)
}

/// [`TokenBuckets::take`] with `rate.lua` on `conn`: `(per_second, burst,
/// n)` of the bucket `h:rate:NAME` (in its own slot on a Redis Cluster).
pub(in crate::store) async fn take<C: ConnectionLike + Send>(
    rate: &Script,
    mut conn: C,
    name: &str,
    (per_second, burst, n): (u32, u32, u32),
) -> Result<Duration, StoreError> {
    let interval = 1000.0 / f64::from(per_second.max(1));
    let wait: u64 = rate
        .key(format!("h:rate:{name}"))
        .arg(interval)
        .arg(burst.max(n))
        .arg(n)
        .invoke_async(&mut conn)
        .await?;
    Ok(Duration::from_millis(wait))
}
