//! Cross-node delivery latency of a herald cluster (or of nchan in Redis
//! mode): subscribers hold WebSockets on one node, a publisher posts to
//! another at a fixed rate (open loop: a slow answer never slows the
//! schedule), and every event carries its send time, so each delivery's
//! publish → receive latency is measured in this one process.
//!
//! ```text
//! bench_cluster latency --proto herald|nchan --pub ADDR --sub ADDR
//!     [--subscribers N] [--rate R] [--seconds S]
//! ```
//!
//! Prints one line: rate, delivered, lost, p50/p99/p99.9 in ms. Run by
//! `scripts/bench-cluster.sh`, which starts Redis, the nodes and the peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    proto: String,
    publish: SocketAddr,
    subscribe: SocketAddr,
    subscribers: usize,
    rate: u64,
    seconds: u64,
}

const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("latency") {
        return Err("usage: bench_cluster latency --proto herald|nchan --pub ADDR --sub ADDR [--subscribers N] [--rate R] [--seconds S]".into());
    }
    let mut parsed = Args {
        proto: "herald".into(),
        publish: "127.0.0.1:18101".parse().expect("an address"),
        subscribe: "127.0.0.1:18102".parse().expect("an address"),
        subscribers: 1000,
        rate: 1000,
        seconds: 20,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--proto" => parsed.proto = value,
            "--pub" => parsed.publish = value.parse().map_err(|e| bad(&e))?,
            "--sub" => parsed.subscribe = value.parse().map_err(|e| bad(&e))?,
            "--subscribers" => parsed.subscribers = value.parse().map_err(|e| bad(&e))?,
            "--rate" => parsed.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => parsed.seconds = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !matches!(parsed.proto.as_str(), "herald" | "nchan") {
        return Err(format!("--proto {}: herald or nchan", parsed.proto));
    }
    Ok(parsed)
}

fn token(uid: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 3600;
    jsonwebtoken::encode(
        &Header::default(),
        &serde_json::json!({"sub": uid, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_default()
}

/// The send time (µs since `origin`) a delivered frame carries.
fn sent_at(proto: &str, text: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match proto {
        "herald" => value["data"]["t"].as_u64(),
        _ => value["t"].as_u64(),
    }
}

/// Latencies in µs of every delivery, and how many arrived.
#[derive(Default)]
struct Received {
    latencies: Vec<u64>,
}

/// The user (herald) or channel (nchan) of subscriber `i`: fresh names
/// per rate, so that no run replays what an earlier one published.
fn name(args: &Args, i: usize) -> String {
    format!("r{}u{i}", args.rate)
}

async fn subscribe(
    args: &Args,
    i: usize,
    origin: Instant,
    received: Arc<Mutex<Received>>,
) -> Result<(), String> {
    let url = match args.proto.as_str() {
        "herald" => format!(
            "ws://{}/v1/ws?token={}",
            args.subscribe,
            token(&name(args, i))
        ),
        _ => format!("ws://{}/sub/{}", args.subscribe, name(args, i)),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("subscriber {i}: {e}"))?;
    let proto = args.proto.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            if let Some(t) = sent_at(&proto, text.as_str()) {
                let now = origin.elapsed().as_micros() as u64;
                let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
                received.latencies.push(now.saturating_sub(t));
            }
        }
    });
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn latency(args: Args) -> Result<(), String> {
    let origin = Instant::now();
    let received = Arc::new(Mutex::new(Received::default()));
    for chunk in (0..args.subscribers).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(
            chunk
                .iter()
                .map(|&i| subscribe(&args, i, origin, received.clone())),
        )
        .await;
        opened.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    // Let the subscriptions settle (nchan subscribes to Redis per channel).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let total = args.rate * args.seconds;
    let failed = Arc::new(AtomicU64::new(0));
    let every = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut errors: HashMap<String, u64> = HashMap::new();
    for n in 0..total {
        tokio::time::sleep_until(started + every.mul_f64(n as f64)).await;
        let target = name(&args, (n as usize * 7919) % args.subscribers);
        let t = origin.elapsed().as_micros() as u64;
        let request = match args.proto.as_str() {
            "herald" => http
                .post(format!("http://{}/api/v1/publish", args.publish))
                .bearer_auth(API_KEY)
                .json(&serde_json::json!({"to": [target], "data": {"t": t}})),
            _ => http
                .post(format!("http://{}/pub/{target}", args.publish))
                .body(format!(r#"{{"t":{t}}}"#)),
        };
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    Some(format!("status {}", r.status()))
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    Some(e.without_url().to_string())
                }
            }
        }));
    }
    for task in tasks {
        if let Ok(Some(error)) = task.await {
            *errors.entry(error).or_default() += 1;
        }
    }
    // Stragglers get up to 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let got = received.lock().map(|r| r.latencies.len()).unwrap_or(0) as u64;
        if got + failed.load(Ordering::Relaxed) >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = received
        .lock()
        .map(|r| r.latencies.clone())
        .unwrap_or_default();
    latencies.sort_unstable();
    let delivered = latencies.len() as u64;
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "{:<7} {:>6}/s for {:>3} s, {:>5} subscribers: {:>7} delivered, {:>5} publish failures, {:>5} lost; publish -> receive p50 {:>7.2} ms, p99 {:>7.2} ms, p99.9 {:>7.2} ms",
        args.proto,
        args.rate,
        args.seconds,
        args.subscribers,
        delivered,
        failed,
        total.saturating_sub(delivered + failed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
    );
    for (error, count) in errors {
        eprintln!("  {count} publishes failed: {error}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match parse_args() {
        Ok(args) => latency(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_cluster: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
