//! System → user notices: named counters (pushed as new totals) and the
//! daily login news (pulled once per UTC day).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::chat::idempotency::IdempotencyKey;
use crate::store::{Append, Store, StoreError};
use crate::uid::Uid;
use crate::util::SharedMap;

const COUNTER_PREFIX: &str = "counter/";
/// Most counters one user may have.
pub const MAX_COUNTERS: usize = 100;

/// A counter name: 1–32 characters of `[a-z0-9_.-]`.
pub fn valid_counter_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// How a counter changes.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    Delta(i64),
    Set(i64),
}

/// Users' counters, persisted in the store's kv (`counter/{uid}/{name}` →
/// value); a user's are loaded on first use and forgotten when unused.
///
/// Changes of one user are serialised by an async lock held across the
/// durable write and the append of the `counter` event, so concurrent
/// deltas never lose an update and the events reach the queue in the order
/// of their totals: a client that shows the newest event shows the truth.
pub struct Counters {
    values: SharedMap<Uid, UserCounters>,
    store: Arc<dyn Store>,
    /// How long an idempotency key is kept.
    key_ttl: Duration,
}

type UserCounters = Arc<tokio::sync::Mutex<BTreeMap<String, i64>>>;

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("user has the most counters allowed ({MAX_COUNTERS})")]
    TooMany,
    #[error("counter would overflow")]
    Overflow,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The idempotency key was used for another change.
    #[error(transparent)]
    Key(#[from] crate::error::Error),
}

impl Counters {
    pub fn new(store: Arc<dyn Store>, key_ttl: Duration) -> Counters {
        Counters {
            values: SharedMap::default(),
            store,
            key_ttl,
        }
    }

    /// `uid`'s counters, from memory or loaded from the store.
    async fn of(&self, uid: &Uid) -> Result<UserCounters, StoreError> {
        if let Some(values) = self.values.get(uid) {
            return Ok(values.clone());
        }
        let loaded = self.load(uid).await?;
        // A concurrent first use may have won: it loaded the same values.
        let entry = self
            .values
            .entry(uid.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(loaded)));
        Ok(entry.clone())
    }

    /// Every counter of `uid`.
    pub async fn all(&self, uid: &Uid) -> Result<BTreeMap<String, i64>, StoreError> {
        let values = self.of(uid).await?;
        let mut values = values.lock().await;
        // Another node may have changed them.
        *values = self.load(uid).await?;
        Ok(values.clone())
    }

    async fn load(&self, uid: &Uid) -> Result<BTreeMap<String, i64>, StoreError> {
        let prefix = format!("{COUNTER_PREFIX}{uid}/");
        let mut loaded = BTreeMap::new();
        for (key, value) in self.store.kv_scan(&prefix).await? {
            if let Ok(value) = serde_json::from_slice::<i64>(&value) {
                loaded.insert(key[prefix.len()..].to_owned(), value);
            }
        }
        Ok(loaded)
    }

    /// Applies `change` to `uid`'s counter `name` and pushes the new total
    /// as a `counter` event; returns the total once durable. Under an
    /// idempotency `key`, a change made before is not made again: the
    /// total it gave is returned (and its event appended if a crash came
    /// between the two).
    pub async fn change(
        &self,
        uid: &Uid,
        name: &str,
        change: Change,
        key: Option<&IdempotencyKey>,
    ) -> Result<i64, CounterError> {
        let values = self.of(uid).await?;
        let mut values = values.lock().await;
        // The lock spans every node of a deployment, and what another node
        // changed is read again under it.
        let _lease = self.store.lock(&format!("{COUNTER_PREFIX}{uid}")).await?;
        *values = self.load(uid).await?;
        let key_name = format!("{COUNTER_PREFIX}{uid}/{name}");
        if let Some(key) = key {
            if let Some(first) = key.first(&*self.store).await? {
                let total = values.get(name).copied().unwrap_or(0);
                self.push_once(uid, name, total, key).await?;
                return first.parse().map_err(|_| {
                    CounterError::Store(StoreError::Io("a bad counter key record".into()))
                });
            }
        }
        if !values.contains_key(name) && values.len() >= MAX_COUNTERS {
            return Err(CounterError::TooMany);
        }
        let old = values.get(name).copied().unwrap_or(0);
        let new = match change {
            Change::Delta(d) => old.checked_add(d).ok_or(CounterError::Overflow)?,
            Change::Set(v) => v,
        };
        if let Some(key) = key {
            // The total and the key's record at once: a retry finds the
            // record exactly when the total changed.
            self.store.expire(&key.record, self.key_ttl).await?;
            let total = new.to_string();
            let record = key.record_of(&total);
            self.store
                .kv_put_all(vec![
                    (key_name, total.into_bytes()),
                    (key.record.clone(), record),
                ])
                .await?;
            values.insert(name.to_owned(), new);
            self.push_once(uid, name, new, key).await?;
            return Ok(new);
        }
        // The total and its event become durable in one commit.
        let key = key_name;
        self.store
            .kv_stage(&key, new.to_string().into_bytes())
            .await?;
        let event = Append::new(uid.clone(), "counter", &json!({"name": name, "value": new}));
        if let Err(e) = self.store.append(vec![event]).await {
            // Refused means unchanged: the old total goes back, so that a
            // retry of the same delta counts once.
            let _ = match values.get(name) {
                Some(old) => {
                    self.store
                        .kv_stage(&key, old.to_string().into_bytes())
                        .await
                }
                None => self.store.kv_stage_remove(&key).await,
            };
            return Err(e.into());
        }
        values.insert(name.to_owned(), new);
        Ok(new)
    }

    /// Appends the `counter` event of a keyed change, once per key.
    async fn push_once(
        &self,
        uid: &Uid,
        name: &str,
        total: i64,
        key: &IdempotencyKey,
    ) -> Result<(), StoreError> {
        let event = Append::new(
            uid.clone(),
            "counter",
            &json!({"name": name, "value": total}),
        );
        let once = format!("{}/event", key.record);
        self.store
            .append_once(&once, key.fingerprint, vec![event])
            .await?;
        Ok(())
    }

    /// Forgets the counters of users nobody is reading or changing (they
    /// are in the store).
    /// Returns how many users' counters remain in memory.
    pub fn forget_idle(&self) -> usize {
        self.values
            .retain(|_, values| Arc::strong_count(values) > 1);
        self.values.len()
    }
}

