//! A minimal chat backend integrating with herald through its backend API:
//! it mints client tokens, sets friends and groups, publishes a notice and
//! bumps a counter. A real backend does the same from its own login and
//! social-graph code; the browser then talks to herald with the token.
//!
//! Run against a server started with a secret and an API key:
//!
//! ```text
//! cargo run --release -- --secret "$(head -c 32 /dev/urandom | base64)" --api-key backend-key-0123456789 &
//! HERALD_URL=http://127.0.0.1:8080 HERALD_API_KEY=backend-key-0123456789 cargo run --example chat_backend
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
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("{path}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{path}: {status} {body}"))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let backend = Backend {
        http: reqwest::Client::new(),
        url: std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        api_key: std::env::var("HERALD_API_KEY").map_err(|_| "set HERALD_API_KEY".to_string())?,
    };
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
