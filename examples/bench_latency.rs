//! Publish → receive latency: subscribers hold connections of one
//! transport on one server (or node), a publisher posts to another (or the
//! same) at a fixed rate, open loop (a slow answer never slows the
//! schedule), each event to one subscriber; every event carries its send
//! time, so each delivery's latency is measured in this one process.
//!
//! ```text
//! bench_latency run --server herald|nchan|socketio --transport ws|sse|longpoll|webtransport
//!     --pub ADDR --sub ADDR [--subscribers N] [--rate R] [--seconds S] [--out FILE]
//!     [--fanout] [--tls]
//! bench_latency typing --pub ADDR --sub ADDR [--subscribers N] [--rate R] [--seconds S]
//! bench_latency curve --in FILE --out FILE.svg [--title TEXT]
//! bench_latency chart --in FILE --out FILE.svg [--title TEXT] [--group KEY]
//!     [--series KEY] [--measure KEY,KEY…] [--unit TEXT] [--linear]
//! ```
//!
//! With `--fanout` every publish goes to every subscriber (herald: one
//! publish to all their users, each event durable in each queue; the
//! peers: one channel or room), so `--rate` publishes/s make `--rate` ×
//! `--subscribers` deliveries/s.
//!
//! With `--tls` the subscribers (SSE, long-poll) and the publisher talk
//! HTTPS with HTTP/2 to a herald started with `--tls-self-signed` (its
//! certificate is not checked), 100 subscribers on each connection, as a
//! browser's tabs share one; its results are labelled `TRANSPORT over h2`.
//! `--transport webtransport` (herald only, with `--tls` and herald's
//! `--webtransport-listen`) opens one WebTransport session per subscriber
//! (HTTP/3, each its own QUIC connection, all from one UDP socket) at the
//! URL and certificate hash of `GET /v1/webtransport`.
//!
//! `typing` measures herald's typing signals (never stored): N pairs of
//! WebSockets, the sender's on `--pub`, the receiver's on `--sub`; each
//! pair signals in turn and times the receiver's frame, `--rate` signals/s
//! over all pairs.
//!
//! `run` prints one line (rate, delivered, lost, p50/p99/p99.9 in ms) and,
//! with `--out`, appends it as a JSON line; `chart` draws those lines as an
//! SVG bar chart (log scale), and `curve` draws the fan-out curves of
//! `bench_connections fanout --out`. socket.io has WebSocket only. Run by
//! `scripts/bench-latency.sh` (one server) and `scripts/bench-cluster.sh`
//! (Redis, two nodes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/chart.rs"]
mod chart;
#[path = "support/token.rs"]
mod token;
#[path = "support/webtransport.rs"]
mod webtransport;
use token::token;

struct Args {
    server: String,
    transport: String,
    publish: SocketAddr,
    subscribe: SocketAddr,
    subscribers: usize,
    rate: u64,
    seconds: u64,
    out: Option<std::path::PathBuf>,
    fanout: bool,
    tls: bool,
}

/// Subscribers sharing one HTTP/2 connection with `--tls`.
const STREAMS_PER_CONNECTION: usize = 100;

const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";
const USAGE: &str = "usage: bench_latency run --server herald|nchan|socketio --transport ws|sse|longpoll|webtransport --pub ADDR --sub ADDR [--subscribers N] [--rate R] [--seconds S] [--out FILE] [--fanout] [--tls]\n       bench_latency typing --pub ADDR --sub ADDR [--subscribers N] [--rate R] [--seconds S]\n       bench_latency chart --in FILE --out FILE.svg [--title TEXT] [--group KEY] [--series KEY] [--measure KEY,KEY...] [--unit TEXT] [--linear]\n       bench_latency curve --in FILE --out FILE.svg [--title TEXT]";

