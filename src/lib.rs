//! herald: a realtime push server for web chat and notification frontends.
//!
//! Every web transport (short polling, long polling, iframe streaming, SSE,
//! WebSocket and WebTransport) reads ONE durable per-user event queue, so a browser
//! resumes exactly where it left off and loses nothing.
//!
//! The layers, each calling only those below it (`scripts/check-layers.py`
//! reads this drawing and fails the tests on an import that runs up it, or
//! on an import cycle):
//!
//! ```text
//! boot          the wiring: run starts the store, the services, the server
//! server        accept loops (TCP, and QUIC for WebTransport), connection
//!               limits, TLS, direct stream framing
//! routes        method + path → handler, CORS
//! transport     poll, long-poll, iframe, SSE, WebSocket, WebTransport (over
//!               a Subscription)
//! actions, api  client actions, backend API
//! pages, app, inspect  reading a queue into pages; the services of one
//!               server; the user inspector and the delivery trace
//! chat, hub     the chat domain; who is connected
//! trace         what happened to each user's recent events (per node)
//! http          errors at the edge, replies, requests, auth, CORS (a toolkit)
//! error         the one error type, with codes and no HTTP
//! store         the durable per-user queue and records (sled, or Redis
//!               shared by the nodes of a cluster)
//! metrics, uid, config, deadline, util
//! ```

pub mod actions;
pub mod api;
pub mod app;
pub mod boot;
pub mod chat;
pub mod config;
pub mod deadline;
pub mod error;
pub mod http;
pub mod hub;
pub mod inspect;
pub mod metrics;
pub mod pages;
pub mod routes;
pub mod server;
pub mod store;
pub mod trace;
pub mod transport;
pub mod uid;
pub mod util;

pub use crate::app::StartError;
pub use crate::boot::{run, DEMO_USERS};
