//! Wake-ups across nodes on a Redis Cluster: every node follows the
//! partitions' sharded channels (redis-rs keeps one subscription per
//! primary, and moves it after a failover or a slot migration), and a
//! probe of every primary that also tells `/healthz`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::try_join_all;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind};
use tokio::sync::mpsc;

use super::{ClusterStore, PARTITIONS};
use crate::store::redis::health::EVERY;
use crate::store::StoreError;
use crate::uid::Uid;

/// Follows the wake channels: sets local heads and forwards record
/// changes. A lost connection or a channel moved away (a failover, a slot
/// migration) marks the subscription lost: [`probe`] subscribes again.
pub(super) async fn wake_loop(
    mut received: mpsc::UnboundedReceiver<PushInfo>,
    store: Weak<ClusterStore>,
) {
    while let Some(push) = received.recv().await {
        let Some(store) = store.upgrade() else { return };
        match push.kind {
            PushKind::SMessage => {
                let changes = store.changes_channel();
                store.wakes.delivered(push.data, changes.as_bytes());
            }
            PushKind::Disconnection | PushKind::SUnsubscribe => {
                tracing::warn!(
                    "redis cluster wake subscription lost ({:?}); subscribing again",
                    push.kind
                );
                store.subscription_lost.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Subscribes `pubsub` to every wake channel and the changes channel, one
/// command per channel (a command's channels must share a slot; redis-rs
/// 1.8 resubscribes a node's shard channels in one command, which a
/// cluster refuses when they span slots, so herald does it itself).
pub(super) async fn subscribe(
    store: &ClusterStore,
    pubsub: &ClusterConnection,
) -> Result<(), StoreError> {
    let mut channels: Vec<String> = (0..PARTITIONS).map(|p| store.wake_channel(p)).collect();
    channels.push(store.changes_channel());
    channels.push(crate::store::redis::shared::BUS.to_owned());
    try_join_all(channels.iter().map(|channel| {
        let mut pubsub = pubsub.clone();
        async move { pubsub.ssubscribe(channel).await }
    }))
    .await?;
    Ok(())
}

/// Re-reads the head of every user with a local waiter, retrying until
/// the cluster answers.
async fn refresh_heads(store: Arc<ClusterStore>) {
    let users: Vec<Uid> = store.wakes.heads.iter().map(|e| e.key().clone()).collect();
    for uid in users {
        loop {
            let head: Result<Option<u64>, _> = redis::cmd("HGET")
                .arg(store.user_key(&uid, "m"))
                .arg("c")
                .query_async(&mut store.conn())
                .await;
            match head {
                Ok(head) => {
                    store.wakes.set(&uid, head.unwrap_or(0));
                    break;
                }
                Err(e) => {
                    tracing::debug!("re-reading heads after a resubscription: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// PINGs every primary each second for as long as the store lives, on
/// the command connections (for `/healthz`) and on the subscription's (so
/// that a dead primary is noticed there too, and its channels moved to
/// the replica that takes over: nothing else is sent on them). Both are
/// made anew when they have failed for [`RECONNECT_AFTER`] probes in a
/// row: redis-rs 1.8 may leave a node of a restarted cluster without a
/// connection, or the route of a migrated slot wedged, every command to
/// those slots then timing out, for good. So the probe also sends one
/// keyed command per partition.
pub(super) async fn probe(
    store: Weak<ClusterStore>,
    pubsub_client: ClusterClient,
    mut pubsub: ClusterConnection,
) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = 0u32;
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        if failed >= RECONNECT_AFTER {
            if let Ok(Ok(conn)) =
                tokio::time::timeout(EVERY, store.client.get_async_connection()).await
            {
                *store.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
            }
            if let Ok(Ok(conn)) =
                tokio::time::timeout(EVERY, pubsub_client.get_async_connection()).await
            {
                pubsub = conn;
                store.subscription_lost.store(true, Ordering::Relaxed);
            }
            tracing::warn!("redis cluster: not answering for {failed} s; connecting again");
            failed = 0;
        }
        let routing = || {
            RoutingInfo::MultiNode((
                MultipleNodeRoutingInfo::AllMasters,
                Some(ResponsePolicy::AllSucceeded),
            ))
        };
        let mut conn = store.conn();
        let ping = conn.route_command(redis::cmd("PING").clone(), routing());
        // One keyed command per partition: a connection wedged on the
        // route of one slot (seen after a slot migration) answers PING.
        let routes = try_join_all((0..PARTITIONS).map(|p| {
            let mut conn = store.conn();
            let key = store.wake_channel(p);
            async move {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
            }
        }));
        let pubsub_ping = pubsub.route_command(redis::cmd("PING").clone(), routing());
        let (ping, pubsub_ping, routes) = tokio::join!(
            tokio::time::timeout(EVERY, ping),
            tokio::time::timeout(EVERY, pubsub_ping),
            tokio::time::timeout(EVERY, routes)
        );
        if matches!(
            (&ping, &pubsub_ping, &routes),
            (Ok(Ok(_)), Ok(Ok(_)), Ok(Ok(_)))
        ) {
            failed = 0;
        } else {
            failed += 1;
        }
        if store.subscription_lost.swap(false, Ordering::Relaxed) {
            match subscribe(&store, &pubsub).await {
                Ok(()) => {
                    tracing::info!("redis cluster wake subscription back; re-reading every waiter");
                    let _ = store.wakes.changes.send(String::new());
                    tokio::spawn(refresh_heads(store.clone()));
                }
                Err(e) => {
                    tracing::debug!("subscribing again: {e}");
                    store.subscription_lost.store(true, Ordering::Relaxed);
                }
            }
        }
        match ping {
            Ok(Ok(_)) => store.health.answered(),
            Ok(Err(e)) => store.health.failed(e.to_string()),
            Err(_) => store
                .health
                .failed(format!("no answer to PING within {EVERY:?}")),
        }
    }
}

/// Failed probes in a row after which the connections are made anew.
const RECONNECT_AFTER: u32 = 3;
