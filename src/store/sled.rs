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
//! - tree `fanout`: record id (u64 BE) → one body and many (user id, seq):
//!   events that many users get, written once (see `fanout.rs`).
//!
//! Seqs are assigned and inserted (as a key, or in a fan-out record) under
//! the user's lock, so what holds a user's events enters sled's log in seq
//! order; readers only read up to the user's durable mark, which the commit
//! thread raises after the flush that covers them. After a crash the
//! records left are expanded first, then the next seq is one past the
//! highest key (or past `trimmed`), so a seq any client saw is never handed
//! out again.

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
    Acked, Append, Direct, Epoch, EventQueue, Follow, Once, Page, PageLimit, Retention, StoreError,
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
    /// How long an idempotency key of [`Store::append_once`] is kept.
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
    /// Leaves fan-out records unexpanded, as a crash would.
    #[cfg(test)]
    hold_expansion: AtomicBool,
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
        let (events, meta, fanout) = (
            db.open_tree("events")?,
            db.open_tree("meta")?,
            db.open_tree("fanout")?,
        );
        if !fanout.is_empty() {
            let written = fanout::recover(&fanout, &events, &meta)?;
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
            hold_expansion: AtomicBool::new(false),
        })
    }

    /// One maintenance pass, run every `--trim-interval-ms` off the async
    /// workers: removes the records whose deadline passed, applies
    /// `retention` to the next slice of users, and drops the in-memory
    /// state of queues nobody used since the last pass (it is reloaded when
    /// needed). Returns how many events retention dropped.
    pub fn maintain(&self, retention: Retention) -> Result<u64, StoreError> {
        self.expire_due()?;
        let trimmed = self.trim_slice_of_users(retention)?;
        self.forget_idle_queues();
        Ok(trimmed)
    }

    /// From now on every append fails (`true`) or works again.
    #[cfg(test)]
    pub(crate) fn fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::Relaxed);
    }

    /// The user's queue, marked as used (see [`Store::forget_idle`]).
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

    /// Inserts one event under the user's lock and returns its seq.
    fn insert(&self, q: &UserQueue, append: &Append, ts: u64) -> Result<u64, StoreError> {
        let mut st = q.state();
        let seq = st.next_seq;
        let value = stored_event(seq, append, ts);
        self.metrics.appended_bytes.inc_by(value.len() as u64 - 8);
        self.events.insert(event_key(q.id, seq), value.as_slice())?;
        st.next_seq += 1;
        st.remember(seq, Bytes::copy_from_slice(&value[8..]));
        Ok(seq)
    }

    /// Like [`Self::insert`] for each of `appends` (to the queues
    /// `queues`, one per distinct user), all in one atomic write: with
    /// `once = Some((key, tag))` only if `key` is new, in one transaction
    /// with recording `key → tag`; else as one sled batch. A crash keeps
    /// all of them or none. Returns the outcome and the seq of each append.
    fn insert_all(
        &self,
        queues: &[Arc<UserQueue>],
        appends: &[Append],
        once: Option<(&str, u64)>,
    ) -> Result<(Once, Vec<u64>), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if let Some((key, _)) = once {
            self.index_expiry(expiry::ONCE, key.as_bytes(), self.once_ttl)?;
        }
        // Locked in id order, so two calls over the same users cannot
        // deadlock; each user's keys still enter the log in seq order.
        let mut order: Vec<usize> = (0..queues.len()).collect();
        order.sort_by_key(|&i| queues[i].id);
        let mut locked: Vec<Option<std::sync::MutexGuard<'_, QueueState>>> =
            queues.iter().map(|_| None).collect();
        for &i in &order {
            locked[i] = Some(queues[i].state());
        }
        let mut states: Vec<_> = locked.into_iter().flatten().collect();
        let ts = now_ms();
        let seqs: Vec<u64> = states.iter().map(|st| st.next_seq).collect();
        let values: Vec<Vec<u8>> = appends
            .iter()
            .zip(&seqs)
            .map(|(append, &seq)| stored_event(seq, append, ts))
            .collect();
        let outcome = match once {
            Some((key, tag)) => {
                let outcome = (&self.once, &self.events).transaction(|(once, events)| {
                    // The key keeps the tag and the seqs appended: the
                    // first call's answer, for its retries.
                    if let Some(first) = once.get(key)? {
                        return Ok(Once::Duplicate {
                            tag: be_u64(&first),
                            seqs: first
                                .get(8..)
                                .unwrap_or_default()
                                .chunks(8)
                                .map(be_u64)
                                .collect(),
                        });
                    }
                    let record: Vec<u8> = std::iter::once(tag)
                        .chain(seqs.iter().copied())
                        .flat_map(u64::to_be_bytes)
                        .collect();
                    once.insert(key, record)?;
                    for ((q, &seq), value) in queues.iter().zip(&seqs).zip(&values) {
                        events.insert(&event_key(q.id, seq), value.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(Once::Appended {
                        seqs: seqs.clone(),
                    })
                });
                outcome.map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => StoreError::from(e),
                })?
            }
            None => {
                let mut batch = sled::Batch::default();
                for ((q, &seq), value) in queues.iter().zip(&seqs).zip(&values) {
                    batch.insert(&event_key(q.id, seq)[..], value.as_slice());
                }
                self.events.apply_batch(batch)?;
                Once::Appended { seqs: seqs.clone() }
            }
        };
        if let Once::Appended { .. } = outcome {
            for ((st, &seq), value) in states.iter_mut().zip(&seqs).zip(&values) {
                st.next_seq += 1;
                st.remember(seq, Bytes::copy_from_slice(&value[8..]));
            }
        }
        Ok((outcome, seqs))
    }

    /// [`Self::insert_all`] for `appends`, then waits until they are durable.
    async fn append_all(
        &self,
        appends: Vec<Append>,
        once: Option<(&str, u64)>,
    ) -> Result<(Once, Vec<u64>), StoreError> {
        let mut queues = Vec::with_capacity(appends.len());
        for append in &appends {
            let q = self.queue(&append.uid)?;
            if queues.iter().any(|other: &Arc<UserQueue>| other.id == q.id) {
                return Err(StoreError::Io(format!(
                    "two events for {} in one atomic append",
                    append.uid
                )));
            }
            queues.push(q);
        }
        if queues.is_empty() {
            return Err(StoreError::Io("an atomic append of nothing".into()));
        }
        let (outcome, seqs) = self.insert_all(&queues, &appends, once)?;
        let marks: Marks = match outcome {
            Once::Appended { .. } => {
                self.metrics.appends.inc_by(queues.len() as u64);
                queues
                    .into_iter()
                    .zip(seqs.iter().copied())
                    .map(|(q, seq)| (q as Arc<dyn DurableMark>, seq))
                    .collect()
            }
            // The first attempt may still be on its way to the disk.
            Once::Duplicate { .. } => Vec::new(),
        };
        self.wait_durable(marks).await?;
        Ok((outcome, seqs))
    }

    async fn wait_durable(&self, marks: Marks) -> Result<(), StoreError> {
        self.commit_later(marks)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queues `marks` for the next group commit; the receiver answers once
    /// they are durable (and visible).
    fn commit_later(
        &self,
        marks: Marks,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, durable) = oneshot::channel();
        self.commit.submit(Waiter { marks, done })?;
        Ok(durable)
    }

    /// The page of `q` after `after` (see [`EventQueue::read`]).
    fn read_queue(&self, q: &UserQueue, after: u64, limit: PageLimit) -> Result<Page, StoreError> {
        loop {
            if let Some(page) = self.read_once(q, after, limit)? {
                return Ok(page);
            }
        }
    }

    /// One read attempt; `None` if retention trimmed into the range meanwhile.
    fn read_once(
        &self,
        q: &UserQueue,
        after: u64,
        limit: PageLimit,
    ) -> Result<Option<Page>, StoreError> {
        let head = q.head();
        let (trimmed, pending) = {
            let st = q.state();
            if after >= st.trimmed {
                if let Some((events, cursor)) = st.recent_after(after, head, limit) {
                    return Ok(Some(Page {
                        events,
                        cursor,
                        head,
                        epoch: self.epoch,
                    }));
                }
            }
            // Taken before sled is read: an event leaves `pending` only
            // once it is in sled, so it is in one or the other (or both).
            // In seq order: no page takes more than its first few.
            let start = st.pending.partition_point(|(seq, _)| *seq <= after);
            let pending: Vec<(u64, Bytes)> = st.pending[start..]
                .iter()
                .take_while(|(seq, _)| *seq <= head)
                .take(limit.events.max(1))
                .cloned()
                .collect();
            (st.trimmed, pending)
        };
        let mut page = Page {
            events: Vec::new(),
            cursor: after,
            head,
            epoch: self.epoch,
        };
        let mut from = after;
        let mut bytes = 0;
        if after < trimmed {
            let gap = gap_event(after + 1, trimmed, now_ms());
            bytes += gap.len();
            page.events.push(gap);
            page.cursor = trimmed;
            from = trimmed;
        }
        if from < head {
            let pending: Vec<_> = pending.into_iter().filter(|(seq, _)| *seq > from).collect();
            // A stream behind a sustained fan-out reads events not expanded
            // yet: when they alone fill the page from `from` on, sled is
            // not read.
            let alone = pending.len() == limit.events.max(1)
                || pending.last().is_some_and(|(seq, _)| *seq == head);
            let alone = alone
                && (pending.iter().enumerate()).all(|(i, (seq, _))| *seq == from + 1 + i as u64);
            let stored = match alone {
                true => None,
                false => Some(values::stored(&self.events, q.id, from + 1, head)?),
            };
            let mut pending = pending.into_iter().peekable();
            // Both in seq order: merged, a seq in both once.
            let mut add = |seq: u64, json: Bytes| {
                if !limit.fits(page.events.len(), bytes, json.len()) {
                    return false;
                }
                bytes += json.len();
                page.cursor = seq;
                page.events.push(json);
                true
            };
            let mut full = false;
            'stored: for item in stored.into_iter().flatten() {
                let (seq, _, json) = item?;
                while let Some((first, _)) = pending.peek() {
                    if *first > seq {
                        break;
                    }
                    let (first, json) = pending.next().expect("peeked");
                    if first < seq && !add(first, json) {
                        full = true;
                        break 'stored;
                    }
                }
                if !add(seq, json) {
                    full = true;
                    break;
                }
            }
            if !full {
                for (seq, json) in pending {
                    if !add(seq, json) {
                        break;
                    }
                }
            }
        }
        Ok((q.state().trimmed <= from).then_some(page))
    }
}

