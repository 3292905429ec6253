//! Presence: who is online, with which visible status, and pushing changes
//! to the users who care.
//!
//! A user is online while any stream of theirs is open, or while a poll or
//! long-poll of theirs arrived within the grace period (so a long-poller
//! does not flap between requests). Their visible status is the status they
//! chose (`online`, `busy`, `dnd`) while online, and `offline` when they are
//! not or chose `invisible`. Who is online is kept by the
//! [`OnlineDirectory`]: this node's connections, and the backend's presence
//! table that every node of a deployment shares.
//!
//! A visible change is pushed as a `presence` event to every ONLINE user
//! who has added this user (the reverse friends), never to offline users
//! (they pull at login) and never to group co-members (group presence is
//! pulled on demand). Changes are throttled per user: the first goes out at
//! once, later ones within the window collapse into one trailing push of
//! the status current at its end, so a flapping connection cannot storm
//! anyone.
//!
//! Each change is published to the table, and the one node whose
//! publication changed the visible status pushes it (the window applies per
//! node).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::chat::feed::Feed;
use crate::chat::friends::Friends;
use crate::chat::online::OnlineDirectory;
use crate::metrics::Metrics;
use crate::store::shared::visible;
use crate::store::{Append, Store, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

/// When a user's state was last published here, whether a trailing
/// publication is due at the end of its window, and whether one is on its
/// way to the table (one at a time per user: they arrive in order).
struct Pushed {
    at: Instant,
    trailing: bool,
    in_flight: bool,
}

pub struct Presence {
    me: Weak<Presence>,
    store: Arc<dyn Store>,
    friends: Arc<Friends>,
    metrics: Arc<Metrics>,
    /// Who is online (shared by the nodes of a deployment).
    directory: Arc<OnlineDirectory>,
    /// The last push per user: the coalescing window (per node).
    pushed: SharedMap<Uid, Pushed>,
    window: Duration,
    /// A sweep of the table is running (one at a time).
    sweeping: AtomicBool,
    /// Every pushed change also goes to the backend feed
    /// (`--feed-presence`).
    feed: Feed,
}

impl Presence {
    pub fn new(
        store: Arc<dyn Store>,
        friends: Arc<Friends>,
        metrics: Arc<Metrics>,
        directory: Arc<OnlineDirectory>,
        window: Duration,
        feed: Feed,
    ) -> Arc<Presence> {
        Arc::new_cyclic(|me| Presence {
            me: me.clone(),
            store,
            friends,
            metrics,
            directory,
            pushed: SharedMap::default(),
            window,
            sweeping: AtomicBool::new(false),
            feed,
        })
    }

    /// Registers a connection of `uid` (a stream or a long-poll) unless it
    /// already has `max`.
    pub fn try_connect(&self, uid: &Uid, max: usize) -> bool {
        let connected = self.directory.try_connect(uid, max);
        if connected {
            self.refresh(uid);
        }
        connected
    }

    /// Registers a connection of `uid` whatever it already has (one that
    /// takes the place of a connection about to go).
    pub fn connect(&self, uid: &Uid) {
        self.directory.connect(uid);
        self.refresh(uid);
    }

    /// Unregisters a connection of `uid`.
    pub fn disconnect(&self, uid: &Uid) {
        self.directory.disconnect(uid);
        self.refresh(uid);
    }

    /// Records a poll or long-poll of `uid` (online for the grace period).
    pub fn polled(&self, uid: &Uid) {
        self.directory.polled(uid);
        self.refresh(uid);
    }

    /// Sets the status `uid` chose (one of [`STATUSES`]).
    pub async fn set_status(&self, uid: &Uid, status: &'static str) -> Result<(), StoreError> {
        // Recorded before the answer: every node sees it from now on.
        let online_here = self.directory.online_here(uid);
        if let Some(visible) = self
            .directory
            .publish(uid, online_here, Some(status))
            .await?
        {
            self.push(uid.clone(), visible);
        }
        Ok(())
    }

    /// Whether `uid` is connected (anywhere) or polled within the grace
    /// period.
    pub async fn is_online(&self, uid: &Uid) -> Result<bool, StoreError> {
        let states = self.directory.states(std::slice::from_ref(uid)).await?;
        Ok(states.first().is_some_and(|(online, _)| *online))
    }

    /// Every user online now.
    pub async fn online_users(&self) -> Result<Vec<Uid>, StoreError> {
        self.directory.online_users().await
    }

    /// What others see of `uid`, the status it chose, and the nodes that
    /// hold a lease on it in the presence table.
    pub async fn state(
        &self,
        uid: &Uid,
    ) -> Result<(&'static str, Option<&'static str>, Vec<String>), StoreError> {
        let states = self.directory.states(std::slice::from_ref(uid)).await?;
        let (online, chosen) = states.into_iter().next().unwrap_or((false, None));
        let leases = self.directory.leases(uid).await?;
        Ok((visible(online, chosen), chosen, leases))
    }

    /// What others see of each of `uids`.
    pub async fn visible(&self, uids: &[Uid]) -> Result<Vec<&'static str>, StoreError> {
        let states = self.directory.states(uids).await?;
        Ok(states.into_iter().map(|(o, c)| visible(o, c)).collect())
    }

    /// Forgets pollers whose grace ran out, publishing their going offline,
    /// renews this node's leases, takes the users of dead nodes offline,
    /// and forgets the push state of users long offline. Called
    /// periodically.
    pub fn sweep(&self) {
        for uid in self.directory.expire_pollers() {
            self.refresh(&uid);
        }
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            let me = self.me.clone();
            tokio::spawn(async move {
                let Some(me) = me.upgrade() else { return };
                match me.directory.maintain().await {
                    Ok(changes) => {
                        for (uid, status) in changes {
                            me.push(uid, status);
                        }
                    }
                    Err(e) => tracing::warn!("presence upkeep failed: {e}"),
                }
                me.sweeping.store(false, Ordering::Release);
            });
        }
        // An entry whose window is over means what a missing one does: the
        // next change is published at once.
        self.pushed
            .retain(|_, p| p.trailing || p.in_flight || p.at.elapsed() < self.window);
    }

    /// Refreshes `uid` once `wait` has passed: the trailing end of a window.
    fn refresh_after(&self, uid: Uid, wait: Duration) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(me) = me.upgrade() {
                if let Some(mut pushed) = me.pushed.get_mut(&uid) {
                    pushed.trailing = false;
                }
                me.refresh(&uid);
            }
        });
    }

    /// Publishes `uid`'s state on this node, as it is now, at most once
    /// per window and one publication at a time (a later change waits for
    /// the window's end, when the state then current is published), and
    /// pushes what the publication changed.
    fn refresh(&self, uid: &Uid) {
        let mut pushed = self.pushed.entry(uid.clone()).or_insert(Pushed {
            at: Instant::now() - self.window,
            trailing: false,
            in_flight: false,
        });
        if pushed.trailing {
            return;
        }
        let since = pushed.at.elapsed();
        if since < self.window || pushed.in_flight {
            pushed.trailing = true;
            drop(pushed);
            let wait = self
                .window
                .saturating_sub(since)
                .max(Duration::from_millis(10));
            return self.refresh_after(uid.clone(), wait);
        }
        pushed.at = Instant::now();
        pushed.in_flight = true;
        drop(pushed);
        let online_here = self.directory.online_here(uid);
        let (me, uid) = (self.me.clone(), uid.clone());
        tokio::spawn(async move {
            let Some(me) = me.upgrade() else { return };
            match me.directory.publish(&uid, online_here, None).await {
                Ok(Some(status)) => me.push(uid.clone(), status),
                Ok(None) => {}
                Err(e) => tracing::warn!("presence of {uid} not published: {e}"),
            }
            if let Some(mut pushed) = me.pushed.get_mut(&uid) {
                pushed.in_flight = false;
            };
        });
    }

    /// Appends a `presence` event to every online reverse friend of `uid`,
    /// and to the backend feed if it records presence.
    fn push(&self, uid: Uid, status: &'static str) {
        let mut friends = self.friends.reverse_of(&uid);
        if friends.is_empty() && self.feed.reader(uid.as_str()).is_none() {
            self.metrics.presence_fanout.observe(0.0);
            return;
        }
        let (store, directory, metrics, feed) = (
            self.store.clone(),
            self.directory.clone(),
            self.metrics.clone(),
            self.feed,
        );
        tokio::spawn(async move {
            let states = match directory.states(&friends).await {
                Ok(states) => states,
                Err(e) => return tracing::warn!("presence of {uid} not pushed: {e}"),
            };
            let mut online = states.into_iter().map(|(online, _)| online);
            friends.retain(|_| online.next().unwrap_or(false));
            metrics.presence_fanout.observe(friends.len() as f64);
            metrics.presence_pushed.inc_by(friends.len() as u64);
            let data = json!({"uid": uid, "status": status});
            let batch: Vec<Append> = friends
                .into_iter()
                .chain(feed.reader(uid.as_str()))
                .map(|f| Append::new(f, "presence", &data))
                .collect();
            if batch.is_empty() {
                return;
            }
            if let Err(e) = store.append(batch).await {
                tracing::warn!("presence of {uid} not pushed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::store::PageLimit;
    use crate::uid::Uid;

    #[tokio::test]
    async fn a_flapping_user_reaches_reverse_friends_as_one_push_and_one_trailing_push() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &["--presence-window-ms", "200"]).await;
        let (alice, bob) = (Uid::parse("alice").unwrap(), Uid::parse("bob").unwrap());
        app.friends.set(&bob, vec![alice.clone()]).await.unwrap();
        app.presence.connect(&bob);
        for _ in 0..10 {
            app.presence.connect(&alice);
            app.presence.disconnect(&alice);
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        app.store.sync().await.unwrap();
        let limit = PageLimit {
            events: 100,
            bytes: 1 << 20,
        };
        let page = app.store.read(&bob, 0, limit).await.unwrap();
        let statuses: Vec<String> = page
            .events
            .iter()
            .map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap())
            .filter(|e| e["type"] == "presence" && e["data"]["uid"] == "alice")
            .map(|e| e["data"]["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            statuses,
            vec!["online", "offline"],
            "the first at once, the last state after the window"
        );
        assert_eq!(app.presence.visible(&[alice]).await.unwrap(), ["offline"]);
    }
}
