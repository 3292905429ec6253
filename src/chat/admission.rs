//! What every client message goes through before anything is stored,
//! direct or group, over HTTP or WebSocket: its own check (a body, a
//! well-formed cid), the sender's send limit, and the message hook, whose
//! answer is checked again (a rewritten body obeys the limits of a sent
//! one).

use std::sync::Arc;

use crate::chat::hook::{MessageHook, Target};
use crate::chat::limits::SendLimit;
use crate::error::Error;
use crate::uid::Uid;

/// Checks what a client sends with any message (direct or group): a
/// non-null body and, if given, a cid of 1–64 printable characters.
pub fn check(body: &serde_json::Value, cid: &Option<String>) -> Result<(), Error> {
    if body.is_null() {
        return Err(Error::bad("bad_body", "body is required"));
    }
    if let Some(cid) = cid {
        if cid.is_empty() || cid.len() > 64 || cid.chars().any(char::is_control) {
            return Err(Error::bad(
                "bad_cid",
                "cid must be 1-64 printable characters",
            ));
        }
    }
    Ok(())
}

/// The admission of client messages.
pub struct Admission {
    sends: Arc<SendLimit>,
    hook: Option<Arc<MessageHook>>,
}

impl Admission {
    pub fn new(sends: Arc<SendLimit>, hook: Option<Arc<MessageHook>>) -> Admission {
        Admission { sends, hook }
    }

    /// The body to store for a message of `body` from `from` to `to`:
    /// refused (400) if malformed, counted against the sender's send limit
    /// (429 past it), then allowed, denied (403) or rewritten by the hook,
    /// if one is set.
    pub async fn admit(
        &self,
        from: &Uid,
        to: Target<'_>,
        body: serde_json::Value,
        cid: &Option<String>,
    ) -> Result<serde_json::Value, Error> {
        check(&body, cid)?;
        if let Some(cid) = cid {
            crate::trace::Cause::note_key(cid);
        }
        self.sends.take(from).await?;
        let Some(hook) = &self.hook else {
            return Ok(body);
        };
        let body = hook.check(from, to, body, cid).await?;
        check(&body, &None)?;
        Ok(body)
    }
}
