//! Direct-message history (`GET /v1/conversations/{uid}/messages`) over the
//! real binary: each message once, paged both ways, with read state, only
//! to its two users, and kept across kill -9.

mod common;

use common::Server;
use serde_json::{json, Value};

async fn send(server: &Server, token: &str, to: &str, body: Value, cid: Option<&str>) -> u64 {
    let mut message = json!({"to": to, "body": body});
    if let Some(cid) = cid {
        message["cid"] = json!(cid);
    }
    let response = server
        .call("POST", "/v1/messages", Some(token), Some(message))
        .await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap()
}

async fn history(server: &Server, token: &str, with: &str, query: &str) -> Value {
    let path = format!("/v1/conversations/{with}/messages{query}");
    server.get_json(&path, token).await
}

fn ids(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_conversation_pages_both_ways_with_read_state_and_only_for_its_two_users() {
    let mut server = Server::start_with(&["--send-rate", "0"]).await;
    let (alice, bob, carol) = (
        server.token("alice").await,
        server.token("bob").await,
        server.token("carol").await,
    );
    // 25 messages, both directions, and one to carol in between.
    let mut sent = Vec::new();
    for n in 0..25 {
        let (from, to) = if n % 2 == 0 {
            (&alice, "bob")
        } else {
            (&bob, "alice")
        };
        sent.push(send(&server, from, to, json!({"n": n}), None).await);
        if n == 10 {
            send(&server, &alice, "carol", json!("not for bob"), None).await;
        }
    }
    // A retried cid is one message in the history too.
    let once = send(&server, &alice, "bob", json!("once"), Some("c-1")).await;
    assert_eq!(
        send(&server, &alice, "bob", json!("once"), Some("c-1")).await,
        once
    );
    sent.push(once);

    // Newest first into the past, each page oldest first.
    let newest = history(&server, &alice, "bob", "?limit=10").await;
    assert_eq!(ids(&newest), sent[16..26]);
    assert_eq!(newest["more"], true);
    assert_eq!(newest["with"], "bob");
    let older = history(
        &server,
        &alice,
        "bob",
        &format!("?limit=10&before={}", sent[16]),
    )
    .await;
    assert_eq!(ids(&older), sent[6..16]);
    let oldest = history(
        &server,
        &alice,
        "bob",
        &format!("?limit=10&before={}", sent[6]),
    )
    .await;
    assert_eq!(
        (ids(&oldest), &oldest["more"]),
        (sent[0..6].to_vec(), &json!(false))
    );
    // Forward from a message.
    let forward = history(
        &server,
        &bob,
        "alice",
        &format!("?limit=10&after={}", sent[3]),
    )
    .await;
    assert_eq!(
        (ids(&forward), &forward["more"]),
        (sent[4..14].to_vec(), &json!(true))
    );
    let rest = history(&server, &bob, "alice", &format!("?after={}", sent[13])).await;
    assert_eq!(
        (ids(&rest), &rest["more"]),
        (sent[14..26].to_vec(), &json!(false))
    );
    // Both users see the same history; the messages are whole.
    let all_bob = history(&server, &bob, "alice", "?limit=100").await;
    assert_eq!(ids(&all_bob), sent);
    let first = &all_bob["messages"][0];
    assert_eq!(
        (&first["from"], &first["to"], &first["body"], &first["read"]),
        (
            &json!("alice"),
            &json!("bob"),
            &json!({"n": 0}),
            &json!(false)
        )
    );
    assert!(first["ts"].as_u64().unwrap() > 0);
    // A third user sees nothing of it; their own conversation is separate.
    assert_eq!(
        ids(&history(&server, &carol, "bob", "").await),
        Vec::<u64>::new()
    );
    let carols = history(&server, &carol, "alice", "").await;
    assert_eq!(carols["messages"][0]["body"], "not for bob");
    assert_eq!(ids(&carols).len(), 1);

    // Read state: bob reads alice's message 0; only that one turns read.
    let response = server
        .call(
            "POST",
            &format!("/v1/messages/{}/read", sent[0]),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let page = history(&server, &alice, "bob", "?limit=100").await;
    let read: Vec<bool> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["read"].as_bool().unwrap())
        .collect();
    assert_eq!(read.iter().filter(|r| **r).count(), 1);
    assert!(read[0]);

    // Everything acknowledged survives kill -9.
    server.kill9();
    server.restart().await;
    let alice = server.token("alice").await;
    let after = history(&server, &alice, "bob", "?limit=100").await;
    assert_eq!(ids(&after), sent);
    assert_eq!(after["messages"][0]["read"], true);
}

#[tokio::test]
async fn bad_history_requests_get_clear_errors() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    for (query, code) in [
        ("?limit=0", "bad_limit"),
        ("?limit=101", "bad_limit"),
        ("?before=x", "bad_window"),
        ("?before=1&after=2", "bad_window"),
    ] {
        let path = format!("/v1/conversations/bob/messages{query}");
        let response = server.call("GET", &path, Some(&alice), None).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            code,
            "{query}"
        );
    }
    let response = server
        .call(
            "GET",
            "/v1/conversations/b%20b/messages",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(response.status(), 400);
    let response = server
        .call("GET", "/v1/conversations/bob/messages", None, None)
        .await;
    assert_eq!(response.status(), 401);
    let response = server
        .call("POST", "/v1/conversations/bob/messages", Some(&alice), None)
        .await;
    assert_eq!(response.status(), 405);
}
