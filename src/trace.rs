//! The delivery trace: what happened to each user's recent events on this
//! node, kept in memory for `--trace-minutes`.
//!
//! Per user, four short logs: the appends (seq, type, when asked, when
//! durable, by which request), the writes to connections (which
//! connection, the seqs it was sent, when), the acks (the acked seq
//! before and after, when, by which request) and the message read
//! receipts. A write or an ack is one entry for all the seqs it covers, so
//! a stream sending pages of events costs one entry per page, not per
//! event. The trace of one event is assembled from these when asked
//! ([`Traces::steps`]). Every entry is also a `debug` line on the log
//! target `herald::delivery`, with uid, seq, transport, node and the trace
//! id of the request that caused it.
//!
//! The bounds: each log keeps at most [`PER_USER`] entries, and the sweep
//! ([`Traces::sweep`], every trim interval) drops entries older than the
//! window, and users with nothing left.

mod cause;
pub mod recorded;

pub use cause::Cause;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::store::now_ms;
use crate::uid::Uid;
use crate::util::SharedMap;

/// Most entries per user in each of its logs.
pub const PER_USER: usize = 1024;

/// Most event types kept once for every event of theirs (any other is
/// copied per append call).
const KINDS: usize = 256;

/// One event appended: its seq, and what it shares with the other events
/// of its append call (a fan-out to 10 000 users keeps one [`Batch`]).
struct Appended {
    seq: u64,
    batch: Arc<Batch>,
}

/// What the events of one append call with one type share.
struct Batch {
    kind: Arc<str>,
    asked_ms: u64,
    durable_ms: u64,
    cause: Option<Arc<Cause>>,
}

struct Written {
    /// The seqs `after+1 ..= last` were written.
    after: u64,
    last: u64,
    at_ms: u64,
    transport: &'static str,
    /// The hub's connection id (none for a short poll).
    connection: Option<u64>,
}

struct AckEntry {
    before: u64,
    after: u64,
    at_ms: u64,
    cause: Option<Arc<Cause>>,
}

struct Read {
    message: u64,
    at_ms: u64,
    cause: Option<Arc<Cause>>,
}

#[derive(Default)]
struct UserTrace {
    appended: VecDeque<Appended>,
    written: VecDeque<Written>,
    acks: VecDeque<AckEntry>,
    reads: VecDeque<Read>,
    /// Appends of this node not yet durable (counted while delivery lines
    /// are logged): a write may reach a reader before its append returns,
    /// and its log line then waits for the append's trace id.
    in_flight: u32,
    /// Writes not logged yet, for that reason: `(after, last, transport,
    /// connection)`.
    unlogged: Vec<(u64, u64, &'static str, Option<u64>)>,
}

/// Whether delivery lines are logged (`--log herald::delivery=debug`).
fn logging() -> bool {
    tracing::enabled!(target: "herald::delivery", tracing::Level::DEBUG)
}

/// Appends `entry` to `log`, dropping its oldest at [`PER_USER`]; whether
/// the log grew.
fn push<T>(log: &mut VecDeque<T>, entry: T) -> bool {
    let full = log.len() == PER_USER;
    if full {
        log.pop_front();
    }
    log.push_back(entry);
    !full
}

/// Drops what `user` logged before `oldest` (ms); how many appends it
/// dropped.
fn prune(user: &mut UserTrace, oldest: u64) -> usize {
    let appended = user.appended.len();
    while user
        .appended
        .front()
        .is_some_and(|a| a.batch.durable_ms < oldest)
    {
        user.appended.pop_front();
    }
    while user.written.front().is_some_and(|w| w.at_ms < oldest) {
        user.written.pop_front();
    }
    while user.acks.front().is_some_and(|a| a.at_ms < oldest) {
        user.acks.pop_front();
    }
    while user.reads.front().is_some_and(|r| r.at_ms < oldest) {
        user.reads.pop_front();
    }
    appended - user.appended.len()
}

/// One step of an event's trace, as the API shows it.
#[derive(Debug, Serialize)]
pub struct Step {
    /// `appended`, `durable`, `written`, `acked`, `read`.
    pub step: &'static str,
    /// Unix milliseconds.
    pub at: u64,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// The acked seq it raised the mark to (`acked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// The event type (`appended`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Arc<Cause>>,
}

impl Step {
    fn new(step: &'static str, at: u64, node: &str) -> Step {
        Step {
            step,
            at,
            node: node.to_owned(),
            transport: None,
            connection: None,
            cursor: None,
            kind: None,
            cause: None,
        }
    }
}

/// This node's delivery traces.
pub struct Traces {
    users: SharedMap<Uid, UserTrace>,
    window: Duration,
    /// Most appends kept in all (the sweep drops the oldest past it).
    max_events: usize,
    /// Appends kept now.
    events: AtomicUsize,
    /// The event types seen, each kept once (at most [`KINDS`] of them).
    kinds: SharedMap<Box<str>, Arc<str>>,
    node: String,
}

impl Traces {
    /// Keeps `window` of history (zero: records nothing), at most
    /// `max_events` appends of it; `node` names this node in the steps and
    /// log lines.
    pub fn new(window: Duration, max_events: usize, node: String) -> Traces {
        Traces {
            users: SharedMap::default(),
            window,
            max_events,
            events: AtomicUsize::new(0),
            kinds: SharedMap::default(),
            node,
        }
    }