/// `YYYY-MM-DD` of a day given as days since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's civil_from_days).
pub fn date_of_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn today() -> String {
    date_of_day((crate::store::now_ms() / 86_400_000) as i64)
}

/// Whether `s` is a real date written `YYYY-MM-DD`.
pub fn valid_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return false;
    };
    if y.len() != 4
        || m.len() != 2
        || d.len() != 2
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// The kv key of a day's news.
pub fn news_key(date: &str) -> String {
    format!("news/{date}")
}

/// The kv key of the last date `uid` was shown the news.
pub fn news_seen_key(uid: &Uid) -> String {
    format!("newsseen/{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(19_723), "2024-01-01");
        assert_eq!(date_of_day(20_513), "2026-03-01");
        assert!(valid_date("2024-02-29") && valid_date("2026-11-22"));
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-1",
            "26-01-01",
            "2026-01-32",
            "2026/01/01",
            "abcd-ef-gh",
        ] {
            assert!(!valid_date(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_change_whose_append_fails_leaves_nothing_behind() {
        use crate::store::{EventQueue, Records};
        let dir = tempfile::tempdir().unwrap();
        let sled = crate::store::sled::open_for_tests(dir.path());
        let counters = Counters::new(sled.clone(), Duration::from_secs(3600));
        let uid = Uid::parse("alice").unwrap();
        assert_eq!(
            counters
                .change(&uid, "unread", Change::Delta(1), None)
                .await
                .unwrap(),
            1
        );

        sled.fail_appends(true);
        assert!(counters
            .change(&uid, "unread", Change::Delta(1), None)
            .await
            .is_err());
        assert!(counters
            .change(&uid, "new", Change::Set(5), None)
            .await
            .is_err());
        sled.fail_appends(false);

        // Memory and store still hold the last total that was answered, so
        // the backend's retry of the same delta counts once.
        let all = counters.all(&uid).await.unwrap();
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec![("unread".to_owned(), 1)]
        );
        sled.sync().await.unwrap();
        assert_eq!(
            sled.kv_get("counter/alice/unread").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(sled.kv_get("counter/alice/new").await.unwrap(), None);
        assert_eq!(
            counters
                .change(&uid, "unread", Change::Delta(1), None)
                .await
                .unwrap(),
            2
        );
    }

    #[test]
    fn counter_names() {
        assert!(valid_counter_name("unread") && valid_counter_name("friend_requests.v2"));
        assert!(
            !valid_counter_name("") && !valid_counter_name("Unread") && !valid_counter_name("a/b")
        );
    }
}
