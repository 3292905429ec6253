//! Connection benchmark: server memory per idle connection, and the time
//! one publish takes to reach 10 000 WebSocket subscribers.
//!
//! Normally run through `scripts/bench-connections.sh`, which starts herald
//! and the peers (nchan, socket.io) pinned to one core and calls this
//! client for each. By hand:
//!
//! ```text
//! bench_connections idle  --pid PID --proto herald-sse|herald-ws|herald-longpoll|herald-h2-sse|herald-h2-longpoll|herald-webtransport|nchan-sse|nchan-ws|nchan-longpoll|socketio-ws --addr 127.0.0.1:PORT [--count N] [--secret S] [--hold-s S]
//! bench_connections fanout --proto herald-ws|nchan-ws|socketio-ws --addr 127.0.0.1:PORT [--secret S --api-key K] [--count N] [--out FILE --label NAME]
//! bench_connections fsync --dir DIR     (the disk's fdatasync p50/p99, printed beside the fan-out)
//! ```
//!
//! With `--out`, the fan-out appends its median round to FILE as a JSON
//! line: when each percent of the subscribers had the event (`curve_ms`,
//! 100 values), drawn by `bench_latency curve`.
//!
//! Client sockets are spread over source addresses 127.0.0.2–127.0.0.9 so
//! no (source, destination) pair runs out of ephemeral ports.
//!
//! `herald-h2-*` talk HTTPS to a herald started with `--tls-self-signed`:
//! HTTP/2, [`STREAMS_PER_CONNECTION`] streams or held long-polls on each
//! connection, as the tabs of a browser share one connection per origin.
//! `herald-webtransport` opens WebTransport sessions (HTTP/3, each its
//! own QUIC connection, all from one UDP socket) to a herald started with
//! `--tls-self-signed --webtransport-listen`, and waits for each one's
//! `hello`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    mode: String,
    pid: u32,
    proto: String,
    addr: SocketAddr,
    count: usize,
    secret: String,
    api_key: String,
    /// Fan-out: peers' subscribers all join one channel.
    shared_channel: bool,
    /// fsync: where to measure the disk.
    dir: std::path::PathBuf,
    /// idle: how long the connections are held before the memory is read
    /// (longer when several clients must hold theirs at once).
    hold: Duration,
    /// fanout: where to append the median round's curve, and its name.
    out: Option<std::path::PathBuf>,
    label: Option<String>,
}

#[path = "support/disk.rs"]
mod disk;
#[path = "support/token.rs"]
mod token;
#[path = "support/webtransport.rs"]
mod webtransport;
use token::token;

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let mut parsed = Args {
        mode,
        pid: 0,
        proto: "herald-ws".into(),
        addr: "127.0.0.1:8080".parse().expect("addr"),
        count: 10_000,
        secret: "bench-secret-0123456789abcdefghij".into(),
        api_key: "bench-api-key-0123".into(),
        shared_channel: false,
        dir: std::env::temp_dir(),
        hold: Duration::from_secs(2),
        out: None,
        label: None,
    };
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        match flag.as_str() {
            "--pid" => parsed.pid = value.parse().expect("--pid"),
            "--proto" => parsed.proto = value,
            "--addr" => parsed.addr = value.parse().expect("--addr"),
            "--count" => parsed.count = value.parse().expect("--count"),
            "--secret" => parsed.secret = value,
            "--api-key" => parsed.api_key = value,
            "--dir" => parsed.dir = value.into(),
            "--out" => parsed.out = Some(value.into()),
            "--label" => parsed.label = Some(value),
            "--hold-s" => parsed.hold = Duration::from_secs(value.parse().expect("--hold-s")),
            other => panic!("unknown flag {other}"),
        }
    }
    parsed
}

#[path = "support/rss.rs"]
mod rss;
use rss::rss_kib;

