//! The WebTransport endpoint (`--webtransport-listen`): HTTP/3 over QUIC
//! on UDP, with the TCP listener's certificate. Its accept loop holds
//! sessions to the same caps as TCP connections (in all, per client
//! address); each session is served by [`crate::transport::wt`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::endpoint::IncomingSession;
use wtransport::{Endpoint, ServerConfig, VarInt};

use super::{refused, PerAddress};
use crate::app::App;
use crate::transport::wt;

/// Binds the UDP endpoint at `addr` with `tls` (TLS 1.3, ALPN `h3`).
pub fn bind(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    dead_peer: Duration,
) -> Result<Endpoint<Server>, String> {
    let config = ServerConfig::builder()
        .with_bind_address(addr)
        .with_custom_tls_and_transport(tls, transport())
        .max_idle_timeout(Some(dead_peer))
        .map_err(|_| format!("--dead-peer-ms {dead_peer:?} is too long for QUIC"))?
        .keep_alive_interval(Some(dead_peer / 3))
        .build();
    Endpoint::server(config).map_err(|e| format!("cannot listen on udp {addr}: {e}"))
}

/// QUIC's settings for sessions. quinn sets up every stream the peer may
/// open at the start of a connection: its defaults (100 of each kind)
/// cost about 60 KB per idle session. A session needs HTTP/3's three
/// control streams each way, its CONNECT stream and herald's command
/// stream (at most [`MAX_COMMAND_STREAMS`]).
fn transport() -> wtransport::config::QuicTransportConfig {
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport
        .max_concurrent_bidi_streams(8u32.into())
        .max_concurrent_uni_streams(8u32.into());
    transport
}

/// Accepts sessions until `app.shutdown`, each counted against the
/// connection caps (in all, per client address); then waits (bounded)
/// for them to close. `http_port` is herald's TCP port, whose pages may
/// open sessions.
pub async fn serve(endpoint: Endpoint<Server>, app: Arc<App>, max_sessions: usize, http_port: u16) {
    let sessions = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_sessions));
    let per_address = Arc::new(PerAddress::new(app.config.max_conns_per_ip));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = app.shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused(&app, "total");
            incoming.refuse();
            continue;
        };
        let Some(slot) = per_address.enter(incoming.remote_address().ip().to_canonical()) else {
            refused(&app, "per_ip");
            incoming.refuse();
            continue;
        };
        let app = app.clone();
        sessions.spawn(async move {
            session(app, incoming, http_port).await;
            drop((slot, permit));
        });
    }
    sessions.close();
    // Each session ends on shutdown itself (its subscription says so).
    let _ = tokio::time::timeout(Duration::from_secs(10), sessions.wait()).await;
    endpoint.close(VarInt::from_u32(0), b"server stopped");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// One QUIC connection: its handshake and session request (within the
/// idle timeout), then the session, if it is at [`wt::PATH`].
async fn session(app: Arc<App>, incoming: IncomingSession, http_port: u16) {
    let request = match tokio::time::timeout(app.config.idle_timeout(), incoming).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => return tracing::debug!("webtransport handshake failed: {e}"),
        Err(_) => return tracing::debug!("webtransport handshake timed out"),
    };
    if request.path().split('?').next() != Some(wt::PATH) {
        return request.not_found().await;
    }
    wt::handle(&app, request, http_port).await;
}
