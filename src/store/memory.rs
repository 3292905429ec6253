//! The shared state of one process ([`PresenceTable`], [`TokenBuckets`])
//! in its memory: what a deployment of one node shares with itself. The
//! same rules as the Redis versions (`redis/presence.lua`,
//! `redis/rate.lua`), on this process's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::shared::{visible, OnNode, PresenceTable, TokenBuckets};
use super::StoreError;
use crate::uid::Uid;
use crate::util::SharedMap;

/// [`PresenceTable`] in memory.
#[derive(Default)]
pub struct MemoryPresence(Mutex<Table>);

#[derive(Default)]
struct Table {
    /// Per online user: each node that has it, until when.
    leases: HashMap<Uid, Vec<(Arc<str>, Instant)>>,
    /// The node names, each kept once.
    nodes: Vec<Arc<str>>,
    /// Chosen statuses other than `online`.
    chosen: HashMap<Uid, String>,
    /// The visible status last shown, for users not shown `offline`.
    shown: HashMap<Uid, String>,
}

impl Table {
    /// Whether `uid` is online on a node whose lease runs (dropping the
    /// others).
    fn alive(&mut self, uid: &Uid, now: Instant) -> bool {
        let Some(leases) = self.leases.get_mut(uid) else {
            return false;
        };
        leases.retain(|(_, until)| *until > now);
        if leases.is_empty() {
            self.leases.remove(uid);
            return false;
        }
        true
    }

    /// The visible status of `uid` if it differs from the one last shown
    /// (which it then becomes).
    fn changed(&mut self, uid: &Uid, now: Instant) -> Option<String> {
        let online = self.alive(uid, now);
        let now_visible = visible(online, self.chosen.get(uid).map(String::as_str)).to_owned();
        let shown = self.shown.get(uid).map_or("offline", String::as_str);
        if shown == now_visible {
            return None;
        }
        if now_visible == "offline" {
            self.shown.remove(uid);
        } else {
            self.shown.insert(uid.clone(), now_visible.clone());
        }
        Some(now_visible)
    }

    fn lease(&mut self, uid: &Uid, node: &str, until: Instant) {
        let node = match self.nodes.iter().find(|n| ***n == *node) {
            Some(known) => known.clone(),
            None => {
                let name: Arc<str> = node.into();
                self.nodes.push(name.clone());
                name
            }
        };
        let leases = self.leases.entry(uid.clone()).or_default();
        match leases.iter_mut().find(|(n, _)| *n == node) {
            Some((_, at)) => *at = until,
            None => leases.push((node, until)),
        }
    }
}

impl MemoryPresence {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceTable for MemoryPresence {
    async fn set(
        &self,
        uid: &Uid,
        node: &str,
        here: OnNode,
        lease: Duration,
        chosen: Option<&str>,
    ) -> Result<(bool, String), StoreError> {
        let now = Instant::now();
        let mut table = self.table();
        match here {
            OnNode::On => table.lease(uid, node, now + lease),
            OnNode::Off => {
                if let Some(leases) = table.leases.get_mut(uid) {
                    leases.retain(|(n, _)| **n != *node);
                }
            }
            OnNode::Keep => {}
        }
        match chosen {
            Some("online") => {
                table.chosen.remove(uid);
            }
            Some(status) => {
                table.chosen.insert(uid.clone(), status.to_owned());
            }
            None => {}
        }
        if let Some(status) = table.changed(uid, now) {
            return Ok((true, status));
        }
        let online = table.alive(uid, now);
        let status = visible(online, table.chosen.get(uid).map(String::as_str)).to_owned();
        Ok((false, status))
    }

    async fn refresh(&self, node: &str, lease: Duration, uids: &[Uid]) -> Result<(), StoreError> {
        let until = Instant::now() + lease;
        let mut table = self.table();
        for uid in uids {
            table.lease(uid, node, until);
        }
        Ok(())
    }

    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<String>)>, StoreError> {
        let now = Instant::now();
        let table = self.table();
        Ok(uids
            .iter()
            .map(|uid| {
                let online = table
                    .leases
                    .get(uid)
                    .is_some_and(|leases| leases.iter().any(|(_, until)| *until > now));
                (online, table.chosen.get(uid).cloned())
            })
            .collect())
    }