async fn connect(i: usize, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An open idle connection of some protocol, kept only to stay open.
enum Idle {
    Tcp(#[allow(dead_code)] TcpStream),
    Ws(#[allow(dead_code)] Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
    /// An HTTP/2 stream being answered (SSE).
    Stream(#[allow(dead_code)] reqwest::Response),
    /// An HTTP/2 request held by the server (a long-poll).
    Held(#[allow(dead_code)] AbortOnDrop),
    /// A WebTransport session and its event stream.
    Session(
        #[allow(dead_code)] wtransport::Connection,
        #[allow(dead_code)] wtransport::RecvStream,
    ),
}

/// A task that ends with its handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// HTTP/2 streams on one connection (`herald-h2-*`).
const STREAMS_PER_CONNECTION: usize = 100;

/// `args.count` HTTP/2 SSE streams or held long-polls over HTTPS, each
/// connection (one client) carrying [`STREAMS_PER_CONNECTION`]; with the
/// number that failed.
async fn open_h2(args: &Args, transport: &str) -> (Vec<Idle>, usize) {
    let (mut kept, mut failures) = (Vec::with_capacity(args.count), 0);
    let indexes: Vec<usize> = (0..args.count).collect();
    for chunk in indexes.chunks(STREAMS_PER_CONNECTION) {
        // herald's certificate was made at its start: not checked here.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let url = |i: usize| {
            let token = token(&args.secret, &format!("u{i}"));
            match transport {
                "sse" => format!("https://{}/v1/sse?token={token}", args.addr),
                _ => format!(
                    "https://{}/v1/longpoll?timeout=100&token={token}",
                    args.addr
                ),
            }
        };
        // One request answered first: the others then share its connection.
        let first = client
            .get(format!("https://{}/healthz", args.addr))
            .send()
            .await;
        match first {
            Ok(response) if response.version() == reqwest::Version::HTTP_2 => {}
            other => {
                eprintln!("no HTTP/2 connection: {other:?}");
                failures += chunk.len();
                continue;
            }
        }
        if transport == "sse" {
            let opened =
                futures::future::join_all(chunk.iter().map(|&i| client.get(url(i)).send())).await;
            for response in opened {
                match response {
                    Ok(r) if r.status().is_success() => kept.push(Idle::Stream(r)),
                    _ => failures += 1,
                }
            }
        } else {
            for &i in chunk {
                let request = client.get(url(i)).send();
                kept.push(Idle::Held(AbortOnDrop(tokio::spawn(async move {
                    let _ = request.await;
                }))));
            }
        }
    }
    (kept, failures)
}

/// `args.count` WebTransport sessions (`herald-webtransport`), 25
/// opening at a time, each held once its `hello` came; with the number
/// that failed.
async fn open_webtransport(args: &Args) -> (Vec<Idle>, usize) {
    let (endpoint, url) = match webtransport::client(args.addr).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}");
            return (Vec::new(), args.count);
        }
    };
    let (mut kept, mut failures) = (Vec::with_capacity(args.count), 0);
    let open = |i: usize| {
        let url = format!("{url}?token={}", token(&args.secret, &format!("u{i}")));
        let endpoint = &endpoint;
        async move {
            let session = endpoint.connect(url).await.map_err(|e| e.to_string())?;
            let mut events = session.accept_uni().await.map_err(|e| e.to_string())?;
            let mut hello = [0u8; 256];
            match events.read(&mut hello).await {
                Ok(Some(n)) if hello[..n].starts_with(br#"{"type":"hello""#) => {
                    Ok(Idle::Session(session, events))
                }
                other => Err(format!("no hello: {other:?}")),
            }
        }
    };
    for chunk in (0..args.count).collect::<Vec<_>>().chunks(25) {
        for result in futures::future::join_all(chunk.iter().map(|&i| open(i))).await {
            match result {
                Ok(session) => kept.push(session),
                Err(e) => {
                    if failures < 3 {
                        eprintln!("session failed: {e}");
                    }
                    failures += 1;
                }
            }
        }
    }
    (kept, failures)
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens connection `i` and waits until the server has answered it.
async fn open(args: &Args, i: usize) -> std::io::Result<Idle> {
    let mut stream = connect(i, args.addr).await?;
    let host = args.addr;
    let path = match args.proto.as_str() {
        "herald-sse" => format!("/v1/sse?token={}", token(&args.secret, &format!("u{i}"))),
        "herald-ws" => format!("/v1/ws?token={}", token(&args.secret, &format!("u{i}"))),
        "herald-longpoll" => format!(
            "/v1/longpoll?timeout=100&token={}",
            token(&args.secret, &format!("u{i}"))
        ),
        "nchan-sse" | "nchan-ws" if args.shared_channel => "/sub/fanout".into(),
        "nchan-sse" | "nchan-ws" | "nchan-longpoll" => format!("/sub/c{i}"),
        "socketio-ws" => "/socket.io/?EIO=4&transport=websocket".into(),
        other => panic!("unknown --proto {other}"),
    };
    if args.proto.ends_with("-longpoll") {
        // Held until an event or the timeout: no answer to wait for. A
        // keep-alive HTTP/1.1 request, as a browser's long-poll is.
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        return Ok(Idle::Tcp(stream));
    }
    if args.proto.ends_with("-sse") {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed before headers"));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        if !seen.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&seen[..seen.len().min(80)]).into_owned(),
            ));
        }
        return Ok(Idle::Tcp(stream));
    }
    let url = format!("ws://{host}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(std::io::Error::other)?;
    if args.proto == "socketio-ws" {
        // engine.io open packet, then join the default namespace.
        let _open = ws.next().await;
        futures::SinkExt::send(&mut ws, Message::text("40"))
            .await
            .map_err(std::io::Error::other)?;
        let _joined = ws.next().await;
    }
    Ok(Idle::Ws(Box::new(ws)))
}

