//! Directed friendships: whom each user has added, and the reverse index
//! (who added me) that presence fans out over without scanning.
//!
//! Lists are persisted in the store's kv (`friends/{uid}` → JSON array) and
//! both indexes are rebuilt from it at start.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::store::{Store, StoreError};
use crate::uid::Uid;

const PREFIX: &str = "friends/";

/// Most friends one user may add.
pub const MAX_FRIENDS: usize = 5000;

#[derive(Default)]
struct Graph {
    added: HashMap<Uid, Vec<Uid>>,
    reverse: HashMap<Uid, HashSet<Uid>>,
}

/// The friend graph, in memory, persisted in the store.
pub struct Friends {
    graph: RwLock<Graph>,
    store: Arc<dyn Store>,
}

impl Friends {
    /// Loads every friend list from `store`.
    pub fn load(store: Arc<dyn Store>) -> Result<Friends, StoreError> {
        let friends = Friends {
            graph: RwLock::default(),
            store: store.clone(),
        };
        for (key, value) in store.kv_scan(PREFIX)? {
            let (Ok(uid), Ok(list)) = (
                Uid::parse(&key[PREFIX.len()..]),
                serde_json::from_slice::<Vec<Uid>>(&value),
            ) else {
                tracing::warn!("skipping unreadable friend list {key}");
                continue;
            };
            friends.replace(uid, list);
        }
        Ok(friends)
    }

    /// Sets whom `uid` has added (durable when this returns).
    pub async fn set(&self, uid: &Uid, mut list: Vec<Uid>) -> Result<(), StoreError> {
        list.sort();
        list.dedup();
        list.retain(|f| f != uid);
        let json = serde_json::to_vec(&list).map_err(|e| StoreError::Io(e.to_string()))?;
        self.store.kv_put(&format!("{PREFIX}{uid}"), json).await?;
        self.replace(uid.clone(), list);
        Ok(())
    }

    fn replace(&self, uid: Uid, list: Vec<Uid>) {
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = graph.added.remove(&uid) {
            for friend in old {
                if let Some(set) = graph.reverse.get_mut(&friend) {
                    set.remove(&uid);
                    if set.is_empty() {
                        graph.reverse.remove(&friend);
                    }
                }
            }
        }
        for friend in &list {
            graph
                .reverse
                .entry(friend.clone())
                .or_default()
                .insert(uid.clone());
        }
        graph.added.insert(uid, list);
    }

    /// Whom `uid` has added.
    pub fn of(&self, uid: &Uid) -> Vec<Uid> {
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        graph.added.get(uid).cloned().unwrap_or_default()
    }

    /// Everyone who has added `uid`.
    pub fn reverse_of(&self, uid: &Uid) -> Vec<Uid> {
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        graph
            .reverse
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}
