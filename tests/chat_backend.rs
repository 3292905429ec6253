//! `examples/chat_backend.rs` as a backend runs it, against the real
//! binary: its word-filter hook denies and rewrites, and its history
//! (`messages.jsonl`) gets every accepted message once, both pulled
//! (`follow`) and pushed (`receive`, the webhook's receiver), across a
//! restart of the backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, API_KEY};
use serde_json::{json, Value};

/// The example's binary, built by `cargo test` next to this test's.
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    profile.join("examples").join("chat_backend")
}

/// A free port on 127.0.0.1 (free when asked; the example binds it next).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Runs `chat_backend ARGS` with its history in `dir`; killed on drop.
struct Backend(Child);

impl Backend {
    fn start(args: &[&str], herald: &str, dir: &Path) -> Backend {
        let child = Command::new(example())
            .args(args)
            .env("HERALD_URL", herald)
            .env("HERALD_API_KEY", API_KEY)
            .env("CHAT_BACKEND_DIR", dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("cargo test builds examples/chat_backend");
        Backend(child)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `addr` accepts connections.
async fn listening(addr: &str) {
    let up = common::eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "chat_backend did not listen on {addr}");
}

/// The bodies in the backend's history, in its order.
fn kept(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("messages.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["data"]["body"].clone())
        .collect()
}

async fn wait_kept(dir: &Path, count: usize) -> Vec<Value> {
    common::eventually(Duration::from_secs(20), || async {
        kept(dir).len() >= count
    })
    .await;
    // Anything written twice would show up now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    kept(dir)
}

async fn send(server: &Server, token: &str, body: &str) -> u16 {
    let message = json!({"to": "bob", "body": body});
    server.post_as(token, "/v1/messages", message).await.0
}

#[tokio::test]
async fn the_example_backend_filters_and_keeps_every_message_once_pushed_or_pulled() {
    let (hook_addr, receive_addr) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let hook = Backend::start(&["hook", &hook_addr], "", dir.path());
    listening(&hook_addr).await;
    let (hook_url, webhook_url) = (
        format!("http://{hook_addr}/"),
        format!("http://{receive_addr}/"),
    );
    let server =
        Server::start_with(&["--message-hook", &hook_url, "--webhook-url", &webhook_url]).await;
    let pushed = dir.path().join("pushed");
    let mut receiver = Backend::start(&["receive", &receive_addr], &server.url(""), &pushed);
    listening(&receive_addr).await;
    let alice = server.token("alice").await;
    assert_eq!(send(&server, &alice, "hello").await, 200);
    assert_eq!(
        send(&server, &alice, "oh darn").await,
        403,
        "denied by the filter"
    );
    assert_eq!(send(&server, &alice, "LOUD").await, 200);
    assert_eq!(wait_kept(&pushed, 2).await, [json!("hello"), json!("loud")]);
    // The backend restarts; what was sent meanwhile is posted when it is back.
    drop(receiver);
    assert_eq!(send(&server, &alice, "while you were out").await, 200);
    receiver = Backend::start(&["receive", &receive_addr], &server.url(""), &pushed);
    listening(&receive_addr).await;
    let all = wait_kept(&pushed, 3).await;
    assert_eq!(
        all,
        [json!("hello"), json!("loud"), json!("while you were out")]
    );
    drop(receiver);

    // Pulled: `follow` reads the feed of a server without the webhook.
    let server = Server::start_with(&["--feed"]).await;
    let pulled = dir.path().join("pulled");
    let alice = server.token("alice").await;
    assert_eq!(send(&server, &alice, "one").await, 200);
    let follower = Backend::start(&["follow"], &server.url(""), &pulled);
    assert_eq!(wait_kept(&pulled, 1).await, [json!("one")]);
    drop(follower);
    assert_eq!(send(&server, &alice, "two").await, 200);
    let _follower = Backend::start(&["follow"], &server.url(""), &pulled);
    assert_eq!(wait_kept(&pulled, 2).await, [json!("one"), json!("two")]);
    drop(hook);
}
