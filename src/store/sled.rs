//! The embedded default store: user queues in one sled database.
//!
//! Layout (all keys fixed width, so one user's events form one contiguous,
//! ordered key range and no uid byte can collide with a separator):
//! - tree `users`:  uid → user id (u64 BE), assigned once by `generate_id`;
//! - tree `meta`:   user id → JSON `{uid, acked, trimmed}`;
//! - tree `events`: user id (u64 BE) ++ seq (u64 BE) → ts (u64 BE) ++ event
//!   JSON, or a run of events from that seq on (see `values.rs`);
//! - tree `once`:   idempotency key → tag (u64 BE), written in one sled
//!   transaction with the event it guards;
//! - tree `kv`:     small records of the IM features (friend lists, group
//!   members, message records), JSON;
//! - tree `expiry`: deadline (ms, u64 BE) ++ tree tag ++ key → (): what to
//!   remove when (see `expiry.rs`);
//! - tree `shared`: record id (u64 BE) → one body and many (user id, seq):
//!   an event that many users get, written once (see `fanout.rs`); their
//!   keys in `events` hold references to it;
//! - tree `fanout`: record id → (): the shared records whose references are
//!   not written yet.
//!
//! Seqs are assigned and inserted (as a key, or in a fan-out record) under
//! the user's lock, so what holds a user's events enters sled's log in seq
//! order; readers only read up to the user's durable mark, which the commit
//! thread raises after the flush that covers them. After a crash the
//! references of the records left unexpanded are written first, then the
//! next seq is one past the highest key (or past `trimmed`), so a seq any
//! client saw is never handed out again.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use self::expander::Expander;
use super::commit::{DurableMark, GroupCommit, Waiter};
use super::event::{event_json, gap_event, now_ms};
use super::user_queue::{QueueState, UserQueue};
use super::{
    Acked, Append, DurableSink, Epoch, EventQueue, Follow, IdempotentAppend, Page, PageLimit,
    Retention, StoreError,
};
use crate::metrics::Metrics;
use crate::uid::Uid;
use crate::util::SharedMap;

/// Tuning of the sled store.
#[derive(Debug, Clone, Copy)]
pub struct SledOptions {
    /// sled's page cache size.
    pub cache_bytes: u64,
    /// Extra wait of the commit thread before each flush (0 = flush as soon
    /// as anything waits).
    pub linger: Duration,
    /// Most users one retention pass visits; the next pass goes on from
    /// there, so a pass costs the same with a thousand users or millions.
    pub trim_slice: usize,
    /// How long an idempotency key of [`EventQueue::append_once`] is kept.
    pub once_ttl: Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: 128 << 20,
            linger: Duration::ZERO,
            trim_slice: 10_000,
            once_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// The sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    users: sled::Tree,
    meta: sled::Tree,
    events: sled::Tree,
    once: sled::Tree,
    kv: sled::Tree,
    expiry: sled::Tree,
    shared: sled::Tree,
    fanout: sled::Tree,
    once_ttl: Duration,
    queues: SharedMap<Uid, Arc<UserQueue>>,
    commit: Arc<GroupCommit>,
    expander: Expander,
    metrics: Arc<Metrics>,
    trim_slice: usize,
    /// Made when the store was created: a recreated store has another.
    epoch: Epoch,
    /// The meta key the last retention pass stopped at (`None`: start over).
    trim_from: Mutex<Option<sled::IVec>>,
    /// Makes every append fail, for the tests of what a failed append
    /// leaves behind.
    #[cfg(test)]
    fail_appends: AtomicBool,
    /// Fan-out records left unexpanded, as a crash would leave them (see
    /// `hold_expansion`).
    #[cfg(test)]
    held_jobs: Mutex<Option<Vec<expander::Job>>>,
}

#[derive(Serialize, Deserialize, Default)]
struct Meta {
    uid: String,
    acked: u64,
    trimmed: u64,
}

/// The kv key of the store's epoch.
const EPOCH_KEY: &str = "herald/epoch";

/// Per user queue, the highest seq a commit makes durable.
type Marks = Vec<(Arc<dyn DurableMark>, u64)>;

/// Appends of one batch are committed in chunks of this many, so the first
/// recipients of a large publish are served while the rest is written.
const APPEND_CHUNK: usize = 1024;

/// A batch larger than [`APPEND_CHUNK`] starts with a chunk this small,
/// made durable before the rest is written: its recipients are served
/// one flush after the request, not after the next chunk is written too
/// (the first subscriber of a 10 000-way fan-out: 10–14 → 7–8 ms).
const FIRST_CHUNK: usize = 128;

