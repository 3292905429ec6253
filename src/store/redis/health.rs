//! Whether Redis answers, for `/healthz`: a node cut off from Redis fails
//! every request, and says so there, so that a load balancer sends its
//! clients to a node that can serve them.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::RedisStore;

/// How often Redis is asked, and how long an answer may take.
pub(in crate::store) const EVERY: Duration = Duration::from_secs(1);
/// How long Redis must have failed before `/healthz` says so: a blip
/// (a reconnect, one slow fsync) does not take a node out of rotation.
const FAILING_FOR: Duration = Duration::from_secs(3);

/// Since when Redis has not answered, and why.
#[derive(Default)]
pub(in crate::store) struct Health(Mutex<Option<(Instant, String)>>);

impl Health {
    pub(in crate::store) fn answered(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(in crate::store) fn failed(&self, reason: String) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            Some((_, last)) => *last = reason,
            None => *state = Some((Instant::now(), reason)),
        }
    }
}

impl Health {
    /// Why Redis has not answered for the last few seconds, if it has not.
    pub(in crate::store) fn report(&self) -> Option<String> {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (since, reason) = state.as_ref()?;
        let failing = since.elapsed();
        (failing >= FAILING_FOR).then(|| {
            format!(
                "redis has not answered for {} s: {reason}",
                failing.as_secs()
            )
        })
    }
}

/// PINGs Redis every second for as long as the store lives.
pub(super) async fn probe(store: Weak<RedisStore>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        let mut conn = store.conn();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(EVERY, ping).await {
            Ok(Ok(_)) => store.health.answered(),
            Ok(Err(e)) => store.health.failed(e.to_string()),
            Err(_) => store
                .health
                .failed(format!("no answer to PING within {EVERY:?}")),
        }
    }
}
