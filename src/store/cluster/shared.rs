//! What the nodes share besides queues and records, on a Redis Cluster:
//! presence (`presence.lua`, per partition: a user's keys and its
//! partition's ranking of the online are under one hash tag), token
//! buckets (`rate.lua`, each bucket in its own slot), and the upkeep.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use redis::Value;

use super::{partition_of, ClusterStore, PARTITIONS};
use crate::store::redis::shared::{left, node_alive, nodes_alive, strings, take, tell};
use crate::store::redis::{array, bad_reply, bytes, int};
use crate::store::shared::{NodeBus, OnNode, PresenceTable, TokenBuckets};
use crate::store::{Backend, Retention, StoreError, Upkeep};
use crate::uid::Uid;

impl ClusterStore {
    /// The store with what the nodes of a cluster share, all in Redis.
    pub fn into_backend(self: Arc<Self>) -> Backend {
        Backend {
            store: self.clone(),
            presence: self.clone(),
            buckets: self.clone(),
            nodes: self.clone(),
            upkeep: self,
        }
    }

    async fn presence_op(&self, p: usize, args: &[&str]) -> Result<Value, StoreError> {
        let mut call = self.scripts.presence.prepare_invoke();
        for what in ["alive", "status", "shown", "u:*:on"] {
            call.key(self.key(p, what));
        }
        // The `on` keys of the users named (see presence.lua).
        let named = match args.first() {
            Some(&"set" | &"leases") => args.get(1..2).unwrap_or_default(),
            Some(&"refresh") => args.get(3..).unwrap_or_default(),
            Some(&"states") => &args[1..],
            _ => &[],
        };
        for uid in named {
            call.key(format!("h:{{{}}}:u:{uid}:on", self.tag(p)));
        }
        for a in args {
            call.arg(*a);
        }
        Ok(call.invoke_async(&mut self.conn()).await?)
    }

    /// `uids` by partition, each with its index in `uids`.
    fn by_partition(uids: &[Uid]) -> BTreeMap<usize, Vec<(usize, &Uid)>> {
        let mut by: BTreeMap<usize, Vec<(usize, &Uid)>> = BTreeMap::new();
        for (i, uid) in uids.iter().enumerate() {
            by.entry(partition_of(uid.as_str()))
                .or_default()
                .push((i, uid));
        }
        by
    }
}

/// `[uid, status, ...]` as pairs.
fn statuses(reply: Value) -> Vec<(Uid, String)> {
    let mut out = Vec::new();
    let mut it = array(reply).unwrap_or_default().into_iter();
    while let (Some(uid), Some(status)) = (it.next(), it.next()) {
        let (Some(uid), Some(status)) = (bytes(uid), bytes(status)) else {
            continue;
        };
        if let Ok(uid) = Uid::parse(&String::from_utf8_lossy(&uid)) {
            out.push((uid, String::from_utf8_lossy(&status).into_owned()));
        }
    }
    out
}

#[async_trait]
impl PresenceTable for ClusterStore {
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
        let p = partition_of(uid.as_str());
        let reply = self
            .presence_op(
                p,
                &[
                    "set",
                    uid.as_str(),
                    node,
                    state,
                    &lease,
                    chosen.unwrap_or(""),
                ],
            )
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

    async fn refresh(&self, node: &str, lease: Duration, uids: &[Uid]) -> Result<(), StoreError> {
        let lease = lease.as_millis().to_string();
        let lease = lease.as_str();
        let by = Self::by_partition(uids);
        try_join_all(by.iter().flat_map(|(&p, users)| {
            users.chunks(1000).map(move |chunk| {
                let mut args = vec!["refresh", node, lease];
                args.extend(chunk.iter().map(|(_, uid)| uid.as_str()));
                async move { self.presence_op(p, &args).await }
            })
        }))
        .await?;
        Ok(())
    }

    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<String>)>, StoreError> {
        let by = Self::by_partition(uids);
        let answers = try_join_all(by.iter().map(|(&p, users)| async move {
            let mut args = vec!["states"];
            args.extend(users.iter().map(|(_, uid)| uid.as_str()));
            let reply =
                array(self.presence_op(p, &args).await?).ok_or_else(|| bad_reply("states"))?;
            Ok::<_, StoreError>((users, reply))
        }))
        .await?;
        let mut out = vec![(false, None); uids.len()];
        for (users, reply) in answers {
            let mut it = reply.into_iter();
            for (i, _) in users {
                let (Some(online), Some(chosen)) = (it.next(), it.next()) else {
                    return Err(bad_reply("states"));
                };
                let chosen = bytes(chosen).filter(|c| !c.is_empty());
                out[*i] = (
                    int(&online) == Some(1),
                    chosen.map(|c| String::from_utf8_lossy(&c).into_owned()),
                );
            }
        }
        Ok(out)
    }

    async fn online(&self) -> Result<Vec<Uid>, StoreError> {
        let all = try_join_all((0..PARTITIONS).map(|p| self.presence_op(p, &["online"]))).await?;
        Ok(all
            .into_iter()
            .flat_map(|reply| array(reply).unwrap_or_default())
            .filter_map(bytes)
            .filter_map(|b| Uid::parse(&String::from_utf8_lossy(&b)).ok())
            .collect())
    }

    async fn leases(&self, uid: &Uid) -> Result<Vec<String>, StoreError> {
        let p = partition_of(uid.as_str());
        Ok(strings(
            self.presence_op(p, &["leases", uid.as_str()]).await?,
        ))
    }

    async fn sweep(&self) -> Result<Vec<(Uid, String)>, StoreError> {
        let all =
            try_join_all((0..PARTITIONS).map(|p| self.presence_op(p, &["sweep", "500"]))).await?;
        Ok(all.into_iter().flat_map(statuses).collect())
    }
}

#[async_trait]
impl TokenBuckets for ClusterStore {
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

#[async_trait]
impl NodeBus for ClusterStore {
    async fn alive(&self, node: &str, lease: Duration) -> Result<(), StoreError> {
        node_alive(self.conn(), node, lease).await
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        nodes_alive(self.conn()).await
    }

    async fn tell(&self, message: &[u8]) -> Result<(), StoreError> {
        tell(self.conn(), "SPUBLISH", message).await
    }

    fn told(&self) -> tokio::sync::broadcast::Receiver<bytes::Bytes> {
        self.wakes.bus.subscribe()
    }
}

#[async_trait]
impl Upkeep for ClusterStore {
    /// Redis trims on append and expires idle queues itself: left are the
    /// records with a deadline, the writes a dead node left half done, and
    /// the local waiter registry.
    async fn maintain(&self, _retention: Retention) -> Result<u64, StoreError> {
        self.forget_idle();
        let finished = self.finish_orphans().await?;
        Ok(finished + self.expire_due().await?)
    }

    fn durability(&self) -> String {
        format!("redis cluster {}", self.persistence)
    }

    fn unreachable(&self) -> Option<String> {
        self.health.report()
    }
}