async fn idle(args: Args) {
    let before = rss_kib(args.pid);
    let args = Arc::new(args);
    let started = Instant::now();
    let (conns, failures) = match args.proto.strip_prefix("herald-h2-") {
        Some(transport) => open_h2(&args, transport).await,
        None if args.proto == "herald-webtransport" => open_webtransport(&args).await,
        None => open_all(&args).await,
    };
    tokio::time::sleep(args.hold).await;
    let after = rss_kib(args.pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / conns.len().max(1) as f64;
    println!(
        "{:<12} {:>6} idle connections in {:>5.1} s: server RSS {:>7} -> {:>7} KiB, {:>6.0} B per connection{}",
        args.proto,
        conns.len(),
        started.elapsed().as_secs_f64(),
        before,
        after,
        per,
        if failures > 0 { format!(" ({failures} failed)") } else { String::new() }
    );
    drop(conns);
}

/// `args.count` connections of `args.proto`, 500 opening at a time; with
/// the number that failed.
async fn open_all(args: &Arc<Args>) -> (Vec<Idle>, usize) {
    let mut conns = Vec::with_capacity(args.count);
    let mut failures = 0;
    for chunk in (0..args.count).collect::<Vec<_>>().chunks(500) {
        let opened = futures::future::join_all(chunk.iter().map(|&i| {
            let args = args.clone();
            async move { open(&args, i).await }
        }))
        .await;
        for result in opened {
            match result {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    if failures < 3 {
                        eprintln!("connect failed: {e}");
                    }
                    failures += 1;
                }
            }
        }
    }
    (conns, failures)
}

/// Rounds of the fan-out; the median and the worst are reported.
const ROUNDS: usize = 5;

