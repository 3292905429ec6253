//! The read path of the sled store: a page after a cursor, from the
//! newest events kept in memory, the keys in sled, and the fan-out records
//! not yet expanded, merged in seq order up to the durable mark.

use super::*;

impl SledStore {
    /// The page of `q` after `after` (see [`EventQueue::read`]).
    pub(super) fn read_queue(
        &self,
        q: &UserQueue,
        after: u64,
        limit: PageLimit,
    ) -> Result<Page, StoreError> {
        loop {
            if let Some(page) = self.read_once(q, after, limit)? {
                return Ok(page);
            }
        }
    }

    /// One read attempt; `None` if retention trimmed into the range meanwhile.
    pub(super) fn read_once(
        &self,
        q: &UserQueue,
        after: u64,
        limit: PageLimit,
    ) -> Result<Option<Page>, StoreError> {
        let head = q.head();
        let (trimmed, pending) = {
            let st = q.state();
            if after >= st.trimmed {
                if let Some((events, cursor)) = st.recent_after(after, head, limit) {
                    return Ok(Some(Page {
                        events,
                        cursor,
                        head,
                        epoch: self.epoch,
                    }));
                }
            }
            // Taken before sled is read: an event leaves `pending` only
            // once it is in sled, so it is in one or the other (or both).
            // In seq order: no page takes more than its first few.
            let start = st.pending.partition_point(|(seq, _)| *seq <= after);
            let pending: Vec<(u64, Bytes)> = st.pending[start..]
                .iter()
                .take_while(|(seq, _)| *seq <= head)
                .take(limit.events.max(1))
                .cloned()
                .collect();
            (st.trimmed, pending)
        };
        let mut page = Page {
            events: Vec::new(),
            cursor: after,
            head,
            epoch: self.epoch,
        };
        let mut from = after;
        let mut bytes = 0;
        if after < trimmed {
            let gap = gap_event(after + 1, trimmed, now_ms());
            bytes += gap.len();
            page.events.push(gap);
            page.cursor = trimmed;
            from = trimmed;
        }
        if from < head {
            let pending: Vec<_> = pending.into_iter().filter(|(seq, _)| *seq > from).collect();
            // A stream behind a sustained fan-out reads events not expanded
            // yet: when they alone fill the page from `from` on, sled is
            // not read.
            let alone = pending.len() == limit.events.max(1)
                || pending.last().is_some_and(|(seq, _)| *seq == head);
            let alone = alone
                && (pending.iter().enumerate()).all(|(i, (seq, _))| *seq == from + 1 + i as u64);
            let stored = match alone {
                true => None,
                false => Some(values::stored(
                    &self.events,
                    &self.shared,
                    q.id,
                    from + 1,
                    head,
                )?),
            };
            let mut pending = pending.into_iter().peekable();
            // Both in seq order: merged, a seq in both once.
            let mut add = |seq: u64, json: Bytes| {
                if !limit.fits(page.events.len(), bytes, json.len()) {
                    return false;
                }
                bytes += json.len();
                page.cursor = seq;
                page.events.push(json);
                true
            };
            let mut full = false;
            'stored: for item in stored.into_iter().flatten() {
                let (seq, _, json) = item?;
                while let Some((first, _)) = pending.peek() {
                    if *first > seq {
                        break;
                    }
                    let (first, json) = pending.next().expect("peeked");
                    if first < seq && !add(first, json) {
                        full = true;
                        break 'stored;
                    }
                }
                if !add(seq, json) {
                    full = true;
                    break;
                }
            }
            if !full {
                for (seq, json) in pending {
                    if !add(seq, json) {
                        break;
                    }
                }
            }
        }
        Ok((q.state().trimmed <= from).then_some(page))
    }
}
