//! The shared core of the streaming transports (iframe, SSE, WebSocket):
//! a cursor that follows one user's queue.
//!
//! A [`Subscription`] reads the queue in pages as the consumer asks for
//! more, so a client that stops reading leaves its backlog in the store,
//! not in a channel in memory: the cost of a slow client is one page.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::app::App;
use crate::chat::signals::Listener;
use crate::error::Error;
use crate::http::request::{client_of, parse_u64, Query};
use crate::hub::{Connection, Transport};
use crate::pages::{parse_epoch, read_after, read_following};
use crate::store::{Epoch, Follow, Page, StoreError};
use crate::uid::Uid;
use hyper::Request;

/// Events read per page.
const PAGE: usize = 100;

/// What a stream should send next.
pub enum Next {
    /// One page of events (complete event JSON objects, in order).
    Events(Vec<Bytes>),
    /// Ephemeral signals (typing) that came for the user: JSON objects
    /// without a seq, not part of the queue.
    Signals(Vec<Bytes>),
    /// Nothing happened for a heartbeat interval.
    Heartbeat,
    /// The stream should end: shutdown or its lifetime is over.
    End(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    ShuttingDown,
    Expired,
}

/// A stream request, parsed: who, and after which event. Nothing has
/// changed yet; [`StreamRequest::open`] starts the stream.
pub struct StreamRequest {
    pub uid: Uid,
    pub cursor: u64,
    /// The epoch of the cursor, if the client sent one.
    pub epoch: Option<Epoch>,
    transport: Transport,
    client: Option<std::net::SocketAddr>,
}

impl StreamRequest {
    /// Authenticates and takes the cursor: `cursor=N&epoch=E`, or for SSE
    /// the `Last-Event-ID` header `N:E` (or `N`), which wins (EventSource
    /// sends it when it reconnects to the same URL).
    pub fn parse<B>(
        app: &App,
        req: &Request<B>,
        transport: Transport,
    ) -> Result<StreamRequest, Error> {
        let uid = app.auth.stream_user(req)?;
        let last_event_id = req
            .headers()
            .get("last-event-id")
            .filter(|_| transport == Transport::Sse);
        let query = Query::of(req);
        let (cursor, epoch) = match last_event_id {
            Some(value) => {
                let value = value.to_str().unwrap_or("?");
                let (seq, epoch) = match value.split_once(':') {
                    Some((seq, epoch)) => (seq, Some(epoch)),
                    None => (value, query.get("epoch")),
                };
                (parse_u64("Last-Event-ID", seq)?, parse_epoch(epoch)?)
            }
            None => (
                query.u64("cursor")?.unwrap_or(0),
                parse_epoch(query.get("epoch"))?,
            ),
        };
        Ok(StreamRequest {
            uid,
            cursor,
            epoch,
            transport,
            client: client_of(req),
        })
    }

