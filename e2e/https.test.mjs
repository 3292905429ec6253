// HTTPS with HTTP/2, in Debian's chromium against herald started with
// --tls-self-signed: the demo page comes over h2, herald.js works on every
// transport over it, and 8 tabs that do not share (each its own SSE
// stream) all receive every event: over HTTP/1.1 the 7th and 8th would
// wait for one of the browser's 6 connections per host.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { demoToken, publishTo, startDemo } from "./support.mjs";

// This process's own fetches (tokens, publishes) take the certificate
// made at start; the browser is told the same with ignoreHTTPSErrors.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

let demo, base, apiKey, browser;

before(async () => {
  demo = await startDemo(["--tls-self-signed", "--heartbeat-ms", "2000"]);
  ({ base, apiKey, browser } = demo);
  assert.match(base, /^https:\/\//);
});

after(() => demo?.stop());

/** A tab of `context` running herald.js for `uid` on `transport`, one
 *  connection per tab; every event it emits is kept in `window.log`. */
async function tab(context, uid, transport) {
  const page = await context.newPage();
  await page.goto(base + "/herald.js");
  const token = await demoToken(base, uid);
  await page.evaluate(async ({ token, transport }) => {
    const { Herald } = await import("/herald.js");
    window.log = [];
    window.herald = new Herald({ token, transport, share: false, heartbeatMs: 2000 });
    window.herald.on("*", (e) => window.log.push(e));
    window.herald.start();
  }, { token, transport });
  return page;
}

const noticeSeqs = (page) => page.evaluate(() => window.log.filter((e) => e.type === "notice").map((e) => e.seq));

test("the demo page comes over HTTP/2, and herald.js receives and sends on every transport over it", async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(base + "/", { waitUntil: "load" });
  const protocols = await page.evaluate(() => [
    performance.getEntriesByType("navigation")[0].nextHopProtocol,
    ...performance.getEntriesByType("resource").map((r) => r.nextHopProtocol),
  ]);
  assert.ok(protocols.length > 1, "the page and what it loads");
  assert.deepEqual([...new Set(protocols)], ["h2"], "every request over h2");

  const transports = ["ws", "sse", "iframe", "longpoll", "poll"];
  const tabs = [];
  for (const transport of transports) tabs.push(await tab(context, "over-h2-" + transport, transport));
  for (const transport of transports) await publishTo(base, apiKey, "over-h2-" + transport, { n: 1 });
  await Promise.all(tabs.map((p) => p.waitForFunction(() => window.log.some((e) => e.type === "notice" && e.seq === 1), null, { timeout: 10000 })));

  // Sent over each transport's own path (the WebSocket op, POSTs for the
  // others), received by the WebSocket tab.
  await Promise.all(tabs.slice(1).map((p, i) => p.evaluate((i) => window.herald.send("over-h2-ws", "from " + i), i)));
  await tabs[0].waitForFunction(() => window.log.filter((e) => e.type === "msg").length === 4, null, { timeout: 10000 });
  await tabs[0].evaluate(() => window.herald.send("over-h2-sse", "from the WebSocket"));
  await tabs[1].waitForFunction(() => window.log.some((e) => e.type === "msg" && e.data.body === "from the WebSocket"), null, { timeout: 10000 });
  await context.close();
});

test("8 tabs with a stream each share one HTTP/2 connection: all receive every event", async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const tabs = [];
  for (let i = 0; i < 8; i++) tabs.push(await tab(context, "eight-h2", "sse"));
  const seqs = [];
  for (let n = 0; n < 5; n++) seqs.push(await publishTo(base, apiKey, "eight-h2", { n }));
  await Promise.all(tabs.map((p) => p.waitForFunction((last) => window.log.some((e) => e.seq === last), seqs.at(-1), { timeout: 10000 })));
  for (const [i, p] of tabs.entries()) assert.deepEqual(await noticeSeqs(p), seqs, `tab ${i}: every event once, in order`);
  const user = await (await fetch(`${base}/api/v1/users/eight-h2`, { headers: { authorization: "Bearer " + apiKey } })).json();
  assert.deepEqual(user.connections.map((c) => c.transport), Array(8).fill("sse"), "eight SSE streams");
  assert.equal(new Set(user.connections.map((c) => c.client)).size, 1, "from one client address and port: one TCP connection");
  await context.close();
});
