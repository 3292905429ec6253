//! Presence (pushed to online reverse friends, pulled for groups) and
//! direct-message receipts.

mod common;

use std::time::Duration;

use common::{eventually, Server};
use serde_json::{json, Value};

async fn put(server: &Server, path: &str, body: Value) {
    let response = server
        .http
        .put(server.url(path))
        .bearer_auth(common::API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
}

/// Keeps a user online with an open SSE stream (never read).
async fn online(server: &Server, token: &str) -> reqwest::Response {
    let response = server
        .http
        .get(server.url("/v1/sse"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The presence events in a user's queue (read with a short poll, which
/// also keeps that user online).
async fn presence_events(server: &Server, token: &str) -> Vec<Value> {
    server
        .poll(token, 0)
        .await
        .into_iter()
        .filter(|e| e["type"] == "presence")
        .map(|e| e["data"].clone())
        .collect()
}

async fn friends_presence(server: &Server, token: &str) -> Value {
    let (status, body) = server.get("/v1/friends/presence", token).await;
    assert_eq!(status, 200);
    body["friends"].clone()
}

async fn set_status(server: &Server, token: &str, status: &str) -> u16 {
    let response = server
        .http
        .put(server.url("/v1/status"))
        .bearer_auth(token)
        .json(&json!({ "status": status }))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn presence_goes_to_online_reverse_friends_only() {
    let server = Server::start().await;
    put(
        &server,
        "/api/v1/users/alice/friends",
        json!({"friends": ["bob"]}),
    )
    .await; // alice added bob
    put(
        &server,
        "/api/v1/users/frank/friends",
        json!({"friends": ["bob"]}),
    )
    .await; // frank too, but offline
    put(
        &server,
        "/api/v1/users/bob/friends",
        json!({"friends": ["dave"]}),
    )
    .await; // dave did not add bob
    put(
        &server,
        "/api/v1/groups/g1/members",
        json!({"members": ["bob", "erin"]}),
    )
    .await;
    let (alice, dave, erin, frank, bob) = (
        server.token("alice").await,
        server.token("dave").await,
        server.token("erin").await,
        server.token("frank").await,
        server.token("bob").await,
    );
    let _streams = [
        online(&server, &alice).await,
        online(&server, &dave).await,
        online(&server, &erin).await,
    ];

    let bob_stream = online(&server, &bob).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            presence_events(&server, &alice).await
                == vec![json!({"uid": "bob", "status": "online"})]
        })
        .await,
        "alice was not told bob is online"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        presence_events(&server, &dave).await.is_empty(),
        "bob's own friend got his presence"
    );
    assert!(
        presence_events(&server, &erin).await.is_empty(),
        "a group co-member got a push"
    );
    assert!(
        presence_events(&server, &frank).await.is_empty(),
        "an offline reverse friend got a push"
    );
    drop(bob_stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            presence_events(&server, &alice).await.last()
                == Some(&json!({"uid": "bob", "status": "offline"}))
        })
        .await,
        "alice was not told bob went offline"
    );
}

#[tokio::test]
async fn login_pull_and_invisible_looks_offline() {
    let server = Server::start().await;
    put(
        &server,
        "/api/v1/users/alice/friends",
        json!({"friends": ["bob", "carol"]}),
    )
    .await;
    put(
        &server,
        "/api/v1/groups/g1/members",
        json!({"members": ["alice", "bob"]}),
    )
    .await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let _bob_online = online(&server, &bob).await;
    // Presence is published after the stream opens, not before its 200.
    let expected = json!({"bob": "online", "carol": "offline"});
    assert!(
        eventually(Duration::from_secs(5), || async {
            friends_presence(&server, &alice).await == expected
        })
        .await,
        "alice does not see bob online: {}",
        friends_presence(&server, &alice).await
    );

    for (chosen, seen) in [
        ("busy", "busy"),
        ("dnd", "dnd"),
        ("invisible", "offline"),
        ("online", "online"),
    ] {
        assert_eq!(set_status(&server, &bob, chosen).await, 200);
        assert_eq!(
            friends_presence(&server, &alice).await["bob"],
            seen,
            "{chosen}"
        );
        let (_, group) = server.get("/v1/groups/g1/presence", &alice).await;
        assert_eq!(group["members"]["bob"], seen, "{chosen}");
    }
    assert_eq!(set_status(&server, &bob, "asleep").await, 400);
    assert!(server.metric("herald_presence_pulled_total").await >= 10.0);
}

#[tokio::test]
async fn group_presence_is_for_members_only() {
    let server = Server::start().await;
    put(
        &server,
        "/api/v1/groups/g1/members",
        json!({"members": ["alice", "bob"]}),
    )
    .await;
    let (alice, mallory) = (server.token("alice").await, server.token("mallory").await);
    let (status, body) = server.get("/v1/groups/g1/presence", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"gid": "g1", "members": {"alice": "offline", "bob": "offline"}})
    );
    assert_eq!(server.get("/v1/groups/g1/presence", &mallory).await.0, 403);
    assert_eq!(server.get("/v1/groups/nope/presence", &alice).await.0, 404);
    assert_eq!(server.get("/v1/groups/b%20d/presence", &alice).await.0, 400);
    // Group presence is never pushed.
    let bob = server.token("bob").await;
    let _alice_online = online(&server, &alice).await;
    let _bob_online = online(&server, &bob).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(presence_events(&server, &alice).await.is_empty());
}

