//! A private `redis-server` for the cluster tests: its own free port and
//! temp dir, fsync on every write, stopped by PID when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Server;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    fsync: bool,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl Redis {
    /// Starts Redis with `appendonly yes` and `appendfsync always`, as
    /// herald's fsync durability requires.
    pub fn start() -> Redis {
        Redis::start_with(true)
    }

    /// Starts Redis; `fsync` false leaves its default persistence (no AOF).
    pub fn start_with(fsync: bool) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            fsync,
        };
        redis.spawn();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let dir: PathBuf = self.dir.path().to_owned();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().expect("utf-8 dir")])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"]);
        if self.fsync {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (./scripts/test.sh installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and dir (its AOF is replayed).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `n` herald nodes on `redis`, each with `extra` flags.
pub async fn nodes(redis: &Redis, n: usize, extra: &[&str]) -> Vec<Server> {
    let url = redis.url();
    let mut args = vec!["--store", url.as_str()];
    args.extend_from_slice(extra);
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(Server::start_with(&args).await);
    }
    nodes
}
