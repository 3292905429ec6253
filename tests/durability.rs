//! Durable before visible: what a publisher was told, or a reader saw,
//! survives kill -9, and seqs are never reused.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{seqs, Server, API_KEY};
use serde_json::{json, Value};

/// Acknowledged publishes: (uid, seq) → data.
type Acknowledged = BTreeMap<(String, u64), Value>;

/// Tasks publishing to the users `to` (every fourth to the first of them
/// alone, the others to all at once) until the server dies.
struct Writers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acked: Arc<Mutex<Acknowledged>>,
}

impl Writers {
    fn start(server: &Server, to: &[&str], writers: usize) -> Writers {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let http = common::client();
            let url = server.url("/api/v1/publish");
            let acked = acked.clone();
            let to: Vec<String> = match w % 4 {
                3 => vec![to[0].to_owned()],
                _ => to.iter().map(|u| u.to_string()).collect(),
            };
            tasks.push(tokio::spawn(async move {
                for n in 0..100_000u64 {
                    let data = json!({"w": w, "n": n});
                    let sent = http
                        .post(&url)
                        .bearer_auth(API_KEY)
                        .json(&json!({"to": to, "data": data}))
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    let Ok(body) = response.json::<Value>().await else {
                        return;
                    };
                    let mut acked = acked.lock().unwrap();
                    for uid in &to {
                        let Some(seq) = body["seqs"][uid].as_u64() else {
                            return;
                        };
                        acked.insert((uid.clone(), seq), data.clone());
                    }
                }
            }));
        }
        Writers { tasks, acked }
    }

    /// Once the server was killed: every acknowledged (uid, seq) → data.
    async fn acknowledged(self) -> Acknowledged {
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// Publishes from `writers` tasks to the users `to` until the server is
/// killed after `kill_after`; returns every acknowledged (uid, seq) → data.
async fn publish_until_killed(
    server: &mut Server,
    to: &[&str],
    writers: usize,
    kill_after: Duration,
) -> Acknowledged {
    let writers = Writers::start(server, to, writers);
    tokio::time::sleep(kill_after).await;
    server.kill9();
    writers.acknowledged().await
}

/// Asserts that every event acknowledged to `uid` from seq `from` on is in
/// `events` at its seq with its data; returns how many were checked.
fn assert_kept(
    acknowledged: &Acknowledged,
    uid: &str,
    from: u64,
    events: &[Value],
    round: u64,
) -> usize {
    let by_seq: BTreeMap<u64, &Value> = events
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), &e["data"]))
        .collect();
    let mut checked = 0;
    for ((user, seq), data) in acknowledged.range((uid.to_string(), from)..) {
        if user != uid {
            break;
        }
        assert_eq!(
            by_seq.get(seq),
            Some(&data),
            "round {round}: acknowledged seq {seq} of {uid} lost or changed"
        );
        checked += 1;
    }
    checked
}

