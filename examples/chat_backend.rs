//! A small chat backend integrating with herald through its backend API.
//!
//! - `chat_backend` (no argument): mints a client token, sets friends and
//!   groups, publishes a notice and bumps a counter, as a real backend does
//!   from its own login and social-graph code; the browser then talks to
//!   herald with the token.
//! - `chat_backend follow`: keeps what users send. It reads the backend
//!   feed (`GET /api/v1/feed`, held 25 s) from the cursor stored in
//!   `$CHAT_BACKEND_DIR/cursor` and appends each message to
//!   `$CHAT_BACKEND_DIR/messages.jsonl`, its own history: a restart of
//!   either side resumes where it stopped (the cursor is stored after the
//!   page is written; a page read again is skipped by seq).
//! - `chat_backend receive ADDR`: the same history, pushed: a receiver for
//!   herald's `--webhook-url http://ADDR/` that checks each batch's
//!   signature and skips events it already has by seq.
//! - `chat_backend hook ADDR`: a moderation hook for `--message-hook
//!   http://ADDR/`: a message with a word of `BLOCKED` is denied, one in
//!   capitals is rewritten to lower case, the rest allowed.
//!
//! Run against a server started with a secret and an API key:
//!
//! ```text
//! cargo run --example chat_backend -- hook 127.0.0.1:9090 &
//! cargo run --release -- --secret "$(head -c 32 /dev/urandom | base64)" --api-key backend-key-0123456789 --feed --message-hook http://127.0.0.1:9090/ &
//! export HERALD_URL=http://127.0.0.1:8080 HERALD_API_KEY=backend-key-0123456789
//! cargo run --example chat_backend
//! CHAT_BACKEND_DIR=/tmp/chat cargo run --example chat_backend -- follow
//! ```

use serde_json::{json, Value};

struct Backend {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl Backend {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.api_key);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{path}: {status} {body}"))
        }
    }
}

/// Words the moderation hook refuses.
const BLOCKED: &[&str] = &["darn", "heck"];

/// The backend's own history: `messages.jsonl` in `$CHAT_BACKEND_DIR`,
/// and `cursor`, the highest feed seq written to it.
struct History {
    dir: std::path::PathBuf,
    cursor: u64,
}

