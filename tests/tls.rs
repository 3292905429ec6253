//! HTTPS: every transport over HTTP/2 (the WebSocket by extended CONNECT)
//! and over HTTP/1.1, with a certificate from files that the clients trust;
//! the certificate made at start; settings that refuse to start.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::clients::{iframe_calls, sse_events};
use common::{Server, API_KEY, SECRET};
use futures::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::Version;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A certificate for 127.0.0.1 in PEM files, and its DER for the clients.
struct Cert {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Cert {
            dir,
            der: cert.der().clone(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// herald serving this certificate, with a client that trusts it and
    /// speaks HTTP/2 (by ALPN) or only HTTP/1.1.
    async fn server(&self, extra: &[&str], http1_only: bool) -> Server {
        let mut flags = vec![
            "--tls-cert".to_owned(),
            self.path("cert.pem"),
            "--tls-key".to_owned(),
            self.path("key.pem"),
        ];
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut server = Server::start_with(&flags).await;
        assert!(server.base.starts_with("https://"), "{}", server.base);
        let trusted = reqwest::Certificate::from_der(&self.der).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(trusted)
            .timeout(Duration::from_secs(60));
        server.http = if http1_only {
            client.http1_only()
        } else {
            client
        }
        .build()
        .unwrap();
        server
    }

    /// A TLS connection to `server` offering `alpn`.
    async fn connect(
        &self,
        server: &Server,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(server.base.trim_start_matches("https://"))
            .await
            .unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        tls
    }
}

/// Reads `transport` from cursor 0 until it has events 1..=n, with the
/// server's own client; asserts each response's HTTP version.
async fn read_events(server: &Server, token: &str, transport: &str, n: u64, version: Version) {
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        let cursor = seqs.last().copied().unwrap_or(0);
        let path = match transport {
            "iframe" => format!("/v1/iframe?cursor={cursor}&cb=cb"),
            other => format!("/v1/{other}?cursor={cursor}&timeout=5"),
        };
        let response = server.open(&path, token).await;
        assert_eq!(response.status(), 200, "{transport}");
        assert_eq!(response.version(), version, "{transport}");
        let events: Vec<Value> = if matches!(transport, "poll" | "longpoll") {
            let body: Value = response.json().await.unwrap();
            body["events"].as_array().cloned().unwrap_or_default()
        } else {
            // A stream: read until it has every event or 5 s passed.
            let mut stream = response.bytes_stream();
            let (mut buf, mut got) = (String::new(), Vec::new());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while (got.len() as u64) < n - cursor {
                let chunk = tokio::time::timeout_at(deadline, stream.next()).await;
                let Ok(Some(Ok(chunk))) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                if transport == "sse" {
                    got.extend(sse_events(&mut buf));
                } else if let Some(cut) = buf.rfind("</script>") {
                    let done: String = buf.drain(..cut + 9).collect();
                    got.extend(iframe_calls(&done, "cb"));
                }
                got.retain(|e| e.get("seq").is_some() && e["type"] != "reconnect");
            }
            got
        };
        seqs.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
    }
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{transport}");
}

/// The next text frame of `ws` as JSON (10 s at most).
async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

/// The WebSocket's events 1..=n (acking each), then it sends a message.
async fn chat_over<S>(mut ws: WebSocketStream<S>, n: u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        let event = next_json(&mut ws).await;
        if let Some(seq) = event["seq"].as_u64() {
            seqs.push(seq);
            let ack = json!({"op": "ack", "seq": seq}).to_string();
            ws.send(Message::text(ack)).await.unwrap();
        }
    }
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let send = json!({"op": "send", "id": 1, "to": "alice", "body": "over TLS"}).to_string();
    ws.send(Message::text(send)).await.unwrap();
    loop {
        let reply = next_json(&mut ws).await;
        if reply["id"] == 1 {
            assert!(reply.get("error").is_none(), "{reply}");
            return;
        }
    }
}

/// Three events to each of five users, read by the first four on poll,
/// long-poll, SSE and iframe over `version`; the tokens, the WebSocket
/// user's last.
async fn read_on_every_http_transport(server: &Server, version: Version) -> Vec<String> {
    let users = ["u-poll", "u-longpoll", "u-sse", "u-iframe", "u-ws"];
    let mut tokens = Vec::new();
    for user in users {
        tokens.push(server.token(user).await);
    }
    for i in 0..3 {
        server.publish(&users, json!(format!("event {i}"))).await;
    }
    for (transport, token) in ["poll", "longpoll", "sse", "iframe"].iter().zip(&tokens) {
        read_events(server, token, transport, 3, version).await;
    }
    tokens
}

