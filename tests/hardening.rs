//! The doors a hostile or unlucky client could open, each shut and proved
//! over the real binary: idle and trickling connections, one address taking
//! every connection, refused requests that changed state, weak secrets,
//! pages without a byte bound, long-polls outside the per-user cap, and the
//! WebSocket and startup edges.

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

/// Reads from `stream` until the peer closes it (true) or `within` passes.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One `GET /healthz` on a fresh kept-alive connection; the connection.
async fn kept_alive(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(addr(server)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "healthz answered");
    stream
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start_with(&["--idle-timeout-ms", "500"]).await;
    let mut stream = kept_alive(&server).await;
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_head_trickled_a_byte_at_a_time_is_cut_at_the_idle_timeout() {
    let server = Server::start_with(&["--idle-timeout-ms", "500"]).await;
    for first in ["GET /healthz HTTP/1.1\r\n", "GET /v1/sse HTTP/1.1\r\n"] {
        let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
        stream.write_all(first.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut cut = false;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"X").await.is_err() {
                cut = true;
                break;
            }
        }
        cut = cut || closed_within(&mut stream, Duration::from_millis(500)).await;
        assert!(cut, "{first:?}: still open after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn held_requests_and_streams_outlive_the_idle_timeout() {
    let server = Server::start_with(&["--idle-timeout-ms", "300"]).await;
    let alice = server.token("alice").await;
    let started = Instant::now();
    let (status, body) = server.get("/v1/longpoll?timeout=2", &alice).await;
    assert_eq!((status, body["events"].clone()), (200, json!([])));
    assert!(started.elapsed() >= Duration::from_secs(2));

    let mut ws = server.ws(&format!("token={alice}")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.publish(&["alice"], json!("still here")).await;
    let hello = ws.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains(r#""type":"hello""#));
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert!(frame.to_text().unwrap().contains("still here"));
}

/// A `GET` with the API key from the client address `source`; the
/// whole response as text.
async fn get_from(source: &str, server: &Server, path: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr(server).parse().unwrap()).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let server = Server::start_with(&["--max-conns-per-ip", "4"]).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(kept_alive(&server).await);
    }
    // The fifth from the same address is closed at once, unanswered.
    let mut fifth = TcpStream::connect(addr(&server)).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Another client address is served, and sees the refusal counted.
    let metrics = get_from("127.0.0.2", &server, "/metrics").await;
    assert!(
        metrics.contains("herald_refused_connections_total{kind=\"per_ip\"} 1"),
        "{metrics}"
    );
    // A freed slot can be taken again.
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(5), || async {
            let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        })
        .await
    );
}

