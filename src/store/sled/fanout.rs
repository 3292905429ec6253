//! Fan-out records: one write for an event that many users get.
//!
//! A publish to 10 000 users used to cost 10 000 inserts into the `events`
//! tree before the first of them could be acknowledged, and sled takes
//! about 10 µs for each. Now a chunk of appends that share one type and one
//! body is written as ONE record in the `fanout` tree: the body once, then
//! each recipient's (user id, seq). When the group commit has made the
//! record durable, every recipient's event is durable, and readers get it
//! from the queue's memory (its `pending` events, and the newest few).
//!
//! The records are then expanded into the `events` tree by a thread at
//! nice 19, so deliveries come first. It lets records gather for
//! [`GATHER`], then writes what each user got in all of them as ONE key per
//! run of consecutive seqs (see `values.rs`): a sustained fan-out costs a
//! few inserts per user and second, not one per event. An event leaves its
//! queue's `pending` only once its key is in `events`; when every key of a
//! record is durable, the record is removed. A crash before that leaves the
//! record, and opening the store expands it again (skipping what is stored
//! or what retention trimmed since), so no event of a record is lost or
//! comes back. Past [`MAX_PENDING`] events waiting, a fan-out append waits
//! for the thread to catch up, so memory stays bounded under a load that
//! never lets up.
//!
//! A user's seqs are assigned and the record inserted with every recipient
//! locked (in id order, like atomic appends), so a later event of any of
//! them enters sled's log after the record: a flush that makes the later
//! event durable makes the record durable too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{be_u64, event_key, values, Marks, Meta, SledStore};
use crate::store::commit::{GroupCommit, Waiter};
use crate::store::event::{event_json, event_json_with, event_tail};
use crate::store::user_queue::UserQueue;
use crate::store::{Append, StoreError};

/// Chunks smaller than this are inserted event by event.
pub(super) const MIN_RECIPIENTS: usize = 16;

/// Most events waiting for expansion (about 230 bytes of memory each);
/// past it a fan-out append waits for the thread to catch up.
const MAX_PENDING: usize = 1_000_000;

/// Whether every append of `chunk` has the type and body of the first.
pub(super) fn shares_body(chunk: &[Append]) -> bool {
    let Some(first) = chunk.first() else {
        return false;
    };
    chunk
        .iter()
        .all(|a| a.kind == first.kind && a.data.get() == first.data.get())
}

/// `ts ++ len ++ type ++ len ++ data ++ count ++ (user id, seq)…`, integers
/// big-endian.
pub(super) fn encode(ts: u64, kind: &str, data: &str, entries: &[(u64, u64)]) -> Vec<u8> {
    let mut record = Vec::with_capacity(20 + kind.len() + data.len() + 16 * entries.len());
    record.extend_from_slice(&ts.to_be_bytes());
    for part in [kind.as_bytes(), data.as_bytes()] {
        record.extend_from_slice(&(part.len() as u32).to_be_bytes());
        record.extend_from_slice(part);
    }
    record.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, seq) in entries {
        record.extend_from_slice(&id.to_be_bytes());
        record.extend_from_slice(&seq.to_be_bytes());
    }
    record
}

struct Record<'a> {
    ts: u64,
    kind: &'a str,
    data: &'a str,
    entries: Vec<(u64, u64)>,
}

fn decode(record: &[u8]) -> Option<Record<'_>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head)
    }
    let mut rest = record;
    let ts = be_u64(take(&mut rest, 8)?);
    let mut text = || -> Option<&str> {
        let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        std::str::from_utf8(take(&mut rest, len)?).ok()
    };
    let (kind, data) = (text()?, text()?);
    let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    let mut entries = Vec::with_capacity(count.min(rest.len() / 16));
    for _ in 0..count {
        let pair = take(&mut rest, 16)?;
        entries.push((be_u64(&pair[..8]), be_u64(&pair[8..])));
    }
    Some(Record {
        ts,
        kind,
        data,
        entries,
    })
}

