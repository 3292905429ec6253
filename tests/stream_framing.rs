//! A connection whose requests are `GET /v1/sse`, `/v1/iframe` or
//! `/v1/longpoll` is framed by herald itself (hyper's per-connection buffers would triple an idle
//! stream's memory); everything else, and the rest of a connection after an
//! error answer, is hyper's. These tests speak raw HTTP/1.1 to check that
//! framing, the hand-over to hyper, and that both paths answer alike.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::clients::sse_events;
use common::{eventually, seqs, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw HTTP/1.1 connection.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Head {
    status: u16,
    headers: BTreeMap<String, String>,
}

impl Raw {
    async fn open(server: &Server) -> Raw {
        let addr = server.base.trim_start_matches("http://");
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("send");
    }

    /// Reads more bytes (10 s at most); false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("no data within 10 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn head(&mut self) -> Head {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "closed before a response head");
        };
        let text = String::from_utf8(self.buf.drain(..end).collect()).expect("utf-8 head");
        let mut lines = text.lines();
        let status_line = lines.next().expect("status line");
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        Head { status, headers }
    }

    async fn exactly(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    /// The body of a response with a content-length, as JSON.
    async fn json_body(&mut self, head: &Head) -> Value {
        let length = head.headers["content-length"].parse().expect("length");
        serde_json::from_slice(&self.exactly(length).await).expect("JSON body")
    }

    /// The next chunk of a chunked body; `None` for the last (empty) one.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let line_end = loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            assert!(self.fill().await, "closed inside a chunked body");
        };
        let size_line: Vec<u8> = self.buf.drain(..line_end + 2).collect();
        let size = usize::from_str_radix(std::str::from_utf8(&size_line[..line_end]).unwrap(), 16)
            .expect("chunk size");
        let data = self.exactly(size + 2).await;
        assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
        (size > 0).then(|| data[..size].to_vec())
    }

    /// True if the server closes the connection within 10 s.
    async fn closes(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut chunk = [0u8; 256];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: herald\r\nOrigin: http://app.example\r\n\r\n")
}

/// The next `count` queue events of a stream (not its `ready` or `hello`).
async fn sse_from_chunks(raw: &mut Raw, count: usize) -> Vec<Value> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = raw.chunk().await.expect("stream ended early");
        text.push_str(&String::from_utf8(chunk).expect("utf-8"));
        events.extend(
            sse_events(&mut text)
                .into_iter()
                .filter(|e| e.get("seq").is_some()),
        );
    }
    events
}

#[tokio::test]
async fn a_fresh_sse_connection_is_chunked_and_noticed_when_it_goes() {
    let server = Server::start_with(&["--allow-origin", "http://app.example"]).await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!("backlog")).await;
    let mut raw = Raw::open(&server).await;
    raw.send(&get(&format!("/v1/sse?token={token}"))).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let h = &head.headers;
    assert_eq!(h["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["transfer-encoding"], "chunked");
    assert_eq!(h["connection"], "close");
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    assert!(h["date"].ends_with(" GMT"), "{h:?}");
    assert!(!h.contains_key("content-length"));

    // The opening chunk says `ready` at once (a client behind a buffering
    // proxy would not see it).
    let first = String::from_utf8(raw.chunk().await.expect("opening chunk")).unwrap();
    assert!(first.starts_with("retry: "), "{first}");
    assert!(
        first.ends_with("event: ready\ndata: {\"type\":\"ready\",\"heartbeat_ms\":15000}\n\n"),
        "{first}"
    );
    // The first page comes with the hello that names the epoch.
    let page = String::from_utf8(raw.chunk().await.expect("first page")).unwrap();
    assert!(
        page.starts_with("event: hello\ndata: {\"type\":\"hello\",\"epoch\":\""),
        "{page}"
    );
    assert!(page.contains("\"data\":\"backlog\""), "{page}");
    server.publish(&["alice"], json!("live")).await;
    let events = sse_from_chunks(&mut raw, 1).await;
    assert_eq!(seqs(&events), [2]);
    assert_eq!(events[0]["data"], "live");

    let open = r#"herald_connections{kind="sse"}"#;
    assert_eq!(server.metric(open).await, 1.0);
    drop(raw);
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric(open).await == 0.0
        })
        .await,
        "a closed SSE socket is still counted as open"
    );
}

