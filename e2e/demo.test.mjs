// Real-browser tests: Debian's chromium (headless) against the real herald
// binary in demo mode, driving the demo page and herald.js as a person would.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { demoToken, freePort, launchBrowser, openAs as open, openChatWith, root, startDemoServer } from "./support.mjs";

const shots = join(root, "target", "e2e");
mkdirSync(shots, { recursive: true });

let server, base, apiKey, browser, port, dataDir;

/** Starts herald in demo mode on `port` with `dataDir`; resolves once listening. */
async function startServer() {
  const started = await startDemoServer(port, dataDir, ["--heartbeat-ms", "2000"]);
  apiKey = started.apiKey;
  return started.child;
}

before(async () => {
  port = await freePort();
  dataDir = join(mkdtempSync(join(tmpdir(), "herald-e2e-")), "data");
  server = await startServer();
  base = `http://127.0.0.1:${port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGKILL");
});

const token = (uid) => demoToken(base, uid);

async function sendDirect(from, to, body) {
  const r = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: { authorization: "Bearer " + (await token(from)), "content-type": "application/json" },
    body: JSON.stringify({ to, body }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).id;
}

/** Opens the demo page logged in as `uid` on `transport`. */
const openAs = (uid, transport, setup) => open(browser, base, uid, transport, setup);

for (const transport of ["ws", "sse", "iframe", "longpoll", "poll"]) {
  test(`the ${transport} transport delivers live messages to the page`, async () => {
    const page = await openAs("carol", transport);
    await openChatWith(page, "dave");
    const text = `hello over ${transport} ${Date.now()}`;
    await sendDirect("dave", "carol", text);
    await page.waitForSelector(`#messages li >> text=${text}`, { timeout: 15000 });
    assert.match(await page.textContent("#conn"), new RegExp(`carol · ${transport} · open`));
    await page.close();
  });
}

test("auto falls back to SSE when WebSocket is refused", async () => {
  const page = await openAs("erin", "auto", (p) => p.routeWebSocket(/\/v1\/ws/, (ws) => ws.close()));
  assert.match(await page.textContent("#conn"), /erin · sse · open/);
  await page.close();
});

test("a message body with HTML is shown as text", async () => {
  const page = await openAs("alice", "ws");
  await openChatWith(page, "erin");
  const hostile = "<img src=x onerror=alert(1)>";
  await sendDirect("erin", "alice", hostile);
  await page.waitForFunction((h) => [...document.querySelectorAll("#messages .body")].some((b) => b.textContent === h), hostile);
  assert.equal(await page.locator("#messages img").count(), 0);
  await page.waitForTimeout(300);
  assert.equal(page.sawDialog, undefined);
  await page.close();
});

test("two people chat and see each other's presence and receipts", async () => {
  const bob = await openAs("bob", "sse");
  const alice = await openAs("alice", "ws");
  // alice sees bob online (login pull), bob sees alice come online (push).
  await alice.waitForSelector("#dot-bob.online");
  await bob.waitForSelector("#dot-alice.online", { timeout: 10000 });
  await bob.screenshot({ path: join(shots, "demo-bob.png") });
  await openChatWith(bob, "alice");
  await openChatWith(alice, "bob");
  await alice.fill("#text", "hi bob");
  await alice.click("#composer button");
  await bob.waitForSelector("#messages li >> text=hi bob", { timeout: 10000 });
  // bob has it open, so it is read; alice sees the receipt.
  await alice.waitForSelector("#messages li.mine .meta >> text=read", { timeout: 10000 });
  await alice.screenshot({ path: join(shots, "demo.png") });
  await bob.close();
  await alice.waitForSelector("#dot-bob:not(.online)", { timeout: 10000 });
  await alice.close();
});