    /// Starts the stream: the cursor is checked against the queue (409)
    /// before the user counts as connected (the per-user cap, presence),
    /// so a refused stream changes nothing. From then on the stream also
    /// hands out the user's signals.
    pub async fn open(self, app: &Arc<App>) -> Result<(Subscription, Connection), Error> {
        let mut subscription =
            Subscription::new(app.clone(), self.uid.clone(), self.cursor, self.epoch).await?;
        let connection = app
            .hub
            .connect(&self.uid, self.transport, self.client, self.cursor)?;
        subscription.signals = Some(app.signals.listen(&self.uid));
        Ok((subscription, connection))
    }
}

/// A stream's cursor shared with a writer that sends new events itself
/// the moment they are durable (a WebSocket's, see `ws.rs`), so that the
/// stream's task is not woken for each of them.
pub trait Handoff: Send + Sync {
    /// The stream is about to read its queue: the writer leaves events to
    /// it until [`Handoff::end`]. The cursor to read from.
    fn begin(&self) -> u64;
    /// The stream has sent everything up to `cursor` (or found nothing
    /// new): the writer may go on from there.
    fn end(&self, cursor: u64);
    /// Notified when the writer left events to the stream.
    fn woken(&self) -> &tokio::sync::Notify;
}

/// A cursor on one user's queue that waits for what comes after it.
pub struct Subscription {
    app: Arc<App>,
    uid: Uid,
    cursor: u64,
    /// The epoch of the queue this cursor belongs to; `None` until known.
    epoch: Option<Epoch>,
    follow: Follow,
    /// Set when a writer takes new events straight from the store.
    handoff: Option<Arc<dyn Handoff>>,
    /// The head moved (or the store came back): read even if it is not
    /// beyond the cursor, since a recreated queue starts again at 1.
    recheck: bool,
    heartbeat: Interval,
    /// When events were last handed out: a heartbeat is due only after
    /// `heartbeat.period()` of silence. Kept instead of resetting the timer on every page,
    /// which is a timer-wheel update per delivery.
    last_sent: Instant,
    /// Registered once: a fresh `cancelled()` per wait locks the token.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    ends_at: Option<Instant>,
    /// The user's signals, once the stream is open.
    signals: Option<Listener>,
}

impl Subscription {
    /// Follows `uid`'s queue from `cursor` of `epoch`; fails with 409 if
    /// the cursor is beyond the queue head. A cursor of another epoch
    /// starts over with a `gap` (see [`read_after`]).
    pub async fn new(
        app: Arc<App>,
        uid: Uid,
        cursor: u64,
        epoch: Option<Epoch>,
    ) -> Result<Subscription, Error> {
        let follow = app.store.follow(&uid).await?;
        let newest = *follow.head.borrow();
        // A cursor that may not be this queue's is checked now, so that a
        // refused stream changes nothing (the 409 of the polls). The
        // events are read again by next(), which also turns a cursor of
        // another epoch into a gap and the new history.
        let mut recheck = false;
        if cursor > newest || epoch.is_some() {
            let page = Box::pin(read_after(&app, &uid, cursor, 1, epoch)).await?;
            recheck = !page.events.is_empty();
        }
        // How often an idle stream sends a keepalive (15 s by default).
        let every = Duration::from_millis(app.config.heartbeat_ms.max(100));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = Box::pin(app.shutdown.clone().cancelled_owned());
        Ok(Subscription {
            app,
            uid,
            cursor,
            epoch,
            follow,
            handoff: None,
            recheck,
            heartbeat,
            last_sent: Instant::now(),
            shutdown,
            ends_at: None,
            signals: None,
        })
    }

    /// Makes [`Subscription::next`] end the stream after `lifetime`.
    pub fn end_after(&mut self, lifetime: Duration) {
        self.ends_at = Some(Instant::now() + lifetime);
    }

    /// The pull hints a keepalive carries (`{"broadcast": B}`), if any.
    pub fn hints(&self) -> Option<String> {
        self.app.broadcasts.hints()
    }