#[tokio::test]
async fn a_long_poller_stays_online_across_returns_then_goes_offline_after_the_grace() {
    // Grace = 2 × the 2 s long-poll timeout.
    let server = Server::start_with(&["--longpoll-timeout", "2"]).await;
    put(
        &server,
        "/api/v1/users/watcher/friends",
        json!({"friends": ["lp"]}),
    )
    .await;
    let (watcher, lp) = (server.token("watcher").await, server.token("lp").await);
    let poller = {
        let (http, url, lp) = (
            server.http.clone(),
            server.url("/v1/longpoll?timeout=2"),
            lp.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..3 {
                let response = http.get(&url).bearer_auth(&lp).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            friends_presence(&server, &watcher).await["lp"] == "online"
        })
        .await
    );
    while !poller.is_finished() {
        assert_eq!(friends_presence(&server, &watcher).await["lp"], "online");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stopped = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        friends_presence(&server, &watcher).await["lp"],
        "online",
        "went offline within the grace"
    );
    assert!(
        eventually(Duration::from_secs(8), || async {
            friends_presence(&server, &watcher).await["lp"] == "offline"
        })
        .await
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "offline after {:?}",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_flapping_connection_is_coalesced() {
    let server = Server::start_with(&["--presence-window-ms", "1000"]).await;
    put(
        &server,
        "/api/v1/users/alice/friends",
        json!({"friends": ["bob"]}),
    )
    .await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let _alice_online = online(&server, &alice).await;
    for _ in 0..10 {
        let stream = online(&server, &bob).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // The final state is pushed once the window has passed.
    assert!(
        eventually(Duration::from_secs(5), || async {
            presence_events(&server, &alice).await.last()
                == Some(&json!({"uid": "bob", "status": "offline"}))
        })
        .await,
        "alice was not told bob's final state"
    );
    // And nothing more comes in the next window.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let events = presence_events(&server, &alice).await;
    assert!(
        !events.is_empty() && events.len() <= 3,
        "{} presence events for 20 changes: {events:?}",
        events.len()
    );
    assert_eq!(
        events.last().unwrap()["status"],
        "offline",
        "the last push is the final state"
    );
}

#[tokio::test]
async fn presence_fan_out_counts_only_online_reverse_friends() {
    let server = Server::start().await;
    let mut streams = Vec::new();
    for i in 0..200 {
        put(
            &server,
            &format!("/api/v1/users/f{i}/friends"),
            json!({"friends": ["star"]}),
        )
        .await;
        if i % 5 == 0 {
            streams.push(online(&server, &server.token(&format!("f{i}")).await).await);
        }
    }
    assert_eq!(streams.len(), 40);
    let before_sum = server.metric("herald_presence_fanout_sum").await;
    let before_count = server.metric("herald_presence_fanout_count").await;
    let _star = online(&server, &server.token("star").await).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_presence_fanout_count").await == before_count + 1.0
        })
        .await
    );
    assert_eq!(
        server.metric("herald_presence_fanout_sum").await - before_sum,
        40.0
    );
    assert_eq!(server.metric("herald_presence_pushed_total").await, 40.0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            presence_events(&server, &server.token("f0").await)
                .await
                .len()
                == 1
        })
        .await
    );
    // An offline reverse friend's queue stays empty.
    assert!(server.poll(&server.token("f1").await, 0).await.is_empty());
}

async fn send(server: &Server, token: &str, to: &str, body: &str) -> u64 {
    let response = server
        .http
        .post(server.url("/v1/messages"))
        .bearer_auth(token)
        .json(&json!({"to": to, "body": body}))
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn delivered_and_read_receipts_reach_an_offline_sender_batched() {
    let server = Server::start().await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let ids = [
        send(&server, &alice, "bob", "one").await,
        send(&server, &alice, "bob", "two").await,
        send(&server, &alice, "bob", "three").await,
    ];
    let inbox = server.poll(&bob, 0).await;
    assert_eq!(inbox.len(), 3);
    // One ack covering the three messages: one delivered receipt listing them.
    let last = inbox[2]["seq"].as_u64().unwrap();
    server.poll(&bob, last).await;
    let response = server
        .http
        .post(server.url(&format!("/v1/messages/{}/read", ids[1])))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // alice was offline all along: she finds both receipts in her queue.
    let receipts: Vec<Value> = server
        .poll(&alice, 0)
        .await
        .into_iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(
        receipts,
        vec![
            json!({"kind": "delivered", "ids": ids, "by": "bob"}),
            json!({"kind": "read", "ids": [ids[1]], "by": "bob"}),
        ]
    );
    // Only the recipient may mark a message read; unknown ids are 404.
    let carol = server.token("carol").await;
    let post = |token: String, path: String| {
        let http = server.http.clone();
        let url = server.url(&path);
        async move {
            http.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(carol, format!("/v1/messages/{}/read", ids[0])).await,
        403
    );
    assert_eq!(
        post(bob.clone(), "/v1/messages/999999/read".into()).await,
        404
    );
    assert_eq!(post(bob.clone(), "/v1/messages/x/read".into()).await, 400);
    // Acking again sends nothing new.
    server.poll(&bob, last).await;
    assert_eq!(server.poll(&alice, 0).await.len(), 2);
}
