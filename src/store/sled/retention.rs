//! Retention for the sled store: dropping old events a slice of users at a
//! time, and dropping idle queues' in-memory state.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use super::{be_u64, event_key, values, Meta, SledStore};
use crate::store::event::now_ms;
use crate::store::user_queue::{unused, UserQueue};
use crate::store::{Retention, StoreError};
use crate::uid::Uid;

impl SledStore {
    /// One retention pass over the next `trim_slice` users (see
    /// [`super::SledOptions::trim_slice`]); returns how many events it dropped.
    pub(super) fn trim_slice_of_users(&self, retention: Retention) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut removed = 0;
        let mut from = self.trim_from.lock().unwrap_or_else(|e| e.into_inner());
        let users = match from.take() {
            Some(key) => self.meta.range((Bound::Excluded(key), Bound::Unbounded)),
            None => self.meta.iter(),
        };
        let mut visited = 0;
        for item in users.take(self.trim_slice) {
            let (key, raw) = item?;
            visited += 1;
            if visited == self.trim_slice {
                *from = Some(key);
            }
            let Ok(meta) = serde_json::from_slice::<Meta>(&raw) else {
                continue;
            };
            let Ok(uid) = Uid::from_store(&meta.uid) else {
                continue;
            };
            let cached = self.queues.contains_key(&uid);
            let q = self.queue_unmarked(&uid)?;
            removed += self.trim_queue(&q, retention, now)?;
            drop(q);
            if !cached {
                // Loaded only to be trimmed: a pass over every user must
                // not leave every user's state in memory.
                self.queues.remove_if(&uid, |_, q| unused(q));
            }
        }
        self.metrics.trimmed.inc_by(removed);
        Ok(removed)
    }

    /// Drops queues unused since the last call that nothing holds.
    pub(super) fn forget_idle_queues(&self) {
        self.queues
            .retain(|_, q| q.touched.swap(false, Ordering::Relaxed) || !unused(q));
        self.metrics.queues_in_memory.set(self.queues.len() as i64);
    }

    /// Drops `q`'s events that fell out of `retention`; returns how many.
    fn trim_queue(&self, q: &UserQueue, retention: Retention, now: u64) -> Result<u64, StoreError> {
        let head = q.head();
        let (acked, trimmed, stored_to) = {
            let st = q.state();
            // An event not in sled yet (see `fanout.rs`) is not trimmed in
            // this pass, nor anything after it: under a fan-out that never
            // lets up, what is below it still is.
            let stored_to = st
                .pending
                .first()
                .map_or(head, |&(seq, _)| head.min(seq - 1));
            (st.acked, st.trimmed, stored_to)
        };
        let acked_cutoff = now.saturating_sub(retention.acked_for.as_millis() as u64);
        let age_cutoff = now.saturating_sub(retention.max_age.as_millis() as u64);
        let over_cap = head.saturating_sub(retention.cap_of(&q.uid));
        let mut upto = trimmed.max(over_cap.min(stored_to));
        for item in values::stored_ts(&self.events, q.id, upto + 1, stored_to)? {
            let (seq, ts) = item?;
            if ts < age_cutoff || (seq <= acked && ts < acked_cutoff) {
                upto = seq;
            } else {
                break;
            }
        }
        if upto <= trimmed {
            return Ok(0);
        }
        // Raise the mark first: a reader that overlaps the deletions below
        // sees it and re-reads instead of silently skipping events.
        {
            let mut st = q.state();
            st.trimmed = st.trimmed.max(upto);
            self.write_meta(q, &st)?;
        }
        let from = values::run_start(&self.events, q.id, trimmed + 1)?;
        for item in self
            .events
            .range(event_key(q.id, from)..=event_key(q.id, upto))
        {
            let (key, value) = item?;
            let first = be_u64(&key[8..]);
            let events = values::decode(first, &value);
            if events.last().map_or(first, |e| e.0) > upto {
                // A run that goes past the mark stays until all of it is
                // trimmed; readers skip what it holds up to the mark.
                break;
            }
            self.events.remove(key)?;
        }
        Ok(upto - trimmed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::sled::SledOptions;
    use crate::store::{Append, EventQueue, PageLimit};

    /// A store whose fan-out records stay unexpanded, and 16 users.
    fn held(dir: &std::path::Path) -> (SledStore, Vec<Uid>) {
        let store = SledStore::open(dir, SledOptions::default(), Arc::new(Metrics::new())).unwrap();
        store.hold_expansion();
        let users = (0..16)
            .map(|i| Uid::parse(&format!("u{i}")).unwrap())
            .collect();
        (store, users)
    }

    /// The two newest events of each user, whatever their age.
    const KEEP_TWO: Retention = Retention {
        acked_for: Duration::from_secs(3600),
        max_events: 2,
        feed_max_events: 2,
        max_age: Duration::from_secs(3600),
    };

    /// (type, seq) of each event of `page`.
    fn kinds_and_seqs(page: crate::store::Page) -> Vec<(String, u64)> {
        let events = page.events.iter();
        let events = events.map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap());
        let pairs = events.map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        });
        pairs.collect()
    }

    #[tokio::test]
    async fn a_followed_queue_stays_in_memory_and_reads_what_is_appended_later() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SledStore::open(dir.path(), SledOptions::default(), Arc::new(Metrics::new())).unwrap();
        let (alice, bob) = (Uid::parse("alice").unwrap(), Uid::parse("bob").unwrap());
        let mut follow = store.follow(&alice).await.unwrap();
        // bob's queue is loaded, and its receiver dropped at once.
        store.watch(&bob).await.unwrap();
        // Two passes: the first clears `touched`, the second forgets what
        // nobody holds.
        for _ in 0..2 {
            store.forget_idle_queues();
        }
        assert!(store.queues.contains_key(&alice), "followed: kept");
        assert!(!store.queues.contains_key(&bob), "idle: forgotten");
        let to = |uid: &Uid, n: u64| store.append(vec![Append::new(uid.clone(), "notice", &n)]);
        to(&alice, 1).await.unwrap();
        to(&bob, 2).await.unwrap();
        // The append answered after raising the durable mark it watches.
        assert_eq!(*follow.head.borrow_and_update(), 1);
        let limit = PageLimit {
            events: 10,
            bytes: 1 << 20,
        };
        let page = store
            .read_followed(&alice, &follow, 0, limit)
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!((page.head, page.cursor), (1, 1));
        // The append found the queue by uid in the store's map: the handle
        // is that queue, not a copy, and a read by uid agrees.
        let page = store.read(&alice, 0, limit).await.unwrap();
        assert_eq!((page.head, page.events.len()), (1, 1));
        assert_eq!(store.read(&bob, 0, limit).await.unwrap().head, 1);
    }

    #[tokio::test]
    async fn retention_visits_users_in_slices_then_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions {
            trim_slice: 3,
            ..SledOptions::default()
        };
        let store = SledStore::open(dir.path(), options, Arc::new(Metrics::new())).unwrap();
        let users: Vec<Uid> = (0..7)
            .map(|i| Uid::parse(&format!("u{i}")).unwrap())
            .collect();
        let publish_to_all = || {
            let batch = users
                .iter()
                .map(|u| Append::new(u.clone(), "notice", &0))
                .collect();
            store.append(batch)
        };
        for _ in 0..3 {
            publish_to_all().await.unwrap();
        }
        let keep_one = Retention {
            acked_for: Duration::from_secs(3600),
            max_events: 1,
            feed_max_events: 1,
            max_age: Duration::from_secs(3600),
        };
        // Seven users with three events each; a pass visits three users and
        // drops two events of each.
        assert_eq!(store.maintain(keep_one).unwrap(), 6);
        assert_eq!(store.maintain(keep_one).unwrap(), 6);
        assert_eq!(store.maintain(keep_one).unwrap(), 2, "the seventh user");
        assert_eq!(
            store.maintain(keep_one).unwrap(),
            0,
            "started over: all trimmed"
        );
        publish_to_all().await.unwrap();
        let passes: Vec<u64> = (0..3).map(|_| store.maintain(keep_one).unwrap()).collect();
        assert_eq!(passes.iter().sum::<u64>(), 7, "{passes:?}");
        for user in &users {
            let limit = crate::store::PageLimit {
                events: 10,
                bytes: 1 << 20,
            };
            let page = store.read(user, 0, limit).await.unwrap();
            assert_eq!(page.events.len(), 2, "a gap event and the newest");
        }
    }

    #[tokio::test]
    async fn events_below_one_not_expanded_yet_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, users) = held(dir.path());
        // u0: 1..=5 alone (in sled at once), 6 with everybody (a record
        // held unexpanded, as under a fan-out that never lets up).
        for n in 1..=5u64 {
            let to_one = vec![Append::new(users[0].clone(), "notice", &n)];
            store.append(to_one).await.unwrap();
        }
        let batch = users.iter().map(|u| Append::new(u.clone(), "notice", &6));
        store.append(batch.collect()).await.unwrap();
        assert_eq!(store.maintain(KEEP_TWO).unwrap(), 4, "1..=4 of u0");
        let limit = PageLimit {
            events: 10,
            bytes: 1 << 20,
        };
        let page = store.read(&users[0], 0, limit).await.unwrap();
        let event = |kind: &str, seq| (kind.to_owned(), seq);
        assert_eq!(
            kinds_and_seqs(page),
            [event("gap", 4), event("notice", 5), event("notice", 6)]
        );
        assert_eq!(store.expand_held(), Some(true));
    }

    #[tokio::test]
    async fn a_run_trimmed_in_part_is_read_from_the_mark_and_removed_once_all_of_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (store, users) = held(dir.path());
        for n in 1..=5u64 {
            let batch = users.iter().map(|u| Append::new(u.clone(), "notice", &n));
            store.append(batch.collect()).await.unwrap();
        }
        // Expanded as one job: each user's 1..=5 is one run.
        assert_eq!(store.expand_held(), Some(true));
        assert_eq!(store.maintain(KEEP_TWO).unwrap(), 16 * 3);
        let limit = PageLimit {
            events: 10,
            bytes: 1 << 20,
        };
        let event = |kind: &str, seq| (kind.to_owned(), seq);
        // A gap up to 3, then 4 and 5 from the run that still holds 1..=5.
        let page = store.read(&users[0], 0, limit).await.unwrap();
        assert_eq!(
            kinds_and_seqs(page),
            vec![event("gap", 3), event("notice", 4), event("notice", 5)]
        );
        let id = store.queue(&users[0]).unwrap().id;
        assert_eq!(store.events.scan_prefix(id.to_be_bytes()).count(), 1);
        for n in 6..=8u64 {
            let to_one = vec![Append::new(users[0].clone(), "notice", &n)];
            store.append(to_one).await.unwrap();
        }
        assert_eq!(store.maintain(KEEP_TWO).unwrap(), 3, "4, 5 and 6");
        let page = store.read(&users[0], 3, limit).await.unwrap();
        assert_eq!(
            kinds_and_seqs(page),
            vec![event("gap", 6), event("notice", 7), event("notice", 8)]
        );
        let keys = store.events.scan_prefix(id.to_be_bytes()).keys();
        let keys: Vec<u64> = keys.map(|k| be_u64(&k.unwrap()[8..])).collect();
        assert_eq!(keys, vec![7, 8], "the run went with the rest");
    }
}
