//! The store contract: one table of cases for the family a backend brings
//! (`herald::store::Backend`: the queue, the records, the presence table,
//! the token buckets), run against sled and against Redis (a private
//! `redis-server` on a free port, fsync on every write). A new backend is
//! proven by passing the same cases.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::Redis;
use herald::config::Durability;
use herald::metrics::Metrics;
use herald::store::cluster::ClusterStore;
use herald::store::redis::{RedisOptions, RedisStore};
use herald::store::sled::{SledOptions, SledStore};
use herald::store::{Append, Backend, IdempotentAppend, OnNode, PageLimit, Retention};
use herald::uid::Uid;
use serde_json::json;

fn uid(name: &str) -> Uid {
    Uid::parse(name).expect("a uid")
}

const PAGE: PageLimit = PageLimit {
    events: 100,
    bytes: 1 << 20,
};

fn event(to: &str, n: u64) -> Append {
    Append::new(uid(to), "notice", &json!({ "n": n }))
}

/// The `n` field of each event of a page.
fn numbers(events: &[bytes::Bytes]) -> Vec<u64> {
    events
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(e).expect("event JSON"))
        .map(|e| e["data"]["n"].as_u64().expect("n"))
        .collect()
}

fn seqs(events: &[bytes::Bytes]) -> Vec<u64> {
    events
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(e).expect("event JSON"))
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

async fn appends_take_gap_free_seqs_per_user_and_read_after_a_cursor(b: &Backend) {
    let batch = vec![
        event("ann", 1),
        event("ben", 1),
        event("ann", 2),
        event("ann", 3),
    ];
    assert_eq!(b.store.append(batch).await.unwrap(), [1, 1, 2, 3]);
    let page = b.store.read(&uid("ann"), 0, PAGE).await.unwrap();
    assert_eq!(
        (seqs(&page.events), numbers(&page.events)),
        (vec![1, 2, 3], vec![1, 2, 3])
    );
    assert_eq!((page.cursor, page.head), (3, 3));
    let page = b.store.read(&uid("ann"), 2, PAGE).await.unwrap();
    assert_eq!(seqs(&page.events), [3]);
    let two = PageLimit { events: 2, ..PAGE };
    let page = b.store.read(&uid("ann"), 0, two).await.unwrap();
    assert_eq!((seqs(&page.events), page.cursor), (vec![1, 2], 2));
    // A read at the head is empty and keeps the cursor; the epoch holds.
    let at_head = b.store.read(&uid("ann"), 3, PAGE).await.unwrap();
    assert!(at_head.events.is_empty());
    assert_eq!((at_head.cursor, at_head.epoch), (3, page.epoch));
    // A watcher sees the head move.
    let mut head = b.store.watch(&uid("ann")).await.unwrap();
    b.store.append(vec![event("ann", 4)]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|&h| h >= 4))
        .await
        .expect("the head moved in time")
        .unwrap();
}

async fn an_idempotency_key_appends_once_and_answers_the_first_seqs(b: &Backend) {
    let first = b
        .store
        .append_once("contract-key", 7, vec![event("cid", 1), event("dee", 1)])
        .await
        .unwrap();
    let IdempotentAppend::Appended { seqs: appended } = first else {
        panic!("the first call appends: {first:?}");
    };
    let again = b
        .store
        .append_once("contract-key", 8, vec![event("cid", 2), event("dee", 2)])
        .await
        .unwrap();
    assert_eq!(
        again,
        IdempotentAppend::Duplicate {
            tag: 7,
            seqs: appended
        }
    );
    let page = b.store.read(&uid("cid"), 0, PAGE).await.unwrap();
    assert_eq!(numbers(&page.events), [1]);
    // Atomic appends to several users take each user's next seq.
    let seqs = b
        .store
        .append_atomic(vec![event("cid", 3), event("eve", 1)])
        .await
        .unwrap();
    assert_eq!(seqs, [2, 1]);
}

