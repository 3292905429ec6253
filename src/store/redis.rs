//! The shared store of a cluster: user queues and records on Redis, so that
//! any herald node can serve any request of any user.
//!
//! Layout (per-user keys hash-tagged by user):
//! - `h:{u:UID}:m` HASH: `s` last seq, `e` epoch, `a` acked seq;
//! - `h:{u:UID}:q` STREAM: entry id `<seq>-0`, field `j` = the event JSON;
//! - `h:once:KEY` STRING with a TTL: an idempotency key and its tag;
//! - `h:{kv}:v` HASH key → value, `h:{kv}:i` ZSET (scores 0) of the keys
//!   for ordered prefix ranges, `h:{kv}:x` ZSET key → deadline (ms);
//! - `h:ids`: the counter behind [`EventQueue::next_id`];
//! - `h:{nodes}:z` ZSET node → end of its lease (ms), and the channel
//!   `h:{nodes}:bus`: the nodes' bus ([`crate::store::NodeBus`]).
//!
//! Every write is one Lua script or one `MULTI`, answered by Redis only
//! after its AOF is fsynced when Redis runs `appendfsync always` (checked at
//! start, see [`Durability`]): so a write is durable when it resolves, and
//! Redis's own event loop is the group commit. An append also PUBLISHes
//! `UID SEQ` on one of [`PARTITIONS`] wake channels, which every node
//! subscribes to once ([`Wakes`]): a long-poll held on node B wakes when
//! node C appends.
//!
//! A queue that lost its meta hash (Redis data wiped, or the queue expired
//! after `--queue-max-age` idle) restarts at seq 1 under a new epoch, and
//! readers whose epoch differs get a `gap` instead of silence.
//!
//! Here: connecting, the queue (append, read, ack, watch). Beside it:
//! `records.rs` (the records, locks and change announcements), `shared.rs`
//! (presence leases and token buckets), `wakes.rs` (the wake subscription).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::{broadcast, mpsc, watch};

use super::event::{gap_event, now_ms};
use super::{
    Acked, Append, Epoch, EventQueue, IdempotentAppend, Page, PageLimit, Retention, StoreError,
};
use crate::config::Durability;
use crate::uid::Uid;
use crate::util::SharedMap;

/// How many wake channels appends are spread over.
pub const PARTITIONS: u32 = 16;

/// Tuning of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Most events kept per user and by the feed (`MAXLEN ~`), and how
    /// long an idle queue is kept (its oldest event's age).
    pub retention: Retention,
    /// How long an idempotency key is kept.
    pub once_ttl: Duration,
    pub durability: Durability,
    /// How long a command waits for its answer (`--redis-timeout-ms`).
    pub timeout: Duration,
    /// On a Redis Cluster: how many replicas an append waits for before it
    /// is visible (`--redis-replicas`; `None`: 1 if every primary has one).
    pub replicas: Option<u32>,
}

/// The Redis-backed store.
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Scripts,
    wakes: Arc<Wakes>,
    options: RedisOptions,
    /// What [`Durability`] found at start, for `/healthz`.
    persistence: String,
    /// Whether Redis answers (probed every second).
    health: health::Health,
}

struct Scripts {
    append: Script,
    read: Script,
    ack: Script,
    kv: Script,
    release: Script,
    presence: Script,
    rate: Script,
}

/// The local waiters of every user, woken by appends on any node.
pub(in crate::store) struct Wakes {
    pub(in crate::store) heads: SharedMap<Uid, watch::Sender<u64>>,
    /// Records announced as changed by any node (see
    /// [`Records::announce`]).
    pub(in crate::store) changes: broadcast::Sender<String>,
    /// Ephemeral signals published by any node (see [`Records::signal`]).
    pub(in crate::store) signals: broadcast::Sender<(Uid, Bytes)>,
    /// What nodes tell each other (see [`crate::store::NodeBus`]).
    pub(in crate::store) bus: broadcast::Sender<Bytes>,
}

const KV_VALUES: &str = "h:{kv}:v";
const KV_INDEX: &str = "h:{kv}:i";
const KV_DEADLINES: &str = "h:{kv}:x";
const CHANGES: &str = "h:changes";

