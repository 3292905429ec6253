//! Fan-out records: one write for an event that many users get.
//!
//! A chunk of appends that share one type and one body (a publish to many
//! users, a broadcast) is written as ONE shared record in the `shared`
//! tree: the body once, then each recipient's (user id, seq); and its id in
//! the `fanout` tree, the records not expanded yet. When the group commit
//! has made the record durable, every recipient's event is durable, and
//! readers get it from the queue's memory (its `pending` events, and the
//! newest few).
//!
//! The records are then expanded by a thread of low priority
//! (`expander.rs`), but never into copies of the body: each recipient gets
//! a REFERENCE, (ts, record id) in its key range of the `events` tree (see
//! `values.rs`), one key per user for the many records of a second. A
//! fan-out to 1 000 users at 100 publishes/s writes 100 bodies and 1 000
//! small keys a second, not 100 000 copies of the body, so a sustained
//! fan-out costs the disk about what its bodies weigh. A reader makes the
//! event from the record and the seq. A crash before expansion leaves the
//! record's id in `fanout`, and opening the store writes its references
//! (skipping what is stored or what retention trimmed since), so no event
//! of a record is lost or comes back.
//!
//! A record stays while any recipient may read it: retention drops it once
//! every recipient's queue was trimmed past its seq ([`SledStore::drop_passed_records`]).
//!
//! A user's seqs are assigned and the record inserted with every recipient
//! locked (in id order, like atomic appends), so a later event of any of
//! them enters sled's log after the record: a flush that makes the later
//! event durable makes the record durable too.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

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

/// A record's ts and entries.
struct Record {
    ts: u64,
    entries: Vec<(u64, u64)>,
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(head)
}

/// A record's ts, type and data, and the bytes of its entries.
fn decode_body(record: &[u8]) -> Option<(u64, &str, &str, &[u8])> {
    let mut rest = record;
    let ts = be_u64(take(&mut rest, 8)?);
    let mut text = || -> Option<&str> {
        let len = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        std::str::from_utf8(take(&mut rest, len)?).ok()
    };
    let (kind, data) = (text()?, text()?);
    Some((ts, kind, data, rest))
}

fn decode(record: &[u8]) -> Option<Record> {
    let (ts, _, _, mut rest) = decode_body(record)?;
    let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
    let mut entries = Vec::with_capacity(count.min(rest.len() / 16));
    for _ in 0..count {
        let pair = take(&mut rest, 16)?;
        entries.push((be_u64(&pair[..8]), be_u64(&pair[8..])));
    }
    Some(Record { ts, entries })
}

/// Recipient `seq`'s event of record `id` in `shared`; `None` if the
/// record is gone.
pub(super) fn event_of(
    shared: &sled::Tree,
    id: u64,
    seq: u64,
) -> Result<Option<Bytes>, StoreError> {
    let Some(raw) = shared.get(id.to_be_bytes())? else {
        return Ok(None);
    };
    let Some((ts, kind, data, _)) = decode_body(&raw) else {
        tracing::error!("shared record {id} is corrupt; its events are left out");
        return Ok(None);
    };
    Ok(Some(Bytes::from(event_json(seq, kind, ts, data))))
}

/// The `trimmed` marks of users by id, read once each from `meta` (0 for a
/// user without one).
struct TrimmedMarks<'a> {
    meta: &'a sled::Tree,
    known: HashMap<u64, u64>,
}

impl TrimmedMarks<'_> {
    fn of(&mut self, id: u64) -> Result<u64, StoreError> {
        if let Some(&t) = self.known.get(&id) {
            return Ok(t);
        }
        let t = (self.meta.get(id.to_be_bytes())?)
            .and_then(|raw| serde_json::from_slice::<Meta>(&raw).ok())
            .map_or(0, |m| m.trimmed);
        Ok(*self.known.entry(id).or_insert(t))
    }
}

/// Writes the references of the records a crash left unexpanded (after
/// `open`, before anything reads): each event not trimmed since gets its
/// key in `events`. A record of herald 0.9 (the whole record in `fanout`)
/// moves to `shared` first. The caller flushes, then clears `fanout`.
/// Returns how many events were written.
pub(super) fn recover(
    fanout: &sled::Tree,
    shared: &sled::Tree,
    events: &sled::Tree,
    meta: &sled::Tree,
) -> Result<usize, StoreError> {
    let mut trimmed = TrimmedMarks {
        meta,
        known: HashMap::new(),
    };
    let mut written = 0;
    for item in fanout.iter() {
        let (key, old) = item?;
        if !old.is_empty() {
            shared.insert(&key, old)?;
        }
        let raw = shared.get(&key)?;
        let Some(record) = raw.as_deref().and_then(decode) else {
            tracing::error!(
                "fan-out record {} is missing or corrupt; skipped",
                be_u64(&key)
            );
            continue;
        };
        let id = be_u64(&key);
        for &(user, seq) in &record.entries {
            if seq <= trimmed.of(user)? || values::is_stored(events, user, seq)? {
                continue;
            }
            events.insert(event_key(user, seq), values::refs([(record.ts, id)]))?;
            written += 1;
        }
    }
    Ok(written)
}

