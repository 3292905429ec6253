//! The JSON form of an event, written once at append time and served as is.

use bytes::Bytes;

/// `{"seq":…,"type":…,"ts":…,"data":…}` with `data` already valid JSON.
pub fn event_json(seq: u64, kind: &str, ts: u64, data: &str) -> String {
    let json = event_json_with(seq, &event_tail(kind, ts, data));
    // Made of valid UTF-8 pieces.
    String::from_utf8(json).unwrap_or_default()
}

/// What follows the seq in [`event_json`]: events of one type, ts and
/// data (a fan-out) share it, and each is [`event_json_with`] its seq.
pub fn event_tail(kind: &str, ts: u64, data: &str) -> String {
    // serde_json::to_string of a &str cannot fail.
    let kind = serde_json::to_string(kind).unwrap_or_else(|_| "\"\"".into());
    format!(r#","type":{kind},"ts":{ts},"data":{data}}}"#)
}

/// [`event_json`] of `seq` from its [`event_tail`].
pub fn event_json_with(seq: u64, tail: &str) -> Vec<u8> {
    let mut json = Vec::with_capacity(27 + tail.len());
    write_event_json(&mut json, seq, tail);
    json
}

/// Writes [`event_json_with`]'s event to the end of `out`.
pub fn write_event_json(out: &mut impl bytes::BufMut, seq: u64, tail: &str) {
    let mut digits = itoa::Buffer::new();
    out.put_slice(br#"{"seq":"#);
    out.put_slice(digits.format(seq).as_bytes());
    out.put_slice(tail.as_bytes());
}

/// The seq of an event written by [`event_json`] (it comes first).
pub fn event_seq(json: &[u8]) -> Option<u64> {
    let digits = json.strip_prefix(br#"{"seq":"#)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The seq and type of an event written by [`event_json`], read from its
/// fixed prefix `{"seq":N,"type":"T",` without parsing the rest; `None`
/// for a type that needed escaping.
pub fn event_head(json: &[u8]) -> Option<(u64, &str)> {
    let seq = event_seq(json)?;
    let after_seq = &json[br#"{"seq":"#.len()..];
    let digits = after_seq.iter().position(|b| !b.is_ascii_digit())?;
    let kind = after_seq[digits..].strip_prefix(br#","type":""#)?;
    let end = kind.iter().position(|&b| b == b'"' || b == b'\\')?;
    if kind[end] != b'"' {
        return None;
    }
    Some((seq, std::str::from_utf8(&kind[..end]).ok()?))
}

/// The `gap` event a reader gets when its cursor points below what is
/// retained: events `from..=to` are gone, resynchronise.
pub fn gap_event(from: u64, to: u64, ts: u64) -> Bytes {
    Bytes::from(event_json(
        to,
        "gap",
        ts,
        &format!(r#"{{"from":{from},"to":{to}}}"#),
    ))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_its_seq_then_its_tail() {
        let json = event_json(42, "a\"b", 7, r#"{"x":[1]}"#);
        assert_eq!(json, r#"{"seq":42,"type":"a\"b","ts":7,"data":{"x":[1]}}"#);
        let tail = event_tail("a\"b", 7, r#"{"x":[1]}"#);
        assert_eq!(event_json_with(42, &tail), json.as_bytes());
        assert_eq!(event_seq(json.as_bytes()), Some(42));
        let max = event_json_with(u64::MAX, &tail);
        assert_eq!(event_seq(&max), Some(u64::MAX));
    }
}