/// `--flag value` pairs after the subcommand (`--linear` takes none).
fn flags(mut args: impl Iterator<Item = String>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while let Some(flag) = args.next() {
        if flag == "--linear" || flag == "--fanout" || flag == "--tls" {
            out.push((flag, String::new()));
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        out.push((flag, value));
    }
    Ok(out)
}

fn parse_run(pairs: Vec<(String, String)>) -> Result<Args, String> {
    let mut parsed = Args {
        server: "herald".into(),
        transport: "ws".into(),
        publish: "127.0.0.1:18101".parse().map_err(|e| format!("{e}"))?,
        subscribe: "127.0.0.1:18102".parse().map_err(|e| format!("{e}"))?,
        subscribers: 1000,
        rate: 1000,
        seconds: 20,
        out: None,
        fanout: false,
        tls: false,
    };
    for (flag, value) in pairs {
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--server" => parsed.server = value,
            "--transport" => parsed.transport = value,
            "--pub" => parsed.publish = value.parse().map_err(|e| bad(&e))?,
            "--sub" => parsed.subscribe = value.parse().map_err(|e| bad(&e))?,
            "--subscribers" => parsed.subscribers = value.parse().map_err(|e| bad(&e))?,
            "--rate" => parsed.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => parsed.seconds = value.parse().map_err(|e| bad(&e))?,
            "--out" => parsed.out = Some(value.into()),
            "--fanout" => parsed.fanout = true,
            "--tls" => parsed.tls = true,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let known =
        matches!(
            (parsed.server.as_str(), parsed.transport.as_str()),
            ("herald" | "nchan", "ws" | "sse" | "longpoll") | ("socketio", "ws")
        ) || (parsed.server == "herald" && parsed.transport == "webtransport" && parsed.tls);
    let tls_known = !parsed.tls || (parsed.server == "herald" && parsed.transport != "ws");
    if !known || !tls_known || parsed.subscribers == 0 || parsed.rate == 0 {
        return Err(format!(
            "cannot run {} over {} with {} subscribers at {}/s\n{USAGE}",
            parsed.server, parsed.transport, parsed.subscribers, parsed.rate
        ));
    }
    Ok(parsed)
}

/// The user (herald), channel (nchan) or room (socket.io) of subscriber
/// `i`: fresh names per run, so that no run replays what an earlier one
/// published.
fn name(args: &Args, i: usize) -> String {
    match (args.fanout, args.server.as_str()) {
        (true, "herald") => format!("f{}{}u{i}", args.rate, args.transport),
        (true, _) => format!("f{}{}", args.rate, args.transport),
        (false, _) => format!("r{}{}u{i}", args.rate, args.transport),
    }
}

/// The send times (µs since the client's start) a received payload
/// carries: a herald event's `data.t`, nchan's raw body `t`, socket.io's
/// `42["notice",{"t":…}]`.
fn sent_at(server: &str, text: &str) -> Option<u64> {
    let text = match server {
        "socketio" => text.strip_prefix("42")?,
        _ => text,
    };
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match server {
        "herald" => value["data"]["t"].as_u64(),
        "socketio" => value[1]["t"].as_u64(),
        _ => value["t"].as_u64(),
    }
}

type Latencies = Arc<Mutex<Vec<u64>>>;

fn record(latencies: &Latencies, origin: Instant, server: &str, text: &str) {
    if let Some(t) = sent_at(server, text) {
        let now = origin.elapsed().as_micros() as u64;
        latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now.saturating_sub(t));
    }
}

/// Opens subscriber `i` and hands everything it receives to `record`.
async fn subscribe(
    args: &Args,
    http: &reqwest::Client,
    i: usize,
    origin: Instant,
    latencies: Latencies,
) -> Result<(), String> {
    let (server, sub, who) = (args.server.clone(), args.subscribe, name(args, i));
    let path = match server.as_str() {
        "herald" => format!("/v1/{}?token={}", args.transport, token(SECRET, &who)),
        "nchan" => format!("/sub/{who}"),
        _ => format!("/socket.io/?EIO=4&transport=websocket&room={who}"),
    };
    match args.transport.as_str() {
        "ws" => {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{sub}{path}"))
                .await
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            if server == "socketio" {
                let _open = ws.next().await; // engine.io open
                ws.send(Message::text("40"))
                    .await
                    .map_err(|e| e.to_string())?;
                let _joined = ws.next().await;
            }
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    if text.as_str() == "2" {
                        let _ = ws.send(Message::text("3")).await; // engine.io ping
                        continue;
                    }
                    record(&latencies, origin, &server, text.as_str());
                }
            });
        }
        "sse" => {
            let response = http
                .get(format!("{}://{sub}{path}", scheme(args)))
                .header("accept", "text/event-stream")
                .send()
                .await
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("subscriber {i}: {}", response.status()));
            }
            tokio::spawn(async move {
                let mut body = response.bytes_stream();
                let mut buf = String::new();
                while let Some(Ok(chunk)) = body.next().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        for data in block.lines().filter_map(|l| l.strip_prefix("data: ")) {
                            record(&latencies, origin, &server, data);
                        }
                    }
                }
            });
        }
        "webtransport" => {
            let (endpoint, url) = webtransport_client(sub).await?;
            let token = token(SECRET, &who);
            let session = endpoint
                .connect(format!("{url}?token={token}"))
                .await
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            let mut events = session
                .accept_uni()
                .await
                .map_err(|e| format!("subscriber {i}: {e}"))?;
            tokio::spawn(async move {
                let _session = session;
                let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 16 * 1024]);
                while let Ok(Some(n)) = events.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=end).collect();
                        record(
                            &latencies,
                            origin,
                            &server,
                            &String::from_utf8_lossy(&line[..end]),
                        );
                    }
                }
            });
        }
        _ => {
            let (http, base) = (http.clone(), format!("{}://{sub}", scheme(args)));
            tokio::spawn(
                async move { long_poll(http, server, base, path, origin, latencies).await },
            );
        }
    }
    Ok(())
}

