//! The shared store of a cluster on Redis Cluster: N primaries, each with
//! replicas, so that the store grows with the primaries and survives the
//! death of one.
//!
//! A script may only touch the keys of one slot. Users, groups and
//! records are spread over [`PARTITIONS`] partitions (a hash of the uid, of
//! the group or of a record's owner); every key of a partition carries the
//! partition's hash tag `{T}`, picked at start so that the partitions lie
//! evenly over the 16 384 slots (and so over the primaries). Layout:
//! - `h:{T}:u:UID:m` HASH: `s` last seq given, `c` last seq readers see
//!   (confirmed), `e` epoch, `a` acked seq; `…:q` the STREAM (ids
//!   `<seq>-0`), `…:v` the SET of voided seqs, `…:on` presence per node;
//! - `h:{T}:w` the partition's sharded wake channel (`SPUBLISH uid seq`);
//! - `h:{T}:alive|status|shown` presence of the partition's users;
//! - `h:{T}:kv:v|i|x` the partition's records (see `cluster/records.rs`);
//! - `h:{T}:once:KEY` claims of writes across partitions, `h:{T}:claims`
//!   the open ones, `h:{T}:part:ID` a part's token, `h:{T}:ids` ids;
//! - `h:lock:NAME`, `h:rate:NAME`: locks and buckets, each in its own slot;
//! - `h:{nodes}:z` and the sharded channel `h:{nodes}:bus`: the nodes' bus
//!   ([`crate::store::NodeBus`]), in one slot.
//!
//! An append to many users is split by partition, one script per part,
//! all parts in flight at once. With `--redis-replicas N` (default 1 when
//! every primary has a replica) a part is appended unconfirmed, `WAIT N`
//! is sent to its primary, and only then is it confirmed (made visible and
//! woken, `confirm.lua`); a part no replica got in time is voided, and the
//! request answered 503: nothing acknowledged can be lost with a primary.
//! A write that must be atomic across partitions (an idempotency key, a
//! message and its feed copy) is claimed first (`claim.lua`); its parts are
//! appended under tokens derived from the claim, so the upkeep finishes a
//! claim whose node died, without appending twice.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{join_all, try_join_all};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use super::event::now_ms;
use super::redis::health::Health;
use super::redis::{array, bad_reply, bytes, int, new_epoch, page_of, RedisOptions, Wakes};
use super::{Acked, Append, EventQueue, IdempotentAppend, Page, PageLimit, StoreError};
use crate::config::Durability;
use crate::uid::Uid;

/// How many partitions users, groups and records are spread over.
pub const PARTITIONS: usize = 128;

/// How old an open claim must be before the upkeep finishes it: longer
/// than any request that could still be finishing it itself.
const CLAIM_ORPHANED: Duration = Duration::from_secs(30);

/// The Redis Cluster store.
pub struct ClusterStore {
    /// The command connections (one per primary), made again by
    /// [`wakes::probe`] when they stop answering.
    client: ClusterClient,
    conn: std::sync::RwLock<ClusterConnection>,
    scripts: Scripts,
    wakes: Arc<Wakes>,
    /// The hash tag of each partition.
    tags: Vec<String>,
    options: RedisOptions,
    /// Replicas each append waits for before it is visible.
    replicas: u32,
    /// What the primaries said about their persistence, for `/healthz`.
    persistence: String,
    health: Health,
    /// Whether the wake subscription was lost since it was last made.
    subscription_lost: AtomicBool,
}

struct Scripts {
    append: Script,
    confirm: Script,
    read: Script,
    claim: Script,
    ack: Script,
    kv: Script,
    presence: Script,
    rate: Script,
    release: Script,
}

/// The slot of `text` (Redis Cluster's CRC16 of it).
fn slot(text: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(text.as_bytes()) % 16384
}