#[tokio::test]
async fn a_refused_poll_long_poll_or_ack_changes_nothing() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    let bob = server.token("bob").await;
    for i in 0..3 {
        let msg = json!({"to": "alice", "body": i});
        assert_eq!(server.post_as(&bob, "/v1/messages", msg).await.0, 200);
    }
    for (path, status) in [
        ("/v1/poll?cursor=10", 409),
        ("/v1/longpoll?cursor=10&timeout=1", 409),
        ("/v1/longpoll?cursor=3&timeout=0", 400),
        ("/v1/poll?cursor=3&limit=0", 400),
        ("/v1/longpoll?cursor=3&limit=5000", 400),
    ] {
        assert_eq!(server.get(path, &alice).await.0, status, "{path}");
    }
    let (status, _) = server.post_as(&alice, "/v1/ack", json!({"seq": 10})).await;
    assert_eq!(status, 409);
    let mut ws = server.ws(&format!("token={alice}&cursor=3")).await;
    ws.send(Message::text(r#"{"op":"ack","seq":10,"id":1}"#))
        .await
        .unwrap();
    let reply: Value = loop {
        let frame = ws.next().await.unwrap().unwrap();
        let value: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if value["op"] == "reply" {
            break value;
        }
    };
    assert_eq!(
        (reply["ok"].clone(), reply["error"].clone()),
        (json!(false), json!("cursor_ahead"))
    );

    // Nothing was acked, so bob has no delivered receipt.
    let (_, acked) = server.post_as(&alice, "/v1/ack", json!({"seq": 0})).await;
    assert_eq!(acked["acked"], 0);
    assert_eq!(server.poll(&bob, 0).await, Vec::<Value>::new());
}

async fn refused_to_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(common::herald_bin());
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("HERALD_SECRET")
        .env_remove("HERALD_API_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            assert!(!dir.path().join("data").exists(), "no data dir left behind");
            return (status.code(), stderr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, "still running".into())
}

#[tokio::test]
async fn short_or_empty_secrets_and_api_keys_refuse_to_start() {
    let long_key = API_KEY;
    for (args, env, says) in [
        (
            vec!["--secret", "short", "--api-key", long_key],
            vec![],
            "--secret",
        ),
        (
            vec!["--api-key", long_key],
            vec![("HERALD_SECRET", "")],
            "--secret",
        ),
        (
            vec!["--secret", &SECRET[..31], "--api-key", long_key],
            vec![],
            "at least 32 bytes",
        ),
        (
            vec!["--secret", SECRET, "--api-key", "k"],
            vec![],
            "--api-key",
        ),
        (
            vec!["--secret", SECRET, "--api-key", &API_KEY[..15]],
            vec![],
            "at least 16 bytes",
        ),
    ] {
        let (code, stderr) = refused_to_start(&args, &env).await;
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test]
async fn a_port_clash_leaves_no_data_dir_and_an_unusable_data_dir_is_named() {
    let server = Server::start().await;
    let (code, stderr) = refused_to_start(
        &[
            "--listen",
            &addr(&server),
            "--secret",
            SECRET,
            "--api-key",
            API_KEY,
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = file.join("data");
    let output = std::process::Command::new(common::herald_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--api-key",
            API_KEY,
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(data.to_str().unwrap()),
        "names the path: {stderr}"
    );
}

/// Publishes `count` notices of `size` bytes of `fill` to `uid`.
async fn publish_big(server: &Server, uid: &str, count: usize, size: usize, fill: char) {
    for i in 0..count {
        let text: String = std::iter::repeat_n(fill, size).collect();
        server.publish(&[uid], json!({"i": i, "text": text})).await;
    }
}

#[tokio::test]
async fn every_poll_page_is_bounded_by_bytes_and_carries_at_least_one_event() {
    let server = Server::start_with(&["--max-page-bytes", "65536"]).await;
    let alice = server.token("alice").await;
    publish_big(&server, "alice", 12, 20_000, 'a').await;
    server
        .publish(&["alice"], json!({"text": "x".repeat(50_000)}))
        .await;
    for transport in ["poll", "longpoll"] {
        let mut cursor = 0;
        let mut pages = Vec::new();
        while cursor < 13 {
            let response = server
                .open(
                    &format!("/v1/{transport}?cursor={cursor}&limit=1000&timeout=1"),
                    &alice,
                )
                .await;
            let bytes = response.bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            let events = body["events"].as_array().unwrap().clone();
            assert!(!events.is_empty());
            assert!(
                bytes.len() <= 65536 + 256,
                "{transport}: {} bytes",
                bytes.len()
            );
            assert_eq!(body["cursor"], events.last().unwrap()["seq"]);
            cursor = body["cursor"].as_u64().unwrap();
            pages.push(events.len());
        }
        assert_eq!(pages, vec![3, 3, 3, 3, 1], "{transport}");
    }
    // A single event larger than the budget still goes out, alone.
    let server = Server::start_with(&["--max-page-bytes", "1024"]).await;
    let bob = server.token("bob").await;
    publish_big(&server, "bob", 3, 5_000, 'b').await;
    let page = server.poll(&bob, 0).await;
    assert_eq!(common::seqs(&page), vec![1]);
}

#[tokio::test]
async fn an_iframe_document_keeps_its_byte_budget_however_much_escaping_grows_it() {
    let server = Server::start_with(&["--max-page-bytes", "65536"]).await;
    let alice = server.token("alice").await;
    // Each event is 20 000 `<`, which escaping makes 120 000 bytes.
    publish_big(&server, "alice", 4, 20_000, '<').await;
    let mut cursor = 0;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let html = server
            .open(&format!("/v1/iframe?cursor={cursor}&cb=cb"), &alice)
            .await
            .text()
            .await
            .unwrap();
        assert!(html.len() < 65536 + 130_000, "{} bytes", html.len());
        let calls = common::clients::iframe_calls(&html, "cb");
        let events: Vec<&Value> = calls.iter().filter(|c| c.get("seq").is_some()).collect();
        assert_eq!(events.len(), 1, "one event per document over the budget");
        let reconnect = calls.last().unwrap();
        assert_eq!(reconnect["type"], "reconnect");
        assert_eq!(reconnect["cursor"], events[0]["seq"]);
        cursor = reconnect["cursor"].as_u64().unwrap();
        seen.push(cursor);
    }
    assert_eq!(seen, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn long_polls_count_toward_the_user_cap_and_the_oldest_makes_room() {
    let server = Server::start_with(&["--max-user-connections", "3"]).await;
    let alice = server.token("alice").await;
    let hold = |n: u64| {
        let request = server
            .http
            .get(server.url(&format!("/v1/longpoll?timeout=60&n={n}")))
            .bearer_auth(&alice);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), Instant::now())
        })
    };
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(hold(n));
        assert!(
            eventually(Duration::from_secs(5), || async {
                server.metric("herald_longpolls_held").await == (n + 1) as f64
            })
            .await
        );
    }
    // A fourth long-poll answers the oldest (empty, 200) and takes its slot.
    let fourth = hold(3);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), held.remove(0))
        .await
        .expect("the oldest long-poll was answered")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 3.0
        })
        .await
    );
    // A stream takes the next oldest's slot instead of getting 429.
    let sse = server.open("/v1/sse", &alice).await;
    assert_eq!(sse.status(), 200);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), held.remove(0))
        .await
        .expect("the next oldest was answered")
        .unwrap();
    assert_eq!(status, 200);
    // With every slot a stream, a long-poll gets 429 and changes nothing.
    let sse2 = server.open("/v1/sse", &alice).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), held.remove(0)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), fourth).await;
    let sse3 = server.open("/v1/sse", &alice).await;
    assert_eq!((sse2.status().as_u16(), sse3.status().as_u16()), (200, 200));
    let (status, body) = server.get("/v1/longpoll?timeout=1", &alice).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_requests"))
    );
    assert!(server.metric("herald_longpolls_evicted_total").await >= 3.0);
}

