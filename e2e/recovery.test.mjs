// herald.js recovers from every refusal, on every transport, in a real
// browser against the real server: a stale cursor (409) gives one `resync`
// and the stream goes on from the server's head; an expired token (401)
// calls getToken once; a user at the connection cap (429) and a server
// that is unavailable (503) are retried no sooner than Retry-After; none
// of them becomes a tight loop.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { demoToken, publishTo, startDemo } from "./support.mjs";

const TRANSPORTS = ["ws", "sse", "iframe", "longpoll", "poll"];
let demo, base, apiKey, browser;

before(async () => {
  // Two connections per user, so a test can fill a user's slots.
  demo = await startDemo(["--max-user-connections", "2"]);
  ({ base, apiKey, browser } = demo);
});

after(() => demo?.stop());

const token = (uid) => demoToken(base, uid);

/** Publishes one notice to `uid`; resolves with its seq. */
const publish = (uid, data) => publishTo(base, apiKey, uid, data);

/**
 * A page of the server's origin running herald.js for `uid` on
 * `transport`, started with `options` (tokens by name: "good" is a valid
 * token, "bad" is not; getToken: "good" or "bad" to hand out). Every
 * request to /v1/ and every emitted event is recorded.
 */
async function client(uid, transport, { token: first = "good", getToken, cursor, route } = {}) {
  const page = await browser.newPage();
  page.requests = [];
  const record = (address) => {
    const { pathname } = new URL(address);
    if (pathname.startsWith("/v1/")) page.requests.push({ path: pathname });
  };
  page.on("request", (r) => record(r.url())); // counted at the network: nothing escapes
  page.on("websocket", (ws) => record(ws.url())); // upgrades are not "requests" to Playwright
  // Attempts are also timed in the page, where herald.js makes them: the
  // test process hears of requests late when the box is busy.
  await page.addInitScript(() => {
    window.attempts = [];
    const record = (address) => {
      const { pathname } = new URL(String(address), location.href);
      if (pathname.startsWith("/v1/")) window.attempts.push({ path: pathname, at: Date.now() });
    };
    const wrap = (Base) => class extends Base {
      constructor(address, ...rest) { record(address); super(address, ...rest); }
    };
    window.WebSocket = wrap(window.WebSocket);
    window.EventSource = wrap(window.EventSource);
    const fetch = window.fetch;
    window.fetch = (input, init) => { record(input instanceof Request ? input.url : input); return fetch(input, init); };
    const src = Object.getOwnPropertyDescriptor(HTMLIFrameElement.prototype, "src");
    Object.defineProperty(HTMLIFrameElement.prototype, "src", {
      ...src,
      set(address) { record(address); src.set.call(this, address); },
    });
  });
  if (route) await route(page);
  await page.goto(base + "/herald.js");
  const good = await token(uid);
  const tokens = { good, bad: "x" + good.slice(1) };
  await page.evaluate(async ({ transport, first, hand, cursor, tokens }) => {
    const { Herald } = await import("/herald.js");
    // Where a shared client keeps its cursor (`storageKey` in localStorage).
    if (cursor !== undefined) localStorage.setItem("herald:cursor", String(cursor));
    window.log = [];
    window.tokenCalls = 0;
    const getToken = hand && (async () => { window.tokenCalls += 1; return tokens[hand]; });
    window.herald = new Herald({ token: tokens[first], getToken, transport, storageKey: "herald:cursor" })
      .on("*", (e) => window.log.push(e)).start();
  }, { transport, first, hand: getToken, cursor, tokens });
  return page;
}

const events = (page, type) => page.evaluate((type) => window.log.filter((e) => e.type === type), type);
const waitFor = (page, predicate, arg, timeout = 15000) => page.waitForFunction(predicate, arg, { timeout, polling: 50 });
const waitDelivered = (page, marker) =>
  waitFor(page, (m) => window.log.some((e) => e.type === "notice" && e.data && e.data.m === m), marker);
/** Requests of the transport itself (not herald.js's probe, nor acks). */
const attempts = (page, transport) => page.requests.filter((r) => r.path === "/v1/" + transport).length;

for (const transport of TRANSPORTS) {
  test(`${transport}: a cursor the server never had gives one resync and goes on from its head`, async () => {
    const uid = "stale-" + transport;
    await publish(uid, { m: "old-1" });
    const head = await publish(uid, { m: "old-2" });
    const page = await client(uid, transport, { cursor: 999 });
    // (A held long-poll or an idle iframe shows "open" only with its first
    // answer or event: the delivery below is what proves it connected.)
    await waitFor(page, () => window.log.some((e) => e.type === "resync"));
    await publish(uid, { m: "new" });
    await waitDelivered(page, "new");
    const resyncs = await events(page, "resync");
    assert.equal(resyncs.length, 1, JSON.stringify(resyncs));
    assert.equal(resyncs[0].reason, "cursor_ahead");
    assert.equal(resyncs[0].cursor, head);
    // Events up to the head belong to the state the app refetches: not replayed.
    const seen = (await events(page, "notice")).map((e) => e.data.m);
    assert.deepEqual(seen, ["new"]);
    assert.equal(await page.evaluate(() => window.herald.cursor), head + 1);
    await page.close();
  });

  test(`${transport}: an expired token calls getToken once, then delivers`, async () => {
    const uid = "renew-" + transport;
    const page = await client(uid, transport, { token: "bad", getToken: "good" });
    await waitFor(page, () => window.tokenCalls === 1);
    await publish(uid, { m: "after-renewal" });
    await waitDelivered(page, "after-renewal");
    assert.equal(await page.evaluate(() => window.tokenCalls), 1);
    await page.close();
  });
}

