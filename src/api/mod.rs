//! The backend API (`/api/v1/*`, API key): what a chat backend calls to
//! mint tokens and publish events, and the feed it reads or has pushed.

pub mod feed;
pub mod notices;
pub mod publish;
pub mod social;
pub mod tokens;
pub mod webhook;

use sha2::{Digest, Sha256};

/// A fingerprint of a request's content, 52 bits (a value every store keeps
/// exactly): a retry under the same `Idempotency-Key` must carry the same
/// content, else it is refused (409 `idempotency_key_reused`).
fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 12
}
