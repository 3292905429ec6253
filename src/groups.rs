//! Groups and their members, persisted in the store's kv
//! (`group/{gid}` → JSON array of uids) and kept in memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::store::{Store, StoreError};
use crate::uid::Uid;

const PREFIX: &str = "group/";

/// Most members of one group.
pub const MAX_MEMBERS: usize = 10_000;

/// A group id: the same alphabet as a uid.
pub type Gid = Uid;

/// Every group's member set.
pub struct Groups {
    members: RwLock<HashMap<Gid, Arc<HashSet<Uid>>>>,
    store: Arc<dyn Store>,
}

impl Groups {
    pub fn load(store: Arc<dyn Store>) -> Result<Groups, StoreError> {
        let mut members = HashMap::new();
        for (key, value) in store.kv_scan(PREFIX)? {
            let (Ok(gid), Ok(list)) = (
                Gid::parse(&key[PREFIX.len()..]),
                serde_json::from_slice::<Vec<Uid>>(&value),
            ) else {
                tracing::warn!("skipping unreadable group {key}");
                continue;
            };
            members.insert(gid, Arc::new(list.into_iter().collect()));
        }
        Ok(Groups {
            members: RwLock::new(members),
            store,
        })
    }

    /// Sets the members of `gid` (durable when this returns).
    pub async fn set_members(&self, gid: &Gid, list: Vec<Uid>) -> Result<(), StoreError> {
        let set: HashSet<Uid> = list.into_iter().collect();
        let mut sorted: Vec<&Uid> = set.iter().collect();
        sorted.sort();
        let json = serde_json::to_vec(&sorted).map_err(|e| StoreError::Io(e.to_string()))?;
        self.store.kv_put(&format!("{PREFIX}{gid}"), json).await?;
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        members.insert(gid.clone(), Arc::new(set));
        Ok(())
    }

    /// The members of `gid`, if the group exists.
    pub fn members(&self, gid: &Gid) -> Option<Arc<HashSet<Uid>>> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        members.get(gid).cloned()
    }
}
