//! Group commit: one dedicated thread makes appends durable in batches.
//!
//! Appenders insert into sled (visible to sled, not yet to clients) and hand
//! a [`Waiter`] to this thread. The thread takes every waiter queued so far,
//! runs one `sled::Db::flush` plus an `fdatasync` of sled's log file (sled
//! 0.34's flush ends in `sync_file_range`, which survives kill -9 but not a
//! power cut), then raises each user's durable
//! mark (once per flush, to the highest seq it got) and answers the
//! waiters. Everything that arrived during a flush is
//! served by the next one, so under load one fsync covers thousands of
//! appends, and an idle server flushes as soon as a single append waits.
//!
//! It is a std thread rather than a tokio task because flush and fdatasync
//! block; parking a runtime worker on them would stall unrelated requests.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::StoreError;
use crate::metrics::Metrics;

/// Something that advances when the commit it waited for is durable.
pub(super) trait DurableMark: Send + Sync {
    fn mark_durable(&self, seq: u64);
}

/// One append call waiting for durability.
pub(super) struct Waiter {
    /// Per user queue: the highest seq this call inserted.
    pub marks: Vec<(Arc<dyn DurableMark>, u64)>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Pending {
    waiters: Vec<Waiter>,
    closed: bool,
    /// The commit thread is parked on the condvar. Only then does a submit
    /// pay for a wake-up syscall; while it flushes, waiters just queue.
    idle: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// Handle to the commit thread.
pub(super) struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the commit thread for `db`, whose log file is `log`. With a
    /// non-zero `linger` the thread waits that long after the first waiter
    /// so that more appends can share the flush.
    pub fn start(
        db: sled::Db,
        log: File,
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || commit_loop(&thread_shared, &db, &log, linger, &metrics))?;
        Ok(GroupCommit {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `waiter` for the next flush.
    pub fn submit(&self, waiter: Waiter) -> Result<(), StoreError> {
        let mut pending = lock(&self.shared.pending);
        if pending.closed {
            return Err(StoreError::Closed);
        }
        pending.waiters.push(waiter);
        let idle = std::mem::take(&mut pending.idle);
        drop(pending);
        if idle {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Serves every queued waiter, then stops the thread.
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.close();
    }
}

/// Locks a mutex, ignoring poisoning: the data guarded here (queues of
/// waiters) stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn commit_loop(shared: &Shared, db: &sled::Db, log: &File, linger: Duration, metrics: &Metrics) {
    loop {
        let mut pending = lock(&shared.pending);
        while pending.waiters.is_empty() && !pending.closed {
            pending.idle = true;
            pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        pending.idle = false;
        if pending.waiters.is_empty() {
            return; // closed and drained
        }
        if !linger.is_zero() && !pending.closed {
            drop(pending);
            std::thread::sleep(linger);
            pending = lock(&shared.pending);
        }
        let batch = std::mem::take(&mut pending.waiters);
        drop(pending);

        let started = Instant::now();
        let result = db
            .flush()
            .map_err(StoreError::from)
            .and_then(|_| log.sync_data().map_err(StoreError::from));
        metrics.flushes.inc();
        metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.commit_batch.observe(batch.len() as f64);
        if let Err(e) = &result {
            tracing::error!("group commit failed: {e}");
        }
        if result.is_ok() {
            raise_marks(&batch);
        }
        for waiter in batch {
            let _ = waiter.done.send(result.clone());
        }
    }
}

/// Raises every mark of `batch` once, to the highest seq any waiter of the
/// batch gives it: a user who got several events in one flush is woken,
/// and its direct readers written to, once for all of them (a sustained
/// fan-out at 200 publishes/s raised each mark four times per flush).
fn raise_marks(batch: &[Waiter]) {
    let mut highest: std::collections::HashMap<*const (), (&Arc<dyn DurableMark>, u64)> =
        std::collections::HashMap::new();
    for (mark, seq) in batch.iter().flat_map(|w| &w.marks) {
        let entry = highest
            .entry(Arc::as_ptr(mark).cast::<()>())
            .or_insert((mark, *seq));
        entry.1 = entry.1.max(*seq);
    }
    for (mark, seq) in highest.into_values() {
        mark.mark_durable(seq);
    }
}
