//! Typing signals over the real server: handed to the connections open at
//! that moment on every streaming transport and to a held long-poll, never
//! stored (no seq taken, nothing replayed on reconnect), refused clearly.

mod common;

use std::time::Duration;

use common::clients::{iframe_calls, sse_events};
use common::{seqs, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The next JSON text frame of `ws` that has no seq and is not a `hello`
/// or `hb` (a signal), within 5 s.
async fn next_signal(ws: &mut common::WebSocket) -> Value {
    let wait = async {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame.get("seq").is_none()
                && !["hello", "hb"].contains(&frame["type"].as_str().unwrap_or(""))
            {
                return frame;
            }
        }
        panic!("the socket closed");
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a signal within 5 s")
}

/// Reads `stream` until `pick` finds something in what came so far.
async fn read_until<T>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    mut pick: impl FnMut(&mut String) -> Option<T>,
) -> T {
    let mut buf = String::new();
    let wait = async {
        loop {
            if let Some(found) = pick(&mut buf) {
                return found;
            }
            let chunk = stream.next().await.expect("more").expect("a chunk");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("within 5 s")
}

#[tokio::test]
async fn a_typing_signal_reaches_every_open_transport_and_takes_no_seq() {
    let server = Server::start().await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    server.publish(&["bob"], json!("first")).await;

    let mut ws = server.ws(&format!("cursor=1&token={bob}")).await;
    let sse = server.open("/v1/sse?cursor=1", &bob).await;
    assert_eq!(sse.status(), 200);
    let mut sse = sse.bytes_stream();
    let iframe = server.open("/v1/iframe?cursor=1&cb=cb", &bob).await;
    let mut iframe = iframe.bytes_stream();
    let held = {
        let server_url = server.url("/v1/longpoll?cursor=1&timeout=20");
        let bob = bob.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = common::client()
                .get(server_url)
                .bearer_auth(bob)
                .send()
                .await
                .unwrap();
            (response.json::<Value>().await.unwrap(), started.elapsed())
        })
    };
    let holding = common::eventually(Duration::from_secs(5), || async {
        server.metric("herald_longpolls_held").await >= 1.0
    })
    .await;
    assert!(holding, "the long-poll is held");

    let (status, body) = server
        .post_as(&alice, "/v1/typing", json!({"to": "bob"}))
        .await;
    assert_eq!(status, 204, "{body}");
    let expected = json!({"type": "typing", "from": "alice", "to": "bob"});

    assert_eq!(next_signal(&mut ws).await, expected, "WebSocket");
    let from_sse = read_until(&mut sse, |buf| {
        sse_events(buf).into_iter().find(|e| e["type"] == "typing")
    })
    .await;
    assert_eq!(from_sse, expected, "SSE");
    let from_iframe = read_until(&mut iframe, |buf| {
        iframe_calls(buf, "cb")
            .into_iter()
            .find(|e| e["type"] == "typing")
    })
    .await;
    assert_eq!(from_iframe, expected, "iframe");
    let (answer, took) = held.await.unwrap();
    assert!(took < Duration::from_secs(10), "answered by the signal");
    assert_eq!(answer["signals"], json!([expected]), "long-poll: {answer}");
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["cursor"], 1, "the cursor did not move");

    // No seq taken: the next event is 2; a reconnect gets events only.
    server.publish(&["bob"], json!("second")).await;
    let all = server.poll_all(&bob).await;
    assert_eq!(seqs(&all), vec![1, 2]);
    assert!(all.iter().all(|e| e["type"] != "typing"));
    let mut again = server.ws(&format!("cursor=0&token={bob}")).await;
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let Some(Ok(Message::Text(text))) = again.next().await else {
            panic!("closed");
        };
        frames.push(serde_json::from_str::<Value>(text.as_str()).unwrap());
    }
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["hello", "notice", "notice"]);
    assert_eq!(server.metric("herald_signals_sent_total").await, 1.0);
}

#[tokio::test]
async fn a_group_typing_signal_reaches_the_other_members_over_the_websocket_op() {
    let server = Server::start().await;
    server.set_members("team", &["alice", "bob", "carol"]).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    let mut alice_ws = server.ws(&format!("token={alice}")).await;
    let mut bob_ws = server.ws(&format!("token={bob}")).await;
    use futures::SinkExt;
    alice_ws
        .send(Message::text(r#"{"op":"typing","gid":"team","id":7}"#))
        .await
        .unwrap();
    let reply = next_signal(&mut alice_ws).await;
    assert_eq!(reply["op"], "reply");
    assert_eq!(
        (reply["id"].clone(), reply["ok"].clone()),
        (json!(7), json!(true))
    );
    assert_eq!(
        next_signal(&mut bob_ws).await,
        json!({"type": "typing", "from": "alice", "gid": "team"})
    );
    // The sender's own connection does not hear it.
    let own = tokio::time::timeout(Duration::from_millis(300), next_signal(&mut alice_ws)).await;
    assert!(own.is_err(), "alice got her own signal: {own:?}");
}

#[tokio::test]
async fn bad_typing_signals_are_refused_and_change_nothing() {
    let server = Server::start_with(&["--typing-rate", "2"]).await;
    server.set_members("team", &["alice", "bob"]).await;
    let crowd: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let mut crowd: Vec<&str> = crowd.iter().map(String::as_str).collect();
    crowd.push("alice");
    server.set_members("crowd", &crowd).await;
    let alice = server.token("alice").await;
    let carol = server.token("carol").await;
    for (token, body, status, code) in [
        (&alice, json!({}), 400, "bad_target"),
        (
            &alice,
            json!({"to": "bob", "gid": "team"}),
            400,
            "bad_target",
        ),
        (&alice, json!({"to": "alice"}), 400, "bad_to"),
        (&alice, json!({"to": "bob", "extra": 1}), 400, "bad_json"),
        (&alice, json!({"to": "no spaces"}), 400, "bad_json"),
        (&alice, json!({"gid": "nope"}), 404, "not_found"),
        (&alice, json!({"gid": "crowd"}), 400, "group_too_large"),
        (&carol, json!({"gid": "team"}), 403, "forbidden"),
        (
            &"not-a-token".to_owned(),
            json!({"to": "bob"}),
            401,
            "unauthorized",
        ),
    ] {
        let (got, answer) = server.post_as(token, "/v1/typing", body.clone()).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    // A burst past the budget (2/s, bursts of 4) gets 429 with Retry-After.
    let mut refused = None;
    for _ in 0..12 {
        let response = server
            .call(
                "POST",
                "/v1/typing",
                Some(&alice),
                Some(json!({"to": "bob"})),
            )
            .await;
        if response.status() == 429 {
            refused = Some(
                response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
            break;
        }
        assert_eq!(response.status(), 204);
    }
    assert!(
        refused.is_some_and(|r| r.parse::<u64>().unwrap() >= 1),
        "a 429 with Retry-After"
    );
    assert!(server.metric("herald_signals_limited_total").await >= 1.0);
    // Nothing stored anywhere.
    let bob = server.token("bob").await;
    assert!(server.poll_all(&bob).await.is_empty());
}