#[tokio::test]
async fn every_transport_works_over_https_with_http2() {
    let cert = Cert::new();
    let server = cert.server(&[], false).await;
    let tokens = read_on_every_http_transport(&server, Version::HTTP_2).await;

    // A long-poll held on the shared connection is answered by a publish.
    let held = {
        let (http, url, token) = (
            server.http.clone(),
            server.url("/v1/longpoll?cursor=3&timeout=30"),
            tokens[1].clone(),
        );
        tokio::spawn(async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.version(), Version::HTTP_2);
            response.json::<Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the long-poll is held");
    server.publish(&["u-longpoll"], json!("wake")).await;
    let page = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(page["events"][0]["seq"], 4, "{page}");
    assert_eq!(page["events"][0]["data"], "wake");

    // The WebSocket by extended CONNECT (RFC 8441) on an HTTP/2 connection.
    let tls = cert.connect(&server, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // An ordinary request first: the server's SETTINGS (which allow the
    // extended CONNECT) have arrived by its answer.
    let health = hyper::Request::get(server.url("/healthz"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(health).await.unwrap().status(), 200);
    let ws_request = |token: &str| {
        let mut request = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(server.url(&format!("/v1/ws?cursor=0&token={token}")))
            .header("sec-websocket-version", "13")
            .header("origin", &server.base)
            .body(Empty::<Bytes>::new())
            .unwrap();
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        request
    };
    let refused = sender
        .send_request(ws_request("not-a-token"))
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        401,
        "a bad token is refused before the socket"
    );
    let mut response = sender.send_request(ws_request(&tokens[4])).await.unwrap();
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    chat_over(ws, 3).await;
    // What the socket sent was stored: alice has it.
    let alice = server.token("alice").await;
    let events = server.poll(&alice, 0).await;
    assert_eq!(events[0]["data"]["body"], "over TLS", "{events:?}");
}

#[tokio::test]
async fn every_transport_works_over_https_with_http1() {
    let cert = Cert::new();
    let server = cert.server(&[], true).await;
    let tokens = read_on_every_http_transport(&server, Version::HTTP_11).await;
    let tls = cert.connect(&server, b"http/1.1").await;
    let url = format!(
        "{}/v1/ws?cursor=0&token={}",
        server.base.replacen("https", "wss", 1),
        tokens[4]
    );
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    chat_over(ws, 3).await;
}

#[tokio::test]
async fn an_http2_connection_with_nothing_in_flight_is_closed_after_the_idle_timeout() {
    let cert = Cert::new();
    let server = cert.server(&["--idle-timeout-ms", "1000"], false).await;
    let token = server.token("idler").await;
    let open = |alpn: &'static [u8]| {
        let (cert, server) = (&cert, &server);
        async move {
            let tls = cert.connect(server, alpn).await;
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            (sender, tokio::spawn(conn))
        }
    };
    let get = |path: String| {
        hyper::Request::get(server.url(&path))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // One request, then nothing: the server closes the connection.
    let (mut idle, idle_conn) = open(b"h2").await;
    let answer = idle.send_request(get("/healthz".into())).await.unwrap();
    assert_eq!(answer.status(), 200);
    drop(answer);
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), idle_conn)
        .await
        .expect("closed within 10 s")
        .unwrap()
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A long-poll held for three idle timeouts keeps its connection, and
    // so does an open WebSocket stream.
    let (mut busy, busy_conn) = open(b"h2").await;
    let held = busy.send_request(get("/v1/longpoll?cursor=0&timeout=3".into()));
    let answer = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(answer.status(), 200);
    let mut connect = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(server.url(&format!("/v1/ws?cursor=0&token={token}")))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = busy.send_request(connect).await.unwrap();
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !busy_conn.is_finished(),
        "the WebSocket keeps its connection"
    );
    server.publish(&["idler"], json!("still here")).await;
    let event = loop {
        let event = next_json(&mut ws).await;
        if event.get("seq").is_some() {
            break event;
        }
    };
    assert_eq!(event["data"], "still here");
}

#[tokio::test]
async fn a_self_signed_certificate_is_made_at_start_and_its_hash_printed() {
    let server = Server::start_with(&["--tls-self-signed"]).await;
    let printed = server.output.lock().unwrap().clone();
    let hash = printed
        .lines()
        .find_map(|l| l.strip_prefix("self-signed certificate sha-256 "))
        .unwrap_or_else(|| panic!("no hash printed: {printed}"))
        .to_owned();
    // The client cannot trust it by a root: it checks the hash instead, as
    // a page given the hash would.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap();
    let response = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    let served = info.peer_certificate().expect("a certificate");
    let served_hash: String = Sha256::digest(served)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(served_hash, hash);
    // The same certificate answers for localhost, as the name it is for.
    let trusted = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_der(served).unwrap())
        .build()
        .unwrap();
    let port = server.base.rsplit(':').next().unwrap();
    let by_name = trusted
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);
}

#[tokio::test]
async fn tls_settings_that_cannot_work_refuse_to_start() {
    let cert = Cert::new();
    let missing = PathBuf::from(cert.path("missing.pem"));
    let other = Cert::new();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert".into(), cert.path("cert.pem")],
            "--tls-key",
        ),
        (
            vec![
                "--tls-cert".into(),
                missing.display().to_string(),
                "--tls-key".into(),
                cert.path("key.pem"),
            ],
            "--tls-cert",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.path("key.pem"),
                "--tls-key".into(),
                cert.path("key.pem"),
            ],
            "no CERTIFICATE",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.path("cert.pem"),
                "--tls-key".into(),
                cert.path("cert.pem"),
            ],
            "--tls-key",
        ),
        (
            vec![
                "--tls-cert".into(),
                cert.path("cert.pem"),
                "--tls-key".into(),
                other.path("key.pem"),
            ],
            "does not fit",
        ),
        (
            vec![
                "--tls-self-signed".into(),
                "--tls-cert".into(),
                cert.path("cert.pem"),
                "--tls-key".into(),
                cert.path("key.pem"),
            ],
            "--tls-self-signed",
        ),
    ];
    for (flags, says) in cases {
        let mut args = vec!["--secret", SECRET, "--api-key", API_KEY];
        args.extend(flags.iter().map(String::as_str));
        let Err(output) = Server::try_start_raw(&args).await else {
            panic!("{flags:?} started");
        };
        assert!(
            output.contains(says),
            "{flags:?} should say {says}: {output}"
        );
    }
}
