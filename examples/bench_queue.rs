//! Benchmark of the durable queue: group-commit throughput and latency,
//! HTTP publish and direct messages, and long-poll wake latency.
//!
//! Run: `cargo run --release --example bench_queue`
//! (`BENCH_SCALE=0.2` for a quick run; CI runs `BENCH_SCALE=0.02` as a
//! smoke test that every stage still runs, asserting no timing).
//!
//! Every durable figure depends on the disk, whose fdatasync swings by 2x
//! from day to day on a shared box, so the run first measures the raw
//! fdatasync of a 4 KiB write in the same directory, and each stage prints
//! the mean group-commit batch (appends per flush) it got.
//!
//! 1. In-process: N concurrent appenders (1, 64, 1024) each append one
//!    event at a time to the sled store and wait for it to be durable
//!    (flush + fdatasync through the group-commit thread).
//! 2. Over HTTP: 64 keep-alive clients `POST /api/v1/publish`, one
//!    recipient each, against a real server in this process; then one
//!    client sends direct messages (`POST /v1/messages`) one at a time
//!    (the server runs with `--send-rate 0`: the per-user send limit would
//!    otherwise answer 429 after 40 messages).
//! 3. Wake latency: 200 users hold long-polls; a publisher sends 1 000
//!    events/s round-robin; latency = publish request sent → the held
//!    long-poll's answer received.

use std::sync::atomic::{AtomicU64, Ordering};
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
use herald::store::sled::SledStore;
use herald::store::{Append, EventQueue};
use herald::uid::Uid;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// The benchmark server's credentials (herald refuses shorter ones).
const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";
use tokio_util::sync::CancellationToken;

#[path = "support/disk.rs"]
mod disk;
use disk::fdatasync_figures;

/// What a stage returns: its failure is a sentence, printed before exit 1.
type Outcome<T = ()> = Result<T, String>;

/// A response with a success status, or why not (status and body).
async fn success(
    stage: &str,
    response: reqwest::Result<reqwest::Response>,
) -> Outcome<reqwest::Response> {
    let response = response.map_err(|e| format!("{stage}: request failed: {e}"))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(format!("{stage}: the server answered {status}: {body}"))
}

/// The mean number of appends per group-commit flush since `before`.
struct Batches {
    appends: u64,
    flushes: u64,
}

impl Batches {
    fn of(metrics: &Metrics) -> Batches {
        Batches {
            appends: metrics.appends.get(),
            flushes: metrics.flushes.get(),
        }
    }

    /// From the server's `/metrics`.
    async fn scrape(base: &str) -> Outcome<Batches> {
        let response = reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth(API_KEY)
            .send()
            .await;
        let text = success("metrics", response)
            .await?
            .text()
            .await
            .map_err(|e| format!("metrics: {e}"))?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .map(|v| v as u64)
                .ok_or_else(|| format!("metrics: no {name}"))
        };
        Ok(Batches {
            appends: value("herald_appends_total")?,
            flushes: value("herald_flushes_total")?,
        })
    }

    fn mean_since(&self, before: &Batches) -> String {
        let flushes = self.flushes.saturating_sub(before.flushes).max(1);
        let appends = self.appends.saturating_sub(before.appends);
        format!("batch {:.1}", appends as f64 / flushes as f64)
    }
}

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

fn report(name: &str, count: usize, elapsed: Duration, mut latencies: Vec<Duration>, batch: &str) {
    latencies.sort();
    println!(
        "{name:<44} {:>9.0} /s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({count} in {:.2} s, {batch})",
        count as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
    );
}

fn open_store(dir: &std::path::Path) -> Outcome<(SledStore, Arc<Metrics>)> {
    let metrics = Arc::new(Metrics::new());
    let store = SledStore::open(dir, SledOptions::default(), metrics.clone())
        .map_err(|e| format!("cannot open a store in {}: {e}", dir.display()))?;
    Ok((store, metrics))
}

fn temp_dir() -> Outcome<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))
}

