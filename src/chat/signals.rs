//! Ephemeral signals ("bob is typing…"): handed to the connections a user
//! has open at that moment, on any node, and nowhere else. Unlike every
//! event of the queue a signal is never stored or fsynced, takes no seq and
//! is never acked: a signal missed is stale three seconds later anyway, and
//! a reconnect does not bring it back.
//!
//! Each user with a connection open here has one [`Mailbox`]: the last few
//! signals, numbered, which the user's connections wait on ([`Listener`]). On a store shared by several nodes a signal is published
//! on the user's wake channel and every node, this one included, hands it
//! to its own connections (see `Records::signal`); otherwise it is handed
//! over here directly.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use tokio::sync::Notify;

use crate::chat::limits::SendLimit;
use crate::error::Error;
use crate::store::{Store, TokenBuckets};
use crate::uid::Uid;
use crate::util::SharedMap;

/// Signals a mailbox keeps for connections busy writing when they came.
const KEPT: usize = 8;

/// Where a typing signal goes.
pub enum Target {
    User(Uid),
    Group(crate::chat::groups::Gid),
}

/// A user's last few signals, numbered, for the connections the user has
/// open here. (A `Notify` and a lock, not a watch channel: every user
/// connected pays for it; measured with `bench_connections idle`, a watch
/// channel cost ~1 KB per user, this 140-280 B.)
pub struct Mailbox {
    uid: Uid,
    state: Mutex<MailboxState>,
    arrived: Notify,
}

#[derive(Default)]
struct MailboxState {
    /// The last few signals, `(n, json)`, the newest last.
    recent: VecDeque<(u64, Bytes)>,
    /// Group receipt totals waiting for the next keepalive
    /// (`--group-receipts keepalive`): gid → msgid → (read, unread).
    riding: BTreeMap<String, BTreeMap<u64, (u64, u64)>>,
    /// A sweep found no connection using this mailbox: the next one drops
    /// it (a short poller's totals wait here between its polls).
    stale: bool,
}

impl Mailbox {
    fn state(&self) -> std::sync::MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `n` of the newest signal (0: none yet).
    fn newest(&self) -> u64 {
        self.state().recent.back().map_or(0, |(n, _)| *n)
    }
}

/// One connection's view of its user's mailbox; dropping the last one of a
/// user drops the mailbox.
pub struct Listener {
    signals: Arc<Signals>,
    mailbox: Option<Arc<Mailbox>>,
    /// The `n` of the last signal taken.
    seen: u64,
}

impl Listener {
    /// Resolves when a signal came that was not taken yet. Cancel-safe.
    pub async fn changed(&mut self) {
        let Some(mailbox) = &self.mailbox else {
            return std::future::pending().await;
        };
        loop {
            let arrived = mailbox.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check: a signal in between still wakes it.
            arrived.as_mut().enable();
            if mailbox.newest() > self.seen {
                return;
            }
            arrived.await;
        }
    }

    /// The signals that came since the last call, oldest first (those
    /// pushed out of the mailbox meanwhile are gone).
    pub fn take(&mut self) -> Vec<Bytes> {
        let Some(mailbox) = &self.mailbox else {
            return Vec::new();
        };
        let state = mailbox.state();
        let recent = &state.recent;
        let taken = recent
            .iter()
            .filter(|(n, _)| *n > self.seen)
            .map(|(_, json)| json.clone())
            .collect();
        self.seen = recent.back().map_or(self.seen, |(n, _)| *n);
        taken
    }

    /// Whether group receipt totals wait for a keepalive.
    pub fn has_riders(&self) -> bool {
        self.mailbox
            .as_ref()
            .is_some_and(|m| !m.state().riding.is_empty())
    }

    /// The group receipt totals waiting for a keepalive, as
    /// `{gid: {msgid: {"read": R, "unread": U}}}`, taken: the first of the
    /// user's connections to send a keepalive carries them.
    pub fn riders(&self) -> Option<String> {
        riders_json(&mut self.mailbox.as_ref()?.state().riding)
    }
}

/// `riding` as `{gid: {msgid: {"read": R, "unread": U}}}`, taken.
fn riders_json(riding: &mut BTreeMap<String, BTreeMap<u64, (u64, u64)>>) -> Option<String> {
    let riding = std::mem::take(riding);
    if riding.is_empty() {
        return None;
    }
    let by_gid: serde_json::Map<String, serde_json::Value> = riding
        .into_iter()
        .map(|(gid, counts)| {
            let counts = counts
                .into_iter()
                .map(|(msgid, (read, unread))| {
                    (msgid.to_string(), json!({"read": read, "unread": unread}))
                })
                .collect();
            (gid, serde_json::Value::Object(counts))
        })
        .collect();
    Some(serde_json::Value::Object(by_gid).to_string())
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some(mailbox) = self.mailbox.take() else {
            return;
        };
        let uid = mailbox.uid.clone();
        // Dropped first, so that the last listener to go finds only the
        // map's reference left (two going at once: the later one does).
        drop(mailbox);
        // Kept while receipt totals wait in it (for the next poll).
        self.signals.mailboxes.remove_if(&uid, |_, mailbox| {
            Arc::strong_count(mailbox) == 1 && mailbox.state().riding.is_empty()
        });
    }
}

