//! Cluster mode: three herald nodes on one Redis (started by each test on
//! a free port, with fsync on every write), and clients whose requests go
//! to a different node each time. Events, presence, groups and counters
//! work whichever node a request lands on, and nothing acknowledged is
//! lost when a node or Redis is killed.

mod common;

use std::time::Duration;

use common::clients::{bases, publish_and_follow};
use common::redis::{nodes, Redis};
use common::{eventually, seqs, Server, API_KEY};
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_any_request_on_every_transport() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &[]).await;
    // The token of node A is good on B and C; a long-poll held on B is
    // answered by a publish on C.
    let alice = nodes[0].token("alice").await;
    let held = {
        let (http, url) = (
            nodes[1].http.clone(),
            nodes[1].url("/v1/longpoll?timeout=30"),
        );
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(alice).send().await.unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[1].metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    nodes[2].publish(&["alice"], json!("from C")).await;
    let body = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the long-poll on B answered")
        .unwrap();
    assert_eq!(body["events"][0]["data"], "from C");
    assert!(body["epoch"].as_str().is_some_and(|e| !e.is_empty()));

    // Five transports following one queue, every request to another node.
    let token = nodes[0].token("rotated").await;
    publish_and_follow(bases(&nodes), token, "rotated", async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_nothing() {
    let redis = Redis::start();
    let mut nodes = nodes(&redis, 3, &[]).await;
    let token = nodes[0].token("survivor").await;
    // The rotation keeps the killed node: its requests fail and are retried.
    let all = bases(&nodes);
    let victim = &mut nodes[1];
    publish_and_follow(all, token, "survivor", async move {
        victim.kill9();
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.restart_same_port().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_nothing_acknowledged_and_nodes_recover() {
    let mut redis = Redis::start();
    let nodes = nodes(&redis, 3, &[]).await;
    let token = nodes[0].token("durable").await;
    // A stream held across the outage resumes by itself.
    let mut sse = nodes[2].open("/v1/sse", &token).await.bytes_stream();
    let outage = async {
        redis.kill9();
        // The first request may go out on the connection Redis dropped:
        // herald cannot know whether it was applied, and says so (504); the
        // ones after it are refused with 503 at once.
        let started = std::time::Instant::now();
        let response = nodes[1]
            .backend_post("/api/v1/publish", json!({"to": ["durable"], "data": 0}))
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match status {
            504 => assert_eq!(body["error"], "outcome_unknown"),
            _ => assert_eq!((status, &body["error"]), (503, &json!("store_unavailable"))),
        }
        let response = nodes[1]
            .backend_post("/api/v1/publish", json!({"to": ["durable"], "data": 0}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(body["error"], "store_unavailable");
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart();
    };
    publish_and_follow(bases(&nodes), token.clone(), "durable", outage).await;
    // The stream opened before the outage saw every event after it too.
    let head = nodes[0].poll_all(&token).await.len() as u64;
    let mut buf = String::new();
    let mut seen = Vec::new();
    let got_all = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(chunk)) = sse.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            seen.extend(common::clients::sse_events(&mut buf));
            if seen.iter().any(|e| e["seq"].as_u64() == Some(head)) {
                return;
            }
        }
    })
    .await;
    assert!(got_all.is_ok(), "the held SSE stream did not resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_long_polls_complete_after_the_wake_subscription_is_killed() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2, &[]).await;
    let users: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let mut held = Vec::new();
    for uid in &users {
        let token = nodes[0].token(uid).await;
        let (http, url) = (
            nodes[0].http.clone(),
            nodes[0].url("/v1/longpoll?timeout=30"),
        );
        held.push(tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            response.json::<Value>().await.unwrap()
        }));
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[0].metric("herald_longpolls_held").await == 20.0
        })
        .await
    );
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 2, "{killed}");
    let to: Vec<&str> = users.iter().map(String::as_str).collect();
    nodes[1].publish(&to, json!("after the kill")).await;
    for h in held {
        let body = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("a held long-poll completed")
            .unwrap();
        assert_eq!(body["events"][0]["data"], "after the kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_redis_gives_clients_a_gap_by_epoch_not_silence() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 2, &[]).await;
    let token = nodes[0].token("wiped").await;
    for i in 0..5 {
        nodes[0].publish(&["wiped"], json!(i)).await;
    }
    let (_, before) = nodes[1].get("/v1/poll?cursor=0", &token).await;
    let old_epoch = before["epoch"].as_str().unwrap().to_owned();
    assert_eq!(before["cursor"], 5);
    let mut sse = nodes[1]
        .open(&format!("/v1/sse?cursor=5&epoch={old_epoch}"), &token)
        .await
        .bytes_stream();

    redis.cli(&["FLUSHALL"]);
    for i in 0..7 {
        nodes[0]
            .publish(&["wiped"], json!(format!("new {i}")))
            .await;
    }
    // A poller that comes back with its cursor and epoch: a gap first,
    // then the new history from seq 1 (not events 6 and 7 only).
    let (status, after) = nodes[1]
        .get(&format!("/v1/poll?cursor=5&epoch={old_epoch}"), &token)
        .await;
    assert_eq!(status, 200);
    let events = after["events"].as_array().unwrap();
    assert_eq!(events[0]["type"], "gap");
    let new_epoch = after["epoch"].as_str().unwrap();
    assert_ne!(new_epoch, old_epoch);
    assert_eq!(events[0]["data"]["epoch"], new_epoch);
    assert_eq!(seqs(&events[1..]), (1..=7).collect::<Vec<_>>());
    // The held stream says so too.
    let mut buf = String::new();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = sse.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            seen.extend(common::clients::sse_events(&mut buf));
            if seen.iter().any(|e| e["data"] == "new 6") {
                return;
            }
        }
    })
    .await
    .expect("the held stream saw the new history");
    let gap = seen.iter().position(|e| e["type"] == "gap").expect("a gap");
    assert_eq!(seen[gap]["data"]["epoch"], new_epoch);
    assert_eq!(
        seen[gap + 1..]
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_killed_node_takes_its_users_offline() {
    let redis = Redis::start();
    let mut nodes = nodes(
        &redis,
        3,
        &["--node-lease-s", "3", "--presence-window-ms", "100"],
    )
    .await;
    assert_eq!(
        nodes[2]
            .backend_put("/api/v1/users/bob/friends", json!({"friends": ["alice"]}))
            .await,
        200
    );
    let (alice, bob) = (nodes[0].token("alice").await, nodes[1].token("bob").await);
    // bob is online on B (an open stream); alice comes online on A.
    let _bob_online = nodes[1].open("/v1/sse", &bob).await;
    let alice_stream = nodes[0].open("/v1/sse", &alice).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[1].pushed_statuses(&bob, "alice").await == ["online"]
        })
        .await,
        "bob on B sees alice on A come online"
    );
    // The login pull on C sees her too.
    let (_, pulled) = nodes[2].get("/v1/friends/presence", &bob).await;
    assert_eq!(pulled["friends"]["alice"], "online");
    // A second connection on C changes nothing; closing both takes her
    // offline once. (C records its lease just after the stream opens:
    // closing A's before it lands would be a real flap.)
    let alice_on_c = nodes[2].open("/v1/sse", &alice).await;
    let leased = eventually(Duration::from_secs(5), || async {
        let user = nodes[2].get_json("/api/v1/users/alice", API_KEY).await;
        user["presence"]["leases"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert!(leased, "A and C both hold a lease on alice");
    drop(alice_stream);
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(alice_on_c);
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[1].pushed_statuses(&bob, "alice").await == ["online", "offline"]
        })
        .await,
        "{:?}",
        nodes[1].pushed_statuses(&bob, "alice").await
    );
    // alice back on A, then A is killed: no cleanup by hand, she goes
    // offline within the lease (3 s here).
    let _alice_again = nodes[0].open("/v1/sse", &alice).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[1].pushed_statuses(&bob, "alice").await.len() == 3
        })
        .await
    );
    nodes[0].kill9();
    let killed_at = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            nodes[1].pushed_statuses(&bob, "alice").await
                == ["online", "offline", "online", "offline"]
        })
        .await,
        "{:?}",
        nodes[1].pushed_statuses(&bob, "alice").await
    );
    assert!(killed_at.elapsed() < Duration::from_secs(8));
    let (_, pulled) = nodes[2].get("/v1/friends/presence", &bob).await;
    assert_eq!(pulled["friends"]["alice"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_receipts_and_counters_work_across_nodes() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &["--send-rate", "0"]).await;
    assert_eq!(
        nodes[1]
            .backend_put(
                "/api/v1/groups/g1/members",
                json!({"members": ["ann", "ben", "cat"]})
            )
            .await,
        200
    );
    let (ann, ben, cat) = (
        nodes[0].token("ann").await,
        nodes[1].token("ben").await,
        nodes[2].token("cat").await,
    );
    // ann posts on A (the group was made on B); msgids rise across nodes.
    let mut msgids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (status, body) = node
            .post_as(
                &ann,
                "/v1/groups/g1/messages",
                json!({"body": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        msgids.push(body["msgid"].as_u64().unwrap());
    }
    assert_eq!(msgids, vec![1, 2, 3]);
    // Read on B and C.
    for (node, token) in [(&nodes[1], &ben), (&nodes[2], &cat)] {
        let bodies: Vec<Value> = node
            .poll(token, 0)
            .await
            .into_iter()
            .filter(|e| e["type"] == "group_msg")
            .map(|e| e["data"]["body"].clone())
            .collect();
        assert_eq!(bodies, vec![json!("m0"), json!("m1"), json!("m2")]);
    }
    // ann waits on C for receipts; ben reads on B, cat on A.
    let _ann_online = nodes[2].open("/v1/sse", &ann).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (node, token) in [(&nodes[1], &ben), (&nodes[0], &cat)] {
        let (status, _) = node
            .post_as(token, "/v1/groups/g1/read", json!({"msgid": 3}))
            .await;
        assert_eq!(status, 200);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[2]
                .poll(&ann, 0)
                .await
                .iter()
                .filter(|e| e["type"] == "group_receipt")
                .flat_map(|e| {
                    e["data"]["receipts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .any(|r| r["msgid"] == 3 && r["read"] == 2)
        })
        .await,
        "ann got the receipt of both reads"
    );

    // 100 concurrent increments spread over the nodes: totals 1..100, in
    // queue order.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let node = &nodes[i % 3];
            let (http, url) = (node.http.clone(), node.url("/api/v1/users/ann/counters"));
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"name": "unread", "delta": 1}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let totals: Vec<i64> = nodes[1]
        .poll_all(&ann)
        .await
        .into_iter()
        .filter(|e| e["type"] == "counter")
        .map(|e| e["data"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, (1..=100).collect::<Vec<_>>());
    let (_, counters) = nodes[2].get("/v1/counters", &ann).await;
    assert_eq!(counters["counters"]["unread"], 100);
}

#[tokio::test]
async fn fsync_durability_refuses_a_redis_without_it_and_async_says_so() {
    let redis = Redis::start_with(false);
    let url = redis.url();
    let common = [
        "--secret",
        common::SECRET,
        "--api-key",
        API_KEY,
        "--store",
        url.as_str(),
    ];
    let refused = Server::try_start_raw(&common).await;
    let output = refused.err().expect("refused to start");
    assert!(output.contains("appendfsync always"), "{output}");

    let mut args = common.to_vec();
    args.extend(["--redis-durability", "async"]);
    let server = Server::try_start_raw(&args).await.expect("starts");
    let (_, health) = server.get("/healthz", "").await;
    assert!(
        health["durability"].as_str().unwrap().contains("async"),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_limit_and_the_daily_news_are_the_clusters_not_each_nodes() {
    let redis = Redis::start();
    // 2 sends per second, bursts of 4: for the whole cluster.
    let nodes = nodes(&redis, 3, &["--send-rate", "2"]).await;
    let alice = nodes[0].token("alice").await;
    // Twelve sends at once through the three nodes: node-local limits would
    // let all twelve pass (a burst of 4 each); the cluster's lets 4 pass,
    // plus what refilled while they were answered.
    let started = std::time::Instant::now();
    let statuses: Vec<u16> =
        futures::future::join_all((0..12).map(|i| {
            nodes[i % 3].post_as(&alice, "/v1/messages", json!({"to": "bob", "body": i}))
        }))
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let refilled = (2.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (4..=4 + refilled).contains(&passed) && 4 + refilled < 12,
        "{passed} passed, {refilled} refilled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // The news of the day: shown once, whichever nodes the tabs ask.
    let today = herald::chat::notices::today();
    assert_eq!(
        nodes[1]
            .backend_put(&format!("/api/v1/news/{today}"), json!({"body": "hi"}))
            .await,
        200
    );
    let tabs: Vec<_> = (0..6)
        .map(|i| {
            let (http, url, token) = (
                nodes[i % 3].http.clone(),
                nodes[i % 3].url("/v1/news"),
                alice.clone(),
            );
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                response.status().as_u16()
            })
        })
        .collect();
    let mut shown = 0;
    for tab in tabs {
        if tab.await.unwrap() == 200 {
            shown += 1;
        }
    }
    assert_eq!(shown, 1, "the news was shown {shown} times");
}

#[tokio::test]
async fn direct_message_history_is_the_clusters() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &["--send-rate", "0"]).await;
    let (ann, ben) = (nodes[0].token("ann").await, nodes[1].token("ben").await);
    // Sent through each node in turn, both ways.
    let mut ids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (token, to) = if i % 2 == 0 {
            (&ann, "ben")
        } else {
            (&ben, "ann")
        };
        let (status, body) = node
            .post_as(
                token,
                "/v1/messages",
                json!({"to": to, "body": format!("m{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_u64().unwrap());
    }
    // Read on C, marked read on A, seen read on B.
    let page = |node: &Server, token: String| {
        let request = node
            .http
            .get(node.url("/v1/conversations/ann/messages"))
            .bearer_auth(token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let on_c = page(&nodes[2], ben.clone()).await;
    let got: Vec<u64> = on_c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids);
    let (status, _) = nodes[0]
        .post_as(&ben, &format!("/v1/messages/{}/read", ids[0]), json!(null))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page(&nodes[1], ben.clone()).await["messages"][0]["read"],
        true
    );
}

#[tokio::test]
async fn the_backend_feed_is_the_clusters() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &["--feed", "--send-rate", "0"]).await;
    let ann = nodes[0].token("ann").await;
    let mut ids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (status, body) = node
            .post_as(
                &ann,
                "/v1/messages",
                json!({"to": "ben", "body": i, "cid": format!("c{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_u64().unwrap());
    }
    // Read on another node, from one cursor, in order.
    let page = nodes[1].get_json("/api/v1/feed?cursor=0", API_KEY).await;
    let got: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_signal_reaches_a_user_on_another_node_and_is_not_stored() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &[]).await;
    nodes[0].set_members("crew", &["alice", "bob"]).await;
    let (alice, bob) = (nodes[0].token("alice").await, nodes[0].token("bob").await);
    let mut ws = nodes[1].ws(&format!("token={bob}")).await;
    let held = {
        let (http, url) = (
            nodes[2].http.clone(),
            nodes[2].url("/v1/longpoll?timeout=20"),
        );
        let bob = bob.clone();
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(bob).send().await.unwrap();
            response.json::<Value>().await.unwrap()
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            nodes[2].metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    for (body, expected) in [
        (
            json!({"to": "bob"}),
            json!({"type": "typing", "from": "alice", "to": "bob"}),
        ),
        (
            json!({"gid": "crew"}),
            json!({"type": "typing", "from": "alice", "gid": "crew"}),
        ),
    ] {
        let (status, answer) = nodes[0].post_as(&alice, "/v1/typing", body).await;
        assert_eq!(status, 204, "{answer}");
        let signal = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = ws.next().await
                else {
                    panic!("the socket closed");
                };
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "typing" {
                    return frame;
                }
            }
        })
        .await
        .expect("the signal on node B");
        assert_eq!(signal, expected);
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the long-poll on node C answered")
        .unwrap();
    assert_eq!(answer["signals"][0]["from"], "alice", "{answer}");
    assert_eq!(answer["events"], json!([]));
    assert!(nodes[1].poll_all(&bob).await.is_empty(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_and_the_trace_see_every_node_and_name_the_ones_that_do_not_answer() {
    let redis = Redis::start();
    let nodes = nodes(&redis, 3, &["--peer-timeout-ms", "500"]).await;
    let inspect = |node: usize, path: String| {
        let node = &nodes[node];
        async move { node.get_json(&path, API_KEY).await }
    };
    let names: Vec<Value> =
        futures::future::join_all((0..3).map(|n| inspect(n, "/api/v1/users/nobody".into())))
            .await
            .into_iter()
            .map(|user| user["node"].clone())
            .collect();
    assert_eq!(
        names.iter().collect::<std::collections::HashSet<_>>().len(),
        3,
        "three nodes, three names: {names:?}"
    );

    // Bob's stream is on node B; node A shows it.
    let bob = nodes[0].token("bob").await;
    let mut sse = nodes[1].open("/v1/sse?cursor=0", &bob).await.bytes_stream();
    let seen_from_a = eventually(Duration::from_secs(5), || async {
        let user = inspect(0, "/api/v1/users/bob".into()).await;
        user["connections"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
    assert!(seen_from_a, "node A shows bob's connection on node B");
    let user = inspect(0, "/api/v1/users/bob".into()).await;
    assert_eq!(user["connections"][0]["node"], names[1], "{user:#}");
    assert_eq!(user["connections"][0]["transport"], "sse");
    assert_eq!(user["nodes"]["missing"], json!([]));
    assert_eq!(
        user["nodes"]["nodes"].as_array().map(Vec::len),
        Some(3),
        "{user:#}"
    );
    assert_eq!(user["presence"]["visible"], "online");

    // Published through node C, written on node B: node A's trace has both.
    let seq = nodes[2].publish(&["bob"], json!("traced")).await["bob"]
        .as_u64()
        .expect("a seq");
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !common::clients::sse_events(&mut buf)
            .iter()
            .any(|e| e["seq"] == seq)
        {
            let chunk = sse.next().await.unwrap().unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the event on node B's stream");
    let path = format!("/api/v1/users/bob/events/{seq}");
    let written = eventually(Duration::from_secs(5), || async {
        let trace = inspect(0, path.clone()).await;
        trace["steps"].as_array().is_some_and(|s| s.len() == 3)
    })
    .await;
    let trace = inspect(0, path.clone()).await;
    assert!(written, "appended, durable, written: {trace:#}");
    let steps = trace["steps"].as_array().unwrap();
    assert_eq!(steps[0]["step"], "appended");
    assert_eq!(steps[0]["node"], names[2]);
    assert_eq!(steps[2]["step"], "written");
    assert_eq!(steps[2]["node"], names[1]);

    // Node C hangs: node A answers in about the timeout, naming it.
    nodes[2].freeze();
    let started = std::time::Instant::now();
    let user = inspect(0, "/api/v1/users/bob".into()).await;
    let took = started.elapsed();
    let trace = inspect(0, path.clone()).await;
    nodes[2].thaw();
    assert_eq!(user["nodes"]["missing"], json!([names[2]]), "{user:#}");
    assert_eq!(user["connections"][0]["node"], names[1], "B still answered");
    assert!(
        took < Duration::from_secs(3),
        "answered partially in {took:?}"
    );
    assert_eq!(trace["nodes"]["missing"], json!([names[2]]));
    let steps: Vec<&str> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["written"], "C's append is C's to tell: {trace:#}");
}
