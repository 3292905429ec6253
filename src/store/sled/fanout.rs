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
//! The record is then expanded into the per-user keys of `events` by a
//! thread of the lowest priority (`SCHED_IDLE`: it runs when the core has
//! nothing else to do, so deliveries come first). An event leaves its
//! queue's `pending` only once its key is in `events`; when every key of a
//! record is durable, the record is removed. A crash before that leaves the
//! record, and opening the store expands it again (skipping what retention
//! trimmed since), so no event of a record is lost or comes back.
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

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{be_u64, event_key, stored_value, Marks, Meta, SledStore};
use crate::store::commit::{GroupCommit, Waiter};
use crate::store::event::event_json;
use crate::store::user_queue::UserQueue;
use crate::store::{Append, StoreError};

/// Chunks smaller than this are inserted event by event.
pub(super) const MIN_RECIPIENTS: usize = 16;

/// Most events waiting for expansion; past it appends insert per event
/// (a server kept busy never lets the idle-priority thread run).
const MAX_PENDING: usize = 200_000;

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
            let key = event_key(id, seq);
            if seq <= below || events.contains_key(key)? {
                continue;
            }
            let json = event_json(seq, record.kind, record.ts, record.data);
            events.insert(key, stored_value(record.ts, json.as_bytes()))?;
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
        let mut taken = vec![0; guards.len()];
        let mut entries = Vec::with_capacity(queues.len());
        let mut events = Vec::with_capacity(queues.len());
        for (q, &g) in queues.iter().zip(&slot) {
            let seq = guards[g].next_seq + taken[g];
            taken[g] += 1;
            entries.push((q.id, seq));
            events.push(Bytes::from(event_json(seq, kind, ts, data)));
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

/// A record to expand: its key, its ts, and per recipient the queue, the
/// seq and the event JSON.
pub(super) struct Job {
    pub key: u64,
    pub ts: u64,
    pub entries: Vec<(Arc<UserQueue>, u64, Bytes)>,
}

/// The expanding thread.
pub(super) struct Expander {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pending: Arc<AtomicUsize>,
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
        let pending = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (pending.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("herald-expand".into())
            .spawn(move || expand_loop(&queue, &events, &fanout, &commit, &counter, &stopped))?;
        Ok(Expander {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            pending,
            stop,
        })
    }

    /// Whether `count` more events may wait for expansion.
    pub fn has_room(&self, count: usize) -> bool {
        self.pending.load(Ordering::Relaxed) + count <= MAX_PENDING
    }

    /// Hands `job` to the thread. Without a thread (the store is closing)
    /// the record stays, and the next open expands it.
    pub fn submit(&self, job: Job) {
        let count = job.entries.len();
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jobs) = jobs.as_ref() {
            self.pending.fetch_add(count, Ordering::Relaxed);
            if jobs.send(job).is_err() {
                self.pending.fetch_sub(count, Ordering::Relaxed);
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

fn expand_loop(
    jobs: &mpsc::Receiver<Job>,
    events: &sled::Tree,
    fanout: &sled::Tree,
    commit: &GroupCommit,
    pending: &AtomicUsize,
    stop: &AtomicBool,
) {
    lowest_priority();
    while let Ok(job) = jobs.recv() {
        let mut complete = true;
        for (q, seq, json) in &job.entries {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let value = stored_value(job.ts, json);
            let mut st = q.state();
            match events.insert(event_key(q.id, *seq), value) {
                // Readers find it in sled from now on.
                Ok(_) => st.pending.retain(|(s, _)| s != seq),
                Err(e) => {
                    tracing::error!(
                        "expanding a fan-out record: {e}; it stays in memory and on disk"
                    );
                    complete = false;
                }
            }
        }
        pending.fetch_sub(job.entries.len(), Ordering::Relaxed);
        drop(job.entries);
        if !complete {
            continue;
        }
        // The record goes once every key it stood for is durable.
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
            if let Err(e) = fanout.remove(job.key.to_be_bytes()) {
                tracing::error!("removing an expanded fan-out record: {e}");
            }
        }
    }
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
            assert_eq!(store.events.scan_prefix(q.id.to_be_bytes()).count(), 3);
        }
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
