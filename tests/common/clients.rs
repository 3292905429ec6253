//! Real clients of each transport, as a browser would use them: they read
//! events, remember their cursor, and reconnect from it when the server
//! goes away.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub const TRANSPORTS: [&str; 5] = ["poll", "longpoll", "iframe", "sse", "ws"];

/// The base URL clients connect to; a test changes it after a restart.
pub type Base = Arc<Mutex<String>>;

/// Extracts every JSON argument of `parent.CB(...)` calls from iframe HTML.
pub fn iframe_calls(html: &str, cb: &str) -> Vec<Value> {
    let needle = format!("parent.{cb}(");
    html.split(&needle)
        .skip(1)
        .filter_map(|rest| {
            serde_json::Deserializer::from_str(rest)
                .into_iter::<Value>()
                .next()?
                .ok()
        })
        .collect()
}

/// Events from the `data:` lines of complete SSE blocks in `buf`; leaves an
/// incomplete block in `buf`.
pub fn sse_events(buf: &mut String) -> Vec<Value> {
    let mut events = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        for line in block.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                if let Ok(v) = serde_json::from_str(data) {
                    events.push(v);
                }
            }
        }
    }
    events
}

/// Reads one connection of `transport` from `cursor`, handing each event to
/// `sink`; returns when the connection ends or `sink` returns false.
pub async fn read_once(
    transport: &str,
    base: &str,
    token: &str,
    cursor: u64,
    sink: &mut (dyn FnMut(Value) -> bool + Send),
) {
    let http = reqwest::Client::new();
    match transport {
        "poll" | "longpoll" => {
            let url = format!("{base}/v1/{transport}?cursor={cursor}&timeout=2&limit=50");
            let Ok(response) = http.get(url).bearer_auth(token).send().await else {
                return;
            };
            let Ok(body) = response.json::<Value>().await else {
                return;
            };
            for event in body["events"].as_array().into_iter().flatten() {
                if !sink(event.clone()) {
                    return;
                }
            }
            if transport == "poll" && body["events"].as_array().is_some_and(|e| e.is_empty()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "sse" | "iframe" => {
            let url = if transport == "sse" {
                format!("{base}/v1/sse?cursor={cursor}")
            } else {
                format!("{base}/v1/iframe?cursor={cursor}&cb=cb")
            };
            let Ok(response) = http.get(url).bearer_auth(token).send().await else {
                return;
            };
            if !response.status().is_success() {
                return;
            }
            let mut stream = response.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                let events: Vec<Value> = if transport == "sse" {
                    // Queue events only: not the `hello` a stream opens with.
                    sse_events(&mut buf)
                        .into_iter()
                        .filter(|e| e.get("seq").is_some())
                        .collect()
                } else {
                    let Some(cut) = buf.rfind("</script>") else {
                        continue;
                    };
                    let done: String = buf.drain(..cut + 9).collect();
                    iframe_calls(&done, "cb")
                        .into_iter()
                        .filter(|e| e.get("seq").is_some() && e["type"] != "reconnect")
                        .collect()
                };
                for event in events {
                    if !sink(event) {
                        return;
                    }
                }
            }
        }
        "ws" => {
            let url = format!(
                "{}/v1/ws?cursor={cursor}&token={token}",
                base.replacen("http", "ws", 1)
            );
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if event.get("seq").is_none() {
                    continue;
                }
                let seq = event["seq"].as_u64().unwrap_or(0);
                let more = sink(event);
                let _ = ws
                    .send(Message::text(format!(r#"{{"op":"ack","seq":{seq}}}"#)))
                    .await;
                if !more {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
        other => panic!("unknown transport {other}"),
    }
}

/// Follows `transport` until an event with seq ≥ `until` arrives or
/// `within` passes, reconnecting from the last seen seq; returns every
/// event received, in order.
pub async fn follow(
    transport: &str,
    base: Base,
    token: String,
    until: Arc<Mutex<u64>>,
    within: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let cursor = seen
            .last()
            .map(|e| e["seq"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        let target = *until.lock().unwrap();
        if (target > 0 && cursor >= target) || tokio::time::Instant::now() > deadline {
            return seen;
        }
        let url = base.lock().unwrap().clone();
        let last = Arc::new(std::sync::atomic::AtomicU64::new(cursor));
        let reached = {
            let (last, until) = (last.clone(), until.clone());
            async move {
                loop {
                    let target = *until.lock().unwrap();
                    if target > 0 && last.load(std::sync::atomic::Ordering::SeqCst) >= target {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let mut sink = |event: Value| {
            let seq = event["seq"].as_u64().unwrap_or(0);
            seen.push(event);
            last.store(seq, std::sync::atomic::Ordering::SeqCst);
            let target = *until.lock().unwrap();
            !(target > 0 && seq >= target)
        };
        let read = read_once(transport, &url, &token, cursor, &mut sink);
        tokio::select! {
            _ = read => {}
            _ = reached => {}
            _ = tokio::time::sleep_until(deadline) => return seen,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `{"p","n"}` events to `uid` through `base` until `stop`,
/// retrying what fails (the server may be down, or `base` may point at
/// another node each time), counting each acknowledged one in `total`;
/// returns the acknowledged seq of each.
pub async fn publisher(
    p: u64,
    base: Base,
    uid: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
    total: Arc<std::sync::atomic::AtomicU64>,
) -> std::collections::BTreeMap<u64, (u64, u64)> {
    use std::sync::atomic::Ordering;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut acked = std::collections::BTreeMap::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let url = format!("{}/api/v1/publish", base.lock().unwrap());
        let sent = http
            .post(url)
            .bearer_auth(super::API_KEY)
            .json(&serde_json::json!({"to": [uid], "data": {"p": p, "n": n}}))
            .send()
            .await;
        let seq = match sent {
            Ok(response) => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| b["seqs"][uid].as_u64()),
            Err(_) => None,
        };
        match seq {
            Some(seq) => {
                assert!(
                    acked.insert(seq, (p, n)).is_none(),
                    "seq {seq} acknowledged twice"
                );
                total.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    acked
}

/// One [`follow`] per transport, all from `base`, each returning its
/// transport's name and what it received.
pub fn follow_every_transport(
    base: &Base,
    token: &str,
    until: &Arc<Mutex<u64>>,
    within: Duration,
) -> Vec<tokio::task::JoinHandle<(String, Vec<Value>)>> {
    TRANSPORTS
        .iter()
        .map(|t| {
            let (t, base, token, until) =
                (t.to_string(), base.clone(), token.to_owned(), until.clone());
            tokio::spawn(async move {
                let events = follow(&t, base, token, until, within).await;
                (t, events)
            })
        })
        .collect()
}

/// Asserts that `events` (from seq 1, gap-free) hold at each acknowledged
/// seq the `{"p","n"}` that [`publisher`] acknowledged for it.
pub fn assert_acknowledged(
    events: &[Value],
    acked: &std::collections::BTreeMap<u64, (u64, u64)>,
    who: &str,
) {
    for (seq, (p, n)) in acked {
        let data = &events[*seq as usize - 1]["data"];
        assert_eq!(
            (data["p"].as_u64(), data["n"].as_u64()),
            (Some(*p), Some(*n)),
            "{who}: seq {seq}"
        );
    }
}

/// Waits for every consumer of [`follow_every_transport`] and asserts that
/// each got every event 1..=`last` exactly once, in order, and each
/// acknowledged one as it was published.
pub async fn assert_every_consumer_got_all(
    consumers: Vec<tokio::task::JoinHandle<(String, Vec<Value>)>>,
    last: u64,
    acked: &std::collections::BTreeMap<u64, (u64, u64)>,
) {
    for consumer in consumers {
        let (transport, events) = consumer.await.expect("a consumer");
        let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "{transport}: not every event exactly once, in order"
        );
        assert_acknowledged(&events, acked, &transport);
    }
}

/// A base URL that moves to the next of `bases` every few milliseconds, so
/// that consecutive requests of one client land on different nodes.
pub fn rotating(bases: Vec<String>) -> (Base, tokio::task::JoinHandle<()>) {
    let base: Base = Arc::new(Mutex::new(bases[0].clone()));
    let turn = base.clone();
    let rotator = tokio::spawn(async move {
        for i in 1.. {
            tokio::time::sleep(Duration::from_millis(15)).await;
            *turn.lock().unwrap() = bases[i % bases.len()].clone();
        }
    });
    (base, rotator)
}

pub fn bases(nodes: &[super::Server]) -> Vec<String> {
    nodes.iter().map(|n| n.base.clone()).collect()
}

/// Every event of the owner of `token`, by short polls to `base`; a poll
/// the store cannot answer for now (503 or 504 while Redis comes back) is
/// made again, as a client would.
pub async fn poll_all(base: &str, token: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut all = Vec::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let cursor = all.last().map_or(0, |e: &Value| e["seq"].as_u64().unwrap());
        let response = http
            .get(format!("{base}/v1/poll?cursor={cursor}&limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status().is_server_error() && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body: Value = response.json().await.unwrap();
        let page = body["events"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Runs 3 publishers and one consumer per transport on `uid` (every
/// request to another of `bases`), runs `meanwhile` halfway, and checks
/// that every consumer got every event once and in order, that seqs are
/// gap-free, and that each acknowledged event is the one published.
pub async fn publish_and_follow<Fut>(
    bases: Vec<String>,
    token: String,
    uid: &'static str,
    meanwhile: Fut,
) where
    Fut: std::future::Future<Output = ()>,
{
    let (base, rotator) = rotating(bases.clone());
    let until = Arc::new(Mutex::new(0u64));
    let consumers = follow_every_transport(&base, &token, &until, Duration::from_secs(90));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishers: Vec<_> = (0..3)
        .map(|p| tokio::spawn(publisher(p, base.clone(), uid, stop.clone(), total.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    meanwhile.await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Enough events to be worth checking, however busy the box (the 31st
    // may come late when the store was just down): at most 60 s more.
    super::eventually(Duration::from_secs(60), || async {
        total.load(std::sync::atomic::Ordering::SeqCst) > 30
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = std::collections::BTreeMap::new();
    for publisher in publishers {
        acked.extend(publisher.await.unwrap());
    }
    let all = poll_all(&bases[0], &token).await;
    let last = all.last().expect("events")["seq"].as_u64().unwrap();
    assert_eq!(
        super::seqs(&all),
        (1..=last).collect::<Vec<_>>(),
        "seqs gap-free"
    );
    *until.lock().unwrap() = last;
    assert!(acked.len() > 30, "only {} events published", acked.len());
    assert_acknowledged(&all, &acked, "the queue");
    assert_every_consumer_got_all(consumers, last, &acked).await;
    rotator.abort();
    eprintln!("{} events acknowledged, head {last}", acked.len());
}

/// A token for `uid` from `base`, if it answers.
async fn token_from(http: &reqwest::Client, base: &str, uid: &str) -> Option<String> {
    let response = http
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(super::API_KEY)
        .json(&json!({"uid": uid}))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["token"].as_str().map(str::to_owned)
}

/// Sends `per` direct messages in each of `conversations` conversations
/// (`c{i}a` to `c{i}b`, body `{"conv": i, "n": n}`, each under its own
/// `cid`), through the next of `bases` each time, retrying what the
/// server cannot answer now with the same cid, until every one is
/// acknowledged.
pub async fn converse(bases: &[String], conversations: usize, per: u64) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut turn = 0;
    for n in 0..per {
        for i in 0..conversations {
            let from = format!("c{i}a");
            let body = json!({"to": format!("c{i}b"), "body": {"conv": i, "n": n}, "cid": format!("{i}-{n}")});
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                turn += 1;
                let base = &bases[turn % bases.len()];
                let sent = match token_from(&http, base, &from).await {
                    Some(token) => http
                        .post(format!("{base}/v1/messages"))
                        .bearer_auth(token)
                        .json(&body)
                        .send()
                        .await
                        .ok(),
                    None => None,
                };
                if sent.is_some_and(|r| r.status() == 200) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < give_up,
                    "message {i}-{n} never acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads every partition of the feed from `base` until each conversation
/// of [`converse`] has its `per` messages, de-duplicating by seq within a
/// partition (a consumer resuming from its cursor), and asserts that each
/// conversation is in one partition, in order, each message once.
pub async fn assert_feed_partitions(base: &str, partitions: u32, conversations: usize, per: u64) {
    let http = reqwest::Client::new();
    let mut by_conv: std::collections::BTreeMap<u64, (u32, Vec<u64>)> = Default::default();
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    for p in 0..partitions {
        let mut cursor = 0u64;
        let mut epoch: Option<String> = None;
        loop {
            let mut url = format!("{base}/api/v1/feed?partition={p}&cursor={cursor}&limit=1000");
            if let Some(e) = &epoch {
                url.push_str(&format!("&epoch={e}"));
            }
            let page: Value = match http.get(url).bearer_auth(super::API_KEY).send().await {
                Ok(r) if r.status() == 200 => r.json().await.unwrap(),
                _ => {
                    assert!(
                        std::time::Instant::now() < give_up,
                        "partition {p} unreadable"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let events = page["events"].as_array().cloned().unwrap_or_default();
            epoch = page["epoch"].as_str().map(str::to_owned);
            for event in &events {
                let seq = event["seq"].as_u64().unwrap();
                assert!(
                    seq > cursor,
                    "partition {p}: seq {seq} again after {cursor}"
                );
                cursor = seq;
                if event["type"] != "msg" {
                    continue;
                }
                let body = &event["data"]["body"];
                let (conv, n) = (body["conv"].as_u64().unwrap(), body["n"].as_u64().unwrap());
                let (home, ns) = by_conv.entry(conv).or_insert((p, Vec::new()));
                assert_eq!(*home, p, "conversation {conv} in partitions {home} and {p}");
                ns.push(n);
            }
            if events.is_empty() {
                break;
            }
        }
    }
    assert_eq!(by_conv.len(), conversations, "conversations in the feed");
    let used: std::collections::BTreeSet<u32> = by_conv.values().map(|(p, _)| *p).collect();
    assert_eq!(used.len() as u32, partitions, "every partition used");
    for (conv, (_, ns)) in by_conv {
        assert_eq!(
            ns,
            (0..per).collect::<Vec<_>>(),
            "conversation {conv}: in order, once each"
        );
    }
}
