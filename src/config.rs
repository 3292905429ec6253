//! Configuration: command-line flags, each also read from a `HERALD_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// herald — a realtime push server: every web transport over one durable
/// per-user event queue.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serves HTTPS on --listen with this certificate chain (PEM), offering
    /// HTTP/2 and HTTP/1.1 (ALPN). Needs --tls-key.
    #[arg(long, env = "HERALD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HERALD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serves HTTPS with a certificate made at start (ECDSA P-256, for
    /// localhost, 127.0.0.1 and the listen address, valid 13 days) and
    /// prints its SHA-256: for development, demos and tests.
    #[arg(long, env = "HERALD_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,

    /// Also serves WebTransport (HTTP/3 over QUIC) on this UDP address, at
    /// /v1/wt, with the certificate of --tls-cert or --tls-self-signed
    /// (needs one). The same port as --listen is fine: one is TCP, the
    /// other UDP; port 0 picks a free one.
    #[arg(long, env = "HERALD_WEBTRANSPORT_LISTEN")]
    pub webtransport_listen: Option<SocketAddr>,

    /// Directory of the embedded store.
    #[arg(long, env = "HERALD_DATA", default_value = "herald-data")]
    pub data: PathBuf,

    /// Secret that signs client tokens (HMAC-SHA256). Without it herald runs
    /// in demo mode, which is only allowed on a loopback address.
    #[arg(long, env = "HERALD_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// API key of backends calling /api/v1/* and /metrics. In demo mode a
    /// random one is generated and printed when none is given.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// What is logged (to stderr): a tracing filter such as `info`, or
    /// `info,herald::delivery=debug` for a line per event appended,
    /// written, acked and read.
    #[arg(long, env = "HERALD_LOG", default_value = "info")]
    pub log: String,

    /// How log lines are written: `text`, or `json` (one object per line,
    /// with the fields of the event: uid, seq, transport, node, trace_id).
    #[arg(long, env = "HERALD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Run in demo mode (the demo login route exists) even with a secret
    /// or on a non-loopback address.
    #[arg(long, env = "HERALD_DEMO")]
    pub demo: bool,

    /// Origin allowed to call herald from a browser (CORS and WebSocket
    /// Origin check); repeat for several.
    #[arg(
        long = "allow-origin",
        env = "HERALD_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,

    /// Queue store: `sled` (embedded, in --data), `redis://HOST:PORT[/DB]`
    /// to share one Redis with other herald nodes (a cluster), or
    /// `redis-cluster://HOST:PORT[,HOST:PORT...]` (seed nodes of a Redis
    /// Cluster; the rest is discovered).
    #[arg(long, env = "HERALD_STORE", default_value = "sled")]
    pub store: String,

    /// With a Redis store: `fsync` refuses to start unless Redis runs
    /// `appendonly yes` + `appendfsync always` (nothing acknowledged is lost
    /// if Redis is killed); `async` accepts any setting and says so.
    #[arg(
        long,
        env = "HERALD_REDIS_DURABILITY",
        value_enum,
        default_value = "fsync"
    )]
    pub redis_durability: Durability,

    /// With a Redis store: how long a command may wait for Redis's answer,
    /// in milliseconds. Past it the request gets `504 outcome_unknown`
    /// (the command was sent: it may still be applied; retry with the same
    /// idempotency key); a Redis that cannot be reached at all is a `503
    /// store_unavailable`.
    #[arg(long, env = "HERALD_REDIS_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub redis_timeout_ms: u64,

    /// With a Redis Cluster store: how many replicas of its primary must
    /// have an append before it is visible and acknowledged (`WAIT`); a
    /// primary's death then loses nothing acknowledged. Default: 1 if
    /// every primary has a replica, else 0 (logged, and shown in
    /// `/healthz`).
    #[arg(long, env = "HERALD_REDIS_REPLICAS")]
    pub redis_replicas: Option<u32>,

    /// With a Redis store: how long, in seconds, a node that stops
    /// refreshing its users (killed) keeps them online. It refreshes every
    /// third of this.
    #[arg(long, env = "HERALD_NODE_LEASE_S", default_value_t = 15)]
    pub node_lease_s: u64,

    /// Directory of the static files served at `/`.
    #[arg(long, env = "HERALD_STATIC", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/static"))]
    pub static_dir: PathBuf,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY", default_value_t = 64 * 1024)]
    pub max_body: usize,

    /// Long-poll timeout when the client asks for none, in seconds (1-110).
    #[arg(long, env = "HERALD_LONGPOLL_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=110))]
    pub longpoll_timeout: u64,

    /// Most open connections per user: streams (SSE, iframe, WebSocket)
    /// and held long-polls. At the cap, a new one answers the user's oldest
    /// held long-poll (empty) to make room, or gets 429 if none is held.
    #[arg(long, env = "HERALD_MAX_USER_CONNECTIONS", default_value_t = 16)]
    pub max_user_connections: usize,

    /// A connection that is not streaming is closed when no request head
    /// completes for this long (a new connection, an idle keep-alive one,
    /// or one that trickles its head), in milliseconds; a request body
    /// must arrive within this of its head too (else 408 and close).
    #[arg(long, env = "HERALD_IDLE_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// Most open connections from one client address (0 = no limit). Behind
    /// a reverse proxy every client shares the proxy's address: raise it
    /// or set 0 there, and cap per client at the proxy.
    #[arg(long, env = "HERALD_MAX_CONNS_PER_IP", default_value_t = 1000)]
    pub max_conns_per_ip: usize,

    /// Most bytes of events in one page of any transport (a poll answer, a
    /// stream write, an iframe document); a page always carries at least
    /// one event, however large.
    #[arg(long, env = "HERALD_MAX_PAGE_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_page_bytes: u64,

    /// A connection whose peer vanished without a word (a closed laptop, a
    /// dropped mobile network, a NAT that forgot it) is closed, and its
    /// user pushed offline, within about this, in milliseconds: TCP
    /// keepalive probes an idle connection, and data a peer leaves
    /// unacknowledged this long ends it (`TCP_USER_TIMEOUT`). Default: two
    /// heartbeats + 15 s.
    #[arg(long, env = "HERALD_DEAD_PEER_MS", value_parser = clap::value_parser!(u64).range(1000..))]
    pub dead_peer_ms: Option<u64>,

    /// A stream whose client takes longer than this to accept one write
    /// (stalled, or gone without a word) is closed, in milliseconds.
    #[arg(long, env = "HERALD_SEND_TIMEOUT_MS", default_value_t = 60_000)]
    pub send_timeout_ms: u64,

    /// Direct messages, group messages and status changes one user may
    /// send per second (bursts of twice that); 0 = no limit.
    #[arg(long, env = "HERALD_SEND_RATE", default_value_t = 20)]
    pub send_rate: u32,

    /// How many minutes of each node's delivery trace are kept in memory
    /// (`GET /api/v1/users/{uid}/events/{seq}`); 0 = no trace.
    #[arg(long, env = "HERALD_TRACE_MINUTES", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1440))]
    pub trace_minutes: u64,

    /// Most events the delivery trace keeps in all (the oldest go first):
    /// each costs about 225 bytes (`examples/bench_trace.rs`).
    #[arg(long, env = "HERALD_TRACE_MAX_EVENTS", default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub trace_max_events: u64,

    /// How long, in milliseconds, the user inspector and the delivery
    /// trace wait for the other nodes of a cluster to answer.
    #[arg(long, env = "HERALD_PEER_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=30_000))]
    pub peer_timeout_ms: u64,

    /// Typing signals one user may send per second (bursts of twice that).
    #[arg(long, env = "HERALD_TYPING_RATE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub typing_rate: u32,

    /// Keep the backend feed (`GET /api/v1/feed`): every direct and group
    /// message, receipt, group read mark and status choice, in order, for
    /// the chat backend. A direct
    /// message then takes one atomic write to two queues (measured: p50
    /// 0.49 → 0.66 ms for one sender at a time); off, nothing is kept.
    #[arg(long, env = "HERALD_FEED")]
    pub feed: bool,

    /// Split the backend feed into this many partitions (1 to 256), each
    /// read (`GET /api/v1/feed?partition=P`) and pushed by the webhook on
    /// its own, in order within it: a conversation's events (a pair of
    /// users, a group, one user's statuses and receipts) all go to one
    /// partition. So a backend consumes them in parallel, and on a Redis
    /// Cluster the feed spreads over the primaries.
    #[arg(long, env = "HERALD_FEED_PARTITIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub feed_partitions: u32,

    /// With `--feed`, also record presence: every visible status change
    /// herald pushes to friends (connects and disconnects included, with
    /// the same per-user window) goes to the feed as a `presence` event.
    #[arg(long, env = "HERALD_FEED_PRESENCE")]
    pub feed_presence: bool,

    /// Push the backend feed: `http://HOST:PORT/PATH` of your backend,
    /// which gets the feed's events in order as signed `POST` batches,
    /// retried with backoff until it answers 2xx (see docs/API.md, "The
    /// webhook"). Turns `--feed` on.
    #[arg(long, env = "HERALD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// How long one webhook `POST` may take before it counts as failed
    /// and is retried, in milliseconds (at most 8 000).
    #[arg(long, env = "HERALD_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=8_000))]
    pub webhook_timeout_ms: u64,

    /// Called before a client's direct or group message is accepted:
    /// `http://HOST:PORT/PATH` of your backend, which allows, denies or
    /// rewrites it (see docs/API.md, "The message hook"). Off by default:
    /// then nothing on the send path waits on the backend.
    #[arg(long, env = "HERALD_MESSAGE_HOOK")]
    pub message_hook: Option<String>,

    /// How long a message waits for the hook's answer, in milliseconds.
    #[arg(long, env = "HERALD_MESSAGE_HOOK_TIMEOUT_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub message_hook_timeout_ms: u64,

    /// When the hook does not answer in time or fails: `deny` (fail
    /// closed: the client gets 503 hook_unavailable, nothing is sent) or
    /// `allow` (fail open: the message is sent as it is).
    #[arg(long, env = "HERALD_MESSAGE_HOOK_FAILURE", default_value = "deny", value_parser = ["deny", "allow"])]
    pub message_hook_failure: String,

    /// Keepalive interval of the streams, in milliseconds.
    #[arg(long, env = "HERALD_HEARTBEAT_MS", default_value_t = 15_000)]
    pub heartbeat_ms: u64,

    /// How long a poller stays online after its last poll, in seconds
    /// (default: twice the long-poll timeout).
    #[arg(long, env = "HERALD_PRESENCE_GRACE")]
    pub presence_grace: Option<u64>,

    /// How a group message's sender learns its read receipts while online:
    /// `push` (a `group_receipt` event in its queue, at most one per group
    /// a second) or `keepalive` (no event: the totals ride on the sender's
    /// next heartbeat, or a held long-poll's empty answer).
    #[arg(
        long,
        env = "HERALD_GROUP_RECEIPTS",
        value_enum,
        default_value = "push"
    )]
    pub group_receipts: GroupReceipts,

    /// Presence changes of one user within this window are coalesced into
    /// one push, in milliseconds.
    #[arg(long, env = "HERALD_PRESENCE_WINDOW_MS", default_value_t = 1000)]
    pub presence_window_ms: u64,

    /// How long acked events stay readable, in seconds.
    #[arg(long, env = "HERALD_RETENTION", default_value_t = 3600)]
    pub retention: u64,

    /// Most events kept per user.
    #[arg(long, env = "HERALD_QUEUE_CAP", default_value_t = 10_000)]
    pub queue_cap: u64,

    /// Most events the backend feed keeps (its `--queue-cap`): room for a
    /// backend that is down a while.
    #[arg(long, env = "HERALD_FEED_CAP", default_value_t = 1_000_000)]
    pub feed_cap: u64,

    /// Oldest event kept, acked or not, in seconds.
    #[arg(long, env = "HERALD_QUEUE_MAX_AGE", default_value_t = 7 * 24 * 3600)]
    pub queue_max_age: u64,

    /// How long group messages (history, receipts) and the history of
    /// direct conversations are kept, in seconds.
    #[arg(long, env = "HERALD_HISTORY_RETENTION", default_value_t = 30 * 24 * 3600)]
    pub history_retention: u64,

    /// How often retention runs (and idle queues' in-memory state is
    /// dropped), in milliseconds.
    #[arg(long, env = "HERALD_TRIM_INTERVAL_MS", default_value_t = 10_000)]
    pub trim_interval_ms: u64,

    /// sled page cache, in MiB.
    #[arg(long, env = "HERALD_CACHE_MB", default_value_t = 128)]
    pub cache_mb: u64,

    /// Extra wait before each group-commit flush, in microseconds.
    #[arg(long, env = "HERALD_COMMIT_LINGER_US", default_value_t = 0)]
    pub commit_linger_us: u64,
}

