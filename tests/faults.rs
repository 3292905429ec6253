//! Faults found when herald was attacked a second time, each shut and
//! proved over the real binary: a body that never arrives, a request framed
//! two ways, a hook that inflates a message (tests/hook.rs), a history read
//! that costs more than its page, a refused long-poll that acked, dead
//! peers that stay online, pipelined bytes behind a held request, a
//! WebSocket close that got no answer, and an API key that could never
//! match. The Redis ones (unknown outcomes, `/healthz`, a killed node's
//! users) are in tests/cluster_faults.rs.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Server, API_KEY, SECRET};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Everything `stream` sends until it closes (or `within` passes: then
/// `None`).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_idle_timeout_gets_408_and_a_close() {
    let server = Server::start_with(&["--idle-timeout-ms", "500"]).await;
    // Many of them at once: each is cut, so none can hold its slot.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
        let head = format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"to\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    for stream in &mut slow {
        let answer = read_to_close(stream, Duration::from_secs(5))
            .await
            .expect("the connection is closed");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Nothing was published, and the server serves on.
    let token = server.token("alice").await;
    assert!(server.poll(&token, 0).await.is_empty());
}

/// A request whose head says where its end is in two ways, then bob's
/// request; the server's answers until it closes.
async fn framed_two_ways(server: &Server, alice: &str, bob: &str, lengths: &str) -> String {
    let mut stream = TcpStream::connect(addr(server)).await.unwrap();
    let request = format!(
        "GET /v1/poll?cursor=0 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {alice}\r\n{lengths}\r\nGET /v1/poll?cursor=0 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {bob}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection is closed")
}

#[tokio::test]
async fn a_request_framed_two_ways_is_never_read_as_two_requests() {
    let server = Server::start().await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    server.publish(&["alice"], json!("for alice")).await;
    server.publish(&["bob"], json!("for bob")).await;
    // Conflicting lengths (read by the first, bob's request would have been
    // a second one), or a coding that is not chunked: 400 and a close.
    for lengths in [
        "Content-Length: 0\r\nContent-Length: 93\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ] {
        let answer = framed_two_ways(&server, &alice, &bob, lengths).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{lengths:?}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{lengths:?}: {answer}"
        );
        assert!(!answer.contains("for"), "{answer}");
    }
    // A length and a coding: read by the coding (RFC 9112 6.3), answered,
    // and the connection closed: bob's bytes are never a request.
    let answer = framed_two_ways(
        &server,
        &alice,
        &bob,
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!answer.contains("for bob"), "{answer}");
}

#[tokio::test]
async fn pipelining_more_than_a_head_behind_a_held_long_poll_ends_it() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    let held = format!(
        "GET /v1/longpoll?cursor=0&timeout=60 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(held.as_bytes()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    // 20 KB of further requests, then the client goes away: the hold is
    // released, not kept for its minute.
    let more = "GET /v1/poll HTTP/1.1\r\nHost: h\r\n\r\n".repeat(600);
    stream.write_all(more.as_bytes()).await.unwrap();
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 0.0
        })
        .await,
        "the long-poll is still held"
    );
}

#[tokio::test]
async fn a_websocket_close_from_the_client_is_answered_with_a_close_frame() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let mut ws = server.ws(&format!("token={token}")).await;
    ws.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return Ok(frame),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed without a Close frame".into()),
            }
        }
    })
    .await
    .expect("an answer in time");
    assert!(answer.is_ok(), "{answer:?}");
}

#[tokio::test]
async fn an_api_key_that_no_authorization_header_can_carry_refuses_to_start() {
    for key in [
        " ".repeat(16),
        format!("{API_KEY} "),
        format!("{API_KEY}\u{e9}x"),
    ] {
        let result = Server::try_start_raw(&["--secret", SECRET, "--api-key", &key]).await;
        let output = match result {
            Ok(_) => panic!("{key:?} started"),
            Err(output) => output,
        };
        assert!(output.contains("--api-key"), "{key:?}: {output}");
        assert_eq!(output.trim().lines().count(), 1, "{output}");
    }
}

/// Sends `count` messages of `size` bytes from `from` to `to`; their ids.
async fn converse(server: &Server, from: &str, to: &str, count: usize, size: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..count {
        let body = format!("{i:04}{}", "m".repeat(size));
        let (status, answer) = server
            .post_as(from, "/v1/messages", json!({"to": to, "body": body}))
            .await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["id"].as_u64().expect("an id"));
    }
    ids
}