/// Three rounds of publishing to `to` from 16 writers, each ended by
/// kill -9 and a restart: every user's queue then has seqs 1..=N without
/// a hole, every acknowledged event at its seq, and the next publish gets
/// the next seq.
async fn publish_kill_and_check(server: &mut Server, to: &[&str]) {
    let mut acknowledged = BTreeMap::new();
    for round in 0..3 {
        let got =
            publish_until_killed(server, to, 16, Duration::from_millis(400 + 200 * round)).await;
        assert!(
            !got.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        acknowledged.extend(got);
        server.restart().await;

        for uid in to {
            let token = server.token(uid).await;
            let stored = server.poll_all(&token).await;
            let stored_seqs = seqs(&stored);
            // No holes: seqs are 1..=N.
            let holes = stored_seqs.iter().zip(1..).find(|(seq, n)| **seq != *n);
            assert_eq!(holes, None, "round {round}, {uid}: a hole");
            assert_kept(&acknowledged, uid, 1, &stored, round);
            // The next seq continues after everything stored.
            let next = server.publish(&[uid], json!("after")).await;
            let next = next[uid].as_u64().unwrap();
            assert_eq!(next, stored_seqs.len() as u64 + 1, "{uid}");
            acknowledged.insert((uid.to_string(), next), json!("after"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_event_and_never_reuses_a_seq() {
    // Sweeps of idle queues every 5 ms: the queue leaves memory between
    // requests and is reloaded, which must not cost an event or a seq.
    // Room for every event: this is about durability, not retention.
    let args = ["--trim-interval-ms", "5", "--queue-cap", "1000000"];
    let mut server = Server::start_with(&args).await;
    publish_kill_and_check(&mut server, &["dora"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_event_of_publishes_to_many_users() {
    // 40 recipients: one fan-out record per publish, expanded later; the
    // first user also gets single publishes in between.
    let users: Vec<String> = (0..40).map(|i| format!("fan{i}")).collect();
    let to: Vec<&str> = users.iter().map(String::as_str).collect();
    let args = ["--trim-interval-ms", "5", "--queue-cap", "1000000"];
    let mut server = Server::start_with(&args).await;
    publish_kill_and_check(&mut server, &to).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fan_out_that_retention_trims_loses_nothing_kept() {
    // 40 recipients, 30 events kept each (16 writers: at most 16 of them
    // in flight, not acknowledged), retention every 5 ms: the shared
    // records every recipient was trimmed past are dropped while the
    // writers go on; what is kept must read whole after kill -9, and what
    // retention dropped stays dropped.
    let users: Vec<String> = (0..40).map(|i| format!("trim{i}")).collect();
    let to: Vec<&str> = users.iter().map(String::as_str).collect();
    let args = ["--trim-interval-ms", "5", "--queue-cap", "30"];
    let mut server = Server::start_with(&args).await;
    let mut tokens = Vec::new();
    for uid in &to {
        tokens.push(server.token(uid).await);
    }
    // What retention had dropped of each user at the last restart.
    let mut dropped = vec![0; to.len()];
    let mut acknowledged = BTreeMap::new();
    for round in 0..3 {
        let writers = Writers::start(&server, &to, 16);
        // Killed once retention dropped more of every user than at the
        // last restart (a read from 0 starts with a gap up to there)...
        let trimmed_further = common::eventually(Duration::from_secs(60), || async {
            for (token, before) in tokens.iter().zip(&dropped) {
                let (_, page) = server.get("/v1/poll?cursor=0&limit=1", token).await;
                let first = &page["events"][0];
                if first["type"] != "gap" || first["data"]["to"].as_u64() <= Some(*before) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(trimmed_further, "round {round}: retention did not trim");
        // ... and one more publish made durable after it (so are the marks).
        server.publish(&to, json!("marks")).await;
        server.kill9();
        let got = writers.acknowledged().await;
        assert!(!got.is_empty(), "round {round}: nothing acknowledged");
        acknowledged.extend(got);
        server.restart().await;
        for (i, (uid, token)) in to.iter().zip(&tokens).enumerate() {
            let events = server.poll_all(token).await;
            // Events after the last gap (retention may trim while this
            // reads): consecutive seqs, each with its acknowledged data.
            let (gone, kept) = match events.iter().rposition(|e| e["type"] == "gap") {
                Some(i) => (events[i]["data"]["to"].as_u64().unwrap(), &events[i + 1..]),
                None => (0, &events[..]),
            };
            let kept_seqs = seqs(kept);
            let want: Vec<u64> = (gone + 1..=gone + kept.len() as u64).collect();
            assert_eq!(kept_seqs, want, "round {round}, {uid}: a hole");
            assert!(gone > dropped[i], "round {round}, {uid}: a trim was lost");
            dropped[i] = gone;
            let checked = assert_kept(&acknowledged, uid, gone + 1, kept, round);
            assert!(
                checked > 0,
                "round {round}, {uid}: nothing acknowledged kept"
            );
            let next = server.publish(&[uid], json!("after")).await;
            assert_eq!(next[uid], gone + kept.len() as u64 + 1, "{uid}");
        }
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