/// The client endpoint every WebTransport subscriber shares (one UDP
/// socket) and the session URL, asked once.
async fn webtransport_client(
    sub: SocketAddr,
) -> Result<
    &'static (
        wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
        String,
    ),
    String,
> {
    static CLIENT: tokio::sync::OnceCell<(
        wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
        String,
    )> = tokio::sync::OnceCell::const_new();
    CLIENT.get_or_try_init(|| webtransport::client(sub)).await
}

/// A long-poller: herald's `cursor` protocol, or nchan's (the next message
/// after the `Last-Modified` and `Etag` of the previous answer).
async fn long_poll(
    http: reqwest::Client,
    server: String,
    base: String,
    path: String,
    origin: Instant,
    latencies: Latencies,
) {
    let mut cursor = 0u64;
    let (mut modified, mut etag) = (String::new(), String::new());
    loop {
        let request = if server == "herald" {
            http.get(format!("{base}{path}&cursor={cursor}&timeout=30"))
        } else {
            http.get(format!("{base}{path}"))
                .header("if-modified-since", &modified)
                .header("if-none-match", &etag)
        };
        let Ok(response) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if server == "herald" {
            let Ok(body) = response.json::<serde_json::Value>().await else {
                continue;
            };
            for event in body["events"].as_array().into_iter().flatten() {
                record(&latencies, origin, &server, &event.to_string());
            }
            cursor = body["cursor"].as_u64().unwrap_or(cursor);
        } else {
            let header = |n: &str| {
                response
                    .headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (m, e) = (header("last-modified"), header("etag"));
            let ok = response.status().is_success();
            let Ok(text) = response.text().await else {
                continue;
            };
            if ok {
                record(&latencies, origin, &server, &text);
                modified = m.unwrap_or_default();
                etag = e.unwrap_or_default();
            }
        }
    }
}

/// `https` with `--tls`.
fn scheme(args: &Args) -> &'static str {
    if args.tls {
        "https"
    } else {
        "http"
    }
}

/// A client builder; with `--tls` one that takes herald's certificate made
/// at start.
fn client(args: &Args) -> reqwest::ClientBuilder {
    reqwest::Client::builder().danger_accept_invalid_certs(args.tls)
}

