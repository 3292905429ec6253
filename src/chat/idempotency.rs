//! Idempotency keys of backend writes (the `Idempotency-Key` header): a
//! retry of a write whose outcome the backend could not know (herald
//! answered 504 `outcome_unknown`, or the answer was lost on the way) gets
//! the first answer and changes nothing more, for as long as the key is
//! kept (`--queue-max-age`). A retry must carry the same content: the same
//! key for another write is refused (409 `idempotency_key_reused`).
//!
//! The key's record holds a fingerprint of the content and the first
//! answer. Each write decides how its record is made atomic with what it
//! changes (a publish keeps it with its appends; a counter with its total).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::Records;

/// One write's idempotency key, with the fingerprint of its content.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The store key of its record (`idem/{write}/{key}`).
    pub record: String,
    /// 52 bits of SHA-256 of the content: a value every store keeps
    /// exactly (Redis scripts count in doubles).
    pub fingerprint: u64,
}

impl IdempotencyKey {
    /// `key` (the header's value) of a `write` (a name per route and
    /// target) whose content is `content`.
    pub fn new(write: &str, key: &str, content: &[&[u8]]) -> IdempotencyKey {
        let mut hash = Sha256::new();
        for part in content {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        IdempotencyKey {
            record: format!("idem/{write}/{key}"),
            fingerprint: u64::from_be_bytes(first) >> 12,
        }
    }

    /// The 409 of a key used before for other content.
    pub fn reused() -> Error {
        Error::Conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for another request".into(),
        )
    }

    /// The record that keeps `answer` under this key.
    pub fn record_of(&self, answer: &str) -> Vec<u8> {
        format!("{:x} {answer}", self.fingerprint).into_bytes()
    }

    /// The answer kept in `record`, if it was for this content.
    fn answer_in(&self, record: &[u8]) -> Result<String, Error> {
        let text = String::from_utf8_lossy(record);
        let (fingerprint, answer) = text.split_once(' ').unwrap_or(("", ""));
        if u64::from_str_radix(fingerprint, 16).ok() != Some(self.fingerprint) {
            return Err(IdempotencyKey::reused());
        }
        Ok(answer.to_owned())
    }

    /// The first answer under this key, if there was one.
    pub async fn first(&self, store: &dyn Records) -> Result<Option<String>, Error> {
        match store.kv_get(&self.record).await? {
            Some(record) => self.answer_in(&record).map(Some),
            None => Ok(None),
        }
    }

    /// Keeps `answer` under this key unless one is kept already; returns
    /// the answer that holds (this one, or the first). Durable when it
    /// returns.
    pub async fn reserve(
        &self,
        store: &dyn Records,
        answer: &str,
        ttl: Duration,
    ) -> Result<String, Error> {
        store.expire(&self.record, ttl).await?;
        if store
            .kv_swap(&self.record, None, self.record_of(answer))
            .await?
        {
            return Ok(answer.to_owned());
        }
        match self.first(store).await? {
            Some(first) => Ok(first),
            // Expired between the two calls: keep this one.
            None => Ok(answer.to_owned()),
        }
    }

    /// Whether this call is the first to reach `step` of the write under
    /// this key (a retry of a write whose first attempt stopped half way
    /// does the steps that were not done). Durable when it returns.
    pub async fn claim(
        &self,
        store: &dyn Records,
        step: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let record = format!("{}/{step}", self.record);
        store.expire(&record, ttl).await?;
        Ok(store.kv_swap(&record, None, b"1".to_vec()).await?)
    }
}
