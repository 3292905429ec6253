//! Group messages stored once, read state and derived receipts.

mod common;

use std::time::Duration;

use common::{eventually, Server};
use futures::StreamExt;
use serde_json::{json, Value};

async fn members(server: &Server, gid: &str, list: Value) {
    let response = server
        .http
        .put(server.url(&format!("/api/v1/groups/{gid}/members")))
        .bearer_auth(common::API_KEY)
        .json(&json!({ "members": list }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn post(server: &Server, token: &str, gid: &str, body: Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/v1/groups/{gid}/messages")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn read(server: &Server, token: &str, gid: &str, msgid: u64) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/v1/groups/{gid}/read")))
        .bearer_auth(token)
        .json(&json!({ "msgid": msgid }))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

fn group_msgs(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "group_msg")
        .map(|e| e["data"].clone())
        .collect()
}

#[tokio::test]
async fn group_messages_reach_live_and_offline_members_on_any_transport() {
    let server = Server::start().await;
    members(&server, "g1", json!(["alice", "bob", "carol"])).await;
    let (alice, bob, carol) = (
        server.token("alice").await,
        server.token("bob").await,
        server.token("carol").await,
    );
    // bob listens live on SSE; carol is offline.
    let sse = server
        .http
        .get(server.url("/v1/sse"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let (status, body) = post(&server, &alice, "g1", json!({"body": {"text": "hi all"}})).await;
    assert_eq!(status, 200);
    assert_eq!(body["msgid"], 1);

    let mut stream = sse.bytes_stream();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: group_msg") && text.ends_with("\n\n") {
                break;
            }
        }
    })
    .await;
    let mut buf = text.clone();
    let live = group_msgs(&common::clients::sse_events(&mut buf));
    assert_eq!(live.len(), 1, "{text}");
    assert_eq!(
        (&live[0]["gid"], &live[0]["msgid"], &live[0]["from"]),
        (&json!("g1"), &json!(1), &json!("alice"))
    );
    assert_eq!(live[0]["body"], json!({"text": "hi all"}));

    // carol logs in later and finds the full message in her queue.
    let offline = group_msgs(&server.poll(&carol, 0).await);
    assert_eq!(offline, live);
    // The sender's other devices get it too.
    assert_eq!(group_msgs(&server.poll(&alice, 0).await), live);

    let (status, history) = server.get("/v1/groups/g1/messages?after=0", &carol).await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"][0]["body"], json!({"text": "hi all"}));
    assert_eq!(history["cursor"], 1);
}

#[tokio::test]
async fn group_sends_are_idempotent_by_cid_and_members_only() {
    let server = Server::start().await;
    members(&server, "g1", json!(["alice", "bob"])).await;
    let (alice, mallory) = (server.token("alice").await, server.token("mallory").await);
    let first = post(&server, &alice, "g1", json!({"body": "x", "cid": "c1"}))
        .await
        .1;
    let again = post(&server, &alice, "g1", json!({"body": "x", "cid": "c1"}))
        .await
        .1;
    assert_eq!(first, again);
    let bob = server.token("bob").await;
    assert_eq!(group_msgs(&server.poll(&bob, 0).await).len(), 1);
    let (_, history) = server.get("/v1/groups/g1/messages", &bob).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);

    assert_eq!(
        post(&server, &mallory, "g1", json!({"body": "x"})).await.0,
        403
    );
    assert_eq!(server.get("/v1/groups/g1/messages", &mallory).await.0, 403);
    assert_eq!(read(&server, &mallory, "g1", 1).await.0, 403);
    assert_eq!(
        server
            .get("/v1/groups/g1/receipts?msgids=1", &mallory)
            .await
            .0,
        403
    );
    assert_eq!(
        post(&server, &alice, "nope", json!({"body": "x"})).await.0,
        404
    );
    assert_eq!(
        post(&server, &alice, "g1", json!({"body": null})).await.0,
        400
    );
    assert_eq!(
        post(&server, &alice, "g1", json!({"text": "x"})).await.0,
        400
    );
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn a_message_to_500_members_is_stored_once_plus_small_references() {
    let server = Server::start_with(&["--max-body", "200000"]).await;
    let list: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    members(&server, "big", json!(list)).await;
    let sender = server.token("m0").await;
    post(&server, &sender, "big", json!({"body": "warm-up"})).await;
    let appended_before = server.metric("herald_appended_bytes_total").await;
    let disk_before = dir_bytes(&server.data);

    let body = "x".repeat(100 * 1024);
    let (status, _) = post(&server, &sender, "big", json!({ "body": body })).await;
    assert_eq!(status, 200);
    let refs = server.metric("herald_appended_bytes_total").await - appended_before;
    let disk = dir_bytes(&server.data).saturating_sub(disk_before);
    // 500 copies would be 50 MiB; one body plus 500 references of < 100 B.
    assert!(refs < 500.0 * 100.0, "references took {refs} bytes");
    assert!(disk < 20 << 20, "the store grew by {disk} bytes");
    // Every member still reads the full body.
    let last = server.poll(&server.token("m499").await, 0).await;
    assert_eq!(
        group_msgs(&last)[1]["body"].as_str().unwrap().len(),
        body.len()
    );
}

