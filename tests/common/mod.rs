//! Test harness: starts the real `herald` binary on port 0 with a temp data
//! dir and talks to it over real HTTP, as clients do.
#![allow(dead_code)]

pub mod clients;
pub mod proxy;
pub mod redis;
pub mod webtransport;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// 32 bytes and 16 bytes: the shortest secret and API key herald accepts.
pub const SECRET: &str = "test-secret-0123456789abcdefghij";
pub const API_KEY: &str = "test-api-key-012";

/// A client's WebSocket to the server under test.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running herald process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub data: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
    /// Everything the process printed on stdout.
    pub output: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts herald with the test secret and API key.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts herald with extra flags.
    pub async fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut args = vec![
            "--secret".into(),
            SECRET.into(),
            "--api-key".into(),
            API_KEY.into(),
        ];
        args.extend(extra.iter().cloned());
        let (child, base, output) = spawn(&data, &args).await;
        Server {
            child,
            base,
            data,
            _tmp: Some(tmp),
            extra,
            output,
            http: client(),
        }
    }

    /// Starts herald with exactly `args` (plus listen and data dir) and
    /// returns the process, or its output if it exits before listening.
    pub async fn try_start_raw(args: &[&str]) -> Result<Server, String> {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, base, output) = try_spawn(&data, &args, true).await?;
        Ok(Server {
            child,
            base,
            data,
            _tmp: Some(tmp),
            extra: args,
            output,
            http: client(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the process (SIGSTOP), as a node that hangs.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        signal(self.child.id(), "CONT");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process (if alive) and starts a new one on the same data dir.
    pub async fn restart(&mut self) {
        self.restart_on("127.0.0.1:0").await;
    }

    /// Kills the process (if alive) and starts a new one on the same data
    /// dir and the same port, as a supervisor restarting a crashed server
    /// would: clients reconnect to the address they had.
    pub async fn restart_same_port(&mut self) {
        let addr = self.base.trim_start_matches("http://").to_owned();
        self.restart_on(&addr).await;
    }

    async fn restart_on(&mut self, listen: &str) {
        self.kill9();
        let mut args = vec![
            "--listen".into(),
            listen.into(),
            "--secret".into(),
            SECRET.into(),
            "--api-key".into(),
            API_KEY.into(),
        ];
        args.extend(self.extra.iter().cloned());
        let (child, base, output) = spawn(&self.data, &args).await;
        self.child = child;
        self.base = base;
        self.output = output;
    }

    /// A client token for `uid`, from the backend API.
    pub async fn token(&self, uid: &str) -> String {
        let body: Value = self
            .backend_post("/api/v1/tokens", json!({ "uid": uid }))
            .await
            .json()
            .await
            .expect("token json");
        body["token"].as_str().expect("token").to_owned()
    }

    /// POSTs JSON with the API key.
    pub async fn backend_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .expect("backend request")
    }

    /// Sends `method path` with a bearer credential (a client token or the
    /// API key) and a JSON body.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Value,
    ) -> reqwest::Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// `method path`, with a bearer credential (token or API key) and a
    /// JSON body when given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// POSTs JSON as a client; returns status and JSON (Null if none).
    /// GETs `path` with `bearer` (a token or the API key); the JSON answer,
    /// asserting a 200.
    pub async fn get_json(&self, path: &str, bearer: &str) -> Value {
        let response = self.call("GET", path, Some(bearer), None).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON answer")
    }

    pub async fn post_as(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .send_json(reqwest::Method::POST, path, token, body)
            .await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// PUTs JSON with the API key; returns the status.
    pub async fn backend_put(&self, path: &str, body: Value) -> u16 {
        let response = self
            .send_json(reqwest::Method::PUT, path, API_KEY, body)
            .await;
        response.status().as_u16()
    }

    /// Makes `members` the members of group `gid` (the backend's PUT).
    pub async fn set_members(&self, gid: &str, members: &[&str]) {
        let path = format!("/api/v1/groups/{gid}/members");
        let status = self.backend_put(&path, json!({ "members": members })).await;
        assert_eq!(status, 200, "PUT {path}");
    }

    /// Publishes a notice to `to`; returns the seqs by uid.
    pub async fn publish(&self, to: &[&str], data: Value) -> Value {
        let response = self
            .backend_post("/api/v1/publish", json!({ "to": to, "data": data }))
            .await;
        assert_eq!(response.status(), 200, "publish failed");
        response.json::<Value>().await.expect("publish json")["seqs"].clone()
    }

    /// GETs `path` with a bearer token and returns the response as it starts
    /// (for streams).
    pub async fn open(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// GETs `path` with a bearer token; returns status and JSON (Null if none).
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self.open(path, token).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A short poll: the events after `cursor`.
    pub async fn poll(&self, token: &str, cursor: u64) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/poll?cursor={cursor}&limit=1000"), token)
            .await;
        assert_eq!(status, 200, "poll failed: {body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Every retained event of the user, paging from cursor 0.
    pub async fn poll_all(&self, token: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.poll(token, cursor).await;
            let Some(last) = page.last() else { return all };
            cursor = last["seq"].as_u64().expect("seq");
            all.extend(page);
        }
    }

    /// Opens a WebSocket to `/v1/ws?{query}` (the token, cursor and epoch
    /// go in the query).
    pub async fn ws(&self, query: &str) -> WebSocket {
        let url = format!("{}/v1/ws?{query}", self.base.replacen("http", "ws", 1));
        tokio_tungstenite::connect_async(url)
            .await
            .expect("a WebSocket")
            .0
    }

    /// The visible statuses of `about` pushed to the owner of `token`, in
    /// order (its queue's `presence` events).
    pub async fn pushed_statuses(&self, token: &str, about: &str) -> Vec<String> {
        self.poll(token, 0)
            .await
            .into_iter()
            .filter(|e| e["type"] == "presence" && e["data"]["uid"] == about)
            .map(|e| e["data"]["status"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// The value of a metric line (first sample whose line starts with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(150))
        .build()
        .expect("client")
}

/// The seqs of `events`.
pub fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// Polls `check` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The herald binary under test: this build's, or `HERALD_BIN` (to run the
/// suite against another build, e.g. to see a new test fail on the old one).
pub fn herald_bin() -> String {
    std::env::var("HERALD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_owned())
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

async fn spawn(data: &Path, args: &[String]) -> (Child, String, Arc<Mutex<String>>) {
    try_spawn(data, args, false)
        .await
        .unwrap_or_else(|out| panic!("herald did not start: {out}"))
}

async fn try_spawn(
    data: &Path,
    args: &[String],
    raw: bool,
) -> Result<(Child, String, Arc<Mutex<String>>), String> {
    let mut command = Command::new(herald_bin());
    if !args.iter().any(|a| a == "--listen") {
        command.arg("--listen").arg("127.0.0.1:0");
    }
    command.arg("--data").arg(data);
    if raw {
        command
            .env_remove("HERALD_SECRET")
            .env_remove("HERALD_API_KEY");
    }
    let mut child = command
        .args(args)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(Some(addr.to_owned()));
                }
                output.lock().unwrap().push_str(&(line + "\n"));
            }
            let _ = tx.send(None);
        });
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut closed = 0;
    while Instant::now() < deadline && closed < 2 {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(addr)) => return Ok((child, addr, output)),
            Ok(None) => closed += 1,
            Err(_) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = output.lock().unwrap().clone();
    Err(out)
}
