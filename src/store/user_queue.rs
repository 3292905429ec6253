//! One user's queue as kept in memory: the next seq, the acked and trimmed
//! marks, the durable mark that wakes readers, and the newest few events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::watch;

use super::commit::DurableMark;
use super::{DurableSink, PageLimit};
use crate::uid::Uid;

/// One user's queue as kept in memory.
pub(super) struct UserQueue {
    pub(super) id: u64,
    pub(super) uid: Uid,
    pub(super) state: Mutex<QueueState>,
    /// The highest seq that is durable (and so readable).
    pub(super) durable: watch::Sender<u64>,
    /// Used since the last sweep of idle queues.
    pub(super) touched: AtomicBool,
    /// Readers that take new durable events directly (see [`DurableSink`]).
    pub(super) directs: Mutex<Vec<Weak<dyn DurableSink>>>,
}

pub(super) struct QueueState {
    pub(super) next_seq: u64,
    pub(super) acked: u64,
    /// Every seq ≤ this has been dropped by retention.
    pub(super) trimmed: u64,
    /// The newest few events, so that a woken stream reads what was just
    /// appended from memory instead of from sled (the live fan-out path).
    pub(super) recent: VecDeque<(u64, Bytes)>,
    /// Events of fan-out records not yet expanded into their own keys, in
    /// seq order (see `sled/fanout.rs`): readers merge them in.
    pub(super) pending: Vec<(u64, Bytes)>,
}

/// How many of the newest events per user [`QueueState::recent`] keeps: a
/// stream a few events behind under a sustained fan-out still reads from
/// memory (16 instead of 4: 200 publishes/s to 1 000 subscribers, p99
/// 1.2–1.6 s instead of 2.5–3.1 s, alternating runs).
const RECENT_EVENTS: usize = 16;

impl QueueState {
    pub(super) fn remember(&mut self, seq: u64, json: Bytes) {
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, json));
    }

    /// Events `after+1 ..= head` (as many as `limit` allows) and the last
    /// one's seq, if they are all in `recent`.
    pub(super) fn recent_after(
        &self,
        after: u64,
        head: u64,
        limit: PageLimit,
    ) -> Option<(Vec<Bytes>, u64)> {
        let first = self.recent.front()?.0;
        if after + 1 < first || after >= head {
            return None;
        }
        let mut cursor = after;
        let mut events = Vec::new();
        let mut bytes = 0;
        for (seq, json) in &self.recent {
            if *seq <= after || *seq > head {
                continue;
            }
            if !limit.fits(events.len(), bytes, json.len()) {
                break;
            }
            bytes += json.len();
            events.push(json.clone());
            cursor = *seq;
        }
        Some((events, cursor))
    }
}

impl UserQueue {
    pub(super) fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn head(&self) -> u64 {
        *self.durable.borrow()
    }
}

/// Nothing but the map holds `q` and nobody waits on its durable mark: no
/// append is in flight (an appender holds the queue until its commit) and no
/// reader would miss a wake-up, so its state may be dropped and reloaded
/// from the store later.
pub(super) fn unused(q: &Arc<UserQueue>) -> bool {
    Arc::strong_count(q) == 1 && q.durable.receiver_count() == 0
}

impl DurableMark for UserQueue {
    fn mark_durable(&self, seq: u64) {
        let mut before = 0;
        let raised = self.durable.send_if_modified(|mark| {
            before = *mark;
            let raise = seq > *mark;
            if raise {
                *mark = seq;
            }
            raise
        });
        if !raised {
            return;
        }
        let mut directs = self.directs.lock().unwrap_or_else(|e| e.into_inner());
        directs.retain(|d| d.strong_count() > 0);
        if directs.is_empty() {
            return;
        }
        let unlimited = PageLimit {
            events: usize::MAX,
            bytes: usize::MAX,
        };
        let events = match self.state().recent_after(before, seq, unlimited) {
            Some((events, last)) if last == seq => events,
            _ => Vec::new(),
        };
        let directs: Vec<_> = directs.iter().filter_map(Weak::upgrade).collect();
        let _ = DELIVERY.send(Delivery {
            directs,
            after: before,
            head: seq,
            events,
        });
    }
}

/// New durable events for [`DurableSink`] readers.
struct Delivery {
    directs: Vec<Arc<dyn DurableSink>>,
    after: u64,
    head: u64,
    events: Vec<Bytes>,
}

