//! The per-user send limit: how many direct messages, group messages and
//! status changes one user may send per second. Each of them lands in other
//! users' queues (a status change in every online friend's), so a flooding
//! client would otherwise cost its recipients and the disk.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::Error;
use crate::store::RedisStore;
use crate::uid::Uid;

/// How many sends each user has left. Shared by every node of a
/// deployment (a user's budget is the same whichever node they send
/// through); [`SendLimit`] is the single-process implementation.
#[async_trait::async_trait]
pub trait SendBudget: Send + Sync + 'static {
    /// Takes one send from `uid`'s budget, or fails with 429 and how long
    /// to wait. Call it after the request is known to be valid.
    async fn take(&self, uid: &Uid) -> Result<(), Error>;

    /// Forgets the budgets of users who are back to a full one.
    fn forget_idle(&self);
}

/// A token bucket per user in this process: `per_second` sends, bursts of
/// twice that.
pub struct SendLimit {
    limiter: Option<DefaultKeyedRateLimiter<Uid>>,
    per_second: u32,
}

impl SendLimit {
    /// `per_second` = 0: no limit.
    pub fn new(per_second: u32) -> SendLimit {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        SendLimit {
            limiter,
            per_second,
        }
    }
}

#[async_trait::async_trait]
impl SendBudget for SendLimit {
    async fn take(&self, uid: &Uid) -> Result<(), Error> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(uid).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::TooMany {
                message: format!(
                    "{uid} is sending too fast: at most {} messages or status changes per second",
                    self.per_second
                ),
                retry_after: whole_seconds(wait),
            }
        })
    }

    fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A budget whose refusals are counted (`herald_send_limited_total`).
pub struct Counted {
    inner: std::sync::Arc<dyn SendBudget>,
    refused: prometheus_client::metrics::counter::Counter,
}

impl Counted {
    pub fn new(
        inner: std::sync::Arc<dyn SendBudget>,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Counted {
        Counted { inner, refused }
    }
}

#[async_trait::async_trait]
impl SendBudget for Counted {
    async fn take(&self, uid: &Uid) -> Result<(), Error> {
        let taken = self.inner.take(uid).await;
        if let Err(Error::TooMany { .. }) = taken {
            self.refused.inc();
        }
        taken
    }

    fn forget_idle(&self) {
        self.inner.forget_idle();
    }
}

/// `wait` rounded up to whole seconds, at least 1 (`Retry-After`).
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The same budget shared by every node of a cluster: a token bucket per
/// user in Redis (`per_second` sends, bursts of twice that).
pub struct SharedSendLimit {
    store: std::sync::Arc<RedisStore>,
    per_second: u32,
}

impl SharedSendLimit {
    /// `per_second` = 0: no limit.
    pub fn new(store: std::sync::Arc<RedisStore>, per_second: u32) -> SharedSendLimit {
        SharedSendLimit { store, per_second }
    }
}

#[async_trait::async_trait]
impl SendBudget for SharedSendLimit {
    async fn take(&self, uid: &Uid) -> Result<(), Error> {
        if self.per_second == 0 {
            return Ok(());
        }
        let burst = self.per_second.saturating_mul(2);
        let wait = self
            .store
            .rate_take(&format!("send:{uid}"), self.per_second, burst, 1)
            .await?;
        if wait.is_zero() {
            return Ok(());
        }
        Err(Error::TooMany {
            message: format!(
                "{uid} is sending too fast: at most {} messages or status changes per second",
                self.per_second
            ),
            retry_after: whole_seconds(wait),
        })
    }

    fn forget_idle(&self) {
        // The buckets expire in Redis by themselves.
    }
}