/// Expands the records a crash left (after `open`, before anything reads):
/// each event not trimmed since goes into `events`. The caller flushes,
/// then clears the records. Returns how many events were written.
pub(super) fn recover(
    fanout: &sled::Tree,
    events: &sled::Tree,
    meta: &sled::Tree,
) -> Result<usize, StoreError> {
    let mut trimmed: HashMap<u64, u64> = HashMap::new();
    let mut written = 0;
    for item in fanout.iter() {
        let (key, raw) = item?;
        let Some(record) = decode(&raw) else {
            tracing::error!("fan-out record {} is corrupt; skipped", be_u64(&key));
            continue;
        };
        for &(id, seq) in &record.entries {
            let below = match trimmed.get(&id) {
                Some(&t) => t,
                None => {
                    let t = meta
                        .get(id.to_be_bytes())?
                        .and_then(|raw| serde_json::from_slice::<Meta>(&raw).ok())
                        .map_or(0, |m| m.trimmed);
                    *trimmed.entry(id).or_insert(t)
                }
            };
            if seq <= below || values::is_stored(events, id, seq)? {
                continue;
            }
            let json = event_json(seq, record.kind, record.ts, record.data);
            events.insert(
                event_key(id, seq),
                values::single(record.ts, json.as_bytes()),
            )?;
            written += 1;
        }
    }
    Ok(written)
}

impl SledStore {
    /// Like [`Self::insert`] for each of `chunk` (one type and one body
    /// for many users), as one fan-out record (see `fanout.rs`): every
    /// recipient is locked in id order while its seq is assigned and the
    /// record inserted. Pushes the seqs to `seqs`; returns the marks to
    /// commit.
    pub(super) fn insert_fanout(
        &self,
        chunk: &[Append],
        ts: u64,
        seqs: &mut Vec<u64>,
    ) -> Result<Marks, StoreError> {
        let queues = chunk
            .iter()
            .map(|append| self.queue(&append.uid))
            .collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..queues.len()).collect();
        order.sort_by_key(|&i| queues[i].id);
        // One guard per distinct user; `slot[i]` is the guard of chunk[i].
        let mut guards = Vec::new();
        let mut slot = vec![0; queues.len()];
        for (n, &i) in order.iter().enumerate() {
            if n == 0 || queues[order[n - 1]].id != queues[i].id {
                guards.push(queues[i].state());
            }
            slot[i] = guards.len() - 1;
        }
        let (kind, data) = (chunk[0].kind.as_str(), chunk[0].data.get());
        let tail = event_tail(kind, ts, data);
        let mut taken = vec![0; guards.len()];
        let mut entries = Vec::with_capacity(queues.len());
        let mut events = Vec::with_capacity(queues.len());
        for (q, &g) in queues.iter().zip(&slot) {
            let seq = guards[g].next_seq + taken[g];
            taken[g] += 1;
            entries.push((q.id, seq));
            events.push(Bytes::from(event_json_with(seq, &tail)));
        }
        let key = self.db.generate_id()?;
        self.fanout
            .insert(key.to_be_bytes(), encode(ts, kind, data, &entries))?;
        // Written: now the seqs are taken and the events readable (up to
        // each user's durable mark).
        for (st, n) in guards.iter_mut().zip(taken) {
            st.next_seq += n;
        }
        let mut bytes = 0;
        for ((&g, &(_, seq)), json) in slot.iter().zip(&entries).zip(&events) {
            bytes += json.len() as u64;
            guards[g].remember(seq, json.clone());
            guards[g].pending.push((seq, json.clone()));
        }
        drop(guards);
        self.metrics.appended_bytes.inc_by(bytes);
        let mut marks: Marks = Vec::with_capacity(queues.len());
        let mut expand = Vec::with_capacity(queues.len());
        for ((q, (_, seq)), json) in queues.into_iter().zip(entries).zip(events) {
            seqs.push(seq);
            marks.push((q.clone(), seq));
            expand.push((q, seq, json));
        }
        #[cfg(test)]
        if self.hold_expansion.load(Ordering::Relaxed) {
            return Ok(marks);
        }
        self.expander.submit(Job {
            key,
            ts,
            entries: expand,
        });
        Ok(marks)
    }
}

#[cfg(test)]
impl SledStore {
    /// Expands what `users` have waiting (appended while `hold_expansion`)
    /// as ONE job with `ts`, as the thread would after gathering records.
    pub(super) fn expand_held(&self, users: &[crate::uid::Uid], ts: u64) -> Option<bool> {
        let mut entries = Vec::new();
        for uid in users {
            let q = self.queue(uid).ok()?;
            let pending = q.state().pending.clone();
            entries.extend(
                pending
                    .into_iter()
                    .map(|(seq, json)| (q.clone(), seq, json)),
            );
        }
        let job = Job {
            key: 0,
            ts,
            entries,
        };
        expand(&[job], &self.events, &AtomicBool::new(false))
    }
}

/// A record to expand: its key, its ts, and per recipient the queue, the
/// seq and the event JSON.
pub(super) struct Job {
    pub key: u64,
    pub ts: u64,
    pub entries: Vec<(Arc<UserQueue>, u64, Bytes)>,
}

