//! The accept loop: one task per socket, HTTP/1.1 by hyper (or, for a
//! connection that opens with a stream, by [`direct`]), a cap on open
//! connections, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use self::direct::{Head, Rewind};
use crate::app::App;
use crate::http;

mod direct;

/// How long shutdown waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send its first request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts connections on `listener` until `app.shutdown` is cancelled,
/// then waits (bounded) for the open ones to end.
pub async fn serve(listener: TcpListener, app: Arc<App>, max_connections: usize) {
    let connections = TaskTracker::new();
    // Each connection holds a permit; past the cap new sockets are closed at
    // once rather than left to fail later for want of file descriptors.
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, _) = tokio::select! {
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
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        connections.spawn(async move {
            serve_connection(app, stream).await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {DRAIN_TIMEOUT:?}");
    }
}

/// Serves one connection: its first request directly if it opens a stream
/// (see [`direct`]), the rest with hyper.
async fn serve_connection(app: Arc<App>, mut stream: TcpStream) {
    let head = tokio::select! {
        head = tokio::time::timeout(HEAD_TIMEOUT, direct::read_head(&mut stream)) => {
            head.unwrap_or(Head::Gone)
        }
        _ = app.shutdown.cancelled() => return,
    };
    let prefix = match head {
        Head::Gone => return,
        Head::Other(prefix) => prefix,
        Head::Stream { request, rest } => {
            match direct::serve(&app, &mut stream, request, rest).await {
                Some(rest) => rest,
                None => return,
            }
        }
    };
    // Boxed: hyper's connection state is large, and a stream served
    // directly should not carry room for it in its task.
    let io = Rewind::new(stream, prefix, app.config.send_timeout());
    Box::pin(serve_hyper(app, io)).await;
}

async fn serve_hyper(app: Arc<App>, io: Rewind) {
    let conn_app = app.clone();
    let service = service_fn(move |req| {
        let app = conn_app.clone();
        async move { Ok::<_, std::convert::Infallible>(http::handle(&app, req).await) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = app.shutdown.cancelled() => {
            // Finish the request in flight (held ones are released by the
            // same token), then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