    /// The `hb` pseudo-event of keepalives (no seq: not part of the
    /// queue), with the pull hints and any group receipt totals waiting
    /// for it (`--group-receipts keepalive`; taken by this keepalive).
    pub fn heartbeat_json(&self) -> String {
        let mut hb = String::from(r#"{"type":"hb""#);
        if let Some(hints) = self.hints() {
            hb.push_str(&format!(r#","hints":{hints}"#));
        }
        if let Some(receipts) = self.signals.as_ref().and_then(Listener::riders) {
            hb.push_str(&format!(r#","receipts":{receipts}"#));
        }
        hb.push('}');
        hb
    }

    /// From now on, `handoff` shares the cursor, and `direct` is given new
    /// durable events by the store; the handoff wakes the stream for what
    /// the writer leaves to it. `false` if the store cannot (nothing
    /// changed).
    pub fn hand_off(
        &mut self,
        handoff: Arc<dyn Handoff>,
        direct: std::sync::Weak<dyn crate::store::DurableSink>,
    ) -> bool {
        if !self.app.store.attach(&self.follow, direct) {
            return false;
        }
        self.handoff = Some(handoff);
        true
    }

    /// The `hello`, if the stream has nothing to send yet (caught up,
    /// nothing to recheck); the queue's epoch is read if not known yet.
    pub async fn idle_hello(&mut self) -> Option<String> {
        if self.recheck || *self.follow.head.borrow() > self.cursor {
            return None;
        }
        if self.epoch.is_none() {
            let page = self.read(1, None).await.ok()?;
            if !page.events.is_empty() {
                return None;
            }
            self.epoch = Some(page.epoch);
        }
        Some(self.hello_json())
    }

    /// Up to `events` events after the cursor, of `epoch`. Boxed: an idle
    /// stream's state would otherwise carry room for a whole read (store
    /// and group-log futures) between pages (measured: ~600 B per idle SSE
    /// connection).
    fn read(
        &self,
        events: usize,
        epoch: Option<Epoch>,
    ) -> Pin<Box<impl std::future::Future<Output = Result<Page, Error>> + Send + '_>> {
        let follow = Some(&self.follow);
        Box::pin(read_following(
            &self.app,
            &self.uid,
            follow,
            self.cursor,
            events,
            epoch,
        ))
    }

    /// The events handed out by the last [`Subscription::next`] are sent.
    pub fn sent(&self) {
        if let Some(handoff) = &self.handoff {
            handoff.end(self.cursor);
        }
    }

    /// The seq of the last event handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The epoch of the queue followed.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// The `ready` pseudo-event SSE and the iframe stream send at open:
    /// the stream flows, and a heartbeat comes at least every
    /// `heartbeat_ms` (a client that hears nothing for about 2.5 of them
    /// takes the stream for dead).
    pub fn ready_json(&self) -> String {
        let every = self.heartbeat.period().as_millis();
        format!(r#"{{"type":"ready","heartbeat_ms":{every}}}"#)
    }

    /// The `hello` pseudo-event a stream sends before its first events:
    /// the epoch to send back with a cursor when reconnecting, and the
    /// heartbeat interval (a client that hears nothing for about 2.5 of
    /// them takes the stream for dead and reconnects). (Not at open: an
    /// idle stream that never gets an event then never holds the buffers
    /// that writing it would grow.)
    pub fn hello_json(&self) -> String {
        let epoch = self.epoch.map(|e| e.to_string()).unwrap_or_default();
        let every = self.heartbeat.period().as_millis();
        format!(r#"{{"type":"hello","epoch":"{epoch}","heartbeat_ms":{every}}}"#)
    }

    /// Takes back the events after `cursor` that were handed out but not
    /// sent (they come again with the next page, or from this cursor on
    /// the client's next connection).
    pub fn rewind(&mut self, cursor: u64) {
        self.cursor = self.cursor.min(cursor);
    }

    /// Waits for the next page of events, a heartbeat, or the end.
    /// Cancel-safe: dropping the future loses nothing. While the store is
    /// unavailable the stream stays open (with heartbeats) and reads again
    /// every second until it is back.
    pub async fn next(&mut self) -> Result<Next, Error> {
        loop {
            if self.app.shutdown.is_cancelled() {
                return Ok(Next::End(EndReason::ShuttingDown));
            }
            if let Some(handoff) = &self.handoff {
                self.cursor = handoff.begin();
            }
            let head = *self.follow.head.borrow_and_update();
            // Taken whether or not the head is beyond the cursor: a recheck
            // left set would read the queue once more after every page.
            let recheck = std::mem::take(&mut self.recheck);
            if head > self.cursor || recheck {
                match self.read(PAGE, self.epoch).await {
                    Ok(page) => {
                        self.epoch = Some(page.epoch);
                        if !page.events.is_empty() {
                            self.cursor = page.cursor;
                            self.last_sent = Instant::now();
                            return Ok(Next::Events(page.events));
                        }
                    }
                    Err(Error::Store(
                        StoreError::Unavailable(e) | StoreError::OutcomeUnknown(e),
                    )) => {
                        tracing::debug!("stream of {} waits for the store: {e}", self.uid);
                        self.recheck = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(handoff) = &self.handoff {
                handoff.end(self.cursor);
            }
            let handoff = self.handoff.clone();
            let woken = async {
                match &handoff {
                    Some(handoff) => handoff.woken().notified().await,
                    None => std::future::pending().await,
                }
            };
            // Boxed: a timer held inline would cost every idle stream its
            // size, for a wait only an unavailable store needs.
            let retry = async {
                if self.recheck {
                    Box::pin(tokio::time::sleep(Duration::from_secs(1))).await
                } else {
                    std::future::pending().await
                }
            };
            let signalled = async {
                match self.signals.as_mut() {
                    Some(signals) => signals.changed().await,
                    None => std::future::pending().await,
                }
            };
            // Only streams with a lifetime arm a timer for it.
            let expiry = async {
                match self.ends_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.follow.head.changed(), if handoff.is_none() => {
                    if changed.is_err() {
                        return Ok(Next::End(EndReason::ShuttingDown));
                    }
                    self.recheck = true;
                }
                () = woken => {}
                () = signalled => {
                    let taken = self.signals.as_mut().map(Listener::take).unwrap_or_default();
                    if !taken.is_empty() {
                        return Ok(Next::Signals(taken));
                    }
                }
                _ = retry => {}
                _ = self.heartbeat.tick() => {
                    let due = self.last_sent + self.heartbeat.period();
                    // Receipt totals waiting for a keepalive get one even
                    // when events keep the stream busy.
                    let riders = self.signals.as_ref().is_some_and(Listener::has_riders);
                    if due <= Instant::now() || riders {
                        return Ok(Next::Heartbeat);
                    }
                    self.heartbeat.reset_at(due);
                }
                _ = self.shutdown.as_mut() => return Ok(Next::End(EndReason::ShuttingDown)),
                _ = expiry => return Ok(Next::End(EndReason::Expired)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{event_seq, Append};

    async fn publish(app: &App, uid: &Uid, count: usize) {
        let batch = (0..count)
            .map(|i| Append::new(uid.clone(), "notice", &i))
            .collect();
        app.store.append(batch).await.unwrap();
    }

    fn seqs(events: &[Bytes]) -> Vec<u64> {
        events.iter().map(|e| event_seq(e).unwrap()).collect()
    }

    #[tokio::test]
    async fn pages_the_backlog_in_order_then_wakes_for_what_comes_next() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &[]).await;
        let uid = Uid::parse("alice").unwrap();
        publish(&app, &uid, 250).await;
        let mut sub = Subscription::new(app.clone(), uid.clone(), 0, None)
            .await
            .unwrap();
        let mut got = Vec::new();
        for expected in [100, 100, 50] {
            let Next::Events(events) = sub.next().await.unwrap() else {
                panic!("a page of events");
            };
            assert_eq!(events.len(), expected);
            got.extend(seqs(&events));
        }
        assert_eq!(got, (1..=250).collect::<Vec<_>>());
        // Nothing more: next() waits until an event is durable.
        let waiting = tokio::time::timeout(Duration::from_millis(100), sub.next()).await;
        assert!(waiting.is_err(), "nothing to hand out yet");
        publish(&app, &uid, 1).await;
        let Next::Events(events) = sub.next().await.unwrap() else {
            panic!("the new event");
        };
        assert_eq!(seqs(&events), vec![251]);
        // Rewound, it hands out again what was not sent.
        sub.rewind(249);
        let Next::Events(events) = sub.next().await.unwrap() else {
            panic!("the events after the rewind");
        };
        assert_eq!(seqs(&events), vec![250, 251]);
    }

    #[tokio::test]
    async fn a_cursor_beyond_the_head_is_refused_and_a_page_keeps_its_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &["--max-page-bytes", "4096"]).await;
        let uid = Uid::parse("bob").unwrap();
        assert!(Subscription::new(app.clone(), uid.clone(), 1, None)
            .await
            .is_err());
        let big = "x".repeat(1500);
        let batch = (0..6)
            .map(|_| Append::new(uid.clone(), "notice", &big))
            .collect();
        app.store.append(batch).await.unwrap();
        let mut sub = Subscription::new(app.clone(), uid, 0, None).await.unwrap();
        let Next::Events(events) = sub.next().await.unwrap() else {
            panic!("a page");
        };
        assert_eq!(seqs(&events), vec![1, 2]);
        assert!(events.iter().map(|e| e.len()).sum::<usize>() <= 4096);
        assert_eq!(sub.cursor(), 2);
    }

    #[tokio::test]
    async fn an_idle_subscription_sends_a_heartbeat_and_ends_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path(), &["--heartbeat-ms", "100"]).await;
        let mut sub = Subscription::new(app.clone(), Uid::parse("carol").unwrap(), 0, None)
            .await
            .unwrap();
        assert!(matches!(sub.next().await.unwrap(), Next::Heartbeat));
        app.shutdown.cancel();
        assert!(matches!(
            sub.next().await.unwrap(),
            Next::End(EndReason::ShuttingDown)
        ));
    }
}
