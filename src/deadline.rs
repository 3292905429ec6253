//! The write deadline every connection lives under: a client that takes no
//! data for `--send-timeout-ms` is stalled or gone, and its connection ends
//! (the WebSocket sessions and the directly framed streams; hyper's
//! connections get the same limit through the server's IO wrapper).

use std::time::Duration;

/// Whether `write` finished without error within `limit`: a client that
/// takes no data for that long is stalled or gone, and its stream ends
/// (`--send-timeout-ms`).
pub async fn sent_in_time<E>(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}
