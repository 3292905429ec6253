//! The durable per-user event queue behind every transport.
//!
//! Transports and IM features only see the [`Store`] trait: append events
//! (answered once they are durable), read the events after a cursor, ack,
//! and watch a user's durable head to be woken when something new can be
//! read. Housekeeping (retention, dropping idle state) is each
//! implementation's own business (`app::Backend::maintain`). `sled.rs`
//! implements it on an embedded sled database with group commit, for one
//! process; `redis.rs` on Redis, shared by the nodes of a cluster;
//! `cluster.rs` on a Redis Cluster (several primaries with replicas).

pub mod cluster;
mod commit;
mod event;
mod memory;
pub mod redis;
pub mod shared;
pub mod sled;
mod user_queue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, watch};

use crate::uid::Uid;

pub use self::event::{event_head, event_json, event_seq, gap_event, now_ms};
pub use self::shared::{NodeBus, OnNode, OneNode, PresenceTable, TokenBuckets};

/// The identity of a queue's history: it changes when a queue is recreated
/// (its store wiped, or a Redis queue expired), so a client holding a
/// cursor of the old history learns that it is stale. Clients see it as up
/// to 13 base-36 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch(std::num::NonZeroU64);

impl Epoch {
    /// A fresh random epoch.
    pub fn random() -> Epoch {
        Epoch(std::num::NonZeroU64::MIN.saturating_add(rand::random::<u64>() >> 1))
    }

    /// The epoch written as `text`, if it is one.
    pub fn parse(text: &str) -> Option<Epoch> {
        if text.is_empty() || text.len() > 13 {
            return None;
        }
        let value = u64::from_str_radix(text, 36).ok()?;
        std::num::NonZeroU64::new(value).map(Epoch)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut n = self.0.get();
        let mut digits = [0u8; 13];
        let mut at = digits.len();
        while n > 0 {
            at -= 1;
            digits[at] = char::from_digit((n % 36) as u32, 36).map_or(b'0', |c| c as u8);
            n /= 36;
        }
        f.write_str(std::str::from_utf8(&digits[at..]).unwrap_or("0"))
    }
}

/// One event to append to one user's queue.
#[derive(Debug, Clone)]
pub struct Append {
    pub uid: Uid,
    /// The event `type` (`notice`, `msg`, ...).
    pub kind: String,
    /// The event `data` as compact JSON (no line breaks, so that SSE can
    /// frame it as one `data:` line).
    pub data: Box<RawValue>,
}

impl Append {
    /// An event of `kind` carrying `data`, serialised compactly.
    pub fn new(uid: Uid, kind: &str, data: &impl serde::Serialize) -> Append {
        let data = serde_json::value::to_raw_value(data)
            .unwrap_or_else(|_| serde_json::value::to_raw_value(&()).expect("null serialises"));
        Append {
            uid,
            kind: kind.to_owned(),
            data,
        }
    }
}

/// How much one read may return: at most `events` events and, past the
/// first event, at most `bytes` bytes of event JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    pub events: usize,
    pub bytes: usize,
}

impl PageLimit {
    /// Whether an event of `len` bytes still fits after `count` events of
    /// `total` bytes: the first always does.
    pub fn fits(&self, count: usize, total: usize, len: usize) -> bool {
        count == 0 || (count < self.events && total.saturating_add(len) <= self.bytes)
    }
}

/// The answer to "events after my cursor".
#[derive(Debug)]
pub struct Page {
    /// Complete event JSON objects, in seq order (a `gap` event first when the
    /// cursor pointed below what is retained).
    pub events: Vec<Bytes>,
    /// The seq of the last event in `events`, or the cursor asked for.
    pub cursor: u64,
    /// The user's durable head when the page was read.
    pub head: u64,
    /// The epoch of the queue read.
    pub epoch: Epoch,
}