/// The signals service: mailboxes of the users connected here, and the
/// per-user rate limit.
pub struct Signals {
    mailboxes: SharedMap<Uid, Arc<Mailbox>>,
    store: Arc<dyn Store>,
    /// Signals one user may send per second (bursts of twice that).
    limit: SendLimit,
    sent: Counter,
}

impl Signals {
    pub fn new(
        store: Arc<dyn Store>,
        buckets: Arc<dyn TokenBuckets>,
        per_second: u32,
        sent: Counter,
        refused: Counter,
    ) -> Arc<Signals> {
        let limit = SendLimit::named(
            "typing",
            "typing signals",
            buckets,
            per_second.max(1),
            refused,
        );
        Arc::new(Signals {
            mailboxes: SharedMap::default(),
            store,
            limit,
            sent,
        })
    }

    /// A listener for `uid`'s signals from now on (for as long as one of
    /// its connections is open).
    pub fn listen(self: &Arc<Self>, uid: &Uid) -> Listener {
        let mailbox = self.mailbox(uid);
        let seen = mailbox.newest();
        Listener {
            signals: self.clone(),
            mailbox: Some(mailbox),
            seen,
        }
    }

    /// `uid`'s mailbox, made if it has none.
    fn mailbox(&self, uid: &Uid) -> Arc<Mailbox> {
        self.mailboxes
            .entry(uid.clone())
            .or_insert_with(|| {
                Arc::new(Mailbox {
                    uid: uid.clone(),
                    state: Mutex::default(),
                    arrived: Notify::new(),
                })
            })
            .clone()
    }

    /// The receipt totals waiting for `uid` (a short poll carries them:
    /// it has no keepalive of its own).
    pub fn take_riders(&self, uid: &Uid) -> Option<String> {
        let mailbox = self.mailboxes.get(uid).map(|m| m.clone())?;
        let riders = riders_json(&mut mailbox.state().riding);
        drop(mailbox);
        self.mailboxes
            .remove_if(uid, |_, mailbox| Arc::strong_count(mailbox) == 1);
        riders
    }

    /// Drops the mailboxes no connection used since the last sweep (what
    /// waited in them for a short poller that stopped polling); how many
    /// are left.
    pub fn forget_parked(&self) -> usize {
        self.mailboxes.retain(|_, mailbox| {
            if Arc::strong_count(mailbox) > 1 {
                return true;
            }
            let mut state = mailbox.state();
            !std::mem::replace(&mut state.stale, true)
        });
        self.mailboxes.len()
    }

    /// Takes one signal from `from`'s budget, or fails with 429.
    pub async fn admit(&self, from: &Uid) -> Result<(), Error> {
        self.limit.take(from).await
    }

    /// Sends `json` to the connections `to` has open now, on every node
    /// (published for all of them at once).
    pub async fn send(&self, to: &[Uid], json: &str) -> Result<(), Error> {
        let published = futures::future::try_join_all(
            to.iter().map(|uid| self.store.signal(uid, json.as_bytes())),
        )
        .await?;
        for (uid, published) in to.iter().zip(published) {
            if !published {
                self.deliver(uid, Bytes::copy_from_slice(json.as_bytes()));
            }
        }
        self.sent.inc();
        Ok(())
    }

    /// Leaves group receipt totals of `sender`'s messages in `gid` for its
    /// next keepalive, on whichever node its connections are
    /// (`--group-receipts keepalive`); nowhere if it has none open.
    pub async fn ride(
        &self,
        sender: &Uid,
        gid: &str,
        counts: &[(u64, u64, u64)],
    ) -> Result<(), Error> {
        let rider = Rider {
            kind: RIDER.to_owned(),
            gid: gid.to_owned(),
            counts: counts.to_vec(),
        };
        let json = serde_json::to_vec(&rider).map_err(|e| Error::Internal(e.to_string()))?;
        if !self.store.signal(sender, &json).await? {
            self.deliver(sender, Bytes::from(json));
        }
        Ok(())
    }

