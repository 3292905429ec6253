//! The per-user send limit: how many direct messages, group messages and
//! status changes one user may send per second. Each of them lands in other
//! users' queues (a status change in every online friend's), so a flooding
//! client would otherwise cost its recipients and the disk.
//!
//! A user's budget is a token bucket of the backend's ([`TokenBuckets`]):
//! the same whichever node of a deployment they send through.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::error::Error;
use crate::store::TokenBuckets;
use crate::uid::Uid;

/// `per_second` sends per user, bursts of twice that; refusals counted
/// (`herald_send_limited_total`). The same for typing signals, under
/// another name ([`SendLimit::named`]).
pub struct SendLimit {
    buckets: Arc<dyn TokenBuckets>,
    /// 0: no limit.
    per_second: u32,
    refused: Counter,
    /// The buckets' name prefix, and what is limited (for the 429).
    scope: &'static str,
    what: &'static str,
}

impl SendLimit {
    /// `per_second` = 0: no limit.
    pub fn new(buckets: Arc<dyn TokenBuckets>, per_second: u32, refused: Counter) -> SendLimit {
        SendLimit::named(
            "send",
            "messages or status changes",
            buckets,
            per_second,
            refused,
        )
    }

    /// A limit of `what` per user, in buckets named `scope:uid`.
    pub fn named(
        scope: &'static str,
        what: &'static str,
        buckets: Arc<dyn TokenBuckets>,
        per_second: u32,
        refused: Counter,
    ) -> SendLimit {
        SendLimit {
            buckets,
            per_second,
            refused,
            scope,
            what,
        }
    }

    /// Takes one send from `uid`'s budget, or fails with 429 and how long
    /// to wait. Call it after the request is known to be valid.
    pub async fn take(&self, uid: &Uid) -> Result<(), Error> {
        if self.per_second == 0 {
            return Ok(());
        }
        let burst = self.per_second.saturating_mul(2);
        let wait = self
            .buckets
            .take(&format!("{}:{uid}", self.scope), self.per_second, burst, 1)
            .await?;
        if wait.is_zero() {
            return Ok(());
        }
        self.refused.inc();
        Err(Error::TooMany {
            message: format!(
                "{uid} is sending too fast: at most {} {} per second",
                self.per_second, self.what
            ),
            retry_after: whole_seconds(wait),
        })
    }

    /// What is left of `uid`'s budget: `{left, per_second, burst}`, or
    /// null without a limit.
    pub async fn left(&self, uid: &Uid) -> Result<serde_json::Value, Error> {
        if self.per_second == 0 {
            return Ok(serde_json::Value::Null);
        }
        let burst = self.per_second.saturating_mul(2);
        let left = self
            .buckets
            .left(&format!("{}:{uid}", self.scope), self.per_second, burst)
            .await?;
        Ok(serde_json::json!({"left": left, "per_second": self.per_second, "burst": burst}))
    }

    /// Forgets the budgets of users who are back to a full one.
    pub fn forget_idle(&self) {
        self.buckets.forget_full();
    }
}

/// `wait` rounded up to whole seconds, at least 1 (`Retry-After`).
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
