//! The streaming transports (SSE, iframe, WebSocket) over the same queue as
//! the polls: same events, same order, exactly once, resumable.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::{follow_every_transport, iframe_calls, sse_events, TRANSPORTS};
use common::{eventually, seqs, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The queue events among `events` (not a stream's `hello`).
fn queue(events: Vec<Value>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|e| e.get("seq").is_some())
        .collect()
}

/// Reads from a streaming response until `done` says so or 10 s pass.
async fn read_stream(response: reqwest::Response, mut done: impl FnMut(&str) -> bool) -> String {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if done(&text) {
                return;
            }
        }
    })
    .await;
    text
}

#[tokio::test]
async fn sse_replays_the_backlog_then_delivers_live_events() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!(1)).await;
    server.publish(&["alice"], json!(2)).await;
    let response = server.open("/v1/sse?cursor=0", &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let publisher = {
        let http = server.http.clone();
        let url = server.url("/api/v1/publish");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            http.post(url)
                .bearer_auth(common::API_KEY)
                .json(&json!({"to": ["alice"], "data": 3}))
                .send()
                .await
                .unwrap();
        })
    };
    let text = read_stream(response, |t| t.contains("id: 3:")).await;
    publisher.await.unwrap();
    assert!(text.starts_with("retry: "), "{text}");
    let mut buf = text.clone();
    let events = sse_events(&mut buf);
    // The stream says `ready` at once, with its heartbeat interval, then
    // its epoch with the first page; every id is `seq:epoch`.
    assert_eq!(events[0], json!({"type": "ready", "heartbeat_ms": 15000}));
    assert_eq!(events[1]["type"], "hello");
    let epoch = events[1]["epoch"].as_str().expect("an epoch");
    assert!(
        text.contains(&format!("id: 1:{epoch}\nevent: notice\ndata: {{\"seq\":1,")),
        "{text}"
    );
    assert_eq!(seqs(&queue(events)), vec![1, 2, 3]);
}

#[tokio::test]
async fn sse_resumes_after_last_event_id() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    for i in 1..=4 {
        server.publish(&["alice"], json!(i)).await;
    }
    // EventSource reconnects to the same URL with Last-Event-ID: it wins.
    let response = server
        .http
        .get(server.url("/v1/sse?cursor=0"))
        .bearer_auth(&token)
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let mut text = read_stream(response, |t| t.contains("id: 4:")).await;
    let events = sse_events(&mut text);
    assert_eq!(events[0]["type"], "ready");
    let epoch = events[1]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(seqs(&queue(events)), vec![3, 4]);

    // The `seq:epoch` form EventSource sends back: the same resume...
    let resume = |id: String| {
        server
            .http
            .get(server.url("/v1/sse"))
            .bearer_auth(&token)
            .header("Last-Event-ID", id)
            .send()
    };
    let response = resume(format!("3:{epoch}")).await.unwrap();
    let mut text = read_stream(response, |t| t.contains("id: 4:")).await;
    assert_eq!(seqs(&queue(sse_events(&mut text))), vec![4]);
    // ...and with the epoch of another history, a gap and a fresh start.
    let response = resume("3:elsewhere".into()).await.unwrap();
    let mut text = read_stream(response, |t| t.contains("id: 4:")).await;
    let events = queue(sse_events(&mut text));
    assert_eq!(events[0]["type"], "gap");
    assert_eq!(events[0]["data"]["epoch"], epoch.as_str());
    assert_eq!(seqs(&events[1..]), vec![1, 2, 3, 4]);

    let response = server
        .http
        .get(server.url("/v1/sse"))
        .bearer_auth(&token)
        .header("Last-Event-ID", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_cursor");
}