    async fn online(&self) -> Result<Vec<Uid>, StoreError> {
        let now = Instant::now();
        let table = self.table();
        Ok(table
            .leases
            .iter()
            .filter(|(_, leases)| leases.iter().any(|(_, until)| *until > now))
            .map(|(uid, _)| uid.clone())
            .collect())
    }

    async fn leases(&self, uid: &Uid) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let table = self.table();
        Ok(table.leases.get(uid).map_or_else(Vec::new, |leases| {
            leases
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(node, _)| node.to_string())
                .collect()
        }))
    }

    async fn sweep(&self) -> Result<Vec<(Uid, String)>, StoreError> {
        let now = Instant::now();
        let mut table = self.table();
        let due: Vec<Uid> = table
            .leases
            .iter()
            .filter(|(_, leases)| leases.iter().all(|(_, until)| *until <= now))
            .map(|(uid, _)| uid.clone())
            .collect();
        Ok(due
            .into_iter()
            .filter_map(|uid| table.changed(&uid, now).map(|status| (uid, status)))
            .collect())
    }
}

/// [`TokenBuckets`] in memory: per bucket, the theoretical arrival time of
/// the next token (GCRA), as `redis/rate.lua` keeps it in Redis.
#[derive(Default)]
pub struct MemoryBuckets {
    buckets: SharedMap<String, Instant>,
}

#[async_trait]
impl TokenBuckets for MemoryBuckets {
    async fn take(
        &self,
        name: &str,
        per_second: u32,
        burst: u32,
        n: u32,
    ) -> Result<Duration, StoreError> {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let now = Instant::now();
        let mut tat = self.buckets.entry(name.to_owned()).or_insert(now);
        let start = (*tat).max(now);
        let next = start + interval * n;
        let allowed_from = next.checked_sub(interval * burst.max(n)).unwrap_or(now);
        if allowed_from > now {
            return Ok(allowed_from - now);
        }
        *tat = next;
        Ok(Duration::ZERO)
    }

    async fn left(&self, name: &str, per_second: u32, burst: u32) -> Result<u32, StoreError> {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let now = Instant::now();
        let owed = self
            .buckets
            .get(name)
            .map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now));
        let used = owed.as_nanos().div_ceil(interval.as_nanos().max(1));
        Ok(burst.saturating_sub(used.min(u128::from(u32::MAX)) as u32))
    }

    fn forget_full(&self) {
        let now = Instant::now();
        self.buckets.retain(|_, tat| *tat > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(s: &str) -> Uid {
        Uid::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        let buckets = MemoryBuckets::default();
        for _ in 0..4 {
            assert_eq!(buckets.take("b", 2, 4, 1).await.unwrap(), Duration::ZERO);
        }
        let wait = buckets.take("b", 2, 4, 1).await.unwrap();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another bucket is full.
        assert_eq!(buckets.take("c", 2, 4, 1).await.unwrap(), Duration::ZERO);
        // What is left: none of b (refilling at 2/s), 3 of c, all of d.
        assert_eq!(buckets.left("b", 2, 4).await.unwrap(), 0);
        assert_eq!(buckets.left("c", 2, 4).await.unwrap(), 3);
        assert_eq!(buckets.left("d", 2, 4).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn each_visible_change_is_returned_once_and_a_dead_nodes_users_are_swept() {
        let table = MemoryPresence::default();
        let lease = Duration::from_millis(50);
        let alice = uid("alice");
        assert_eq!(
            table
                .set(&alice, "a", OnNode::On, lease, None)
                .await
                .unwrap(),
            (true, "online".into())
        );
        assert_eq!(
            table
                .set(&alice, "b", OnNode::On, lease, None)
                .await
                .unwrap(),
            (false, "online".into())
        );
        assert_eq!(
            table
                .set(&alice, "b", OnNode::Keep, lease, Some("busy"))
                .await
                .unwrap(),
            (true, "busy".into())
        );
        assert_eq!(table.online().await.unwrap(), std::slice::from_ref(&alice));
        assert!(table.sweep().await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Both nodes stopped renewing: one sweep takes alice offline.
        assert_eq!(
            table.sweep().await.unwrap(),
            [(alice.clone(), "offline".into())]
        );
        assert!(table.sweep().await.unwrap().is_empty());
        assert_eq!(
            table.states(std::slice::from_ref(&alice)).await.unwrap(),
            [(false, Some("busy".into()))]
        );
    }
}
