//! The shared state of a running server, handed to every handler.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::broadcasts::Broadcasts;
use crate::chat::friends::Friends;
use crate::chat::group_log::GroupLog;
use crate::chat::group_reads::GroupReads;
use crate::chat::groups::Groups;
use crate::chat::limits::SendLimit;
use crate::chat::messages::Messages;
use crate::chat::notices::Counters;
use crate::chat::presence::Presence;
use crate::chat::receipts::Receipts;
use crate::config::Config;
use crate::http::auth::Auth;
use crate::http::cors::Cors;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything a request handler may use. One per server, behind an `Arc`.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub auth: Auth,
    pub cors: Cors,
    /// Who is connected, on which transport.
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    pub friends: Arc<Friends>,
    pub groups: Arc<Groups>,
    /// How fast each user may send messages and status changes.
    pub sends: Arc<SendLimit>,
    pub messages: Messages,
    pub receipts: Receipts,
    pub counters: Counters,
    pub group_log: Arc<GroupLog>,
    pub group_reads: Arc<GroupReads>,
    pub broadcasts: Arc<Broadcasts>,
    pub metrics: Arc<Metrics>,
    /// Whether the demo-only routes exist.
    pub demo: bool,
    /// Cancelled on SIGTERM: held requests return, streams end.
    pub shutdown: CancellationToken,
    /// Tasks that outlive their request (WebSocket sessions after the
    /// upgrade): shutdown waits for them as for connections.
    pub tasks: TaskTracker,
}
