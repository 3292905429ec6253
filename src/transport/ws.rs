//! WebSocket: events down (one event JSON per text frame), commands up.
//!
//! The upgrade is checked (token, Origin, per-user cap) before the 101, so
//! a bad request gets an HTTP error, not a socket that closes at once.
//! One task per socket drives both directions with `select!`: the queue
//! subscription, incoming frames, and a protocol ping every 25 s (a peer
//! silent for two pings is dropped). Buffers are small, not tungstenite's
//! defaults of 128 KiB, which every idle connection would otherwise hold:
//! the read buffer is 512 B (an idle socket touches all of it at its first
//! read; a larger frame grows it to its length, read 512 B at a time, and
//! commands are small), and frames are written straight to the socket.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::command::{self, Command, Frame};
use super::subscription::{EndReason, Handoff, Next, StreamRequest, Subscription};
use crate::app::App;
use crate::deadline::sent_in_time;
use crate::error::Error;
use crate::http::reply::{empty, Response};
use crate::http::request::header_has;
use crate::http::rewind::Rewind;
use crate::hub::{Connection, Transport};
use crate::store::Direct;
use crate::uid::Uid;
use bytes::Bytes;

const PING_EVERY: Duration = Duration::from_secs(25);

/// `GET /v1/ws?cursor=N&epoch=E` with an Upgrade: websocket.
pub async fn handle(
    app: &Arc<App>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response, Error> {
    let headers = req.headers();
    let wants_upgrade = header_has(headers.get(UPGRADE), "websocket")
        && header_has(headers.get(CONNECTION), "upgrade");
    let key = headers.get(SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (wants_upgrade, key) else {
        return Err(Error::bad(
            "not_websocket",
            "this route needs a WebSocket upgrade",
        ));
    };
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Error::bad(
            "bad_websocket_version",
            "Sec-WebSocket-Version must be 13",
        ));
    }
    app.cors.check_websocket_origin(&req)?;
    let (subscription, connection) = StreamRequest::parse(app, &req, Transport::Ws)?
        .open(app)
        .await?;

    let upgrade = hyper::upgrade::on(&mut req);
    let app = app.clone();
    let max_message = app.config.max_body;
    app.tasks.clone().spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(512)
                    .write_buffer_size(0)
                    .max_write_buffer_size(1 << 20)
                    .max_message_size(Some(max_message))
                    .max_frame_size(Some(max_message));
                let mut session = Session {
                    app,
                    conn: connection,
                    sub: subscription,
                };
                // herald's own connections: the delivery thread may write
                // events straight to the socket (see `Straight`).
                match upgraded.downcast::<TokioIo<Rewind>>() {
                    Ok(parts) => {
                        let mut io = parts.io.into_inner();
                        io.unread(parts.read_buf);
                        let straight = Arc::new(Straight::new(
                            &io,
                            session.app.clone(),
                            session.sub.cursor(),
                        ));
                        let direct: Arc<dyn Direct> = straight.clone();
                        let direct = session
                            .sub
                            .hand_off(straight.clone(), Arc::downgrade(&direct));
                        let io = Guarded {
                            io,
                            straight: straight.clone(),
                        };
                        let socket =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        let straight = direct.then_some(straight);
                        if let Some(straight) = &straight {
                            // Sent now, straight to the empty socket, so
                            // that the first event can follow it the same way.
                            if let Some(hello) = session.sub.idle_hello().await {
                                straight.hello(hello.as_bytes());
                            }
                        }
                        session.run(socket, straight.as_deref()).await;
                    }
                    Err(upgraded) => {
                        let socket = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            Some(config),
                        )
                        .await;
                        session.run(socket, None).await;
                    }
                }
            }
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });

    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(response)
}

struct Session {
    app: Arc<App>,
    conn: Connection,
    sub: Subscription,
}