#[async_trait]
impl EventQueue for SledStore {
    async fn append(&self, batch: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        #[cfg(test)]
        if self.fail_appends.load(Ordering::Relaxed) {
            return Err(StoreError::Io("injected append failure".into()));
        }
        let ts = now_ms();
        let mut seqs = Vec::with_capacity(batch.len());
        let mut commits = Vec::with_capacity(batch.len().div_ceil(APPEND_CHUNK) + 1);
        let first = if batch.len() > APPEND_CHUNK {
            FIRST_CHUNK
        } else {
            batch.len()
        };
        let (first, rest) = batch.split_at(first);
        for (n, chunk) in std::iter::once(first)
            .chain(rest.chunks(APPEND_CHUNK))
            .enumerate()
        {
            if !commits.is_empty() {
                // Let the deliveries of the chunks already committed run.
                tokio::task::yield_now().await;
            }
            let marks = if chunk.len() >= fanout::MIN_RECIPIENTS && fanout::shares_body(chunk) {
                self.expander.room(chunk.len()).await;
                self.insert_fanout(chunk, ts, &mut seqs)?
            } else {
                let mut marks: Marks = Vec::with_capacity(chunk.len());
                for append in chunk {
                    let q = self.queue(&append.uid)?;
                    let seq = self.insert(&q, append, ts)?;
                    seqs.push(seq);
                    marks.push((q, seq));
                }
                marks
            };
            self.metrics.appends.inc_by(marks.len() as u64);
            let durable = self.commit_later(marks)?;
            if n == 0 && !rest.is_empty() {
                durable.await.map_err(|_| StoreError::Closed)??;
            } else {
                commits.push(durable);
            }
        }
        for durable in commits {
            durable.await.map_err(|_| StoreError::Closed)??;
        }
        Ok(seqs)
    }

