//! The hub: who is connected right now, on which transport.
//!
//! Every streaming connection (SSE, iframe, WebSocket) registers here for as
//! long as it is open and gets a [`Connection`] guard; dropping the guard
//! unregisters it. The hub enforces the per-user connection cap, keeps the
//! per-transport gauges, and tells [`Presence`] who comes and goes.

use std::sync::Arc;

use crate::http::Error;
use crate::metrics::{Label, Metrics};
use crate::presence::Presence;
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
    pub fn name(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Iframe => "iframe",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }

    fn label(self) -> Label {
        Label { kind: self.name() }
    }
}

/// Open connections by user.
pub struct Hub {
    presence: Arc<Presence>,
    max_per_user: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(max_per_user: usize, metrics: Arc<Metrics>, presence: Arc<Presence>) -> Hub {
        Hub {
            presence,
            max_per_user,
            metrics,
        }
    }

    /// Registers a connection of `uid`, or 429 if the user already has the
    /// most connections allowed.
    pub fn connect(self: &Arc<Self>, uid: &Uid, transport: Transport) -> Result<Connection, Error> {
        if !self.presence.try_connect(uid, self.max_per_user) {
            return Err(Error::TooMany {
                message: format!("{uid} already has {} open connections", self.max_per_user),
                retry_after: 5,
            });
        }
        self.metrics
            .connections
            .get_or_create(&transport.label())
            .inc();
        Ok(Connection {
            hub: self.clone(),
            uid: uid.clone(),
            transport,
        })
    }

    /// Counts events and bytes sent on `transport`.
    pub fn sent(&self, transport: Transport, events: usize, bytes: usize) {
        let label = transport.label();
        self.metrics
            .delivered
            .get_or_create(&label)
            .inc_by(events as u64);
        self.metrics
            .bytes_sent
            .get_or_create(&label)
            .inc_by(bytes as u64);
    }
}

/// One open connection; unregisters itself when dropped.
pub struct Connection {
    hub: Arc<Hub>,
    uid: Uid,
    transport: Transport,
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
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.hub
            .metrics
            .connections
            .get_or_create(&self.transport.label())
            .dec();
        self.hub.presence.disconnect(&self.uid);
    }
}
