//! WebTransport (HTTP/3 over QUIC, `--webtransport-listen`): the sixth
//! transport, over the same queue and subscription as the others (the
//! endpoint and its accept loop: `server::webtransport`).
//!
//! A session at `/v1/wt?cursor=N&epoch=E&token=T` follows the user's queue
//! as a WebSocket does. The server opens one unidirectional stream and
//! writes on it, one JSON object per line (`\n`), the `hello`, the events
//! in order and the keepalives (`hb`). The client sends the WebSocket's
//! commands (`ack`, `send`, `status`, `read`, `group_send`, `group_read`,
//! `typing`), one JSON object per line, on a bidirectional stream it
//! opens; each is answered on that stream as over the WebSocket. Typing
//! signals, which may be lost, come as datagrams (one JSON object each)
//! when they fit in one, else on the event stream.
//!
//! The session is checked (token, Origin, cursor, the per-user cap) before
//! anything is sent; a refused one is accepted and gets one line
//! `{"type":"refused","status":401,"error":…,"message":…}` on its stream
//! and is closed, by the client once it has read it or by the server 2 s
//! later with the status as the application error code: a
//! browser cannot read the status of a session refused at the HTTP/3
//! layer, and `wtransport` can only refuse with 403, 404 and 429.
//!
//! A peer that vanishes is noticed by QUIC's idle timeout, set to
//! `--dead-peer-ms`; writes have the send timeout; the handshake and the
//! session request must come within `--idle-timeout-ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;
use wtransport::endpoint::SessionRequest;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::command;
use super::subscription::{EndReason, Next, StreamRequest, Subscription};
use crate::app::App;
use crate::deadline::sent_in_time;
use crate::error::Error;
use crate::http::reply::{json, Response};
use crate::http::request::{authority, host_of, ClientAddr};
use crate::hub::{Connection as Conn, Transport};
use crate::uid::Uid;

/// The path of a session.
pub const PATH: &str = "/v1/wt";

/// Command streams one session may have open at once.
pub const MAX_COMMAND_STREAMS: usize = 4;

/// `GET /v1/webtransport`: `{"url", "certificate_hashes"}` for a page to
/// open a session with, the host being the one the page asked; 404
/// `no_webtransport` when this node does not serve it.
pub fn advert<B>(app: &App, req: &Request<B>) -> Result<Response, Error> {
    let Some(advert) = app.webtransport.get() else {
        return Err(Error::NotFound(
            "this server does not serve WebTransport (--webtransport-listen)".into(),
        ));
    };
    let host = host_of(authority(req).unwrap_or("localhost"));
    let url = format!("https://{host}:{}{PATH}", advert.port);
    Ok(json(
        StatusCode::OK,
        &json!({"url": url, "certificate_hashes": advert.certificate_hashes}),
    ))
}

/// Serves a session request at [`PATH`]: checked, accepted, and then
/// served or told why it is refused.
pub async fn handle(app: &Arc<App>, request: SessionRequest, http_port: u16) {
    let opened = open(app, &request, http_port).await;
    let wt = match request.accept().await {
        Ok(wt) => wt,
        Err(e) => return tracing::debug!("webtransport session not accepted: {e}"),
    };
    match opened {
        Ok((sub, conn)) => {
            let app = app.clone();
            Session { app, conn, sub }.run(wt).await
        }
        Err(e) => refuse(&wt, e).await,
    }
}

/// Checks the session request as a WebSocket's: Origin, token, cursor,
/// the per-user cap.
async fn open(
    app: &Arc<App>,
    request: &SessionRequest,
    http_port: u16,
) -> Result<(Subscription, Conn), Error> {
    app.cors
        .check_webtransport_origin(request.origin(), request.authority(), http_port)?;
    let mut req = Request::get(request.path())
        .body(())
        .map_err(|_| Error::bad("bad_path", "the session's path is not a valid URI"))?;
    for (name, value) in request.headers() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            req.headers_mut().append(name, value);
        }
    }
    let peer = request.remote_address();
    req.extensions_mut().insert(ClientAddr(SocketAddr::new(
        peer.ip().to_canonical(),
        peer.port(),
    )));
    StreamRequest::parse(app, &req, Transport::WebTransport)?
        .open(app)
        .await
}