async fn acks_only_rise_and_never_past_the_head(b: &Backend) {
    let fay = uid("fay");
    b.store
        .append(vec![event("fay", 1), event("fay", 2)])
        .await
        .unwrap();
    let acked = b.store.ack(&fay, 1).await.unwrap();
    assert_eq!((acked.before, acked.after, acked.head), (0, 1, 2));
    assert_eq!(b.store.ack(&fay, 0).await.unwrap().after, 1);
    assert_eq!(
        b.store.ack(&fay, 9).await.unwrap().after,
        1,
        "beyond the head acks nothing"
    );
    assert_eq!(b.store.ack(&fay, 2).await.unwrap().after, 2);
    let first = b.store.next_id("scope").await.unwrap();
    assert!(b.store.next_id("scope").await.unwrap() > first);
}

async fn records_are_kept_ranged_swapped_and_raised(b: &Backend) {
    let s = &b.store;
    s.kv_put("c/a/1", b"one".to_vec()).await.unwrap();
    s.kv_put_all(vec![
        ("c/a/2".into(), b"two".to_vec()),
        ("c/a/3".into(), b"three".to_vec()),
    ])
    .await
    .unwrap();
    s.kv_put("c/b/1", b"other".to_vec()).await.unwrap();
    assert_eq!(s.kv_get("c/a/2").await.unwrap(), Some(b"two".to_vec()));
    let keys = |rows: Vec<(String, Vec<u8>)>| rows.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(s.kv_range("c/a/", "", 10).await.unwrap()),
        ["c/a/1", "c/a/2", "c/a/3"]
    );
    assert_eq!(
        keys(s.kv_range("c/a/", "c/a/1", 1).await.unwrap()),
        ["c/a/2"]
    );
    assert_eq!(
        keys(s.kv_range_back("c/a/", "", 2).await.unwrap()),
        ["c/a/3", "c/a/2"]
    );
    assert_eq!(
        keys(s.kv_range_back("c/a/", "c/a/2", 10).await.unwrap()),
        ["c/a/1"]
    );
    assert_eq!(
        s.kv_last("c/a/").await.unwrap().map(|(k, _)| k).as_deref(),
        Some("c/a/3")
    );
    assert_eq!(keys(s.kv_scan("c/b/").await.unwrap()), ["c/b/1"]);
    assert!(!s.kv_swap("c/a/1", None, b"x".to_vec()).await.unwrap());
    assert!(s
        .kv_swap("c/a/1", Some(b"one".to_vec()), b"uno".to_vec())
        .await
        .unwrap());
    assert!(s.kv_swap("c/new", None, b"n".to_vec()).await.unwrap());
    assert_eq!(s.kv_raise("c/max", 5).await.unwrap(), 5);
    assert_eq!(s.kv_raise("c/max", 3).await.unwrap(), 5);
    assert_eq!(s.kv_raise("c/max", 8).await.unwrap(), 8);
    s.kv_stage_remove("c/a/1").await.unwrap();
    s.sync().await.unwrap();
    assert_eq!(s.kv_get("c/a/1").await.unwrap(), None);
    // A lease is held and released (one process needs none of its own).
    drop(s.lock("contract").await.unwrap());
}

async fn presence_leases_show_each_change_once_and_expire_with_their_node(b: &Backend) {
    let lease = Duration::from_millis(600);
    let gus = uid("gus");
    let p = &b.presence;
    assert_eq!(
        p.set(&gus, "node-a", OnNode::On, lease, None)
            .await
            .unwrap(),
        (true, "online".into())
    );
    assert_eq!(
        p.set(&gus, "node-b", OnNode::On, lease, None)
            .await
            .unwrap(),
        (false, "online".into())
    );
    let mut leases = p.leases(&gus).await.unwrap();
    leases.sort();
    assert_eq!(leases, ["node-a", "node-b"]);
    assert!(p.leases(&uid("nobody")).await.unwrap().is_empty());
    assert_eq!(
        p.set(&gus, "node-b", OnNode::Keep, lease, Some("busy"))
            .await
            .unwrap(),
        (true, "busy".into())
    );
    assert_eq!(
        p.set(&gus, "node-b", OnNode::Off, lease, None)
            .await
            .unwrap(),
        (false, "busy".into())
    );
    assert_eq!(p.leases(&gus).await.unwrap(), ["node-a"]);
    assert_eq!(
        p.states(std::slice::from_ref(&gus)).await.unwrap(),
        [(true, Some("busy".into()))]
    );
    assert_eq!(p.online().await.unwrap(), std::slice::from_ref(&gus));
    p.refresh("node-a", lease, std::slice::from_ref(&gus))
        .await
        .unwrap();
    assert!(p.sweep().await.unwrap().is_empty());
    // node-a stops renewing (killed): a sweep takes gus offline, once.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert_eq!(p.sweep().await.unwrap(), [(gus.clone(), "offline".into())]);
    assert!(p.sweep().await.unwrap().is_empty());
    assert!(p.leases(&gus).await.unwrap().is_empty());
    assert_eq!(
        p.states(std::slice::from_ref(&gus)).await.unwrap(),
        [(false, Some("busy".into()))]
    );
    assert_eq!(
        p.set(&gus, "node-a", OnNode::Keep, lease, Some("online"))
            .await
            .unwrap(),
        (false, "offline".into())
    );
}

