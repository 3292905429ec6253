//! A TCP proxy that can freeze: it stops forwarding in both directions and
//! holds every connection open, as a network path that drops packets
//! without a reset would (a cut cable, a stuck middlebox). New connections
//! made while frozen are held the same way.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FreezingProxy {
    /// The proxy's `127.0.0.1:PORT`.
    pub addr: String,
    frozen: watch::Sender<bool>,
    stopped: Arc<AtomicBool>,
}

impl FreezingProxy {
    /// Forwards a new port to `target` (`HOST:PORT`).
    pub async fn start(target: &str) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (frozen, _) = watch::channel(false);
        let stopped = Arc::new(AtomicBool::new(false));
        let (target, watch_frozen, stop) = (target.to_owned(), frozen.clone(), stopped.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, watch_frozen.subscribe()));
                tokio::spawn(pump(sr, cw, watch_frozen.subscribe()));
            }
        });
        FreezingProxy {
            addr,
            frozen,
            stopped,
        }
    }

    /// Stops forwarding; bytes already read are held until `thaw`.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, what was held first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, pausing (neither reading nor writing) while
/// frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Frozen while waiting: stop reading at once.
            _ = frozen.wait_for(|f| *f) => continue,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
