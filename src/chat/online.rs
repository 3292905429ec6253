//! Who is online, and with which chosen status: the state that presence
//! pushes are computed from.
//!
//! What is per node and what is shared, in herald's state:
//! - shared by every node of a deployment (the backend's
//!   [`PresenceTable`] and [`crate::store::TokenBuckets`]): who is online
//!   (a user is online while connected to ANY node), the chosen statuses,
//!   the per-user send budget and the broadcast pace;
//! - per node by design: the open connections themselves and their cap
//!   (`hub.rs`; a limit that protects one process), and the coalescing
//!   windows of presence and receipt pushes (a window per node at most
//!   multiplies the pushes of one change by the number of nodes).
//!
//! The [`OnlineDirectory`] keeps this node's connections and pollers in
//! memory and holds a lease in the presence table on each of its online
//! users, renewed every third of `--node-lease-s`. A node killed with kill
//! -9 stops renewing, and any node's sweep then takes its users offline
//! (and pushes that) once the lease ran out. On one process the table is
//! in memory: after a restart everyone starts offline and comes back as
//! they reconnect.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{OnNode, PresenceTable, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

/// A status a client may choose.
pub const STATUSES: [&str; 4] = ["online", "busy", "dnd", "invisible"];

/// The `'static` form of a status the table gave back.
fn known_status(status: &str) -> &'static str {
    STATUSES
        .iter()
        .chain(&["offline"])
        .find(|s| **s == status)
        .copied()
        .unwrap_or("online")
}

/// Online state of every user: this node's connections in memory, every
/// node's online users and chosen statuses in the presence table. The
/// methods that record what happens on this node are synchronous (they run
/// where a connection opens or closes, in drop handlers too); what asks
/// the table is async.
pub struct OnlineDirectory {
    /// Open connections (streams and long-polls) per user, here.
    connections: SharedMap<Uid, usize>,
    /// When each recent poller last polled here.
    polled: SharedMap<Uid, Instant>,
    /// A poller stays online this long after its last poll.
    grace: Duration,
    table: Arc<dyn PresenceTable>,
    /// This node's name in the leases (random per start).
    node: String,
    lease: Duration,
    last_renewal: Mutex<Option<Instant>>,
}

impl OnlineDirectory {
    /// Pollers stay online for `grace` after their last poll here; a node
    /// that stops renewing keeps its users online for at most `lease`.
    /// `node` names this node in the leases.
    pub fn new(
        table: Arc<dyn PresenceTable>,
        node: String,
        grace: Duration,
        lease: Duration,
    ) -> OnlineDirectory {
        OnlineDirectory {
            connections: SharedMap::default(),
            polled: SharedMap::default(),
            grace,
            table,
            node,
            lease,
            last_renewal: Mutex::new(None),
        }
    }

    /// A connection of `uid` opened here, unless it already has `max`.
    pub fn try_connect(&self, uid: &Uid, max: usize) -> bool {
        let mut count = self.connections.entry(uid.clone()).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection of `uid` opened here, whatever it already has.
    pub fn connect(&self, uid: &Uid) {
        *self.connections.entry(uid.clone()).or_insert(0) += 1;
    }

    /// A connection of `uid` closed here.
    pub fn disconnect(&self, uid: &Uid) {
        self.connections.remove_if_mut(uid, |_, count| {
            *count -= 1;
            *count == 0
        });
    }

    /// A poll or long-poll of `uid` arrived: online for the grace period.
    pub fn polled(&self, uid: &Uid) {
        // In place when known: a poller comes back many times a second.
        match self.polled.get_mut(uid) {
            Some(mut at) => *at = Instant::now(),
            None => {
                self.polled.insert(uid.clone(), Instant::now());
            }
        }
    }

    /// Forgets the pollers whose grace ran out; returns them.
    pub fn expire_pollers(&self) -> Vec<Uid> {
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

    /// Whether `uid` has a connection here, or polled here within the
    /// grace period.
    pub fn online_here(&self, uid: &Uid) -> bool {
        self.connections.contains_key(uid)
            || self
                .polled
                .get(uid)
                .is_some_and(|at| at.elapsed() < self.grace)
    }

    fn users_here(&self) -> Vec<Uid> {
        let mut users: BTreeSet<Uid> = self.connections.iter().map(|e| e.key().clone()).collect();
        users.extend(
            self.polled
                .iter()
                .filter(|e| e.value().elapsed() < self.grace)
                .map(|e| e.key().clone()),
        );
        users.into_iter().collect()
    }

    /// For each of `uids`: online on any node, and its chosen status.
    pub async fn states(
        &self,
        uids: &[Uid],
    ) -> Result<Vec<(bool, Option<&'static str>)>, StoreError> {
        Ok(self
            .table
            .states(uids)
            .await?
            .into_iter()
            .map(|(online, chosen)| (online, chosen.as_deref().map(known_status)))
            .collect())
    }

    /// The nodes holding a live lease on `uid` (where it is connected or
    /// polled within the grace), as recorded in the presence table.
    pub async fn leases(&self, uid: &Uid) -> Result<Vec<String>, StoreError> {
        self.table.leases(uid).await
    }

    /// Every user online now, on any node.
    pub async fn online_users(&self) -> Result<Vec<Uid>, StoreError> {
        self.table.online().await
    }

    /// Records `uid`'s state on this node (online here or not, as seen
    /// when the caller looked) and `chosen`, if it chose a status; returns
    /// its new visible status if this call changed it (exactly one node
    /// gets each change, and pushes it).
    pub async fn publish(
        &self,
        uid: &Uid,
        online_here: bool,
        chosen: Option<&'static str>,
    ) -> Result<Option<&'static str>, StoreError> {
        let here = if online_here { OnNode::On } else { OnNode::Off };
        let (changed, status) = self
            .table
            .set(uid, &self.node, here, self.lease, chosen)
            .await?;
        Ok(changed.then(|| known_status(&status)))
    }

    /// Periodic upkeep: renews this node's leases (every third of the
    /// lease) and returns the users whose nodes all died, with their new
    /// visible status, to push.
    pub async fn maintain(&self) -> Result<Vec<(Uid, &'static str)>, StoreError> {
        let due = {
            let mut last = self.last_renewal.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.is_none_or(|at| at.elapsed() >= self.lease / 3);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let users = self.users_here();
            self.table.refresh(&self.node, self.lease, &users).await?;
        }
        Ok(self
            .table
            .sweep()
            .await?
            .into_iter()
            .map(|(uid, status)| (uid, known_status(&status)))
            .collect())
    }
}