async fn fanout(args: Args) {
    let args = Arc::new(Args {
        shared_channel: true,
        ..args
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut ready = 0;
    for chunk in (0..args.count).collect::<Vec<_>>().chunks(500) {
        let opened = futures::future::join_all(chunk.iter().map(|&i| {
            let args = args.clone();
            async move { open(&args, i).await }
        }))
        .await;
        for conn in opened.into_iter().flatten() {
            let Idle::Ws(mut ws) = conn else { continue };
            let tx = tx.clone();
            ready += 1;
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(text) = message {
                        if text.as_str().contains("\"round\"") && tx.send(Instant::now()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    println!(
        "{} fan-out: {ready} WebSocket subscribers connected",
        args.proto
    );
    let to: Vec<String> = (0..args.count).map(|i| format!("u{i}")).collect();
    let http = reqwest::Client::new();
    // Per round: every subscriber's arrival, in ms after the publish.
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let started = Instant::now();
        let data = serde_json::json!({"hello": "everyone", "round": round});
        let request = match args.proto.as_str() {
            // One durable event in each of 10 000 queues.
            "herald-ws" => http
                .post(format!("http://{}/api/v1/publish", args.addr))
                .bearer_auth(&args.api_key)
                .json(&serde_json::json!({"to": to, "data": data})),
            // One message to one channel (memory store) / one io.emit.
            "nchan-ws" => http
                .post(format!("http://{}/pub/fanout", args.addr))
                .json(&data),
            "socketio-ws" => http.post(format!("http://{}/emit", args.addr)).json(&data),
            other => panic!("no fan-out for --proto {other}"),
        };
        let response = request.send().await.expect("publish");
        let answered = started.elapsed();
        assert!(
            response.status().is_success(),
            "publish: {}",
            response.status()
        );
        let mut arrivals = Vec::with_capacity(ready);
        while arrivals.len() < ready {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some(at)) => arrivals.push((at - started).as_secs_f64() * 1e3),
                _ => break,
            }
        }
        arrivals.sort_by(f64::total_cmp);
        println!(
            "  round {round}: publish answered after {:.1} ms; first subscriber received it after {:.1} ms, last after {:.1} ms ({}/{ready} received)",
            answered.as_secs_f64() * 1e3,
            arrivals.first().copied().unwrap_or(0.0),
            arrivals.last().copied().unwrap_or(0.0),
            arrivals.len()
        );
        rounds.push(arrivals);
    }
    // A round that lost subscribers counts as never finishing.
    let last = |arrivals: &Vec<f64>| match arrivals.last() {
        Some(&ms) if arrivals.len() == ready => ms,
        _ => f64::INFINITY,
    };
    rounds.sort_by(|a, b| last(a).total_cmp(&last(b)));
    let median = &rounds[ROUNDS / 2];
    println!(
        "{:<12} fan-out to {ready} WebSocket subscribers: last subscriber after {:.1} ms (median of {ROUNDS}), {:.1} ms (worst)",
        args.proto,
        last(median),
        last(&rounds[ROUNDS - 1])
    );
    if let Some(out) = &args.out {
        // When 1%, 2%, … 100% of the subscribers had it (the median round).
        let curve: Vec<f64> = (1..=100)
            .map(|percent| {
                let reached = (ready * percent).div_ceil(100);
                median
                    .get(reached.saturating_sub(1))
                    .map_or(f64::INFINITY, |ms| (ms * 100.0).round() / 100.0)
            })
            .collect();
        let line = serde_json::json!({
            "server": args.label.as_deref().unwrap_or(&args.proto),
            "subscribers": ready,
            "last_ms": last(median),
            // JSON has no infinity: a percent never reached is null.
            "curve_ms": curve.iter().map(|ms| ms.is_finite().then_some(*ms)).collect::<Vec<_>>(),
        });
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .and_then(|mut f| writeln!(f, "{line}"))
            .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    match args.mode.as_str() {
        "idle" => idle(args).await,
        "fanout" => fanout(args).await,
        "fsync" => match disk::fdatasync_figures(&args.dir, 200) {
            Ok(figures) => println!("{figures}"),
            Err(e) => {
                eprintln!("bench_connections: {e}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("usage: bench_connections idle|fanout|fsync [flags]; see the file's header");
            std::process::exit(2);
        }
    }
}