    /// Hands `json` to `uid`'s connections open here, if any: a signal, or
    /// receipt totals to keep for the next keepalive (or poll: those are
    /// kept without a connection too, until a sweep finds them unused).
    pub fn deliver(&self, uid: &Uid, json: Bytes) {
        if json.starts_with(RIDER_PREFIX.as_bytes()) {
            if let Ok(rider) = serde_json::from_slice::<Rider>(&json) {
                let mailbox = self.mailbox(uid);
                let mut state = mailbox.state();
                keep_riding(&mut state.riding, rider);
                state.stale = false;
            }
            return;
        }
        let Some(mailbox) = self.mailboxes.get(uid).map(|m| m.clone()) else {
            return;
        };
        let mut state = mailbox.state();
        let n = state.recent.back().map_or(1, |(n, _)| n + 1);
        if state.recent.len() == KEPT {
            state.recent.pop_front();
        }
        state.recent.push_back((n, json));
        drop(state);
        mailbox.arrived.notify_waiters();
    }
}

/// Receipt totals a mailbox keeps for a keepalive, at most (the oldest
/// messages' give way).
const MAX_RIDING: usize = 256;

/// The `type` of receipt totals on their way to a mailbox (never sent to
/// a client as such).
const RIDER: &str = "receipts";
const RIDER_PREFIX: &str = r#"{"type":"receipts""#;

/// Receipt totals on their way to a sender's mailbox: `(msgid, read,
/// unread)` of its messages in `gid`. Serialized with `type` first.
#[derive(serde::Serialize, serde::Deserialize)]
struct Rider {
    #[serde(rename = "type")]
    kind: String,
    gid: String,
    counts: Vec<(u64, u64, u64)>,
}

/// Merges `rider` into what waits (newer totals replace older ones), then
/// drops the oldest messages beyond [`MAX_RIDING`].
fn keep_riding(riding: &mut BTreeMap<String, BTreeMap<u64, (u64, u64)>>, rider: Rider) {
    let counts = riding.entry(rider.gid).or_default();
    for (msgid, read, unread) in rider.counts {
        counts.insert(msgid, (read, unread));
    }
    let mut total: usize = riding.values().map(BTreeMap::len).sum();
    while total > MAX_RIDING {
        let Some(fullest) = riding.values_mut().max_by_key(|c| c.len()) else {
            break;
        };
        fullest.pop_first();
        total -= 1;
    }
    riding.retain(|_, counts| !counts.is_empty());
}

/// The JSON of a typing signal from `from` to `target`.
pub fn typing_json(from: &Uid, target: &Target) -> String {
    let (key, to) = match target {
        Target::User(uid) => ("to", uid.as_str()),
        Target::Group(gid) => ("gid", gid.as_str()),
    };
    serde_json::json!({"type": "typing", "from": from, key: to}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_gets_what_came_after_it_once_and_the_last_one_drops_the_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &[]).await;
        let signals = &app.signals;
        let bob = [Uid::parse("bob").unwrap()];
        signals.send(&bob, r#"{"early":1}"#).await.unwrap();
        let mut first = signals.listen(&bob[0]);
        let mut second = signals.listen(&bob[0]);
        signals.send(&bob, r#"{"n":1}"#).await.unwrap();
        signals.send(&bob, r#"{"n":2}"#).await.unwrap();
        first.changed().await;
        let both = vec![Bytes::from(r#"{"n":1}"#), Bytes::from(r#"{"n":2}"#)];
        assert_eq!(first.take(), both);
        assert!(first.take().is_empty(), "taken once");
        second.changed().await;
        assert_eq!(second.take(), both);
        drop(first);
        assert_eq!(signals.mailboxes.len(), 1);
        drop(second);
        assert_eq!(signals.mailboxes.len(), 0, "no mailbox without a listener");
    }

    #[test]
    fn riding_totals_keep_the_newest_and_stay_bounded() {
        let mut riding = BTreeMap::new();
        let rider = |gid: &str, from: u64, to: u64, read: u64| Rider {
            kind: RIDER.to_owned(),
            gid: gid.to_owned(),
            counts: (from..=to).map(|m| (m, read, 1)).collect(),
        };
        keep_riding(&mut riding, rider("a", 1, 200, 1));
        keep_riding(&mut riding, rider("a", 150, 250, 2));
        keep_riding(&mut riding, rider("b", 1, 100, 3));
        let total: usize = riding.values().map(BTreeMap::len).sum();
        assert_eq!(total, MAX_RIDING);
        // Newer totals replaced older ones; the oldest messages gave way.
        assert_eq!(riding["a"][&250], (2, 1));
        assert_eq!(riding["a"][&150], (2, 1));
        assert!(!riding["a"].contains_key(&1));
        assert_eq!(riding["b"].len(), 100);
    }

    #[tokio::test]
    async fn a_burst_beyond_the_budget_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &["--typing-rate", "5"]).await;
        let alice = Uid::parse("alice").unwrap();
        let mut admitted = 0;
        for _ in 0..30 {
            if app.signals.admit(&alice).await.is_ok() {
                admitted += 1;
            }
        }
        assert!((10..30).contains(&admitted), "{admitted} admitted");
    }
}