test("bob sees alice typing within 200 ms, and it goes away after 5 s", async (t) => {
  const bob = await openAs("bob", "sse");
  // alice's signals go as POSTs (only a WebSocket sends them itself).
  const alice = await openAs("alice", "poll");
  await openChatWith(bob, "alice");
  await openChatWith(alice, "bob");
  // Both pages share the machine's clock: the delay is the signal's path
  // (alice's POST, herald, bob's event stream, the page), not the test's.
  await bob.evaluate(() => {
    new MutationObserver(() => {
      if (document.getElementById("typing").textContent && !window.typingShownAt) window.typingShownAt = Date.now();
      if (!document.getElementById("typing").textContent && window.typingShownAt) window.typingGoneAt = Date.now();
    }).observe(document.getElementById("typing"), { childList: true, characterData: true, subtree: true });
  });
  await alice.evaluate(() => {
    document.getElementById("text").addEventListener("input", () => { window.typedAt ||= Date.now(); });
  });
  await alice.type("#text", "h");
  await bob.waitForSelector("#typing >> text=alice is typing…", { timeout: 5000 });
  const typedAt = await alice.evaluate(() => window.typedAt);
  const shownAt = await bob.evaluate(() => window.typingShownAt);
  t.diagnostic(`"alice is typing…" shown ${shownAt - typedAt} ms after the keystroke`);
  assert.ok(shownAt - typedAt < 200, `shown ${shownAt - typedAt} ms after the keystroke`);
  await bob.screenshot({ path: join(shots, "demo-typing.png") });
  await bob.waitForFunction(() => window.typingGoneAt, null, { timeout: 10000 });
  const goneAt = await bob.evaluate(() => window.typingGoneAt);
  assert.ok(goneAt - shownAt >= 4500, `gone after ${goneAt - shownAt} ms`);
  await alice.close();
  await bob.close();
});

test("a reload resumes from the cursor without duplicates", async () => {
  const page = await openAs("dave", "sse");
  await openChatWith(page, "alice");
  await sendDirect("alice", "dave", "before reload");
  await page.waitForSelector("#messages li >> text=before reload");
  const cursor = await page.evaluate(() => window.herald.cursor);
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.selectOption("#uid", "dave");
  await page.selectOption("#transport", "sse");
  await page.click("#go");
  await page.waitForFunction(() => /· open$/.test(document.getElementById("conn").textContent));
  // Presence events from other tests' pages may move it on, never back.
  const resumed = await page.evaluate(() => window.herald.cursor);
  assert.ok(resumed >= cursor, `the cursor survived the reload: ${resumed} < ${cursor}`);
  await page.evaluate(() => { window.seen = []; window.herald.on("*", (e) => e.seq && window.seen.push(e.seq)); });
  await sendDirect("alice", "dave", "after reload");
  await page.waitForFunction(() => window.seen.length >= 1);
  await page.waitForTimeout(500);
  const seen = await page.evaluate(() => window.seen);
  assert.ok(seen.every((s) => s > resumed), `replayed old events: ${seen} (cursor ${resumed})`);
  assert.equal(new Set(seen).size, seen.length, "duplicates");
  await page.close();
});

test("a conversation shows its history after a reload, once, in order, with its read state", async () => {
  // Sent before the page exists: only the history can show them.
  const texts = [];
  for (let n = 0; n < 3; n++) {
    texts.push(`earlier ${n} ${Date.now()}`);
    await sendDirect(n === 1 ? "bob" : "carol", n === 1 ? "carol" : "bob", texts[n]);
  }
  const page = await openAs("bob", "ws");
  await openChatWith(page, "carol");
  for (const text of texts) await page.waitForSelector(`#messages li >> text=${text}`);
  // bob opened the chat: carol's messages to him are read now.
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.selectOption("#uid", "bob");
  await page.selectOption("#transport", "ws");
  await page.click("#go");
  await openChatWith(page, "carol");
  for (const text of texts) await page.waitForSelector(`#messages li >> text=${text}`);
  const shown = await page.$$eval("#messages li", (items) => items.map((li) => li.textContent));
  const order = texts.map((t) => shown.findIndex((s) => s.includes(t)));
  assert.deepEqual(order, [...order].sort((a, b) => a - b), "oldest first");
  assert.equal(shown.filter((s) => texts.some((t) => s.includes(t))).length, 3, "each once");
  // bob's own message to carol: carol has not read it.
  const history = await page.evaluate(() => window.herald.history("carol"));
  const read = Object.fromEntries(history.messages.map((m) => [m.body, m.read]));
  assert.deepEqual([read[texts[0]], read[texts[1]], read[texts[2]]], [true, false, true]);
  await page.screenshot({ path: join(shots, "history.png") });
  await page.close();
});