fn event_key(id: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&id.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn stored_event(seq: u64, append: &Append, ts: u64) -> Vec<u8> {
    values::single(
        ts,
        event_json(seq, &append.kind, ts, append.data.get()).as_bytes(),
    )
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(buf)
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(
        dir: &Path,
        options: SledOptions,
        metrics: Arc<Metrics>,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            // Items above segment_size/4 become separate blob files, which
            // sled does not fsync; 4 MiB segments keep every event (≤ the
            // body limit) inline in the log that the commit thread syncs.
            .segment_size(4 << 20)
            .open()?;
        // What survived a crash is now made durable before anything reads it.
        db.flush()?;
        let log = OpenOptions::new().read(true).open(dir.join("db"))?;
        log.sync_data()?;
        let (events, meta, shared, fanout) = (
            db.open_tree("events")?,
            db.open_tree("meta")?,
            db.open_tree("shared")?,
            db.open_tree("fanout")?,
        );
        if !fanout.is_empty() {
            let written = fanout::recover(&fanout, &shared, &events, &meta)?;
            db.flush()?;
            log.sync_data()?;
            // Only once what they stood for is durable.
            fanout.clear()?;
            tracing::warn!("expanded the fan-out records a crash left: {written} events");
        }
        let commit = Arc::new(GroupCommit::start(
            db.clone(),
            log,
            options.linger,
            metrics.clone(),
        )?);
        let expander = Expander::start(events.clone(), fanout.clone(), commit.clone())?;
        let kv = db.open_tree("kv")?;
        let stored = kv.get(EPOCH_KEY)?;
        let epoch = match stored.and_then(|e| Epoch::parse(&String::from_utf8_lossy(&e))) {
            Some(epoch) => epoch,
            None => {
                let epoch = Epoch::random();
                kv.insert(EPOCH_KEY, epoch.to_string().as_bytes())?;
                db.flush()?;
                epoch
            }
        };
        Ok(SledStore {
            epoch,
            users: db.open_tree("users")?,
            meta,
            events,
            once: db.open_tree("once")?,
            kv,
            expiry: db.open_tree("expiry")?,
            shared,
            fanout,
            once_ttl: options.once_ttl,
            db,
            queues: SharedMap::default(),
            commit,
            expander,
            metrics,
            trim_slice: options.trim_slice.max(1),
            trim_from: Mutex::new(None),
            #[cfg(test)]
            fail_appends: AtomicBool::new(false),
            #[cfg(test)]
            held_jobs: Mutex::new(None),
        })
    }

    /// One maintenance pass, run every `--trim-interval-ms` off the async
    /// workers: removes the records whose deadline passed, applies
    /// `retention` to the next slice of users, drops the shared records
    /// nobody may read any more, and drops the in-memory state of queues
    /// nobody used since the last pass (it is reloaded when needed).
    /// Returns how many events retention dropped.
    pub fn maintain(&self, retention: Retention) -> Result<u64, StoreError> {
        self.expire_due()?;
        let trimmed = self.trim_slice_of_users(retention)?;
        self.drop_passed_records()?;
        self.forget_idle_queues();
        Ok(trimmed)
    }

    /// From now on every append fails (`true`) or works again.
    #[cfg(test)]
    pub(crate) fn fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::Relaxed);
    }

    /// The user's queue, marked as used (see `forget_idle_queues` in `retention.rs`).
    fn queue(&self, uid: &Uid) -> Result<Arc<UserQueue>, StoreError> {
        let q = self.queue_unmarked(uid)?;
        q.touched.store(true, Ordering::Relaxed);
        Ok(q)
    }

    /// The user's queue from memory, else loaded from disk.
    fn queue_unmarked(&self, uid: &Uid) -> Result<Arc<UserQueue>, StoreError> {
        if let Some(q) = self.queues.get(uid) {
            return Ok(q.clone());
        }
        let entry = self
            .queues
            .entry(uid.clone())
            .or_try_insert_with(|| self.load(uid))?;
        Ok(entry.clone())
    }

    /// Loads a user's queue state from disk, creating the user if new.
    fn load(&self, uid: &Uid) -> Result<Arc<UserQueue>, StoreError> {
        let (id, meta) = match self.users.get(uid.as_str())? {
            Some(id) => {
                let id = be_u64(&id);
                let meta = match self.meta.get(id.to_be_bytes())? {
                    Some(raw) => Some(
                        serde_json::from_slice(&raw)
                            .map_err(|e| StoreError::Io(format!("corrupt meta of {uid}: {e}")))?,
                    ),
                    None => None,
                };
                (id, meta)
            }
            None => {
                let id = self.db.generate_id()?;
                self.users.insert(uid.as_str(), &id.to_be_bytes())?;
                (id, None)
            }
        };
        // A user without a meta record gets one (retention finds users by it);
        // a queue reloaded after it was forgotten rewrites nothing.
        let new_meta = meta.is_none();
        let meta: Meta = meta.unwrap_or_default();
        let head = values::last_stored(&self.events, id)?.max(meta.trimmed);
        let queue = UserQueue {
            id,
            uid: uid.clone(),
            state: Mutex::new(QueueState {
                next_seq: head + 1,
                acked: meta.acked,
                trimmed: meta.trimmed,
                recent: VecDeque::new(),
                pending: Vec::new(),
            }),
            durable: watch::channel(head).0,
            touched: AtomicBool::new(true),
            directs: Mutex::new(Vec::new()),
        };
        if new_meta {
            self.write_meta(&queue, &queue.state())?;
        }
        Ok(Arc::new(queue))
    }

    /// Persists a queue's acked/trimmed marks; call with its lock held so
    /// writes of one user reach the log in order.
    fn write_meta(&self, q: &UserQueue, st: &QueueState) -> Result<(), StoreError> {
        let meta = Meta {
            uid: q.uid.to_string(),
            acked: st.acked,
            trimmed: st.trimmed,
        };
        let raw = serde_json::to_vec(&meta).map_err(|e| StoreError::Io(e.to_string()))?;
        self.meta.insert(q.id.to_be_bytes(), raw)?;
        Ok(())
    }
}

/// A store in `dir` with default options, for in-process tests.
#[cfg(test)]
pub(crate) fn open_for_tests(dir: &Path) -> Arc<SledStore> {
    let metrics = Arc::new(Metrics::new());
    Arc::new(SledStore::open(dir, SledOptions::default(), metrics).expect("a store in a temp dir"))
}

mod expander;
mod expiry;
mod fanout;
mod queue;
mod reads;
mod records;
mod retention;
mod upkeep;
mod values;
mod writes;