/// How long events are kept: acked ones for a while (another tab may still
/// resume), any of them up to a count and an age.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Acked events are kept this long so another tab can still resume.
    pub acked_for: Duration,
    /// Most events kept per user, acked or not.
    pub max_events: u64,
    /// Most events the backend feed keeps, acked or not: a backend that
    /// is down a while must not lose what a user's queue may drop.
    pub feed_max_events: u64,
    /// Oldest event kept, acked or not.
    pub max_age: Duration,
}

impl Retention {
    /// The retention policy of `config`'s flags.
    pub fn of(config: &crate::config::Config) -> Retention {
        Retention {
            acked_for: Duration::from_secs(config.retention),
            max_events: config.queue_cap.max(1),
            feed_max_events: config.feed_cap.max(1),
            max_age: Duration::from_secs(config.queue_max_age),
        }
    }

    /// Most events `uid`'s queue keeps.
    pub fn cap_of(&self, uid: &Uid) -> u64 {
        if uid.is_feed() {
            self.feed_max_events
        } else {
            self.max_events
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            acked_for: Duration::from_secs(3600),
            max_events: 10_000,
            feed_max_events: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What [`EventQueue::ack`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The acked seq before and after the call.
    pub before: u64,
    pub after: u64,
    /// The durable head; a `seq` beyond it acked nothing.
    pub head: u64,
}

/// What [`EventQueue::append_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotentAppend {
    /// The key was new: the events were appended with these seqs, in the
    /// order given.
    Appended { seqs: Vec<u64> },
    /// The key was used before; nothing was appended. `tag` is the value
    /// stored with the key the first time (at most 2^52, so that every
    /// store keeps it exactly), `seqs` the seqs that call appended.
    Duplicate { tag: u64, seqs: Vec<u64> },
}

/// A reader's hold on one user's queue (see [`EventQueue::follow`]).
pub struct Follow {
    /// Changes whenever a new event of this user can be read.
    pub head: watch::Receiver<u64>,
    /// The store's handle on the queue, if it keeps one in memory.
    queue: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Follow {
    /// The store's handle on the queue, if it is a `T`.
    fn queue<T: 'static>(&self) -> Option<&T> {
        self.queue.as_deref()?.downcast_ref()
    }
}

/// A reader that is handed a user's events as soon as they are durable,
/// on a thread of the store's, instead of being woken to read them (a
/// WebSocket writes them straight to its socket: `transport/ws.rs`).
pub trait DurableSink: Send + Sync {
    /// The events `after+1 ..= head` are durable; `events` are they, in
    /// order, or empty when the store does not have them at hand. Takes
    /// them, or arranges to read them itself (wakes its reader).
    fn durable(&self, after: u64, head: u64, events: &[Bytes]);
}

/// Errors of the storage layer; the HTTP edge maps them to 500/503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage failure: {0}")]
    Io(String),
    #[error("the store is shutting down")]
    Closed,
    /// The store cannot be reached now (Redis down): nothing was done;
    /// retry shortly.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A command was sent and no answer came in time (Redis frozen, or the
    /// connection lost while waiting): it may or may not have been
    /// applied, now or later. A retry is safe with the same idempotency
    /// key (`cid`, `Idempotency-Key`).
    #[error("no answer from the store in time; the outcome is unknown (retry with the same idempotency key): {0}")]
    OutcomeUnknown(String),
    /// The store's settings are not what herald needs (at start).
    #[error("{0}")]
    Refused(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// The per-user event queue every transport reads.
#[async_trait]
pub trait EventQueue: Send + Sync + 'static {
    /// Appends every event of `batch` to its user's queue and resolves, with
    /// the seqs given in the same order, only once all of them are durable.
    async fn append(&self, batch: Vec<Append>) -> Result<Vec<u64>, StoreError>;

    /// Appends every event of `appends` (each to a different user) unless
    /// `key` was used before, atomically with recording `key → tag`: a
    /// crash keeps all of them or none. Resolves once durable. Makes client
    /// retries (the
    /// `cid` of a message) idempotent even across a crash, for as long as
    /// the store keeps idempotency keys (the queue's maximum age), and
    /// keeps a message and its record in the backend feed together.
    async fn append_once(
        &self,
        key: &str,
        tag: u64,
        appends: Vec<Append>,
    ) -> Result<IdempotentAppend, StoreError>;

    /// Appends every event of `appends` (each to a different user)
    /// atomically: a crash keeps all of them or none. Resolves with their
    /// seqs, in the same order, once durable.
    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError>;

    /// A new id, unique across restarts (message ids), greater than every
    /// id given before under the same `scope` (a conversation, the
    /// broadcasts): a store spread over partitions keeps one counter per
    /// scope's partition, not one for everything.
    async fn next_id(&self, scope: &str) -> Result<u64, StoreError>;

    /// Reads the durable events with seq > `after`, as many as `limit`
    /// allows.
    async fn read(&self, uid: &Uid, after: u64, limit: PageLimit) -> Result<Page, StoreError>;

    /// Raises the user's acked seq to `seq`, unless `seq` is beyond the
    /// durable head (then nothing changes). Durable with the next commit;
    /// use [`EventQueue::sync`] to wait for it.
    async fn ack(&self, uid: &Uid, seq: u64) -> Result<Acked, StoreError>;

    /// A receiver of the user's durable head: it changes whenever a new event
    /// of this user can be read.
    async fn watch(&self, uid: &Uid) -> Result<watch::Receiver<u64>, StoreError>;

    /// What a reader that follows the user's queue for long (a stream)
    /// keeps: [`EventQueue::watch`]'s receiver, and the store's own handle
    /// on the queue if it has one, so that [`EventQueue::read_followed`]
    /// need not look the queue up again.
    async fn follow(&self, uid: &Uid) -> Result<Follow, StoreError> {
        Ok(Follow {
            head: self.watch(uid).await?,
            queue: None,
        })
    }

    /// Calls `direct` whenever the queue `follow` holds has new durable
    /// events, for as long as `direct` lives. `false` if this store cannot;
    /// the reader then waits on `follow.head`.
    fn attach(&self, follow: &Follow, direct: std::sync::Weak<dyn DurableSink>) -> bool {
        let _ = (follow, direct);
        false
    }

    /// [`EventQueue::read`] of the queue `follow` (from
    /// [`EventQueue::follow`] of `uid`) holds.
    async fn read_followed(
        &self,
        uid: &Uid,
        _follow: &Follow,
        after: u64,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        self.read(uid, after, limit).await
    }

    /// Resolves once everything written before the call (events and
    /// records) is durable.
    async fn sync(&self) -> Result<(), StoreError>;
}

/// The small records of the chat features (friend lists, group members and
/// logs, message records, counters, read cursors, news), by string key.
/// A staged write is durable with the next commit, which every later
/// append and [`EventQueue::sync`] waits for.
#[async_trait]
pub trait Records: Send + Sync + 'static {
    /// Stores `value` under `key`; resolves once durable.
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;

    /// Stores `value` under `key` without waiting for durability. For a
    /// record that must be durable by the time an event appended after it
    /// is.
    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;

    /// Removes `key` without waiting for durability.
    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError>;

    /// Raises the decimal number under `key` to at least `value`
    /// (atomically, so concurrent raises never lower it) without waiting
    /// for durability; returns the number now stored.
    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError>;

    /// Has `key` removed once `after` has passed (by the maintenance pass,
    /// within a trim interval of that). Call it BEFORE writing the record:
    /// a crash in between then leaves at worst a deadline for nothing, never
    /// a record without one.
    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError>;

    /// Stores every pair atomically (all or none, also across a crash);
    /// resolves once durable.
    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError>;

    /// Sets `key` to `new` only if its value is `old` (`None` = absent);
    /// resolves once durable with whether it was set.
    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError>;

    /// The value under `key`.
    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` pairs with keys starting with `prefix` and greater than
    /// `after`, in key order.
    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Up to `limit` pairs with keys starting with `prefix` and less than
    /// `before` (`""`: no bound), greatest key first.
    async fn kv_range_back(
        &self,
        prefix: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The greatest key starting with `prefix`, with its value.
    async fn kv_last(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Ok(self.kv_range_back(prefix, "", 1).await?.pop())
    }

    /// Every key starting with `prefix`, with its value.
    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Holds the lock `name` across every process of the store until the
    /// lease is dropped. A single-process store needs none (its callers
    /// serialise in memory) and hands out an empty lease.
    async fn lock(&self, _name: &str) -> Result<Lease, StoreError> {
        Ok(Lease::none())
    }

    /// [`Records::lock`] if nobody holds it now; `None` if another process
    /// does.
    async fn try_lock(&self, _name: &str) -> Result<Option<Lease>, StoreError> {
        Ok(Some(Lease::none()))
    }

    /// Tells every process of the store that the records named by `change`
    /// changed (see [`Records::changes`]).
    async fn announce(&self, _change: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// The changes announced by any process; an empty string means some
    /// may have been missed (reload everything).
    fn changes(&self) -> broadcast::Receiver<String> {
        broadcast::channel(1).1
    }

    /// Publishes an ephemeral signal for `uid` to every process of the
    /// store, this one included (see [`Records::signals`]): `false` if the
    /// store has no other process, and the caller hands it over itself.
    /// Nothing is stored.
    async fn signal(&self, _uid: &Uid, _json: &[u8]) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// The signals published by any process, as `(uid, json)`; lossy.
    fn signals(&self) -> broadcast::Receiver<(Uid, Bytes)> {
        broadcast::channel(1).1
    }
}

/// A held [`Records::lock`]; released when dropped.
pub struct Lease(Option<Box<dyn FnOnce() + Send>>);

impl Lease {
    /// A lease that releases by calling `release`.
    pub fn new(release: impl FnOnce() + Send + 'static) -> Lease {
        Lease(Some(Box::new(release)))
    }

    /// A lease with nothing to release.
    pub fn none() -> Lease {
        Lease(None)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// Both halves, for the services that append events with their records
/// (messages, counters, group posts). Every store implements it.
pub trait Store: EventQueue + Records {}

impl<T: EventQueue + Records> Store for T {}

/// Housekeeping only a backend knows how to do, and what it says of
/// itself.
#[async_trait]
pub trait Upkeep: Send + Sync + 'static {
    /// One maintenance pass (retention, records past their deadline, state
    /// nobody uses); returns how many events or records it removed.
    async fn maintain(&self, retention: Retention) -> Result<u64, StoreError>;

    /// How durable an acknowledged write is, for `/healthz`.
    fn durability(&self) -> String;

    /// Why the store cannot serve now, if it has not answered for a few
    /// seconds (for `/healthz`).
    fn unreachable(&self) -> Option<String> {
        None
    }

    /// Gives records a store carried over from herald 0.5 kept without a
    /// retention deadline (keys under each prefix) one from now, once per
    /// store; returns how many. Only sled can hold such records.
    async fn index_legacy_records(&self, prefixes: &[(&str, Duration)]) -> Result<u64, StoreError> {
        let _ = prefixes;
        Ok(0)
    }
}

/// One backend's whole family, as the services see it: the queue and the
/// records, who is online, the token buckets, and its upkeep. One process
/// (sled) keeps presence and buckets in memory, a cluster (Redis) shares
/// all of it; nothing above asks which.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub presence: Arc<dyn PresenceTable>,
    pub buckets: Arc<dyn TokenBuckets>,
    pub upkeep: Arc<dyn Upkeep>,
    pub nodes: Arc<dyn NodeBus>,
}
