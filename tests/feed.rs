//! The backend feed (`GET /api/v1/feed`) over the real binary: every
//! message clients send, exactly once and in order by cursor, across a
//! kill -9 of herald and a restart of the consumer; held like a long-poll;
//! a `gap` when the consumer fell behind what is kept; API key only.

mod common;

use common::{Server, API_KEY};
use serde_json::{json, Value};

/// One page of the feed after `cursor`; `(events, cursor)`.
async fn feed(server: &Server, cursor: u64, timeout: u64) -> (Vec<Value>, u64) {
    let path = format!("/api/v1/feed?cursor={cursor}&timeout={timeout}");
    let page = server.get_json(&path, API_KEY).await;
    (
        page["events"].as_array().unwrap().clone(),
        page["cursor"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn the_feed_has_every_message_once_in_order_across_kill_9_and_a_consumer_restart() {
    let mut server = Server::start_with(&["--feed", "--send-rate", "0"]).await;
    server.set_members("g", &["alice", "bob"]).await;
    // The consumer keeps its cursor the way a backend keeps it in a file.
    let mut cursor = 0;
    let mut seen: Vec<Value> = Vec::new();
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    for round in 0..2 {
        let (alice, bob) = (server.token("alice").await, server.token("bob").await);
        for n in 0..10 {
            let cid = format!("r{round}-{n}");
            let body = json!({"to": "bob", "body": format!("dm {round}.{n}"), "cid": cid});
            let (status, answer) = server.post_as(&alice, "/v1/messages", body.clone()).await;
            assert_eq!(status, 200);
            // A retry of the same cid is the same message, once in the feed.
            let (_, again) = server.post_as(&alice, "/v1/messages", body).await;
            assert_eq!(again["id"], answer["id"]);
            acknowledged.push(("msg".into(), answer["id"].as_u64().unwrap()));
            if n % 3 == 0 {
                let (status, post) = server
                    .post_as(
                        &bob,
                        "/v1/groups/g/messages",
                        json!({"body": format!("g {round}.{n}")}),
                    )
                    .await;
                assert_eq!(status, 200);
                acknowledged.push(("group_msg".into(), post["msgid"].as_u64().unwrap()));
            }
        }
        // bob reads the first message of the round.
        let first = acknowledged
            .iter()
            .rev()
            .find(|(k, _)| k == "msg")
            .unwrap()
            .1;
        let (status, _) = server
            .post_as(&bob, &format!("/v1/messages/{first}/read"), Value::Null)
            .await;
        assert_eq!(status, 200);
        // The consumer reads part of it, then herald dies without warning.
        let (events, next) = feed(&server, cursor, 0).await;
        let half = events.len() / 2;
        seen.extend(events[..half].iter().cloned());
        cursor = events[..half]
            .last()
            .map_or(cursor, |e| e["seq"].as_u64().unwrap());
        assert!(next >= cursor);
        server.kill9();
        server.restart().await;
    }
    // A new consumer from the stored cursor reads the rest.
    loop {
        let (events, next) = feed(&server, cursor, 0).await;
        if events.is_empty() {
            break;
        }
        seen.extend(events);
        cursor = next;
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs, sorted, "in order, nothing twice");
    let keyed = |e: &Value| -> Option<(String, u64)> {
        match e["type"].as_str()? {
            "msg" => Some(("msg".into(), e["data"]["id"].as_u64()?)),
            "group_msg" => Some(("group_msg".into(), e["data"]["msgid"].as_u64()?)),
            _ => None,
        }
    };
    let messages: Vec<(String, u64)> = seen.iter().filter_map(keyed).collect();
    assert_eq!(
        messages, acknowledged,
        "every acknowledged message once, in send order"
    );
    // Whole messages: a group reference is expanded; read marks are there.
    let group = seen.iter().find(|e| e["type"] == "group_msg").unwrap();
    assert_eq!(
        (&group["data"]["from"], &group["data"]["gid"]),
        (&json!("bob"), &json!("g"))
    );
    let dm = seen.iter().find(|e| e["type"] == "msg").unwrap();
    assert_eq!(
        (&dm["data"]["from"], &dm["data"]["to"]),
        (&json!("alice"), &json!("bob"))
    );
    let reads = seen
        .iter()
        .filter(|e| e["type"] == "receipt" && e["data"]["kind"] == "read")
        .count();
    assert_eq!(reads, 2);
}

#[tokio::test]
async fn the_feed_is_held_like_a_long_poll_and_gives_a_gap_past_retention() {
    let server = Server::start_with(&[
        "--feed",
        "--feed-cap",
        "5",
        "--trim-interval-ms",
        "100",
        "--send-rate",
        "0",
    ])
    .await;
    let alice = server.token("alice").await;
    // Held until a message comes.
    let waiting = {
        let url = server.url("/api/v1/feed?cursor=0&timeout=30");
        server.http.get(url).bearer_auth(API_KEY).send()
    };
    let sender = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server
            .post_as(&alice, "/v1/messages", json!({"to": "bob", "body": "hi"}))
            .await
    };
    let (response, (status, _)) = tokio::join!(waiting, sender);
    assert_eq!(status, 200);
    let page: Value = response.unwrap().json().await.unwrap();
    assert_eq!(page["events"][0]["data"]["body"], "hi");
    // Ten more while the consumer is away: the oldest are gone.
    for n in 0..10 {
        server
            .post_as(&alice, "/v1/messages", json!({"to": "bob", "body": n}))
            .await;
    }
    // IdempotentAppend retention ran (every 100 ms here), the oldest are gone.
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            feed(&server, 1, 0).await.0[0]["type"] == "gap"
        })
        .await
    );
    let (events, _) = feed(&server, 1, 0).await;
    assert_eq!(events.last().unwrap()["data"]["body"], 9);
    // The feed's cap is its own: bob's queue (--queue-cap) keeps all 11.
    let bob = server.poll_all(&server.token("bob").await).await;
    let bodies: Vec<&Value> = bob.iter().map(|e| &e["data"]["body"]).collect();
    assert_eq!(bodies.len(), 11, "{bodies:?}");
    assert_eq!(bob[0]["type"], "msg");
}