    /// The event type `kind`, shared by every append of it.
    pub fn kind(&self, kind: &str) -> Arc<str> {
        if let Some(kind) = self.kinds.get(kind) {
            return kind.clone();
        }
        let shared: Arc<str> = Arc::from(kind);
        if self.kinds.len() < KINDS {
            self.kinds.insert(kind.into(), shared.clone());
        }
        shared
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn with(&self, uid: &Uid, f: impl FnOnce(&mut UserTrace)) {
        if !self.enabled() {
            return;
        }
        // A user already traced costs no copy of the uid.
        match self.users.get_mut(uid) {
            Some(mut user) => f(&mut user),
            None => f(&mut self.users.entry(uid.clone()).or_default()),
        }
    }

    /// Appends to `uids` are about to be made; whether they are counted in
    /// flight (pass it on to [`Traces::appended`] or [`Traces::failed`]).
    pub fn begin<'a>(&self, uids: impl Iterator<Item = &'a Uid>) -> bool {
        if !self.enabled() || !logging() {
            return false;
        }
        for uid in uids {
            self.with(uid, |user| user.in_flight += 1);
        }
        true
    }

    /// The appends [`Traces::begin`] counted for `uids` failed or appended
    /// nothing.
    pub fn failed<'a>(&self, uids: impl Iterator<Item = &'a Uid>, counted: bool) {
        if counted {
            for uid in uids {
                self.landed(uid);
            }
        }
    }

    /// One counted append to `uid` is over: once none is left, logs the
    /// writes that waited for it.
    fn landed(&self, uid: &Uid) {
        let unlogged = {
            let Some(mut user) = self.users.get_mut(uid) else {
                return;
            };
            user.in_flight = user.in_flight.saturating_sub(1);
            if user.in_flight > 0 {
                return;
            }
            std::mem::take(&mut user.unlogged)
        };
        for (after, last, transport, connection) in unlogged {
            self.log_written(uid, transport, connection, after, last);
        }
    }

    /// Events appended with these seqs, asked for at `asked_ms`, durable
    /// now; `counted` as [`Traces::begin`] said.
    pub fn appended(&self, appended: &[(&Uid, &Arc<str>, u64)], asked_ms: u64, counted: bool) {
        if !self.enabled() {
            return;
        }
        let cause = Cause::current();
        let durable_ms = now_ms();
        let mut batch: Option<Arc<Batch>> = None;
        for &(uid, kind, seq) in appended {
            tracing::debug!(
                target: "herald::delivery",
                uid = %uid, seq, kind = &**kind, node = %self.node,
                trace_id = cause.as_ref().and_then(|c| c.trace_id.as_deref()),
                request = cause.as_ref().map(|c| c.request),
                "durable"
            );
            let batch = match &batch {
                Some(b) if Arc::ptr_eq(&b.kind, kind) => b.clone(),
                _ => batch
                    .insert(Arc::new(Batch {
                        kind: kind.clone(),
                        asked_ms,
                        durable_ms,
                        cause: cause.clone(),
                    }))
                    .clone(),
            };
            self.with(uid, |user| {
                let grew = push(&mut user.appended, Appended { seq, batch });
                if grew {
                    self.events.fetch_add(1, Ordering::Relaxed);
                }
            });
            if counted {
                self.landed(uid);
            }
        }
    }