fn meta_key(uid: &Uid) -> String {
    format!("h:{{u:{uid}}}:m")
}

fn stream_key(uid: &Uid) -> String {
    format!("h:{{u:{uid}}}:q")
}

/// The wake channel of `uid` (FNV-1a of the uid, so every node agrees).
fn wake_channel(uid: &Uid) -> String {
    let hash = uid.as_str().bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("h:wake:{}", hash % PARTITIONS)
}

/// A fresh epoch, as the scripts store it.
pub(in crate::store) fn new_epoch() -> String {
    Epoch::random().to_string()
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // Refused: nothing reached Redis. A cluster without a primary for
        // the slot, or a node demoted meanwhile, applied nothing either.
        let no_primary = e.is_cluster_error()
            || matches!(
                e.kind(),
                redis::ErrorKind::ClusterConnectionNotFound
                    | redis::ErrorKind::Server(
                        redis::ServerErrorKind::MasterDown
                            | redis::ServerErrorKind::ReadOnly
                            | redis::ServerErrorKind::BusyLoading
                    )
            );
        // A primary without the replicas an append waits for refuses it.
        let no_replicas = e.code() == Some("NOREPLICAS");
        if e.is_connection_refusal() || no_primary || no_replicas {
            StoreError::Unavailable(format!("redis: {e}"))
        } else if e.is_timeout() || e.is_connection_dropped() {
            // Sent and not answered in time, or the connection lost while
            // waiting: Redis may have applied it, or may still.
            StoreError::OutcomeUnknown(format!("redis: {e}"))
        } else if e.is_io_error() || e.is_unrecoverable_error() {
            StoreError::Unavailable(format!("redis: {e}"))
        } else {
            StoreError::Io(format!("redis: {e}"))
        }
    }
}

pub(in crate::store) fn bad_reply(what: &str) -> StoreError {
    StoreError::Io(format!("unexpected redis reply to {what}"))
}

pub(in crate::store) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(in crate::store) fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

pub(in crate::store) fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// `[k1, v1, k2, v2, ...]` as pairs.
pub(in crate::store) fn pairs(v: Value) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let items = array(v).ok_or_else(|| bad_reply("kv"))?;
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = bytes(k).ok_or_else(|| bad_reply("kv"))?;
        let v = bytes(v).unwrap_or_default();
        out.push((String::from_utf8_lossy(&k).into_owned(), v));
    }
    Ok(out)
}

impl RedisStore {
    /// Connects to Redis at `url`, checks its persistence against
    /// `options.durability`, and subscribes to the wake channels.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Arc<RedisStore>, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Io(format!("bad redis url {url}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut conn = client
            .get_connection_manager_with_config(config.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach redis at {url}: {e}")))?;
        let persistence = check_persistence(&mut conn, options.durability).await?;

        let wakes = Arc::new(Wakes::new());
        let store = Arc::new(RedisStore {
            conn,
            scripts: Scripts {
                append: Script::new(include_str!("redis/append.lua")),
                read: Script::new(include_str!("redis/read.lua")),
                ack: Script::new(include_str!("redis/ack.lua")),
                kv: Script::new(include_str!("redis/kv.lua")),
                presence: Script::new(include_str!("redis/presence.lua")),
                rate: Script::new(include_str!("redis/rate.lua")),
                release: Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                ),
            },
            wakes: wakes.clone(),
            options,
            persistence,
            health: health::Health::default(),
        });

