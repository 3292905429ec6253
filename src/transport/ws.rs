//! WebSocket: events down (one event JSON per text frame), commands up.
//!
//! The upgrade is checked (token, Origin, per-user cap) before the 101 (or,
//! over HTTP/2, the 200 of an extended CONNECT, RFC 8441), so a bad request
//! gets an HTTP error, not a socket that closes at once.
//! One task per socket drives both directions with `select!`: the queue
//! subscription, incoming frames, and a protocol ping every 25 s (a peer
//! silent for two pings is dropped). Buffers are small, not tungstenite's
//! defaults of 128 KiB, which every idle connection would otherwise hold:
//! the read buffer is 512 B (an idle socket touches all of it at its first
//! read; a larger frame grows it to its length, read 512 B at a time, and
//! commands are small), and frames are written writer to the socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::command;
use super::subscription::{EndReason, Next, StreamRequest, Subscription};
use crate::app::App;
use crate::deadline::sent_in_time;
use crate::error::Error;
use crate::http::reply::{empty, Response};
use crate::http::request::header_has;
use crate::http::rewind::Rewind;
use crate::hub::{Connection, Transport};
use crate::store::DurableSink;

const PING_EVERY: Duration = Duration::from_secs(25);

/// `GET /v1/ws?cursor=N&epoch=E` with an Upgrade: websocket, or over
/// HTTP/2 a `CONNECT` with `:protocol websocket`.
pub async fn handle(
    app: &Arc<App>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response, Error> {
    let headers = req.headers();
    let over_h2 = req.method() == Method::CONNECT;
    let key = if over_h2 {
        let protocol = req.extensions().get::<hyper::ext::Protocol>();
        if protocol.map(hyper::ext::Protocol::as_str) != Some("websocket") {
            return Err(Error::bad(
                "not_websocket",
                "this route needs a CONNECT with :protocol websocket",
            ));
        }
        None
    } else {
        let wants_upgrade = header_has(headers.get(UPGRADE), "websocket")
            && header_has(headers.get(CONNECTION), "upgrade");
        let key = headers.get(SEC_WEBSOCKET_KEY).cloned();
        let (true, Some(key)) = (wants_upgrade, key) else {
            return Err(Error::bad(
                "not_websocket",
                "this route needs a WebSocket upgrade",
            ));
        };
        Some(key)
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
    // Over HTTP/2 what the connection attached to the request (the stream
    // counted in flight) lives as long as the session.
    let attached =
        (req.version() == hyper::Version::HTTP_2).then(|| std::mem::take(req.extensions_mut()));
    let app = app.clone();
    let max_message = app.config.max_body;
    app.tasks.clone().spawn(async move {
        let _attached = attached;
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
                // events writer to the socket (see `ws/writer.rs`).
                match upgraded.downcast::<TokioIo<Rewind>>() {
                    Ok(parts) => {
                        let mut io = parts.io.into_inner();
                        io.unread(parts.read_buf);
                        let writer = Arc::new(SocketWriter::new(
                            &io,
                            (*session.conn).clone(),
                            session.sub.cursor(),
                        ));
                        let direct: Arc<dyn DurableSink> = writer.clone();
                        let direct = session
                            .sub
                            .hand_off(writer.clone(), Arc::downgrade(&direct));
                        let io = SessionSocket::new(io, writer.clone());
                        let socket =
                            WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                        let writer = direct.then_some(writer);
                        if let Some(writer) = &writer {
                            // Sent now, writer to the empty socket, so
                            // that the first event can follow it the same way.
                            if let Some(hello) = session.sub.idle_hello().await {
                                writer.hello(hello.as_bytes());
                            }
                        }
                        session.run(socket, writer.as_deref()).await;
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

    let Some(key) = key else {
        // HTTP/2: the stream is the socket once answered 200.
        return Ok(empty(StatusCode::OK));
    };
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
    /// Serves the socket until it closes. With `writer`, the store's
    /// delivery thread writes new events to the socket itself while the
    /// session is idle and caught up.
    async fn run<S>(mut self, socket: WebSocketStream<S>, writer: Option<&SocketWriter>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut sink, mut stream) = socket.split();
        // No direct frame after the close frame (and none once the socket
        // is dropped: `SessionSocket`).
        let closing = writer.map(WriterStop);
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let limit = self.app.config.send_timeout();
        // The hello goes out with the first page (unless `writer` sent
        // it): an idle socket that never gets an event then never grows
        // its write buffer (~650 B).
        let mut greeted = writer.is_some_and(SocketWriter::is_greeted);
        let close = loop {
            tokio::select! {
                incoming = stream.next() => {
                    last_heard = Instant::now();
                    let reply = match incoming {
                        // Boxed: an idle session's task would otherwise carry room
                        // for the largest command's state (measured: ~700 B
                        // per idle WebSocket, scripts/bench-connections.sh).
                        Some(Ok(Message::Text(text))) => Box::pin(self.command(text.as_str())).await,
                        Some(Ok(Message::Binary(_))) => Some(command::error_reply(None, "bad_frame", "frames must be JSON text")),
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
                        if let Some(writer) = writer {
                            writer.greeted();
                        }
                        self.sub.sent();
                        self.conn.delivered(self.sub.cursor(), count, bytes);
                    }
                    Ok(Next::Signals(signals)) => {
                        let bytes = signals.iter().map(Bytes::len).sum();
                        let mut sent = true;
                        for signal in signals {
                            if writer.is_some_and(|s| s.text(&signal)) {
                                continue;
                            }
                            let Ok(text) = Utf8Bytes::try_from(signal) else { continue };
                            sent = sent_in_time(limit, sink.send(Message::Text(text))).await;
                            if !sent {
                                break;
                            }
                        }
                        if !sent {
                            break Close::Gone;
                        }
                        self.conn.sent(bytes);
                    }
                    Ok(Next::Heartbeat) => {
                        // Also without hints: the page cannot see pings, and
                        // herald.js takes a silent socket for dead. Written
                        // directly when it can be, so that an idle socket's
                        // write buffer does not grow for it.
                        let hb = self.sub.heartbeat_json();
                        let direct = writer.is_some_and(|s| s.text(hb.as_bytes()));
                        if !direct && !sent_in_time(limit, sink.send(Message::text(hb))).await {
                            break Close::Gone;
                        }
                    }
                    Ok(Next::End(EndReason::ShuttingDown)) => break Close::With(CloseCode::Restart, "server restarting; reconnect"),
                    Ok(Next::End(EndReason::Expired)) => break Close::With(CloseCode::Away, "reconnect"),
                    Err(_) => break Close::With(CloseCode::Error, "storage error"),
                },
                () = owed_to_write(writer) => {
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

    async fn command(&self, text: &str) -> Option<Value> {
        command::answer(&self.app, self.conn.uid(), "ws", text).await
    }
}

mod writer;

use self::writer::{owed_to_write, SessionSocket, SocketWriter, WriterStop};