impl History {
    fn open() -> Result<History, String> {
        let dir = std::path::PathBuf::from(
            std::env::var("CHAT_BACKEND_DIR").unwrap_or_else(|_| "chat-backend-data".into()),
        );
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stored: u64 = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        // A crash after a message was written and before the cursor was:
        // the newest line knows better.
        let written = std::fs::read_to_string(dir.join("messages.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["seq"].as_u64())
            .max()
            .unwrap_or(0);
        Ok(History {
            dir,
            cursor: stored.max(written),
        })
    }

    /// Writes the messages among `events` that are past the cursor, then
    /// moves the cursor: a page that comes again (a crash in between, a
    /// webhook batch retried) is skipped by seq, so each is kept once.
    fn keep(&mut self, events: &[Value], cursor: u64) -> Result<(), String> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("messages.jsonl"))
            .map_err(|e| e.to_string())?;
        for event in events {
            if event["seq"].as_u64().unwrap_or(0) <= self.cursor {
                continue;
            }
            match event["type"].as_str() {
                Some("msg" | "group_msg") => {
                    writeln!(log, "{event}").map_err(|e| e.to_string())?;
                    println!("kept {} from {}", event["type"], event["data"]["from"]);
                }
                Some("gap") => println!(
                    "the feed dropped events before {}: resynchronise",
                    event["seq"]
                ),
                _ => {}
            }
        }
        log.sync_data().map_err(|e| e.to_string())?;
        if cursor > self.cursor {
            self.cursor = cursor;
            let (file, next) = (self.dir.join("cursor"), self.dir.join("cursor.new"));
            std::fs::write(&next, cursor.to_string()).map_err(|e| e.to_string())?;
            std::fs::rename(&next, &file).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// `follow`: the feed, page by page, into the history, forever.
async fn follow(backend: &Backend) -> Result<(), String> {
    let mut history = History::open()?;
    println!("following the feed from cursor {}", history.cursor);
    loop {
        let path = format!("/api/v1/feed?cursor={}&timeout=25", history.cursor);
        let page = backend
            .call(reqwest::Method::GET, &path, Value::Null)
            .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let cursor = page["cursor"].as_u64().unwrap_or(history.cursor);
        history.keep(&events, cursor)?;
    }
}

/// Whether `signature` (`Herald-Signature`) is the HMAC-SHA256 of `body`
/// keyed by the API key.
fn signed(api_key: &str, body: &[u8], signature: &str) -> bool {
    use hmac::Mac;
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Some(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    // Constant time.
    mac.verify_slice(&bytes).is_ok()
}

/// Answers every HTTP/1 request on `addr` with `answer(headers, body)`:
/// a status and a body. Prints where it listens (`addr` may ask for any
/// free port, `127.0.0.1:0`).
async fn serve<F, Fut>(addr: &str, what: &str, answer: F) -> Result<(), String>
where
    F: Fn(hyper::HeaderMap, bytes::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, String)> + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("{what} on http://{bound}/");
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        let (status, text) = answer(parts.headers, body.unwrap_or_default()).await;
                        let mut response =
                            hyper::Response::new(Full::new(bytes::Bytes::from(text)));
                        *response.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// `receive ADDR`: the feed pushed by `--webhook-url http://ADDR/`, into
/// the history: a POST whose signature is wrong is refused (401), a batch
/// kept answers 200, one that could not be kept 500 (herald retries).
async fn receive(addr: &str, api_key: String) -> Result<(), String> {
    let history = std::sync::Arc::new(tokio::sync::Mutex::new(History::open()?));
    let api_key = std::sync::Arc::new(api_key);
    serve(addr, "webhook receiver", move |headers, body| {
        let (history, api_key) = (history.clone(), api_key.clone());
        async move {
            let signature = headers
                .get("herald-signature")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !signed(&api_key, &body, signature) {
                return (401, String::new());
            }
            let page: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let events = page["events"].as_array().cloned().unwrap_or_default();
            let cursor = page["cursor"].as_u64().unwrap_or(0);
            match history.lock().await.keep(&events, cursor) {
                Ok(()) => (200, String::new()),
                Err(e) => {
                    eprintln!("batch not kept: {e}");
                    (500, String::new())
                }
            }
        }
    })
    .await
}

/// `hook ADDR`: answers herald's `--message-hook` questions.
async fn hook(addr: &str) -> Result<(), String> {
    serve(addr, "moderation hook", |_, body| async move {
        let question: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = question["body"].as_str().unwrap_or("");
        let verdict = if BLOCKED.iter().any(|w| text.to_lowercase().contains(w)) {
            json!({"allow": false, "reason": "please keep it friendly"})
        } else if !text.is_empty() && text == text.to_uppercase() && text != text.to_lowercase() {
            json!({"allow": true, "body": text.to_lowercase()})
        } else {
            json!({"allow": true})
        };
        (200, verdict.to_string())
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let command = args.next();
    if command.as_deref() == Some("hook") {
        return hook(&args.next().unwrap_or_else(|| "127.0.0.1:9090".into())).await;
    }
    let backend = Backend {
        http: reqwest::Client::new(),
        url: std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        api_key: std::env::var("HERALD_API_KEY").map_err(|_| "set HERALD_API_KEY".to_string())?,
    };
    match command.as_deref() {
        Some("follow") => return follow(&backend).await,
        Some("receive") => {
            let addr = args.next().unwrap_or_else(|| "127.0.0.1:9091".into());
            return receive(&addr, backend.api_key).await;
        }
        _ => {}
    }
    use reqwest::Method;
    // 1. Your login succeeded: mint a herald token for the browser.
    let token = backend
        .call(
            Method::POST,
            "/api/v1/tokens",
            json!({"uid": "alice", "ttl_s": 3600}),
        )
        .await?;
    println!("token for alice: {}", token["token"]);
    // 2. Mirror the social graph: whom alice added, who is in which group.
    backend
        .call(
            Method::PUT,
            "/api/v1/users/alice/friends",
            json!({"friends": ["bob", "carol"]}),
        )
        .await?;
    backend
        .call(
            Method::PUT,
            "/api/v1/groups/team/members",
            json!({"members": ["alice", "bob", "carol"]}),
        )
        .await?;
    // 3. System events: a notice and a counter, pushed to whatever alice has open.
    let seqs = backend
        .call(
            Method::POST,
            "/api/v1/publish",
            json!({"to": ["alice"], "type": "notice", "data": {"text": "Welcome!"}}),
        )
        .await?;
    println!("notice appended durably: {}", seqs["seqs"]);
    let counter = backend
        .call(
            Method::POST,
            "/api/v1/users/alice/counters",
            json!({"name": "friend_requests", "delta": 1}),
        )
        .await?;
    println!("counter now {}", counter["value"]);
    Ok(())
}