#[tokio::test]
async fn only_the_backend_reads_the_feed_and_only_when_kept() {
    let off = Server::start().await;
    let response = off.call("GET", "/api/v1/feed", Some(API_KEY), None).await;
    assert_eq!(response.status(), 404, "off by default");
    let server = Server::start_with(&["--feed"]).await;
    let alice = server.token("alice").await;
    for bearer in [None, Some(alice.as_str()), Some("not-the-api-key-at-all")] {
        let response = server.call("GET", "/api/v1/feed", bearer, None).await;
        assert_eq!(response.status(), 401);
    }
    let response = server
        .call("GET", "/api/v1/feed?cursor=9", Some(API_KEY), None)
        .await;
    assert_eq!(response.status(), 409, "a cursor beyond the feed");
    let response = server
        .call("GET", "/api/v1/feed?timeout=111", Some(API_KEY), None)
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn the_feed_records_status_changes_group_read_marks_and_presence_when_asked() {
    let server =
        Server::start_with(&["--feed", "--feed-presence", "--presence-window-ms", "50"]).await;
    server.set_members("g", &["alice", "bob"]).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    // alice connects (a stream), chooses busy, and leaves.
    let stream = server.open("/v1/sse", &alice).await;
    assert_eq!(stream.status(), 200);
    let response = server
        .http
        .put(server.url("/v1/status"))
        .bearer_auth(&alice)
        .json(&json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // bob reads alice's group message, twice (the second changes nothing).
    let (status, post) = server
        .post_as(&alice, "/v1/groups/g/messages", json!({"body": "hi"}))
        .await;
    assert_eq!(status, 200);
    let msgid = post["msgid"].as_u64().unwrap();
    for _ in 0..2 {
        let (status, _) = server
            .post_as(&bob, "/v1/groups/g/read", json!({ "msgid": msgid }))
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(stream);
    let wanted = [
        json!({"type": "presence", "uid": "alice", "status": "online"}),
        json!({"type": "status", "uid": "alice", "status": "busy"}),
        json!({"type": "presence", "uid": "alice", "status": "busy"}),
        json!({"type": "group_read", "by": "bob", "gid": "g", "msgid": msgid}),
        json!({"type": "presence", "uid": "alice", "status": "offline"}),
    ];
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.len() < wanted.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        seen = feed(&server, 0, 0)
            .await
            .0
            .into_iter()
            .filter(|e| e["type"] != "group_msg")
            .map(|e| {
                let mut flat = e["data"].clone();
                flat["type"] = e["type"].clone();
                flat
            })
            .collect();
    }
    // Presence changes are pushed a window apart: in order among
    // themselves, each once, like the actions.
    let split = |events: &[Value]| -> (Vec<Value>, Vec<Value>) {
        events
            .iter()
            .cloned()
            .partition(|e| e["type"] == "presence")
    };
    assert_eq!(split(&seen), split(&wanted), "{seen:?}");
    // Without --feed-presence, statuses and marks are there, connections not.
    let server = Server::start_with(&["--feed"]).await;
    let alice = server.token("alice").await;
    let stream = server.open("/v1/sse", &alice).await;
    drop(stream);
    let response = server
        .http
        .put(server.url("/v1/status"))
        .bearer_auth(&alice)
        .json(&json!({"status": "dnd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let types: Vec<Value> = feed(&server, 0, 0)
        .await
        .0
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(types, [json!("status")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_partitions_keep_each_conversation_in_order_in_one_of_them() {
    let server =
        Server::start_with(&["--feed", "--feed-partitions", "4", "--send-rate", "0"]).await;
    common::clients::converse(std::slice::from_ref(&server.base), 100, 3).await;
    common::clients::assert_feed_partitions(&server.base, 4, 100, 3).await;
    // A partition past the last is refused.
    let (status, body) = server.get("/api/v1/feed?partition=4", API_KEY).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("bad_partition")),
        "{body}"
    );
}
