//! A compact HTTP/1.1 path for the requests that wait or repeat: streams,
//! long-polls and short polls.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB header buffer for the whole
//! life of a connection: two thirds of an idle SSE connection's memory, and
//! most of a held long-poll's, and its general machinery costs a poller a
//! tenth of its request rate. So while a connection's requests are
//! `GET /v1/sse`, `GET /v1/iframe`, `GET /v1/longpoll` or `GET /v1/poll`
//! (what EventSource, the iframe transport and pollers send, again and
//! again), they are served here: each head is parsed with httparse and answered by the same
//! handler as through hyper ([`crate::routes::handle_stream`]); a stream
//! is framed by hand, chunked, with `connection: close`; a poll's or
//! long-poll's answer has a length and the connection stays alive for the next one,
//! with any pipelined bytes kept. The first other request (HTTP/1.0, a
//! body, another path, a head too large or malformed) hands the rest of the
//! connection to hyper with the bytes already read put back in front
//! ([`crate::http::rewind::Rewind`]).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::app::App;
use crate::deadline::sent_in_time;
use crate::http;
use crate::http::request::header_has;

/// The largest request head read here; a longer one goes to hyper, which
/// answers it with its own limits.
const MAX_HEAD: usize = 16 << 10;
/// The request lines served here (the path must then be exactly one of them).
const DIRECT_REQUESTS: [&[u8]; 4] = [
    b"GET /v1/sse",
    b"GET /v1/iframe",
    b"GET /v1/longpoll",
    b"GET /v1/poll",
];

/// What the first bytes of a connection turned out to be.
pub enum Head {
    /// A request served here; `rest` is what followed its head.
    Compact {
        request: Box<Request<()>>,
        rest: Bytes,
    },
    /// Anything else: the bytes read so far, for hyper.
    Other(Bytes),
    /// The peer closed or failed before sending anything.
    Gone,
}

/// Reads the next request of a connection (after the bytes already read,
/// `prefix`) until it is clear whether it is served here (then until its
/// head is complete).
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, prefix: Bytes) -> Head {
    let mut buf = BytesMut::from(prefix);
    let mut read_more = buf.is_empty();
    loop {
        if read_more {
            buf.reserve(1024);
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) if buf.is_empty() => return Head::Gone,
                Ok(0) | Err(_) => return Head::Other(buf.freeze()),
                Ok(_) => {}
            }
        }
        read_more = true;
        let could_be_direct = DIRECT_REQUESTS.iter().any(|line| {
            let n = line.len().min(buf.len());
            buf[..n] == line[..n]
        });
        if !could_be_direct {
            return Head::Other(buf.freeze());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let Some(request) = stream_request(&parsed) else {
                    return Head::Other(buf.freeze());
                };
                let rest = buf.split_off(len).freeze();
                return Head::Compact {
                    request: Box::new(request),
                    rest,
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Head::Other(buf.freeze()),
        }
    }
}

/// The request as an `http::Request` if it is one served here: an
/// HTTP/1.1 GET of exactly `/v1/sse`, `/v1/iframe`, `/v1/longpoll` or
/// `/v1/poll` with no framing headers at all.
///
/// A request that names a length or a transfer coding (even
/// `Content-Length: 0`, even twice the same) goes to hyper, which frames
/// it or answers 400 and closes: two parsers must never disagree on where
/// a request ends (a proxy in front that takes the other reading would
/// desynchronise, and one connection would carry another user's request).
fn stream_request(parsed: &httparse::Request) -> Option<Request<()>> {
    let target = parsed.path?;
    let path = target.split('?').next()?;
    let framed = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    });
    if framed
        || parsed.method != Some("GET")
        || parsed.version != Some(1)
        || !matches!(path, "/v1/sse" | "/v1/iframe" | "/v1/longpoll" | "/v1/poll")
    {
        return None;
    }
    // Built in place: each step of `Request::builder()` moves the whole
    // request through a Result, which showed in the long-poll profile.
    let mut request = Request::new(());
    *request.uri_mut() = target.parse().ok()?;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    headers.reserve(parsed.headers.len());
    for header in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(header.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(header.value).ok()?,
        );
    }
    (!request.headers().contains_key(UPGRADE)).then_some(request)
}