#[tokio::test]
async fn iframe_pads_validates_the_callback_and_escapes_script_endings() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let hostile = "</script><script>alert(1)</script><!-- \u{2028} & done";
    server.publish(&["alice"], json!({ "body": hostile })).await;
    let response = server
        .open("/v1/iframe?cursor=0&cb=herald.deliver", &token)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = read_stream(response, |t| t.matches("</script>").count() >= 3).await;
    let first_script = html.find("<script>").expect("a script");
    assert!(
        first_script >= 2048,
        "only {first_script} bytes before the first script"
    );
    // The first call says `ready` (at once), the next hello with the epoch.
    let calls = iframe_calls(&html, "herald.deliver");
    assert_eq!(calls[0], json!({"type": "ready", "heartbeat_ms": 15000}));
    assert_eq!(calls[1]["type"], "hello");
    // Exactly one script element opened and closed: the payload did not end
    // it (the ready call and the hello come before it).
    let hello = first_script + 8 + html[first_script + 8..].find("<script>").unwrap();
    let second = hello + 8 + html[hello + 8..].find("<script>").unwrap();
    let script = &html[second..];
    let script = &script[..script.find("</script>").unwrap() + 9];
    assert_eq!(script.matches("<script>").count(), 1);
    assert!(!script[8..script.len() - 9].contains('<'));
    assert!(!script.contains('\u{2028}'));
    assert_eq!(
        calls[2]["data"]["body"], hostile,
        "the escaped JSON decodes to the original"
    );

    for cb in ["alert(1)", "a;b", "1abc", "x</script>", &"a".repeat(65)] {
        let response = server
            .http
            .get(server.url("/v1/iframe"))
            .query(&[("cb", cb), ("token", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "cb {cb:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "bad_callback"
        );
    }
}

#[tokio::test]
async fn iframe_sends_heartbeats() {
    let server = Server::start_with(&["--heartbeat-ms", "200"]).await;
    let token = server.token("alice").await;
    let response = server.open("/v1/iframe?cb=cb", &token).await;
    let html = read_stream(response, |t| t.contains(r#""type":"hb""#)).await;
    assert!(
        iframe_calls(&html, "cb").iter().any(|c| c["type"] == "hb"),
        "{html}"
    );
}

#[tokio::test]
async fn sse_heartbeat_comes_only_after_an_interval_of_silence() {
    let server = Server::start_with(&["--heartbeat-ms", "400"]).await;
    let token = server.token("alice").await;
    let response = server.open("/v1/sse", &token).await;
    let mut stream = response.bytes_stream();
    let publisher = {
        let http = server.http.clone();
        let url = server.url("/api/v1/publish");
        tokio::spawn(async move {
            // An event every 100 ms for 1.2 s: the stream is never silent
            // for a heartbeat interval.
            for i in 0..12 {
                http.post(&url)
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"to": ["alice"], "data": i}))
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut text = String::new();
    let mut last_event_at = tokio::time::Instant::now();
    let silence = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.ends_with("event: hb\ndata: {\"type\":\"hb\"}\n\n") {
                return last_event_at.elapsed();
            }
            last_event_at = tokio::time::Instant::now();
        }
        panic!("stream ended: {text}");
    })
    .await
    .expect("a heartbeat after the events");
    publisher.await.unwrap();
    let mut buf = text.clone();
    assert_eq!(
        seqs(&queue(sse_events(&mut buf))),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(text.matches("event: hb").count(), 1, "{text}");
    assert!(silence >= Duration::from_millis(350), "{silence:?}");
}

async fn ws_connect(server: &Server, token: &str, cursor: u64) -> common::WebSocket {
    server.ws(&format!("cursor={cursor}&token={token}")).await
}

/// The code of the close frame the server sends within 10 s.
async fn close_code<S>(ws: &mut S) -> Option<CloseCode>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| f.code);
            }
        }
        None
    })
    .await
    .expect("a close frame within 10 s")
}

/// The next JSON frame, skipping the `hello` that comes before a socket's
/// first events.
async fn ws_next_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let frame = ws_next_frame(ws).await;
        if frame["type"] != "hello" {
            return frame;
        }
    }
}

async fn ws_next_frame<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