/// A hash tag per partition, partition `p`'s in the middle of the `p`th
/// of [`PARTITIONS`] equal slot ranges (as Centrifugo precomputes its
/// partitions' tags): balanced primaries give balanced partitions.
fn partition_tags() -> Vec<String> {
    let width = 16384 / PARTITIONS;
    let mut tags = vec![String::new(); PARTITIONS];
    let mut missing = PARTITIONS;
    for n in 0u32.. {
        let tag = format!("{n:x}");
        let slot = usize::from(slot(&tag));
        let p = slot / width;
        if slot % width == width / 2 && tags[p].is_empty() {
            tags[p] = tag;
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    tags
}

/// The partition of `text` (the same on every node).
fn partition_of(text: &str) -> usize {
    crate::util::bucket_of(text, PARTITIONS as u32) as usize
}

/// One partition's share of a batch of appends: their indexes in the batch.
struct Part {
    p: usize,
    items: Vec<usize>,
}

/// Splits `batch` by partition (at most 256 users per part).
fn split(batch: &[Append]) -> Vec<Part> {
    let mut by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, append) in batch.iter().enumerate() {
        by.entry(partition_of(append.uid.as_str()))
            .or_default()
            .push(i);
    }
    by.into_iter()
        .flat_map(|(p, items)| {
            items
                .chunks(256)
                .map(|items| Part {
                    p,
                    items: items.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What became of one part of an append: its seqs once appended, and
/// whether it is kept (replicated, and confirmed unless atomic), or what
/// stopped it.
type PartOutcome = (Option<Vec<u64>>, Result<bool, StoreError>);

/// A write across partitions as its claim keeps it, so that any node can
/// finish it.
#[derive(Serialize, Deserialize)]
struct Intent {
    id: String,
    tag: u64,
    ts: u64,
    appends: Vec<(String, String, Box<RawValue>)>,
}

impl Intent {
    fn batch(&self) -> Result<Vec<Append>, StoreError> {
        self.appends
            .iter()
            .map(|(uid, kind, data)| {
                Ok(Append {
                    uid: Uid::from_store(uid)
                        .map_err(|_| StoreError::Io(format!("a claim for the bad uid {uid:?}")))?,
                    kind: kind.clone(),
                    data: data.clone(),
                })
            })
            .collect()
    }
}

impl ClusterStore {
    /// Connects to the cluster through `seeds` (`HOST:PORT,...`), checks
    /// every primary's persistence and replicas, and subscribes to the
    /// wake channels.
    pub async fn connect(
        seeds: &str,
        options: RedisOptions,
    ) -> Result<Arc<ClusterStore>, StoreError> {
        let nodes: Vec<String> = seeds
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("redis://{s}"))
            .collect();
        let builder = || {
            ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(options.timeout)
                .retries(3)
                .min_retry_wait(100)
                .max_retry_wait(1000)
        };
        let unreachable = |e: redis::RedisError| {
            StoreError::Unavailable(format!("cannot reach the redis cluster at {seeds}: {e}"))
        };
        let bad_seeds =
            |e: redis::RedisError| StoreError::Io(format!("bad redis cluster seeds {seeds}: {e}"));
        let client = builder().build().map_err(bad_seeds)?;
        let mut conn = client.get_async_connection().await.map_err(unreachable)?;
        // The wake subscription on connections of its own (RESP3 pushes),
        // so that commands never wait behind it, nor it behind them.
        let (pushes, received) = mpsc::unbounded_channel();
        let pubsub_client = builder()
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
            .map_err(bad_seeds)?;
        let pubsub = pubsub_client
            .get_async_connection()
            .await
            .map_err(unreachable)?;
        let (persistence, replicas) = check_primaries(&mut conn, &options).await?;
        let store = Arc::new(ClusterStore {
            client,
            conn: std::sync::RwLock::new(conn),
            scripts: Scripts {
                append: Script::new(include_str!("cluster/append.lua")),
                confirm: Script::new(include_str!("cluster/confirm.lua")),
                read: Script::new(include_str!("cluster/read.lua")),
                claim: Script::new(include_str!("cluster/claim.lua")),
                ack: Script::new(include_str!("redis/ack.lua")),
                kv: Script::new(include_str!("redis/kv.lua")),
                presence: Script::new(include_str!("redis/presence.lua")),
                rate: Script::new(include_str!("redis/rate.lua")),
                release: Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                ),
            },
            wakes: Arc::new(Wakes::new()),
            tags: partition_tags(),
            options,
            replicas,
            persistence,
            health: Health::default(),
            subscription_lost: AtomicBool::new(false),
        });
        wakes::subscribe(&store, &pubsub).await?;
        tokio::spawn(wakes::wake_loop(received, Arc::downgrade(&store)));
        tokio::spawn(wakes::probe(Arc::downgrade(&store), pubsub_client, pubsub));
        Ok(store)
    }

    fn conn(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn tag(&self, p: usize) -> &str {
        &self.tags[p]
    }

    fn user_key(&self, uid: &Uid, what: &str) -> String {
        format!(
            "h:{{{}}}:u:{uid}:{what}",
            self.tag(partition_of(uid.as_str()))
        )
    }

    fn key(&self, p: usize, what: &str) -> String {
        format!("h:{{{}}}:{what}", self.tag(p))
    }

    fn wake_channel(&self, p: usize) -> String {
        self.key(p, "w")
    }

    fn changes_channel(&self) -> String {
        self.key(0, "changes")
    }

    /// Drops the local waiter registry entries nobody waits on.
    fn forget_idle(&self) -> usize {
        self.wakes.heads.retain(|_, head| head.receiver_count() > 0);
        self.wakes.heads.len()
    }

    /// Appends part `part` of `batch` under `token` (a retry of the same
    /// token appends nothing again); visible at once when no replica is
    /// waited for.
    async fn append_part(
        &self,
        batch: &[Append],
        part: &Part,
        token: &str,
        ts: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let retention = &self.options.retention;
        let mut call = self.scripts.append.prepare_invoke();
        call.key(self.key(part.p, &format!("part:{token}")))
            .arg(new_epoch())
            .arg(retention.max_age.as_millis() as u64)
            .arg(self.options.once_ttl.as_millis() as u64)
            .arg(if self.replicas == 0 { "1" } else { "0" })
            .arg(self.wake_channel(part.p))
            .arg(self.replicas);
        for &i in &part.items {
            let append = &batch[i];
            call.key(self.user_key(&append.uid, "m"))
                .key(self.user_key(&append.uid, "q"))
                .key(self.user_key(&append.uid, "v"));
            let kind = serde_json::to_string(&append.kind).unwrap_or_else(|_| "\"\"".into());
            call.arg(append.uid.as_str())
                .arg(retention.cap_of(&append.uid).max(1))
                .arg(format!(
                    r#","type":{kind},"ts":{ts},"data":{}}}"#,
                    append.data.get()
                ));
        }
        let seqs: Vec<u64> = call.invoke_async(&mut self.conn()).await?;
        if seqs.len() != part.items.len() {
            return Err(bad_reply("append"));
        }
        Ok(seqs)
    }

    /// Whether `self.replicas` replicas of partition `p`'s primary have
    /// everything this node sent it so far.
    async fn replicated(&self, p: usize) -> Result<bool, StoreError> {
        let wait = (self.options.timeout / 2).as_millis().max(1) as u64;
        let route = Route::new(slot(self.tag(p)), SlotAddr::Master);
        let reply = self
            .conn()
            .route_command(
                redis::cmd("WAIT").arg(self.replicas).arg(wait).clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
            )
            .await?;
        Ok(int(&reply).unwrap_or(0) >= i64::from(self.replicas))
    }

    /// Why `what` was refused: no replica acknowledged it in time.
    fn unreplicated(&self, what: &str) -> String {
        format!(
            "no replica acknowledged {what} within {:?} (--redis-replicas {})",
            self.options.timeout / 2,
            self.replicas
        )
    }

    /// Confirms (`confirm`) or voids a part's appends; whether they are
    /// visible.
    async fn settle(
        &self,
        batch: &[Append],
        part: &Part,
        token: &str,
        seqs: &[u64],
        confirm: bool,
    ) -> Result<bool, StoreError> {
        let mut call = self.scripts.confirm.prepare_invoke();
        call.key(self.key(part.p, &format!("part:{token}")))
            .arg(if confirm { "confirm" } else { "void" })
            .arg(self.wake_channel(part.p))
            .arg(self.options.retention.max_age.as_millis() as u64);
        for (&i, seq) in part.items.iter().zip(seqs) {
            let uid = &batch[i].uid;
            call.key(self.user_key(uid, "m"))
                .key(self.user_key(uid, "q"))
                .key(self.user_key(uid, "v"))
                .arg(uid.as_str())
                .arg(*seq);
        }
        let visible: i64 = call.invoke_async(&mut self.conn()).await?;
        Ok(visible == 1)
    }

    /// Appends `batch` in parts, all in flight at once, each under the
    /// token `{id}:{n}`; resolves with the seqs in batch order once every
    /// part is visible. With replicas to wait for, every part is confirmed
    /// only once all of them are replicated (`atomic`), or each as soon as
    /// it is; a part no replica got in time is voided: then `Unavailable`
    /// if nothing became visible, `OutcomeUnknown` if some did.
    async fn append_parts(
        &self,
        batch: &[Append],
        id: &str,
        ts: u64,
        atomic: bool,
    ) -> Result<Vec<u64>, StoreError> {
        let parts = split(batch);
        let tokens: Vec<String> = (0..parts.len()).map(|n| format!("{id}:{n}")).collect();
        // Each part: its seqs once appended, and whether it is kept
        // (replicated, and confirmed unless `atomic`), or what stopped it.
        let results = join_all(parts.iter().zip(&tokens).map(|(part, token)| async move {
            let seqs = match self.append_part(batch, part, token, ts).await {
                Ok(seqs) => seqs,
                Err(e) => return (None, Err(e)),
            };
            let kept = async {
                let mut kept = self.replicas == 0 || self.replicated(part.p).await?;
                if kept && self.replicas > 0 && !atomic {
                    kept = self.settle(batch, part, token, &seqs, true).await?;
                }
                Ok::<_, StoreError>(kept)
            }
            .await;
            (Some(seqs), kept)
        }))
        .await;
        let all_kept = results
            .iter()
            .all(|(seqs, kept)| seqs.is_some() && matches!(kept, Ok(true)));
        if all_kept && atomic && self.replicas > 0 {
            let confirmed = try_join_all(parts.iter().zip(&tokens).zip(&results).map(
                |((part, token), (seqs, _))| {
                    let seqs = seqs.as_deref().unwrap_or_default();
                    self.settle(batch, part, token, seqs, true)
                },
            ))
            .await;
            if !matches!(&confirmed, Ok(all) if all.iter().all(|v| *v)) {
                return Err(StoreError::OutcomeUnknown(self.unreplicated("an append")));
            }
        } else if !all_kept {
            return Err(self.abandon(batch, &parts, &tokens, results, atomic).await);
        }
        let appended: Vec<(&Part, Vec<u64>)> = parts
            .iter()
            .zip(results)
            .map(|(part, (seqs, _))| (part, seqs.unwrap_or_default()))
            .collect();
        let mut out = vec![0; batch.len()];
        for (part, seqs) in &appended {
            for (&i, &seq) in part.items.iter().zip(seqs) {
                out[i] = seq;
                // Local waiters need not wait for the wake to come back.
                self.wakes.raise(&batch[i].uid, seq);
            }
        }
        Ok(out)
    }

    /// Takes back what a failed [`ClusterStore::append_parts`] appended and
    /// did not make visible (so that no later confirmation shows it), and
    /// says how it failed: `Unavailable` when nothing is or may become
    /// visible, else `OutcomeUnknown`.
    async fn abandon(
        &self,
        batch: &[Append],
        parts: &[Part],
        tokens: &[String],
        results: Vec<PartOutcome>,
        atomic: bool,
    ) -> StoreError {
        let mut reason = self.unreplicated("an append");
        let mut unknown = false;
        for ((part, token), (seqs, kept)) in parts.iter().zip(tokens).zip(results) {
            match (&seqs, &kept) {
                // Confirmed: visible.
                (Some(_), Ok(true)) if !atomic || self.replicas == 0 => unknown = true,
                (Some(seqs), _) if self.replicas > 0 => {
                    match self.settle(batch, part, token, seqs, false).await {
                        Ok(false) => {}
                        // A later append showed it, or no answer.
                        Ok(true) | Err(_) => unknown = true,
                    }
                }
                // Appended and visible at once (no replica waited for).
                (Some(_), _) => unknown = true,
                (None, _) => {}
            }
            // A part that was never appended: its error says whether it
            // may have been (a timeout) or was not (refused).
            if let (None, Err(e)) = (seqs, kept) {
                unknown |= !matches!(e, StoreError::Unavailable(_));
                reason = match e {
                    StoreError::Unavailable(m)
                    | StoreError::OutcomeUnknown(m)
                    | StoreError::Io(m)
                    | StoreError::Refused(m) => m,
                    StoreError::Closed => StoreError::Closed.to_string(),
                };
            }
        }
        if unknown {
            StoreError::OutcomeUnknown(reason)
        } else {
            StoreError::Unavailable(reason)
        }
    }

    /// Runs `op` of `claim.lua` on the claim `key` of partition `p`.
    async fn claim_op(&self, p: usize, key: &str, args: &[&str]) -> Result<Value, StoreError> {
        let mut call = self.scripts.claim.prepare_invoke();
        call.key(key).key(self.key(p, "claims"));
        for a in args {
            call.arg(*a);
        }
        Ok(call.invoke_async(&mut self.conn()).await?)
    }

    /// Drives the write `intent` claimed under `key` (partition `p`) to its
    /// end: its appends, then the claim closed with their seqs (or
    /// deleted, when `forget`).
    async fn drive(
        &self,
        p: usize,
        key: &str,
        intent: &Intent,
        forget: bool,
    ) -> Result<Vec<u64>, StoreError> {
        let batch = intent.batch()?;
        let seqs = match self.append_parts(&batch, &intent.id, intent.ts, true).await {
            Ok(seqs) => seqs,
            Err(StoreError::Unavailable(reason)) => {
                // Nothing of it is visible: a retry may write it anew.
                self.claim_op(p, key, &["drop"]).await?;
                return Err(StoreError::Unavailable(reason));
            }
            Err(e) => return Err(e),
        };
        let answer = std::iter::once(intent.tag)
            .chain(seqs.iter().copied())
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.claim_op(p, key, &["finish", &answer, if forget { "1" } else { "0" }])
            .await?;
        Ok(seqs)
    }

    /// Claims `key` (partition `p`) for `intent` and drives it; or, if it
    /// was claimed before, the first write's answer (driving it to its end
    /// first if its node left it open).
    async fn claimed(
        &self,
        p: usize,
        key: &str,
        intent: Intent,
        forget: bool,
    ) -> Result<IdempotentAppend, StoreError> {
        let payload = serde_json::to_string(&intent).map_err(|e| StoreError::Io(e.to_string()))?;
        let ttl = self.options.once_ttl.as_millis().to_string();
        let held = self
            .claim_op(p, key, &["claim", &payload, &ttl, &now_ms().to_string()])
            .await?;
        let Some(held) = bytes(held) else {
            // The claim must outlive its primary before any part is
            // appended: lost in a failover, a retry would claim anew and
            // append every part again.
            if self.replicas > 0 && !self.replicated(p).await? {
                self.claim_op(p, key, &["drop"]).await?;
                return Err(StoreError::Unavailable(
                    self.unreplicated("the claim of a write"),
                ));
            }
            let seqs = self.drive(p, key, &intent, forget).await?;
            return Ok(IdempotentAppend::Appended { seqs });
        };
        let held = String::from_utf8_lossy(&held);
        let (tag, seqs) = match held.split_at(1) {
            ("D", answer) => {
                let mut numbers = answer.split(',').filter_map(|n| n.parse().ok());
                let tag = numbers.next().ok_or_else(|| bad_reply("claim"))?;
                (tag, numbers.collect())
            }
            ("P", first) => {
                let first: Intent = serde_json::from_str(first).map_err(|_| bad_reply("claim"))?;
                let seqs = self.drive(p, key, &first, forget).await?;
                (first.tag, seqs)
            }
            _ => {
                return Err(StoreError::Io(format!(
                    "unexpected claim {held:?} under {key}"
                )))
            }
        };
        Ok(IdempotentAppend::Duplicate { tag, seqs })
    }

    /// Finishes the claims whose node left them open (killed between two
    /// parts of a write); returns how many.
    async fn finish_orphans(&self) -> Result<u64, StoreError> {
        let before = now_ms().saturating_sub(CLAIM_ORPHANED.as_millis() as u64);
        let mut finished = 0;
        for p in 0..PARTITIONS {
            let index = self.key(p, "claims");
            let due = self
                .claim_op(p, &index, &["due", &before.to_string(), "100"])
                .await?;
            let mut items = array(due).unwrap_or_default().into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                let (Some(key), Some(value)) = (bytes(key), bytes(value)) else {
                    continue;
                };
                let key = String::from_utf8_lossy(&key).into_owned();
                let value = String::from_utf8_lossy(&value);
                let Ok(intent) = serde_json::from_str::<Intent>(&value[1..]) else {
                    continue;
                };
                let forget = key.contains(":once:~");
                match self.drive(p, &key, &intent, forget).await {
                    Ok(_) => finished += 1,
                    Err(e) => tracing::warn!("could not finish the write claimed under {key}: {e}"),
                }
            }
        }
        Ok(finished)
    }
}

/// Checks every primary's persistence against `options.durability` and
/// counts its replicas; returns a description for `/healthz` and how many
/// replicas each append waits for.
async fn check_primaries(
    conn: &mut ClusterConnection,
    options: &RedisOptions,
) -> Result<(String, u32), StoreError> {
    let all = || RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let per_node = |reply: Value| -> Vec<(String, Value)> {
        match reply {
            Value::Map(nodes) => nodes
                .into_iter()
                .map(|(node, v)| {
                    let node = bytes(node).unwrap_or_default();
                    (String::from_utf8_lossy(&node).into_owned(), v)
                })
                .collect(),
            other => vec![(String::new(), other)],
        }
    };
    let config = conn
        .route_command(
            redis::cmd("CONFIG").arg("GET").arg("append*").clone(),
            all(),
        )
        .await?;
    let mut unsafe_nodes = Vec::new();
    let primaries = per_node(config);
    for (node, reply) in &primaries {
        let text = format!("{reply:?}");
        let setting = |name: &str| -> String {
            let items: Vec<String> = flatten(reply.clone());
            items
                .iter()
                .position(|k| k == name)
                .and_then(|i| items.get(i + 1).cloned())
                .unwrap_or_else(|| format!("? ({text})"))
        };
        let (aof, fsync) = (setting("appendonly"), setting("appendfsync"));
        if aof != "yes" || fsync != "always" {
            unsafe_nodes.push(format!("{node} (appendonly {aof}, appendfsync {fsync})"));
        }
    }
    let info = conn
        .route_command(redis::cmd("INFO").arg("replication").clone(), all())
        .await?;
    let fewest = per_node(info)
        .into_iter()
        .map(|(_, v)| {
            let text = flatten(v).join("\n");
            text.lines()
                .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0);
    let replicas = match options.replicas {
        Some(n) if n > fewest => {
            return Err(StoreError::Refused(format!(
                "--redis-replicas {n}: a primary of the cluster has only {fewest} replica(s)"
            )))
        }
        Some(n) => n,
        None => fewest.min(1),
    };
    if replicas == 0 {
        tracing::warn!(
            "redis cluster: appends wait for no replica (--redis-replicas 0); a primary's death may lose acknowledged events"
        );
    }
    let count = primaries.len();
    let copies =
        format!("{count} primaries, each append on {replicas} replica(s) before it is visible");
    if unsafe_nodes.is_empty() {
        return Ok((
            format!("fsync (appendonly yes, appendfsync always; {copies})"),
            replicas,
        ));
    }
    let list = unsafe_nodes.join(", ");
    match options.durability {
        Durability::Fsync => Err(StoreError::Refused(format!(
            "redis cluster primaries without appendonly yes + appendfsync always: {list}; --redis-durability fsync needs it on every primary (or pass --redis-durability async to accept losing recent writes)"
        ))),
        Durability::Async => {
            tracing::warn!("redis cluster primaries {list}: acknowledged events may be lost if they die (--redis-durability async)");
            Ok((format!("async ({list}; {copies})"), replicas))
        }
    }
}

/// Every string in `v`, depth first.
fn flatten(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.into_iter().flat_map(flatten).collect(),
        Value::Map(pairs) => pairs
            .into_iter()
            .flat_map(|(k, v)| flatten(k).into_iter().chain(flatten(v)))
            .collect(),
        Value::VerbatimString { text, .. } => vec![text],
        other => bytes(other)
            .map(|b| vec![String::from_utf8_lossy(&b).into_owned()])
            .unwrap_or_default(),
    }
}

#[async_trait]
impl EventQueue for ClusterStore {
    async fn append(&self, batch: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        let id = format!("{:x}", rand::random::<u64>());
        self.append_parts(&batch, &id, now_ms(), false).await
    }

    async fn append_once(
        &self,
        key: &str,
        tag: u64,
        appends: Vec<Append>,
    ) -> Result<IdempotentAppend, StoreError> {
        let p = partition_of(key);
        let claim = self.key(p, &format!("once:{key}"));
        self.claimed(p, &claim, Intent::of(tag, &appends), false)
            .await
    }

    async fn append_atomic(&self, appends: Vec<Append>) -> Result<Vec<u64>, StoreError> {
        let parts = split(&appends);
        if parts.len() <= 1 {
            // One script runs whole or not at all.
            return self.append(appends).await;
        }
        let intent = Intent::of(0, &appends);
        let p = parts[0].p;
        let claim = self.key(p, &format!("once:~{}", intent.id));
        match self.claimed(p, &claim, intent, true).await? {
            IdempotentAppend::Appended { seqs } | IdempotentAppend::Duplicate { seqs, .. } => {
                Ok(seqs)
            }
        }
    }

    async fn next_id(&self, scope: &str) -> Result<u64, StoreError> {
        // Unique: the partition is in the low bits; rising per scope.
        let p = partition_of(scope);
        let n: u64 = redis::cmd("INCR")
            .arg(self.key(p, "ids"))
            .query_async(&mut self.conn())
            .await?;
        Ok(n * PARTITIONS as u64 + p as u64)
    }

    async fn read(&self, uid: &Uid, after: u64, limit: PageLimit) -> Result<Page, StoreError> {
        let reply: Value = self
            .scripts
            .read
            .key(self.user_key(uid, "m"))
            .key(self.user_key(uid, "q"))
            .key(self.user_key(uid, "v"))
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
            .key(self.user_key(uid, "m"))
            .arg(seq)
            .arg("c")
            .invoke_async(&mut self.conn())
            .await?;
        Ok(Acked {
            before,
            after,
            head,
        })
    }

    async fn watch(&self, uid: &Uid) -> Result<watch::Receiver<u64>, StoreError> {
        let (mut conn, key) = (self.conn(), self.user_key(uid, "m"));
        let head = async move {
            let mut head = redis::cmd("HGET");
            head.arg(key).arg("c");
            Ok(head.query_async(&mut conn).await?)
        };
        self.wakes.watch(uid, head).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // Every write resolved only once its primary answered, after its
        // fsync (and its replicas, as configured).
        Ok(())
    }
}

impl Intent {
    /// A new write of `appends`, under a fresh id.
    fn of(tag: u64, appends: &[Append]) -> Intent {
        Intent {
            id: format!("{:x}", rand::random::<u64>()),
            tag,
            ts: now_ms(),
            appends: appends
                .iter()
                .map(|a| (a.uid.as_str().to_owned(), a.kind.clone(), a.data.clone()))
                .collect(),
        }
    }
}

mod records;
mod shared;
mod wakes;
