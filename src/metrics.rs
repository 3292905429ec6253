//! Prometheus metrics, served as text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A single label `name=value`, for families keyed by a fixed word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    pub kind: &'static str,
}

/// Every metric herald keeps. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// Events appended (and made durable) to user queues.
    pub appends: Counter,
    /// Bytes of event JSON appended to user queues.
    pub appended_bytes: Counter,
    /// Group-commit flushes (sled flush + fdatasync).
    pub flushes: Counter,
    /// Time one group-commit flush took.
    pub flush_seconds: Histogram,
    /// Append calls served by one flush.
    pub commit_batch: Histogram,
    /// Long-polls being held right now.
    pub longpolls_held: Gauge,
    /// Long-poll returns, by `kind` = `events` | `empty`: the two
    /// counters of the `longpoll_returns` family, looked up once (a lookup
    /// hashes the label and takes a lock, on every long-poll).
    pub longpoll_useful: Counter,
    pub longpoll_empty: Counter,
    /// Events trimmed by retention.
    pub trimmed: Counter,
    /// User queues whose state is in memory (the others are only on disk).
    pub queues_in_memory: Gauge,
    /// Open streaming connections, by transport.
    pub connections: Family<Label, Gauge>,
    /// Events delivered, by transport.
    pub delivered: Family<Label, Counter>,
    /// Bytes of events and framing sent, by transport.
    pub bytes_sent: Family<Label, Counter>,
    /// Online reverse friends reached by one presence change (the fan-out
    /// factor N).
    pub presence_fanout: Histogram,
    /// Presence events pushed.
    pub presence_pushed: Counter,
    /// Statuses handed out by presence pulls (friends at login, groups).
    pub presence_pulled: Counter,
    /// `group_receipt` events pushed to senders.
    pub group_receipts_pushed: Counter,
    /// Push broadcasts delivered (one per recipient).
    pub broadcast_delivered: Counter,
    /// Push-broadcast deliveries queued, not yet made.
    pub broadcast_pending: Gauge,
    /// Connections closed at accept, by `kind` = `total` (the process's
    /// cap) | `per_ip` (`--max-conns-per-ip`).
    pub refused_connections: Family<Label, Counter>,
    /// Held long-polls answered early (empty) to make room for a newer
    /// connection of the same user.
    pub longpolls_evicted: Counter,
    /// Sends refused by the per-user send limit (`--send-rate`, 429).
    pub send_limited: Counter,
    /// Typing signals sent (`POST /v1/typing`, the WebSocket's `typing`).
    pub signals_sent: Counter,
    /// Typing signals refused by the per-user limit (`--typing-rate`, 429).
    pub signals_limited: Counter,
    /// Feed events the webhook delivered (answered 2xx).
    pub webhook_delivered: Counter,
    /// Webhook `POST`s that failed and will be retried.
    pub webhook_failed: Counter,
    /// Records dropped because their retention ran out (message records,
    /// idempotency keys, group history).
    pub expired_records: Counter,
    /// Entries of in-memory caches and maps, by `kind`; each is bounded by
    /// what is in use and swept with retention.
    pub memory_entries: Family<Label, Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let appends = Counter::default();
        let flushes = Counter::default();
        let appended_bytes = Counter::default();
        let flush_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let longpolls_held = Gauge::default();
        let longpoll_returns = Family::<Label, Counter>::default();
        let trimmed = Counter::default();
        let queues_in_memory = Gauge::default();
        let connections = Family::<Label, Gauge>::default();
        let delivered = Family::<Label, Counter>::default();
        let bytes_sent = Family::<Label, Counter>::default();
        let presence_fanout = Histogram::new([
            0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
        ]);
        let presence_pushed = Counter::default();
        let presence_pulled = Counter::default();
        let group_receipts_pushed = Counter::default();
        let broadcast_delivered = Counter::default();
        let broadcast_pending = Gauge::default();
        let refused_connections = Family::<Label, Counter>::default();
        let longpolls_evicted = Counter::default();
        let send_limited = Counter::default();
        registry.register(
            "send_limited",
            "Sends refused by the per-user send limit",
            send_limited.clone(),
        );
        let signals_sent = Counter::default();
        registry.register(
            "signals_sent",
            "Typing signals sent (never stored)",
            signals_sent.clone(),
        );
        let signals_limited = Counter::default();
        registry.register(
            "signals_limited",
            "Typing signals refused by the per-user limit",
            signals_limited.clone(),
        );
        let expired_records = Counter::default();
        let webhook_delivered = Counter::default();
        registry.register(
            "webhook_delivered",
            "Feed events the webhook delivered (answered 2xx)",
            webhook_delivered.clone(),
        );
        let webhook_failed = Counter::default();
        registry.register(
            "webhook_failed",
            "Webhook POSTs that failed and will be retried",
            webhook_failed.clone(),
        );
        let memory_entries = Family::<Label, Gauge>::default();
        registry.register(
            "refused_connections",
            "Connections closed at accept by kind (total cap, per_ip cap)",
            refused_connections.clone(),
        );
        registry.register(
            "longpolls_evicted",
            "Held long-polls answered early to make room for a newer connection",
            longpolls_evicted.clone(),
        );
        registry.register(
            "expired_records",
            "Records dropped when their retention ran out",
            expired_records.clone(),
        );
        registry.register(
            "memory_entries",
            "Entries of in-memory maps by kind",
            memory_entries.clone(),
        );
        registry.register("appends", "Events appended durably", appends.clone());
        registry.register("flushes", "Group-commit flushes", flushes.clone());
        registry.register(
            "appended_bytes",
            "Bytes of event JSON appended to user queues",
            appended_bytes.clone(),
        );
        registry.register(
            "flush_seconds",
            "Duration of one group-commit flush (flush + fdatasync)",
            flush_seconds.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Append calls made durable by one flush",
            commit_batch.clone(),
        );
        registry.register(
            "queues_in_memory",
            "User queues whose state is held in memory",
            queues_in_memory.clone(),
        );
        registry.register(
            "longpolls_held",
            "Long-polls held now",
            longpolls_held.clone(),
        );
        registry.register(
            "longpoll_returns",
            "Long-poll returns by kind (events or empty)",
            longpoll_returns.clone(),
        );
        registry.register(
            "trimmed_events",
            "Events dropped by retention",
            trimmed.clone(),
        );
        registry.register(
            "connections",
            "Open streaming connections by transport",
            connections.clone(),
        );
        registry.register(
            "delivered_events",
            "Events delivered by transport",
            delivered.clone(),
        );
        registry.register("sent_bytes", "Bytes sent by transport", bytes_sent.clone());
        registry.register(
            "presence_fanout",
            "Online reverse friends reached by one presence change",
            presence_fanout.clone(),
        );
        registry.register(
            "presence_pushed",
            "Presence events pushed",
            presence_pushed.clone(),
        );
        registry.register(
            "presence_pulled",
            "Statuses returned by presence pulls",
            presence_pulled.clone(),
        );
        registry.register(
            "group_receipts_pushed",
            "group_receipt events pushed to senders",
            group_receipts_pushed.clone(),
        );
        registry.register(
            "broadcast_delivered",
            "Push-broadcast events delivered",
            broadcast_delivered.clone(),
        );
        registry.register(
            "broadcast_pending",
            "Push-broadcast deliveries still queued",
            broadcast_pending.clone(),
        );
        let longpoll_useful = longpoll_returns
            .get_or_create(&Label { kind: "events" })
            .clone();
        let longpoll_empty = longpoll_returns
            .get_or_create(&Label { kind: "empty" })
            .clone();
        Metrics {
            registry,
            appends,
            appended_bytes,
            flushes,
            flush_seconds,
            commit_batch,
            longpolls_held,
            longpoll_useful,
            longpoll_empty,
            trimmed,
            queues_in_memory,
            connections,
            delivered,
            bytes_sent,
            presence_fanout,
            presence_pushed,
            presence_pulled,
            group_receipts_pushed,
            broadcast_delivered,
            broadcast_pending,
            refused_connections,
            longpolls_evicted,
            send_limited,
            signals_sent,
            signals_limited,
            webhook_delivered,
            webhook_failed,
            expired_records,
            memory_entries,
        }
    }

    /// Sets the `memory_entries` gauge of `kind`.
    pub fn set_entries(&self, kind: &'static str, entries: usize) {
        self.memory_entries
            .get_or_create(&Label { kind })
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