/// A pass over the shared records stops after this many in a row that are
/// still read: records are in the order they were written, so what
/// follows is mostly read too (a record that could go waits at most until
/// its recipients' queues are trimmed past what is before it, by age at
/// the latest), and a pass costs about the same with ten records or a
/// million.
const STILL_READ_IN_A_ROW: usize = 64;

impl SledStore {
    /// Drops the shared records, oldest first, that every recipient's
    /// queue was trimmed past (nobody reads them again); returns how many.
    /// A record not expanded yet stays. Retention raises a queue's
    /// `trimmed` mark (in `meta`) before it removes keys, and a record goes
    /// after that, so after a crash no reference above a mark is left
    /// without its record.
    pub(super) fn drop_passed_records(&self) -> Result<u64, StoreError> {
        let mut marks = TrimmedMarks {
            meta: &self.meta,
            known: HashMap::new(),
        };
        let (mut in_a_row, mut dropped) = (0, 0);
        for item in self.shared.iter() {
            if in_a_row == STILL_READ_IN_A_ROW {
                break;
            }
            let (key, raw) = item?;
            let record = decode(&raw);
            let mut passed = record.is_some() && !self.fanout.contains_key(&key)?;
            for &(user, seq) in record.iter().flat_map(|r| &r.entries) {
                if !passed || seq > marks.of(user)? {
                    passed = false;
                    break;
                }
            }
            if passed {
                self.shared.remove(&key)?;
                dropped += 1;
                in_a_row = 0;
            } else {
                in_a_row += 1;
            }
        }
        Ok(dropped)
    }

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
        self.shared
            .insert(key.to_be_bytes(), encode(ts, kind, data, &entries))?;
        // After the record: a marker durable means the record is.
        self.fanout.insert(key.to_be_bytes(), &[])?;
        // Written: now the seqs are taken and the events readable (up to
        // each user's durable mark).
        for (st, n) in guards.iter_mut().zip(taken) {
            st.next_seq += n;
        }
        let mut bytes = 0;
        for ((&g, &(_, seq)), json) in slot.iter().zip(&entries).zip(events) {
            bytes += json.len() as u64;
            guards[g].remember(seq, json.clone());
            guards[g].pending.push((seq, json));
        }
        drop(guards);
        self.metrics.appended_bytes.inc_by(bytes);
        let mut marks: Marks = Vec::with_capacity(queues.len());
        let mut expand = Vec::with_capacity(queues.len());
        for (q, (_, seq)) in queues.into_iter().zip(entries) {
            seqs.push(seq);
            marks.push((q.clone(), seq));
            expand.push((q, seq));
        }
        let job = Job {
            key,
            ts,
            entries: expand,
        };
        #[cfg(test)]
        if let Some(held) = self.held_jobs.lock().unwrap().as_mut() {
            held.push(job);
            return Ok(marks);
        }
        self.expander.submit(job);
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
    use crate::store::{EventQueue, PageLimit, Retention};
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
        store.hold_expansion();
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
        store.hold_expansion();
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
        expanded(&store).await;
        for uid in &to {
            let q = store.queue(uid).unwrap();
            assert!(q.state().pending.is_empty());
            let stored = values::stored(&store.events, &store.shared, q.id, 1, 3).unwrap();
            let seqs: Vec<u64> = stored.map(|e| e.unwrap().0).collect();
            assert_eq!(seqs, vec![1, 2, 3]);
        }
    }

    #[tokio::test]
    async fn one_expansion_writes_a_user_one_key_per_run_of_consecutive_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.hold_expansion();
        let to = users(MIN_RECIPIENTS);
        // u0: 1 and 2 with everybody, 3 alone (its own key at once), 4..=8
        // with everybody, the last three 12 KB each (a reference is 16
        // bytes whatever the body weighs).
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
        assert_eq!(store.expand_held(), Some(true));
        let keys = |uid: &Uid| {
            let q = store.queue(uid).unwrap();
            assert!(q.state().pending.is_empty(), "all out of memory");
            let keys = store.events.scan_prefix(q.id.to_be_bytes()).keys();
            keys.map(|k| be_u64(&k.unwrap()[8..])).collect::<Vec<_>>()
        };
        // Runs of references: 1..=2 and 4..=8; 3 alone. u1 got only the
        // records: 1..=7.
        assert_eq!(keys(&to[0]), vec![1, 3, 4]);
        assert_eq!(keys(&to[1]), vec![1]);
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

    /// Waits until the thread expanded every record (their ids left `fanout`).
    async fn expanded(store: &SledStore) {
        let mut waited = Duration::ZERO;
        while !store.fanout.is_empty() && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        assert!(store.fanout.is_empty(), "records left after {waited:?}");
    }

    #[tokio::test]
    async fn a_shared_record_stays_until_every_recipient_was_trimmed_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let to = users(MIN_RECIPIENTS);
        for n in 1..=3 {
            store.append(to_all(&to, n)).await.unwrap();
        }
        expanded(&store).await;
        assert_eq!(store.shared.len(), 3, "expanded, and still read");
        // Everybody acked all three but u5, who acked 1.
        for (i, uid) in to.iter().enumerate() {
            store.ack(uid, if i == 5 { 1 } else { 3 }).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let acked_go = Retention {
            acked_for: Duration::ZERO,
            max_events: 100,
            feed_max_events: 100,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(store.maintain(acked_go).unwrap(), 15 * 3 + 1);
        let left = |store: &SledStore| -> Vec<u64> {
            let keys = store.shared.iter().keys();
            keys.map(|k| be_u64(&k.unwrap())).collect()
        };
        let kept = left(&store);
        assert_eq!(kept.len(), 2, "u5 still reads the last two: {kept:?}");
        let all = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        let data = |page: crate::store::Page| -> Vec<(u64, u64)> {
            let events = page.events.iter();
            let events = events.map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap());
            let pairs = events.map(|e| (e["seq"].as_u64().unwrap(), e["data"].as_u64().unwrap()));
            pairs.collect()
        };
        assert_eq!(
            data(store.read(&to[5], 1, all).await.unwrap()),
            [(2, 2), (3, 3)]
        );
        // Reopened, the same.
        drop(store);
        let store = open(dir.path());
        assert_eq!(left(&store), kept);
        assert_eq!(
            data(store.read(&to[5], 1, all).await.unwrap()),
            [(2, 2), (3, 3)]
        );
        store.ack(&to[5], 3).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.maintain(acked_go).unwrap(), 2);
        assert!(left(&store).is_empty(), "nobody reads them");
        // A later fan-out is read as ever.
        store.append(to_all(&to, 4)).await.unwrap();
        assert_eq!(data(store.read(&to[5], 3, all).await.unwrap()), [(4, 4)]);
    }

    #[tokio::test]
    async fn a_store_of_herald_0_9_reads_as_it_was() {
        // 0.9 kept a whole record in `fanout` until it was expanded, and
        // expanded records into runs of copies.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let to = users(MIN_RECIPIENTS);
        let ids: Vec<u64> = to.iter().map(|u| store.queue(u).unwrap().id).collect();
        let ts = crate::store::event::now_ms();
        let copies = [2, 3].map(|n| event_json(n, "notice", ts, &n.to_string()));
        let run = values::run(copies.iter().map(|json| (ts, json.as_bytes())));
        store.events.insert(event_key(ids[0], 2), run).unwrap();
        let entries: Vec<(u64, u64)> = ids.iter().map(|&id| (id, 1)).collect();
        let record = encode(ts, "notice", "1", &entries);
        store.fanout.insert(7u64.to_be_bytes(), record).unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = open(dir.path());
        assert!(store.fanout.is_empty(), "expanded at open");
        let all = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        let page = store.read(&to[0], 0, all).await.unwrap();
        let mut want = vec![event_json(1, "notice", ts, "1")];
        want.extend(copies);
        let got: Vec<&[u8]> = page.events.iter().map(|e| &e[..]).collect();
        assert_eq!(got, want.iter().map(|j| j.as_bytes()).collect::<Vec<_>>());
        let page = store.read(&to[1], 0, all).await.unwrap();
        assert_eq!(page.events, [Bytes::from(event_json(1, "notice", ts, "1"))]);
        let seqs = store.append(to_all(&to, 9)).await.unwrap();
        assert_eq!((seqs[0], seqs[1]), (4, 2));
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_a_torn_one_to_nothing() {
        let entries = vec![(1, 7), (u64::MAX, 1), (42, u64::MAX)];
        let record = encode(99, "notice", r#"{"a":"é"}"#, &entries);
        let decoded = decode(&record).unwrap();
        let (_, kind, data, _) = decode_body(&record).unwrap();
        assert_eq!(
            (decoded.ts, kind, data, decoded.entries),
            (99, "notice", r#"{"a":"é"}"#, entries)
        );
        for cut in 0..record.len() {
            assert!(decode(&record[..cut]).is_none(), "cut at {cut}");
        }
    }
}