/// Upgrades a raw TCP connection to a WebSocket for `token`.
async fn raw_websocket(server: &Server, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr(server)).await.unwrap();
    let head = format!(
        "GET /v1/ws?token={token} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    stream
}

/// A masked client frame with the given first byte and payload.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![first, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// The status code of the next close frame the server sends.
async fn close_code(stream: &mut TcpStream) -> Option<u16> {
    let mut header = [0u8; 2];
    loop {
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
            .await
            .ok()?
            .ok()?;
        let mut payload = vec![0u8; (header[1] & 0x7f) as usize];
        stream.read_exact(&mut payload).await.ok()?;
        if header[0] & 0x0f == 0x8 {
            return Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn websocket_protocol_errors_get_a_close_frame_with_their_code() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    // RSV1 set without an extension: a protocol error, 1002.
    let mut ws = raw_websocket(&server, &alice).await;
    ws.write_all(&client_frame(0x80 | 0x40 | 0x1, b"{}"))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1002));
    // A text frame that is not UTF-8: 1007.
    let mut ws = raw_websocket(&server, &alice).await;
    ws.write_all(&client_frame(0x81, &[0xff, 0xfe, 0x7b]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(1007));
}

#[tokio::test]
async fn the_websocket_origin_check_compares_scheme_host_and_port() {
    let server = Server::start().await;
    let alice = server.token("alice").await;
    let host = addr(&server);
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    for (origin, allowed) in [
        (format!("http://{host}"), true),
        (format!("evil://{host}"), false),
        (format!("http://127.0.0.1:{}", port + 1), false),
        (format!("https://{host}.evil.example"), false),
    ] {
        let response = server
            .http
            .get(server.url(&format!("/v1/ws?token={alice}")))
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        let expected = if allowed { 101 } else { 403 };
        assert_eq!(response.status(), expected, "{origin}");
    }
}

#[tokio::test]
async fn sigterm_waits_for_every_websocket_close_frame() {
    let mut server = Server::start().await;
    let mut sockets = Vec::new();
    for i in 0..300 {
        let token = server.token(&format!("u{i}")).await;
        sockets.push(server.ws(&format!("token={token}")).await);
    }
    server.sigterm();
    for mut ws in sockets {
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        };
        assert_eq!(code, Some(1012));
    }
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test]
async fn a_preflight_says_vary_origin_once() {
    let server = Server::start_with(&["--allow-origin", "https://app.example"]).await;
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/poll"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers().get_all("vary").iter().count(), 1);
}

