//! The Redis backend's family ([`Backend`]: the store is its own presence
//! table and token buckets, shared by every node) and its upkeep.

use std::sync::Arc;

use async_trait::async_trait;

use super::RedisStore;
use crate::store::{Backend, Retention, StoreError, Upkeep};

impl RedisStore {
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
}

#[async_trait]
impl Upkeep for RedisStore {
    /// Redis trims on append and expires idle queues itself: left are the
    /// records with a deadline and the local waiter registry.
    async fn maintain(&self, _retention: Retention) -> Result<u64, StoreError> {
        self.forget_idle();
        self.expire_due().await
    }

    fn durability(&self) -> String {
        format!("redis {}", self.persistence())
    }

    fn unreachable(&self) -> Option<String> {
        self.health.report()
    }
}