/// What waits for expansion.
#[derive(Default)]
struct Backlog {
    /// Events submitted and not expanded yet.
    events: AtomicUsize,
    /// Wakes appends waiting for room after each expansion.
    expanded: tokio::sync::Notify,
}

/// The expanding thread.
pub(super) struct Expander {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    backlog: Arc<Backlog>,
    /// The store is closing: stop at once (the records stay for the next
    /// open).
    stop: Arc<AtomicBool>,
}

impl Expander {
    pub fn start(
        events: sled::Tree,
        fanout: sled::Tree,
        commit: Arc<GroupCommit>,
    ) -> std::io::Result<Expander> {
        let (jobs, queue) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (backlog.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("herald-expand".into())
            .spawn(move || expand_loop(&queue, &events, &fanout, &commit, &counter, &stopped))?;
        Ok(Expander {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            backlog,
            stop,
        })
    }

    /// Waits until `count` more events may wait for expansion: under a
    /// load that keeps the core busy for long, appends slow down to the
    /// pace of expansion instead of taking all memory.
    pub async fn room(&self, count: usize) {
        loop {
            let expanded = self.backlog.expanded.notified();
            tokio::pin!(expanded);
            expanded.as_mut().enable();
            if self.backlog.events.load(Ordering::Relaxed) + count <= MAX_PENDING {
                return;
            }
            expanded.await;
        }
    }

    /// Hands `job` to the thread. Without a thread (the store is closing)
    /// the record stays, and the next open expands it.
    pub fn submit(&self, job: Job) {
        let count = job.entries.len();
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jobs) = jobs.as_ref() {
            self.backlog.events.fetch_add(count, Ordering::Relaxed);
            if jobs.send(job).is_err() {
                self.backlog.events.fetch_sub(count, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Expander {
    /// Stops the thread; what it had not expanded is expanded at the next
    /// open.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// How long the thread lets records gather before it expands them: what
/// one user got in the records of this window becomes ONE key (a run).
const GATHER: Duration = Duration::from_millis(100);

/// Most events one expansion takes.
const MOST_PER_EXPANSION: usize = 100_000;

/// Runs are cut at this size, far below what sled would move out of its
/// log into a blob file (which it does not fsync).
const RUN_BYTES: usize = 32 << 10;

fn expand_loop(
    jobs: &mpsc::Receiver<Job>,
    events: &sled::Tree,
    fanout: &sled::Tree,
    commit: &GroupCommit,
    backlog: &Backlog,
    stop: &AtomicBool,
) {
    lowest_priority();
    while let Ok(first) = jobs.recv() {
        std::thread::sleep(GATHER);
        let mut count = first.entries.len();
        let mut batch = vec![first];
        while count < MOST_PER_EXPANSION {
            let Ok(job) = jobs.try_recv() else { break };
            count += job.entries.len();
            batch.push(job);
        }
        let Some(complete) = expand(&batch, events, stop) else {
            return;
        };
        backlog.events.fetch_sub(count, Ordering::Relaxed);
        backlog.expanded.notify_waiters();
        let keys: Vec<u64> = batch.into_iter().map(|job| job.key).collect();
        if !complete {
            continue;
        }
        // The records go once every key they stood for is durable.
        let (done, durable) = oneshot::channel();
        if commit
            .submit(Waiter {
                marks: Vec::new(),
                done,
            })
            .is_err()
        {
            return;
        }
        if let Ok(Ok(())) = durable.blocking_recv() {
            for key in keys {
                if let Err(e) = fanout.remove(key.to_be_bytes()) {
                    tracing::error!("removing an expanded fan-out record: {e}");
                }
            }
        }
    }
}

/// Writes the events of `batch` into `events`: per user, one key per run
/// of consecutive seqs (cut at [`RUN_BYTES`]), each taken out of the
/// queue's `pending` once written. Returns whether every key was written;
/// `None` if the store is closing (the records stay for the next open).
fn expand(batch: &[Job], events: &sled::Tree, stop: &AtomicBool) -> Option<bool> {
    type Entry<'a> = (u64, u64, &'a Bytes);
    let mut by_user: HashMap<u64, (&Arc<UserQueue>, Vec<Entry<'_>>)> = HashMap::new();
    for job in batch {
        for (q, seq, json) in &job.entries {
            let (_, list) = by_user.entry(q.id).or_insert_with(|| (q, Vec::new()));
            list.push((*seq, job.ts, json));
        }
    }
    let mut complete = true;
    for (q, mut list) in by_user.into_values() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        list.sort_unstable_by_key(|e| e.0);
        let mut rest = &list[..];
        while !rest.is_empty() {
            let mut len = 1;
            let mut bytes = rest[0].2.len();
            while let Some(next) = rest.get(len) {
                if next.0 != rest[len - 1].0 + 1 || bytes + next.2.len() > RUN_BYTES {
                    break;
                }
                bytes += next.2.len();
                len += 1;
            }
            let (run, after) = rest.split_at(len);
            rest = after;
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            let value = match run {
                [(_, ts, json)] => values::single(*ts, json),
                _ => values::run(run.iter().map(|(_, ts, json)| (*ts, &json[..]))),
            };
            let mut st = q.state();
            match events.insert(event_key(q.id, first), value) {
                // Readers find them in sled from now on.
                Ok(_) => st.pending.retain(|(s, _)| !(first..=last).contains(s)),
                Err(e) => {
                    tracing::error!(
                        "expanding fan-out records: {e}; they stay in memory and on disk"
                    );
                    complete = false;
                }
            }
        }
    }
    Some(complete)
}

/// Makes the calling thread the least favoured by the scheduler (nice 19:
/// about 1.5% of a core next to busy threads). Not `SCHED_IDLE`: this
/// thread takes sled's internal locks, and one that never ran while the
/// core was busy would stall every flush waiting on them.
fn lowest_priority() {
    // SAFETY: setpriority on the calling thread (Linux: who = 0).
    let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if set != 0 {
        tracing::debug!(
            "nice 19 not available for the expanding thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::sled::{SledOptions, SledStore};
    use crate::store::{EventQueue, PageLimit};
    use crate::uid::Uid;

    fn open(dir: &std::path::Path) -> SledStore {
        SledStore::open(dir, SledOptions::default(), Arc::new(Metrics::new())).unwrap()
    }

    fn users(n: usize) -> Vec<Uid> {
        (0..n)
            .map(|i| Uid::parse(&format!("u{i}")).unwrap())
            .collect()
    }

    /// One event to each of `to`, as a publish makes it.
    fn to_all(to: &[Uid], data: u64) -> Vec<Append> {
        to.iter()
            .map(|u| Append::new(u.clone(), "notice", &data))
            .collect()
    }

    async fn read_all(store: &SledStore, uid: &Uid, after: u64, limit: PageLimit) -> Vec<u64> {
        let page = store.read(uid, after, limit).await.unwrap();
        page.events
            .iter()
            .map(|e| crate::store::event_seq(e).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn unexpanded_events_are_read_in_order_with_stored_ones_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.hold_expansion.store(true, Ordering::Relaxed);
        let to = users(MIN_RECIPIENTS);
        // u0 gets seqs 1..=12: odd ones alone (stored per event), even
        // ones with everybody (one record each, never expanded here).
        for n in 1..=12u64 {
            let batch = if n % 2 == 1 {
                vec![Append::new(to[0].clone(), "notice", &n)]
            } else {
                to_all(&to, n)
            };
            store.append(batch).await.unwrap();
        }
        assert_eq!(store.fanout.len(), 6, "six records");
        let all = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        assert_eq!(
            read_all(&store, &to[0], 0, all).await,
            (1..=12).collect::<Vec<_>>()
        );
        // Pages cut at every size, from every cursor: the same sequence.
        for events in 1..=5 {
            let limit = PageLimit {
                events,
                bytes: 1 << 20,
            };
            let (mut cursor, mut got) = (0, Vec::new());
            loop {
                let page = read_all(&store, &to[0], cursor, limit).await;
                let Some(&last) = page.last() else { break };
                assert!(page.len() <= events);
                got.extend(page);
                cursor = last;
            }
            assert_eq!(got, (1..=12).collect::<Vec<_>>(), "pages of {events}");
        }
        assert_eq!(
            read_all(&store, &to[1], 0, all).await,
            vec![1, 2, 3, 4, 5, 6]
        );
        // A crash: the process ends with the records unexpanded.
        drop(store);
        let store = open(dir.path());
        assert!(store.fanout.is_empty(), "expanded at open");
        assert_eq!(
            read_all(&store, &to[0], 0, all).await,
            (1..=12).collect::<Vec<_>>()
        );
        let page = store.read(&to[1], 5, all).await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&page.events[0]).unwrap();
        assert_eq!(
            (event["seq"].clone(), event["data"].clone()),
            (6.into(), 12.into())
        );
        // Seqs go on after the recovered ones.
        let seqs = store.append(to_all(&to, 13)).await.unwrap();
        assert_eq!((seqs[0], seqs[1]), (13, 7));
    }

    #[tokio::test]
    async fn a_user_twice_in_one_record_gets_two_seqs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.hold_expansion.store(true, Ordering::Relaxed);
        let mut to = users(MIN_RECIPIENTS);
        to.insert(3, to[0].clone());
        let seqs = store.append(to_all(&to, 7)).await.unwrap();
        assert_eq!((seqs[0], seqs[3], seqs[1]), (1, 2, 1));
        let all = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        assert_eq!(read_all(&store, &to[0], 0, all).await, vec![1, 2]);
        drop(store);
        let store = open(dir.path());
        assert_eq!(read_all(&store, &to[0], 0, all).await, vec![1, 2]);
        assert_eq!(store.append(to_all(&to[..1], 8)).await.unwrap(), vec![3]);
    }

    #[tokio::test]
    async fn records_are_expanded_and_removed_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let to = users(100);
        for n in 0..3 {
            store.append(to_all(&to, n)).await.unwrap();
        }
        let mut waited = Duration::ZERO;
        while !store.fanout.is_empty() && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        assert!(store.fanout.is_empty(), "records left after {waited:?}");
        for uid in &to {
            let q = store.queue(uid).unwrap();
            assert!(q.state().pending.is_empty());
            let stored = values::stored(&store.events, q.id, 1, 3).unwrap();
            let seqs: Vec<u64> = stored.map(|e| e.unwrap().0).collect();
            assert_eq!(seqs, vec![1, 2, 3]);
        }
    }

    #[tokio::test]
    async fn one_expansion_writes_a_user_one_key_per_run_of_consecutive_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.hold_expansion.store(true, Ordering::Relaxed);
        let to = users(MIN_RECIPIENTS);
        // u0: 1 and 2 with everybody, 3 alone (its own key at once), 4..=8
        // with everybody, the last three 12 KB each.
        store.append(to_all(&to, 1)).await.unwrap();
        store.append(to_all(&to, 2)).await.unwrap();
        store.append(to_all(&to[..1], 3)).await.unwrap();
        store.append(to_all(&to, 4)).await.unwrap();
        store.append(to_all(&to, 5)).await.unwrap();
        let big = "x".repeat(12 << 10);
        for _ in 6..=8 {
            let batch = to.iter().map(|u| Append::new(u.clone(), "notice", &big));
            store.append(batch.collect()).await.unwrap();
        }
        assert_eq!(store.expand_held(&to, 1), Some(true));
        let keys = |uid: &Uid| {
            let q = store.queue(uid).unwrap();
            assert!(q.state().pending.is_empty(), "all out of memory");
            let keys = store.events.scan_prefix(q.id.to_be_bytes()).keys();
            keys.map(|k| be_u64(&k.unwrap()[8..])).collect::<Vec<_>>()
        };
        // Runs: 1..=2 and 4..=7, cut before 8 (three big events would pass
        // 32 KiB); 3 alone. u1 got only the records: 1..=6, then 7.
        assert_eq!(keys(&to[0]), vec![1, 3, 4, 8]);
        assert_eq!(keys(&to[1]), vec![1, 7]);
        let all = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        assert_eq!(
            read_all(&store, &to[0], 0, all).await,
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(read_all(&store, &to[1], 3, all).await, vec![4, 5, 6, 7]);
        // Each event once, with its own seq and data, from any cursor.
        for after in 0..8 {
            let page = store.read(&to[0], after, all).await.unwrap();
            for (n, json) in page.events.iter().enumerate() {
                let event: serde_json::Value = serde_json::from_slice(json).unwrap();
                assert_eq!(event["seq"], after + 1 + n as u64);
            }
        }
        // Reopened, the next seq follows the last run.
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.append(to_all(&to[..1], 9)).await.unwrap(), vec![9]);
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_a_torn_one_to_nothing() {
        let entries = vec![(1, 7), (u64::MAX, 1), (42, u64::MAX)];
        let record = encode(99, "notice", r#"{"a":"é"}"#, &entries);
        let decoded = decode(&record).unwrap();
        assert_eq!(
            (decoded.ts, decoded.kind, decoded.data, decoded.entries),
            (99, "notice", r#"{"a":"é"}"#, entries)
        );
        for cut in 0..record.len() {
            assert!(decode(&record[..cut]).is_none(), "cut at {cut}");
        }
    }
}
