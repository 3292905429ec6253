//! The write deadline every connection lives under: a client that takes no
//! data for `--send-timeout-ms` is stalled or gone, and its connection ends
//! (the WebSocket sessions and the directly framed streams; hyper's
//! connections get the same limit through the server's IO wrapper).

use std::time::Duration;

use std::future::Future;
use std::task::Poll;

/// Whether `write` finished without error within `limit`: a client that
/// takes no data for that long is stalled or gone, and its stream ends
/// (`--send-timeout-ms`). A write that finishes at its first poll (the
/// socket had room, as it nearly always has) never arms a timer: that
/// would be two timer-wheel updates per delivery.
pub async fn sent_in_time<E>(limit: Duration, write: impl Future<Output = Result<(), E>>) -> bool {
    let mut write = std::pin::pin!(write);
    match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(result) => result.is_ok(),
        // Boxed: an idle connection's task keeps room for what it may
        // await, and a timer is large (every idle WebSocket would carry it).
        Poll::Pending => matches!(
            Box::pin(tokio::time::timeout(limit, write)).await,
            Ok(Ok(()))
        ),
    }
}