/// Answers `request` on `stream`. Returns the bytes that followed it if the
/// connection goes on (a kept-alive answer of known length, such as a
/// long-poll's), `None` if it is done.
pub async fn serve(
    app: &Arc<App>,
    stream: &mut TcpStream,
    request: Box<Request<()>>,
    rest: Bytes,
) -> Option<Bytes> {
    let client_closes = header_has(request.headers().get(CONNECTION), "close");
    let mut rest = BytesMut::from(rest);
    // Boxed: the connection's task lives as long as the connection and
    // would otherwise keep room for the handler's state after it answered.
    // Meanwhile the socket is read: a client that goes away ends the
    // request (a held long-poll releases its slot and presence at once),
    // and what it pipelines is kept for the next request.
    let handling = Box::pin(crate::routes::handle_stream(app, *request));
    let response = tokio::select! {
        response = handling => response,
        () = read_while_waiting(stream, &mut rest) => return None,
    };
    let (parts, body) = response.into_parts();
    let rest = rest.freeze();
    let length = body.size_hint().exact();
    let keep_alive =
        length.is_some() && !client_closes && !header_has(parts.headers.get(CONNECTION), "close");

    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(length) => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "content-length: {length}\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !keep_alive && !parts.headers.contains_key(CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    http_date(|date| out.extend_from_slice(date));
    out.extend_from_slice(b"\r\n\r\n");

    if length.is_some() {
        // An error (or any answer of known length): write it whole.
        let Ok(whole) = body.collect().await;
        out.extend_from_slice(&whole.to_bytes());
        let written = sent_in_time(app.config.send_timeout(), stream.write_all(&out)).await;
        drop(out);
        return if written && keep_alive && !app.shutdown.is_cancelled() {
            Some(rest)
        } else {
            let _ = stream.shutdown().await;
            None
        };
    }
    if stream.write_all(&out).await.is_err() {
        return None;
    }
    drop(out);
    stream_body(stream, body, app.config.send_timeout()).await;
    let _ = stream.shutdown().await;
    None
}

/// Reads what the client sends while its request is handled into `extra`;
/// returns when the client closed or failed, or when it pipelined more
/// than a head's worth: that much is not kept, and a socket no longer read
/// would not show its client leaving (the connection is closed instead).
async fn read_while_waiting(stream: &mut TcpStream, extra: &mut BytesMut) {
    let mut scratch = [0u8; 256];
    while extra.len() <= MAX_HEAD {
        match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => extra.extend_from_slice(&scratch[..n]),
        }
    }
}

/// Writes `body` as chunks until it ends, the client goes away, or a chunk
/// waits longer than `limit` to be taken.
async fn stream_body(stream: &mut TcpStream, mut body: http::reply::Body, limit: Duration) {
    // Anything the client sends now is read and dropped (the response says
    // `connection: close`); reading is how a vanished client is noticed.
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else {
                    sent_in_time(limit, stream.write_all(b"0\r\n\r\n")).await;
                    return;
                };
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                let mut chunk = Vec::with_capacity(data.len() + 12);
                chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                if !sent_in_time(limit, stream.write_all(&chunk)).await {
                    return;
                }
            }
            read = stream.read(&mut scratch) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}

/// Calls `with` on the `Date` header value for now, formatted once a
/// second per thread (as hyper does for its own responses).
fn http_date(with: impl FnOnce(&[u8])) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, date)| {
        if *at != second || date.is_empty() {
            *at = second;
            *date = httpdate::fmt_http_date(now);
        }
        with(date.as_bytes());
    });
}

#[cfg(test)]
mod tests;