    async fn append_once(
        &self,
        key: &str,
        tag: u64,
        appends: Vec<Append>,
    ) -> Result<Once, StoreError> {
        Ok(self.append_all(appends, Some((key, tag))).await?.0)
    }

    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        Ok(self.append_all(appends, None).await?.1)
    }

    async fn next_id(&self) -> Result<u64, StoreError> {
        // generate_id starts at 0 and persists its high-water mark, so ids
        // stay unique across crashes; 0 is skipped to keep ids positive.
        Ok(self.db.generate_id()? + 1)
    }

    async fn read(&self, uid: &Uid, after: u64, limit: PageLimit) -> Result<Page, StoreError> {
        self.read_queue(&*self.queue(uid)?, after, limit)
    }

    async fn ack(&self, uid: &Uid, seq: u64) -> Result<Acked, StoreError> {
        let q = self.queue(uid)?;
        let head = q.head();
        let mut st = q.state();
        let before = st.acked;
        if seq > before && seq <= head {
            st.acked = seq;
            self.write_meta(&q, &st)?;
        }
        Ok(Acked {
            before,
            after: st.acked,
            head,
        })
    }

    async fn watch(&self, uid: &Uid) -> Result<watch::Receiver<u64>, StoreError> {
        Ok(self.queue(uid)?.durable.subscribe())
    }

    /// Keeps the queue itself: a followed queue stays in memory anyway (it
    /// has a receiver), and a read then skips the lookup by uid.
    async fn follow(&self, uid: &Uid) -> Result<Follow, StoreError> {
        let q = self.queue(uid)?;
        Ok(Follow {
            head: q.durable.subscribe(),
            queue: Some(q),
        })
    }

    fn attach(&self, follow: &Follow, direct: std::sync::Weak<dyn Direct>) -> bool {
        let Some(q) = follow.queue::<UserQueue>() else {
            return false;
        };
        let mut directs = q.directs.lock().unwrap_or_else(|e| e.into_inner());
        directs.retain(|d| d.strong_count() > 0);
        directs.push(direct);
        true
    }

    async fn read_followed(
        &self,
        uid: &Uid,
        follow: &Follow,
        after: u64,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        match follow.queue::<UserQueue>() {
            Some(q) => self.read_queue(q, after, limit),
            None => self.read(uid, after, limit).await,
        }
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.wait_durable(Vec::new()).await
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
mod records;
mod retention;
mod upkeep;
mod values;