/// What a run's results are labelled with: its transport, and over what.
fn label(args: &Args) -> String {
    if args.tls && args.transport != "webtransport" {
        format!("{} over h2", args.transport)
    } else {
        args.transport.clone()
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run(args: Args) -> Result<(), String> {
    let origin = Instant::now();
    let latencies: Latencies = Arc::default();
    // Over HTTP/2 one client per connection, each for its share of the
    // subscribers; over HTTP/1.1 one client and its pool.
    let clients = if args.tls {
        args.subscribers.div_ceil(STREAMS_PER_CONNECTION)
    } else {
        1
    };
    let http = (0..clients)
        .map(|_| {
            client(&args)
                .pool_max_idle_per_host(usize::MAX)
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let http_of = |i: usize| &http[(i / STREAMS_PER_CONNECTION).min(clients - 1)];
    for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(
            chunk
                .iter()
                .map(|&i| subscribe(&args, http_of(i), i, origin, latencies.clone())),
        )
        .await;
        opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    // Let the subscriptions settle (held long-polls, nchan's channels).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let publisher = client(&args)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let publishes = args.rate * args.seconds;
    let per_publish = if args.fanout {
        args.subscribers as u64
    } else {
        1
    };
    let total = publishes * per_publish;
    // A fan-out publish of herald names every user.
    let everyone = serde_json::to_string(
        &(0..args.subscribers)
            .map(|i| name(&args, i))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| e.to_string())?;
    let failed = Arc::new(AtomicU64::new(0));
    let every = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(publishes as usize);
    for n in 0..publishes {
        tokio::time::sleep_until(started + every.mul_f64(n as f64)).await;
        let target = name(&args, (n as usize * 7919) % args.subscribers);
        let t = origin.elapsed().as_micros() as u64;
        let publish = args.publish;
        let to = if args.fanout {
            everyone.clone()
        } else {
            format!(r#"["{target}"]"#)
        };
        let request = match args.server.as_str() {
            "herald" => publisher
                .post(format!("{}://{publish}/api/v1/publish", scheme(&args)))
                .bearer_auth(API_KEY)
                .header("content-type", "application/json")
                .body(format!(r#"{{"to":{to},"data":{{"t":{t}}}}}"#)),
            "nchan" => publisher
                .post(format!("http://{publish}/pub/{target}"))
                .body(format!(r#"{{"t":{t}}}"#)),
            _ => publisher
                .post(format!("http://{publish}/emit/{target}"))
                .body(format!(r#"{{"t":{t}}}"#)),
        };
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("status {}", r.status())),
                Err(e) => Some(e.without_url().to_string()),
            }
            .inspect(|_| {
                failed.fetch_add(1, Ordering::Relaxed);
            })
        }));
    }
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for task in tasks {
        if let Ok(Some(error)) = task.await {
            *errors.entry(error).or_default() += 1;
        }
    }
    // Stragglers get up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let failed = failed.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        let got = latencies.lock().map(|l| l.len()).unwrap_or(0) as u64;
        if got + failed * per_publish >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sorted = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    sorted.sort_unstable();
    let delivered = sorted.len() as u64;
    let (p50, p99, p999) = (
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        percentile(&sorted, 0.999),
    );
    println!(
        "{:<8} {:<8} {:>6}/s{} for {:>3} s, {:>5} subscribers: {:>7} delivered ({:.0}/s), {:>5} publish failures, {:>5} lost; publish -> receive p50 {:>7.2} ms, p99 {:>7.2} ms, p99.9 {:>7.2} ms",
        args.server,
        label(&args),
        args.rate,
        if args.fanout { " to all" } else { "" },
        args.seconds,
        args.subscribers,
        delivered,
        delivered as f64 / args.seconds as f64,
        failed,
        total.saturating_sub(delivered + failed * per_publish),
        p50,
        p99,
        p999,
    );
    for (error, count) in errors {
        eprintln!("  {count} publishes failed: {error}");
    }
    if let Some(out) = &args.out {
        let line = serde_json::json!({
            "server": args.server, "transport": label(&args), "rate": args.rate,
            "seconds": args.seconds, "subscribers": args.subscribers, "delivered": delivered,
            "fanout": args.fanout, "deliveries_per_s": delivered as f64 / args.seconds as f64,
            "failed": failed, "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
        });
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

/// `typing`: `--subscribers` pairs (sender on `--pub`, receiver on
/// `--sub`) send typing signals, `--rate` a second over all pairs for
/// `--seconds`; each signal is timed from the sender's frame to the
/// receiver's. A signal not seen within 1 s counts as lost.
async fn typing(args: Args) -> Result<(), String> {
    let pairs = args.subscribers;
    let per_pair = Duration::from_secs_f64(pairs as f64 / args.rate as f64);
    let ws = |addr: SocketAddr, uid: String| async move {
        let url = format!("ws://{addr}/v1/ws?token={}", token(SECRET, &uid));
        tokio_tungstenite::connect_async(url)
            .await
            .map(|(ws, _)| ws)
            .map_err(|e| format!("{uid}: {e}"))
    };
    let mut opened = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let run = std::process::id();
        let (from, to) = (format!("ty{run}s{i}"), format!("ty{run}r{i}"));
        opened.push((
            ws(args.publish, from).await?,
            ws(args.subscribe, to.clone()).await?,
            to,
        ));
    }
    let lost = Arc::new(AtomicU64::new(0));
    let latencies: Latencies = Arc::default();
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, (mut sender, mut receiver, to))| {
            let (lost, latencies) = (lost.clone(), latencies.clone());
            let frame = format!(r#"{{"op":"typing","to":"{to}"}}"#);
            tokio::spawn(async move {
                // Spread the pairs over the interval.
                tokio::time::sleep(per_pair.mul_f64(i as f64 / pairs as f64)).await;
                let mut next = tokio::time::Instant::now();
                while Instant::now() < until {
                    let sent = Instant::now();
                    if sender.send(Message::text(frame.clone())).await.is_err() {
                        return;
                    }
                    let seen = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(message)) = receiver.next().await {
                            if let Message::Text(text) = message {
                                if text.as_str().contains(r#""type":"typing""#) {
                                    return true;
                                }
                            }
                        }
                        false
                    })
                    .await;
                    if seen == Ok(true) {
                        let took = sent.elapsed().as_micros() as u64;
                        latencies
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(took);
                    } else {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                    next += per_pair;
                    tokio::time::sleep_until(next).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let mut sorted = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    sorted.sort_unstable();
    println!(
        "herald   typing   {:>6}/s for {:>3} s, {:>5} pairs: {:>7} delivered, {:>5} lost; send -> receive p50 {:>7.2} ms, p99 {:>7.2} ms, p99.9 {:>7.2} ms",
        args.rate,
        args.seconds,
        pairs,
        sorted.len(),
        lost.load(Ordering::Relaxed),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        percentile(&sorted, 0.999),
    );
    Ok(())
}

/// `chart`: the JSON lines of FILE as grouped bars, one group per value of
/// `--group` (default `transport`), a column per `--series` (`server`),
/// one bar per `--measure` (`p50_ms,p99_ms,p999_ms`), on a log scale
/// unless `--linear`.
fn draw(pairs: Vec<(String, String)>) -> Result<(), String> {
    let (mut input, mut output) = (None, None);
    let mut title = String::from("publish → receive latency");
    let (mut group, mut series, mut unit) = ("transport".to_owned(), "server".to_owned(), None);
    let mut measures = vec!["p50_ms".to_owned(), "p99_ms".into(), "p999_ms".into()];
    let mut log = true;
    for (flag, value) in pairs {
        match flag.as_str() {
            "--in" => input = Some(value),
            "--out" => output = Some(value),
            "--title" => title = value,
            "--group" => group = value,
            "--series" => series = value,
            "--measure" => measures = value.split(',').map(str::to_owned).collect(),
            "--unit" => unit = Some(value),
            "--linear" => log = false,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let mut bars = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let run: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{input}: {e}"))?;
        let label = |k: &str| match &run[k] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        bars.push(chart::Bar {
            group: label(&group),
            series: label(&series),
            values: measures
                .iter()
                .map(|k| run[k.as_str()].as_f64().unwrap_or(f64::NAN))
                .collect(),
        });
    }
    // `p999_ms` reads as p99.9.
    let names: Vec<String> = measures
        .iter()
        .map(|m| m.trim_end_matches("_ms").replace("p999", "p99.9"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let unit = unit.unwrap_or_else(|| "ms".into()) + if log { " (log scale)" } else { "" };
    let svg = chart::grouped_bars(&title, &unit, &names, &bars, log);
    std::fs::write(&output, svg).map_err(|e| format!("{output}: {e}"))?;
    println!("wrote {output}");
    Ok(())
}

/// `curve`: the fan-out lines of FILE (written by `bench_connections
/// fanout --out`) as the share of subscribers reached over time.
fn draw_curves(pairs: Vec<(String, String)>) -> Result<(), String> {
    let (mut input, mut output) = (None, None);
    let mut title = String::from("one publish to every subscriber: share reached over time");
    for (flag, value) in pairs {
        match flag.as_str() {
            "--in" => input = Some(value),
            "--out" => output = Some(value),
            "--title" => title = value,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err(USAGE.into());
    };
    let text = std::fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let mut curves = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let run: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{input}: {e}"))?;
        let ms = run["curve_ms"]
            .as_array()
            .ok_or_else(|| format!("{input}: a line without curve_ms"))?;
        curves.push(chart::Curve {
            name: run["server"].as_str().unwrap_or("?").to_owned(),
            ms: ms.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect(),
        });
    }
    std::fs::write(&output, chart::curves(&title, &curves))
        .map_err(|e| format!("{output}: {e}"))?;
    println!("wrote {output}");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let result = match (command.as_str(), flags(args)) {
        (_, Err(e)) => Err(e),
        ("run", Ok(pairs)) => match parse_run(pairs) {
            Ok(args) => run(args).await,
            Err(e) => Err(e),
        },
        ("typing", Ok(pairs)) => match parse_run(pairs) {
            Ok(args) => typing(args).await,
            Err(e) => Err(e),
        },
        ("chart", Ok(pairs)) => draw(pairs),
        ("curve", Ok(pairs)) => draw_curves(pairs),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_latency: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
