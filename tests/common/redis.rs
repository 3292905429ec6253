//! A private Redis for the cluster tests: one `redis-server`, or, with
//! `HERALD_TEST_REDIS=cluster`, a Redis Cluster of 3 primaries and 3
//! replicas; each process on its own free port and temp dir, fsync on
//! every write, stopped by PID when dropped. The same tests run on both.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Server;

/// One `redis-server` process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    fsync: bool,
    cluster: bool,
}

/// A port nothing listens on now; for a cluster node, one whose bus port
/// (10 000 above it) is free too.
fn free_port(cluster: bool) -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let bus = port.checked_add(10_000);
        if !cluster
            || bus.is_some_and(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok())
        {
            return port;
        }
    }
}

impl Node {
    fn new(fsync: bool, cluster: bool) -> Node {
        let mut node = Node {
            child: None,
            port: free_port(cluster),
            dir: tempfile::tempdir().expect("temp dir"),
            fsync,
            cluster,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let dir = self.dir.path().to_str().expect("utf-8 dir").to_owned();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir])
            .args(["--save", "", "--daemonize", "no", "--loglevel", "warning"]);
        if self.fsync {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "2000"]);
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

    /// Runs `redis-cli` against this process; its output.
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

    fn info(&self, section: &str, field: &str) -> Option<String> {
        let info = self.cli(&["INFO", section]);
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
            .map(str::to_owned)
    }

    /// Whether this node is a primary now.
    pub fn is_primary(&self) -> bool {
        self.info("replication", "role").as_deref() == Some("master")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Redis {
    /// One node, or a cluster's six (the first three created primaries).
    pub nodes: Vec<Node>,
}

impl Redis {
    /// Whether the tests run on a Redis Cluster (`HERALD_TEST_REDIS=cluster`).
    pub fn clustered() -> bool {
        std::env::var("HERALD_TEST_REDIS").as_deref() == Ok("cluster")
    }

    /// Starts Redis with `appendonly yes` and `appendfsync always`, as
    /// herald's fsync durability requires.
    pub fn start() -> Redis {
        Redis::start_with(true)
    }

    /// Starts Redis; `fsync` false leaves its default persistence (no AOF).
    pub fn start_with(fsync: bool) -> Redis {
        if Redis::clustered() {
            Redis::cluster(fsync)
        } else {
            Redis {
                nodes: vec![Node::new(fsync, false)],
            }
        }
    }

    /// A Redis Cluster of 3 primaries with a replica each, whatever
    /// `HERALD_TEST_REDIS` says.
    pub fn cluster(fsync: bool) -> Redis {
        let nodes: Vec<Node> = (0..6).map(|_| Node::new(fsync, true)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let redis = Redis { nodes };
        redis.wait_healthy();
        redis
    }

    /// Waits until every node sees the cluster ok and every replica is in
    /// sync with its primary (a replica that never synced refuses to take
    /// over from a dead primary).
    pub fn wait_healthy(&self) {
        if !self.is_cluster() {
            return;
        }
        let started = Instant::now();
        loop {
            let live: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
            let ok = live.iter().all(|n| {
                n.info("cluster", "cluster_state").as_deref() == Some("ok")
                    || n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
            let synced = live
                .iter()
                .filter(|n| !n.is_primary())
                .all(|n| n.info("replication", "master_link_status").as_deref() == Some("up"));
            if ok && synced {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the redis cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.nodes.len() > 1
    }

    /// What herald's `--store` takes.
    pub fn url(&self) -> String {
        if self.is_cluster() {
            let seeds: Vec<String> = self.nodes[..3]
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect();
            format!("redis-cluster://{}", seeds.join(","))
        } else {
            format!("redis://127.0.0.1:{}", self.nodes[0].port)
        }
    }

    /// Runs `redis-cli` on every live primary; the output of one, or the
    /// sum of their integer answers.
    pub fn cli(&self, args: &[&str]) -> String {
        let outputs: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some() && n.is_primary())
            .map(|n| n.cli(args))
            .collect();
        let numbers: Option<Vec<i64>> = outputs.iter().map(|o| o.trim().parse().ok()).collect();
        match numbers {
            Some(numbers) if outputs.len() > 1 => format!("{}\n", numbers.iter().sum::<i64>()),
            _ => outputs.into_iter().next().unwrap_or_default(),
        }
    }

    /// SIGKILL of every process, as a crash.
    pub fn kill9(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
    }

    /// Starts every process again on the same ports and dirs.
    pub fn restart(&mut self) {
        for node in &mut self.nodes {
            node.kill9();
        }
        for node in &mut self.nodes {
            node.spawn();
        }
        // Called from async tests: the wait must not stall their runtime.
        tokio::task::block_in_place(|| self.wait_healthy());
    }

    /// The index of the live primary that serves `key`'s slot.
    pub fn primary_of(&self, key: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| {
                n.child.is_some() && n.is_primary() && !n.cli(&["EXISTS", key]).contains("MOVED")
            })
            .expect("a primary for the slot")
    }

    /// The index of the live primary holding a key that matches `pattern`.
    pub fn primary_holding(&self, pattern: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.child.is_some()
                && n.is_primary()
                && !n.cli(&["--scan", "--pattern", pattern]).trim().is_empty()
        })
    }

    /// Waits (blocking its thread only) until a live node other than
    /// `dead` serves the keys matching `pattern` as a primary: the
    /// replica of a killed primary took over.
    pub fn wait_taken_over(&self, dead: usize, pattern: &str) -> usize {
        tokio::task::block_in_place(|| {
            let started = Instant::now();
            loop {
                if let Some(i) = self.primary_holding(pattern).filter(|&i| i != dead) {
                    if self.nodes[i]
                        .cli(&["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                    {
                        return i;
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no replica took over from node {dead}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    /// Sends `signal` (`STOP`, `CONT`) to node `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("a live node").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Starts node `i` again (same port and dir) and waits until the
    /// cluster is healthy again, its replicas in sync.
    pub fn restart_node(&mut self, i: usize) {
        tokio::task::block_in_place(|| {
            self.nodes[i].restart();
            self.wait_healthy();
        })
    }

    /// The first slot primary `i` serves.
    pub fn first_slot(&self, i: usize) -> u16 {
        let nodes = self.nodes[i].cli(&["CLUSTER", "NODES"]);
        let mine = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .expect("itself");
        let range = mine.split_whitespace().nth(8).expect("a slot range");
        range.split('-').next().unwrap().parse().expect("a slot")
    }

    /// The slot of the key matching `pattern`, on the primary holding it.
    pub fn slot_of(&self, pattern: &str) -> Option<u16> {
        let i = self.primary_holding(pattern)?;
        let key = self.nodes[i].cli(&["--scan", "--pattern", pattern]);
        let key = key.lines().next()?;
        self.nodes[i]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .ok()
    }

    /// Moves the first `slots` slots of primary `from` to primary `to`
    /// with `redis-cli --cluster reshard` (their keys migrate; clients get
    /// ASK and MOVED meanwhile).
    pub fn reshard(&self, from: usize, to: usize, slots: u16) {
        let id = |i: usize| self.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_owned();
        let out = tokio::task::block_in_place(|| {
            Command::new("redis-cli")
                .args([
                    "--cluster",
                    "reshard",
                    &format!("127.0.0.1:{}", self.nodes[from].port),
                ])
                .args(["--cluster-from", &id(from), "--cluster-to", &id(to)])
                .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
                .output()
                .expect("redis-cli --cluster reshard")
        });
        assert!(
            out.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// The index of the replica of the primary `primary`.
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.nodes[primary]
            .cli(&["CLUSTER", "MYID"])
            .trim()
            .to_owned();
        self.nodes
            .iter()
            .position(|n| {
                n.child.is_some()
                    && n.info("replication", "master_port").as_deref()
                        == Some(&self.nodes[primary].port.to_string())
                    && n.cli(&["CLUSTER", "NODES"]).contains(&id)
            })
            .expect("a replica of the primary")
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
