//! What a key of the `events` tree holds: one event, or a run of events.
//!
//! A key is (user id, seq). Its value is either ONE event, `ts ++ JSON`
//! (what an append writes), or a RUN of events with consecutive seqs from
//! the key's: `0xFF ++ (ts ++ len ++ JSON)…` (what the expansion of fan-out
//! records writes: one key per user for many records, so a sustained
//! fan-out does not cost one sled insert per event). A ts in ms never
//! starts with 0xFF, so the first byte tells them apart, and the data of
//! earlier versions (one event per key) reads as it is.
//!
//! A reader that wants seq N starts at the last key ≤ N: a run that starts
//! before N may hold it.

use bytes::Bytes;

use super::{be_u64, event_key};
use crate::store::StoreError;

/// The first byte of a run.
const RUN: u8 = 0xFF;

/// The stored form of one event: ts (for retention) ++ its JSON.
pub(super) fn single(ts: u64, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + json.len());
    value.extend_from_slice(&ts.to_be_bytes());
    value.extend_from_slice(json);
    value
}

/// The stored form of events with consecutive seqs: `(ts, JSON)` each.
pub(super) fn run<'a>(events: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut value = vec![RUN];
    for (ts, json) in events {
        value.extend_from_slice(&ts.to_be_bytes());
        value.extend_from_slice(&(json.len() as u32).to_be_bytes());
        value.extend_from_slice(json);
    }
    value
}

/// The events of a value stored at seq `first`: (seq, ts, JSON) each. A
/// torn run ends where it tears.
pub(super) fn decode(first: u64, value: &[u8]) -> Vec<(u64, u64, &[u8])> {
    if value.first() != Some(&RUN) {
        return match value.get(8..) {
            Some(json) => vec![(first, be_u64(value), json)],
            None => Vec::new(),
        };
    }
    let mut events = Vec::new();
    let mut rest = &value[1..];
    while rest.len() >= 12 {
        let ts = be_u64(&rest[..8]);
        let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let Some(json) = rest.get(12..12 + len) else {
            break;
        };
        events.push((first + events.len() as u64, ts, json));
        rest = &rest[12 + len..];
    }
    events
}

/// User `id`'s stored events with seqs in `from..=to`, in seq order:
/// (seq, ts, JSON) each.
pub(super) fn stored(
    events: &sled::Tree,
    id: u64,
    from: u64,
    to: u64,
) -> Result<impl Iterator<Item = Result<(u64, u64, Bytes), StoreError>>, StoreError> {
    let keys = events.range(event_key(id, run_start(events, id, from)?)..=event_key(id, to));
    Ok(keys.flat_map(move |item| -> Vec<Result<_, StoreError>> {
        match item {
            Ok((key, value)) => decode(be_u64(&key[8..]), &value)
                .into_iter()
                .filter(|(seq, _, _)| (from..=to).contains(seq))
                .map(|(seq, ts, json)| Ok((seq, ts, Bytes::copy_from_slice(json))))
                .collect(),
            Err(e) => vec![Err(e.into())],
        }
    }))
}

/// The seq of the key that holds user `id`'s event `seq` if a run holds
/// it, else `seq`.
pub(super) fn run_start(events: &sled::Tree, id: u64, seq: u64) -> Result<u64, StoreError> {
    if let Some(item) = events
        .range(event_key(id, 0)..=event_key(id, seq))
        .next_back()
    {
        let (key, value) = item?;
        let first = be_u64(&key[8..]);
        if first + decode(first, &value).len() as u64 > seq {
            return Ok(first);
        }
    }
    Ok(seq)
}

/// The highest seq stored for user `id` (0: none).
pub(super) fn last_stored(events: &sled::Tree, id: u64) -> Result<u64, StoreError> {
    match events.scan_prefix(id.to_be_bytes()).next_back() {
        Some(item) => {
            let (key, value) = item?;
            let first = be_u64(&key[8..]);
            Ok(decode(first, &value).last().map_or(first, |e| e.0))
        }
        None => Ok(0),
    }
}

/// Whether user `id`'s event `seq` is stored (alone or in a run).
pub(super) fn is_stored(events: &sled::Tree, id: u64, seq: u64) -> Result<bool, StoreError> {
    let start = run_start(events, id, seq)?;
    Ok(match events.get(event_key(id, start))? {
        Some(value) => decode(start, &value).len() as u64 > seq - start,
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_decodes_to_its_events_and_a_torn_run_to_its_whole_events() {
        assert_eq!(decode(7, &single(99, b"{}")), vec![(7, 99, &b"{}"[..])]);
        let events: [(u64, &[u8]); 3] = [(1, b"{\"a\":1}"), (2, b""), (u64::MAX, b"[3]")];
        let value = run(events);
        let decoded = decode(10, &value);
        assert_eq!(
            decoded,
            vec![
                (10, 1, &b"{\"a\":1}"[..]),
                (11, 2, &b""[..]),
                (12, u64::MAX, &b"[3]"[..])
            ]
        );
        for cut in 0..value.len() {
            let torn = decode(10, &value[..cut]);
            assert_eq!(torn[..], decoded[..torn.len()], "cut at {cut}");
            assert!(torn.len() < 3);
        }
        // A ts in ms (years from now) never starts a value with the marker.
        assert_ne!(single(crate::store::event::now_ms() * 1000, b"{}")[0], RUN);
    }
}
