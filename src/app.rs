//! The shared state of a running server, handed to every handler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::admission::Admission;
use crate::chat::broadcasts::{Broadcasts, Pacer};
use crate::chat::conversations::Conversations;
use crate::chat::feed::Feed;
use crate::chat::friends::Friends;
use crate::chat::group_log::GroupLog;
use crate::chat::group_reads::GroupReads;
use crate::chat::groups::Groups;
use crate::chat::hook::MessageHook;
use crate::chat::limits::SendLimit;
use crate::chat::messages::Messages;
use crate::chat::notices::Counters;
use crate::chat::online::OnlineDirectory;
use crate::chat::presence::Presence;
use crate::chat::receipts::Receipts;
use crate::chat::signals::Signals;
use crate::config::{Config, GroupReceipts};
use crate::http::auth::Auth;
use crate::http::cors::Cors;
use crate::hub::Hub;
use crate::inspect::peers::Peers;
use crate::metrics::Metrics;
use crate::store::cluster::ClusterStore;
use crate::store::redis::{RedisOptions, RedisStore};
use crate::store::sled::{SledOptions, SledStore};
use crate::store::{self, Backend, Store, StoreError, Upkeep};
use crate::trace::recorded::Recorded;
use crate::trace::Traces;

/// Everything a request handler may use. One per server, behind an `Arc`.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// What only the backend knows how to do (retention, health).
    pub upkeep: Arc<dyn Upkeep>,
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
    /// The history of direct conversations.
    pub conversations: Arc<Conversations>,
    /// What every client message goes through: checks, the send limit,
    /// `--message-hook`.
    pub admission: Arc<Admission>,
    pub counters: Counters,
    pub group_log: Arc<GroupLog>,
    pub group_reads: Arc<GroupReads>,
    pub broadcasts: Arc<Broadcasts>,
    /// Typing signals: to the connections open now, never stored.
    pub signals: Arc<Signals>,
    /// This node's delivery trace.
    pub traces: Arc<Traces>,
    /// The other nodes, asked by the user inspector and the trace.
    pub peers: Arc<Peers>,
    pub metrics: Arc<Metrics>,
    /// Whether the demo-only routes exist.
    pub demo: bool,
    /// Cancelled on SIGTERM: held requests return, streams end.
    pub shutdown: CancellationToken,
    /// Tasks that outlive their request (WebSocket sessions after the
    /// upgrade): shutdown waits for them as for connections.
    pub tasks: TaskTracker,
    /// Where this node serves WebTransport, once bound.
    pub webtransport: std::sync::OnceLock<WebTransportAdvert>,
}

/// Where this node serves WebTransport, for `GET /v1/webtransport`.
#[derive(Debug, Clone)]
pub struct WebTransportAdvert {
    /// The UDP port sessions go to.
    pub port: u16,
    /// SHA-256 of the certificate (lowercase hex), when it is self-signed:
    /// a browser takes it by `serverCertificateHashes`.
    pub certificate_hashes: Vec<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot open the store in {}: {source}", path.display())]
    Store {
        path: std::path::PathBuf,
        source: store::StoreError,
    },
    #[error("cannot load the stored state: {0}")]
    Load(#[from] store::StoreError),
}

impl App {
    /// Opens the store (sled in `config.data`, or Redis), loads what the
    /// services keep in memory, finishes what a crash interrupted, and
    /// wires every service.
    pub async fn open(
        config: Config,
        auth: Auth,
        shutdown: CancellationToken,
    ) -> Result<Arc<App>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let backend = open_backend(&config, &metrics).await?;
        let node = format!("{:016x}", rand::random::<u64>());
        let traces = Arc::new(Traces::new(
            config.trace_window(),
            config.trace_max_events as usize,
            node.clone(),
        ));
        let store = Recorded::wrap(backend.store.clone(), traces.clone());
        // Records herald 0.5 wrote without a retention deadline.
        let indexed = backend
            .upkeep
            .index_legacy_records(&[
                ("msg/", config.record_ttl()),
                ("gcid/", config.record_ttl()),
                ("glog/", config.history_ttl()),
            ])
            .await?;
        if indexed > 0 {
            tracing::info!("gave {indexed} records written by herald 0.5 their retention deadline");
        }
        let feed = Feed::of(&config);
        let friends = Arc::new(Friends::load(store.clone()).await?);
        let groups = Arc::new(Groups::load(store.clone()).await?);
        let group_log = Arc::new(GroupLog::new(
            store.clone(),
            config.history_ttl(),
            config.record_ttl(),
            feed,
        ));
        let recovered = group_log.recover(&groups).await?;
        if recovered > 0 {
            tracing::warn!("finished {recovered} group posts that a crash interrupted");
        }
        let directory = Arc::new(OnlineDirectory::new(
            backend.presence.clone(),
            node.clone(),
            config.presence_grace(),
            config.node_lease(),
        ));
        let sends = Arc::new(SendLimit::new(
            backend.buckets.clone(),
            config.send_rate,
            metrics.send_limited.clone(),
        ));
        let pacer = Pacer::new(backend.buckets.clone());
        let presence = Presence::new(
            store.clone(),
            friends.clone(),
            metrics.clone(),
            directory,
            Duration::from_millis(config.presence_window_ms),
            feed.kept_if(config.feed_presence),
        );
        let signals = Signals::new(
            store.clone(),
            backend.buckets.clone(),
            config.typing_rate,
            metrics.signals_sent.clone(),
            metrics.signals_limited.clone(),
        );
        let group_reads = GroupReads::new(
            store.clone(),
            group_log.clone(),
            groups.clone(),
            presence.clone(),
            metrics.clone(),
            feed,
            (config.group_receipts == GroupReceipts::Keepalive).then(|| signals.clone()),
        );
        let conversations = Arc::new(Conversations::new(store.clone(), config.history_ttl()));
        let hook = match &config.message_hook {
            Some(url) => Some(Arc::new(
                MessageHook::new(
                    url,
                    Duration::from_millis(config.message_hook_timeout_ms),
                    config.message_hook_failure == "allow",
                    config.max_body,
                )
                .map_err(StartError::Config)?,
            )),
            None => None,
        };
        let admission = Arc::new(Admission::new(sends.clone(), hook));
        let app = Arc::new(App {
            auth,
            cors: Cors::new(&config.allow_origins),
            hub: Arc::new(Hub::new(
                config.max_user_connections,
                metrics.clone(),
                presence.clone(),
                traces.clone(),
            )),
            presence,
            friends,
            groups,
            messages: Messages::new(
                store.clone(),
                admission.clone(),
                config.record_ttl(),
                conversations.clone(),
                feed,
            ),
            receipts: Receipts::new(
                store.clone(),
                config.max_page_bytes(),
                conversations.clone(),
                feed,
            ),
            conversations,
            admission,
            sends,
            counters: Counters::new(store.clone(), config.record_ttl()),
            group_log,
            group_reads,
            broadcasts: Broadcasts::start(store.clone(), metrics.clone(), pacer).await?,
            signals,
            traces,
            peers: Peers::new(
                backend.nodes.clone(),
                node,
                Duration::from_millis(config.peer_timeout_ms),
            ),
            store: store.clone(),
            upkeep: backend.upkeep.clone(),
            metrics,
            demo: config.demo_mode(),
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            webtransport: Default::default(),
            config,
        });
        tokio::spawn(follow_changes(Arc::downgrade(&app)));
        tokio::spawn(follow_signals(Arc::downgrade(&app)));