/// Tells the client why on a stream of its own, then closes.
async fn refuse(wt: &Connection, e: Error) {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!("webtransport {status}: {e}");
    }
    let mut line = json!({
        "type": "refused",
        "status": status.as_u16(),
        "error": e.code(),
        "message": e.to_string(),
    });
    match e {
        Error::CursorAhead { head, .. } => line["head"] = head.into(),
        Error::TooMany { retry_after, .. } => line["retry_after"] = retry_after.into(),
        _ if status.as_u16() == 503 => line["retry_after"] = 1.into(),
        _ => {}
    }
    let told = async {
        let mut stream = wt.open_uni().await.ok()?.await.ok()?;
        stream.write_all(&line_of(line.to_string())).await.ok()?;
        stream.finish().await.ok()
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), told).await;
    // Closed at once, the client could lose the line with the connection
    // (and a browser then knows nothing): it closes when it has read it,
    // or the server does after a while.
    let _ = tokio::time::timeout(Duration::from_secs(2), wt.closed()).await;
    wt.close(
        VarInt::from_u32(status.as_u16().into()),
        e.code().as_bytes(),
    );
}

struct Session {
    app: Arc<App>,
    conn: Conn,
    sub: Subscription,
}

impl Session {
    /// Serves the session until it closes.
    async fn run(mut self, wt: Connection) {
        let limit = self.app.config.send_timeout();
        let opened = async { wt.open_uni().await.ok()?.await.ok() };
        let Ok(Some(mut events)) = tokio::time::timeout(limit, opened).await else {
            return;
        };
        let mut greeted = false;
        if let Some(hello) = self.sub.idle_hello().await {
            if !sent_in_time(limit, events.write_all(&line_of(hello))).await {
                return;
            }
            greeted = true;
        }
        let mut commands = JoinSet::new();
        let (code, reason): (u32, &[u8]) = loop {
            tokio::select! {
                stream = wt.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        while commands.try_join_next().is_some() {}
                        if commands.len() < MAX_COMMAND_STREAMS {
                            commands.spawn(answer_commands(self.app.clone(), self.conn.uid().clone(), send, recv));
                        }
                    }
                    Err(_) => return,
                },
                next = self.sub.next() => match next {
                    Ok(Next::Events(page)) => {
                        let bytes: usize = page.iter().map(Bytes::len).sum();
                        let count = page.len();
                        let mut out = Vec::with_capacity(bytes + count + 64);
                        if !std::mem::replace(&mut greeted, true) {
                            out.extend_from_slice(&line_of(self.sub.hello_json()));
                        }
                        for event in &page {
                            out.extend_from_slice(event);
                            out.push(b'\n');
                        }
                        if !sent_in_time(limit, events.write_all(&out)).await {
                            return;
                        }
                        self.sub.sent();
                        self.conn.delivered(self.sub.cursor(), count, bytes);
                    }
                    Ok(Next::Signals(signals)) => {
                        let bytes = signals.iter().map(Bytes::len).sum();
                        for signal in signals {
                            let fits = wt.max_datagram_size().is_some_and(|max| signal.len() <= max);
                            if fits && wt.send_datagram(&signal).is_ok() {
                                continue;
                            }
                            if !sent_in_time(limit, events.write_all(&line_of(signal))).await {
                                return;
                            }
                        }
                        self.conn.sent(bytes);
                    }
                    Ok(Next::Heartbeat) => {
                        if !sent_in_time(limit, events.write_all(&line_of(self.sub.heartbeat_json()))).await {
                            return;
                        }
                    }
                    Ok(Next::End(EndReason::ShuttingDown)) => break (503, b"server restarting; reconnect"),
                    Ok(Next::End(EndReason::Expired)) => break (0, b"reconnect"),
                    Err(_) => break (500, b"storage error"),
                },
            }
        };
        commands.abort_all();
        // What was written goes out before the close.
        let _ = tokio::time::timeout(Duration::from_secs(2), events.finish()).await;
        wt.close(VarInt::from_u32(code), reason);
    }
}

/// Runs the commands of one bidirectional stream, one JSON object per
/// line, each answered on the stream as over a WebSocket. A line over the
/// body limit ends the stream (with an error line).
async fn answer_commands(app: Arc<App>, uid: Uid, mut send: SendStream, mut recv: RecvStream) {
    let limit = app.config.send_timeout();
    let max = app.config.max_body;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let reply = match std::str::from_utf8(text) {
                Ok(text) => command::answer(&app, &uid, "webtransport", text).await,
                Err(_) => Some(command::error_reply(
                    None,
                    "bad_frame",
                    "commands must be UTF-8 JSON",
                )),
            };
            if let Some(reply) = reply {
                if !sent_in_time(limit, send.write_all(&line_of(reply.to_string()))).await {
                    return;
                }
            }
        }
        if pending.len() > max {
            let too_big = Error::TooLarge(max);
            let reply = command::error_reply(None, too_big.code(), &too_big.to_string());
            let _ = sent_in_time(limit, send.write_all(&line_of(reply.to_string()))).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), send.finish()).await;
            return;
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => pending.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// `text` and its line end.
fn line_of(text: impl Into<Vec<u8>>) -> Vec<u8> {
    let mut line = text.into();
    line.push(b'\n');
    line
}
