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
    /// The write each user's list in memory comes from (see [`Friends::set`]).
    versions: HashMap<Uid, u64>,
}

/// The friend graph, in memory, persisted in the store.
pub struct Friends {
    graph: RwLock<Graph>,
    store: Arc<dyn Store>,
    /// Numbers the writes in the order they reach the store.
    writes: tokio::sync::Mutex<u64>,
}

impl Friends {
    /// Loads every friend list from `store`.
    pub async fn load(store: Arc<dyn Store>) -> Result<Friends, StoreError> {
        let friends = Friends {
            graph: RwLock::default(),
            store: store.clone(),
            writes: tokio::sync::Mutex::new(0),
        };
        for (key, value) in store.kv_scan(PREFIX).await? {
            let (Ok(uid), Ok(list)) = (
                Uid::parse(&key[PREFIX.len()..]),
                serde_json::from_slice::<Vec<Uid>>(&value),
            ) else {
                tracing::warn!("skipping unreadable friend list {key}");
                continue;
            };
            friends.replace(uid, list, 0);
        }
        Ok(friends)
    }

    /// Sets whom `uid` has added (durable when this returns); returns the
    /// list as stored (sorted, without duplicates or `uid` itself).
    ///
    /// Concurrent sets of one user reach the store in one order and memory
    /// in the same order: each write is numbered as it is staged, and
    /// memory only ever takes a newer one, whichever finishes first.
    pub async fn set(&self, uid: &Uid, mut list: Vec<Uid>) -> Result<Vec<Uid>, StoreError> {
        list.sort();
        list.dedup();
        list.retain(|f| f != uid);
        let json = serde_json::to_vec(&list).map_err(|e| StoreError::Io(e.to_string()))?;
        let version = {
            let mut writes = self.writes.lock().await;
            self.store.kv_stage(&format!("{PREFIX}{uid}"), json).await?;
            *writes += 1;
            *writes
        };
        self.store.sync().await?;
        self.replace(uid.clone(), list.clone(), version);
        self.store.announce(&format!("{PREFIX}{uid}")).await?;
        Ok(list)
    }

    /// Rereads whom `uid` has added from the store (another node of a
    /// cluster changed it).
    pub async fn reload(&self, uid: &Uid) -> Result<(), StoreError> {
        let mut writes = self.writes.lock().await;
        let value = self.store.kv_get(&format!("{PREFIX}{uid}")).await?;
        let list = value
            .and_then(|v| serde_json::from_slice::<Vec<Uid>>(&v).ok())
            .unwrap_or_default();
        *writes += 1;
        self.replace(uid.clone(), list, *writes);
        Ok(())
    }

    /// Rereads what an announced change (a key of
    /// [`crate::store::Records::announce`]) says changed, if it is a friend
    /// list; everything for `""` (changes may have been missed).
    pub async fn changed(&self, change: &str) -> Result<(), StoreError> {
        if change.is_empty() {
            return self.reload_all().await;
        }
        match change.strip_prefix(PREFIX).map(Uid::parse) {
            Some(Ok(uid)) => self.reload(&uid).await,
            _ => Ok(()),
        }
    }

    /// Rereads every friend list from the store.
    pub async fn reload_all(&self) -> Result<(), StoreError> {
        for (key, _) in self.store.kv_scan(PREFIX).await? {
            if let Ok(uid) = Uid::parse(&key[PREFIX.len()..]) {
                self.reload(&uid).await?;
            }
        }
        Ok(())
    }

    fn replace(&self, uid: Uid, list: Vec<Uid>, version: u64) {
        let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
        let current = graph.versions.entry(uid.clone()).or_insert(0);
        if *current > version {
            return; // a newer write is already in memory
        }
        *current = version;
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
