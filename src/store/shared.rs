//! What the nodes of a deployment share besides queues and records: who is
//! online on which node ([`PresenceTable`]) and token buckets
//! ([`TokenBuckets`]). Each backend brings both (see [`super::Backend`]):
//! one process keeps them in memory (`memory.rs`), a cluster in Redis
//! (`redis/shared.rs`), so that the services above never ask which one
//! they have.

use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::uid::Uid;

/// What a node says of one of its users when it records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNode {
    /// Online on this node, for a lease from now.
    On,
    /// No longer online on this node.
    Off,
    /// As it was (only the chosen status changes).
    Keep,
}

/// A deployment's one view of presence: per user, the nodes that have it
/// online (each until its lease runs out), the status it chose, and the
/// visible status last shown to its friends, so that of all nodes exactly
/// one pushes each visible change.
#[async_trait]
pub trait PresenceTable: Send + Sync + 'static {
    /// Records `uid` on `node` (for `lease` when [`OnNode::On`]) and, if
    /// given, the status it chose (`online` clears it). Returns whether this
    /// call changed its visible status, and that status.
    async fn set(
        &self,
        uid: &Uid,
        node: &str,
        here: OnNode,
        lease: Duration,
        chosen: Option<&str>,
    ) -> Result<(bool, String), StoreError>;

    /// Renews `node`'s lease on each of `uids` (its online users).
    async fn refresh(&self, node: &str, lease: Duration, uids: &[Uid]) -> Result<(), StoreError>;

    /// For each of `uids`: online on any node, and the status it chose.
    async fn states(&self, uids: &[Uid]) -> Result<Vec<(bool, Option<String>)>, StoreError>;

    /// Every user online on some node now.
    async fn online(&self) -> Result<Vec<Uid>, StoreError>;

    /// The nodes that hold a live lease on `uid` (it is connected there or
    /// polled there within the grace period), by name.
    async fn leases(&self, uid: &Uid) -> Result<Vec<String>, StoreError>;

    /// The users whose every lease ran out (their nodes died) and whose
    /// visible status thereby changed, each returned to exactly one caller.
    async fn sweep(&self) -> Result<Vec<(Uid, String)>, StoreError>;
}

/// Token buckets by name (GCRA), shared by every node of a deployment: the
/// per-user send limit and the pace of broadcasts.
#[async_trait]
pub trait TokenBuckets: Send + Sync + 'static {
    /// Takes `n` tokens from bucket `name`, which refills `per_second` and
    /// holds `burst`; returns how long to wait if they are not there
    /// (nothing is taken then).
    async fn take(
        &self,
        name: &str,
        per_second: u32,
        burst: u32,
        n: u32,
    ) -> Result<Duration, StoreError>;

    /// How many tokens bucket `name` (as [`TokenBuckets::take`] describes
    /// it) holds now; takes none.
    async fn left(&self, name: &str, per_second: u32, burst: u32) -> Result<u32, StoreError>;

    /// Forgets the buckets that are full again (a store that expires them
    /// itself does nothing).
    fn forget_full(&self) {}
}

/// How the nodes of a deployment know and ask each other (the user
/// inspector and the delivery trace look at every node). One process has
/// no other node: the defaults.
#[async_trait]
pub trait NodeBus: Send + Sync + 'static {
    /// Records `node` as running for `lease` from now.
    async fn alive(&self, _node: &str, _lease: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    /// The nodes whose lease has not run out, this one's included (empty
    /// when there is no other process).
    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    /// Publishes `message` to every node, this one included.
    async fn tell(&self, _message: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    /// What any node published with [`NodeBus::tell`]; lossy.
    fn told(&self) -> tokio::sync::broadcast::Receiver<bytes::Bytes> {
        tokio::sync::broadcast::channel(1).1
    }
}

/// The bus of a deployment of one process.
pub struct OneNode;

impl NodeBus for OneNode {}

/// What others see of a user who is `online` (anywhere) with `chosen`.
pub fn visible(online: bool, chosen: Option<&str>) -> &str {
    match (online, chosen) {
        (false, _) | (true, Some("invisible")) => "offline",
        (true, Some(status)) => status,
        (true, None) => "online",
    }
}
