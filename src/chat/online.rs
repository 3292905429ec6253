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
//! reconnect.

use std::collections::BTreeSet;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::uid::Uid;

/// Online state of every user. Methods are synchronous (they run where a
/// connection opens or closes, in drop handlers too); an implementation on
/// a remote store keeps what it needs locally and syncs in the background.
pub trait OnlineDirectory: Send + Sync + 'static {
    /// A connection of `uid` opened here, unless it already has `max`.
    fn try_connect(&self, uid: &Uid, max: usize) -> bool;
    /// A connection of `uid` opened here, whatever it already has.
    fn connect(&self, uid: &Uid);
    /// A connection of `uid` closed here.
    fn disconnect(&self, uid: &Uid);
    /// A poll or long-poll of `uid` arrived: online for the grace period.
    fn polled(&self, uid: &Uid);
    /// The status `uid` chose (`None`: the default, online).
    fn chosen(&self, uid: &Uid) -> Option<&'static str>;
    /// Sets the status `uid` chose; `online` clears it.
    fn choose(&self, uid: &Uid, status: &'static str);

    /// Whether `uid` is connected or polled within the grace period.
    fn is_online(&self, uid: &Uid) -> bool;
    /// Every user online now.
    fn online_users(&self) -> Vec<Uid>;
    /// Forgets the pollers whose grace ran out; returns them.
    fn expire_pollers(&self) -> Vec<Uid>;
}

/// [`OnlineDirectory`] in this process's memory.
pub struct LocalDirectory {
    /// Open connections (streams and long-polls) per user.
    connections: DashMap<Uid, usize>,
    /// When each recent poller last polled.
    polled: DashMap<Uid, Instant>,
    /// Chosen statuses other than the default `online`.
    chosen: DashMap<Uid, &'static str>,
    grace: Duration,
}

impl LocalDirectory {
    /// A poller stays online for `grace` after its last poll.
    pub fn new(grace: Duration) -> LocalDirectory {
        LocalDirectory {
            connections: DashMap::new(),
            polled: DashMap::new(),
            chosen: DashMap::new(),
            grace,
        }
    }
}

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
        self.polled.insert(uid.clone(), Instant::now());
    }

    fn chosen(&self, uid: &Uid) -> Option<&'static str> {
        self.chosen.get(uid).map(|s| *s)
    }

    fn choose(&self, uid: &Uid, status: &'static str) {
        if status == "online" {
            self.chosen.remove(uid);
        } else {
            self.chosen.insert(uid.clone(), status);
        }
    }

    fn is_online(&self, uid: &Uid) -> bool {
        self.connections.contains_key(uid)
            || self
                .polled
                .get(uid)
                .is_some_and(|at| at.elapsed() < self.grace)
    }

    fn online_users(&self) -> Vec<Uid> {
        let mut users: BTreeSet<Uid> = self.connections.iter().map(|e| e.key().clone()).collect();
        users.extend(
            self.polled
                .iter()
                .filter(|e| e.value().elapsed() < self.grace)
                .map(|e| e.key().clone()),
        );
        users.into_iter().collect()
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
