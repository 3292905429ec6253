//! A Redis Cluster under herald (3 primaries + 3 replicas, each test its
//! own processes on free ports, fsync on every write): a primary killed
//! under load, a primary without its replica, a group spread over every
//! primary, slots migrated under load. `tests/cluster.rs` runs on a Redis
//! Cluster too (`HERALD_TEST_REDIS=cluster`, see scripts/test.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clients::{
    assert_feed_partitions, bases, converse, poll_all, publish_and_follow, rotating, Base,
};
use common::redis::{nodes, Redis};
use common::{seqs, API_KEY};
use serde_json::{json, Value};

/// One test at a time: each runs six Redis processes and up to three
/// herald nodes, more than two at once on a 2-core box measure the box.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a publisher to many users saw: per user, the seq of each
/// acknowledged `n`; and every answer's status, Retry-After and time.
#[derive(Default)]
struct FanOut {
    acked: BTreeMap<String, BTreeMap<u64, u64>>,
    answers: Vec<(u16, Option<String>, Duration)>,
    /// When each answered request was sent.
    sent: Vec<Instant>,
    /// The body of each answer that was not 200/503/504.
    odd: Vec<String>,
}

impl FanOut {
    /// Whether a publish sent after `at` was acknowledged.
    fn served_after(&self, at: Instant) -> bool {
        self.answers
            .iter()
            .zip(&self.sent)
            .any(|((status, _, _), sent)| *status == 200 && *sent > at)
    }
}

/// When a fan-out may stop: once a publish sent after the instant set here
/// was acknowledged (or 60 s after it, and the test fails on that).
type StopAfter = Arc<std::sync::Mutex<Option<Instant>>>;

