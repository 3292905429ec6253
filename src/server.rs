//! The accept loop: one task per socket, HTTP/1.1 by hyper (or, for a
//! connection that opens with a stream, by [`compact`]) or, with TLS,
//! HTTP/2 or HTTP/1.1 by hyper as ALPN chose; caps on open connections (in
//! all and per client address), the idle timeout, and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Method;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use self::activity::Activity;
use self::compact::Head;
use crate::app::App;
use crate::http::request::ClientAddr;
use crate::http::rewind::Rewind;
use crate::metrics::Label;
use crate::routes;
use crate::util::SharedMap;

mod activity;
pub(crate) mod compact;
pub mod tls;
pub mod webtransport;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` (HTTPS with `tls`) until
/// `app.shutdown` is cancelled, then waits (bounded) for the open ones and
/// the WebSocket sessions (`app.tasks`) to end.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
) {
    let connections = TaskTracker::new();
    // Each connection holds a permit; past the cap new sockets are closed at
    // once rather than left to fail later for want of file descriptors.
    let permits = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(PerAddress::new(app.config.max_conns_per_ip));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = app.shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("connection limit {max_connections} reached; closing a new connection");
            refused(&app, "total");
            continue;
        };
        let Some(slot) = per_address.enter(peer.ip()) else {
            tracing::debug!("{} has the most connections allowed", peer.ip());
            refused(&app, "per_ip");
            continue;
        };
        let _ = stream.set_nodelay(true);
        detect_dead_peer(&stream, app.config.dead_peer());
        let (app, tls) = (app.clone(), tls.clone());
        connections.spawn(async move {
            match tls {
                // Boxed: a cleartext connection's task keeps no room for
                // the TLS handshake's state (about 2 KB per idle stream).
                Some(acceptor) => Box::pin(serve_tls(app, stream, peer, acceptor)).await,
                None => serve_connection(app, stream, peer).await,
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    app.tasks.close();
    let drained = async {
        connections.wait().await;
        app.tasks.wait().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
}

/// Has the kernel end `stream` if its peer vanishes without a FIN, within
/// about `within`: keepalive probes start after a third of it of silence,
/// and data (a probe, a heartbeat) left unacknowledged for `within` ends
/// the connection (`TCP_USER_TIMEOUT`). Every transport reads its socket,
/// so the error ends the request or stream, and its user goes offline.
fn detect_dead_peer(stream: &TcpStream, within: Duration) {
    let probe = (within / 3).max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(probe)
        .with_interval(probe)
        .with_retries(3);
    let socket = socket2::SockRef::from(stream);
    if let Err(e) = socket
        .set_tcp_keepalive(&keepalive)
        .and_then(|()| socket.set_tcp_user_timeout(Some(within)))
    {
        tracing::debug!("dead-peer detection not set: {e}");
    }
}

pub(crate) fn refused(app: &App, kind: &'static str) {
    app.metrics
        .refused_connections
        .get_or_create(&Label { kind })
        .inc();
}

/// Open connections per client address (`--max-conns-per-ip`), so that one
/// address cannot take every connection the process can hold.
pub(crate) struct PerAddress {
    open: SharedMap<IpAddr, usize>,
    max: usize,
}

impl PerAddress {
    pub(crate) fn new(max: usize) -> PerAddress {
        PerAddress {
            open: SharedMap::default(),
            max,
        }
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        if self.max == 0 {
            return Some(AddressSlot(None));
        }
        let mut open = self.open.entry(ip).or_insert(0);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(AddressSlot(Some((self.clone(), ip))))
    }
}

/// One connection counted against its address; released on drop.
pub(crate) struct AddressSlot(Option<(Arc<PerAddress>, IpAddr)>);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some((per_address, ip)) = &self.0 {
            per_address.open.remove_if_mut(ip, |_, open| {
                *open -= 1;
                *open == 0
            });
        }
    }
}

/// Serves one connection: its requests directly while they are streams or
/// polls (see [`compact`]), the rest with hyper.
async fn serve_connection(app: Arc<App>, mut stream: TcpStream, peer: SocketAddr) {
    let mut read = Bytes::new();
    let prefix = loop {
        let head = tokio::select! {
            head = tokio::time::timeout(app.config.idle_timeout(), compact::read_head(&mut stream, read)) => {
                head.unwrap_or(Head::Gone)
            }
            _ = app.shutdown.cancelled() => return,
        };
        read = match head {
            Head::Gone => return,
            Head::Other(prefix) => break prefix,
            Head::Compact { mut request, rest } => {
                request.extensions_mut().insert(ClientAddr(peer));
                match compact::serve(&app, &mut stream, request, rest).await {
                    Some(rest) => rest,
                    None => return,
                }
            }
        };
    };
    // Boxed: hyper's connection state is large, and a stream served
    // directly should not carry room for it in its task.
    let io = Rewind::new(stream, prefix, app.config.send_timeout());
    Box::pin(serve_hyper(app, io, peer)).await;
}

/// Serves one HTTPS connection: the handshake within the idle timeout,
/// then hyper, HTTP/2 or HTTP/1.1 as ALPN chose. (The direct path of
/// [`compact`] reads the socket itself: it serves cleartext only.)
async fn serve_tls(app: Arc<App>, stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) {
    // Under TLS too, so that a write the client does not take ends the
    // connection after the send timeout.
    let io = Rewind::new(stream, Bytes::new(), app.config.send_timeout());
    let handshake = tokio::time::timeout(app.config.idle_timeout(), acceptor.accept(io));
    let tls = tokio::select! {
        tls = handshake => match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
            Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
        },
        _ = app.shutdown.cancelled() => return,
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        Box::pin(serve_h2(app, tls, peer)).await;
    } else {
        Box::pin(serve_hyper(app, tls, peer)).await;
    }
}

/// Every request of a connection to the routes, with its client's address;
/// with `activity`, each counted in flight until its answer is written.
fn service(
    app: &Arc<App>,
    peer: SocketAddr,
    activity: Option<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = crate::http::reply::Response,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<
        Output = Result<crate::http::reply::Response, std::convert::Infallible>,
    > + Send,
> + Clone {
    use http_body_util::BodyExt;
    let app = app.clone();
    service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        let in_flight = activity.as_ref().map(Activity::enter);
        if let Some(in_flight) = in_flight
            .as_ref()
            .filter(|_| req.method() == Method::CONNECT)
        {
            // A WebSocket (extended CONNECT) keeps its request's
            // extensions for as long as its session.
            req.extensions_mut().insert(in_flight.clone());
        }
        let app = app.clone();
        async move {
            // Boxed: over HTTP/2 each stream's task would otherwise keep
            // room for the route's state while its body streams (~0.8 KB
            // per idle SSE stream).
            let response = Box::pin(routes::handle(&app, req)).await;
            let Some(in_flight) = in_flight else {
                return Ok(response);
            };
            // Counted until the body is written or dropped.
            Ok(response.map(|body| {
                body.map_frame(move |frame| {
                    let _counted = &in_flight;
                    frame
                })
                .boxed_unsync()
            }))
        }
    })
}

async fn serve_hyper<I>(app: Arc<App>, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The header-read timeout runs while hyper waits for a request head:
    // on a kept-alive connection between requests too, so an idle or
    // trickling connection is closed after --idle-timeout-ms. A held
    // long-poll or a stream is not waiting for a head and stays.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.idle_timeout())
        .serve_connection(TokioIo::new(io), service(&app, peer, None))
        .with_upgrades();
    let idle = std::future::pending();
    until_done(&app, conn, |conn| conn.graceful_shutdown(), idle).await;
}

/// HTTP/2: every request a stream of the one connection, WebSocket by
/// extended CONNECT (RFC 8441).
async fn serve_h2<I>(app: Arc<App>, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::default();
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .serve_connection(
            TokioIo::new(io),
            service(&app, peer, Some(activity.clone())),
        );
    // On shutdown, or after --idle-timeout-ms without a request in
    // flight, a GOAWAY: the streams open finish, no new one starts.
    let idle = activity.idle_for(app.config.idle_timeout());
    until_done(&app, conn, |conn| conn.graceful_shutdown(), idle).await;
}

/// Serves `conn` until it ends. On shutdown, or once `idle` resolves,
/// `graceful` has it finish the requests in flight (held ones are released
/// by the shutdown token) and close instead of keeping alive, and that is
/// waited for.
async fn until_done<C: std::future::Future>(
    app: &App,
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    idle: impl std::future::Future<Output = ()>,
) {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = app.shutdown.cancelled() => {}
        () = idle => {}
    }
    graceful(conn.as_mut());
    let _ = conn.await;
}