#[tokio::test]
async fn an_iframe_on_a_fresh_connection_is_padded_and_chunked() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!("</script>")).await;
    let mut raw = Raw::open(&server).await;
    raw.send(&get(&format!("/v1/iframe?cb=parent.h&token={token}")))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(head.headers["transfer-encoding"], "chunked");
    let mut html = String::new();
    // The opening chunk: the padding, then the `ready` call.
    html.push_str(&String::from_utf8(raw.chunk().await.expect("chunk")).unwrap());
    assert!(
        html.ends_with(
            "<script>parent.parent.h({\"type\":\"ready\",\"heartbeat_ms\":15000});</script>\n"
        ),
        "{html}"
    );
    while !html.contains(r#""data":"\u003c/script\u003e"});</script>"#) {
        html.push_str(&String::from_utf8(raw.chunk().await.expect("chunk")).unwrap());
    }
    assert!(
        html.find("<script>parent.parent.h(").unwrap() >= 2048,
        "padding before the first script"
    );
    assert!(
        html.contains(r#"parent.parent.h({"type":"hello","epoch":"#),
        "{html}"
    );
}

#[tokio::test]
async fn an_error_answer_keeps_the_connection_for_hyper() {
    let server = Server::start().await;
    let mut raw = Raw::open(&server).await;
    raw.send(&get("/v1/sse")).await;
    let head = raw.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(head.headers["content-type"], "application/json");
    assert!(
        !head.headers.contains_key("connection"),
        "{:?}",
        head.headers
    );
    assert_eq!(raw.json_body(&head).await["error"], "unauthorized");
    // The same connection goes on with the next request.
    raw.send(&get("/healthz")).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(raw.json_body(&head).await["status"], "ok");

    // Pipelined: both requests in one write, both answered in order.
    let mut raw = Raw::open(&server).await;
    raw.send(&format!("{}{}", get("/v1/iframe?cb=h"), get("/healthz")))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(raw.json_body(&head).await["error"], "unauthorized");
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    raw.json_body(&head).await;

    // A client that asks to close gets its answer, then the close.
    let mut raw = Raw::open(&server).await;
    raw.send("GET /v1/sse?cursor=x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 401);
    assert_eq!(head.headers["connection"], "close");
    raw.json_body(&head).await;
    assert!(raw.closes().await);
}

#[tokio::test]
async fn lookalikes_and_oddities_are_left_to_hyper() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let ask = |request: String| {
        let server = &server;
        async move {
            let mut raw = Raw::open(server).await;
            raw.send(&request).await;
            raw.head().await.status
        }
    };
    assert_eq!(ask(get(&format!("/v1/ssex?token={token}"))).await, 404);
    assert_eq!(ask(get(&format!("/v1/iframes?token={token}"))).await, 404);
    let post =
        format!("POST /v1/sse?token={token} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{{}}");
    assert_eq!(ask(post).await, 405);
    // A GET with a body is hyper's to frame; the stream is served there.
    let with_body =
        format!("GET /v1/sse?token={token} HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(ask(with_body).await, 200);
    let http10 = "GET /v1/sse HTTP/1.0\r\nHost: h\r\n\r\n".to_owned();
    let mut raw = Raw::open(&server).await;
    raw.send(&http10).await;
    let mut text = Vec::new();
    raw.stream.read_to_end(&mut text).await.unwrap();
    assert!(text.starts_with(b"HTTP/1.0 401"), "{text:?}");
    // A head larger than the direct path reads, and a malformed one.
    let huge = format!(
        "GET /v1/sse?token={token} HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(ask(huge).await, 200);
    let malformed = "GET /v1/sse HTTP/1.1\r\nHost h\r\n\r\n".to_owned();
    assert_eq!(ask(malformed).await, 400);
    // The server is fine after all of it.
    let mut raw = Raw::open(&server).await;
    raw.send(&get("/healthz")).await;
    assert_eq!(raw.head().await.status, 200);
}

#[tokio::test]
async fn both_paths_send_the_same_headers_and_events() {
    let server = Server::start_with(&["--allow-origin", "http://app.example"]).await;
    let token = server.token("alice").await;
    server.publish(&["alice"], json!(1)).await;
    server.publish(&["alice"], json!(2)).await;
    let sse = get(&format!("/v1/sse?cursor=1&token={token}"));

    let mut direct = Raw::open(&server).await;
    direct.send(&sse).await;
    let direct_head = direct.head().await;
    // Through hyper: the stream request comes second on a kept-alive
    // connection.
    let mut hyper = Raw::open(&server).await;
    hyper.send(&get("/healthz")).await;
    let head = hyper.head().await;
    hyper.json_body(&head).await;
    hyper.send(&sse).await;
    let hyper_head = hyper.head().await;

    let framing = ["date", "connection", "transfer-encoding"];
    let strip = |head: &Head| {
        let mut h = head.headers.clone();
        h.retain(|k, _| !framing.contains(&k.as_str()));
        (head.status, h)
    };
    assert_eq!(strip(&direct_head), strip(&hyper_head));
    assert_eq!(hyper_head.headers["transfer-encoding"], "chunked");
    let a = sse_from_chunks(&mut direct, 1).await;
    let b = sse_from_chunks(&mut hyper, 1).await;
    assert_eq!(a, b);
    assert_eq!(seqs(&a), [2]);
}

#[tokio::test]
async fn shutdown_ends_a_direct_stream_with_its_last_chunk() {
    let server = Server::start().await;
    let token = server.token("alice").await;
    let mut raw = Raw::open(&server).await;
    raw.send(&get(&format!("/v1/sse?token={token}"))).await;
    assert_eq!(raw.head().await.status, 200);
    raw.chunk().await.expect("opening chunk");
    server.sigterm();
    let mut last = raw.chunk().await;
    while let Some(chunk) = last {
        // A heartbeat may come first; then the terminating chunk.
        assert!(chunk.starts_with(b":"), "{chunk:?}");
        last = raw.chunk().await;
    }
    assert!(raw.closes().await);
}

#[tokio::test]
async fn long_polls_are_served_directly_kept_alive_and_pipelined() {
    let server = Server::start().await;
    let token = server.token("lp").await;
    let mut raw = Raw::open(&server).await;
    // Held, then answered by a publish; the connection stays open.
    raw.send(&get(&format!(
        "/v1/longpoll?cursor=0&timeout=20&token={token}"
    )))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    server.publish(&["lp"], json!("one")).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert!(!head.headers.contains_key("connection"), "kept alive");
    let body = raw.json_body(&head).await;
    assert_eq!(
        (
            body["cursor"].as_u64(),
            seqs(body["events"].as_array().unwrap())
        ),
        (Some(1), vec![1])
    );
    // Two pipelined requests on the same connection: both answered, in order.
    server.publish(&["lp"], json!("two")).await;
    raw.send(&format!(
        "{}{}",
        get(&format!("/v1/longpoll?cursor=1&timeout=20&token={token}")),
        get("/healthz")
    ))
    .await;
    let head = raw.head().await;
    let body = raw.json_body(&head).await;
    assert_eq!(seqs(body["events"].as_array().unwrap()), vec![2]);
    let head = raw.head().await;
    assert_eq!(raw.json_body(&head).await["status"], "ok");
    // A client that goes away during the hold releases it at once.
    let mut gone = Raw::open(&server).await;
    gone.send(&get(&format!(
        "/v1/longpoll?cursor=2&timeout=60&token={token}"
    )))
    .await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 1.0
        })
        .await
    );
    drop(gone);
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.metric("herald_longpolls_held").await == 0.0
        })
        .await,
        "the held long-poll of a closed connection is released"
    );
}

