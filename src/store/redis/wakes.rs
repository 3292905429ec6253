//! Wake-ups across nodes: every node follows the wake channels on one
//! subscription and raises its local waiters' heads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind};
use tokio::sync::{broadcast, mpsc, watch};

use super::{bytes, meta_key, RedisStore, Wakes, CHANGES};
use crate::store::StoreError;
use crate::uid::Uid;
use crate::util::SharedMap;

impl Wakes {
    pub(in crate::store) fn new() -> Wakes {
        Wakes {
            heads: SharedMap::default(),
            changes: broadcast::channel(1024).0,
            signals: broadcast::channel(1024).0,
            bus: broadcast::channel(256).0,
        }
    }

    /// Sets `uid`'s head to `seq` as Redis reported it: lower too, since a
    /// queue recreated under a new epoch starts again at 1 (its waiters
    /// re-read and find the new epoch).
    pub(in crate::store) fn set(&self, uid: &Uid, seq: u64) {
        if let Some(head) = self.heads.get(uid) {
            head.send_if_modified(|h| std::mem::replace(h, seq) != seq);
        }
    }

    /// Takes a message pushed on a wake channel (`uid seq`: sets the head;
    /// `uid {json}`: a signal, forwarded), on the `changes` channel
    /// (forwards the change) or on the nodes' bus (forwards the message).
    pub(in crate::store) fn delivered(&self, data: Vec<redis::Value>, changes: &[u8]) {
        let mut data = data.into_iter();
        let (Some(channel), Some(message)) = (data.next(), data.next()) else {
            return;
        };
        let (Some(channel), Some(message)) = (bytes(channel), bytes(message)) else {
            return;
        };
        if channel == changes {
            let _ = self
                .changes
                .send(String::from_utf8_lossy(&message).into_owned());
            return;
        }
        if channel == super::shared::BUS.as_bytes() {
            let _ = self.bus.send(message.into());
            return;
        }
        if let Some(at) = message.iter().position(|&b| b == b' ') {
            if message.get(at + 1) == Some(&b'{') {
                let uid = std::str::from_utf8(&message[..at]).ok();
                if let Some(uid) = uid.and_then(|u| Uid::from_store(u).ok()) {
                    let json = Bytes::from(message).slice(at + 1..);
                    let _ = self.signals.send((uid, json));
                }
                return;
            }
        }
        let message = String::from_utf8_lossy(&message);
        if let Some((uid, seq)) = message.split_once(' ') {
            if let (Ok(uid), Ok(seq)) = (Uid::from_store(uid), seq.parse()) {
                self.set(&uid, seq);
            }
        }
    }

    /// Registers a waiter on `uid` before its head is read with
    /// `read_head`: an append in between raises the registered sender, and
    /// the read only ever raises it.
    pub(in crate::store) async fn watch<F>(
        &self,
        uid: &Uid,
        read_head: F,
    ) -> Result<watch::Receiver<u64>, StoreError>
    where
        F: std::future::Future<Output = Result<Option<u64>, StoreError>>,
    {
        if let Some(head) = self.heads.get(uid) {
            return Ok(head.subscribe());
        }
        let receiver = self
            .heads
            .entry(uid.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        self.raise(uid, read_head.await?.unwrap_or(0));
        Ok(receiver)
    }

    /// Raises `uid`'s head to `seq` (an append made here).
    pub(in crate::store) fn raise(&self, uid: &Uid, seq: u64) {
        if let Some(head) = self.heads.get(uid) {
            head.send_if_modified(|h| {
                let raise = seq > *h;
                if raise {
                    *h = seq;
                }
                raise
            });
        }
    }
}

/// Follows the wake channels: raises local heads, forwards record changes,
/// and after a (re)subscription re-reads every local waiter's head, since
/// wakes published while the subscription was down are gone.
pub(super) async fn wake_loop(
    mut received: mpsc::UnboundedReceiver<PushInfo>,
    store: std::sync::Weak<RedisStore>,
) {
    let mut subscribed = 0u32;
    while let Some(push) = received.recv().await {
        let Some(store) = store.upgrade() else { return };
        match push.kind {
            PushKind::Message => store.wakes.delivered(push.data, CHANGES.as_bytes()),
            PushKind::Subscribe => {
                // The changes channel comes last in every (re)subscription;
                // the first one is the subscription made at start.
                let channel = push.data.into_iter().next().and_then(bytes);
                if channel.as_deref() == Some(CHANGES.as_bytes()) {
                    subscribed += 1;
                    if subscribed > 1 {
                        tracing::info!("redis wake subscription back; re-reading every waiter");
                        let _ = store.wakes.changes.send(String::new());
                        tokio::spawn(refresh_heads(store.clone()));
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis wake subscription lost; resubscribing");
            }
            _ => {}
        }
    }
}

/// Pings the wake subscription every second: the connection manager only
/// reconnects (and resubscribes) when a command fails, and nothing else is
/// sent on this connection.
pub(super) async fn keep_subscribed(
    mut pubsub: ConnectionManager,
    store: std::sync::Weak<RedisStore>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if store.strong_count() == 0 {
            return;
        }
        let pong: Result<String, _> = redis::cmd("PING").query_async(&mut pubsub).await;
        if let Err(e) = pong {
            tracing::debug!("wake subscription ping: {e}");
        }
    }
}

/// Re-reads the head of every user with a local waiter, retrying until
/// Redis answers.
async fn refresh_heads(store: Arc<RedisStore>) {
    let users: Vec<Uid> = store.wakes.heads.iter().map(|e| e.key().clone()).collect();
    for chunk in users.chunks(500) {
        loop {
            let mut pipe = redis::pipe();
            for uid in chunk {
                pipe.hget(meta_key(uid), "s");
            }
            let heads: Result<Vec<Option<u64>>, _> = pipe.query_async(&mut store.conn()).await;
            match heads {
                Ok(heads) => {
                    for (uid, head) in chunk.iter().zip(heads) {
                        store.wakes.set(uid, head.unwrap_or(0));
                    }
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
