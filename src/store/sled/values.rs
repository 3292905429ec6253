//! What a key of the `events` tree holds: one event, or a run of events.
//!
//! A key is (user id, seq). Its value is either ONE event, `ts ++ JSON`
//! (what an append writes), or a run of events with consecutive seqs from
//! the key's: a RUN `0xFF ++ (ts ++ len ++ JSON)…` (what herald 0.9's
//! expansion of fan-out records wrote), or a run of REFERENCES `0xFE ++
//! (ts ++ record id)…`, each to a shared record of the `shared` tree that
//! holds the event's type and data once for all its recipients (what the
//! expansion writes now, see `fanout.rs`: 16 bytes per user and event, one
//! key per user for many records). A ts in ms never starts with 0xFF or
//! 0xFE, so the first byte tells them apart, and the data of earlier
//! versions reads as it is.
//!
//! A reader that wants seq N starts at the last key ≤ N: a run that starts
//! before N may hold it.

use bytes::Bytes;

use super::{be_u64, event_key, fanout};
use crate::store::StoreError;

/// The first byte of a run.
const RUN: u8 = 0xFF;

/// The first byte of a run of references.
const REFS: u8 = 0xFE;

/// Where a stored event's JSON is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body<'a> {
    /// In the value itself.
    Json(&'a [u8]),
    /// Made from the shared record with this id and the event's seq.
    Shared(u64),
}

/// The stored form of one event: ts (for retention) ++ its JSON.
pub(super) fn single(ts: u64, json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + json.len());
    value.extend_from_slice(&ts.to_be_bytes());
    value.extend_from_slice(json);
    value
}

/// The stored form of events with consecutive seqs: `(ts, JSON)` each (as
/// herald 0.9 wrote them).
#[cfg(test)]
pub(super) fn run<'a>(events: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut value = vec![RUN];
    for (ts, json) in events {
        value.extend_from_slice(&ts.to_be_bytes());
        value.extend_from_slice(&(json.len() as u32).to_be_bytes());
        value.extend_from_slice(json);
    }
    value
}

/// The stored form of references with consecutive seqs: `(ts, record id)`
/// each.
pub(super) fn refs(events: impl IntoIterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut value = vec![REFS];
    for (ts, record) in events {
        value.extend_from_slice(&ts.to_be_bytes());
        value.extend_from_slice(&record.to_be_bytes());
    }
    value
}

/// The events of a value stored at seq `first`: (seq, ts, body) each. A
/// torn run ends where it tears.
pub(super) fn decode(first: u64, value: &[u8]) -> Vec<(u64, u64, Body<'_>)> {
    match value.first() {
        Some(&RUN) => {}
        Some(&REFS) => {
            let pairs = value[1..].chunks_exact(16);
            return (first..)
                .zip(pairs)
                .map(|(seq, pair)| (seq, be_u64(&pair[..8]), Body::Shared(be_u64(&pair[8..]))))
                .collect();
        }
        _ => {
            return match value.get(8..) {
                Some(json) => vec![(first, be_u64(value), Body::Json(json))],
                None => Vec::new(),
            }
        }
    }
    let mut events = Vec::new();
    let mut rest = &value[1..];
    while rest.len() >= 12 {
        let ts = be_u64(&rest[..8]);
        let len = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let Some(json) = rest.get(12..12 + len) else {
            break;
        };
        events.push((first + events.len() as u64, ts, Body::Json(json)));
        rest = &rest[12 + len..];
    }
    events
}

/// A stored event's JSON, or the shared record it is made from.
enum Stored {
    Json(Bytes),
    Shared(u64),
}

/// User `id`'s stored events with seqs in `from..=to`, in seq order:
/// (seq, ts, what holds it) each. Nothing is looked up.
fn entries(
    events: &sled::Tree,
    id: u64,
    from: u64,
    to: u64,
) -> Result<impl Iterator<Item = Result<(u64, u64, Stored), StoreError>>, StoreError> {
    let keys = events.range(event_key(id, run_start(events, id, from)?)..=event_key(id, to));
    Ok(keys.flat_map(move |item| -> Vec<Result<_, StoreError>> {
        let (key, value) = match item {
            Ok(item) => item,
            Err(e) => return vec![Err(e.into())],
        };
        decode(be_u64(&key[8..]), &value)
            .into_iter()
            .filter(|(seq, _, _)| (from..=to).contains(seq))
            .map(|(seq, ts, body)| {
                let stored = match body {
                    Body::Json(json) => Stored::Json(Bytes::copy_from_slice(json)),
                    Body::Shared(record) => Stored::Shared(record),
                };
                Ok((seq, ts, stored))
            })
            .collect()
    }))
}

/// User `id`'s stored events with seqs in `from..=to`, in seq order:
/// (seq, ts) each, without making their JSON.
pub(super) fn stored_ts(
    events: &sled::Tree,
    id: u64,
    from: u64,
    to: u64,
) -> Result<impl Iterator<Item = Result<(u64, u64), StoreError>>, StoreError> {
    Ok(entries(events, id, from, to)?.map(|item| item.map(|(seq, ts, _)| (seq, ts))))
}

/// User `id`'s stored events with seqs in `from..=to`, in seq order:
/// (seq, ts, JSON) each, a reference made into its event from the `shared`
/// tree as the caller takes it (a page takes what it holds, not a whole
/// run). A reference whose record is gone (retention removed it while
/// this read) is left out: the reader sees the trimmed mark moved, and
/// reads again.
pub(super) fn stored<'a>(
    events: &sled::Tree,
    shared: &'a sled::Tree,
    id: u64,
    from: u64,
    to: u64,
) -> Result<impl Iterator<Item = Result<(u64, u64, Bytes), StoreError>> + 'a, StoreError> {
    let entries = entries(events, id, from, to)?;
    Ok(entries.filter_map(move |item| match item {
        Ok((seq, ts, Stored::Json(json))) => Some(Ok((seq, ts, json))),
        Ok((seq, ts, Stored::Shared(record))) => match fanout::event_of(shared, record, seq) {
            Ok(Some(json)) => Some(Ok((seq, ts, json))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        },
        Err(e) => Some(Err(e)),
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
        let json = |j: &'static [u8]| Body::Json(j);
        assert_eq!(decode(7, &single(99, b"{}")), vec![(7, 99, json(b"{}"))]);
        let events: [(u64, &[u8]); 3] = [(1, b"{\"a\":1}"), (2, b""), (u64::MAX, b"[3]")];
        let value = run(events);
        let decoded = decode(10, &value);
        assert_eq!(
            decoded,
            vec![
                (10, 1, json(b"{\"a\":1}")),
                (11, 2, json(b"")),
                (12, u64::MAX, json(b"[3]"))
            ]
        );
        for cut in 0..value.len() {
            let torn = decode(10, &value[..cut]);
            assert_eq!(torn[..], decoded[..torn.len()], "cut at {cut}");
            assert!(torn.len() < 3);
        }
        // References: (ts, record) each; a torn one is left out.
        let value = refs([(5, 70), (6, u64::MAX)]);
        let decoded = vec![(3, 5, Body::Shared(70)), (4, 6, Body::Shared(u64::MAX))];
        assert_eq!(decode(3, &value), decoded);
        for cut in 0..value.len() {
            assert_eq!(
                decode(3, &value[..cut])[..],
                decoded[..(cut.max(1) - 1) / 16]
            );
        }
        // A ts in ms (years from now) never starts a value with a marker.
        let first = single(crate::store::event::now_ms() * 1000, b"{}")[0];
        assert!(first != RUN && first != REFS);
    }
}