/// What herald requires of Redis's persistence (`--redis-durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Refuse to start unless Redis runs `appendonly yes` and
    /// `appendfsync always`: an acknowledged write survives a kill -9 of
    /// Redis.
    Fsync,
    /// Accept any persistence setting (and say so): Redis may lose the
    /// last second of acknowledged writes.
    Async,
}

/// How group read receipts reach an online sender (`--group-receipts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupReceipts {
    /// A durable `group_receipt` event, coalesced per sender and group.
    Push,
    /// The new totals on the sender's next keepalive: zero extra events.
    Keepalive,
}

/// Shortest accepted `--secret`: HS256 wants a key of 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;
/// Shortest accepted `--api-key`.
pub const MIN_API_KEY_BYTES: usize = 16;

impl Config {
    /// Refuses settings herald must not run with; the reason is one line.
    pub fn check(&self) -> Result<(), String> {
        if let Some(secret) = &self.secret {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "--secret (HERALD_SECRET) must be at least {MIN_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ));
            }
        }
        if let Some(key) = &self.api_key {
            // A key is sent in an `Authorization` header, whose value is
            // trimmed: one with spaces or other invisible bytes would start
            // herald and then never match.
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(
                    "--api-key (HERALD_API_KEY) must be visible ASCII with no spaces (it travels in an Authorization header)".into(),
                );
            }
            if key.len() < MIN_API_KEY_BYTES {
                return Err(format!(
                    "--api-key (HERALD_API_KEY) must be at least {MIN_API_KEY_BYTES} bytes, got {}",
                    key.len()
                ));
            }
        }
        if self.demo_mode() && !self.demo && !self.listen.ip().is_loopback() {
            return Err(format!(
                "no --secret given: demo mode is only allowed on a loopback address, not {} (set --secret, or --demo to insist)",
                self.listen
            ));
        }
        if !self.demo_mode() && self.api_key.is_none() {
            return Err("--api-key (HERALD_API_KEY) is required outside demo mode".into());
        }
        if self.webtransport_listen.is_some() && !self.tls_self_signed && self.tls_cert.is_none() {
            return Err("--webtransport-listen needs a certificate: --tls-cert and --tls-key, or --tls-self-signed".into());
        }
        if self.feed_presence && !self.feed && self.webhook_url.is_none() {
            return Err("--feed-presence records presence in the backend feed: it needs --feed (or --webhook-url)".into());
        }
        let known = self.store == "sled"
            || self.redis_url().is_some()
            || self.redis_cluster_seeds().is_some_and(|s| !s.is_empty());
        if !known {
            return Err(format!(
                "unknown --store {:?}; supported: sled, redis://HOST:PORT[/DB], redis-cluster://HOST:PORT[,HOST:PORT...]",
                self.store
            ));
        }
        Ok(())
    }

    /// The Redis URL of `--store`, if it names one.
    pub fn redis_url(&self) -> Option<&str> {
        let url = self.store.as_str();
        url.starts_with("redis://").then_some(url)
    }

    /// The seed nodes of `--store redis-cluster://...`, if it names them.
    pub fn redis_cluster_seeds(&self) -> Option<&str> {
        self.store.strip_prefix("redis-cluster://")
    }

    /// See `--trace-minutes`.
    pub fn trace_window(&self) -> Duration {
        Duration::from_secs(self.trace_minutes * 60)
    }

    /// See `--node-lease-s`.
    pub fn node_lease(&self) -> Duration {
        Duration::from_secs(self.node_lease_s.max(3))
    }

    /// See `--dead-peer-ms`.
    pub fn dead_peer(&self) -> Duration {
        Duration::from_millis(
            self.dead_peer_ms
                .unwrap_or(2 * self.heartbeat_ms.max(100) + 15_000),
        )
    }

    /// See `--redis-timeout-ms`.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// See `--idle-timeout-ms`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// See `--max-page-bytes`.
    pub fn max_page_bytes(&self) -> usize {
        usize::try_from(self.max_page_bytes).unwrap_or(usize::MAX)
    }

    /// See `--send-timeout-ms`.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.max(1))
    }

    /// How long records tied to the queue are kept: direct-message records
    /// (read receipts) and idempotency keys (cids), as long as an event may
    /// stay in a queue.
    pub fn record_ttl(&self) -> Duration {
        Duration::from_secs(self.queue_max_age)
    }

    /// See `--history-retention`.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_retention)
    }

    /// How long a poller stays online after its last poll.
    pub fn presence_grace(&self) -> Duration {
        Duration::from_secs(
            self.presence_grace
                .unwrap_or(2 * self.longpoll_timeout)
                .max(1),
        )
    }

    /// Whether demo mode is on: asked for, or no secret configured.
    pub fn demo_mode(&self) -> bool {
        self.demo || self.secret.is_none()
    }
}