async fn token_buckets_give_their_burst_then_pace(b: &Backend) {
    for _ in 0..4 {
        assert_eq!(
            b.buckets.take("contract", 2, 4, 1).await.unwrap(),
            Duration::ZERO
        );
    }
    let wait = b.buckets.take("contract", 2, 4, 1).await.unwrap();
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    assert_eq!(
        b.buckets.take("contract-other", 2, 4, 1).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(b.buckets.left("contract", 2, 4).await.unwrap(), 0);
    assert_eq!(b.buckets.left("contract-other", 2, 4).await.unwrap(), 3);
    assert_eq!(b.buckets.left("contract-new", 2, 4).await.unwrap(), 4);
}

async fn the_nodes_bus_names_the_running_nodes_and_carries_messages(b: &Backend, shared: bool) {
    let lease = Duration::from_millis(800);
    b.nodes.alive("node-x", lease).await.unwrap();
    b.nodes
        .alive("node-y", Duration::from_secs(30))
        .await
        .unwrap();
    let mut told = b.nodes.told();
    b.nodes.tell(b"hello nodes").await.unwrap();
    if !shared {
        assert_eq!(b.nodes.nodes().await.unwrap(), Vec::<String>::new());
        return;
    }
    let mut nodes = b.nodes.nodes().await.unwrap();
    nodes.sort();
    assert_eq!(nodes, ["node-x", "node-y"]);
    let heard = tokio::time::timeout(Duration::from_secs(5), told.recv())
        .await
        .expect("the message within 5 s")
        .unwrap();
    assert_eq!(&heard[..], b"hello nodes");
    // A node whose lease ran out is no longer running.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(b.nodes.nodes().await.unwrap(), ["node-y"]);
}

async fn the_contract(b: Backend, shared: bool) {
    appends_take_gap_free_seqs_per_user_and_read_after_a_cursor(&b).await;
    an_idempotency_key_appends_once_and_answers_the_first_seqs(&b).await;
    acks_only_rise_and_never_past_the_head(&b).await;
    records_are_kept_ranged_swapped_and_raised(&b).await;
    presence_leases_show_each_change_once_and_expire_with_their_node(&b).await;
    token_buckets_give_their_burst_then_pace(&b).await;
    the_nodes_bus_names_the_running_nodes_and_carries_messages(&b, shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), SledOptions::default(), Arc::new(Metrics::new()))
        .expect("a sled store");
    the_contract(Arc::new(store).into_backend(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_store_contract() {
    let redis = Redis::start();
    let options = RedisOptions {
        retention: Retention::default(),
        once_ttl: Duration::from_secs(3600),
        durability: Durability::Fsync,
        timeout: Duration::from_secs(5),
        replicas: None,
    };
    let store = RedisStore::connect(&redis.url(), options)
        .await
        .expect("redis");
    the_contract(store.into_backend(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_store_contract() {
    let redis = Redis::cluster(true);
    let options = RedisOptions {
        retention: Retention::default(),
        once_ttl: Duration::from_secs(3600),
        durability: Durability::Fsync,
        timeout: Duration::from_secs(5),
        replicas: None,
    };
    let url = redis.url();
    let seeds = url.strip_prefix("redis-cluster://").expect("cluster seeds");
    let store = ClusterStore::connect(seeds, options)
        .await
        .expect("redis cluster");
    the_contract(store.into_backend(), true).await;
}
