//! The chat domain: what herald knows about users and their conversations,
//! apart from how it is carried. Direct messages, their receipts and their
//! history, groups
//! with their log and read cursors, friends and presence, counters and the
//! daily news, broadcasts, and the per-user send limit. Each is a service
//! with its own dependencies (the store, metrics, each other); none knows
//! HTTP or the transports.

pub mod admission;
pub mod broadcasts;
pub mod conversations;
pub mod feed;
pub mod friends;
pub mod group_log;
pub mod group_reads;
pub mod groups;
pub mod hook;
pub mod idempotency;
pub mod limits;
pub mod messages;
pub mod notices;
pub mod online;
pub mod presence;
pub mod receipts;
pub mod signals;
