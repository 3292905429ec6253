//! The backend feed's copies (`--feed`, `--feed-presence`): what the chat
//! services append to the feed's queue beside their own events, read by
//! `GET /api/v1/feed` and pushed by the webhook. One place decides whether
//! a copy is kept and where it goes.

use crate::store::Append;
use crate::uid::Uid;

/// Whether a service's events are copied to the backend feed.
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    kept: bool,
}

impl Feed {
    /// A feed that keeps copies when `kept`.
    pub fn new(kept: bool) -> Feed {
        Feed { kept }
    }

    /// The feed's queue, if kept: one more recipient of an event.
    pub fn reader(&self) -> Option<Uid> {
        self.kept.then(Uid::feed)
    }

    /// The feed's copy of `event`, if kept.
    pub fn copy_of(&self, event: &Append) -> Option<Append> {
        self.reader().map(|uid| Append {
            uid,
            ..event.clone()
        })
    }

    /// An event of `kind` with `data` for the feed alone, if kept.
    pub fn record(&self, kind: &str, data: &impl serde::Serialize) -> Option<Append> {
        self.reader().map(|uid| Append::new(uid, kind, data))
    }
}
