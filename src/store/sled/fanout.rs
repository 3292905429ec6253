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
//! The records are then expanded into the per-user keys of the `events`
//! tree by a thread of low priority (`expander.rs`). A crash before that
//! leaves the record, and opening the store expands it again (skipping
//! what is stored or what retention trimmed since), so no event of a
//! record is lost or comes back.
//!
//! A user's seqs are assigned and the record inserted with every recipient
//! locked (in id order, like atomic appends), so a later event of any of
//! them enters sled's log after the record: a flush that makes the later
//! event durable makes the record durable too.

use std::collections::HashMap;
#[cfg(test)]
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::expander::Job;
use super::{be_u64, event_key, values, Marks, Meta, SledStore};
use crate::store::event::{event_json, event_tail, write_event_json};
use crate::store::{Append, StoreError};

/// Chunks smaller than this are inserted event by event.
pub(super) const MIN_RECIPIENTS: usize = 16;

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
        // Every recipient's event in one allocation: each is a slice of it,
        // so the copies kept in memory (recent, pending, expansion) share
        // it by count instead of one allocation per event and clone.
        let mut buf = BytesMut::with_capacity(queues.len() * (27 + tail.len()));
        for (q, &g) in queues.iter().zip(&slot) {
            let seq = guards[g].next_seq + taken[g];
            taken[g] += 1;
            entries.push((q.id, seq));
            write_event_json(&mut buf, seq, &tail);
            events.push(buf.split().freeze());
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
mod tests {
    use std::sync::Arc;
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
    async fn a_batch_of_many_chunks_reaches_every_user_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // 2 500 users, one body: a first chunk of 128 made durable alone,
        // then records of 1 024, 1 024 and 324.
        let to = users(2_500);
        let seqs = store.append(to_all(&to, 7)).await.unwrap();
        assert_eq!(seqs, vec![1; 2_500]);
        // 1 500 of them, a body each: inserted event by event, same chunks.
        let own: Vec<Append> = to[..1_500]
            .iter()
            .enumerate()
            .map(|(i, u)| Append::new(u.clone(), "notice", &i))
            .collect();
        assert_eq!(store.append(own).await.unwrap(), vec![2; 1_500]);
        // Each user has the shared event, then its own (the first 1 500).
        async fn check(store: &SledStore, to: &[Uid]) {
            let limit = PageLimit {
                events: 10,
                bytes: 1 << 20,
            };
            for (i, uid) in to.iter().enumerate() {
                let page = store.read(uid, 0, limit).await.unwrap();
                let data: Vec<serde_json::Value> = page
                    .events
                    .iter()
                    .map(|e| {
                        serde_json::from_slice::<serde_json::Value>(e).unwrap()["data"].clone()
                    })
                    .collect();
                let mut want = vec![serde_json::json!(7)];
                if i < 1_500 {
                    want.push(serde_json::json!(i));
                }
                assert_eq!(data, want, "{uid}");
            }
        }
        check(&store, &to).await;
        drop(store);
        check(&open(dir.path()), &to).await;
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