/// Most deliveries the thread takes at once when it is behind.
const MOST_TAKEN: usize = 4096;

/// A reader and the `after`, `head` and events of [`DurableSink::durable`].
type Handoff = (Arc<dyn DurableSink>, u64, u64, Vec<Bytes>);

/// What `taken` brings each reader, in order: a reader's deliveries that
/// follow one another become one (its events written in one go). A thread
/// that fell behind a sustained fan-out writes each socket once for all
/// the events it has for it, instead of once per commit: the further
/// behind, the cheaper each event, so it catches up instead of falling
/// further behind.
fn merged(taken: Vec<Delivery>) -> Vec<Handoff> {
    let mut out: Vec<Handoff> = Vec::new();
    // Per reader (by address), its latest entry in `out`.
    let mut latest: HashMap<*const (), usize> = HashMap::new();
    for delivery in taken {
        for direct in delivery.directs {
            let key = Arc::as_ptr(&direct) as *const ();
            if let Some(&i) = latest.get(&key) {
                let (_, _, head, events) = &mut out[i];
                let follows = *head == delivery.after;
                if follows && !events.is_empty() && !delivery.events.is_empty() {
                    *head = delivery.head;
                    events.extend_from_slice(&delivery.events);
                    continue;
                }
            }
            latest.insert(key, out.len());
            let events = delivery.events.clone();
            out.push((direct, delivery.after, delivery.head, events));
        }
    }
    out
}

/// One thread hands new durable events to [`DurableSink`] readers, in the
/// order the commit thread made them durable, so that the commit thread
/// goes back to flushing at once instead of writing to thousands of
/// sockets after a fan-out.
static DELIVERY: std::sync::LazyLock<std::sync::mpsc::Sender<Delivery>> =
    std::sync::LazyLock::new(|| {
        let (sender, deliveries) = std::sync::mpsc::channel::<Delivery>();
        let spawned = std::thread::Builder::new()
            .name("herald-deliver".into())
            .spawn(move || {
                while let Ok(first) = deliveries.recv() {
                    let mut taken = vec![first];
                    while taken.len() < MOST_TAKEN {
                        let Ok(next) = deliveries.try_recv() else {
                            break;
                        };
                        taken.push(next);
                    }
                    for (direct, after, head, events) in merged(taken) {
                        direct.durable(after, head, &events);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("no thread for direct deliveries: {e}");
        }
        sender
    });

#[cfg(test)]
mod tests {
    use super::*;

    struct Reader;

    impl DurableSink for Reader {
        fn durable(&self, _after: u64, _head: u64, _events: &[Bytes]) {}
    }

    #[test]
    fn a_readers_deliveries_that_follow_one_another_become_one_in_order() {
        let (a, b): (Arc<dyn DurableSink>, Arc<dyn DurableSink>) =
            (Arc::new(Reader), Arc::new(Reader));
        let event = |seq: u64| Bytes::from(seq.to_string());
        let delivery =
            |directs: &[&Arc<dyn DurableSink>], after, head, events: Vec<Bytes>| Delivery {
                directs: directs.iter().map(|d| Arc::clone(d)).collect(),
                after,
                head,
                events,
            };
        let taken = vec![
            delivery(&[&a, &b], 0, 1, vec![event(1)]),
            delivery(&[&a], 1, 3, vec![event(2), event(3)]),
            // Not at hand: b reads it itself, after what it has.
            delivery(&[&b], 1, 2, Vec::new()),
            delivery(&[&b], 2, 3, vec![event(3)]),
            // Does not follow a's 3: a new delivery.
            delivery(&[&a], 5, 6, vec![event(6)]),
        ];
        let got: Vec<(bool, u64, u64, Vec<Bytes>)> = merged(taken)
            .into_iter()
            .map(|(d, after, head, events)| (Arc::ptr_eq(&d, &a), after, head, events))
            .collect();
        assert_eq!(
            got,
            vec![
                (true, 0, 3, vec![event(1), event(2), event(3)]),
                (false, 0, 1, vec![event(1)]),
                (false, 1, 2, vec![]),
                (false, 2, 3, vec![event(3)]),
                (true, 5, 6, vec![event(6)]),
            ]
        );
    }
}
