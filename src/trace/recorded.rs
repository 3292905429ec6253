//! The store as the services see it when tracing is on: every call goes
//! to the backend's store unchanged, and the appends that became durable
//! and the acks that moved a mark are recorded in the [`Traces`].

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::Traces;
use crate::store::{
    now_ms, Acked, Append, DurableSink, EventQueue, Follow, IdempotentAppend, Lease, Page,
    PageLimit, Records, Store, StoreError,
};
use crate::uid::Uid;

/// `store`, with its appends and acks recorded in `traces`.
pub struct Recorded {
    store: Arc<dyn Store>,
    traces: Arc<Traces>,
}

impl Recorded {
    /// `store` itself when tracing is off.
    pub fn wrap(store: Arc<dyn Store>, traces: Arc<Traces>) -> Arc<dyn Store> {
        if traces.enabled() {
            Arc::new(Recorded { store, traces })
        } else {
            store
        }
    }

    /// Counts the appends to `what`'s users in flight until the guard is
    /// done with (see [`Traces::begin`]), the asking time with it.
    fn begin<'a>(&'a self, what: &'a [(Uid, Arc<str>)]) -> InFlight<'a> {
        let users = what.iter().map(|(uid, _)| uid).filter(|uid| !uid.is_feed());
        InFlight {
            counted: self.traces.begin(users),
            traces: &self.traces,
            what,
            asked_ms: now_ms(),
        }
    }
}

/// Appends in flight; if dropped before [`InFlight::landed`] (the append
/// failed, appended nothing, or its caller went away), no longer counted.
struct InFlight<'a> {
    traces: &'a Traces,
    what: &'a [(Uid, Arc<str>)],
    asked_ms: u64,
    counted: bool,
}

impl InFlight<'_> {
    /// The appends are durable with these seqs.
    fn landed(mut self, seqs: &[u64]) {
        let appended: Vec<(&Uid, &Arc<str>, u64)> = self
            .what
            .iter()
            .zip(seqs)
            .filter(|((uid, _), _)| !uid.is_feed())
            .map(|((uid, kind), seq)| (uid, kind, *seq))
            .collect();
        self.traces
            .appended(&appended, self.asked_ms, std::mem::take(&mut self.counted));
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let users = self
            .what
            .iter()
            .map(|(uid, _)| uid)
            .filter(|uid| !uid.is_feed());
        self.traces.failed(users, self.counted);
    }
}

/// Each append's user and type (shared: see [`Traces::kind`]).
fn what_of(traces: &Traces, appends: &[Append]) -> Vec<(Uid, Arc<str>)> {
    let mut kind: Option<Arc<str>> = None;
    appends
        .iter()
        .map(|a| {
            let kind = match &kind {
                Some(k) if **k == *a.kind => k.clone(),
                _ => kind.insert(traces.kind(&a.kind)).clone(),
            };
            (a.uid.clone(), kind)
        })
        .collect()
}

#[async_trait]
impl EventQueue for Recorded {
    async fn append(&self, batch: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        let what = what_of(&self.traces, &batch);
        let in_flight = self.begin(&what);
        let seqs = self.store.append(batch).await?;
        in_flight.landed(&seqs);
        Ok(seqs)
    }

    async fn append_once(
        &self,
        key: &str,
        tag: u64,
        appends: Vec<Append>,
    ) -> Result<IdempotentAppend, StoreError> {
        let what = what_of(&self.traces, &appends);
        let in_flight = self.begin(&what);
        let appended = self.store.append_once(key, tag, appends).await?;
        if let IdempotentAppend::Appended { seqs } = &appended {
            in_flight.landed(seqs);
        }
        Ok(appended)
    }

    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        let what = what_of(&self.traces, &appends);
        let in_flight = self.begin(&what);
        let seqs = self.store.append_atomic(appends).await?;
        in_flight.landed(&seqs);
        Ok(seqs)
    }

    async fn next_id(&self, scope: &str) -> Result<u64, StoreError> {
        self.store.next_id(scope).await
    }

    async fn read(&self, uid: &Uid, after: u64, limit: PageLimit) -> Result<Page, StoreError> {
        self.store.read(uid, after, limit).await
    }

    async fn ack(&self, uid: &Uid, seq: u64) -> Result<Acked, StoreError> {
        let acked = self.store.ack(uid, seq).await?;
        self.traces.acked(uid, acked.before, acked.after);
        Ok(acked)
    }

    async fn watch(&self, uid: &Uid) -> Result<watch::Receiver<u64>, StoreError> {
        self.store.watch(uid).await
    }

    async fn follow(&self, uid: &Uid) -> Result<Follow, StoreError> {
        self.store.follow(uid).await
    }

    fn attach(&self, follow: &Follow, direct: Weak<dyn DurableSink>) -> bool {
        self.store.attach(follow, direct)
    }

    async fn read_followed(
        &self,
        uid: &Uid,
        follow: &Follow,
        after: u64,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        self.store.read_followed(uid, follow, after, limit).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.store.sync().await
    }
}

#[async_trait]
impl Records for Recorded {
    async fn kv_put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.store.kv_put(key, value).await
    }

    async fn kv_stage(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.store.kv_stage(key, value).await
    }

    async fn kv_stage_remove(&self, key: &str) -> Result<(), StoreError> {
        self.store.kv_stage_remove(key).await
    }

    async fn kv_raise(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        self.store.kv_raise(key, value).await
    }

    async fn expire(&self, key: &str, after: Duration) -> Result<(), StoreError> {
        self.store.expire(key, after).await
    }

    async fn kv_put_all(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.store.kv_put_all(pairs).await
    }

    async fn kv_swap(
        &self,
        key: &str,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.store.kv_swap(key, old, new).await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.kv_get(key).await
    }

    async fn kv_range(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.kv_range(prefix, after, limit).await
    }

    async fn kv_range_back(
        &self,
        prefix: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.kv_range_back(prefix, before, limit).await
    }

    async fn kv_last(&self, prefix: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        self.store.kv_last(prefix).await
    }

    async fn kv_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.store.kv_scan(prefix).await
    }

    async fn lock(&self, name: &str) -> Result<Lease, StoreError> {
        self.store.lock(name).await
    }

    async fn try_lock(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.store.try_lock(name).await
    }

    async fn announce(&self, change: &str) -> Result<(), StoreError> {
        self.store.announce(change).await
    }

    fn changes(&self) -> broadcast::Receiver<String> {
        self.store.changes()
    }

    async fn signal(&self, uid: &Uid, json: &[u8]) -> Result<bool, StoreError> {
        self.store.signal(uid, json).await
    }

    fn signals(&self) -> broadcast::Receiver<(Uid, Bytes)> {
        self.store.signals()
    }
}
