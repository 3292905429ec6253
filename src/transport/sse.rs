//! Server-Sent Events: `text/event-stream`, one `id:`/`event:`/`data:`
//! block per event, resumable with `Last-Event-ID`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::Request;
use serde::Deserialize;

use super::framer::{frames, Framer, Written};
use super::stream_response;
use super::subscription::{StreamRequest, Subscription};
use crate::app::App;
use crate::error::Error;
use crate::http::reply::Response;
use crate::hub::Transport;
use crate::store::event_head;

/// How long the browser waits before reconnecting, in ms.
const RETRY_MS: u32 = 1000;

/// `GET /v1/sse?cursor=N&epoch=E` (or `Last-Event-ID: N:E`, which wins: it
/// is what EventSource sends when it reconnects to the same URL).
pub async fn handle<B>(app: &Arc<App>, req: Request<B>) -> Result<Response, Error> {
    let (subscription, connection) = StreamRequest::parse(app, &req, Transport::Sse)?
        .open(app)
        .await?;
    let frames = frames(subscription, connection, SseFramer);
    Ok(stream_response(
        frames,
        "text/event-stream; charset=utf-8",
        "no-cache",
    ))
}

/// SSE: `retry:` and a `ready` event first, a `hello` before the first events, an
/// `id: seq:epoch`/`event`/`data` block per event, a comment or an `hb`
/// event as keepalive; the stream just ends.
struct SseFramer;

impl Framer for SseFramer {
    fn opening(&mut self, sub: &Subscription) -> Bytes {
        // `ready` at once: a client that does not see it within seconds is
        // behind something that buffers the stream (herald.js falls back).
        Bytes::from(format!(
            "retry: {RETRY_MS}\n: herald\n\nevent: ready\ndata: {}\n\n",
            sub.ready_json()
        ))
    }

    fn hello(&mut self, sub: &Subscription) -> Bytes {
        Bytes::from(format!("event: hello\ndata: {}\n\n", sub.hello_json()))
    }

    fn events(&mut self, sub: &mut Subscription, _: u64, events: &[Bytes]) -> Written {
        Written {
            chunk: frame_events(
                events,
                &sub.epoch().map(|e| e.to_string()).unwrap_or_default(),
            ),
            events: events.len(),
            last: false,
        }
    }

    // Without an id: a signal is not part of the queue, and
    // `Last-Event-ID` stays the last event's.
    fn signals(&mut self, signals: &[Bytes]) -> Bytes {
        let mut out = BytesMut::new();
        for signal in signals {
            let Ok(head) = serde_json::from_slice::<SignalHead>(signal) else {
                continue;
            };
            out.put_slice(format!("event: {}\ndata: ", head.kind).as_bytes());
            out.put_slice(signal);
            out.put_slice(b"\n\n");
        }
        out.freeze()
    }

    // A keepalive: an `hb` event without an id (not a comment, which
    // EventSource hides from the page: herald.js watches for heartbeats).
    fn heartbeat(&mut self, sub: &Subscription) -> Bytes {
        Bytes::from(format!("event: hb\ndata: {}\n\n", sub.heartbeat_json()))
    }

    fn end(&mut self, _: &Subscription) -> Option<Bytes> {
        None
    }
}

#[derive(Deserialize)]
struct EventHead<'a> {
    seq: u64,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

/// The type of a signal (herald writes them: one word).
#[derive(Deserialize)]
struct SignalHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
}

/// All events of a page as one chunk (one write for the whole page). Each
/// `id:` is `SEQ:EPOCH`, which EventSource sends back as `Last-Event-ID`.
fn frame_events(events: &[Bytes], epoch: &str) -> Bytes {
    let size: usize = events.iter().map(|e| e.len() + 48).sum();
    let mut out = BytesMut::with_capacity(size);
    for event in events {
        // Stored events are compact JSON (a single data line) that start
        // with their seq and type: read from the prefix, not re-parsed.
        let parsed;
        let (seq, kind) = match event_head(event) {
            Some(head) => head,
            None => {
                let Ok(head) = serde_json::from_slice::<EventHead>(event) else {
                    continue;
                };
                parsed = head;
                (parsed.seq, parsed.kind.as_ref())
            }
        };
        out.put_slice(format!("id: {seq}:{epoch}\n").as_bytes());
        // Types are checked at publish; a line break could still never
        // start a field of its own here.
        if !kind.contains(['\r', '\n']) {
            out.put_slice(format!("event: {kind}\n").as_bytes());
        }
        out.put_slice(b"data: ");
        out.put_slice(event);
        out.put_slice(b"\n\n");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::store::event_json;

    proptest! {
        #[test]
        fn every_event_is_one_block_with_one_id_and_one_data_line(
            seq in any::<u64>(),
            kind in any::<String>(),
            text in any::<String>(),
        ) {
            let data = serde_json::to_string(&serde_json::json!({"text": text})).unwrap();
            let event = Bytes::from(event_json(seq, &kind, 1, &data));
            let framed = frame_events(std::slice::from_ref(&event), "e1");
            let framed = std::str::from_utf8(&framed).unwrap();
            prop_assert!(framed.ends_with("\n\n"));
            let block = &framed[..framed.len() - 2];
            prop_assert!(!block.contains("\n\n") && !block.contains('\r'));
            let lines: Vec<&str> = block.split('\n').collect();
            let ids: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("id:")).collect();
            let datas: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("data:")).collect();
            let id = format!("id: {seq}:e1");
            prop_assert_eq!(ids, vec![id.as_str()]);
            prop_assert_eq!(datas.len(), 1);
            if !kind.contains(['\r', '\n']) {
                let event_line = format!("event: {kind}");
                prop_assert!(lines.contains(&event_line.as_str()));
            }
            let back: serde_json::Value = serde_json::from_str(&datas[0]["data: ".len()..]).unwrap();
            prop_assert_eq!(&back["data"]["text"], &serde_json::json!(text));
        }
    }
}
