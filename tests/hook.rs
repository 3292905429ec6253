//! The message hook (`--message-hook`) over the real binary, with a real
//! HTTP hook: it denies (the client gets 403 rejected with the reason and
//! the message is nowhere), rewrites (the new body is what is delivered and
//! kept), and a hook that does not answer in time fails closed (503, nothing
//! sent) or, when asked, open.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Server;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A moderation backend on a free port: bodies with "darn" are denied,
/// "shout" is rewritten to upper case, "inflate" to 900 KB, "slow" answers after 3 s. Counts
/// the questions and keeps the last one.
struct Hook {
    url: String,
    asked: Arc<AtomicUsize>,
    last: Arc<std::sync::Mutex<Value>>,
}

async fn start_hook() -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/moderate", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Value::Null));
    let (counter, keep) = (asked.clone(), last.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (counter, keep) = (counter.clone(), keep.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (counter, keep) = (counter.clone(), keep.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let question: Value = serde_json::from_slice(&body).unwrap();
                        counter.fetch_add(1, Ordering::SeqCst);
                        *keep.lock().unwrap() = question.clone();
                        let text = question["body"].to_string();
                        let verdict = if text.contains("darn") {
                            json!({"allow": false, "reason": "language"})
                        } else if text.contains("inflate") {
                            json!({"allow": true, "body": "x".repeat(900_000)})
                        } else if text.contains("shout") {
                            json!({"allow": true, "body": question["body"].as_str().unwrap_or("").to_uppercase()})
                        } else {
                            if text.contains("slow") {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                            }
                            json!({"allow": true})
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                            verdict.to_string(),
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Hook { url, asked, last }
}

async fn send(server: &Server, token: &str, to: &str, body: Value) -> (u16, Value) {
    server
        .post_as(token, "/v1/messages", json!({"to": to, "body": body}))
        .await
}

#[tokio::test]
async fn the_hook_denies_rewrites_and_a_denied_message_is_nowhere() {
    let hook = start_hook().await;
    let server = Server::start_with(&["--message-hook", &hook.url, "--send-rate", "0"]).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);

    let (status, body) = send(&server, &alice, "bob", json!("well, darn")).await;
    assert_eq!(
        (status, &body["error"], &body["message"]),
        (403, &json!("rejected"), &json!("language"))
    );
    assert_eq!(
        *hook.last.lock().unwrap(),
        json!({"kind": "direct", "from": "alice", "to": "bob", "body": "well, darn", "cid": null})
    );
    let (status, _) = send(&server, &alice, "bob", json!("please shout this")).await;
    assert_eq!(status, 200);
    let (status, _) = send(&server, &alice, "bob", json!("fine")).await;
    assert_eq!(status, 200);
    // bob's queue and the history hold the rewritten and the plain one only.
    let inbox: Vec<Value> = server
        .poll_all(&bob)
        .await
        .into_iter()
        .map(|e| e["data"]["body"].clone())
        .collect();
    assert_eq!(inbox, [json!("PLEASE SHOUT THIS"), json!("fine")]);
    let history = server
        .get_json("/v1/conversations/alice/messages", &bob)
        .await;
    let kept: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(kept, [&json!("PLEASE SHOUT THIS"), &json!("fine")]);

    // Group messages and WebSocket sends go by the hook too.
    server.set_members("g", &["alice", "bob"]).await;
    let (status, body) = server
        .post_as(&alice, "/v1/groups/g/messages", json!({"body": "darn it"}))
        .await;
    assert_eq!((status, &body["error"]), (403, &json!("rejected")));
    assert_eq!(hook.last.lock().unwrap()["gid"], "g");
    let mut ws = server.ws(&format!("token={alice}")).await;
    ws.send(Message::text(
        json!({"op": "send", "id": 1, "to": "bob", "body": "darn"}).to_string(),
    ))
    .await
    .unwrap();
    let reply = loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("socket ended")
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["op"] == "reply" {
            break frame;
        }
    };
    assert_eq!(
        (&reply["ok"], &reply["error"]),
        (&json!(false), &json!("rejected"))
    );
    let history = server.get_json("/v1/groups/g/messages", &bob).await;
    assert_eq!(
        history["messages"],
        json!([]),
        "a denied group message is not in the log"
    );
    assert_eq!(
        server.poll_all(&bob).await.len(),
        2,
        "nothing denied reached bob"
    );
    assert_eq!(hook.asked.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_hook_that_does_not_answer_fails_closed_or_open_as_configured() {
    let hook = start_hook().await;
    let closed = Server::start_with(&[
        "--message-hook",
        &hook.url,
        "--message-hook-timeout-ms",
        "300",
    ])
    .await;
    let (alice, bob) = (closed.token("alice").await, closed.token("bob").await);
    let started = std::time::Instant::now();
    let (status, body) = send(&closed, &alice, "bob", json!("slow one")).await;
    assert_eq!(
        (status, &body["error"]),
        (503, &json!("hook_unavailable")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "it did not wait for the hook"
    );
    assert_eq!(closed.poll_all(&bob).await.len(), 0, "nothing was sent");

    let open = Server::start_with(&[
        "--message-hook",
        &hook.url,
        "--message-hook-timeout-ms",
        "300",
        "--message-hook-failure",
        "allow",
    ])
    .await;
    let (alice, bob) = (open.token("alice").await, open.token("bob").await);
    let (status, _) = send(&open, &alice, "bob", json!("slow one")).await;
    assert_eq!(status, 200);
    assert_eq!(open.poll_all(&bob).await[0]["data"]["body"], "slow one");

    // A hook nobody listens on fails the same way.
    let gone = Server::start_with(&["--message-hook", "http://127.0.0.1:9/none"]).await;
    let alice = gone.token("alice").await;
    let (status, body) = send(&gone, &alice, "bob", json!("hi")).await;
    assert_eq!((status, &body["error"]), (503, &json!("hook_unavailable")));
}

#[tokio::test]
async fn backend_settings_that_cannot_work_refuse_to_start() {
    let refused = [
        (
            &["--message-hook", "https://backend.example/hook"][..],
            "--message-hook must be an http:// URL",
        ),
        (
            &["--webhook-url", "https://backend.example/feed"],
            "--webhook-url must be an http:// URL",
        ),
        (
            &["--webhook-url", "backend.example:80"],
            "--webhook-url must be an http:// URL",
        ),
        (&["--feed-presence"], "--feed-presence records presence"),
    ];
    for (args, reason) in refused {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(common::herald_bin())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_rewrite_larger_than_a_client_may_send_is_refused_and_nothing_is_stored() {
    let hook = start_hook().await;
    let server = Server::start_with(&["--message-hook", &hook.url, "--send-rate", "0"]).await;
    let (alice, bob) = (server.token("alice").await, server.token("bob").await);
    // A body the client could not send itself (over --max-body, 64 KiB)
    // does not get in through the hook, whichever way it is sent.
    let (status, body) = send(&server, &alice, "bob", json!("inflate me")).await;
    assert_eq!(
        (status, &body["error"]),
        (502, &json!("hook_invalid")),
        "{body}"
    );
    server.set_members("g", &["alice", "bob"]).await;
    let (status, body) = server
        .post_as(
            &alice,
            "/v1/groups/g/messages",
            json!({"body": "inflate us"}),
        )
        .await;
    assert_eq!(
        (status, &body["error"]),
        (502, &json!("hook_invalid")),
        "{body}"
    );
    assert_eq!(hook.asked.load(Ordering::SeqCst), 2);
    // Nothing was stored: no event, no history, no group message.
    assert!(server.poll_all(&bob).await.is_empty());
    let history = server
        .get_json("/v1/conversations/alice/messages", &bob)
        .await;
    assert_eq!(history["messages"], json!([]));
    let group = server.get_json("/v1/groups/g/messages", &bob).await;
    assert_eq!(group["messages"], json!([]));
    // A rewrite within the limit still goes through.
    let (status, _) = send(&server, &alice, "bob", json!("please shout")).await;
    assert_eq!(status, 200);
}