fn raw(json: Value) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).unwrap_or_else(|_| unreachable!("serialised JSON"))
}

async fn in_process(appenders: usize, total: usize) -> Outcome {
    let dir = temp_dir()?;
    let (store, metrics) = open_store(dir.path())?;
    let store = Arc::new(store);
    let data = raw(json!({"body": "x".repeat(150)}));
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
                store
                    .append(vec![append])
                    .await
                    .map_err(|e| format!("in-process append: {e}"))?;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| format!("appender task: {e}"))??);
    }
    report(
        &format!("in-process append, {appenders} appenders"),
        per * appenders,
        started.elapsed(),
        latencies,
        &Batches::of(&metrics).mean_since(&Batches {
            appends: 0,
            flushes: 0,
        }),
    );
    Ok(())
}

/// One append call carrying one event for each of `users` users (the
/// shape of a publish to many recipients).
async fn fan_out_batch(users: usize, rounds: usize) -> Outcome {
    let dir = temp_dir()?;
    let (store, metrics) = open_store(dir.path())?;
    let data = raw(json!({"hello": "everyone"}));
    let uids: Vec<Uid> = (0..users)
        .map(|i| Uid::parse(&format!("u{i}")).map_err(|e| e.to_string()))
        .collect::<Outcome<_>>()?;
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
        store
            .append(batch)
            .await
            .map_err(|e| format!("batch append: {e}"))?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{:<44} {:>9.0} /s   one call: p50 {:>6.1} ms, max {:>6.1} ms ({})",
        format!("in-process batch to {users} users"),
        (users * rounds) as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        Batches::of(&metrics).mean_since(&Batches {
            appends: 0,
            flushes: 0
        }),
    );
    Ok(())
}

/// Starts a real herald on a loopback port inside this process.
/// With `--send-rate 0`: one sender sends as fast as it can.
async fn start_server(dir: &std::path::Path) -> Outcome<(String, CancellationToken)> {
    use clap::Parser;
    let config = Config::try_parse_from([
        "herald",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.to_str().ok_or("the temp dir is not UTF-8")?,
        "--secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--send-rate",
        "0",
    ])
    .map_err(|e| format!("server flags: {e}"))?;
    // Pick the port first so we know the address.
    let probe =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    let addr = probe.local_addr().map_err(|e| e.to_string())?;
    drop(probe);
    let config = Config {
        listen: addr,
        ..config
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move { herald::run(config, stop).await });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return Ok((base, shutdown));
        }
        if server.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match server.await {
        Ok(Err(e)) => Err(format!("the server did not start: {e}")),
        _ => Err("the server did not answer /healthz within 5 s".into()),
    }
}

async fn http_publish(base: &str, clients: usize, total: usize) -> Outcome {
    let before = Batches::scrape(base).await?;
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
                let sent = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let _ = success("HTTP publish", sent).await?.bytes().await;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| format!("publish client task: {e}"))??);
    }
    let elapsed = started.elapsed();
    let batch = Batches::scrape(base).await?.mean_since(&before);
    report(
        &format!("HTTP publish, {clients} clients"),
        per * clients,
        elapsed,
        latencies,
        &batch,
    );
    Ok(())
}

/// One client sends `count` direct messages one after another
/// (`POST /v1/messages`, answered once durable).
async fn token(http: &reqwest::Client, base: &str, uid: &str) -> Outcome<String> {
    let sent = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(API_KEY)
        .json(&json!({ "uid": uid }))
        .send()
        .await;
    let body: Value = success("token", sent)
        .await?
        .json()
        .await
        .map_err(|e| format!("token: {e}"))?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("token: no token in {body}"))
}

async fn direct_messages(base: &str, count: usize) -> Outcome {
    let http = reqwest::Client::new();
    let before = Batches::scrape(base).await?;
    let token = token(&http, base, "dm-sender").await?;
    let url = format!("{base}/v1/messages");
    let body = json!({"to": "dm-recipient", "body": "x".repeat(150)}).to_string();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        let sent = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let _ = success("direct message", sent).await?.bytes().await;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let batch = Batches::scrape(base).await?.mean_since(&before);
    report(
        "direct message, 1 sender",
        count,
        elapsed,
        latencies,
        &batch,
    );
    Ok(())
}

