//! The hub: who is connected right now, on which transport.
//!
//! Every streaming connection (SSE, iframe, WebSocket) and every long-poll
//! registers here for as long as it is open and gets a [`Connection`]
//! guard; dropping the guard unregisters it. The hub enforces the per-user
//! cap (`--max-user-connections`, streams and long-polls together), keeps
//! the per-transport gauges, and tells [`Presence`] who comes and goes.
//!
//! At the cap, a new connection takes the slot of the user's OLDEST held
//! long-poll, which is answered empty at once (its client re-polls): that
//! is what a browser tab that navigated away without closing its request
//! needs, and it keeps one user's forgotten long-polls from locking that
//! user out. With no long-poll to take over, the new connection gets 429.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::chat::presence::Presence;
use crate::error::Error;
use crate::util::SharedMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{Label, Metrics};
use crate::uid::Uid;

/// The transports, as named in metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Poll,
    LongPoll,
    Iframe,
    Sse,
    Ws,
}

impl Transport {
    const ALL: [Transport; 5] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Iframe,
        Transport::Sse,
        Transport::Ws,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Iframe => "iframe",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

/// One transport's series of the per-transport families, looked up once:
/// a family lookup hashes the label and takes a lock, per delivery.
struct TransportMetrics {
    connections: Gauge,
    delivered: Counter,
    bytes_sent: Counter,
}

/// A user's long-polls, oldest first: (id, how to end it early).
type LongPolls = VecDeque<(u64, Arc<Notify>)>;

/// Open connections by user. The count per user is [`Presence`]'s (which
/// needs it for online state anyway); the hub adds the cap, the long-polls
/// that may give up their slot, and the metrics.
pub struct Hub {
    presence: Arc<Presence>,
    max_per_user: usize,
    metrics: Arc<Metrics>,
    /// Indexed by `Transport as usize`.
    by_transport: [TransportMetrics; 5],
    /// Only users with a long-poll open have an entry.
    longpolls: SharedMap<Uid, LongPolls>,
    next_id: AtomicU64,
}

impl Hub {
    pub fn new(max_per_user: usize, metrics: Arc<Metrics>, presence: Arc<Presence>) -> Hub {
        let by_transport = Transport::ALL.map(|transport| {
            let label = Label {
                kind: transport.name(),
            };
            TransportMetrics {
                connections: metrics.connections.get_or_create(&label).clone(),
                delivered: metrics.delivered.get_or_create(&label).clone(),
                bytes_sent: metrics.bytes_sent.get_or_create(&label).clone(),
            }
        });
        Hub {
            presence,
            max_per_user: max_per_user.max(1),
            metrics,
            by_transport,
            longpolls: SharedMap::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Registers a connection of `uid`. At the cap it takes over the
    /// user's oldest long-poll (told to end through its
    /// [`Connection::evicted`]), or fails with 429 if there is none.
    pub fn connect(self: &Arc<Self>, uid: &Uid, transport: Transport) -> Result<Connection, Error> {
        if !self.presence.try_connect(uid, self.max_per_user) {
            let oldest = self
                .longpolls
                .get_mut(uid)
                .and_then(|mut held| held.pop_front());
            let Some((_, end)) = oldest else {
                return Err(Error::TooMany {
                    message: format!("{uid} already has {} open connections", self.max_per_user),
                    retry_after: 5,
                });
            };
            // The count is one over the cap until the ended long-poll is
            // gone, which is at once.
            end.notify_one();
            self.metrics.longpolls_evicted.inc();
            self.presence.connect(uid);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Only a long-poll can be ended early; streams carry no signal.
        let evicted = if transport == Transport::LongPoll {
            let end = Arc::new(Notify::new());
            self.longpolls
                .entry(uid.clone())
                .or_default()
                .push_back((id, end.clone()));
            Some(end)
        } else {
            self.of(transport).connections.inc();
            None
        };
        Ok(Connection {
            hub: self.clone(),
            uid: uid.clone(),
            transport,
            id,
            evicted,
        })
    }

    fn of(&self, transport: Transport) -> &TransportMetrics {
        &self.by_transport[transport as usize]
    }

    /// Counts events and bytes sent on `transport`.
    pub fn sent(&self, transport: Transport, events: usize, bytes: usize) {
        let metrics = self.of(transport);
        metrics.delivered.inc_by(events as u64);
        metrics.bytes_sent.inc_by(bytes as u64);
    }
}

/// One open connection; unregisters itself when dropped.
pub struct Connection {
    hub: Arc<Hub>,
    uid: Uid,
    transport: Transport,
    id: u64,
    evicted: Option<Arc<Notify>>,
}

impl Connection {
    pub fn uid(&self) -> &Uid {
        &self.uid
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Counts what this connection sent.
    pub fn sent(&self, events: usize, bytes: usize) {
        self.hub.sent(self.transport, events, bytes);
    }

    /// Resolves when a newer connection of the same user took this
    /// long-poll's slot: answer it now.
    pub async fn evicted(&self) {
        match &self.evicted {
            Some(evicted) => evicted.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.evicted.is_some() {
            self.hub.longpolls.remove_if_mut(&self.uid, |_, held| {
                held.retain(|(id, _)| *id != self.id);
                held.is_empty()
            });
            // Restart the grace period first so the user does not flap
            // offline between two long-polls.
            self.hub.presence.polled(&self.uid);
        } else {
            self.hub.of(self.transport).connections.dec();
        }
        self.hub.presence.disconnect(&self.uid);
    }
}