    /// The seqs `after+1 ..= last` of `uid` were written on `transport`.
    pub fn written(
        &self,
        uid: &Uid,
        transport: &'static str,
        connection: Option<u64>,
        after: u64,
        last: u64,
    ) {
        if !self.enabled() || last <= after {
            return;
        }
        let mut waits = false;
        if logging() {
            if let Some(mut user) = self.users.get_mut(uid) {
                waits = user.in_flight > 0;
                if waits {
                    user.unlogged.push((after, last, transport, connection));
                }
            }
            if !waits {
                self.log_written(uid, transport, connection, after, last);
            }
        }
        self.with(uid, |user| {
            let _ = push(
                &mut user.written,
                Written {
                    after,
                    last,
                    at_ms: now_ms(),
                    transport,
                    connection,
                },
            );
        });
    }

    /// A line per event written that this node appended (with the trace id
    /// of its request), or one for the range if it appended none of them.
    fn log_written(
        &self,
        uid: &Uid,
        transport: &str,
        connection: Option<u64>,
        after: u64,
        last: u64,
    ) {
        let user = self.users.get(uid);
        let appended = user.iter().flat_map(|u| u.appended.iter());
        let mut logged = false;
        for event in appended.filter(|a| after < a.seq && a.seq <= last) {
            let cause = event.batch.cause.as_deref();
            tracing::debug!(
                target: "herald::delivery",
                uid = %uid, seq = event.seq, transport, connection, node = %self.node,
                trace_id = cause.and_then(|c| c.trace_id.as_deref()), "written"
            );
            logged = true;
        }
        if !logged {
            tracing::debug!(
                target: "herald::delivery",
                uid = %uid, first = after + 1, seq = last, transport, connection,
                node = %self.node, "written"
            );
        }
    }

    /// `uid`'s acked seq went from `before` to `after`.
    pub fn acked(&self, uid: &Uid, before: u64, after: u64) {
        if !self.enabled() || after <= before {
            return;
        }
        let cause = Cause::current();
        tracing::debug!(
            target: "herald::delivery",
            uid = %uid, seq = after, node = %self.node,
            request = cause.as_ref().map(|c| c.request), "acked"
        );
        self.with(uid, |user| {
            let _ = push(
                &mut user.acks,
                AckEntry {
                    before,
                    after,
                    at_ms: now_ms(),
                    cause,
                },
            );
        });
    }

    /// `uid` marked direct message `message` read.
    pub fn read(&self, uid: &Uid, message: u64) {
        if !self.enabled() {
            return;
        }
        let cause = Cause::current();
        tracing::debug!(
            target: "herald::delivery",
            uid = %uid, message, node = %self.node, "read"
        );
        self.with(uid, |user| {
            let _ = push(
                &mut user.reads,
                Read {
                    message,
                    at_ms: now_ms(),
                    cause,
                },
            );
        });
    }

    /// What this node knows of `uid`'s event `seq` (`message`: its message
    /// id, for the read receipt), oldest first.
    pub fn steps(&self, uid: &Uid, seq: u64, message: Option<u64>) -> Vec<Step> {
        let Some(user) = self.users.get(uid) else {
            return Vec::new();
        };
        let mut steps = Vec::new();
        if let Some(append) = user.appended.iter().find(|a| a.seq == seq) {
            let append = &append.batch;
            let mut asked = Step::new("appended", append.asked_ms, &self.node);
            asked.kind = Some(append.kind.to_string());
            asked.cause = append.cause.clone();
            steps.push(asked);
            // Readers are woken when the commit lands, the append's caller
            // a moment later: the event was durable by its first write.
            let first_write = user
                .written
                .iter()
                .filter(|w| w.after < seq && seq <= w.last)
                .map(|w| w.at_ms)
                .min();
            let durable = first_write.map_or(append.durable_ms, |w| w.min(append.durable_ms));
            steps.push(Step::new(
                "durable",
                durable.max(append.asked_ms),
                &self.node,
            ));
        }
        for write in user
            .written
            .iter()
            .filter(|w| w.after < seq && seq <= w.last)
        {
            let mut step = Step::new("written", write.at_ms, &self.node);
            step.transport = Some(write.transport);
            step.connection = write.connection;
            steps.push(step);
        }
        for ack in user
            .acks
            .iter()
            .filter(|a| a.before < seq && seq <= a.after)
        {
            let mut step = Step::new("acked", ack.at_ms, &self.node);
            step.cursor = Some(ack.after);
            step.cause = ack.cause.clone();
            steps.push(step);
        }
        if let Some(message) = message {
            for read in user.reads.iter().filter(|r| r.message == message) {
                let mut step = Step::new("read", read.at_ms, &self.node);
                step.cause = read.cause.clone();
                steps.push(step);
            }
        }
        steps
    }

