//! Who is online, and with which chosen status: the state that presence
//! pushes are computed from, behind [`OnlineDirectory`].
//!
//! What is per node and what is shared, in herald's state:
//! - shared by every node of a deployment (a cluster implements these
//!   traits on its shared store): this directory (a user is online while
//!   connected to ANY node), the per-user send budget
//!   ([`crate::chat::limits::SendBudget`]) and the broadcast pace
//!   ([`crate::chat::broadcasts::Pacer`]);
//! - per node by design: the open connections themselves and their cap
//!   (`hub.rs`; a limit that protects one process), and the coalescing
//!   windows of presence and receipt pushes (a window per node at most
//!   multiplies the pushes of one change by the number of nodes).
//!
//! [`LocalDirectory`] is the single-process implementation: in memory, so
//! after a restart everyone starts offline and comes back as they
//! reconnect. [`RedisDirectory`] is the cluster's: each node keeps its own
//! connections in a [`LocalDirectory`] and holds a lease on each of its
//! online users in Redis, renewed every third of `--node-lease-s`; a node
//! killed with kill -9 stops renewing, and any node's sweep then takes
//! its users offline (and pushes that) once the lease ran out.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{RedisStore, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

/// Online state of every user. The methods that record what happens on
/// this node are synchronous (they run where a connection opens or closes,
/// in drop handlers too); what asks about every node is async.
#[async_trait::async_trait]
pub trait OnlineDirectory: Send + Sync + 'static {
    /// A connection of `uid` opened here, unless it already has `max`.
    fn try_connect(&self, uid: &Uid, max: usize) -> bool;
    /// A connection of `uid` opened here, whatever it already has.
    fn connect(&self, uid: &Uid);
    /// A connection of `uid` closed here.
    fn disconnect(&self, uid: &Uid);
    /// A poll or long-poll of `uid` arrived: online for the grace period.
    fn polled(&self, uid: &Uid);
    /// Sets the status `uid` chose here; `online` clears it.
    fn choose(&self, uid: &Uid, status: &'static str);
    /// Forgets the pollers whose grace ran out; returns them.
    fn expire_pollers(&self) -> Vec<Uid>;
    /// What this node knows of `uid`: online here, and the status it chose
    /// here (`None`: the default, online).
    fn here(&self, uid: &Uid) -> (bool, Option<&'static str>);

    /// For each of `uids`: online on any node, and its chosen status.
    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<&'static str>)>, StoreError>;
    /// Every user online now, on any node.
    async fn online_users(&self) -> Result<Vec<Uid>, StoreError>;

    /// Whether other nodes share this directory. Then [`Presence`] records
    /// each change with [`OnlineDirectory::publish`] instead of deciding
    /// from [`OnlineDirectory::here`] alone.
    ///
    /// [`Presence`]: crate::chat::presence::Presence
    fn shared(&self) -> bool {
        false
    }
    /// Records `uid`'s state on this node (and `chosen`, if it chose a
    /// status); returns its new visible status if this call changed it
    /// (exactly one node gets each change, and pushes it).
    async fn publish(
        &self,
        _uid: &Uid,
        _chosen: Option<&'static str>,
    ) -> Result<Option<&'static str>, StoreError> {
        Ok(None)
    }
    /// Periodic upkeep: renews this node's leases and returns the users
    /// whose nodes all died, with their new visible status, to push.
    async fn maintain(&self) -> Result<Vec<(Uid, &'static str)>, StoreError> {
        Ok(Vec::new())
    }
}

/// A status a client may choose.
pub const STATUSES: [&str; 4] = ["online", "busy", "dnd", "invisible"];

/// The `'static` form of a status Redis gave back.
fn known_status(status: &str) -> &'static str {
    STATUSES
        .iter()
        .chain(&["offline"])
        .find(|s| **s == status)
        .copied()
        .unwrap_or("online")
}

/// [`OnlineDirectory`] in this process's memory.
pub struct LocalDirectory {
    /// Open connections (streams and long-polls) per user.
    connections: SharedMap<Uid, usize>,
    /// When each recent poller last polled.
    polled: SharedMap<Uid, Instant>,
    /// Chosen statuses other than the default `online`.
    chosen: SharedMap<Uid, &'static str>,
    grace: Duration,
}

impl LocalDirectory {
    /// A poller stays online for `grace` after its last poll.
    pub fn new(grace: Duration) -> LocalDirectory {
        LocalDirectory {
            connections: SharedMap::default(),
            polled: SharedMap::default(),
            chosen: SharedMap::default(),
            grace,
        }
    }
}

impl LocalDirectory {
    fn is_online(&self, uid: &Uid) -> bool {
        self.connections.contains_key(uid)
            || self
                .polled
                .get(uid)
                .is_some_and(|at| at.elapsed() < self.grace)
    }

