//! The message hook (`--message-hook`): the backend allows, denies or
//! rewrites each client message (direct or group) before herald accepts
//! it, for moderation. One `POST` per message with
//! `{"kind": "direct"|"group", "from", "to"|"gid", "body", "cid"}`; the
//! answer is `{"allow": true}`, `{"allow": true, "body": …}` (rewritten) or
//! `{"allow": false, "reason": "…"}`. A hook that does not answer within
//! `--message-hook-timeout-ms`, or answers anything else, counts as a
//! failure: `--message-hook-failure deny` (default) refuses the message with
//! 503 `hook_unavailable`, `allow` sends it as it is.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::Error;
use crate::uid::Uid;

/// The most of a hook's answer herald reads.
const MAX_ANSWER: usize = 1 << 20;

/// Whom a message goes to, as the hook is told.
pub enum Target<'a> {
    Direct(&'a Uid),
    Group(&'a str),
}

pub struct MessageHook {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    timeout: Duration,
    fail_open: bool,
    /// Most bytes of a rewritten body: the same as of a body a client sends
    /// (`--max-body`).
    max_body: usize,
}

#[derive(Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    body: Option<Value>,
}

/// `url` as the address of a backend endpoint given with `flag`: plain
/// `http://` with a host; `Err` with a reason otherwise.
pub fn backend_url(flag: &str, url: &str) -> Result<Uri, String> {
    let parsed: Uri = url.parse().map_err(|e| format!("{flag} {url:?}: {e}"))?;
    if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
        return Err(format!(
            "{flag} must be an http:// URL of your backend (TLS: put it on the private network or behind a local proxy), got {url}"
        ));
    }
    Ok(parsed)
}

impl MessageHook {
    /// A hook at `url` (plain `http://`); `Err` with a reason otherwise.
    pub fn new(
        url: &str,
        timeout: Duration,
        fail_open: bool,
        max_body: usize,
    ) -> Result<MessageHook, String> {
        let url = backend_url("--message-hook", url)?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(MessageHook {
            client,
            url,
            timeout,
            fail_open,
            max_body,
        })
    }

    /// Asks the hook about `body` from `from` to `to`: the body to send
    /// (the same or rewritten), or `403 rejected` with the backend's reason,
    /// or on a failure `503 hook_unavailable` (or the body as it is, when
    /// failing open). A rewritten body larger than a client may send is
    /// refused, `502 hook_invalid`, whatever the failure mode.
    pub async fn check(
        &self,
        from: &Uid,
        to: Target<'_>,
        body: Value,
        cid: &Option<String>,
    ) -> Result<Value, Error> {
        let mut question = json!({"from": from, "body": body, "cid": cid});
        match to {
            Target::Direct(uid) => {
                question["kind"] = json!("direct");
                question["to"] = json!(uid);
            }
            Target::Group(gid) => {
                question["kind"] = json!("group");
                question["gid"] = json!(gid);
            }
        }
        match tokio::time::timeout(self.timeout, self.ask(&question)).await {
            Ok(Ok(Verdict {
                allow: true,
                body: Some(rewritten),
                ..
            })) if !rewritten.is_null() => self.fits(rewritten),
            Ok(Ok(Verdict { allow: true, .. })) => Ok(question["body"].take()),
            Ok(Ok(Verdict {
                allow: false,
                reason,
                ..
            })) => Err(Error::Rejected(
                reason.unwrap_or_else(|| "the message was not allowed".into()),
            )),
            Ok(Err(failure)) => self.failed(failure, question),
            Err(_) => self.failed(format!("no answer within {:?}", self.timeout), question),
        }
    }

    /// `body` if it is no larger than a body a client may send.
    fn fits(&self, body: Value) -> Result<Value, Error> {
        let len = serde_json::to_vec(&body).map_or(usize::MAX, |b| b.len());
        if len > self.max_body {
            tracing::warn!("message hook: a rewritten body of {len} bytes is over --max-body");
            return Err(Error::HookInvalid(format!(
                "the message hook rewrote the body to {len} bytes, over the {}-byte limit of a message; nothing was sent",
                self.max_body
            )));
        }
        Ok(body)
    }

    fn failed(&self, failure: String, mut question: Value) -> Result<Value, Error> {
        tracing::warn!("message hook: {failure}");
        if self.fail_open {
            Ok(question["body"].take())
        } else {
            Err(Error::HookUnavailable(format!(
                "the message hook failed ({failure}); nothing was sent"
            )))
        }
    }

    async fn ask(&self, question: &Value) -> Result<Verdict, String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(question.to_string())))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("the answer is not a verdict: {e}"))
    }
}
