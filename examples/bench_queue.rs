//! Benchmark of the durable queue: group-commit throughput and latency,
//! HTTP publish and direct messages, and long-poll wake latency.
//!
//! Run: `cargo run --release --example bench_queue`
//! (`BENCH_SCALE=0.2` for a quick run).
//!
//! 1. In-process: N concurrent appenders (1, 64, 1024) each append one
//!    event at a time to the sled store and wait for it to be durable
//!    (flush + fdatasync through the group-commit thread).
//! 2. Over HTTP: 64 keep-alive clients `POST /api/v1/publish`, one
//!    recipient each, against a real server in this process; then one
//!    client sends direct messages (`POST /v1/messages`) one at a time.
//! 3. Wake latency: 200 users hold long-polls; a publisher sends 1 000
//!    events/s round-robin; latency = publish request sent → the held
//!    long-poll's answer received.

use std::sync::Arc;

/// sled allocates and frees a node copy on most writes; mimalloc's
/// thread-local heaps cut that cost and the arena-lock contention of glibc's
/// malloc (measured by examples/bench_queue).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use herald::config::Config;
use herald::metrics::Metrics;
use herald::store::sled::SledOptions;
use herald::store::{Append, SledStore, Store};
use herald::uid::Uid;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The benchmark server's credentials (herald refuses shorter ones).
const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";
use tokio_util::sync::CancellationToken;

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name:<44} {:>9.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({count} in {:.2} s)",
        count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
    );
}

async fn in_process(appenders: usize, total: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SledStore::open(dir.path(), SledOptions::default(), Arc::new(Metrics::new()))
            .expect("open store"),
    );
    let data = RawValue::from_string(json!({"body": "x".repeat(150)}).to_string()).expect("raw");
    let per = total / appenders;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let store = store.clone();
        let data = data.clone();
        let uid = Uid::parse(&format!("user{}", a % 10_000)).expect("uid");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let append = Append {
                    uid: uid.clone(),
                    kind: "notice".into(),
                    data: data.clone(),
                };
                store.append(vec![append]).await.expect("append");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("appender"));
    }
    report(
        &format!("in-process append, {appenders} appenders"),
        per * appenders,
        started.elapsed(),
        latencies,
    );
}

/// One append call carrying one event for each of `users` users (the
/// shape of a publish to many recipients).
async fn fan_out_batch(users: usize, rounds: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), SledOptions::default(), Arc::new(Metrics::new()))
        .expect("open store");
    let data = RawValue::from_string(json!({"hello": "everyone"}).to_string()).expect("raw");
    let uids: Vec<Uid> = (0..users)
        .map(|i| Uid::parse(&format!("u{i}")).expect("uid"))
        .collect();
    let mut latencies = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        let batch = uids
            .iter()
            .map(|uid| Append {
                uid: uid.clone(),
                kind: "notice".into(),
                data: data.clone(),
            })
            .collect();
        let t = Instant::now();
        store.append(batch).await.expect("append");
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{:<44} {:>9.0} /s   one batch: p50 {:>6.1} ms, max {:>6.1} ms",
        format!("in-process batch to {users} users"),
        (users * rounds) as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// Starts a real herald on a loopback port inside this process.
async fn start_server(dir: &std::path::Path) -> (String, CancellationToken) {
    use clap::Parser;
    let config = Config::parse_from([
        "herald",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.to_str().expect("utf-8 dir"),
        "--secret",
        SECRET,
        "--api-key",
        API_KEY,
    ]);
    // Pick the port first so we know the address.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let config = Config {
        listen: addr,
        ..config
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move { herald::run(config, stop).await.expect("server") });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (base, shutdown)
}

async fn http_publish(base: &str, clients: usize, total: usize) {
    let per = total / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = reqwest::Client::new();
        let url = format!("{base}/api/v1/publish");
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"to": [format!("h{c}")], "data": {"body": "x".repeat(150)}}).to_string();
            let mut latencies = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("publish");
                assert!(response.status().is_success());
                let _ = response.bytes().await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    report(
        &format!("HTTP publish, {clients} clients"),
        per * clients,
        started.elapsed(),
        latencies,
    );
}

/// One client sends `count` direct messages one after another
/// (`POST /v1/messages`, answered once durable).
async fn direct_messages(base: &str, count: usize) {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(API_KEY)
        .json(&json!({"uid": "dm-sender"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token = token["token"].as_str().expect("token").to_owned();
    let url = format!("{base}/v1/messages");
    let body = json!({"to": "dm-recipient", "body": "x".repeat(150)}).to_string();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let response = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert!(response.status().is_success());
        let _ = response.bytes().await;
        latencies.push(t.elapsed());
    }
    report(
        "direct message, 1 sender",
        count,
        started.elapsed(),
        latencies,
    );
}

async fn wake_latency(base: &str, users: usize, rate: u64, seconds: u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(users + 8)
        .build()
        .expect("client");
    let epoch = Instant::now();
    let mut pollers = Vec::new();
    for u in 0..users {
        let token: Value = http
            .post(format!("{base}/api/v1/tokens"))
            .bearer_auth(API_KEY)
            .json(&json!({"uid": format!("w{u}")}))
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("token json");
        let token = token["token"].as_str().expect("token").to_owned();
        let http = http.clone();
        let base = base.to_owned();
        pollers.push(tokio::spawn(async move {
            let mut cursor = 0u64;
            let mut latencies = Vec::new();
            let deadline = epoch + Duration::from_secs(seconds + 3);
            while Instant::now() < deadline {
                let Ok(response) = http
                    .get(format!("{base}/v1/longpoll?cursor={cursor}&timeout=2"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                let now = epoch.elapsed();
                for event in body["events"].as_array().into_iter().flatten() {
                    let sent =
                        Duration::from_micros(event["data"]["sent_us"].as_u64().unwrap_or(0));
                    latencies.push(now.saturating_sub(sent));
                }
                cursor = body["cursor"].as_u64().unwrap_or(cursor);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the polls be held
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut sends = Vec::new();
    let publishing = Duration::from_secs(seconds);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let http = http.clone();
        let url = format!("{base}/api/v1/publish");
        let body = json!({"to": [format!("w{}", i as usize % users)], "data": {"sent_us": epoch.elapsed().as_micros() as u64}});
        sends.push(tokio::spawn(async move {
            let _ = http.post(url).bearer_auth(API_KEY).json(&body).send().await;
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let mut latencies = Vec::new();
    for p in pollers {
        latencies.extend(p.await.expect("poller"));
    }
    let count = latencies.len();
    report(
        &format!("long-poll wake, {users} users, {rate} events/s"),
        count,
        publishing,
        latencies,
    );
    if count as u64 != total {
        println!("  WARNING: {count} of {total} events delivered");
    }
}

#[tokio::main]
async fn main() {
    let s = scale();
    println!(
        "herald queue benchmark (BENCH_SCALE={s}); machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    in_process(1, (5_000.0 * s) as usize).await;
    in_process(64, (200_000.0 * s) as usize).await;
    in_process(1024, (200_000.0 * s) as usize).await;
    fan_out_batch(10_000, (10.0 * s).max(2.0) as usize).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let (base, shutdown) = start_server(dir.path()).await;
    http_publish(&base, 64, (100_000.0 * s) as usize).await;
    direct_messages(&base, (2_000.0 * s) as usize).await;
    wake_latency(&base, 200, 1000, (10.0 * s).max(2.0) as u64).await;
    shutdown.cancel();
}