#[tokio::test]
async fn websocket_replays_delivers_and_runs_commands() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    server.publish(&["alice"], json!("old")).await;
    let mut ws = ws_connect(&server, &alice, 0).await;
    // The epoch comes first, with the first page.
    let hello = ws_next_frame(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert!(hello["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(ws_next_frame(&mut ws).await["seq"], 1);
    server.publish(&["alice"], json!("new")).await;
    let live = ws_next_json(&mut ws).await;
    assert_eq!(
        (live["seq"].as_u64(), live["data"].as_str()),
        (Some(2), Some("new"))
    );

    ws.send(Message::text(r#"{"op":"ack","seq":2,"id":"a1"}"#))
        .await
        .unwrap();
    assert_eq!(
        ws_next_json(&mut ws).await,
        json!({"op": "reply", "id": "a1", "ok": true, "acked": 2})
    );

    // Bad frames get an error reply and the socket stays usable.
    for (frame, code) in [
        (Message::text("not json"), "bad_frame"),
        (Message::text("[1,2]"), "bad_frame"),
        (Message::binary(vec![1u8, 2, 3]), "bad_frame"),
        (Message::text(r#"{"op":"fly","id":7}"#), "unknown_op"),
        (Message::text(r#"{"op":"ack","seq":-1,"id":8}"#), "bad_seq"),
        (
            Message::text(r#"{"op":"send","to":"b c","body":"x","id":9}"#),
            "bad_frame",
        ),
    ] {
        ws.send(frame).await.unwrap();
        let reply = ws_next_json(&mut ws).await;
        assert_eq!(
            (reply["ok"].as_bool(), reply["error"].as_str()),
            (Some(false), Some(code)),
            "{reply}"
        );
    }

    // send, twice with the same cid: one message, one id.
    ws.send(Message::text(
        r#"{"op":"send","to":"bob","body":{"text":"hi"},"cid":"c-1","id":10}"#,
    ))
    .await
    .unwrap();
    let first = ws_next_json(&mut ws).await;
    assert_eq!(first["ok"], true, "{first}");
    ws.send(Message::text(
        r#"{"op":"send","to":"bob","body":{"text":"hi"},"cid":"c-1","id":11}"#,
    ))
    .await
    .unwrap();
    let second = ws_next_json(&mut ws).await;
    assert_eq!(second["msg_id"], first["msg_id"]);
    let inbox = server.poll(&bob, 0).await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["type"], "msg");
    assert_eq!(inbox[0]["data"]["from"], "alice");
    assert_eq!(inbox[0]["data"]["id"], first["msg_id"]);
    assert_eq!(inbox[0]["data"]["body"], json!({"text": "hi"}));
    assert_eq!(inbox[0]["data"]["cid"], "c-1");

    // A command far larger than the socket's 512-byte read buffer arrives whole.
    let text = "y".repeat(40_000);
    ws.send(Message::text(
        json!({"op": "send", "to": "bob", "body": {"text": text}, "id": 12}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(ws_next_json(&mut ws).await["ok"], true);
    let inbox = server.poll(&bob, 1).await;
    assert_eq!(inbox[0]["data"]["body"]["text"], text);
}

#[tokio::test]
async fn http_messages_are_idempotent_by_cid() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    let send = |cid: &'static str| {
        server
            .http
            .post(server.url("/v1/messages"))
            .bearer_auth(&alice)
            .json(&json!({"to": "bob", "body": "hello", "cid": cid}))
            .send()
    };
    let first: Value = send("x").await.unwrap().json().await.unwrap();
    let again: Value = send("x").await.unwrap().json().await.unwrap();
    let other: Value = send("y").await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_ne!(first["id"], other["id"]);
    let inbox = server.poll(&server.token("bob").await, 0).await;
    assert_eq!(seqs(&inbox), vec![1, 2]);
    for (body, code) in [
        (json!({"to": "bob"}), "bad_json"),
        (json!({"to": "bob", "body": null}), "bad_body"),
        (json!({"to": "b/b", "body": 1}), "bad_json"),
        (json!({"to": "bob", "body": 1, "cid": ""}), "bad_cid"),
    ] {
        let response = server
            .http
            .post(server.url("/v1/messages"))
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(response.json::<Value>().await.unwrap()["error"], code);
    }
}

#[tokio::test]
async fn websocket_upgrade_checks_token_and_origin_before_switching() {
    let server = Server::start_with(&["--allow-origin", "https://chat.example"]).await;
    let token = server.token("alice").await;
    let ws_url = server.base.replacen("http", "ws", 1);
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let status_of = |result: Result<_, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(e) => panic!("unexpected {e}"),
    };
    let no_token = tokio_tungstenite::connect_async(format!("{ws_url}/v1/ws")).await;
    assert_eq!(status_of(no_token.map(|_| ())), 401);
    let bad_token = tokio_tungstenite::connect_async(format!("{ws_url}/v1/ws?token=nope")).await;
    assert_eq!(status_of(bad_token.map(|_| ())), 401);

    let mut request = format!("{ws_url}/v1/ws?token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(request).await.map(|_| ())),
        403
    );
    let mut request = format!("{ws_url}/v1/ws?token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://chat.example".parse().unwrap());
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(request).await.map(|_| ())),
        101
    );
    // The page's own origin is always allowed.
    let mut request = format!("{ws_url}/v1/ws?token={token}")
        .into_client_request()
        .unwrap();
    let own = server.base.clone();
    request.headers_mut().insert("origin", own.parse().unwrap());
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(request).await.map(|_| ())),
        101
    );

    let plain = server.open("/v1/ws", &token).await;
    assert_eq!(plain.status(), 400);
}

#[tokio::test]
async fn websocket_frames_over_the_limit_close_with_1009() {
    let server = Server::start_with(&["--max-body", "1024"]).await;
    let token = server.token("alice").await;
    let mut ws = ws_connect(&server, &token, 0).await;
    ws.send(Message::text(format!(
        r#"{{"op":"ack","seq":1,"pad":"{}"}}"#,
        "x".repeat(4096)
    )))
    .await
    .unwrap();
    let closed = close_code(&mut ws).await;
    assert_eq!(closed, Some(CloseCode::Size));
}

#[tokio::test]
async fn cors_preflight_and_headers_follow_the_allowed_origins() {
    let server = Server::start_with(&["--allow-origin", "https://chat.example"]).await;
    let preflight = |origin: &'static str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/v1/poll"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let ok = preflight("https://chat.example").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let denied = preflight("https://evil.example").await.unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let token = server.token("alice").await;
    let response = server
        .http
        .get(server.url("/v1/poll"))
        .bearer_auth(&token)
        .header("origin", "https://chat.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
}

#[tokio::test]
async fn per_user_connection_cap_is_429() {
    let server = Server::start_with(&["--max-user-connections", "2"]).await;
    let token = server.token("alice").await;
    let _a = server.open("/v1/sse", &token).await;
    let _b = ws_connect(&server, &token, 0).await;
    let third = server.open("/v1/iframe?cb=cb", &token).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    // Another user is not affected.
    let other = server.token("bob").await;
    let response = server
        .http
        .get(server.url("/v1/sse"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Publishes `count` events to `uid` one by one; returns the acknowledged
/// (seq, n) pairs. With `kill_at`, kills and restarts the server then.
async fn publish_series(
    server: &mut Server,
    base: &common::clients::Base,
    uid: &str,
    count: u64,
    kill_at: Option<u64>,
) -> Vec<(u64, u64)> {
    let mut acked = Vec::new();
    let mut n = 0;
    while n < count {
        if Some(n) == kill_at {
            server.kill9();
            server.restart().await;
            *base.lock().unwrap() = server.base.clone();
        }
        let response = server
            .http
            .post(server.url("/api/v1/publish"))
            .bearer_auth(common::API_KEY)
            .json(&json!({"to": [uid], "data": {"n": n}}))
            .send()
            .await;
        if let Ok(response) = response {
            if let Ok(body) = response.json::<Value>().await {
                if let Some(seq) = body["seqs"][uid].as_u64() {
                    acked.push((seq, n));
                    n += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    acked
}

async fn all_transports_see_every_event_once(kill_at: Option<u64>) {
    let mut server = Server::start().await;
    let token = server.token("multi").await;
    let base: common::clients::Base = Arc::new(Mutex::new(server.base.clone()));
    let until = Arc::new(Mutex::new(0u64));
    let clients = follow_every_transport(&base, &token, &until, Duration::from_secs(90));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = publish_series(&mut server, &base, "multi", 300, kill_at).await;
    let head = server.poll_all(&token).await;
    let last = head.last().unwrap()["seq"].as_u64().unwrap();
    *until.lock().unwrap() = last;
    for client in clients {
        let (transport, events) = client.await.unwrap();
        let got = seqs(&events);
        assert_eq!(
            got,
            (1..=last).collect::<Vec<_>>(),
            "{transport}: not every event exactly once, in order"
        );
        for (seq, n) in &acked {
            assert_eq!(
                events[*seq as usize - 1]["data"]["n"],
                *n,
                "{transport}: seq {seq}"
            );
        }
    }
    if kill_at.is_none() {
        assert_eq!(last, 300);
        for transport in TRANSPORTS {
            let delivered = server
                .metric(&format!(
                    "herald_delivered_events_total{{kind=\"{transport}\"}}"
                ))
                .await;
            assert!(
                delivered >= 300.0,
                "{transport}: delivered metric {delivered}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_on_all_five_transports_sees_every_event_once_in_order() {
    all_transports_see_every_event_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_every_transport_resume_after_kill_9_with_nothing_lost_or_doubled() {
    all_transports_see_every_event_once(Some(150)).await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Publishes 10 000 events of 4 KiB to one user while a second WebSocket of
/// that user reads them all (and, with `stall`, one more never reads);
/// returns the server's RSS growth in MiB.
async fn rss_growth_while_publishing(stall: bool) -> u64 {
    let server = Server::start_with(&["--cache-mb", "16"]).await;
    let token = server.token("slow").await;
    // Connect, then never read again.
    let stalled = if stall {
        Some(ws_connect(&server, &token, 0).await)
    } else {
        None
    };
    let mut reader = ws_connect(&server, &token, 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(server.pid());

    let total = 10_000u64;
    let payload = "x".repeat(4096);
    let mut publishers = Vec::new();
    for p in 0..8u64 {
        let http = server.http.clone();
        let url = server.url("/api/v1/publish");
        let payload = payload.clone();
        publishers.push(tokio::spawn(async move {
            for _ in 0..total / 8 {
                let response = http
                    .post(&url)
                    .bearer_auth(common::API_KEY)
                    .json(&json!({"to": ["slow"], "data": {"p": p, "pad": payload}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        }));
    }
    // The reading client keeps up while the other is stalled.
    let mut received = 0;
    let read_all = tokio::time::timeout(Duration::from_secs(120), async {
        while received < total {
            if ws_next_json(&mut reader).await.get("seq").is_some() {
                received += 1;
            }
        }
    })
    .await;
    for p in publishers {
        p.await.unwrap();
    }
    assert!(
        read_all.is_ok(),
        "the reading client got only {received} of {total}"
    );
    let grown = rss_kib(server.pid()).saturating_sub(before) / 1024;
    drop(stalled);
    grown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_reads_costs_bounded_memory_and_delays_no_one() {
    // The same load with and without a stalled socket: the store's own
    // growth (sled's cache and write buffers) is the same in both, so the
    // difference is what the stalled socket costs. ~40 MiB of events go to
    // its user: an in-memory backlog would hold all of it; paging from the
    // store holds one page plus the socket buffers.
    let baseline = rss_growth_while_publishing(false).await;
    let with_stalled = rss_growth_while_publishing(true).await;
    let cost = with_stalled.saturating_sub(baseline);
    eprintln!("RSS growth: {baseline} MiB without, {with_stalled} MiB with a stalled socket");
    assert!(cost < 16, "a stalled socket cost {cost} MiB");
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1012_and_ends_streams() {
    let mut server = Server::start().await;
    let token = server.token("alice").await;
    let mut ws = ws_connect(&server, &token, 0).await;
    let sse = server.open("/v1/sse", &token).await;
    let iframe = server.open("/v1/iframe?cb=cb", &token).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.sigterm();
    let close = close_code(&mut ws).await;
    assert_eq!(close, Some(CloseCode::Restart));
    // Both streams end (the body completes) instead of hanging.
    let sse_text = tokio::time::timeout(Duration::from_secs(10), sse.text())
        .await
        .expect("sse ended");
    assert!(sse_text.unwrap().starts_with("retry:"));
    let html = tokio::time::timeout(Duration::from_secs(10), iframe.text())
        .await
        .expect("iframe ended")
        .unwrap();
    assert!(iframe_calls(&html, "cb")
        .iter()
        .any(|c| c["type"] == "reconnect"));
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_whose_client_stops_reading_end_after_the_send_timeout() {
    use tokio::io::AsyncWriteExt;

    let server = Server::start_with(&["--send-timeout-ms", "500"]).await;
    let token = server.token("slow").await;
    // Three streams, none ever read: SSE on a fresh connection (framed by
    // herald), SSE after another request on a kept-alive one (by hyper),
    // and a WebSocket.
    let addr = server.base.trim_start_matches("http://");
    let sse = format!("GET /v1/sse?token={token} HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut direct = tokio::net::TcpStream::connect(addr).await.unwrap();
    direct.write_all(sse.as_bytes()).await.unwrap();
    let mut kept_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    let healthz = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    kept_alive
        .write_all(format!("{healthz}{sse}").as_bytes())
        .await
        .unwrap();
    let _ws = ws_connect(&server, &token, 0).await;
    let open = |kind: &str| format!("herald_connections{{kind=\"{kind}\"}}");
    let all_open = eventually(Duration::from_secs(5), || async {
        server.metric(&open("sse")).await == 2.0 && server.metric(&open("ws")).await == 1.0
    })
    .await;
    assert!(all_open, "the three streams did not open");
    // ~24 MiB of events: more than the socket buffers of each hold.
    let pad = "x".repeat(16 << 10);
    let publishers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, pad) = (
                server.http.clone(),
                server.url("/api/v1/publish"),
                pad.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..190 {
                    http.post(&url)
                        .bearer_auth(common::API_KEY)
                        .json(&json!({"to": ["slow"], "data": {"pad": pad}}))
                        .send()
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let all_closed = eventually(Duration::from_secs(20), || async {
        server.metric(&open("sse")).await == 0.0 && server.metric(&open("ws")).await == 0.0
    })
    .await;
    assert!(
        all_closed,
        "stalled streams still open: sse {}, ws {}",
        server.metric(&open("sse")).await,
        server.metric(&open("ws")).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_reads_late_gets_every_event_once_in_order_when_they_outran_its_socket() {
    // Live events go straight from the commit thread to an idle, caught-up
    // socket. This one does not read while ~12 MiB arrive (more than the
    // socket buffers hold), so some writes are refused or cut short and
    // the session takes over; then it reads everything.
    let server = Server::start_with(&["--send-timeout-ms", "60000"]).await;
    let token = server.token("late").await;
    let mut ws = ws_connect(&server, &token, 0).await;
    let hello = ws_next_frame(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let pad = "y".repeat(3000);
    let (publishers, each) = (8u64, 500u64);
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (http, url, pad) = (
                server.http.clone(),
                server.url("/api/v1/publish"),
                pad.clone(),
            );
            tokio::spawn(async move {
                for i in 0..each {
                    let response = http
                        .post(&url)
                        .bearer_auth(common::API_KEY)
                        .json(&json!({"to": ["late"], "data": {"p": p, "i": i, "pad": pad}}))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = publishers * each;
    let mut got = Vec::new();
    let mut next_of = vec![0u64; publishers as usize];
    while (got.len() as u64) < total {
        let event = ws_next_json(&mut ws).await;
        assert_eq!(event["data"]["pad"].as_str(), Some(pad.as_str()), "intact");
        // Each publisher's events in the order it published them.
        let p = event["data"]["p"].as_u64().unwrap() as usize;
        assert_eq!(event["data"]["i"].as_u64(), Some(next_of[p]));
        next_of[p] += 1;
        got.push(event);
    }
    assert_eq!(seqs(&got), (1..=total).collect::<Vec<_>>());
}
