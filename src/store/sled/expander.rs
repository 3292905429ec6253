//! The thread that expands fan-out records (see `fanout.rs`) into
//! references in the per-user keys of the `events` tree.
//!
//! It runs at nice 19, so deliveries come first. It lets records gather
//! until none came for [`QUIET`] (at most [`GATHER`]), so that a fan-out's
//! deliveries are done before it starts, then writes the references each
//! user got in all of them as ONE key per run of consecutive seqs (see
//! `values.rs`): a sustained fan-out costs a few small inserts per user and
//! second, not one copy of the body per event. An event leaves its queue's
//! `pending` only once its key is in `events`; when every key of a record
//! is durable, the record's id leaves the `fanout` tree (the record stays
//! in `shared` for its readers). Past [`MAX_PENDING`] events waiting, a
//! fan-out append waits for the thread to catch up, so memory stays
//! bounded under a load that never lets up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{event_key, values};
use crate::store::commit::{GroupCommit, Waiter};
use crate::store::user_queue::UserQueue;

/// Most events waiting for expansion (about 230 bytes of memory each);
/// past it a fan-out append waits for the thread to catch up.
const MAX_PENDING: usize = 1_000_000;

/// A record to expand: its key, its ts, and per recipient the queue and
/// the seq.
pub(super) struct Job {
    pub key: u64,
    pub ts: u64,
    pub entries: Vec<(Arc<UserQueue>, u64)>,
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

/// The thread expands once no record came for this long: by then the
/// deliveries of a burst of fan-outs are done (10 000 take ~120 ms on one
/// core), and its work does not compete with them, even at nice 19.
const QUIET: Duration = Duration::from_millis(200);

/// Longest it lets records gather under a steady stream of them. What one
/// user got in the records of a window becomes ONE key (a run).
const GATHER: Duration = Duration::from_secs(1);

/// Most events one expansion takes.
const MOST_PER_EXPANSION: usize = 100_000;

/// Runs are cut at this many references (16 bytes each: 32 KiB), far
/// below what sled would move out of its log into a blob file (which it
/// does not fsync).
const RUN_EVENTS: usize = 2048;

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
        let until = Instant::now() + GATHER;
        let mut count = first.entries.len();
        let mut batch = vec![first];
        while count < MOST_PER_EXPANSION {
            let wait = QUIET.min(until.saturating_duration_since(Instant::now()));
            let Ok(job) = jobs.recv_timeout(wait) else {
                break;
            };
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

/// Writes the references of `batch` into `events`: per user, one key per
/// run of consecutive seqs (cut at [`RUN_EVENTS`]), each taken out of the
/// queue's `pending` once written. Returns whether every key was written;
/// `None` if the store is closing (the records stay for the next open).
fn expand(batch: &[Job], events: &sled::Tree, stop: &AtomicBool) -> Option<bool> {
    /// (seq, ts, record) of a reference.
    type Ref = (u64, u64, u64);
    let mut by_user: HashMap<u64, (&Arc<UserQueue>, Vec<Ref>)> = HashMap::new();
    for job in batch {
        for (q, seq) in &job.entries {
            let (_, list) = by_user.entry(q.id).or_insert_with(|| (q, Vec::new()));
            list.push((*seq, job.ts, job.key));
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
            while len < RUN_EVENTS && rest.get(len).is_some_and(|e| e.0 == rest[len - 1].0 + 1) {
                len += 1;
            }
            let (run, after) = rest.split_at(len);
            rest = after;
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            let value = values::refs(run.iter().map(|&(_, ts, record)| (ts, record)));
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
impl super::SledStore {
    /// From now on fan-out records stay unexpanded, as a crash would leave
    /// them, until [`Self::expand_held`].
    pub(super) fn hold_expansion(&self) {
        *self.held_jobs.lock().unwrap() = Some(Vec::new());
    }

    /// Expands the records held since [`Self::hold_expansion`] as ONE
    /// batch, as the thread would after gathering them.
    pub(super) fn expand_held(&self) -> Option<bool> {
        let held = self.held_jobs.lock().unwrap().take().unwrap_or_default();
        expand(&held, &self.events, &AtomicBool::new(false))
    }
}
