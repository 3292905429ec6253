//! Hidden-iframe streaming ("forever frame"): a never-ending chunked HTML
//! document where each event is a `<script>` calling a function of the
//! parent page.
//!
//! The document ends after a bounded time or size (its DOM keeps every
//! script), with a last call telling the page to reopen it from its cursor.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use hyper::body::Frame;
use hyper::Request;

use super::stream_response;
use super::subscription::{Next, StreamRequest, Subscription};
use crate::app::App;
use crate::error::Error;
use crate::http::reply::Response;
use crate::http::request::Query;
use crate::hub::{Connection, Transport};
use crate::store::event_seq;

/// The longest an iframe document stays open.
const LIFETIME: Duration = Duration::from_secs(300);
/// Browsers buffer the start of a document before running scripts in it.
const PADDING: usize = 2048;

/// `GET /v1/iframe?cursor=N&cb=NAME`
pub async fn handle<B>(app: &Arc<App>, req: Request<B>) -> Result<Response, Error> {
    let stream = StreamRequest::parse(app, &req, Transport::Iframe)?;
    let callback = Query::of(&req).get("cb").unwrap_or("herald").to_owned();
    if !valid_callback(&callback) {
        return Err(Error::bad(
            "bad_callback",
            "cb must match ^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$",
        ));
    }
    let (mut subscription, connection) = stream.open(app).await?;
    subscription.end_after(LIFETIME);
    let state = Document {
        sub: subscription,
        conn: connection,
        callback,
        sent: 0,
        events: 0,
        budget: app.config.max_page_bytes(),
        stage: Stage::Opening,
    };
    let frames = stream::unfold(state, |mut doc| async move {
        let chunk = doc.next_chunk().await?;
        doc.sent += chunk.len();
        Some((Ok::<_, Infallible>(Frame::data(chunk)), doc))
    });
    Ok(stream_response(
        frames,
        "text/html; charset=utf-8",
        "no-cache, no-store",
    ))
}

/// `^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$`: a JavaScript name path, nothing that
/// could inject code into the script it is written into.
pub fn valid_callback(cb: &str) -> bool {
    let mut chars = cb.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
    first_ok
        && cb.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

/// Makes JSON safe inside an HTML `<script>`: no `</script>`, no `<!--`, and
/// no U+2028/2029 (line terminators in older JavaScript). Only string
/// contents can hold these characters, where `\uXXXX` means the same.
pub fn script_safe_json(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

enum Stage {
    Opening,
    Streaming,
    /// The budget is spent: the next chunk closes the document.
    Full,
    Done,
}

struct Document {
    sub: Subscription,
    conn: Connection,
    callback: String,
    /// Bytes written so far.
    sent: usize,
    /// Events written so far.
    events: usize,
    /// Bytes after which the document ends (`--max-page-bytes`; escaping
    /// counted), though never before its first event.
    budget: usize,
    stage: Stage,
}

impl Document {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.stage {
            Stage::Opening => {
                self.stage = Stage::Streaming;
                return Some(self.opening());
            }
            Stage::Done => return None,
            Stage::Full => return Some(self.closing()),
            Stage::Streaming => {}
        }
        if self.sent >= self.budget {
            return Some(self.closing());
        }
        let start = self.sub.cursor();
        match self.sub.next().await {
            Ok(Next::Events(events)) => Some(self.scripts(start, &events)),
            Ok(Next::Heartbeat) => Some(self.call(&self.sub.heartbeat_json())),
            Ok(Next::End(_)) => Some(self.closing()),
            Err(e) => {
                tracing::warn!("iframe stream of {} ended: {e}", self.conn.uid());
                Some(self.closing())
            }
        }
    }

    /// One script calling the page with each event of a page, as many as
    /// fit the document's budget once escaped; the rest are left to the
    /// next document (the subscription is rewound to the last one written).
    fn scripts(&mut self, start: u64, events: &[Bytes]) -> Bytes {
        let mut chunk = String::from("<script>");
        let mut cursor = start;
        let mut written = 0;
        for event in events {
            let call = format!("parent.{}({});", self.callback, script_safe_json(event));
            let over = self.sent + chunk.len() + call.len() > self.budget;
            if over && self.events + written > 0 {
                break;
            }
            chunk.push_str(&call);
            written += 1;
            cursor = event_seq(event).unwrap_or(cursor);
        }
        if written < events.len() {
            self.sub.rewind(cursor);
            self.stage = Stage::Full;
        }
        self.events += written;
        if written == 0 {
            return self.closing();
        }
        chunk.push_str("</script>\n");
        self.conn.sent(written, chunk.len());
        Bytes::from(chunk)
    }

    fn opening(&self) -> Bytes {
        let mut doc = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>herald</title></head><body>\n<!--");
        doc.push_str(&" ".repeat(PADDING));
        doc.push_str("-->\n");
        Bytes::from(doc)
    }

    /// The last chunk: tells the page where to reopen from, ends the document.
    fn closing(&mut self) -> Bytes {
        self.stage = Stage::Done;
        let end = format!(r#"{{"type":"reconnect","cursor":{}}}"#, self.sub.cursor());
        let mut chunk = String::from_utf8_lossy(&self.call(&end)).into_owned();
        chunk.push_str("</body></html>\n");
        Bytes::from(chunk)
    }

    fn call(&self, json: &str) -> Bytes {
        Bytes::from(format!(
            "<script>parent.{}({});</script>\n",
            self.callback, json
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn no_string_can_close_the_script_or_break_a_line(text in any::<String>()) {
            let json = serde_json::to_vec(&serde_json::json!({"body": text})).unwrap();
            let safe = script_safe_json(&json);
            let lower = safe.to_ascii_lowercase();
            prop_assert!(!lower.contains("</script") && !safe.contains("<!--"));
            let separators = safe.contains(['\u{2028}', '\u{2029}']);
            prop_assert!(!separators);
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            prop_assert_eq!(&back["body"], &serde_json::json!(text));
        }

        #[test]
        fn a_valid_callback_is_a_plain_name_path(cb in any::<String>()) {
            if valid_callback(&cb) {
                prop_assert!(cb.len() <= 64);
                prop_assert!(cb.chars().all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c)));
            }
        }
    }

    #[test]
    fn callbacks_are_plain_name_paths() {
        for ok in [
            "cb",
            "_x",
            "$",
            "herald.deliver",
            "a1.b2$_",
            &"a".repeat(64),
        ] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a b",
            "alert(1)",
            "a;b",
            "a-b",
            "x</script>",
            "a\nb",
            &"a".repeat(65),
            "é",
        ] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn json_cannot_close_the_script() {
        let text = "{\"body\":\"</script><script>alert(1)</script><!-- & \u{2028}\u{2029}\"}";
        let json = text.as_bytes();
        let safe = script_safe_json(json);
        assert!(!safe.contains(['<', '>', '&', '\u{2028}', '\u{2029}']));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        let orig: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(back, orig);
    }
}
