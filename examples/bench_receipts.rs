//! What group read receipts cost the sender: a group of `--members`
//! (200), `--online` of them (40) on WebSockets marking every message read
//! as it comes; the sender posts `--messages` (100) at `--rate` a second
//! and follows its queue over SSE. Prints what reached the sender for its
//! receipts (events, keepalives carrying them, bytes) until it knows every
//! message read by every online member. Run against a herald started with
//! `--group-receipts push` and with `keepalive` (`scripts/bench-latency.sh`
//! does both).
//!
//! ```text
//! bench_receipts --addr 127.0.0.1:PORT [--members N] [--online N] [--messages N] [--rate R]
//! ```

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/token.rs"]
mod token;
use token::token;

const SECRET: &str = "bench-secret-0123456789abcdefghij";
const API_KEY: &str = "bench-api-key-0123";
const GID: &str = "bench";

/// The newest read count per msgid a receipt carried: a `group_receipt`
/// event's `receipts`, or a keepalive's `receipts.{gid}`.
fn counts(event: &Value) -> Vec<(u64, u64)> {
    let list: Vec<(u64, u64)> = match event["type"].as_str() {
        Some("group_receipt") => event["data"]["receipts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["msgid"].as_u64()?, r["read"].as_u64()?)))
            .collect(),
        Some("hb") => event["receipts"][GID]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(m, c)| Some((m.parse().ok()?, c["read"].as_u64()?)))
            .collect(),
        _ => Vec::new(),
    };
    list
}

async fn run(
    addr: &str,
    members: usize,
    online: usize,
    messages: u64,
    rate: u64,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let uids: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
    let put = http
        .put(format!("http://{addr}/api/v1/groups/{GID}/members"))
        .bearer_auth(API_KEY)
        .json(&json!({ "members": uids }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !put.status().is_success() {
        return Err(format!("members: {}", put.status()));
    }
    // The online members read each message as it comes.
    for uid in uids.iter().skip(1).take(online) {
        let url = format!("ws://{addr}/v1/ws?token={}", token(SECRET, uid));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("{uid}: {e}"))?;
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(msgid) = event["data"]["msgid"]
                    .as_u64()
                    .filter(|_| event["type"] == "group_msg")
                {
                    let read = json!({"op": "group_read", "gid": GID, "msgid": msgid});
                    if ws.send(Message::text(read.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // The sender follows its queue; what concerns receipts is counted.
    let sender = token(SECRET, &uids[0]);
    let stream = http
        .get(format!("http://{addr}/v1/sse?token={sender}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let follower = tokio::spawn(async move {
        let (mut events, mut keepalives, mut bytes) = (0u64, 0u64, 0usize);
        let mut read: std::collections::BTreeMap<u64, u64> = Default::default();
        let mut body = stream.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                let got = counts(&event);
                if got.is_empty() {
                    continue;
                }
                if event["type"] == "hb" {
                    keepalives += 1;
                } else {
                    events += 1;
                }
                bytes += block.len();
                read.extend(got);
                let done =
                    read.len() as u64 == messages && read.values().all(|&r| r == online as u64);
                if done {
                    return Some((events, keepalives, bytes, started.elapsed()));
                }
            }
        }
        None
    });
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    for n in 0..messages {
        let posted = http
            .post(format!("http://{addr}/v1/groups/{GID}/messages"))
            .bearer_auth(&sender)
            .json(&json!({ "body": n }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !posted.status().is_success() {
            return Err(format!("post {n}: {}", posted.status()));
        }
        tokio::time::sleep(every).await;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .map_err(|_| "the sender never learnt every receipt within 60 s".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("the sender's stream ended")?;
    let (events, keepalives, bytes, took) = outcome;
    println!(
        "receipts to the sender ({members} members, {online} online, {messages} messages at {rate}/s): {events} receipt events, {keepalives} keepalives carrying receipts, {bytes} bytes; every count known after {:.1} s",
        took.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut members, mut online, mut messages, mut rate) =
        ("127.0.0.1:18080".to_owned(), 200, 40, 100, 10);
    while let (Some(flag), Some(value)) = (args.next(), args.next()) {
        let parsed = value.parse::<u64>();
        match (flag.as_str(), parsed) {
            ("--addr", _) => addr = value,
            ("--members", Ok(n)) => members = n as usize,
            ("--online", Ok(n)) => online = n as usize,
            ("--messages", Ok(n)) => messages = n,
            ("--rate", Ok(n)) if n > 0 => rate = n,
            _ => {
                eprintln!("bench_receipts: bad {flag} {value}\nusage: bench_receipts --addr ADDR [--members N] [--online N] [--messages N] [--rate R]");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if online >= members {
        eprintln!("bench_receipts: --online must be below --members (the sender is one of them)");
        return std::process::ExitCode::FAILURE;
    }
    match run(&addr, members, online, messages, rate).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_receipts: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