#[tokio::test]
async fn friends_members_and_counters_have_caps_and_a_refusal_stores_nothing() {
    let server = Server::start_with(&["--max-body", "1048576"]).await;
    let many = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let friends = json!({"friends": many(5001)});
    assert_eq!(
        server
            .backend_put("/api/v1/users/alice/friends", friends)
            .await,
        400
    );
    let members = json!({"members": many(10_001)});
    assert_eq!(
        server
            .backend_put("/api/v1/groups/g/members", members)
            .await,
        400
    );
    let alice = server.token("alice").await;
    assert_eq!(
        server.get("/v1/friends/presence", &alice).await.1["friends"],
        json!({})
    );
    assert_eq!(server.get("/v1/groups/g/presence", &alice).await.0, 404);

    for i in 0..100 {
        let response = server
            .backend_post(
                "/api/v1/users/alice/counters",
                json!({"name": format!("c{i}"), "delta": 1}),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let response = server
        .backend_post(
            "/api/v1/users/alice/counters",
            json!({"name": "one-more", "delta": 1}),
        )
        .await;
    assert_eq!(response.status(), 409);
    let (_, counters) = server.get("/v1/counters", &alice).await;
    assert_eq!(counters["counters"].as_object().unwrap().len(), 100);
    assert_eq!(
        server.poll_all(&alice).await.len(),
        100,
        "no event for the refused change"
    );
}

#[tokio::test]
async fn a_refused_stream_or_long_poll_does_not_make_its_user_flap_online() {
    let server = Server::start().await;
    let friends = json!({"friends": ["alice"]});
    assert_eq!(
        server
            .backend_put("/api/v1/users/bob/friends", friends)
            .await,
        200
    );
    let bob = server.token("bob").await;
    let bob_sse = server.open("/v1/sse", &bob).await;
    assert_eq!(bob_sse.status(), 200);
    let alice = server.token("alice").await;
    for path in [
        "/v1/sse?cursor=5",
        "/v1/iframe?cursor=5",
        "/v1/longpoll?cursor=5",
        "/v1/poll?cursor=5",
    ] {
        assert_eq!(server.get(path, &alice).await.0, 409, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed: Vec<Value> = server
        .poll(&bob, 0)
        .await
        .into_iter()
        .filter(|e| e["type"] == "presence")
        .collect();
    assert_eq!(pushed, Vec::<Value>::new(), "alice never came online");
}

#[tokio::test]
async fn a_closed_stdout_does_not_turn_sigterm_into_a_crash() {
    // A supervisor that stopped reading herald's output: herald's shutdown
    // line must not panic (println! does on a broken pipe) and the drain
    // must still end with exit 0.
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::herald_bin())
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("HERALD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "herald ended before listening"
        );
    }
    drop(stdout);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "herald did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