/// Why the socket loop stopped, and how to close.
enum Close {
    With(CloseCode, &'static str),
    /// The client closed: its Close frame is echoed.
    Answer,
    Gone,
}

impl Session {
    /// Serves the socket until it closes. With `straight`, the store's
    /// delivery thread writes new events to the socket itself while the
    /// session is idle and caught up.
    async fn run<S>(mut self, socket: WebSocketStream<S>, straight: Option<&Straight>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        // No direct frame after the close frame (and none once the socket
        // is dropped: `Guarded`).
        let closing = straight.map(Closing);
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let limit = self.app.config.send_timeout();
        // The hello goes out with the first page (unless `straight` sent
        // it): an idle socket that never gets an event then never grows
        // its write buffer (~650 B).
        let mut greeted = straight.is_some_and(Straight::is_greeted);
        let close = loop {
            tokio::select! {
                incoming = stream.next() => {
                    last_heard = Instant::now();
                    let reply = match incoming {
                        // Boxed: an idle session's task would otherwise carry room
                        // for the largest command's state (measured: ~700 B
                        // per idle WebSocket, scripts/bench-connections.sh).
                        Some(Ok(Message::Text(text))) => Box::pin(self.command(text.as_str())).await,
                        Some(Ok(Message::Binary(_))) => Some(error_reply(None, "bad_frame", "frames must be JSON text")),
                        // tungstenite has queued the Close reply: flushing sends it.
                        Some(Ok(Message::Close(_))) => break Close::Answer,
                        None => break Close::Gone,
                        Some(Ok(_)) => None, // ping/pong: tungstenite answers pings itself
                        Some(Err(WsError::Capacity(_))) => break Close::With(CloseCode::Size, "message too big"),
                        Some(Err(WsError::Utf8(_))) => break Close::With(CloseCode::Invalid, "text frames must be UTF-8"),
                        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => break Close::Gone,
                        Some(Err(WsError::Protocol(_))) => break Close::With(CloseCode::Protocol, "protocol error"),
                        Some(Err(_)) => break Close::Gone,
                    };
                    if let Some(reply) = reply {
                        if !sent_in_time(limit, sink.send(Message::text(reply.to_string()))).await {
                            break Close::Gone;
                        }
                    }
                }
                next = self.sub.next() => match next {
                    Ok(Next::Events(events)) => {
                        let bytes: usize = events.iter().map(|e| e.len()).sum();
                        let count = events.len();
                        let mut events = events;
                        if !std::mem::replace(&mut greeted, true) {
                            events.insert(0, self.sub.hello_json().into());
                        }
                        let page = async {
                            for event in events {
                                let Ok(text) = Utf8Bytes::try_from(event) else { continue };
                                sink.feed(Message::Text(text)).await?;
                            }
                            sink.flush().await
                        };
                        if !sent_in_time(limit, page).await {
                            break Close::Gone;
                        }
                        if let Some(straight) = straight {
                            straight.greeted();
                        }
                        self.sub.sent();
                        self.conn.sent(count, bytes);
                    }
                    Ok(Next::Heartbeat) => {
                        // Also without hints: the page cannot see pings, and
                        // herald.js takes a silent socket for dead. Written
                        // directly when it can be, so that an idle socket's
                        // write buffer does not grow for it.
                        let hb = self.sub.heartbeat_json();
                        let direct = straight.is_some_and(|s| s.heartbeat(hb.as_bytes()));
                        if !direct && !sent_in_time(limit, sink.send(Message::text(hb))).await {
                            break Close::Gone;
                        }
                    }
                    Ok(Next::End(EndReason::ShuttingDown)) => break Close::With(CloseCode::Restart, "server restarting; reconnect"),
                    Ok(Next::End(EndReason::Expired)) => break Close::With(CloseCode::Away, "reconnect"),
                    Err(_) => break Close::With(CloseCode::Error, "storage error"),
                },
                () = owing(straight) => {
                    if !sent_in_time(limit, sink.flush()).await {
                        break Close::Gone;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > PING_EVERY * 2 {
                        break Close::Gone;
                    }
                    if !sent_in_time(limit, sink.send(Message::Ping(Default::default()))).await {
                        break Close::Gone;
                    }
                }
            }
        };
        drop(closing);
        let last_frame = async {
            match close {
                Close::With(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    sink.send(Message::Close(Some(frame))).await
                }
                Close::Answer => sink.flush().await,
                Close::Gone => Ok(()),
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), last_frame).await;
    }

    /// Runs one client command; the reply to send back, if any.
    async fn command(&self, text: &str) -> Option<Value> {
        let Frame { id, command } = command::parse(text);
        let result = match command {
            Ok(command) => self.execute(command).await,
            Err(e) => Err(e),
        };
        match (result, id) {
            (Ok(mut fields), Some(id)) => {
                fields["op"] = json!("reply");
                fields["id"] = id;
                fields["ok"] = json!(true);
                Some(fields)
            }
            (Ok(_), None) => None,
            (Err(e), id) => Some(error_reply(id, e.code(), &e.to_string())),
        }
    }

    async fn execute(&self, command: Command) -> Result<Value, Error> {
        let (app, uid) = (&self.app, self.uid());
        Ok(match command {
            Command::Ack { seq } => json!({ "acked": app.receipts.ack(uid, seq).await? }),
            Command::Send(msg) => json!({ "msg_id": app.messages.send(uid, msg).await? }),
            Command::Status(status) => {
                json!({ "status": crate::actions::set_status(app, uid, &status).await? })
            }
            Command::Read(ids) => {
                app.receipts.mark_read(uid, &ids).await?;
                json!({ "read": ids })
            }
            Command::GroupSend { gid, msg } => {
                json!({ "msgid": crate::actions::groups::post(app, &gid, uid, msg).await? })
            }
            Command::GroupRead { gid, msgid } => {
                json!({ "last_read": crate::actions::groups::mark_read(app, &gid, uid, msgid).await? })
            }
        })
    }

    fn uid(&self) -> &Uid {
        self.conn.uid()
    }
}

fn error_reply(id: Option<Value>, code: &str, message: &str) -> Value {
    json!({"op": "reply", "id": id, "ok": false, "error": code, "message": message})
}

/// A WebSocket's socket as the store's delivery thread writes to it (see
/// [`Direct`]): when the session is idle (not reading or writing events),
/// caught up, and tungstenite holds nothing unwritten, a new durable event
/// goes out as a frame with one non-blocking `send`, without waking the
/// session's task; otherwise the session is woken and sends it as before.
/// The frames are those tungstenite writes (text, unmasked).
struct Straight {
    fd: std::os::fd::RawFd,
    app: Arc<App>,
    shared: std::sync::Mutex<Shared>,
    woken: tokio::sync::Notify,
    /// Notified when `owed` needs the session to write it.
    owing: tokio::sync::Notify,
}

struct Shared {
    /// The seq of the last event sent or handed to the session.
    cursor: u64,
    /// The session reads or sends events: new ones are left to it.
    busy: bool,
    /// tungstenite holds bytes it has not written yet: nothing may go to
    /// the socket before them.
    dirty: bool,
    /// The `hello` went out (the session sends it with its first page).
    greeted: bool,
    /// The end of frames a direct write could put only in part to the
    /// socket: they go before anything else (`Guarded`).
    owed: Vec<u8>,
    /// The socket is closing or a direct write failed: no more of them.
    closed: bool,
}

/// Largest batch of frames written directly; a larger one is left to the
/// session, which can wait for the socket to drain.
const STRAIGHT_MAX: usize = 16 << 10;

impl Straight {
    /// For a session whose stream is at `cursor`.
    fn new(io: &Rewind, app: Arc<App>, cursor: u64) -> Straight {
        Straight {
            fd: io.raw_fd(),
            app,
            shared: std::sync::Mutex::new(Shared {
                cursor,
                busy: true,
                dirty: false,
                greeted: false,
                owed: Vec::new(),
                closed: false,
            }),
            woken: tokio::sync::Notify::new(),
            owing: tokio::sync::Notify::new(),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn greeted(&self) {
        self.shared().greeted = true;
    }

    fn is_greeted(&self) -> bool {
        self.shared().greeted
    }

    /// Writes the `hello` frame, before anything else (the session has
    /// not started: `busy`).
    fn hello(&self, hello: &[u8]) {
        let mut shared = self.shared();
        if shared.greeted || shared.closed {
            return;
        }
        let mut frame = Vec::with_capacity(hello.len() + 4);
        text_frame(&mut frame, hello);
        shared.greeted = self.send(&mut shared, frame);
    }

    /// Writes a heartbeat frame directly if nothing else may be in the way
    /// (the session waits, tungstenite holds nothing, the hello went out);
    /// whether it did.
    fn heartbeat(&self, hb: &[u8]) -> bool {
        let mut shared = self.shared();
        if shared.busy || shared.dirty || shared.closed || !shared.greeted {
            return false;
        }
        let mut frame = Vec::with_capacity(hb.len() + 4);
        text_frame(&mut frame, hb);
        self.send(&mut shared, frame)
    }

    /// Sends `frames` with one non-blocking `send`, under the lock of
    /// `shared`; what the socket does not take is owed (the session writes
    /// it first). Whether any of it went (if not, `errno` says why).
    fn send(&self, shared: &mut Shared, mut frames: Vec<u8>) -> bool {
        // SAFETY: `fd` is the session's socket, open while `closed` is
        // false (`Guarded::drop` sets it, under this lock, before the fd
        // is closed); the buffer is valid for its length.
        let sent = unsafe {
            libc::send(
                self.fd,
                frames.as_ptr().cast(),
                frames.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent <= 0 {
            return false;
        }
        if (sent as usize) < frames.len() {
            shared.owed = frames.split_off(sent as usize);
            shared.dirty = true;
            self.owing.notify_one();
        }
        true
    }
}

/// Appends `payload` to `out` as one text frame (FIN, unmasked: from a
/// server), as tungstenite writes it; `payload` is under 64 KiB.
fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

impl Handoff for Straight {
    fn begin(&self) -> u64 {
        let mut shared = self.shared();
        shared.busy = true;
        shared.cursor
    }

    fn end(&self, cursor: u64) {
        let mut shared = self.shared();
        shared.cursor = cursor;
        shared.busy = false;
    }

    fn woken(&self) -> &tokio::sync::Notify {
        &self.woken
    }
}

impl Direct for Straight {
    fn durable(&self, after: u64, head: u64, events: &[Bytes]) {
        let mut shared = self.shared();
        let bytes: usize = events.iter().map(|e| e.len()).sum();
        let ready = !(shared.busy || shared.dirty || shared.closed || !shared.greeted);
        if !ready || shared.cursor != after || events.is_empty() || bytes > STRAIGHT_MAX {
            drop(shared);
            self.woken.notify_one();
            return;
        }
        let mut frames = Vec::with_capacity(bytes + 4 * events.len());
        for event in events {
            text_frame(&mut frames, event);
        }
        if self.send(&mut shared, frames) {
            shared.cursor = head;
            drop(shared);
            self.app.hub.sent(Transport::Ws, events.len(), bytes);
            return;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
            // The connection is gone: the session finds out on its own.
            shared.closed = true;
        }
        drop(shared);
        self.woken.notify_one();
    }
}

/// Resolves when a direct write left bytes for the session to write.
async fn owing(straight: Option<&Straight>) {
    match straight {
        Some(straight) => straight.owing.notified().await,
        None => std::future::pending().await,
    }
}

/// Ends direct writes when dropped (see [`Session::run`]).
struct Closing<'a>(&'a Straight);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.shared().closed = true;
    }
}

/// The session's socket, telling [`Straight`] whether tungstenite left
/// bytes unwritten; its writes and the direct ones take turns.
struct Guarded {
    io: Rewind,
    straight: Arc<Straight>,
}

impl Drop for Guarded {
    /// Before the socket closes (its fd could be reused at once), under
    /// the lock a direct write holds: no direct write after this.
    fn drop(&mut self) {
        self.straight.shared().closed = true;
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let mut shared = this.straight.shared();
        std::task::ready!(pay(&mut this.io, &mut shared.owed, cx))?;
        let poll = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        shared.dirty = !matches!(poll, std::task::Poll::Ready(Ok(n)) if n == buf.len());
        poll
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let mut shared = this.straight.shared();
        // tungstenite flushes once it has written all it holds.
        std::task::ready!(pay(&mut this.io, &mut shared.owed, cx))?;
        shared.dirty = false;
        drop(shared);
        std::pin::Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.straight.shared().closed = true;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Writes `owed` (what a direct write left) to `io`, as far as it goes.
fn pay(
    io: &mut Rewind,
    owed: &mut Vec<u8>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<()>> {
    use tokio::io::AsyncWrite;
    while !owed.is_empty() {
        let n = std::task::ready!(std::pin::Pin::new(&mut *io).poll_write(cx, owed))?;
        if n == 0 {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        owed.drain(..n);
    }
    if owed.capacity() > 0 {
        *owed = Vec::new();
    }
    std::task::Poll::Ready(Ok(()))
}
