//! Broadcasts: paced push to online users, and pull with keepalive hints.

mod common;

use std::time::{Duration, Instant};

use common::clients::{iframe_calls, sse_events};
use common::{eventually, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn broadcast(server: &Server, body: Value) -> (u16, Value) {
    let response = server.backend_post("/api/v1/broadcast", body).await;
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_broadcasts_are_paced_queued_and_reach_each_online_user_once() {
    let server = Server::start().await;
    let mut tokens = Vec::new();
    let names: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    for name in &names {
        let token = server.token(name).await;
        server.poll(&token, 0).await; // online for the grace period
        tokens.push(token);
    }
    // A poll marks its user online in the presence table a moment after it
    // is answered: wait until all 1 000 are (seen as a group's members).
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    server.set_members("everyone", &members).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let (_, page) = server.get("/v1/groups/everyone/presence", &tokens[0]).await;
            let statuses = page["members"].as_object().cloned().unwrap_or_default();
            statuses.values().filter(|s| *s == "online").count() == 1000
        })
        .await,
        "not every poller is online"
    );
    let started = Instant::now();
    let (status, first) =
        broadcast(&server, json!({"body": "one", "mode": "push", "rate": 500})).await;
    assert_eq!(status, 202);
    assert_eq!(first["recipients"], 1000);
    let (_, second) = broadcast(&server, json!({"body": "two", "rate": 500})).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            server.metric("herald_broadcast_delivered_total").await >= 1000.0
        })
        .await
    );
    let first_done = started.elapsed();
    assert!(
        eventually(Duration::from_secs(60), || async {
            server.metric("herald_broadcast_delivered_total").await == 2000.0
        })
        .await
    );
    let both_done = started.elapsed();
    // 1 000 deliveries at 500/s take about 2 s (loosely: the rate is a
    // ceiling, the first 1/20 s of tokens go at once); the second broadcast
    // waits for the first.
    assert!(
        first_done > Duration::from_millis(1500),
        "first took {first_done:?}"
    );
    assert!(
        first_done < Duration::from_secs(8),
        "first took {first_done:?}"
    );
    assert!(
        both_done > Duration::from_millis(3500),
        "both took {both_done:?}"
    );
    assert_eq!(server.metric("herald_broadcast_pending").await, 0.0);

    for token in tokens.iter().step_by(7) {
        let got: Vec<Value> = server
            .poll(token, 0)
            .await
            .into_iter()
            .filter(|e| e["type"] == "broadcast")
            .map(|e| e["data"].clone())
            .collect();
        assert_eq!(
            got,
            vec![
                json!({"bid": first["bid"], "body": "one"}),
                json!({"bid": second["bid"], "body": "two"})
            ]
        );
    }
}

#[tokio::test]
async fn bad_broadcasts_are_rejected() {
    let server = Server::start().await;
    for body in [
        json!({"body": "x", "mode": "shout"}),
        json!({"body": "x", "rate": 0}),
        json!({"body": "x", "rate": 1_000_000}),
        json!({"body": "x", "mode": "pull", "rate": 10}),
        json!({"body": null}),
        json!({"mode": "pull"}),
    ] {
        assert_eq!(broadcast(&server, body.clone()).await.0, 400, "{body}");
    }
    assert_eq!(server.metric("herald_broadcast_delivered_total").await, 0.0);
}

#[tokio::test]
async fn pull_broadcasts_are_hinted_on_every_transport_and_fetched_once() {
    let server = Server::start_with(&["--heartbeat-ms", "200"]).await;
    let token = server.token("alice").await;
    let (status, body) = broadcast(
        &server,
        json!({"body": {"title": "maintenance"}, "mode": "pull"}),
    )
    .await;
    assert_eq!(status, 200);
    let bid = body["bid"].clone();
    let hints = json!({ "broadcast": bid });

    // Polls and long-poll returns carry the hint.
    assert_eq!(server.get("/v1/poll", &token).await.1["hints"], hints);
    assert_eq!(
        server.get("/v1/longpoll?timeout=1", &token).await.1["hints"],
        hints
    );

    // SSE: an hb event.
    let response = server.open("/v1/sse", &token).await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("event: hb\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut buf = text.clone();
    let hb = sse_events(&mut buf)
        .into_iter()
        .find(|e| e["type"] == "hb")
        .unwrap();
    assert_eq!(hb["hints"], hints);
    assert!(
        !text.contains("id: "),
        "a keepalive must not move Last-Event-ID"
    );

    // iframe: an hb call.
    let response = server.open("/v1/iframe?cb=cb", &token).await;
    let mut stream = response.bytes_stream();
    let mut html = String::new();
    while !html.contains(r#""type":"hb""#) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        html.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(
        iframe_calls(&html, "cb")
            .iter()
            .find(|c| c["type"] == "hb")
            .unwrap()["hints"],
        hints
    );

    // WebSocket: an hb frame.
    let mut ws = server.ws(&format!("token={token}")).await;
    let hb = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "hb" {
                    return frame;
                }
            }
        }
        Value::Null
    })
    .await
    .unwrap();
    assert_eq!(hb["hints"], hints);

    // The client fetches what the hint points to, once.
    let (_, list) = server.get("/v1/broadcasts?after=0", &token).await;
    assert_eq!(
        list["broadcasts"][0]["body"],
        json!({"title": "maintenance"})
    );
    assert_eq!(list["cursor"], bid);
    let (_, rest) = server
        .get(&format!("/v1/broadcasts?after={bid}"), &token)
        .await;
    assert_eq!(rest["broadcasts"], json!([]));
}
