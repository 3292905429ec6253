//! The webhook (`--webhook-url`) over the real binary, with a real HTTP
//! receiver that fails its first three `POST`s: it still gets every feed
//! event, in order, identified by seq, signed with the API key, across a
//! kill -9 of herald; message delivery to users never waits for it.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Server, API_KEY};
use hmac::Mac;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// One `POST` the receiver got: its answer, its `Herald-Feed-Cursor`, its
/// signature check and its events.
struct Delivery {
    status: u16,
    cursor: u64,
    partition: u32,
    signed: bool,
    events: Vec<Value>,
    at: std::time::Instant,
}

/// A backend on a free port that answers `fail` to its first `failures`
/// `POST`s (a 503 with `Retry-After: 2`) and 200 after, keeping every one.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
}

fn signature(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(API_KEY.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn start_receiver(failures: usize, fail: u16) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/herald-feed", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let keep = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let keep = keep.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let (cursor, signed) =
                            (header("herald-feed-cursor"), header("herald-signature"));
                        let partition = header("herald-feed-partition");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let page: Value = serde_json::from_slice(&body).unwrap();
                        let mut got = keep.lock().unwrap();
                        let status = if got.len() < failures { fail } else { 200 };
                        got.push(Delivery {
                            status,
                            cursor: cursor.parse().unwrap_or(0),
                            partition: partition.parse().unwrap_or(u32::MAX),
                            signed: signed == signature(&body),
                            events: page["events"].as_array().unwrap().clone(),
                            at: std::time::Instant::now(),
                        });
                        let mut answer = Response::new(Full::new(Bytes::from_static(b"{}")));
                        *answer.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        if status == 503 {
                            answer.headers_mut().insert(
                                "retry-after",
                                hyper::header::HeaderValue::from_static("2"),
                            );
                        }
                        Ok::<_, Infallible>(answer)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Receiver { url, got }
}

/// Every event of the feed, read with the pull API (which acks nothing
/// while the webhook is on).
async fn whole_feed(server: &Server) -> Vec<Value> {
    let page = server
        .get_json("/api/v1/feed?cursor=0&limit=1000", API_KEY)
        .await;
    page["events"].as_array().unwrap().clone()
}

fn seq(event: &Value) -> u64 {
    event["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_every_event_in_order_by_seq_across_kill_9() {
    let receiver = start_receiver(3, 500).await;
    let mut server =
        Server::start_with(&["--webhook-url", &receiver.url, "--send-rate", "0"]).await;
    server.set_members("g", &["alice", "bob"]).await;
    for round in 0..2 {
        let (alice, bob) = (server.token("alice").await, server.token("bob").await);
        for n in 0..8 {
            let body = json!({"to": "bob", "body": format!("dm {round}.{n}")});
            let (status, _) = server.post_as(&alice, "/v1/messages", body).await;
            assert_eq!(status, 200);
        }
        // Delivery to users does not wait for the failing backend.
        let events = server.poll(&bob, 0).await;
        assert_eq!(
            events.iter().filter(|e| e["type"] == "msg").count(),
            8 * (round + 1)
        );
        let (status, _) = server
            .post_as(&bob, "/v1/groups/g/messages", json!({"body": "g"}))
            .await;
        assert_eq!(status, 200);
        let last = seq(whole_feed(&server).await.last().unwrap());
        let delivered = common::eventually(Duration::from_secs(20), || async {
            let got = receiver.got.lock().unwrap();
            got.iter().any(|d| d.status == 200 && d.cursor >= last)
        })
        .await;
        assert!(delivered, "the webhook caught up with seq {last}");
        if round == 0 {
            server.kill9();
            server.restart().await;
        }
    }
    let feed = whole_feed(&server).await;
    assert_eq!(feed.len(), 2 * 9, "16 direct messages and 2 group posts");
    let got = receiver.got.lock().unwrap();
    // The three refusals were the same first batch, retried.
    assert!(got[..3]
        .iter()
        .all(|d| d.status == 500 && seq(&d.events[0]) == 1));
    assert_eq!(seq(&got[3].events[0]), 1, "retried from where it failed");
    assert!(
        got.iter().all(|d| d.signed),
        "every POST signed with the API key"
    );
    assert!(got
        .iter()
        .all(|d| d.cursor == seq(d.events.last().unwrap())));
    // What the backend accepted, deduplicated by seq as it is told to, is
    // the feed: every event once, in order. A batch may come again only
    // whole, after the kill -9 (at least once).
    let mut kept: Vec<Value> = Vec::new();
    for delivery in got.iter().filter(|d| d.status == 200) {
        let next = kept.last().map_or(1, |e| seq(e) + 1);
        assert!(seq(&delivery.events[0]) <= next, "no hole");
        kept.extend(delivery.events.iter().filter(|e| seq(e) >= next).cloned());
    }
    assert_eq!(kept, feed);
    // Group posts arrive expanded, like the pull feed gives them.
    let group = kept.iter().find(|e| e["type"] == "group_msg").unwrap();
    assert_eq!(group["data"]["body"], "g");
}

#[tokio::test]
async fn a_receiver_that_asks_to_wait_is_not_asked_again_sooner() {
    let receiver = start_receiver(1, 503).await;
    let server = Server::start_with(&["--webhook-url", &receiver.url]).await;
    let alice = server.token("alice").await;
    let (status, _) = server
        .post_as(&alice, "/v1/messages", json!({"to": "bob", "body": "hi"}))
        .await;
    assert_eq!(status, 200);
    let delivered = common::eventually(Duration::from_secs(10), || async {
        receiver.got.lock().unwrap().len() == 2
    })
    .await;
    assert!(delivered);
    {
        let got = receiver.got.lock().unwrap();
        assert!(
            got[1].at - got[0].at >= Duration::from_secs(2),
            "Retry-After: 2 waited out"
        );
        assert_eq!(got[1].events, got[0].events);
    }
    // The receiver has the second POST before herald has its answer: wait
    // for herald to count it.
    let counted = common::eventually(Duration::from_secs(10), || async {
        server.metric("herald_webhook_delivered_total").await == 1.0
    })
    .await;
    assert!(counted, "the delivery is counted once");
    assert_eq!(server.metric("herald_webhook_failed_total").await, 1.0);
}

#[tokio::test]
async fn a_cluster_posts_the_feed_once_in_order_whichever_node_took_the_message() {
    let redis = common::redis::Redis::start();
    let receiver = start_receiver(0, 500).await;
    let args = ["--webhook-url", &receiver.url, "--send-rate", "0"];
    let nodes = common::redis::nodes(&redis, 3, &args).await;
    let ann = nodes[0].token("ann").await;
    for n in 0..12 {
        let node = &nodes[n % 3];
        let body = json!({"to": "ben", "body": n});
        let (status, _) = node.post_as(&ann, "/v1/messages", body).await;
        assert_eq!(status, 200);
    }
    let feed = whole_feed(&nodes[2]).await;
    assert_eq!(feed.len(), 12);
    let caught_up = common::eventually(Duration::from_secs(20), || async {
        let got = receiver.got.lock().unwrap();
        got.iter().map(|d| d.events.len()).sum::<usize>() >= 12
    })
    .await;
    assert!(caught_up);
    // Give a second poster, if there were one, time to post again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.got.lock().unwrap();
    let posted: Vec<Value> = got.iter().flat_map(|d| d.events.clone()).collect();
    assert_eq!(posted, feed, "each event once, in feed order, from 3 nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_feed_partition_is_pushed_in_order_on_its_own() {
    let receiver = start_receiver(0, 200).await;
    let server = Server::start_with(&[
        "--webhook-url",
        &receiver.url,
        "--feed-partitions",
        "3",
        "--send-rate",
        "0",
    ])
    .await;
    common::clients::converse(std::slice::from_ref(&server.base), 30, 2).await;
    // Every message pushed once, each conversation in one partition, in
    // order; each partition's batches in seq order.
    let done = common::eventually(Duration::from_secs(20), || async {
        let got = receiver.got.lock().unwrap();
        got.iter().map(|d| d.events.len()).sum::<usize>() >= 60
    })
    .await;
    assert!(done, "not every message was pushed");
    let got = receiver.got.lock().unwrap();
    let mut last = [0u64; 3];
    let mut homes = std::collections::BTreeMap::new();
    let mut ns: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for delivery in got.iter() {
        assert!(delivery.signed);
        let p = delivery.partition as usize;
        assert!(p < 3, "partition header {}", delivery.partition);
        for event in &delivery.events {
            assert!(seq(event) > last[p], "partition {p} out of order");
            last[p] = seq(event);
            let body = &event["data"]["body"];
            let conv = body["conv"].as_u64().unwrap();
            assert_eq!(
                *homes.entry(conv).or_insert(p),
                p,
                "conversation {conv} split"
            );
            ns.entry(conv)
                .or_default()
                .push(body["n"].as_u64().unwrap());
        }
        assert_eq!(delivery.cursor, last[p]);
    }
    assert!(
        last.iter().all(|&l| l > 0),
        "a partition was never pushed: {last:?}"
    );
    assert_eq!(ns.len(), 30);
    assert!(ns.values().all(|n| n == &vec![0, 1]), "{ns:?}");
}