        // The wake subscription: RESP3 pushes, resubscribed by the manager
        // after every reconnect.
        let info = client.get_connection_info().clone().set_redis_settings(
            client
                .get_connection_info()
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3),
        );
        let (pushes, received) = mpsc::unbounded_channel();
        let pubsub_client = redis::Client::open(info).map_err(StoreError::from)?;
        let mut pubsub = pubsub_client
            .get_connection_manager_with_config(
                config
                    .set_push_sender(pushes)
                    .set_automatic_resubscription(),
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach redis at {url}: {e}")))?;
        let mut channels: Vec<String> = (0..PARTITIONS).map(|p| format!("h:wake:{p}")).collect();
        channels.push(shared::BUS.to_owned());
        channels.push(CHANGES.to_owned());
        pubsub.subscribe(&channels).await?;
        tokio::spawn(wakes::wake_loop(received, Arc::downgrade(&store)));
        tokio::spawn(wakes::keep_subscribed(pubsub, Arc::downgrade(&store)));
        tokio::spawn(health::probe(Arc::downgrade(&store)));
        Ok(store)
    }

    /// What Redis said about its persistence, for `/healthz`.
    pub fn persistence(&self) -> &str {
        &self.persistence
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Drops the local waiter registry entries nobody waits on; returns how
    /// many remain.
    pub fn forget_idle(&self) -> usize {
        self.wakes.heads.retain(|_, head| head.receiver_count() > 0);
        self.wakes.heads.len()
    }

    /// Appends `batch` (all users distinct or not; one script call per
    /// chunk), optionally guarded by an idempotency key.
    async fn append_script(
        &self,
        batch: &[Append],
        once: Option<(&str, u64)>,
    ) -> Result<Result<Vec<u64>, (u64, Vec<u64>)>, StoreError> {
        let ts = now_ms();
        let mut call = self.scripts.append.prepare_invoke();
        let epoch = new_epoch();
        call.arg(&epoch)
            .arg(self.options.retention.max_age.as_millis() as u64)
            .arg(once.map_or("", |(k, _)| k))
            .arg(once.map_or(0, |(_, t)| t))
            .arg(self.options.once_ttl.as_millis() as u64);
        for append in batch {
            call.key(meta_key(&append.uid)).key(stream_key(&append.uid));
            let kind = serde_json::to_string(&append.kind).unwrap_or_else(|_| "\"\"".into());
            call.arg(wake_channel(&append.uid))
                .arg(append.uid.as_str())
                .arg(self.options.retention.cap_of(&append.uid).max(1))
                .arg(format!(
                    r#","type":{kind},"ts":{ts},"data":{}}}"#,
                    append.data.get()
                ));
        }
        let reply: Vec<i64> = call.invoke_async(&mut self.conn()).await?;
        if once.is_some() && reply.first() == Some(&-1) {
            let tag = reply.get(1).copied().unwrap_or(0) as u64;
            let seqs = reply.iter().skip(2).map(|&s| s as u64).collect();
            return Ok(Err((tag, seqs)));
        }
        let seqs: Vec<u64> = reply.into_iter().map(|s| s as u64).collect();
        // Local waiters need not wait for the publish to come back.
        for (append, seq) in batch.iter().zip(&seqs) {
            self.wakes.raise(&append.uid, *seq);
        }
        Ok(Ok(seqs))
    }
}

/// Checks `CONFIG GET appendonly/appendfsync` against `durability`;
/// returns a description of the setting.
async fn check_persistence(
    conn: &mut ConnectionManager,
    durability: Durability,
) -> Result<String, StoreError> {
    let appendonly: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(conn)
        .await?;
    let appendfsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(conn)
        .await?;
    let aof = appendonly.get(1).map(String::as_str).unwrap_or("?");
    let fsync = appendfsync.get(1).map(String::as_str).unwrap_or("?");
    let setting = format!("appendonly {aof}, appendfsync {fsync}");
    let safe = aof == "yes" && fsync == "always";
    match durability {
        Durability::Fsync if !safe => Err(StoreError::Refused(format!(
            "redis runs with {setting}; --redis-durability fsync needs appendonly yes and appendfsync always (or pass --redis-durability async to accept losing recent writes)"
        ))),
        Durability::Async if !safe => {
            tracing::warn!(
                "redis runs with {setting}: acknowledged events may be lost if redis dies (--redis-durability async)"
            );
            Ok(format!("async ({setting})"))
        }
        _ => Ok(format!("fsync ({setting})")),
    }
}

