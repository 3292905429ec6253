//! The shared state of a running server, handed to every handler.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broadcasts::Broadcasts;
use crate::config::Config;
use crate::friends::Friends;
use crate::group_log::GroupLog;
use crate::group_reads::GroupReads;
use crate::groups::Groups;
use crate::http::auth::Auth;
use crate::http::cors::Cors;
use crate::hub::Hub;
use crate::limits::SendLimit;
use crate::messages::Messages;
use crate::metrics::Metrics;
use crate::notices::Counters;
use crate::presence::Presence;
use crate::receipts::Receipts;
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
