//! What the delivery trace costs: the same publish load against herald
//! with `--trace-minutes 10` and with `--trace-minutes 0`, in alternating
//! runs, each on a fresh data dir: publishes per second, their latency,
//! and the server's memory growth, whose difference per event is the
//! trace's bytes per event.
//!
//! Run: `cargo build --release && cargo run --release --example bench_trace`
//! (`BENCH_SCALE=0.02` for a smoke run; `HERALD_BIN` to pick the binary).
//!
//! Load: 64 keep-alive clients `POST /api/v1/publish`, one recipient per
//! request, round-robin over 100 users (1 000 events each at full scale:
//! every one stays in the trace, which keeps 1 024 per user).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";
const CLIENTS: usize = 64;
const USERS: usize = 100;

fn scale() -> f64 {
    std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

#[path = "support/rss.rs"]
mod rss;
use rss::rss_kib;

/// A herald process on a fresh data dir, and its address.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(trace_minutes: u32) -> Server {
    let bin = std::env::var("HERALD_BIN").unwrap_or_else(|_| "target/release/herald".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(&bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--secret",
            SECRET,
            "--api-key",
            API_KEY,
        ])
        .args([
            "--send-rate",
            "0",
            "--trace-minutes",
            &trace_minutes.to_string(),
        ])
        .arg("--data")
        .arg(dir.path())
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (cargo build --release first): {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("herald exited").expect("a line");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };
    // Keep reading stdout so that the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base,
        _dir: dir,
    }
}

struct Run {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    grown_kib: i64,
}

async fn run(trace_minutes: u32, events: usize) -> Run {
    let server = start(trace_minutes);
    let http = reqwest::Client::new();
    let publish = |http: reqwest::Client, base: String, to: usize| async move {
        let body = json!({"to": [format!("u{to}")], "data": {"body": "x".repeat(150)}});
        let response = http
            .post(format!("{base}/api/v1/publish"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 200, "publish refused");
        let _ = response.bytes().await;
    };
    // Every user's queue exists before the memory is read.
    for u in 0..USERS {
        publish(http.clone(), server.base.clone(), u).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.child.id());
    let per = events / CLIENTS;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, base) = (reqwest::Client::new(), server.base.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per);
                for i in 0..per {
                    let t = Instant::now();
                    publish(http.clone(), base.clone(), (c * per + i) % USERS).await;
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.expect("client"));
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kib(server.child.id());
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Run {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        grown_kib: after as i64 - before as i64,
    }
}

#[tokio::main]
async fn main() {
    let events = ((100_000.0 * scale()) as usize).max(CLIENTS * 10) / CLIENTS * CLIENTS;
    let rounds = if scale() < 0.1 { 1 } else { 3 };
    println!(
        "delivery trace cost: {events} publishes (64 clients, {USERS} users), trace on/off alternating, {rounds} rounds"
    );
    println!("round  trace  publishes/s   p50 ms   p99 ms   RSS growth KiB");
    let mut per_event = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so that neither always runs on a
        // warmer disk.
        let order = if round % 2 == 1 { [10, 0] } else { [0, 10] };
        let mut on_off = [None, None];
        for minutes in order {
            let r = run(minutes, events).await;
            println!(
                "{round:>5}  {:>5}  {:>11.0}  {:>7.2}  {:>7.2}  {:>15}",
                if minutes > 0 { "on" } else { "off" },
                r.per_second,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.grown_kib
            );
            on_off[usize::from(minutes == 0)] = Some(r);
        }
        let (Some(on), Some(off)) = (&on_off[0], &on_off[1]) else {
            unreachable!("both ran")
        };
        per_event.push((on.grown_kib - off.grown_kib) as f64 * 1024.0 / events as f64);
        ratios.push(on.per_second / off.per_second);
    }
    per_event.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    println!(
        "trace memory per event (median of rounds): {:.0} B; publishes/s on ÷ off (median): {:.3} (all: {})",
        per_event[per_event.len() / 2],
        ratios[ratios.len() / 2],
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
