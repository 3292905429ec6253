// The demo page through a load balancer in front of a three-node cluster:
// a private redis-server (AOF fsynced on every write), or with
// HERALD_TEST_REDIS=cluster a Redis Cluster of 3 primaries + 3 replicas,
// three herald nodes on it, and HAProxy with the checked-in docs/deploy/haproxy-cluster.cfg,
// which sends every request to the next node. Two people chat on
// different transports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, launchBrowser, openAs as open, openChatWith } from "./support.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const binary = join(root, "target", "debug", "herald");
const shots = join(root, "target", "e2e");
mkdirSync(shots, { recursive: true });
const secret = "e2e-cluster-secret-0123456789abcdef";
const apiKey = "e2e-cluster-api-key-0123";

const children = [];
const nodes = [];
let base, browser;

/** Spawns `cmd` (stopped by PID after the tests); resolves once `ready()` says so. */
function start(cmd, args, env, ready) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    child.on("exit", (code) => reject(new Error(`${cmd} exited with ${code}: ${out}`)));
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    const poll = setInterval(async () => {
      if (await ready(out)) { clearInterval(poll); resolve(child); }
    }, 50);
  });
}

const healthy = (url) => async () => {
  try { return (await fetch(url + "/healthz")).ok; } catch { return false; }
};

/** Starts one redis-server with the AOF fsynced on every write, in a temp dir. */
async function redisServer(extra = []) {
  const port = await freePort();
  await start("redis-server", ["--port", String(port), "--bind", "127.0.0.1",
    "--dir", mkdtempSync(join(tmpdir(), "herald-e2e-redis-")), "--save", "",
    "--appendonly", "yes", "--appendfsync", "always", ...extra], {},
    () => spawnSync("redis-cli", ["-p", String(port), "ping"]).stdout?.toString().trim() === "PONG");
  return `127.0.0.1:${port}`;
}

/** One Redis, or a Redis Cluster of six; herald's --store for it. */
async function startRedis() {
  if (process.env.HERALD_TEST_REDIS !== "cluster") return `redis://${await redisServer()}`;
  const cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "2000"];
  const addresses = [];
  for (let i = 0; i < 6; i++) addresses.push(await redisServer(cluster));
  const create = spawnSync("redis-cli", ["--cluster", "create", ...addresses,
    "--cluster-replicas", "1", "--cluster-yes"]);
  assert.equal(create.status, 0, create.stdout?.toString());
  // Every replica in sync before herald counts them.
  const synced = () => addresses.every((a) => {
    const info = spawnSync("redis-cli", ["-p", a.split(":")[1], "info", "replication"]).stdout.toString();
    return info.includes("role:master") || info.includes("master_link_status:up");
  });
  while (!synced()) await new Promise((r) => setTimeout(r, 100));
  return `redis-cluster://${addresses.slice(0, 3).join(",")}`;
}

before(async () => {
  const store = await startRedis();
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    await start(binary, ["--listen", `127.0.0.1:${port}`, "--store", store,
      "--secret", secret, "--api-key", apiKey, "--demo", "--heartbeat-ms", "2000"],
      { HERALD_LOG: "warn" }, healthy(url));
    nodes.push(`127.0.0.1:${port}`);
  }
  const lbPort = await freePort();
  base = `http://127.0.0.1:${lbPort}`;
  await start("haproxy", ["-f", join(root, "docs", "deploy", "haproxy-cluster.cfg"), "-db"],
    { LISTEN: `127.0.0.1:${lbPort}`, NODE1: nodes[0], NODE2: nodes[1], NODE3: nodes[2] }, healthy(base));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const child of children.reverse()) child.kill("SIGKILL");
});

const openAs = (uid, transport) => open(browser, base, uid, transport);

/** Sends a direct message through the load balancer. */
async function sendDirect(from, to, body) {
  const login = await fetch(`${base}/v1/demo/login`, { method: "POST", body: JSON.stringify({ uid: from }) });
  const { token } = await login.json();
  const r = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: JSON.stringify({ to, body }),
  });
  assert.equal(r.status, 200);
}

test("two people chat through a load balancer in front of three nodes", async () => {
  // A long-poll shows "open" with its first answer: give bob something to read.
  await sendDirect("carol", "bob", "welcome to the cluster");
  const bob = await openAs("bob", "longpoll");
  const alice = await openAs("alice", "ws");
  await bob.waitForSelector("#dot-alice.online", { timeout: 15000 });
  await openChatWith(bob, "alice");
  await openChatWith(alice, "bob");
  await alice.fill("#text", "hi bob, from any node");
  await alice.click("#composer button");
  await bob.waitForSelector("#messages li >> text=hi bob, from any node", { timeout: 15000 });
  await bob.fill("#text", "hi alice");
  await bob.click("#composer button");
  await alice.waitForSelector("#messages li >> text=hi alice", { timeout: 15000 });
  // bob has the chat open, so alice's message is read; she sees the receipt.
  await alice.waitForSelector("#messages li.mine .meta >> text=read", { timeout: 15000 });
  await alice.screenshot({ path: join(shots, "cluster-alice.png") });
  const epoch = await bob.evaluate(() => window.herald.epoch);
  assert.ok(epoch, "herald.js learned the queue's epoch");
  // bob's long-polls went to more than one node: every request to the next.
  let nodesServing = 0;
  for (let round = 0; round < 20 && nodesServing < 2; round++) {
    await sendDirect("carol", "bob", `round ${round}`); // answers his held long-poll
    await new Promise((r) => setTimeout(r, 200));
    nodesServing = 0;
    for (const node of nodes) {
      const metrics = await (await fetch(`http://${node}/metrics`, { headers: { authorization: "Bearer " + apiKey } })).text();
      const returns = metrics.split("\n").filter((l) => l.startsWith("herald_longpoll_returns_total"))
        .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
      if (returns > 0) nodesServing += 1;
    }
  }
  assert.ok(nodesServing >= 2, `bob's long-polls were answered by ${nodesServing} node(s)`);
  await alice.close();
  await bob.waitForSelector("#dot-alice:not(.online)", { timeout: 15000 });
  await bob.close();
});