/// The page of a read script's reply `{epoch, head, first retained seq,
/// entries}` for a reader after `after`.
pub(in crate::store) fn page_of(
    reply: Value,
    after: u64,
    limit: PageLimit,
) -> Result<Page, StoreError> {
    let mut parts = array(reply).ok_or_else(|| bad_reply("read"))?.into_iter();
    let (Some(epoch), Some(head), Some(first), Some(entries)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_reply("read"));
    };
    let epoch = bytes(epoch)
        .and_then(|e| Epoch::parse(&String::from_utf8_lossy(&e)))
        .ok_or_else(|| bad_reply("read"))?;
    let head = int(&head).unwrap_or(0) as u64;
    let first = int(&first).unwrap_or(0) as u64;
    let mut page = Page {
        events: Vec::new(),
        cursor: after,
        head,
        epoch,
    };
    let mut total = 0;
    // Events before the oldest retained one (or all up to the head, if
    // none is left) were trimmed.
    let retained_from = if first == 0 { head + 1 } else { first };
    if after < head && after + 1 < retained_from {
        let gap = gap_event(after + 1, retained_from - 1, now_ms());
        total += gap.len();
        page.events.push(gap);
        page.cursor = retained_from - 1;
    }
    for entry in array(entries).unwrap_or_default() {
        let mut entry = array(entry).unwrap_or_default().into_iter();
        let (Some(id), Some(fields)) = (entry.next(), entry.next()) else {
            continue;
        };
        let id = bytes(id).unwrap_or_default();
        let seq: u64 = std::str::from_utf8(&id)
            .ok()
            .and_then(|id| id.split('-').next()?.parse().ok())
            .unwrap_or(0);
        if seq <= page.cursor {
            continue;
        }
        let Some(json) = array(fields)
            .and_then(|f| f.into_iter().nth(1))
            .and_then(bytes)
        else {
            continue;
        };
        if !limit.fits(page.events.len(), total, json.len()) {
            break;
        }
        total += json.len();
        page.cursor = seq;
        page.events.push(Bytes::from(json));
    }
    Ok(page)
}

#[async_trait]
impl EventQueue for RedisStore {
    async fn append(&self, batch: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        let mut seqs = Vec::with_capacity(batch.len());
        // Chunks keep each script short: Redis runs one at a time.
        for chunk in batch.chunks(256) {
            match self.append_script(chunk, None).await? {
                Ok(s) => seqs.extend(s),
                Err(_) => return Err(bad_reply("append")),
            }
        }
        Ok(seqs)
    }

    async fn append_once(
        &self,
        key: &str,
        tag: u64,
        appends: Vec<Append>,
    ) -> Result<IdempotentAppend, StoreError> {
        let once_key = format!("h:once:{key}");
        // One script: all of the appends and the key, or none.
        match self.append_script(&appends, Some((&once_key, tag))).await? {
            Ok(seqs) => Ok(IdempotentAppend::Appended { seqs }),
            Err((tag, seqs)) => Ok(IdempotentAppend::Duplicate { tag, seqs }),
        }
    }

    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        // One script runs whole or not at all.
        self.append_script(&appends, None)
            .await?
            .map_err(|_| bad_reply("append"))
    }

    async fn next_id(&self, _scope: &str) -> Result<u64, StoreError> {
        Ok(redis::cmd("INCR")
            .arg("h:ids")
            .query_async(&mut self.conn())
            .await?)
    }

    async fn read(&self, uid: &Uid, after: u64, limit: PageLimit) -> Result<Page, StoreError> {
        let reply: Value = self
            .scripts
            .read
            .key(meta_key(uid))
            .key(stream_key(uid))
            .arg(after)
            .arg(limit.events.max(1))
            .arg(new_epoch())
            .arg(self.options.retention.max_age.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await?;
        page_of(reply, after, limit)
    }

    async fn ack(&self, uid: &Uid, seq: u64) -> Result<Acked, StoreError> {
        let (before, after, head): (u64, u64, u64) = self
            .scripts
            .ack
            .key(meta_key(uid))
            .arg(seq)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Acked {
            before,
            after,
            head,
        })
    }

    async fn watch(&self, uid: &Uid) -> Result<watch::Receiver<u64>, StoreError> {
        let (mut conn, key) = (self.conn(), meta_key(uid));
        let head = async move {
            let mut head = redis::cmd("HGET");
            head.arg(key).arg("s");
            Ok(head.query_async(&mut conn).await?)
        };
        self.wakes.watch(uid, head).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // Every write resolved only once Redis answered it, after its fsync.
        Ok(())
    }
}

pub(in crate::store) mod health;
pub(in crate::store) mod records;
pub(in crate::store) mod shared;
mod upkeep;
mod wakes;
