//! The text streams (SSE, iframe) as one loop: a [`Subscription`] hands
//! out pages of events, heartbeats and the end; a [`Framer`] writes each as
//! the transport's bytes. The loop counts what was sent and stops after the
//! framer's last chunk.

use std::convert::Infallible;

use bytes::Bytes;
use futures::Stream;
use hyper::body::Frame;

use super::subscription::{Next, Subscription};
use crate::hub::Connection;

/// What one page of events became.
pub struct Written {
    pub chunk: Bytes,
    /// Events in `chunk`.
    pub events: usize,
    /// The stream ends after `chunk` (then [`Framer::end`] is written).
    pub last: bool,
}

/// How a text stream writes what its subscription hands out.
pub trait Framer: Send + 'static {
    /// The first chunk, with the `ready` of [`Subscription::ready_json`].
    fn opening(&mut self, sub: &Subscription) -> Bytes;
    /// The `hello` of [`Subscription::hello_json`], written before the
    /// first page of events.
    fn hello(&mut self, sub: &Subscription) -> Bytes;
    /// A page of events; `start` is the cursor before it. A framer that
    /// writes fewer events than it got rewinds `sub` to the last one written.
    fn events(&mut self, sub: &mut Subscription, start: u64, events: &[Bytes]) -> Written;
    /// Ephemeral signals (JSON objects with a `type`, no seq).
    fn signals(&mut self, signals: &[Bytes]) -> Bytes;
    /// A keepalive after a heartbeat interval of silence.
    fn heartbeat(&mut self, sub: &Subscription) -> Bytes;
    /// The last chunk, if the transport has one.
    fn end(&mut self, sub: &Subscription) -> Option<Bytes>;
}

enum Stage {
    Opening,
    Streaming,
    Ending,
    Done,
}

struct Framing<F> {
    sub: Subscription,
    conn: Connection,
    framer: F,
    stage: Stage,
    greeted: bool,
}

impl<F: Framer> Framing<F> {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        match self.stage {
            Stage::Opening => {
                self.stage = Stage::Streaming;
                return Some(self.framer.opening(&self.sub));
            }
            Stage::Ending => return self.end(),
            Stage::Done => return None,
            Stage::Streaming => {}
        }
        let start = self.sub.cursor();
        match self.sub.next().await {
            Ok(Next::Events(events)) => {
                // The first page goes with the hello (written first, so an
                // iframe document counts it in its budget).
                let hello = (!std::mem::replace(&mut self.greeted, true))
                    .then(|| self.framer.hello(&self.sub));
                let written = self.framer.events(&mut self.sub, start, &events);
                if written.last {
                    self.stage = Stage::Ending;
                }
                if written.events == 0 {
                    return self.end();
                }
                let chunk = match hello {
                    Some(hello) => [hello, written.chunk].concat().into(),
                    None => written.chunk,
                };
                self.conn
                    .delivered(self.sub.cursor(), written.events, chunk.len());
                Some(chunk)
            }
            Ok(Next::Signals(signals)) => {
                let chunk = self.framer.signals(&signals);
                self.conn.sent(chunk.len());
                Some(chunk)
            }
            Ok(Next::Heartbeat) => Some(self.framer.heartbeat(&self.sub)),
            Ok(Next::End(_)) => self.end(),
            Err(e) => {
                tracing::warn!(
                    "{} stream of {} ended: {e}",
                    self.conn.transport().name(),
                    self.conn.uid()
                );
                self.end()
            }
        }
    }

    fn end(&mut self) -> Option<Bytes> {
        self.stage = Stage::Done;
        self.framer.end(&self.sub)
    }
}

/// The body of a text stream: `framer`'s chunks of what `sub` hands out,
/// counted on `conn`.
pub fn frames<F: Framer>(
    sub: Subscription,
    conn: Connection,
    framer: F,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let state = Framing {
        sub,
        conn,
        framer,
        stage: Stage::Opening,
        greeted: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let chunk = state.next_chunk().await?;
        Some((Ok(Frame::data(chunk)), state))
    })
}
