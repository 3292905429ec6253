//! Records with a lifetime (message records, idempotency keys, group
//! history): each gets an entry `deadline ++ tree ++ key` in the `expiry`
//! tree, ordered by deadline, so a pass finds what is due by reading the
//! front of one tree, never by scanning the records themselves.

use std::time::Duration;

use super::SledStore;
use crate::store::event::now_ms;
use crate::store::StoreError;

/// Tags of the tree an expiring key lives in.
pub(super) const KV: u8 = b'k';
pub(super) const ONCE: u8 = b'o';

/// Most records one pass removes; the next pass goes on.
const PASS: usize = 10_000;

impl SledStore {
    /// Records that `key` of tree `tag` is to be removed after `ttl`.
    pub(super) fn index_expiry(
        &self,
        tag: u8,
        key: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let deadline = now_ms().saturating_add(ttl.as_millis() as u64);
        let mut entry = Vec::with_capacity(9 + key.len());
        entry.extend_from_slice(&deadline.to_be_bytes());
        entry.push(tag);
        entry.extend_from_slice(key);
        self.expiry.insert(entry, &[])?;
        Ok(())
    }

    /// Gives every idempotency key a deadline of `ttl` from now: for keys
    /// written before they had one (herald 0.5). Returns how many.
    pub fn index_every_once_key(&self) -> Result<usize, StoreError> {
        let mut indexed = 0;
        for key in self.once.iter().keys() {
            self.index_expiry(ONCE, &key?, self.once_ttl)?;
            indexed += 1;
        }
        Ok(indexed)
    }

    /// Removes the records whose deadline passed (at most [`PASS`]).
    pub(super) fn expire_due(&self) -> Result<u64, StoreError> {
        let now = now_ms().to_be_bytes();
        let mut removed = 0;
        for item in self.expiry.range(..now.as_slice()).keys().take(PASS) {
            let entry = item?;
            if entry.len() > 9 {
                let key = &entry[9..];
                match entry[8] {
                    KV => self.kv.remove(key)?,
                    ONCE => self.once.remove(key)?,
                    _ => None,
                };
            }
            self.expiry.remove(&entry)?;
            removed += 1;
        }
        self.metrics.expired_records.inc_by(removed);
        Ok(removed)
    }
}