/// Publishes `{"n"}` to all of `users` at once through `base` until
/// `stop` says so, at most ~200 publishes a second.
async fn fan_out(base: Base, users: Vec<String>, stop: StopAfter) -> FanOut {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut seen = FanOut::default();
    let mut n = 0u64;
    loop {
        let after = *stop.lock().unwrap();
        if after.is_some_and(|at| seen.served_after(at) || at.elapsed() > Duration::from_secs(60)) {
            break;
        }
        let url = format!("{}/api/v1/publish", base.lock().unwrap());
        let started = Instant::now();
        let response = http
            .post(url)
            .bearer_auth(API_KEY)
            .json(&json!({"to": users, "data": {"n": n}}))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        seen.answers.push((status, retry, started.elapsed()));
        seen.sent.push(started);
        if ![200, 503, 504].contains(&status) {
            seen.odd.push(format!("{status} {body}"));
        }
        if status == 200 {
            for user in &users {
                let seq = body["seqs"][user].as_u64().expect("a seq per user");
                let previous = seen.acked.entry(user.clone()).or_default().insert(seq, n);
                assert!(previous.is_none(), "{user}: seq {seq} acknowledged twice");
            }
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// Asserts that every user's queue is gap-free and holds each
/// acknowledged `n` at its seq, and each `n` at most once.
async fn assert_fan_out_kept(base: &str, server: &common::Server, seen: &FanOut) {
    for (user, acked) in &seen.acked {
        let token = server.token(user).await;
        let all = poll_all(base, &token).await;
        let last = all.last().expect("events")["seq"].as_u64().unwrap();
        assert_eq!(
            seqs(&all),
            (1..=last).collect::<Vec<_>>(),
            "{user}: seqs gap-free"
        );
        for (seq, n) in acked {
            assert_eq!(all[*seq as usize - 1]["data"]["n"], *n, "{user}: seq {seq}");
        }
        let ns: Vec<u64> = all.iter().filter_map(|e| e["data"]["n"].as_u64()).collect();
        let once: BTreeSet<u64> = ns.iter().copied().collect();
        assert_eq!(once.len(), ns.len(), "{user}: an event delivered twice");
    }
}

/// Whether `users` (each with a queue already) lie on every primary.
fn on_every_primary(redis: &Redis, users: &[String]) -> BTreeSet<usize> {
    users
        .iter()
        .filter_map(|u| redis.primary_holding(&format!("h:*:u:{u}:m")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_loses_nothing_and_its_replica_takes_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::cluster(true);
    let nodes = nodes(&redis, 3, &[]).await;
    let users: Vec<String> = (0..50).map(|i| format!("spread{i}")).collect();
    let to: Vec<&str> = users.iter().map(String::as_str).collect();
    nodes[0].publish(&to, json!({"n": "first"})).await;
    assert_eq!(
        on_every_primary(&redis, &users).len(),
        3,
        "users on every primary"
    );
    let token = nodes[0].token("survivor").await;
    nodes[0].publish(&["survivor"], json!("first")).await;
    let epoch = |body: Value| body["epoch"].as_str().unwrap().to_owned();
    let before = epoch(nodes[1].get("/v1/poll?cursor=0", &token).await.1);
    let pattern = "h:*:u:survivor:m";
    let primary = redis.primary_holding(pattern).expect("survivor's primary");

    let (base, rotator) = rotating(bases(&nodes));
    let stop = StopAfter::default();
    let fan = tokio::spawn(fan_out(base, users.clone(), stop.clone()));
    let redis_ref = &mut redis;
    let back = Arc::new(std::sync::Mutex::new(Instant::now()));
    let back_set = back.clone();
    publish_and_follow(bases(&nodes), token.clone(), "survivor", async move {
        let back = back_set;
        redis_ref.nodes[primary].kill9();
        let promoted = redis_ref.wait_taken_over(primary, pattern);
        eprintln!("node {primary} killed, node {promoted} took over");
        // With --redis-replicas 1 a primary needs a replica in sync to
        // accept appends: the killed one comes back as the new one's.
        redis_ref.restart_node(primary);
        *back.lock().unwrap() = Instant::now();
    })
    .await;
    // Served again after the failover, without restarting a herald node.
    let back = *back.lock().unwrap();
    *stop.lock().unwrap() = Some(back);
    let seen = fan.await.unwrap();
    rotator.abort();

    let after = epoch(nodes[2].get("/v1/poll?cursor=0", &token).await.1);
    assert_eq!(before, after, "the epoch changed");
    let refused = seen.answers.iter().filter(|(s, _, _)| *s != 200).count();
    assert!(seen.odd.is_empty(), "answers: {:?}", seen.odd);
    for (status, retry, took) in &seen.answers {
        if *status != 200 {
            assert_eq!(
                retry.as_deref(),
                Some("1"),
                "a {status} without Retry-After"
            );
        }
        assert!(*took < Duration::from_secs(30), "an answer took {took:?}");
    }
    let accepted = seen.answers.len() - refused;
    eprintln!("fan-out: {accepted} acknowledged, {refused} refused during the failover");
    assert!(
        seen.served_after(back),
        "no fan-out acknowledged after the failover"
    );
    assert_fan_out_kept(&nodes[0].base, &nodes[0], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_its_replica_refuses_appends_and_shows_none() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::cluster(true);
    let nodes = nodes(&redis, 2, &[]).await;
    let token = nodes[0].token("lonely").await;
    nodes[0].publish(&["lonely"], json!("kept")).await;
    let primary = redis
        .primary_holding("h:*:u:lonely:m")
        .expect("its primary");
    let replica = redis.replica_of(primary);
    let publish =
        |n: u64| nodes[1].backend_post("/api/v1/publish", json!({"to": ["lonely"], "data": n}));

    // A replica frozen: the append is made, no replica acknowledges it in
    // time, and it is taken back: 503, nothing visible.
    redis.signal(replica, "STOP");
    let response = publish(1).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("store_unavailable")),
        "{body}"
    );
    let (_, page) = nodes[0].get("/v1/poll?cursor=0", &token).await;
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![1]);
    redis.signal(replica, "CONT");

    // A replica killed: the primary refuses before writing anything.
    redis.nodes[replica].kill9();
    let response = publish(2).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, page) = nodes[0].get("/v1/poll?cursor=0", &token).await;
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![1]);

    // Back and in sync: appends succeed (once its primary counts it in
    // sync too; a refusal before that appends nothing), with the next seq.
    redis.restart_node(replica);
    let give_up = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let response = publish(3).await;
        let ok = response.status() == 200;
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if ok || Instant::now() > give_up {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["seqs"]["lonely"], 2, "{body}");
    let (_, page) = nodes[1].get("/v1/poll?cursor=0", &token).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(seqs(events), vec![1, 2]);
    assert_eq!(events[1]["data"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_every_primary_gets_each_post_once_across_a_node_kill() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::cluster(true);
    let mut nodes = nodes(&redis, 2, &["--send-rate", "0"]).await;
    let members: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    nodes[1].set_members("big", &names).await;
    let token = nodes[0].token("m0").await;
    // Posts from node 0 until it is killed in the middle of them.
    let (base, token2) = (nodes[0].base.clone(), token.clone());
    let poster = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut acked = Vec::new();
        for i in 0.. {
            let sent = http
                .post(format!("{base}/v1/groups/big/messages"))
                .bearer_auth(&token2)
                .json(&json!({"body": i}))
                .send()
                .await;
            match sent {
                Ok(r) if r.status() == 200 => {
                    acked.push(r.json::<Value>().await.unwrap()["msgid"].as_u64().unwrap())
                }
                _ => return acked,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[0].kill9();
    let acked = poster.await.unwrap();
    assert!(!acked.is_empty(), "no post acknowledged before the kill");
    nodes[0].restart().await;
    assert!(
        on_every_primary(&redis, &members).len() == 3,
        "members on every primary"
    );

    // Every msgid of the log, gap-free; every member has each exactly once.
    let newest = {
        let (status, page) = nodes[1]
            .get("/v1/groups/big/messages?after=0&limit=1000", &token)
            .await;
        assert_eq!(status, 200, "{page}");
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["msgid"].as_u64())
            .max()
            .unwrap()
    };
    assert!(newest >= *acked.last().unwrap());
    // A post the kill cut is finished by the cluster (its claim, or the
    // restarted node's pending mark), not left half delivered.
    for member in &members {
        let token = nodes[1].token(member).await;
        let give_up = Instant::now() + Duration::from_secs(60);
        let msgids = loop {
            let msgids: Vec<u64> = nodes[1]
                .poll_all(&token)
                .await
                .iter()
                .filter(|e| e["type"] == "group_msg")
                .filter_map(|e| e["data"]["msgid"].as_u64())
                .collect();
            if msgids.len() as u64 >= newest || Instant::now() > give_up {
                break msgids;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            msgids,
            (1..=newest).collect::<Vec<_>>(),
            "{member}: each post once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_under_load_lose_duplicate_or_reorder_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let redis = Redis::cluster(true);
    let nodes = nodes(&redis, 3, &[]).await;
    // The primary serving slot 0 gives its first 200 slots (two partitions) to another;
    // the users whose partition lies in them are the ones under load.
    let from = (0..redis.nodes.len())
        .find(|&i| redis.nodes[i].is_primary() && redis.first_slot(i) == 0)
        .expect("the primary of slot 0");
    let to = (0..redis.nodes.len())
        .find(|&i| i != from && redis.nodes[i].is_primary())
        .expect("another primary");
    let candidates: Vec<String> = (0..300).map(|i| format!("mover{i}")).collect();
    let names: Vec<&str> = candidates.iter().map(String::as_str).collect();
    nodes[0].publish(&names, json!({"n": "first"})).await;
    let (movers, stayers): (Vec<String>, Vec<String>) = candidates.into_iter().partition(|u| {
        redis
            .slot_of(&format!("h:*:u:{u}:m"))
            .is_some_and(|slot| slot < 200)
    });
    assert!(!movers.is_empty(), "no user in the slots that move");
    let load: &'static str = Box::leak(movers[0].clone().into_boxed_str());
    let token = nodes[0].token(load).await;
    nodes[0].publish(&[load], json!("first")).await;
    // The fan-out goes to the other movers and as many others (not to the
    // user under load, whose queue publish_and_follow checks alone).
    let users: Vec<String> = movers[1..]
        .iter()
        .chain(stayers.iter().take(movers.len().max(10)))
        .cloned()
        .collect();

    let (base, rotator) = rotating(bases(&nodes));
    let stop = StopAfter::default();
    let fan = tokio::spawn(fan_out(base, users, stop.clone()));
    let redis_ref = &redis;
    let moved = Arc::new(std::sync::Mutex::new(Instant::now()));
    let moved_set = moved.clone();
    publish_and_follow(bases(&nodes), token, load, async move {
        redis_ref.reshard(from, to, 200);
        *moved_set.lock().unwrap() = Instant::now();
        eprintln!("slots 0-199 moved from node {from} to node {to}");
    })
    .await;
    let moved = *moved.lock().unwrap();
    *stop.lock().unwrap() = Some(moved);
    let seen = fan.await.unwrap();
    rotator.abort();
    assert_eq!(
        redis.primary_holding(&format!("h:*:u:{load}:m")),
        Some(to),
        "the user moved"
    );
    assert!(seen.odd.is_empty(), "answers: {:?}", seen.odd);
    assert!(
        seen.served_after(moved),
        "no fan-out acknowledged after the migration"
    );
    assert_fan_out_kept(&nodes[0].base, &nodes[0], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_partitions_keep_each_conversation_in_order_across_a_primary_kill() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut redis = Redis::cluster(true);
    let flags = ["--feed", "--feed-partitions", "4", "--send-rate", "0"];
    let nodes = nodes(&redis, 2, &flags).await;
    let all = bases(&nodes);
    let senders = all.clone();
    let sending = tokio::spawn(async move { converse(&senders, 100, 4).await });
    // Kill the primary of the feed's first partition while messages flow.
    let pattern = "h:*:u:!feed:m";
    let primary = common::eventually(Duration::from_secs(10), || async {
        redis.primary_holding(pattern).is_some()
    })
    .await
    .then(|| redis.primary_holding(pattern).unwrap())
    .expect("the feed's primary");
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.nodes[primary].kill9();
    let promoted = redis.wait_taken_over(primary, pattern);
    eprintln!("node {primary} killed, node {promoted} took over");
    redis.restart_node(primary);
    sending.await.unwrap();
    assert_feed_partitions(&all[1], 4, 100, 4).await;
}
