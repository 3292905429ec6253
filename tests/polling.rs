//! Short and long polling over the durable per-user queue.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, seqs, Server};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn poll_returns_events_in_order_after_the_cursor() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    for i in 1..=5 {
        let seqs = server.publish(&["alice"], json!({ "n": i })).await;
        assert_eq!(seqs["alice"], i);
    }
    let all = server.poll(&token, 0).await;
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    assert_eq!(all[2]["type"], "notice");
    assert_eq!(all[2]["data"]["n"], 3);
    assert!(all[2]["ts"].as_u64().unwrap() > 1_600_000_000_000);

    let (status, body) = server.get("/v1/poll?cursor=3", &token).await;
    assert_eq!(status, 200);
    assert_eq!(seqs(body["events"].as_array().unwrap()), vec![4, 5]);
    assert_eq!(body["cursor"], 5);

    let (_, body) = server.get("/v1/poll?cursor=1&limit=2", &token).await;
    assert_eq!(seqs(body["events"].as_array().unwrap()), vec![2, 3]);
    assert_eq!(body["cursor"], 3);

    let (_, body) = server.get("/v1/poll?cursor=5", &token).await;
    assert_eq!((&body["events"], &body["cursor"]), (&json!([]), &json!(5)));
}

#[tokio::test]
async fn queues_are_per_user() {
    let server = Server::start().await;
    server.publish(&["alice", "bob"], json!("both")).await;
    server.publish(&["bob"], json!("bob only")).await;
    let alice = server.poll(&server.token("alice").await, 0).await;
    let bob = server.poll(&server.token("bob").await, 0).await;
    assert_eq!(seqs(&alice), vec![1]);
    assert_eq!(seqs(&bob), vec![1, 2]);
    assert_eq!(bob[1]["data"], "bob only");
}

#[tokio::test]
async fn long_poll_times_out_with_an_empty_result() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let started = Instant::now();
    let (status, body) = server.get("/v1/longpoll?cursor=0&timeout=1", &token).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!((&body["events"], &body["cursor"]), (&json!([]), &json!(0)));
    assert!(
        took >= Duration::from_millis(950),
        "returned after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    assert_eq!(
        server
            .metric("herald_longpoll_returns_total{kind=\"empty\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn held_long_poll_returns_as_soon_as_an_event_is_published() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let url = server.url("/v1/longpoll?cursor=0&timeout=30");
    let http = server.http.clone();
    let held = tokio::spawn(async move {
        let body: serde_json::Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (Instant::now(), body)
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await,
        "the long-poll was never held"
    );
    server.publish(&["alice"], json!({"hello": "world"})).await;
    let published = Instant::now();
    let (returned, body) = held.await.unwrap();
    assert_eq!(seqs(body["events"].as_array().unwrap()), vec![1]);
    assert_eq!(body["cursor"], 1);
    // Woken by the durable-head watch, not by a timer: far below the 30 s timeout.
    let wake = returned.saturating_duration_since(published);
    assert!(
        wake < Duration::from_secs(1),
        "woke {wake:?} after the publish answered"
    );
}

#[tokio::test]
async fn long_poll_returns_at_once_an_event_published_between_polls() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!(1)).await;
    let (_, first) = server.get("/v1/longpoll?cursor=0&timeout=30", &token).await;
    assert_eq!(first["cursor"], 1);
    // Published while no long-poll is held: it waits in the queue.
    server.publish(&["alice"], json!(2)).await;
    let started = Instant::now();
    let (_, second) = server.get("/v1/longpoll?cursor=1&timeout=30", &token).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(seqs(second["events"].as_array().unwrap()), vec![2]);
    assert_eq!(second["events"][0]["data"], 2);
}

#[tokio::test]
async fn concurrent_publishers_get_each_seq_exactly_once() {
    let server = Server::start().await;
    let mut tasks = Vec::new();
    for p in 0..20 {
        let http = server.http.clone();
        let url = server.url("/api/v1/publish");
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for n in 0..50 {
                let body: serde_json::Value = http
                    .post(&url)
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"to": ["carol"], "data": {"p": p, "n": n}}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                got.push(body["seqs"]["carol"].as_u64().unwrap());
            }
            got
        }));
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    answered.sort();
    assert_eq!(answered, (1..=1000).collect::<Vec<_>>());
    let stored = server.poll_all(&server.token("carol").await).await;
    assert_eq!(seqs(&stored), (1..=1000).collect::<Vec<_>>());
    // Each publisher's events are in the order it published them.
    for p in 0..20 {
        let ns: Vec<u64> = stored
            .iter()
            .filter(|e| e["data"]["p"] == p)
            .map(|e| e["data"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..50).collect::<Vec<_>>());
    }
    // Group commit: far fewer flushes than appends.
    let flushes = server.metric("herald_flushes_total").await;
    eprintln!("flushes for 1000 appends: {flushes}");
    assert!((1.0..1000.0).contains(&flushes), "flushes = {flushes}");
}

