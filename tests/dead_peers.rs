//! A client that vanishes without a FIN (a closed laptop, a mobile network
//! change, a NAT that forgot the connection) is dropped, and its user
//! pushed offline, within `--dead-peer-ms`, on every transport
//! (WebTransport's QUIC included).
//!
//! How the peer vanishes: the test runs in a network namespace of its own
//! (it runs as root, as CI does; `ip netns`), where herald and every client
//! talk over that namespace's loopback, and an nftables rule then drops
//! every packet to and from one client's port. The client's kernel neither
//! acknowledges herald's writes nor sends anything, exactly as a peer that
//! fell off the network. (A proxy that stops reading would not do: its
//! kernel still acknowledges.) Nothing outside the namespace is touched,
//! and deleting it removes the rules.

mod common;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A network namespace of the test's own, deleted when dropped.
struct Netns(String);

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (the test needs iproute2 and nftables: ./scripts/test.sh installs them)"));
    assert!(
        out.status.success(),
        "{args:?}: {} (the dead-peer test needs root to make a network namespace)",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        let name = format!("herald-dead-peers-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["nft", "add", "table", "ip", "herald"]);
        ns.exec(&[
            "nft",
            "add chain ip herald input { type filter hook input priority 0; }",
        ]);
        ns
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all);
    }

    /// Moves the calling thread (and what it spawns) into the namespace.
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("the namespace");
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// Drops every packet to and from local `port` (`tcp` or `udp`): its
    /// peer is gone.
    fn blackhole(&self, protocol: &str, port: u16) {
        for dir in ["sport", "dport"] {
            self.exec(&[
                "nft",
                &format!("add rule ip herald input {protocol} {dir} {port} drop"),
            ]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Opens `path` as a raw client and reads until `until` has come.
async fn open_raw(server: &Server, request: String, until: &str) -> TcpStream {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("the stream opens")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    stream
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\n\r\n")
}

async fn vanish_on_every_transport(ns: &Netns) {
    let server = Server::start_with(&[
        "--heartbeat-ms",
        "1000",
        "--dead-peer-ms",
        "3000",
        "--presence-window-ms",
        "100",
        "--presence-grace",
        "1",
    ])
    .await;
    let users = ["on-sse", "on-ws", "on-iframe", "on-longpoll"];
    let status = server
        .backend_put("/api/v1/users/pat/friends", json!({ "friends": users }))
        .await;
    assert_eq!(status, 200);
    let pat = server.token("pat").await;
    let _pat_online = server.open("/v1/sse", &pat).await;
    let mut clients = Vec::new();
    for uid in users {
        let token = server.token(uid).await;
        let client = match uid {
            "on-sse" => open_raw(&server, get("/v1/sse", &token), "event: ready").await,
            "on-iframe" => open_raw(&server, get("/v1/iframe?cb=f", &token), "ready").await,
            "on-longpoll" => {
                let stream = TcpStream::connect(server.base.trim_start_matches("http://"))
                    .await
                    .unwrap();
                let mut stream = stream;
                let request = get("/v1/longpoll?timeout=100", &token);
                stream.write_all(request.as_bytes()).await.unwrap();
                stream
            }
            _ => {
                let request = format!(
                    "GET /v1/ws?token={token} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                open_raw(&server, request, "\r\n\r\n").await
            }
        };
        clients.push(client);
    }
    for uid in users {
        assert!(
            eventually(Duration::from_secs(10), || async {
                server.pushed_statuses(&pat, uid).await == ["online"]
            })
            .await,
            "{uid} online: {:?}",
            server.pushed_statuses(&pat, uid).await
        );
    }
    // Every client falls off the network at once, without a FIN.
    let vanished = Instant::now();
    for client in &clients {
        ns.blackhole("tcp", client.local_addr().unwrap().port());
    }
    for uid in users {
        assert!(
            eventually(Duration::from_secs(20), || async {
                server.pushed_statuses(&pat, uid).await == ["online", "offline"]
            })
            .await,
            "{uid} still online after {:?}: {:?}",
            vanished.elapsed(),
            server.pushed_statuses(&pat, uid).await
        );
    }
    // Within the bound: 3 s of silence, a heartbeat interval to notice it,
    // the presence grace of a poller (1 s), and slack for a busy box.
    let took = vanished.elapsed();
    assert!(took < Duration::from_secs(9), "{took:?}");
    drop(clients);
}

/// The same for a WebTransport session: QUIC's idle timeout is the bound.
async fn vanish_on_webtransport(ns: &Netns) {
    let server =
        common::webtransport::start_with(&["--heartbeat-ms", "1000", "--dead-peer-ms", "3000"])
            .await;
    let status = server
        .backend_put("/api/v1/users/pat/friends", json!({ "friends": ["on-wt"] }))
        .await;
    assert_eq!(status, 200);
    let pat = server.token("pat").await;
    let _pat_online = server.open("/v1/sse", &pat).await;
    let token = server.token("on-wt").await;
    let (client, _session, _events) =
        common::webtransport::open(&server, &format!("token={token}")).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.pushed_statuses(&pat, "on-wt").await == ["online"]
        })
        .await
    );
    let vanished = Instant::now();
    ns.blackhole("udp", client.local_addr().unwrap().port());
    assert!(
        eventually(Duration::from_secs(20), || async {
            server.pushed_statuses(&pat, "on-wt").await == ["online", "offline"]
        })
        .await,
        "still online after {:?}",
        vanished.elapsed()
    );
    let took = vanished.elapsed();
    assert!(took < Duration::from_secs(9), "{took:?}");
}

#[test]
fn a_client_that_vanishes_without_a_fin_is_dropped_and_pushed_offline_within_the_bound() {
    let ns = Netns::create();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter();
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async {
                        vanish_on_every_transport(&ns).await;
                        vanish_on_webtransport(&ns).await;
                    });
            })
            .join()
            .expect("the test thread");
    });
}
