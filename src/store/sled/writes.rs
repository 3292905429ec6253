//! The write path of the sled store: events inserted under each user's
//! lock (a batch, or all of several users' at once with an idempotency
//! key), then handed to the group commit, which answers once they are
//! durable.

use super::*;

impl SledStore {
    /// Inserts one event under the user's lock and returns its seq.
    pub(super) fn insert(
        &self,
        q: &UserQueue,
        append: &Append,
        ts: u64,
    ) -> Result<u64, StoreError> {
        let mut st = q.state();
        let seq = st.next_seq;
        let value = stored_event(seq, append, ts);
        self.metrics.appended_bytes.inc_by(value.len() as u64 - 8);
        self.events.insert(event_key(q.id, seq), value.as_slice())?;
        st.next_seq += 1;
        st.remember(seq, Bytes::copy_from_slice(&value[8..]));
        Ok(seq)
    }

    /// Like [`Self::insert`] for each of `appends` (to the queues
    /// `queues`, one per distinct user), all in one atomic write: with
    /// `once = Some((key, tag))` only if `key` is new, in one transaction
    /// with recording `key → tag`; else as one sled batch. A crash keeps
    /// all of them or none. Returns the outcome and the seq of each append.
    pub(super) fn insert_all(
        &self,
        queues: &[Arc<UserQueue>],
        appends: &[Append],
        once: Option<(&str, u64)>,
    ) -> Result<(IdempotentAppend, Vec<u64>), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if let Some((key, _)) = once {
            self.index_expiry(expiry::ONCE, key.as_bytes(), self.once_ttl)?;
        }
        // Locked in id order, so two calls over the same users cannot
        // deadlock; each user's keys still enter the log in seq order.
        let mut order: Vec<usize> = (0..queues.len()).collect();
        order.sort_by_key(|&i| queues[i].id);
        let mut locked: Vec<Option<std::sync::MutexGuard<'_, QueueState>>> =
            queues.iter().map(|_| None).collect();
        for &i in &order {
            locked[i] = Some(queues[i].state());
        }
        let mut states: Vec<_> = locked.into_iter().flatten().collect();
        let ts = now_ms();
        let seqs: Vec<u64> = states.iter().map(|st| st.next_seq).collect();
        let values: Vec<Vec<u8>> = appends
            .iter()
            .zip(&seqs)
            .map(|(append, &seq)| stored_event(seq, append, ts))
            .collect();
        let outcome = match once {
            Some((key, tag)) => {
                let outcome = (&self.once, &self.events).transaction(|(once, events)| {
                    // The key keeps the tag and the seqs appended: the
                    // first call's answer, for its retries.
                    if let Some(first) = once.get(key)? {
                        return Ok(IdempotentAppend::Duplicate {
                            tag: be_u64(&first),
                            seqs: first
                                .get(8..)
                                .unwrap_or_default()
                                .chunks(8)
                                .map(be_u64)
                                .collect(),
                        });
                    }
                    let record: Vec<u8> = std::iter::once(tag)
                        .chain(seqs.iter().copied())
                        .flat_map(u64::to_be_bytes)
                        .collect();
                    once.insert(key, record)?;
                    for ((q, &seq), value) in queues.iter().zip(&seqs).zip(&values) {
                        events.insert(&event_key(q.id, seq), value.as_slice())?;
                    }
                    Ok::<_, ConflictableTransactionError<StoreError>>(IdempotentAppend::Appended {
                        seqs: seqs.clone(),
                    })
                });
                outcome.map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => StoreError::from(e),
                })?
            }
            None => {
                let mut batch = sled::Batch::default();
                for ((q, &seq), value) in queues.iter().zip(&seqs).zip(&values) {
                    batch.insert(&event_key(q.id, seq)[..], value.as_slice());
                }
                self.events.apply_batch(batch)?;
                IdempotentAppend::Appended { seqs: seqs.clone() }
            }
        };
        if let IdempotentAppend::Appended { .. } = outcome {
            for ((st, &seq), value) in states.iter_mut().zip(&seqs).zip(&values) {
                st.next_seq += 1;
                st.remember(seq, Bytes::copy_from_slice(&value[8..]));
            }
        }
        Ok((outcome, seqs))
    }

    /// [`Self::insert_all`] for `appends`, then waits until they are durable.
    pub(super) async fn append_all(
        &self,
        appends: Vec<Append>,
        once: Option<(&str, u64)>,
    ) -> Result<(IdempotentAppend, Vec<u64>), StoreError> {
        let mut queues = Vec::with_capacity(appends.len());
        for append in &appends {
            let q = self.queue(&append.uid)?;
            if queues.iter().any(|other: &Arc<UserQueue>| other.id == q.id) {
                return Err(StoreError::Io(format!(
                    "two events for {} in one atomic append",
                    append.uid
                )));
            }
            queues.push(q);
        }
        if queues.is_empty() {
            return Err(StoreError::Io("an atomic append of nothing".into()));
        }
        let (outcome, seqs) = self.insert_all(&queues, &appends, once)?;
        let marks: Marks = match outcome {
            IdempotentAppend::Appended { .. } => {
                self.metrics.appends.inc_by(queues.len() as u64);
                queues
                    .into_iter()
                    .zip(seqs.iter().copied())
                    .map(|(q, seq)| (q as Arc<dyn DurableMark>, seq))
                    .collect()
            }
            // The first attempt may still be on its way to the disk.
            IdempotentAppend::Duplicate { .. } => Vec::new(),
        };
        self.wait_durable(marks).await?;
        Ok((outcome, seqs))
    }

    pub(super) async fn wait_durable(&self, marks: Marks) -> Result<(), StoreError> {
        self.commit_later(marks)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queues `marks` for the next group commit; the receiver answers once
    /// they are durable (and visible).
    pub(super) fn commit_later(
        &self,
        marks: Marks,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (done, durable) = oneshot::channel();
        self.commit.submit(Waiter { marks, done })?;
        Ok(durable)
    }
}
