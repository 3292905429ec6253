// WebTransport over HTTP/3, in Debian's chromium (QUIC on) against herald
// started with --tls-self-signed --webtransport-listen: herald.js takes
// the certificate by its hash (serverCertificateHashes, from GET
// /v1/webtransport), chats both ways with a WebSocket user with presence,
// typing and receipts; "auto" picks it; a refused session is handled
// like a refused request; the compare view measures six transports.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { demoToken, openAs, openChatWith, publishTo, root, startDemo } from "./support.mjs";

const shots = join(root, "target", "e2e");
mkdirSync(shots, { recursive: true });

// This process's own fetches (tokens) take the certificate made at start;
// pages are told the same with ignoreHTTPSErrors, and WebTransport takes
// it by its hash.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

let demo, base, context;

before(async () => {
  demo = await startDemo(["--tls-self-signed", "--webtransport-listen", "127.0.0.1:0", "--heartbeat-ms", "2000"], { quic: true });
  base = demo.base;
  context = await demo.browser.newContext({ ignoreHTTPSErrors: true });
});

after(() => demo?.stop());

const inspect = async (uid) =>
  (await fetch(`${base}/api/v1/users/${uid}`, { headers: { authorization: "Bearer " + demo.apiKey } })).json();

test("herald.js on WebTransport chats both ways with a WebSocket user, with presence, typing and receipts", async () => {
  const bob = await openAs(context, base, "bob", "ws");
  const alice = await openAs(context, base, "alice", "webtransport");
  assert.match(await alice.textContent("#conn"), /alice · webtransport · open/);
  assert.deepEqual((await inspect("alice")).connections.map((c) => c.transport), ["webtransport"]);
  // Presence both ways: alice pulled bob's at login, bob got alice's pushed.
  await alice.waitForSelector("#dot-bob.online", { timeout: 10000 });
  await bob.waitForSelector("#dot-alice.online", { timeout: 10000 });
  await openChatWith(bob, "alice");
  await openChatWith(alice, "bob");

  await alice.fill("#text", "hi bob, over HTTP/3");
  await alice.click("#composer button");
  await bob.waitForSelector("#messages li >> text=hi bob, over HTTP/3", { timeout: 10000 });
  // bob has the chat open: read; the receipt comes to alice over her session.
  await alice.waitForSelector("#messages li.mine .meta >> text=read", { timeout: 10000 });

  // Typing: bob's signal reaches alice as a datagram; alice's goes up her command stream.
  await bob.type("#text", "h");
  await alice.waitForSelector("#typing >> text=bob is typing…", { timeout: 5000 });
  await alice.type("#text", "x");
  await bob.waitForSelector("#typing >> text=alice is typing…", { timeout: 5000 });
  await alice.fill("#text", "");

  await bob.fill("#text", "hello alice, over a WebSocket");
  await bob.click("#composer button");
  await alice.waitForSelector("#messages li >> text=hello alice, over a WebSocket", { timeout: 10000 });
  await bob.waitForSelector("#messages li.mine .meta >> text=read", { timeout: 10000 });
  // alice acked over her command stream: nothing waits in her queue.
  const acked = async () => { const q = (await inspect("alice")).queue; return q.waiting === 0 && q.head > 0; };
  for (let i = 0; i < 50 && !(await acked()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(await acked(), JSON.stringify((await inspect("alice")).queue));
  await alice.screenshot({ path: join(shots, "demo-webtransport.png") });

  await alice.close();
  await bob.waitForSelector("#dot-alice:not(.online)", { timeout: 15000 });
  await bob.close();
});

test("auto picks WebTransport where it is served, and a refused session is handled as a refused request", async () => {
  const page = await context.newPage();
  await page.goto(base + "/herald.js");
  const token = await demoToken(base, "carol");
  const states = await page.evaluate(async (token) => {
    const { Herald } = await import("/herald.js");
    const seen = [];
    const auto = new Herald({ token, share: false });
    auto.on("status", (s) => seen.push(`auto ${s.transport} ${s.state}`));
    auto.start();
    // A token the server did not sign: refused with 401, no getToken to renew it.
    const forged = token.slice(0, -4) + (token.endsWith("AAAA") ? "BBBB" : "AAAA");
    const refused = new Herald({ token: forged, uid: "carol", transport: "webtransport", share: false });
    refused.on("status", (s) => seen.push(`refused ${s.transport} ${s.state}`));
    refused.start();
    const until = Date.now() + 15000;
    while (Date.now() < until && !(seen.includes("auto webtransport open") && seen.includes("refused webtransport unauthorized"))) {
      await new Promise((r) => setTimeout(r, 50));
    }
    auto.stop();
    refused.stop();
    return seen;
  }, token);
  assert.ok(states.includes("auto webtransport open"), states.join(", "));
  assert.ok(states.includes("refused webtransport unauthorized"), states.join(", "));
  await page.close();
});

test("on WebTransport a refused token calls getToken once and a cursor the server never had gives one resync", async () => {
  const page = await context.newPage();
  await page.goto(base + "/herald.js");
  const good = await demoToken(base, "erin");
  await publishTo(base, demo.apiKey, "erin", { n: 1 });
  await page.evaluate(async (good) => {
    const { Herald } = await import("/herald.js");
    sessionStorage.setItem("wt:cursor", "99"); // a position this server never had
    window.log = [];
    window.tokenCalls = 0;
    const getToken = async () => { window.tokenCalls += 1; return good; };
    window.herald = new Herald({ token: "x" + good.slice(1), getToken, transport: "webtransport", storageKey: "wt:cursor", share: false })
      .on("*", (e) => window.log.push(e)).start();
  }, good);
  await page.waitForFunction(() => window.log.some((e) => e.type === "status" && e.state === "open"), null, { timeout: 15000 });
  const seq = await publishTo(base, demo.apiKey, "erin", { n: 2 });
  await page.waitForFunction((seq) => window.log.some((e) => e.seq === seq), seq, { timeout: 10000 });
  const { calls, resyncs, notices } = await page.evaluate(() => ({
    calls: window.tokenCalls,
    resyncs: window.log.filter((e) => e.type === "resync").map((e) => `${e.reason} ${e.cursor}`),
    notices: window.log.filter((e) => e.type === "notice").map((e) => e.seq),
  }));
  assert.equal(calls, 1, "getToken once");
  assert.deepEqual(resyncs, ["cursor_ahead 1"], "one resync, to the server's head");
  assert.deepEqual(notices, [seq], "then on from there");
  await page.evaluate(() => window.herald.stop());
  await page.close();
});

test("the compare view measures six transports", async () => {
  const page = await openAs(context, base, "dave", "ws");
  await page.click("#compare-open");
  await page.click("#compare-run");
  await page.waitForFunction(() => document.body.dataset.compared === "yes", null, { timeout: 60000 });
  const rows = await page.$$eval("#compare-table tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.deepEqual(rows.map((r) => r[0]), ["poll", "longpoll", "iframe", "sse", "ws", "webtransport"]);
  for (const r of rows) {
    assert.equal(Number(r[1]), 40, `${r[0]} delivered ${r[1]} of 40`);
    assert.notEqual(r[2], "–", `${r[0]} has no latency`);
  }
  const bytes = Object.fromEntries(rows.map((r) => [r[0], Number(r[7])]));
  assert.ok(bytes.webtransport > 0 && bytes.webtransport < bytes.poll, JSON.stringify(bytes));
  await page.locator("#compare").screenshot({ path: join(shots, "compare-six.png") });
  await page.close();
});
