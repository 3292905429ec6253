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
//!
//! Each connection's [`ConnInfo`] (client address, when it opened and last
//! wrote, the cursor it is at, what it sent) is what the user inspector
//! shows; the events it writes go to the delivery trace.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::chat::presence::Presence;
use crate::error::Error;
use crate::store::now_ms;
use crate::trace::Traces;
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
    WebTransport,
}

impl Transport {
    const ALL: [Transport; 6] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Iframe,
        Transport::Sse,
        Transport::Ws,
        Transport::WebTransport,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Iframe => "iframe",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::WebTransport => "webtransport",
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
    by_transport: [TransportMetrics; Transport::ALL.len()],
    /// Only users with a long-poll open have an entry.
    longpolls: SharedMap<Uid, LongPolls>,
    /// Every open connection, by user.
    open: SharedMap<Uid, Vec<Arc<ConnInfo>>>,
    traces: Arc<Traces>,
    next_id: AtomicU64,
}

/// What the inspector shows of one open connection.
#[derive(Debug, serde::Serialize)]
pub struct ConnInfo {
    pub id: u64,
    #[serde(skip)]
    pub uid: Uid,
    #[serde(serialize_with = "transport_name")]
    pub transport: Transport,
    /// The client's address (the proxy's, behind one).
    pub client: Option<SocketAddr>,
    /// Unix milliseconds.
    pub opened_at: u64,
    /// Unix milliseconds of the last write of events or a signal (0: none
    /// yet).
    pub last_write_at: AtomicU64,
    /// The seq of the last event written.
    pub cursor: AtomicU64,
    pub events_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
}

fn transport_name<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

impl Hub {
    pub fn new(
        max_per_user: usize,
        metrics: Arc<Metrics>,
        presence: Arc<Presence>,
        traces: Arc<Traces>,
    ) -> Hub {
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
            open: SharedMap::default(),
            traces,
            next_id: AtomicU64::new(1),
        }
    }

    /// Registers a connection of `uid` from `client`, whose reader is at
    /// `cursor`. At the cap it takes over the user's oldest long-poll (told
    /// to end through its [`Connection::evicted`]), or fails with 429 if
    /// there is none.
    pub fn connect(
        self: &Arc<Self>,
        uid: &Uid,
        transport: Transport,
        client: Option<SocketAddr>,
        cursor: u64,
    ) -> Result<Connection, Error> {
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
        let info = Arc::new(ConnInfo {
            id,
            uid: uid.clone(),
            transport,
            client,
            opened_at: now_ms(),
            last_write_at: AtomicU64::new(0),
            cursor: AtomicU64::new(cursor),
            events_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        });
        self.open.entry(uid.clone()).or_default().push(info.clone());
        Ok(Connection {
            link: Link {
                hub: self.clone(),
                info,
            },
            evicted,
        })
    }

    /// `uid`'s open connections on this node.
    pub fn connections_of(&self, uid: &Uid) -> Vec<Arc<ConnInfo>> {
        self.open.get(uid).map(|c| c.clone()).unwrap_or_default()
    }

    /// A poll or long-poll of `uid` answered with the events
    /// `after+1 ..= last` (traced without a connection).
    pub fn polled(&self, uid: &Uid, transport: Transport, after: u64, last: u64) {
        self.traces
            .written(uid, transport.name(), None, after, last);
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

/// What counts one connection's writes: the [`Connection`]'s, or a copy
/// for a writer beside it (a WebSocket's direct writes).
#[derive(Clone)]
pub struct Link {
    hub: Arc<Hub>,
    info: Arc<ConnInfo>,
}

impl Link {
    /// Counts a write of `bytes` that carried no event (a signal, a
    /// keepalive).
    pub fn sent(&self, bytes: usize) {
        self.hub.sent(self.info.transport, 0, bytes);
        self.info
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.info.last_write_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts a write of `events` events in `bytes`, up to seq `cursor`,
    /// and traces it.
    pub fn delivered(&self, cursor: u64, events: usize, bytes: usize) {
        let info = &self.info;
        self.hub.sent(info.transport, events, bytes);
        info.events_sent.fetch_add(events as u64, Ordering::Relaxed);
        info.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        info.last_write_at.store(now_ms(), Ordering::Relaxed);
        let after = info.cursor.swap(cursor, Ordering::Relaxed);
        self.hub.traces.written(
            &info.uid,
            info.transport.name(),
            Some(info.id),
            after,
            cursor,
        );
    }
}

/// One open connection; unregisters itself when dropped.
pub struct Connection {
    link: Link,
    evicted: Option<Arc<Notify>>,
}

impl std::ops::Deref for Connection {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.link
    }
}

impl Connection {
    pub fn uid(&self) -> &Uid {
        &self.link.info.uid
    }

    pub fn transport(&self) -> Transport {
        self.link.info.transport
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
        let (hub, info) = (&self.link.hub, &self.link.info);
        hub.open.remove_if_mut(&info.uid, |_, open| {
            open.retain(|c| c.id != info.id);
            open.is_empty()
        });
        if self.evicted.is_some() {
            hub.longpolls.remove_if_mut(&info.uid, |_, held| {
                held.retain(|(id, _)| *id != info.id);
                held.is_empty()
            });
            // Restart the grace period first so the user does not flap
            // offline between two long-polls.
            hub.presence.polled(&info.uid);
        } else {
            hub.of(info.transport).connections.dec();
        }
        hub.presence.disconnect(&info.uid);
    }
}