    /// Drops what is older than the window, and past `max_events` appends
    /// the oldest of them (with what was logged before the newest one
    /// dropped); returns how many users are still traced.
    pub fn sweep(&self) -> usize {
        self.prune_before(now_ms().saturating_sub(self.window.as_millis() as u64));
        let excess = self
            .events
            .load(Ordering::Relaxed)
            .saturating_sub(self.max_events);
        if excess > 0 {
            let mut times: Vec<u64> = Vec::with_capacity(self.max_events + excess);
            for user in self.users.iter() {
                times.extend(user.appended.iter().map(|a| a.batch.durable_ms));
            }
            // The newest of the `excess` oldest, and all before it, go.
            let dropped = excess.min(times.len());
            if dropped > 0 {
                let (_, cutoff, _) = times.select_nth_unstable(dropped - 1);
                self.prune_before(*cutoff + 1);
            }
        }
        self.users.len()
    }

    /// Drops what was logged before `oldest` (ms), and the users left with
    /// nothing.
    fn prune_before(&self, oldest: u64) {
        self.users.retain(|_, user| {
            let dropped = prune(user, oldest);
            self.events.fetch_sub(dropped, Ordering::Relaxed);
            !(user.appended.is_empty()
                && user.written.is_empty()
                && user.acks.is_empty()
                && user.reads.is_empty()
                && user.in_flight == 0)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_or_an_ack_is_found_for_every_seq_it_covers_and_the_logs_stay_bounded() {
        let traces = Traces::new(Duration::from_secs(60), 100_000, "n1".into());
        let uid = Uid::parse("alice").unwrap();
        let notice: Arc<str> = Arc::from("notice");
        for seq in 1..=(PER_USER as u64 + 10) {
            traces.appended(&[(&uid, &notice, seq)], now_ms(), false);
        }
        traces.written(&uid, "sse", Some(7), 1030, 1034);
        traces.acked(&uid, 1031, 1034);
        let steps: Vec<&str> = traces
            .steps(&uid, 1032, None)
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(steps, ["appended", "durable", "written", "acked"]);
        let steps: Vec<&str> = traces
            .steps(&uid, 1031, None)
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(steps, ["appended", "durable", "written"]);
        // The oldest appends were dropped at the bound.
        assert!(traces.steps(&uid, 1, None).is_empty());
        assert_eq!(traces.users.get(&uid).unwrap().appended.len(), PER_USER);
        assert_eq!(traces.sweep(), 1);
    }

    #[test]
    fn past_the_most_events_the_oldest_go_first() {
        let traces = Traces::new(Duration::from_secs(600), 10, "n1".into());
        let start = now_ms() - 10_000;
        let mut all = Vec::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let mut user = traces.users.entry(Uid::parse(name).unwrap()).or_default();
            for k in 0..10u64 {
                let at = start + k * 30 + i as u64;
                all.push(at);
                let batch = Arc::new(Batch {
                    kind: Arc::from("notice"),
                    asked_ms: at,
                    durable_ms: at,
                    cause: None,
                });
                push(&mut user.appended, Appended { seq: k + 1, batch });
            }
            traces.events.fetch_add(10, Ordering::Relaxed);
        }
        assert_eq!(traces.sweep(), 3);
        all.sort();
        let mut kept: Vec<u64> = traces
            .users
            .iter()
            .flat_map(|u| {
                u.appended
                    .iter()
                    .map(|a| a.batch.durable_ms)
                    .collect::<Vec<_>>()
            })
            .collect();
        kept.sort();
        assert_eq!(kept, all[20..], "the newest 10 of 30");
        assert_eq!(traces.events.load(Ordering::Relaxed), 10);
    }
}