#[tokio::test]
async fn a_history_page_is_bounded_by_its_limit_and_by_bytes_from_either_end() {
    let server = Server::start_with(&["--send-rate", "0", "--max-page-bytes", "100000"]).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let ids = converse(&server, &alice, "bob", 40, 30_000).await;
    let page_ids = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["id"].as_u64().expect("id"))
            .collect()
    };
    // The oldest after an id come first, however many are newer.
    let page = server
        .get_json(
            &format!("/v1/conversations/alice/messages?after={}&limit=2", ids[4]),
            &bob,
        )
        .await;
    assert_eq!(page_ids(&page), ids[5..7]);
    assert_eq!(page["more"], true);
    let page = server
        .get_json(
            &format!("/v1/conversations/alice/messages?after={}&limit=2", ids[38]),
            &bob,
        )
        .await;
    assert_eq!(page_ids(&page), ids[39..]);
    assert_eq!(page["more"], false);
    // 100 messages of 30 KB would be 3 MB: the page stops at 100 KB.
    for window in [format!("after={}", ids[0]), String::new()] {
        let page = server
            .get_json(
                &format!("/v1/conversations/alice/messages?{window}&limit=100"),
                &bob,
            )
            .await;
        let got = page_ids(&page);
        assert_eq!(got.len(), 3, "{window}: {got:?}");
        assert_eq!(page["more"], true);
        let expected = if window.is_empty() {
            &ids[37..]
        } else {
            &ids[1..4]
        };
        assert_eq!(got, expected, "{window}");
    }
    // Group history keeps the same byte bound.
    server.set_members("g", &["alice", "bob"]).await;
    for _ in 0..5 {
        let (status, _) = server
            .post_as(
                &alice,
                "/v1/groups/g/messages",
                json!({"body": "g".repeat(30_000)}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let group = server
        .get_json("/v1/groups/g/messages?limit=100", &bob)
        .await;
    assert_eq!(group["messages"].as_array().expect("messages").len(), 3);
}

/// `POST path` with the API key, `body`, and `key` as Idempotency-Key.
async fn backend_once(server: &Server, path: &str, key: &str, body: Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(path))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn backend_writes_retried_with_their_idempotency_key_change_nothing_more() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    let _online = server.open("/v1/sse", &alice).await;
    let writes = [
        (
            "/api/v1/publish",
            json!({"to": ["alice"], "data": "once"}),
            json!({"to": ["alice"], "data": "other"}),
        ),
        (
            "/api/v1/users/alice/counters",
            json!({"name": "unread", "delta": 5}),
            json!({"name": "unread", "delta": 6}),
        ),
        (
            "/api/v1/broadcast",
            json!({"body": "pushed once", "mode": "push"}),
            json!({"body": "other", "mode": "push"}),
        ),
        (
            "/api/v1/broadcast",
            json!({"body": "pulled once", "mode": "pull"}),
            json!({"body": "other", "mode": "pull"}),
        ),
    ];
    for (i, (path, body, other)) in writes.into_iter().enumerate() {
        let key = format!("key-{i}");
        let first = backend_once(&server, path, &key, body.clone()).await;
        assert!(first.0 == 200 || first.0 == 202, "{path}: {first:?}");
        // Each retry answers the same and does nothing more.
        for _ in 0..2 {
            assert_eq!(
                backend_once(&server, path, &key, body.clone()).await,
                first,
                "{path}"
            );
        }
        // The same key for something else is refused.
        let (status, refused) = backend_once(&server, path, &key, other).await;
        assert_eq!(
            (status, &refused["error"]),
            (409, &json!("idempotency_key_reused")),
            "{path}"
        );
    }
    let (status, refused) = backend_once(
        &server,
        "/api/v1/publish",
        &"k".repeat(65),
        json!({"to": ["alice"]}),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]),
        (400, &json!("bad_idempotency_key"))
    );
    // alice got one notice, one counter event and one push broadcast; the
    // total counted the delta once; one pull broadcast is kept.
    let wanted = |events: &[Value]| {
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        kinds == ["notice", "counter", "broadcast"]
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            wanted(&server.poll_all(&alice).await)
        })
        .await,
        "{:?}",
        server.poll_all(&alice).await
    );
    let counters = server.get_json("/v1/counters", &alice).await;
    assert_eq!(counters["counters"]["unread"], 5, "{counters}");
    let pulled = server.get_json("/v1/broadcasts?after=0", &alice).await;
    assert_eq!(
        pulled["broadcasts"].as_array().map(Vec::len),
        Some(1),
        "{pulled}"
    );
}
