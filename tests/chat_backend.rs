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

/// The example's binary, which `cargo test` builds next to this test's
/// (`--all-targets` builds examples as test harnesses instead).
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    profile.join("examples").join("chat_backend")
}

/// Runs `chat_backend ARGS` with its history in `dir`; killed on drop.
struct Backend(Child);

impl Backend {
    fn start(args: &[&str], herald: &str, dir: &Path) -> Backend {
        Backend::spawn(args, herald, dir, Stdio::null())
    }

    /// Starts a `hook` or `receive` backend (on `127.0.0.1:0`: any free
    /// port) and returns it with the address it listens on, from the line
    /// it prints once it does.
    fn listen(args: &[&str], dir: &Path) -> (Backend, String) {
        use std::io::BufRead;
        let mut backend = Backend::spawn(args, "", dir, Stdio::piped());
        let stdout = backend.0.stdout.take().expect("piped");
        let mut stdout = std::io::BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // Drained, not closed: its later lines must not fail to print.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("chat_backend {args:?} printed {line:?}"))
            .to_owned();
        (backend, addr)
    }

    fn spawn(args: &[&str], herald: &str, dir: &Path, stdout: Stdio) -> Backend {
        let child = Command::new(example())
            .args(args)
            .env("HERALD_URL", herald)
            .env("HERALD_API_KEY", API_KEY)
            .env("CHAT_BACKEND_DIR", dir)
            .stdout(stdout)
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

/// The bodies in the backend's history, in its order (its complete lines:
/// the backend may be writing the next one).
fn kept(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("messages.jsonl")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
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
    let dir = tempfile::tempdir().unwrap();
    let (hook, hook_addr) = Backend::listen(&["hook", "127.0.0.1:0"], dir.path());
    let pushed = dir.path().join("pushed");
    let (mut receiver, receive_addr) = Backend::listen(&["receive", "127.0.0.1:0"], &pushed);
    let (hook_url, webhook_url) = (
        format!("http://{hook_addr}/"),
        format!("http://{receive_addr}/"),
    );
    let server =
        Server::start_with(&["--message-hook", &hook_url, "--webhook-url", &webhook_url]).await;
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
    // Back on the same address, which herald keeps posting to.
    receiver = Backend::listen(&["receive", &receive_addr], &pushed).0;
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