test("a long conversation opens on its newest page and shows earlier ones on request", async () => {
  // 45 messages, already read off the queue: the page shows the newest 20,
  // then 20 more, then the rest.
  const texts = [];
  for (let n = 0; n < 45; n++) {
    texts.push(`page ${n} ${Date.now()}`);
    await sendDirect(n % 2 ? "dave" : "erin", n % 2 ? "erin" : "dave", texts[n]);
  }
  const page = await openAs("dave", "sse");
  await openChatWith(page, "erin");
  await page.waitForSelector(`#messages li >> text=${texts[44]}`);
  // After a reload the queue resumes past them: only the history has them.
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.selectOption("#uid", "dave");
  await page.selectOption("#transport", "sse");
  await page.click("#go");
  await openChatWith(page, "erin");
  await page.waitForSelector(`#messages li >> text=${texts[44]}`);
  const shownTexts = () => page.$$eval("#messages li .body", (items) => items.map((li) => li.textContent));
  assert.deepEqual(await shownTexts(), texts.slice(25), "the newest page, oldest first");
  await page.click("#earlier");
  await page.waitForSelector(`#messages li >> text=${texts[5]}`);
  assert.deepEqual(await shownTexts(), texts.slice(5));
  await page.click("#earlier");
  await page.waitForSelector(`#messages li >> text=${texts[0]}`);
  assert.deepEqual(await shownTexts(), texts, "every message once, in order");
  assert.equal(await page.$("#earlier"), null, "nothing earlier is left");
  await page.close();
});

test("after kill -9 and restart the page ends with every acknowledged event once", async () => {
  const page = await openAs("erin", "sse");
  await page.evaluate(() => { window.seen = []; window.herald.on("*", (e) => e.seq && e.type === "msg" && window.seen.push(e.data.body)); });
  const acknowledged = [];
  for (let n = 0; n < 40; n++) {
    if (n === 20) {
      server.kill("SIGKILL");
      await new Promise((r) => server.once("exit", r));
      server = await startServer(); // same port and data; a new demo secret: tokens are renewed
    }
    await sendDirect("alice", "erin", `n${n}`);
    acknowledged.push(`n${n}`);
  }
  await page.waitForFunction((n) => window.seen.length >= n, acknowledged.length, { timeout: 30000 });
  await page.waitForTimeout(500);
  const seen = await page.evaluate(() => window.seen);
  assert.deepEqual(seen, acknowledged);
  await page.close();
});

test("herald.js waits out the send limit and sends everything once", async () => {
  // The server's limit is 20 sends a second in bursts of 40: 45 at once
  // means 5 answers of 429, which herald.js waits out and retries.
  const page = await openAs("carol", "ws");
  const ids = await page.evaluate(() => Promise.all(
    Array.from({ length: 45 }, (_, n) => window.herald.send("dave", `burst ${n}`).then((r) => r.id, (e) => `failed: ${e.message}`)),
  ));
  assert.ok(ids.every((id) => typeof id === "number"), ids.join(", "));
  assert.equal(new Set(ids).size, 45);
  const r = await fetch(`${base}/v1/poll?cursor=0&limit=1000`, { headers: { authorization: "Bearer " + (await token("dave")) } });
  const bursts = (await r.json()).events.filter((e) => e.type === "msg" && String(e.data.body).startsWith("burst "));
  assert.deepEqual(bursts.map((e) => e.data.id).sort((a, b) => a - b), [...ids].sort((a, b) => a - b));
  await page.close();
});

test("the compare view shows numbers for all five transports", async () => {
  const page = await openAs("alice", "ws");
  await page.click("#compare-open");
  await page.click("#compare-run");
  await page.waitForFunction(() => document.body.dataset.compared === "yes", null, { timeout: 40000 });
  const rows = await page.$$eval("#compare-table tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.deepEqual(rows.map((r) => r[0]), ["poll", "longpoll", "iframe", "sse", "ws"]);
  for (const r of rows) {
    assert.equal(Number(r[1]), 40, `${r[0]} delivered ${r[1]} of 40`);
    assert.notEqual(r[2], "–", `${r[0]} has no latency`);
  }
  const perMessage = Object.fromEntries(rows.map((r) => [r[0], Number(r[5])]));
  assert.ok(perMessage.ws < perMessage.poll, "streams need fewer requests per message than short polling");
  // Bytes per message count the HTTP heads: a poller pays them per request, a stream once.
  const bytes = Object.fromEntries(rows.map((r) => [r[0], Number(r[7])]));
  for (const [transport, n] of Object.entries(bytes)) assert.ok(n > 0, `${transport}: ${n} bytes per message`);
  assert.ok(bytes.poll > bytes.ws && bytes.longpoll > bytes.sse, JSON.stringify(bytes));
  // The projection names every transport; the polls with a request rate.
  const projection = await page.textContent("#compare-projection");
  for (const transport of ["poll", "longpoll", "iframe", "sse", "ws"]) assert.match(projection, new RegExp(`${transport}: `));
  assert.match(projection, /poll: [\d,]+ requests\/s/);
  await page.locator("#compare").screenshot({ path: join(shots, "compare.png") });
  await page.close();
});
