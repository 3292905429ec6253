//! Groups and their members, persisted in the store's kv
//! (`group/{gid}` → JSON array of uids) and kept in memory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::error::Error;
use crate::store::{Store, StoreError};
use crate::uid::Uid;

const PREFIX: &str = "group/";

/// Most members of one group.
pub const MAX_MEMBERS: usize = 10_000;

/// A group id: the same alphabet as a uid.
pub type Gid = Uid;

/// One group's members.
pub type Members = Arc<HashSet<Uid>>;

/// Every group's member set, with the number of the write it comes from
/// (see [`Groups::set_members`]).
pub struct Groups {
    members: RwLock<HashMap<Gid, (u64, Members)>>,
    store: Arc<dyn Store>,
    /// Numbers the writes in the order they reach the store.
    writes: tokio::sync::Mutex<u64>,
}

impl Groups {
    pub async fn load(store: Arc<dyn Store>) -> Result<Groups, StoreError> {
        let mut members = HashMap::new();
        for (key, value) in store.kv_scan(PREFIX).await? {
            let (Ok(gid), Ok(list)) = (
                Gid::parse(&key[PREFIX.len()..]),
                serde_json::from_slice::<Vec<Uid>>(&value),
            ) else {
                tracing::warn!("skipping unreadable group {key}");
                continue;
            };
            members.insert(gid, (0, Arc::new(list.into_iter().collect())));
        }
        Ok(Groups {
            members: RwLock::new(members),
            store,
            writes: tokio::sync::Mutex::new(0),
        })
    }

    /// Sets the members of `gid` (durable when this returns) and returns
    /// them. Concurrent sets reach memory in the order they reach the store,
    /// as in [`crate::chat::friends::Friends::set`].
    pub async fn set_members(&self, gid: &Gid, list: Vec<Uid>) -> Result<Members, StoreError> {
        let set: HashSet<Uid> = list.into_iter().collect();
        let mut sorted: Vec<&Uid> = set.iter().collect();
        sorted.sort();
        let json = serde_json::to_vec(&sorted).map_err(|e| StoreError::Io(e.to_string()))?;
        let version = {
            let mut writes = self.writes.lock().await;
            self.store.kv_stage(&format!("{PREFIX}{gid}"), json).await?;
            *writes += 1;
            *writes
        };
        self.store.sync().await?;
        let set = Arc::new(set);
        self.keep(gid, version, Some(set.clone()));
        self.store.announce(&format!("{PREFIX}{gid}")).await?;
        Ok(set)
    }

    /// Takes `set` into memory unless a newer write is there already.
    fn keep(&self, gid: &Gid, version: u64, set: Option<Members>) {
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        if members.get(gid).is_some_and(|(v, _)| *v > version) {
            return;
        }
        match set {
            Some(set) => members.insert(gid.clone(), (version, set)),
            None => members.remove(gid),
        };
    }

    /// Rereads the members of `gid` from the store (another node of a
    /// cluster changed them).
    pub async fn reload(&self, gid: &Gid) -> Result<(), StoreError> {
        let mut writes = self.writes.lock().await;
        let value = self.store.kv_get(&format!("{PREFIX}{gid}")).await?;
        let set = value
            .and_then(|v| serde_json::from_slice::<Vec<Uid>>(&v).ok())
            .map(|list| Arc::new(list.into_iter().collect()));
        *writes += 1;
        self.keep(gid, *writes, set);
        Ok(())
    }

    /// Rereads what an announced change (a key of
    /// [`crate::store::Records::announce`]) says changed, if it is a group's
    /// members; everything for `""` (changes may have been missed).
    pub async fn changed(&self, change: &str) -> Result<(), StoreError> {
        if change.is_empty() {
            return self.reload_all().await;
        }
        match change.strip_prefix(PREFIX).map(Gid::parse) {
            Some(Ok(gid)) => self.reload(&gid).await,
            _ => Ok(()),
        }
    }

    /// Rereads every group from the store.
    pub async fn reload_all(&self) -> Result<(), StoreError> {
        for (key, _) in self.store.kv_scan(PREFIX).await? {
            if let Ok(gid) = Gid::parse(&key[PREFIX.len()..]) {
                self.reload(&gid).await?;
            }
        }
        Ok(())
    }

    /// The group `gid` (a raw id from a request) and its members, if `uid`
    /// is one of them: 400 for a malformed id, 404 for no such group, 403
    /// for a non-member. A miss is checked against the store first: another
    /// node of a deployment may have just added the group or the member.
    pub async fn member_of(&self, gid: &str, uid: &Uid) -> Result<(Gid, Members), Error> {
        let gid = Gid::parse(gid).map_err(|e| Error::bad("bad_gid", e.to_string()))?;
        let known = self.members(&gid).is_some_and(|m| m.contains(uid));
        if !known {
            self.reload(&gid).await?;
        }
        let members = self
            .members(&gid)
            .ok_or_else(|| Error::NotFound(format!("no group {gid}")))?;
        if !members.contains(uid) {
            return Err(Error::Forbidden(format!("{uid} is not a member of {gid}")));
        }
        Ok((gid, members))
    }

    /// The members of `gid`, if the group exists.
    /// The groups `uid` is a member of, in order.
    pub fn of(&self, uid: &Uid) -> Vec<Gid> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        let mut gids: Vec<Gid> = members
            .iter()
            .filter(|(_, (_, members))| members.contains(uid))
            .map(|(gid, _)| gid.clone())
            .collect();
        gids.sort();
        gids
    }

    pub fn members(&self, gid: &Gid) -> Option<Members> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        members.get(gid).map(|(_, set)| set.clone())
    }
}
