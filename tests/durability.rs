//! Durable before visible: what a publisher was told, or a reader saw,
//! survives kill -9, and seqs are never reused.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{seqs, Server, API_KEY};
use serde_json::{json, Value};

/// Publishes from `writers` tasks to `uid` until the server dies; returns
/// every acknowledged (seq → data).
async fn publish_until_killed(
    server: &mut Server,
    uid: &str,
    writers: usize,
    kill_after: Duration,
) -> BTreeMap<u64, Value> {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let http = common::client();
        let url = server.url("/api/v1/publish");
        let acked = acked.clone();
        let uid = uid.to_owned();
        tasks.push(tokio::spawn(async move {
            for n in 0..100_000u64 {
                let data = json!({"w": w, "n": n});
                let sent = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"to": [uid], "data": data}))
                    .send()
                    .await;
                let Ok(response) = sent else { return };
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                let Some(seq) = body["seqs"][&uid].as_u64() else {
                    return;
                };
                acked.lock().unwrap().insert(seq, data);
            }
        }));
    }
    tokio::time::sleep(kill_after).await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event_and_never_reuses_a_seq() {
    // Sweeps of idle queues every 5 ms: the queue leaves memory between
    // requests and is reloaded, which must not cost an event or a seq.
    let mut server = Server::start_with(&["--trim-interval-ms", "5"]).await;
    let mut acknowledged = BTreeMap::new();
    for round in 0..3 {
        let got = publish_until_killed(
            &mut server,
            "dora",
            16,
            Duration::from_millis(400 + 200 * round),
        )
        .await;
        assert!(
            !got.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        acknowledged.extend(got);
        server.restart().await;

        let token = server.token("dora").await;
        let stored = server.poll_all(&token).await;
        let stored_seqs = seqs(&stored);
        // No holes: seqs are 1..=N.
        assert_eq!(
            stored_seqs,
            (1..=stored_seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}"
        );
        let by_seq: BTreeMap<u64, &Value> = stored
            .iter()
            .map(|e| (e["seq"].as_u64().unwrap(), &e["data"]))
            .collect();
        for (seq, data) in &acknowledged {
            assert_eq!(
                by_seq.get(seq),
                Some(&data),
                "round {round}: acknowledged seq {seq} lost or changed"
            );
        }
        // The next seq continues after everything stored.
        let next = server.publish(&["dora"], json!("after")).await;
        assert_eq!(next["dora"].as_u64().unwrap(), stored_seqs.len() as u64 + 1);
        acknowledged.insert(next["dora"].as_u64().unwrap(), json!("after"));
    }
}

#[tokio::test]
async fn acks_survive_a_restart() {
    let mut server = Server::start().await;
    for i in 0..4 {
        server.publish(&["erin"], json!(i)).await;
    }
    let token = server.token("erin").await;
    let response = server
        .http
        .post(server.url("/v1/ack"))
        .bearer_auth(&token)
        .json(&json!({"seq": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.restart().await;
    let response = server
        .http
        .post(server.url("/v1/ack"))
        .bearer_auth(&token)
        .json(&json!({"seq": 1}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["acked"], 3);
}

#[tokio::test]
async fn sigterm_releases_held_long_polls_and_exits_cleanly() {
    let mut server = Server::start().await;
    let token = server.token("fred").await;
    server.publish(&["fred"], json!(1)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let http = server.http.clone();
        let url = server.url("/v1/longpoll?cursor=1&timeout=100");
        let token = token.clone();
        held.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                started.elapsed(),
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }));
    }
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 3.0
        })
        .await
    );
    server.sigterm();
    for h in held {
        let (took, status, body) = h.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["events"], json!([]));
        assert_eq!(body["cursor"], 1);
        assert!(body["epoch"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(took < Duration::from_secs(10), "held for {took:?}");
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(server
        .output
        .lock()
        .unwrap()
        .contains("everything acknowledged is durable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_direct_message_that_survives_kill_9_can_be_marked_read() {
    let mut server = Server::start_with(&["--send-rate", "0"]).await;
    let mut tasks = Vec::new();
    for s in 0..8 {
        let http = common::client();
        let url = server.url("/v1/messages");
        let token = server.token(&format!("sender{s}")).await;
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..100_000u64 {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"to": "rita", "body": n}))
                    .send()
                    .await;
                let Ok(response) = response else { break };
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                let Some(id) = body["id"].as_u64() else { break };
                sent.push(id);
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9();
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert!(!acknowledged.is_empty(), "nothing was sent before the kill");
    server.restart().await;

    let token = server.token("rita").await;
    let stored: Vec<u64> = server
        .poll_all(&token)
        .await
        .iter()
        .filter(|e| e["type"] == "msg")
        .map(|e| e["data"]["id"].as_u64().expect("message id"))
        .collect();
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged message {id} lost");
    }
    // Each stored message has its record: the recipient can mark it read.
    for id in stored {
        let status = server
            .http
            .post(server.url(&format!("/v1/messages/{id}/read")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "message {id} has no record");
    }
}