    fn local_users(&self) -> Vec<Uid> {
        let mut users: BTreeSet<Uid> = self.connections.iter().map(|e| e.key().clone()).collect();
        users.extend(
            self.polled
                .iter()
                .filter(|e| e.value().elapsed() < self.grace)
                .map(|e| e.key().clone()),
        );
        users.into_iter().collect()
    }
}

#[async_trait::async_trait]
impl OnlineDirectory for LocalDirectory {
    fn try_connect(&self, uid: &Uid, max: usize) -> bool {
        let mut count = self.connections.entry(uid.clone()).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn connect(&self, uid: &Uid) {
        *self.connections.entry(uid.clone()).or_insert(0) += 1;
    }

    fn disconnect(&self, uid: &Uid) {
        self.connections.remove_if_mut(uid, |_, count| {
            *count -= 1;
            *count == 0
        });
    }

    fn polled(&self, uid: &Uid) {
        // In place when known: a poller comes back many times a second.
        match self.polled.get_mut(uid) {
            Some(mut at) => *at = Instant::now(),
            None => {
                self.polled.insert(uid.clone(), Instant::now());
            }
        }
    }

    fn here(&self, uid: &Uid) -> (bool, Option<&'static str>) {
        (self.is_online(uid), self.chosen.get(uid).map(|s| *s))
    }

    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<&'static str>)>, StoreError> {
        Ok(uids.iter().map(|uid| self.here(uid)).collect())
    }

    async fn online_users(&self) -> Result<Vec<Uid>, StoreError> {
        Ok(self.local_users())
    }

    fn choose(&self, uid: &Uid, status: &'static str) {
        if status == "online" {
            self.chosen.remove(uid);
        } else {
            self.chosen.insert(uid.clone(), status);
        }
    }

    fn expire_pollers(&self) -> Vec<Uid> {
        let expired: Vec<Uid> = self
            .polled
            .iter()
            .filter(|e| e.value().elapsed() >= self.grace)
            .map(|e| e.key().clone())
            .collect();
        expired
            .into_iter()
            .filter(|uid| {
                self.polled
                    .remove_if(uid, |_, at| at.elapsed() >= self.grace)
                    .is_some()
            })
            .collect()
    }
}

/// [`OnlineDirectory`] of a cluster: this node's connections in memory,
/// every node's online users and chosen statuses in Redis.
pub struct RedisDirectory {
    local: LocalDirectory,
    store: Arc<RedisStore>,
    /// This node's name in the leases (random per start).
    node: String,
    lease: Duration,
    last_renewal: Mutex<Option<Instant>>,
}

impl RedisDirectory {
    /// Pollers stay online for `grace` after their last poll here; a node
    /// that stops renewing keeps its users online for at most `lease`.
    pub fn new(store: Arc<RedisStore>, grace: Duration, lease: Duration) -> RedisDirectory {
        let node: u64 = rand::random();
        RedisDirectory {
            local: LocalDirectory::new(grace),
            store,
            node: format!("{node:016x}"),
            lease,
            last_renewal: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl OnlineDirectory for RedisDirectory {
    fn try_connect(&self, uid: &Uid, max: usize) -> bool {
        self.local.try_connect(uid, max)
    }
    fn connect(&self, uid: &Uid) {
        self.local.connect(uid)
    }
    fn disconnect(&self, uid: &Uid) {
        self.local.disconnect(uid)
    }
    fn polled(&self, uid: &Uid) {
        self.local.polled(uid)
    }
    fn choose(&self, uid: &Uid, status: &'static str) {
        self.local.choose(uid, status)
    }
    fn expire_pollers(&self) -> Vec<Uid> {
        self.local.expire_pollers()
    }
    fn here(&self, uid: &Uid) -> (bool, Option<&'static str>) {
        self.local.here(uid)
    }

    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<&'static str>)>, StoreError> {
        Ok(self
            .store
            .presence_states(uids)
            .await?
            .into_iter()
            .map(|(online, chosen)| (online, chosen.as_deref().map(known_status)))
            .collect())
    }

    async fn online_users(&self) -> Result<Vec<Uid>, StoreError> {
        self.store.presence_online().await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn publish(
        &self,
        uid: &Uid,
        chosen: Option<&'static str>,
    ) -> Result<Option<&'static str>, StoreError> {
        let state = if self.local.is_online(uid) {
            "on"
        } else {
            "off"
        };
        let (changed, status) = self
            .store
            .presence_set(uid, &self.node, state, self.lease, chosen.unwrap_or(""))
            .await?;
        Ok(changed.then(|| known_status(&status)))
    }

    async fn maintain(&self) -> Result<Vec<(Uid, &'static str)>, StoreError> {
        let due = {
            let mut last = self.last_renewal.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= self.lease / 3);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let users = self.local.local_users();
            self.store
                .presence_refresh(&self.node, self.lease, &users)
                .await?;
        }
        Ok(self
            .store
            .presence_sweep()
            .await?
            .into_iter()
            .map(|(uid, status)| (uid, known_status(&status)))
            .collect())
    }
}
