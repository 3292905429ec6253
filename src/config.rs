//! Configuration: command-line flags, each also read from a `HERALD_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::store::Retention;

/// herald — a realtime push server: every web transport over one durable
/// per-user event queue.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

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

    /// Queue store: `sled` (embedded, in --data).
    #[arg(long, env = "HERALD_STORE", default_value = "sled")]
    pub store: String,

    /// Directory of the static files served at `/`.
    #[arg(long, env = "HERALD_STATIC", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/static"))]
    pub static_dir: PathBuf,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "HERALD_MAX_BODY", default_value_t = 64 * 1024)]
    pub max_body: usize,

    /// Long-poll timeout when the client asks for none, in seconds (1-110).
    #[arg(long, env = "HERALD_LONGPOLL_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=110))]
    pub longpoll_timeout: u64,

    /// Most open streaming connections (SSE, iframe, WebSocket) per user.
    #[arg(long, env = "HERALD_MAX_USER_CONNECTIONS", default_value_t = 16)]
    pub max_user_connections: usize,

    /// A stream whose client takes longer than this to accept one write
    /// (stalled, or gone without a word) is closed, in milliseconds.
    #[arg(long, env = "HERALD_SEND_TIMEOUT_MS", default_value_t = 60_000)]
    pub send_timeout_ms: u64,

    /// Direct messages, group messages and status changes one user may
    /// send per second (bursts of twice that); 0 = no limit.
    #[arg(long, env = "HERALD_SEND_RATE", default_value_t = 20)]
    pub send_rate: u32,

    /// Keepalive interval of the streams, in milliseconds.
    #[arg(long, env = "HERALD_HEARTBEAT_MS", default_value_t = 15_000)]
    pub heartbeat_ms: u64,

    /// How long a poller stays online after its last poll, in seconds
    /// (default: twice the long-poll timeout).
    #[arg(long, env = "HERALD_PRESENCE_GRACE")]
    pub presence_grace: Option<u64>,

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

    /// Oldest event kept, acked or not, in seconds.
    #[arg(long, env = "HERALD_QUEUE_MAX_AGE", default_value_t = 7 * 24 * 3600)]
    pub queue_max_age: u64,

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

impl Config {
    /// See `--send-timeout-ms`.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.max(1))
    }

    /// The retention policy these flags describe.
    pub fn retention(&self) -> Retention {
        Retention {
            acked_for: Duration::from_secs(self.retention),
            max_events: self.queue_cap.max(1),
            max_age: Duration::from_secs(self.queue_max_age),
        }
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