        Ok(app)
    }
}

/// Rereads what another node announced as changed (friend lists, group
/// members, the newest pull broadcast), or everything after the
/// announcements may have been missed. A store that no other process
/// writes announces nothing: the task then ends at once.
async fn follow_changes(app: std::sync::Weak<App>) {
    let Some(mut changes) = app.upgrade().map(|app| app.store.changes()) else {
        return;
    };
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => String::new(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(app) = app.upgrade() else { return };
        // Each service knows its own records: the one they belong to
        // rereads them (all of them, when some may have been missed).
        let reloaded = async {
            app.friends.changed(&change).await?;
            app.groups.changed(&change).await?;
            app.broadcasts.changed(&change).await
        };
        if let Err(e) = reloaded.await {
            tracing::warn!("could not reread {change:?} after another node changed it: {e}");
        }
    }
}

/// Hands the signals published through any node (this one included) to
/// the connections open here. A store of one process publishes none: the
/// task then ends at once.
async fn follow_signals(app: std::sync::Weak<App>) {
    let Some(mut signals) = app.upgrade().map(|app| app.store.signals()) else {
        return;
    };
    loop {
        let (uid, json) = match signals.recv().await {
            Ok(signal) => signal,
            // Signals are stale in seconds: the missed ones are not worth
            // anything now.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(app) = app.upgrade() else { return };
        app.signals.deliver(&uid, json);
    }
}

/// The store `config` asks for.
async fn open_backend(config: &Config, metrics: &Arc<Metrics>) -> Result<Backend, StartError> {
    let redis_options = || RedisOptions {
        retention: store::Retention::of(config),
        once_ttl: config.record_ttl(),
        durability: config.redis_durability,
        timeout: config.redis_timeout(),
        replicas: config.redis_replicas,
    };
    let refused = |e| match e {
        StoreError::Refused(reason) => StartError::Config(reason),
        e => StartError::Load(e),
    };
    if let Some(seeds) = config.redis_cluster_seeds() {
        return ClusterStore::connect(seeds, redis_options())
            .await
            .map(ClusterStore::into_backend)
            .map_err(refused);
    }
    if let Some(url) = config.redis_url() {
        return RedisStore::connect(url, redis_options())
            .await
            .map(RedisStore::into_backend)
            .map_err(refused);
    }
    let options = SledOptions {
        cache_bytes: config.cache_mb << 20,
        linger: Duration::from_micros(config.commit_linger_us),
        once_ttl: config.record_ttl(),
        ..SledOptions::default()
    };
    let sled = SledStore::open(&config.data, options, metrics.clone()).map_err(|source| {
        StartError::Store {
            path: config.data.clone(),
            source,
        }
    })?;
    Ok(Arc::new(sled).into_backend())
}

/// An [`App`] on a fresh store in `dir`, for in-process tests; `flags` are
/// added to the command line.
#[cfg(test)]
pub(crate) async fn test_app(dir: &std::path::Path, flags: &[&str]) -> Arc<App> {
    use clap::Parser;
    let data = dir.join("data");
    let mut args = vec![
        "herald",
        "--secret",
        "test-secret-0123456789abcdefghij",
        "--api-key",
        "test-api-key-012",
        "--data",
        data.to_str().expect("a UTF-8 temp dir"),
    ];
    args.extend_from_slice(flags);
    let config = Config::parse_from(args);
    let auth = Auth::new(
        b"test-secret-0123456789abcdefghij",
        "test-api-key-012".into(),
    );
    App::open(config, auth, CancellationToken::new())
        .await
        .expect("open the app")
}
