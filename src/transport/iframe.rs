//! Hidden-iframe streaming ("forever frame"): a never-ending chunked HTML
//! document where each event is a `<script>` calling a function of the
//! parent page.
//!
//! The document ends after a bounded time or size (its DOM keeps every
//! script), with a last call telling the page to reopen it from its cursor.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Request;

use super::framer::{frames, Framer, Written};
use super::stream_response;
use super::subscription::{StreamRequest, Subscription};
use crate::app::App;
use crate::error::Error;
use crate::http::reply::Response;
use crate::http::request::Query;
use crate::hub::Transport;
use crate::store::event_seq;

/// The longest an iframe document stays open.
const LIFETIME: Duration = Duration::from_secs(300);
/// Browsers buffer the start of a document before running scripts in it.
const PADDING: usize = 2048;

/// `GET /v1/iframe?cursor=N&epoch=E&cb=NAME`
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
    let document = Document {
        callback,
        sent: 0,
        events: 0,
        budget: app.config.max_page_bytes(),
    };
    let frames = frames(subscription, connection, document);
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

/// One document: its callback and what it has written so far.
struct Document {
    callback: String,
    /// Bytes written so far.
    sent: usize,
    /// Events written so far.
    events: usize,
    /// Bytes after which the document ends (`--max-page-bytes`; escaping
    /// counted), though never before its first event.
    budget: usize,
}

impl Framer for Document {
    fn opening(&mut self, sub: &Subscription) -> Bytes {
        let mut doc = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>herald</title></head><body>\n<!--");
        doc.push_str(&" ".repeat(PADDING));
        doc.push_str("-->\n");
        // `ready` at once: the page knows the document streams (and a page
        // that does not see it within seconds is behind a buffering proxy).
        doc.push_str(&String::from_utf8_lossy(&self.call(&sub.ready_json())));
        self.written(Bytes::from(doc))
    }

    fn hello(&mut self, sub: &Subscription) -> Bytes {
        let call = self.call(&sub.hello_json());
        self.written(call)
    }

    /// One script calling the page with each event of a page, as many as
    /// fit the document's budget once escaped; the rest are left to the
    /// next document (the subscription is rewound to the last one written).
    fn events(&mut self, sub: &mut Subscription, start: u64, events: &[Bytes]) -> Written {
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
            sub.rewind(cursor);
        }
        self.events += written;
        chunk.push_str("</script>\n");
        let chunk = self.written(Bytes::from(chunk));
        Written {
            chunk,
            events: written,
            last: written < events.len() || self.sent >= self.budget,
        }
    }

    fn signals(&mut self, signals: &[Bytes]) -> Bytes {
        let calls: Vec<u8> = signals
            .iter()
            .flat_map(|signal| self.call(&script_safe_json(signal)))
            .collect();
        self.written(Bytes::from(calls))
    }

    fn heartbeat(&mut self, sub: &Subscription) -> Bytes {
        let call = self.call(&sub.heartbeat_json());
        self.written(call)
    }

    /// Tells the page where to reopen from, ends the document.
    fn end(&mut self, sub: &Subscription) -> Option<Bytes> {
        let end = format!(
            r#"{{"type":"reconnect","cursor":{},"epoch":"{}"}}"#,
            sub.cursor(),
            sub.epoch().map(|e| e.to_string()).unwrap_or_default()
        );
        let mut chunk = String::from_utf8_lossy(&self.call(&end)).into_owned();
        chunk.push_str("</body></html>\n");
        Some(self.written(Bytes::from(chunk)))
    }
}

impl Document {
    fn call(&self, json: &str) -> Bytes {
        Bytes::from(format!(
            "<script>parent.{}({});</script>\n",
            self.callback, json
        ))
    }

    /// Counts `chunk` as written.
    fn written(&mut self, chunk: Bytes) -> Bytes {
        self.sent += chunk.len();
        chunk
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
