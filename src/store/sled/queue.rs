//! [`EventQueue`] for the sled store: appends through the write path
//! (`writes.rs`), reads through the read path (`reads.rs`), acks, watches,
//! and the direct delivery to followers.

use super::*;

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
    ) -> Result<IdempotentAppend, StoreError> {
        Ok(self.append_all(appends, Some((key, tag))).await?.0)
    }

    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        Ok(self.append_all(appends, None).await?.1)
    }

    async fn next_id(&self, _scope: &str) -> Result<u64, StoreError> {
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

    fn attach(&self, follow: &Follow, direct: std::sync::Weak<dyn DurableSink>) -> bool {
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
