//! The backend feed's copies (`--feed`, `--feed-presence`): what the chat
//! services append to the feed's queues beside their own events, read by
//! `GET /api/v1/feed` and pushed by the webhook. One place decides whether
//! a copy is kept and where it goes: with `--feed-partitions N`, to the
//! partition of what the event is about (a conversation, a group, the user
//! who acted), so that each of those is in order in one partition.

use crate::config::Config;
use crate::store::Append;
use crate::uid::Uid;

/// Whether a service's events are copied to the backend feed, and over how
/// many partitions.
#[derive(Debug, Clone, Copy)]
pub struct Feed {
    kept: bool,
    partitions: u32,
}

impl Feed {
    /// The feed `config` asks for.
    pub fn of(config: &Config) -> Feed {
        Feed {
            kept: config.feed,
            partitions: config.feed_partitions.max(1),
        }
    }

    /// This feed, kept only if `kept` too (presence, with
    /// `--feed-presence`).
    pub fn kept_if(self, kept: bool) -> Feed {
        Feed {
            kept: self.kept && kept,
            ..self
        }
    }

    /// The partition of the events about `about`.
    pub fn partition_of(&self, about: &str) -> u32 {
        crate::util::bucket_of(about, self.partitions)
    }

    /// The feed queue of the events about `about`, if kept: one more
    /// recipient of an event.
    pub fn reader(&self, about: &str) -> Option<Uid> {
        self.kept
            .then(|| Uid::feed_partition(self.partition_of(about)))
    }

    /// The feed's copy of `event` (about `about`), if kept.
    pub fn copy_of(&self, event: &Append, about: &str) -> Option<Append> {
        self.reader(about).map(|uid| Append {
            uid,
            ..event.clone()
        })
    }

    /// An event of `kind` with `data` about `about`, for the feed alone,
    /// if kept.
    pub fn record(&self, kind: &str, data: &impl serde::Serialize, about: &str) -> Option<Append> {
        self.reader(about).map(|uid| Append::new(uid, kind, data))
    }
}
