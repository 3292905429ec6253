//! Crash cycles: publishers and one consumer per transport run while the
//! server is killed with SIGKILL at random moments and restarted on the
//! same data dir and port. Every event acknowledged to a publisher reaches
//! every consumer exactly once and in order, and no seq is handed out twice.
//!
//! 10 cycles by default; `HERALD_SOAK_S=600 cargo test --release --test
//! crash_cycles` keeps cycling for that many seconds.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clients::{assert_every_consumer_got_all, follow_every_transport, publisher, Base};
use common::Server;
use rand::Rng;

const PUBLISHERS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_cycles_lose_duplicate_or_reorder_nothing_on_any_transport() {
    let soak = std::env::var("HERALD_SOAK_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let mut server = Server::start().await;
    let token = server.token("cycled").await;
    let base: Base = Arc::new(Mutex::new(server.base.clone()));
    let until = Arc::new(Mutex::new(0u64));
    let within = Duration::from_secs(soak.unwrap_or(0) + 120);
    let consumers = follow_every_transport(&base, &token, &until, within);
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let total = Arc::new(AtomicU64::new(0));
            tokio::spawn(publisher(p, base.clone(), "cycled", stop.clone(), total))
        })
        .collect();

    let started = Instant::now();
    let mut cycles = 0;
    while cycles < 10 || soak.is_some_and(|s| started.elapsed() < Duration::from_secs(s)) {
        let wait = rand::rng().random_range(100..700);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.restart_same_port().await;
        assert_eq!(
            *base.lock().unwrap(),
            server.base,
            "same address after restart"
        );
        cycles += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = BTreeMap::new();
    for publisher in publishers {
        acked.extend(publisher.await.unwrap());
    }
    let head = server.poll_all(&token).await;
    let last = head.last().expect("events")["seq"].as_u64().unwrap();
    *until.lock().unwrap() = last;
    assert!(acked.len() > 50, "only {} events published", acked.len());
    assert_every_consumer_got_all(consumers, last, &acked).await;
    eprintln!(
        "{cycles} kill -9 cycles, {} events acknowledged, head {last}",
        acked.len()
    );
}