#[tokio::test]
async fn receipts_are_derived_from_read_cursors_that_never_move_back() {
    let server = Server::start().await;
    members(&server, "g1", json!(["alice", "bob", "carol", "dave"])).await;
    let tokens = [
        server.token("alice").await,
        server.token("bob").await,
        server.token("carol").await,
    ];
    for i in 1..=3 {
        post(&server, &tokens[0], "g1", json!({ "body": i })).await;
    }
    assert_eq!(
        read(&server, &tokens[1], "g1", 3).await.1,
        json!({"last_read": 3})
    );
    assert_eq!(
        read(&server, &tokens[2], "g1", 1).await.1,
        json!({"last_read": 1})
    );
    assert_eq!(
        read(&server, &tokens[1], "g1", 2).await.1,
        json!({"last_read": 3}),
        "never backwards"
    );
    assert_eq!(
        read(&server, &tokens[2], "g1", 99).await.1,
        json!({"last_read": 3}),
        "capped at the newest"
    );
    assert_eq!(
        read(&server, &tokens[2], "g1", 1).await.1,
        json!({"last_read": 3})
    );
    let (status, body) = server
        .get("/v1/groups/g1/receipts?msgids=1,3", &tokens[0])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["receipts"],
        json!([
            {"msgid": 1, "read": 2, "unread": 1, "readers": ["bob", "carol"]},
            {"msgid": 3, "read": 2, "unread": 1, "readers": ["bob", "carol"]},
        ])
    );
    assert_eq!(
        server
            .get("/v1/groups/g1/receipts?msgids=9", &tokens[0])
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .get("/v1/groups/g1/receipts?msgids=a", &tokens[0])
            .await
            .0,
        400
    );
    assert_eq!(
        server.get("/v1/groups/g1/receipts", &tokens[0]).await.0,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_pushes_to_an_online_sender_are_coalesced() {
    let server = Server::start().await;
    let mut list: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    list.push("sender".into());
    members(&server, "g1", json!(list)).await;
    let sender = server.token("sender").await;
    let _online = server
        .http
        .get(server.url("/v1/sse"))
        .bearer_auth(&sender)
        .send()
        .await
        .unwrap();
    let msgid = post(&server, &sender, "g1", json!({"body": "read me"}))
        .await
        .1["msgid"]
        .as_u64()
        .unwrap();
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(server.token(&format!("r{i}")).await);
    }
    let started = std::time::Instant::now();
    let reads: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (http, url) = (server.http.clone(), server.url("/v1/groups/g1/read"));
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(t)
                    .json(&json!({ "msgid": msgid }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), 200);
    }
    let took = started.elapsed();
    let receipts = || async {
        server
            .poll(&sender, 0)
            .await
            .into_iter()
            .filter(|e| e["type"] == "group_receipt")
            .map(|e| e["data"].clone())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            receipts().await.last().is_some_and(|r| r["read"] == 100)
        })
        .await,
        "the final count never arrived"
    );
    let events = receipts().await;
    // At most one per second: 100 reads within one second give at most 2.
    let allowed = took.as_secs_f64().ceil() as usize + 1;
    assert!(
        events.len() <= allowed,
        "{} receipt events for 100 reads in {took:?}",
        events.len()
    );
    assert_eq!(
        (
            &events.last().unwrap()["msgid"],
            &events.last().unwrap()["unread"]
        ),
        (&json!(msgid), &json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_marks_leave_the_highest_cursor_after_a_restart() {
    let mut server = Server::start_with(&["--send-rate", "0"]).await;
    members(&server, "g1", json!(["alice", "bob"])).await;
    let alice = server.token("alice").await;
    for i in 1..=40 {
        post(&server, &alice, "g1", json!({ "body": i })).await;
    }
    let bob = server.token("bob").await;
    // Forty marks at once, in no particular order: whatever order they
    // reach the store in, the cursor ends at 40 and answers never go back.
    let marks = (1..=40u64).map(|msgid| {
        let (http, url, bob) = (
            server.http.clone(),
            server.url("/v1/groups/g1/read"),
            bob.clone(),
        );
        tokio::spawn(async move {
            let body: Value = http
                .post(url)
                .bearer_auth(bob)
                .json(&json!({ "msgid": msgid }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let last_read = body["last_read"].as_u64().unwrap();
            assert!(last_read >= msgid, "{last_read} < {msgid}");
        })
    });
    for mark in futures::future::join_all(marks).await {
        mark.unwrap();
    }
    server.kill9();
    server.restart().await;
    let bob = server.token("bob").await;
    assert_eq!(
        read(&server, &bob, "g1", 0).await.1,
        json!({"last_read": 40})
    );
}

#[tokio::test]
async fn keepalive_receipts_ride_on_the_senders_heartbeat_long_poll_and_poll_not_its_queue() {
    let server =
        Server::start_with(&["--group-receipts", "keepalive", "--heartbeat-ms", "300"]).await;
    members(&server, "k1", json!(["alice", "bob", "carol", "dave"])).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    // alice follows her queue over SSE, and holds a long-poll.
    let mut sse = server.open("/v1/sse", &alice).await.bytes_stream();
    let (status, posted) = post(&server, &alice, "k1", json!({"body": "one"})).await;
    assert_eq!(status, 200, "{posted}");
    let msgid = posted["msgid"].as_u64().unwrap();
    assert_eq!(read(&server, &bob, "k1", msgid).await.0, 200);
    // The totals come on a heartbeat, once.
    let expected = json!({"k1": {msgid.to_string(): {"read": 1, "unread": 2}}});
    let mut buf = String::new();
    let hb = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let chunk = sse.next().await.expect("more").expect("a chunk");
            buf.push_str(&String::from_utf8_lossy(&chunk));
            let found = common::clients::sse_events(&mut buf)
                .into_iter()
                .find(|e| e["type"] == "hb" && e.get("receipts").is_some());
            if let Some(hb) = found {
                return hb;
            }
        }
    })
    .await
    .expect("a heartbeat with the receipts");
    assert_eq!(hb["receipts"], expected);

    // The next change rides on a held long-poll's empty answer instead
    // (the SSE stream is gone).
    drop(sse);
    // (Gone once a heartbeat finds it closed: a keepalive written to a
    // closed connection would take the totals with it.)
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_connections{kind=\"sse\"}").await == 0.0
        })
        .await
    );
    let carol = server.token("carol").await;
    let held = {
        let (http, url) = (
            server.http.clone(),
            server.url("/v1/longpoll?cursor=1&timeout=2"),
        );
        let alice = alice.clone();
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(alice)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    assert_eq!(read(&server, &carol, "k1", msgid).await.0, 200);
    let answer = held.await.unwrap();
    assert_eq!(answer["events"], json!([]), "{answer}");
    assert_eq!(
        answer["receipts"],
        json!({"k1": {msgid.to_string(): {"read": 2, "unread": 1}}})
    );
    // And on a short poll (a poller has no keepalive).
    let dave = server.token("dave").await;
    assert_eq!(read(&server, &dave, "k1", msgid).await.0, 200);
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    let polled = loop {
        let (_, body) = server.get("/v1/poll?cursor=1", &alice).await;
        if body.get("receipts").is_some() || std::time::Instant::now() > give_up {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        polled["receipts"],
        json!({"k1": {msgid.to_string(): {"read": 3, "unread": 0}}})
    );
    // No receipt event in the queue: only her own message.
    let queued: Vec<Value> = server.poll(&alice, 0).await;
    assert!(
        queued.iter().all(|e| e["type"] != "group_receipt"),
        "{queued:?}"
    );
    assert_eq!(
        server.metric("herald_group_receipts_pushed_total").await,
        0.0
    );
}
