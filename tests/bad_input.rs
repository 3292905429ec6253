//! Bad input gets a clear JSON error with a fitting status and changes nothing.

mod common;

use common::{Server, API_KEY, SECRET};
use serde_json::{json, Value};

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "expected {status} {code}"
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

async fn publish_raw(server: &Server, body: &str) -> reqwest::Response {
    server
        .http
        .post(server.url("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_publish_bodies_are_rejected_and_append_nothing() {
    let server = Server::start().await;
    let cases: &[(&str, u16, &str)] = &[
        ("{not json", 400, "bad_json"),
        ("", 400, "bad_json"),
        (r#"{"to": "alice"}"#, 400, "bad_json"),
        (r#"{"to": [1, 2]}"#, 400, "bad_json"),
        (r#"{"to": ["al ice"]}"#, 400, "bad_json"),
        (r#"{"to": ["../etc"]}"#, 400, "bad_json"),
        (r#"{"to": []}"#, 400, "bad_recipients"),
        (r#"{"to": ["alice"], "type": "gap"}"#, 400, "bad_type"),
        (r#"{"to": ["alice"], "type": "Bad Type"}"#, 400, "bad_type"),
        (r#"{"to": ["alice"], "extra": 1}"#, 400, "bad_json"),
        (r#"[1,2,3]"#, 400, "bad_json"),
    ];
    for (body, status, code) in cases {
        expect_error(publish_raw(&server, body).await, *status, code).await;
    }
    let big = format!(r#"{{"to":["alice"],"data":"{}"}}"#, "x".repeat(70 * 1024));
    expect_error(publish_raw(&server, &big).await, 413, "body_too_large").await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let response = server
        .call(
            "POST",
            "/api/v1/publish",
            Some(API_KEY),
            Some(json!({"to": too_many})),
        )
        .await;
    expect_error(response, 413, "body_too_large").await;
    let huge = format!(r#"{{"to":["alice"],"data":"{}"}}"#, "x".repeat(2 << 20));
    match server
        .http
        .post(server.url("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .body(huge)
        .send()
        .await
    {
        // Far over the limit the server answers at once and closes; the
        // client may see the 413 or a reset while it is still writing.
        Ok(response) => assert_eq!(response.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }

    assert_eq!(server.metric("herald_appends_total").await, 0.0);
    assert!(server
        .poll(&server.token("alice").await, 0)
        .await
        .is_empty());
}

#[tokio::test]
async fn too_many_recipients_is_400() {
    let server = Server::start_with(&["--max-body", "1000000"]).await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("u{i}")).collect();
    let response = server
        .backend_post("/api/v1/publish", json!({ "to": too_many }))
        .await;
    expect_error(response, 400, "bad_recipients").await;
    assert_eq!(server.metric("herald_appends_total").await, 0.0);
}

#[tokio::test]
async fn an_oversized_body_without_content_length_is_cut_off() {
    let server = Server::start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = server
        .http
        .post(server.url("/api/v1/publish"))
        .bearer_auth(API_KEY)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "body_too_large").await;
}

#[tokio::test]
async fn bad_cursors_limits_and_timeouts_are_400() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let cases = [
        ("/v1/poll?cursor=abc", "bad_cursor"),
        ("/v1/poll?cursor=-1", "bad_cursor"),
        ("/v1/poll?cursor=1.5", "bad_cursor"),
        ("/v1/poll?cursor=", "bad_cursor"),
        ("/v1/poll?cursor=99999999999999999999999", "bad_cursor"),
        ("/v1/poll?limit=0", "bad_limit"),
        ("/v1/poll?limit=1001", "bad_limit"),
        ("/v1/longpoll?cursor=x", "bad_cursor"),
        ("/v1/longpoll?timeout=0", "bad_timeout"),
        ("/v1/longpoll?timeout=111", "bad_timeout"),
        ("/v1/longpoll?timeout=ten", "bad_timeout"),
    ];
    for (path, code) in cases {
        let response = server.call("GET", path, Some(&token), None).await;
        expect_error(response, 400, code).await;
    }
    // Nothing was published: the head a client should resume from is 0.
    let response = server.open("/v1/poll?cursor=5", &token).await;
    let body = expect_error(response, 409, "cursor_ahead").await;
    assert_eq!(body["head"], 0);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let response = server.open("/v1/nope", &token).await;
    expect_error(response, 404, "not_found").await;
    let response = server.call("GET", "/api/v1/nope", None, None).await;
    expect_error(response, 404, "not_found").await;
    let response = server.call("GET", "/no/such/file.html", None, None).await;
    expect_error(response, 404, "not_found").await;
    let response = server.call("GET", "/../Cargo.toml", None, None).await;
    assert_eq!(response.status(), 404);
    let response = server.call("GET", "/%2e%2e/Cargo.toml", None, None).await;
    assert_eq!(response.status(), 404);

    let response = server.call("POST", "/v1/poll", Some(&token), None).await;
    assert_eq!(response.headers()["allow"], "GET");
    expect_error(response, 405, "method_not_allowed").await;
    let response = server
        .call("GET", "/api/v1/publish", Some(API_KEY), None)
        .await;
    assert_eq!(response.headers()["allow"], "POST");
    expect_error(response, 405, "method_not_allowed").await;
    let response = server.http.delete(server.url("/")).send().await.unwrap();
    expect_error(response, 405, "method_not_allowed").await;
}

fn token_signed(secret: &str, sub: &str, exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_are_401() {
    let server = Server::start().await;
    let response = server.call("GET", "/v1/poll", None, None).await;
    expect_error(response, 401, "unauthorized").await;
    let bad_tokens = [
        "garbage".to_owned(),
        token_signed("another-secret", "alice", now_s() + 3600),
        token_signed(SECRET, "alice", now_s() - 10),
        token_signed(SECRET, "bad uid!", now_s() + 3600),
    ];
    for token in &bad_tokens {
        let response = server.call("GET", "/v1/poll", Some(token), None).await;
        expect_error(response, 401, "unauthorized").await;
        let response = server
            .call("GET", &format!("/v1/longpoll?token={token}"), None, None)
            .await;
        expect_error(response, 401, "unauthorized").await;
    }
    // A valid token in the query string works (EventSource cannot send headers).
    let good = token_signed(SECRET, "alice", now_s() + 3600);
    let response = server
        .call("GET", &format!("/v1/poll?token={good}"), None, None)
        .await;
    assert_eq!(response.status(), 200);
    // A token only grants its own uid: alice's token reads alice's queue.
    server.publish(&["bob"], json!("for bob")).await;
    assert!(server.poll(&good, 0).await.is_empty());
}

#[tokio::test]
async fn backend_routes_need_the_api_key() {
    let server = Server::start().await;
    for key in [None, Some("wrong-key"), Some(SECRET)] {
        for path in ["/api/v1/publish", "/api/v1/tokens"] {
            let mut request = server
                .http
                .post(server.url(path))
                .json(&json!({"uid": "alice", "to": ["alice"]}));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            expect_error(request.send().await.unwrap(), 401, "unauthorized").await;
        }
        let mut request = server.http.get(server.url("/metrics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        expect_error(request.send().await.unwrap(), 401, "unauthorized").await;
    }
    // A client token is not an API key.
    let token = server.token("alice").await;
    let response = server
        .call(
            "POST",
            "/api/v1/publish",
            Some(&token),
            Some(json!({"to": ["alice"]})),
        )
        .await;
    expect_error(response, 401, "unauthorized").await;
    for (body, code) in [
        (json!({"uid": "alice", "ttl_s": 0}), "bad_ttl"),
        (json!({"uid": "alice", "ttl_s": 99_999_999}), "bad_ttl"),
        (json!({"uid": "a/b"}), "bad_json"),
        (json!({"ttl_s": 10}), "bad_json"),
    ] {
        expect_error(server.backend_post("/api/v1/tokens", body).await, 400, code).await;
    }
    assert_eq!(server.metric("herald_appends_total").await, 0.0);
}

#[tokio::test]
async fn demo_login_exists_only_in_demo_mode() {
    let server = Server::start().await;
    let response = server
        .call(
            "POST",
            "/v1/demo/login",
            None,
            Some(json!({"uid": "alice"})),
        )
        .await;
    expect_error(response, 404, "not_found").await;

    let demo = Server::try_start_raw(&[])
        .await
        .expect("demo mode starts on loopback");
    assert!(demo.output.lock().unwrap().contains("demo mode"));
    let response = demo
        .call(
            "POST",
            "/v1/demo/login",
            None,
            Some(json!({"uid": "alice"})),
        )
        .await;
    assert_eq!(response.status(), 200);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(demo.get("/v1/poll", &token).await.0, 200);
    let response = demo
        .call(
            "POST",
            "/v1/demo/login",
            None,
            Some(json!({"uid": "<script>"})),
        )
        .await;
    expect_error(response, 400, "bad_json").await;
}

#[tokio::test]
async fn without_a_secret_herald_refuses_a_public_address() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    let dir = tempfile::tempdir().unwrap();
    let output = command
        .args(["--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .env_remove("HERALD_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("demo mode is only allowed on a loopback address"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_flooding_sender_gets_429_and_its_excess_is_not_sent() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    // 2 per second, bursts of 4.
    let server = Server::start_with(&["--send-rate", "2"]).await;
    let alice = server.token("alice").await;
    let send = |token: String, to: &'static str| {
        let request = server
            .http
            .post(server.url("/v1/messages"))
            .bearer_auth(token)
            .json(&json!({"to": to, "body": "hi"}));
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }
    };
    for _ in 0..4 {
        assert_eq!(send(alice.clone(), "bob").await.0, 200);
    }
    let (status, retry_after, body) = send(alice.clone(), "bob").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_requests");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");

    // The same bucket over WebSocket (an error reply, the socket stays
    // open) and for status changes.
    let mut ws = server.ws(&format!("token={alice}")).await;
    ws.send(Message::text(
        json!({"op": "send", "id": 7, "to": "bob", "body": "hi"}).to_string(),
    ))
    .await
    .unwrap();
    let reply = loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a reply")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        if value["op"] == "reply" {
            break value;
        }
    };
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["error"], "too_many_requests");
    let status = server
        .call(
            "PUT",
            "/v1/status",
            Some(&alice),
            Some(json!({"status": "busy"})),
        )
        .await
        .status();
    assert_eq!(status, 429);
    // Each refusal is counted, whichever way it came.
    assert_eq!(server.metric("herald_send_limited_total").await, 3.0);

    // Nothing past the limit reached bob; other senders are not limited.
    let bob = server.token("bob").await;
    assert_eq!(server.poll_all(&bob).await.len(), 4);
    let carol = server.token("carol").await;
    assert_eq!(send(carol, "bob").await.0, 200);
    // After the wait it was told, alice may send again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after.unwrap())).await;
    assert_eq!(send(alice, "bob").await.0, 200);
    assert_eq!(server.poll_all(&bob).await.len(), 6);
}
