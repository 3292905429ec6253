//! Counters (pushed as new totals) and the daily news (once per day).

mod common;

use common::Server;
use serde_json::{json, Value};

async fn change(server: &Server, uid: &str, body: Value) -> reqwest::Response {
    server
        .backend_post(&format!("/api/v1/users/{uid}/counters"), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deltas_add_up_and_every_change_is_pushed_as_the_total() {
    // Idle users' counters are forgotten (and reloaded) every 5 ms meanwhile.
    let mut server = Server::start_with(&["--trim-interval-ms", "5"]).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (http, url) = (
                server.http.clone(),
                server.url("/api/v1/users/alice/counters"),
            );
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"name": "unread", "delta": 1}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let alice = server.token("alice").await;
    assert_eq!(
        server.get("/v1/counters", &alice).await.1,
        json!({"counters": {"unread": 100}})
    );
    let values: Vec<i64> = server
        .poll_all(&alice)
        .await
        .iter()
        .filter(|e| e["type"] == "counter")
        .map(|e| e["data"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(
        values,
        (1..=100).collect::<Vec<_>>(),
        "totals, in order, one per change"
    );

    let body: Value = change(&server, "alice", json!({"name": "unread", "value": 7}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"name": "unread", "value": 7}));
    change(&server, "alice", json!({"name": "requests", "delta": -2})).await;
    server.restart().await;
    assert_eq!(
        server.get("/v1/counters", &alice).await.1,
        json!({"counters": {"requests": -2, "unread": 7}}),
        "counters survive kill -9 and a restart"
    );
}

#[tokio::test]
async fn bad_counter_changes_are_rejected() {
    let server = Server::start().await;
    for body in [
        json!({"name": "Unread", "delta": 1}),
        json!({"name": "", "delta": 1}),
        json!({"name": "x", "delta": 1, "value": 2}),
        json!({"name": "x"}),
        json!({"name": "x", "delta": "one"}),
    ] {
        assert_eq!(
            change(&server, "alice", body.clone()).await.status(),
            400,
            "{body}"
        );
    }
    change(&server, "alice", json!({"name": "x", "value": i64::MAX})).await;
    assert_eq!(
        change(&server, "alice", json!({"name": "x", "delta": 1}))
            .await
            .status(),
        409
    );
    assert_eq!(
        change(&server, "a b", json!({"name": "x", "delta": 1}))
            .await
            .status(),
        400
    );
    let alice = server.token("alice").await;
    assert_eq!(
        server.get("/v1/counters", &alice).await.1,
        json!({"counters": {"x": i64::MAX}})
    );
}

fn today() -> String {
    herald::chat::notices::today()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_is_seen_once_per_day_even_when_tabs_race() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    assert_eq!(server.get("/v1/news", &alice).await.0, 204, "no news set");
    let response = server
        .http
        .put(server.url(&format!("/api/v1/news/{}", today())))
        .bearer_auth(common::API_KEY)
        .json(&json!({"body": {"title": "Hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let tabs: Vec<_> = (0..10)
        .map(|_| {
            let (http, url, token) = (server.http.clone(), server.url("/v1/news"), alice.clone());
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(token).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    let mut shown = Vec::new();
    for t in tabs {
        let (status, body) = t.await.unwrap();
        if status == 200 {
            shown.push(body);
        } else {
            assert_eq!(status, 204);
        }
    }
    assert_eq!(shown.len(), 1, "the news was shown {} times", shown.len());
    let news: Value = serde_json::from_str(&shown[0]).unwrap();
    assert_eq!(news, json!({"date": today(), "body": {"title": "Hello"}}));
    assert_eq!(server.get("/v1/news", &alice).await.0, 204);
    assert_eq!(
        server.get("/v1/news", &server.token("bob").await).await.0,
        200,
        "each user once"
    );

    for date in ["2026-02-30", "yesterday", "2026-1-01"] {
        let response = server
            .http
            .put(server.url(&format!("/api/v1/news/{date}")))
            .bearer_auth(common::API_KEY)
            .json(&json!({"body": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{date}");
    }
}