async fn wake_latency(base: &str, users: usize, rate: u64, seconds: u64) -> Outcome {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(users + 8)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let before = Batches::scrape(base).await?;
    let epoch = Instant::now();
    let total = rate * seconds;
    // The pollers stop once every acknowledged event came (or, bounded,
    // well after the publishing: a busy box delivers late, which the
    // figures show).
    let delivered = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let mut pollers = Vec::new();
    for u in 0..users {
        let token = token(&http, base, &format!("w{u}")).await?;
        let http = http.clone();
        let base = base.to_owned();
        let (delivered, expected) = (delivered.clone(), expected.clone());
        pollers.push(tokio::spawn(async move {
            let mut cursor = 0u64;
            let mut latencies = Vec::new();
            let deadline = epoch + Duration::from_secs(seconds + 30);
            while Instant::now() < deadline
                && delivered.load(Ordering::Relaxed) < expected.load(Ordering::Relaxed)
            {
                // A poll refused or cut (a busy box, the connection caps)
                // is made again: its events are still in the queue.
                let Ok(response) = http
                    .get(format!("{base}/v1/longpoll?cursor={cursor}&timeout=2"))
                    .bearer_auth(&token)
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(body) = response.json::<Value>().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let now = epoch.elapsed();
                for event in body["events"].as_array().into_iter().flatten() {
                    let sent =
                        Duration::from_micros(event["data"]["sent_us"].as_u64().unwrap_or(0));
                    latencies.push(now.saturating_sub(sent));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                cursor = body["cursor"].as_u64().unwrap_or(cursor);
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the polls be held
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
            let sent = http.post(url).bearer_auth(API_KEY).json(&body).send().await;
            sent.is_ok_and(|r| r.status().is_success())
        }));
    }
    let mut acknowledged = 0u64;
    for s in sends {
        acknowledged += u64::from(s.await.unwrap_or(false));
    }
    expected.store(acknowledged, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for p in pollers {
        latencies.extend(p.await.map_err(|e| format!("poller task: {e}"))?);
    }
    let count = latencies.len();
    let batch = Batches::scrape(base).await?.mean_since(&before);
    report(
        &format!("long-poll wake, {users} users, {rate} events/s"),
        count,
        publishing,
        latencies,
        &batch,
    );
    if acknowledged < total {
        println!(
            "  ({} of {total} publishes were refused or failed: the box could not take the rate)",
            total - acknowledged
        );
    }
    if count as u64 != acknowledged {
        return Err(format!(
            "long-poll wake: {count} of {acknowledged} acknowledged events delivered"
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_queue failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Outcome {
    let s = scale();
    let dir = temp_dir()?;
    println!(
        "herald queue benchmark (BENCH_SCALE={s}); machine: {} cores; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        fdatasync_figures(dir.path(), (500.0 * s).max(20.0) as usize)?,
    );
    in_process(1, (5_000.0 * s).max(64.0) as usize).await?;
    in_process(64, (200_000.0 * s).max(64.0) as usize).await?;
    in_process(1024, (200_000.0 * s).max(1024.0) as usize).await?;
    fan_out_batch(10_000, (10.0 * s).max(2.0) as usize).await?;

    let (base, shutdown) = start_server(dir.path()).await?;
    println!("(server in this process, --send-rate 0)");
    http_publish(&base, 64, (100_000.0 * s).max(64.0) as usize).await?;
    direct_messages(&base, (2_000.0 * s).max(10.0) as usize).await?;
    wake_latency(&base, 200, 1000, (10.0 * s).max(2.0) as u64).await?;
    shutdown.cancel();
    println!(
        "disk after the run: {}",
        fdatasync_figures(dir.path(), (500.0 * s).max(20.0) as usize)?
    );
    Ok(())
}
