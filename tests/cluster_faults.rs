//! Faults of a cluster node cut off from Redis, or killed, over real
//! processes (each test starts its own redis-server): a request whose
//! outcome herald cannot know says so (504 `outcome_unknown`) and a retry
//! with its `Idempotency-Key` appends once; `/healthz` tells a load
//! balancer; a long-poll whose store freezes during its hold answers what
//! it acked; a killed node's users go offline within the default lease.
//!
//! The cut: a TCP proxy between herald and Redis that stops forwarding in
//! both directions without closing (`common::proxy`), as a network path
//! that drops packets would.

mod common;

use std::time::{Duration, Instant};

use common::proxy::FreezingProxy;
use common::redis::Redis;
use common::{eventually, Server, API_KEY};
use serde_json::{json, Value};

/// A herald node on `redis` through a proxy that can freeze.
async fn node_behind_proxy(redis: &Redis, extra: &[&str]) -> (Server, FreezingProxy) {
    let proxy = FreezingProxy::start(&format!("127.0.0.1:{}", redis.nodes[0].port)).await;
    let url = format!("redis://{}", proxy.addr);
    let mut args = vec!["--store", url.as_str(), "--redis-timeout-ms", "1000"];
    args.extend_from_slice(extra);
    (Server::start_with(&args).await, proxy)
}

/// `POST /api/v1/publish` of `data` to alice, with `key` as its
/// Idempotency-Key if given: the status, the Retry-After header and the
/// body.
async fn publish(server: &Server, key: Option<&str>, data: Value) -> (u16, Option<String>, Value) {
    let mut request = server
        .http
        .post(server.url("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .json(&json!({"to": ["alice"], "data": data}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

async fn healthz(server: &Server) -> (u16, Value) {
    let response = server.call("GET", "/healthz", None, None).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_timeout_is_outcome_unknown_and_an_idempotent_retry_appends_once() {
    let redis = Redis::start();
    let (server, proxy) = node_behind_proxy(&redis, &[]).await;
    let alice = server.token("alice").await;
    let (status, _, first) = publish(&server, Some("k-1"), json!("first")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["seqs"]["alice"], 1);
    // Its retry answers the same, appends nothing; the same key for
    // something else is refused.
    assert_eq!(publish(&server, Some("k-1"), json!("first")).await.2, first);
    let (status, _, body) = publish(&server, Some("k-1"), json!("other")).await;
    assert_eq!(
        (status, &body["error"]),
        (409, &json!("idempotency_key_reused"))
    );

    proxy.freeze();
    let sent = Instant::now();
    let (status, retry, body) = publish(&server, Some("k-2"), json!("second")).await;
    assert_eq!(
        (status, &body["error"]),
        (504, &json!("outcome_unknown")),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    // A node cut off from Redis says so, to route clients elsewhere.
    assert!(
        eventually(Duration::from_secs(10), || async {
            healthz(&server).await.0 == 503
        })
        .await,
        "{:?}",
        healthz(&server).await
    );
    assert_eq!(healthz(&server).await.1["status"], "store_unavailable");

    proxy.thaw();
    assert!(
        eventually(Duration::from_secs(10), || async {
            healthz(&server).await.0 == 200
        })
        .await
    );
    // Whether the first attempt landed after the thaw or never, the retry
    // makes it land exactly once, and every retry answers the same seq.
    let (status, _, again) = publish(&server, Some("k-2"), json!("second")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        publish(&server, Some("k-2"), json!("second")).await.2,
        again
    );
    let events = server.poll_all(&alice).await;
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(data, [&json!("first"), &json!("second")]);
    assert_eq!(again["seqs"]["alice"], events[1]["seq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_whose_store_freezes_during_its_hold_answers_the_cursor_it_acked() {
    let redis = Redis::start();
    let (server, proxy) = node_behind_proxy(&redis, &[]).await;
    let bob = server.token("bob").await;
    for i in 1..=3 {
        server.publish(&["bob"], json!(i)).await;
    }
    let held = {
        let http = server.http.clone();
        let url = server.url("/v1/longpoll?cursor=3&timeout=2");
        let bob = bob.clone();
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(bob)
                .send()
                .await
                .expect("an answer");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    // The store freezes while the long-poll is held (it acked 3 when the
    // hold began): its answer must be the one that carries that cursor,
    // not a refusal that says nothing changed.
    proxy.freeze();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cursor"], 3);
    assert_eq!(body["events"], json!([]));
    proxy.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_go_offline_for_their_friends_within_the_default_lease() {
    let redis = Redis::start();
    let url = redis.url();
    // The default --node-lease-s (15) and --presence-window-ms.
    let args = ["--store", url.as_str()];
    let mut a = Server::start_with(&args).await;
    let b = Server::start_with(&args).await;
    let status = b
        .backend_put(
            "/api/v1/users/pat/friends",
            json!({"friends": ["quin", "rex"]}),
        )
        .await;
    assert_eq!(status, 200);
    let (pat, quin, rex) = (
        b.token("pat").await,
        a.token("quin").await,
        a.token("rex").await,
    );
    // quin on A half a second before pat comes online on B (pat learns of
    // quin from the login pull, not from a push); rex on A after pat, and
    // A is killed half a second later, before it renewed any lease.
    let _quin_online = a.open("/v1/sse", &quin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _pat_online = b.open("/v1/sse", &pat).await;
    let (_, pulled) = b.get("/v1/friends/presence", &pat).await;
    assert_eq!(pulled["friends"]["quin"], "online");
    let _rex_online = a.open("/v1/sse", &rex).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.pushed_statuses(&pat, "rex").await == ["online"]
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.kill9();
    let killed = Instant::now();
    for (uid, before) in [("quin", 0), ("rex", 1)] {
        assert!(
            eventually(Duration::from_secs(30), || async {
                b.pushed_statuses(&pat, uid).await.len() == before + 1
            })
            .await,
            "pat was never told of {uid}: {:?}",
            b.pushed_statuses(&pat, uid).await
        );
        assert_eq!(
            b.pushed_statuses(&pat, uid).await.last().unwrap(),
            "offline"
        );
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    let (_, pulled) = b.get("/v1/friends/presence", &pat).await;
    assert_eq!(
        pulled["friends"],
        json!({"quin": "offline", "rex": "offline"})
    );
}
