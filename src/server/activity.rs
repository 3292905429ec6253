//! Requests in flight on one HTTP/2 connection, so that a connection with
//! none can be closed after `--idle-timeout-ms`, as an idle HTTP/1.1
//! connection is (hyper's HTTP/2 server has no such timeout).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The count of one connection's requests in flight.
#[derive(Clone, Default)]
pub struct Activity(Arc<watch::Sender<usize>>);

impl Activity {
    /// Counts a request until every clone of the guard is dropped (its
    /// answer is written, or the WebSocket it became has closed).
    pub fn enter(&self) -> InFlight {
        self.0.send_modify(|n| *n += 1);
        InFlight(Arc::new(Entered(self.0.clone())))
    }

    /// Resolves once no request has been in flight for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut count = self.0.subscribe();
        loop {
            if count.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(idle) => return,
                changed = count.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// One request counted in flight (clonable: a request's extensions hold a
/// clone, which a WebSocket session keeps).
#[derive(Clone)]
pub struct InFlight(#[allow(dead_code)] Arc<Entered>);

struct Entered(Arc<watch::Sender<usize>>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Activity;

    #[tokio::test(start_paused = true)]
    async fn idle_only_once_nothing_has_been_in_flight_for_the_whole_time() {
        let activity = Activity::default();
        let request = activity.enter();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished(), "a request is in flight");
        let copy = request.clone();
        drop(request);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!idle.is_finished(), "a clone still holds it");
        drop(copy);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let again = activity.enter();
        drop(again);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!idle.is_finished(), "the new request restarted the wait");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(idle.is_finished());
    }
}