#[tokio::test]
async fn short_polls_are_served_directly_like_through_hyper() {
    let server = Server::start_with(&["--allow-origin", "http://app.example"]).await;
    let token = server.token("sp").await;
    server.publish(&["sp"], json!("one")).await;
    let poll = |cursor: u64| {
        format!(
            "GET /v1/poll?cursor={cursor}&token={token} HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\n\r\n"
        )
    };
    // Directly: the connection's first request; then two pipelined, kept alive.
    let mut direct = Raw::open(&server).await;
    direct.send(&format!("{}{}", poll(0), poll(1))).await;
    let first = direct.head().await;
    assert!(!first.headers.contains_key("connection"), "kept alive");
    let body = direct.json_body(&first).await;
    assert_eq!(seqs(body["events"].as_array().unwrap()), vec![1]);
    let second = direct.head().await;
    let empty = direct.json_body(&second).await;
    assert_eq!(
        (
            empty["events"].as_array().map(Vec::len),
            empty["cursor"].as_u64()
        ),
        (Some(0), Some(1))
    );
    // Through hyper: the poll comes after another request.
    let mut hyper = Raw::open(&server).await;
    hyper.send(&get("/healthz")).await;
    let head = hyper.head().await;
    hyper.json_body(&head).await;
    hyper.send(&poll(0)).await;
    let through_hyper = hyper.head().await;
    assert_eq!(hyper.json_body(&through_hyper).await, body);
    let strip = |head: &Head| {
        let mut h = head.headers.clone();
        h.retain(|k, _| !["date", "connection", "content-length"].contains(&k.as_str()));
        (head.status, h)
    };
    assert_eq!(strip(&first), strip(&through_hyper));
    assert_eq!(
        first.headers["access-control-allow-origin"],
        "http://app.example"
    );
    // A refusal is answered on the direct path too, with its code.
    direct.send(&poll(9)).await;
    let refused = direct.head().await;
    assert_eq!(refused.status, 409);
    assert_eq!(direct.json_body(&refused).await["head"], 1);
}