#[tokio::test]
async fn polling_with_a_cursor_acks_it() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!(1)).await;
    server.publish(&["alice"], json!(2)).await;
    server.poll(&token, 1).await;
    let ack = |seq: u64| server.post_as(&token, "/v1/ack", json!({ "seq": seq }));
    let (status, body) = ack(0).await;
    assert_eq!(status, 200);
    assert_eq!(body["acked"], 1, "an ack never moves backwards");
    // An ack beyond the newest event is refused and acks nothing (0.6; it
    // used to be capped at the head, acking events never read).
    let (status, body) = ack(99).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("cursor_ahead"))
    );
    assert_eq!(ack(2).await.1["acked"], 2);
}

#[tokio::test]
async fn acked_events_past_retention_give_a_gap_then_the_rest() {
    let server = Server::start_with(&["--retention", "0", "--trim-interval-ms", "50"]).await;
    let token = server.token("alice").await;
    for i in 1..=3 {
        server.publish(&["alice"], json!(i)).await;
    }
    server.poll(&token, 2).await; // acks 2
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.poll(&token, 0).await[0]["type"] == "gap"
        })
        .await,
        "acked events were never trimmed"
    );
    let events = server.poll(&token, 0).await;
    assert_eq!(events[0]["type"], "gap");
    assert_eq!(events[0]["data"], json!({"from": 1, "to": 2}));
    assert_eq!(events[0]["seq"], 2);
    assert_eq!(seqs(&events[1..]), vec![3], "the unacked event is kept");
}

#[tokio::test]
async fn queue_cap_drops_the_oldest_and_seqs_continue_after_restart() {
    let mut server = Server::start_with(&["--queue-cap", "5", "--trim-interval-ms", "50"]).await;
    for i in 1..=10 {
        server.publish(&["alice"], json!(i)).await;
    }
    let token = server.token("alice").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.poll(&token, 0).await.len() == 6
        })
        .await,
        "the queue was never capped"
    );
    let events = server.poll(&token, 0).await;
    assert_eq!(events[0]["data"], json!({"from": 1, "to": 5}));
    assert_eq!(seqs(&events[1..]), vec![6, 7, 8, 9, 10]);
    // A cursor inside the retained range sees no gap.
    assert_eq!(seqs(&server.poll(&token, 7).await), vec![8, 9, 10]);

    server.restart().await;
    let seqs_after = server.publish(&["alice"], json!(11)).await;
    assert_eq!(seqs_after["alice"], 11);
}

#[tokio::test]
async fn idle_queues_leave_memory_and_come_back_intact() {
    let server = Server::start_with(&["--trim-interval-ms", "100"]).await;
    let users: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let to: Vec<&str> = users.iter().map(String::as_str).collect();
    for n in 0..3 {
        server.publish(&to, json!(n)).await;
    }
    let token = server.token("u1").await;
    let ack = |seq: u64| {
        let request = server
            .http
            .post(server.url("/v1/ack"))
            .bearer_auth(&token)
            .json(&json!({ "seq": seq }));
        async move {
            let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            body["acked"].as_u64().unwrap()
        }
    };
    assert_eq!(ack(2).await, 2);
    // A user with an open stream keeps their queue in memory.
    let live = server.token("live").await;
    let mut stream = server.open("/v1/sse", &live).await.bytes_stream();
    let gauge = "herald_queues_in_memory";
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric(gauge).await == 1.0
        })
        .await,
        "idle queues stayed in memory: {}",
        server.metric(gauge).await
    );

    // Reloaded from the store: seqs continue, acks kept, nothing lost.
    assert_eq!(server.publish(&["u0"], json!("again")).await["u0"], 4);
    let u0 = server.token("u0").await;
    assert_eq!(seqs(&server.poll(&u0, 0).await), [1, 2, 3, 4]);
    assert_eq!(ack(1).await, 2, "the ack survived the eviction");
    // The stream that pinned its queue still gets live events.
    server.publish(&["live"], json!("live")).await;
    let mut text = String::new();
    while !text.contains("\"live\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a live event")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}