test("a token that stays refused is renewed at most once per backoff step, never in a loop", async () => {
  const pages = await Promise.all(TRANSPORTS.map((t) => client("refused-" + t, t, { token: "bad", getToken: "bad" })));
  await new Promise((r) => setTimeout(r, 4000));
  for (const [i, page] of pages.entries()) {
    const transport = TRANSPORTS[i];
    const calls = await page.evaluate(() => window.tokenCalls);
    const tries = attempts(page, transport);
    const unauthorized = (await events(page, "status")).filter((s) => s.state === "unauthorized").length;
    // Backoff of 0.25·2^n s (±jitter) gives at most 5 steps in 4 s; one renewal and retry per step.
    assert.ok(calls >= 1 && calls <= 5, `${transport}: ${calls} getToken calls`);
    // Two attempts per step (the refused one, the one with the renewed
    // token); for SSE herald.js's probes of why go to the same route.
    const perStep = transport === "sse" ? 4 : 2;
    assert.ok(tries <= perStep * calls + perStep, `${transport}: ${tries} attempts for ${calls} renewals`);
    assert.ok(unauthorized >= 1, `${transport}: the app was told`);
    await page.close();
  }
});

test("a user at the connection cap waits out Retry-After, then connects on every capped transport", async () => {
  const capped = ["ws", "sse", "iframe", "longpoll"];
  // Fill each user's two slots with held SSE streams from outside the browser.
  const holders = [];
  for (const transport of capped) {
    const t = await token("capped-" + transport);
    for (let i = 0; i < 2; i++) {
      const control = new AbortController();
      const r = await fetch(`${base}/v1/sse?token=${encodeURIComponent(t)}`, { signal: control.signal });
      assert.equal(r.status, 200);
      holders.push(control);
    }
  }
  const pages = await Promise.all(capped.map((t) => client("capped-" + t, t)));
  await new Promise((r) => setTimeout(r, 2500));
  for (const control of holders) control.abort();
  for (const transport of capped) await publish("capped-" + transport, { m: "in" });
  for (const [i, page] of pages.entries()) {
    const transport = capped[i];
    await waitFor(page, () => window.log.some((e) => e.type === "notice" && e.data.m === "in"), undefined, 20000);
    const retries = (await events(page, "status")).filter((s) => s.state === "retrying");
    assert.ok(retries.length >= 1, `${transport}: was refused first`);
    assert.equal(retries[0].httpStatus, 429, `${transport}: ${JSON.stringify(retries[0])}`);
    // The server asked for 5 s: no second attempt before that.
    assert.ok(retries[0].delay >= 5000, `${transport}: retried after ${retries[0].delay} ms`);
    // The next attempt (for SSE: after herald.js's probe, the same route) came no sooner.
    const tries = await page.evaluate((path) => window.attempts.filter((r) => r.path === path), "/v1/" + transport);
    const again = tries[transport === "sse" ? 2 : 1];
    assert.ok(again && again.at - tries[0].at >= 5000, `${transport}: ${JSON.stringify(tries)}`);
    await page.close();
  }
});

test("503 with Retry-After is waited out on every transport (injected by the browser's network layer)", async () => {
  const unavailable = ["sse", "iframe", "longpoll", "poll"];
  const pages = await Promise.all(unavailable.map((transport) => client("down-" + transport, transport, {
    route: async (page) => {
      // The transport's first request is refused (and for a stream,
      // herald.js's probe of why: it cannot read the status itself).
      let refusals = transport === "sse" || transport === "iframe" ? 2 : 1;
      await page.route(/\/v1\/(sse|iframe|longpoll|poll)\?/, (route) => {
        if (refusals-- > 0) {
          return route.fulfill({ status: 503, headers: { "retry-after": "3", "content-type": "application/json" },
            body: JSON.stringify({ error: "store_unavailable", message: "injected" }) });
        }
        return route.continue();
      });
    },
  })));
  for (const transport of unavailable) await publish("down-" + transport, { m: "back" });
  for (const [i, page] of pages.entries()) {
    const transport = unavailable[i];
    await waitFor(page, () => window.log.some((e) => e.type === "notice" && e.data.m === "back"), undefined, 20000);
    const retries = (await events(page, "status")).filter((s) => s.state === "retrying");
    assert.equal(retries[0].httpStatus, 503, `${transport}: ${JSON.stringify(retries)}`);
    assert.ok(retries[0].delay >= 3000, `${transport}: retried after ${retries[0].delay} ms`);
    await page.close();
  }
});
