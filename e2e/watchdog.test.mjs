// herald.js notices a connection that died without a word (sleep and wake,
// a Wi-Fi switch, a NAT that forgot it): Chromium reaches herald through a
// TCP proxy that freezes its current connections (nothing forwarded, none
// closed), herald.js hears no heartbeat for 2.5 intervals
// (--heartbeat-ms 1000), reopens from its cursor through a new connection,
// and receives what was published meanwhile, once, in order.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { demoToken, freePort, publishTo, startDemo } from "./support.mjs";

const HEARTBEAT_MS = 1000;
let demo, base, apiKey, browser, proxy;

/** Forwards a free port to `port`; `freeze()` stops every connection open now. */
async function freezingProxy(port) {
  const open = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    open.add(pair);
    const forward = (from, to) => from.on("data", (d) => { if (!pair.frozen) to.write(d); });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => { open.delete(pair); client.destroy(); upstream.destroy(); };
    for (const s of [client, upstream]) { s.on("error", end); s.on("close", end); }
  });
  const listen = await freePort();
  await new Promise((resolve) => server.listen(listen, "127.0.0.1", resolve));
  return {
    base: `http://127.0.0.1:${listen}`,
    /** Every open connection goes silent both ways and stays open. */
    freeze() {
      for (const pair of open) { pair.frozen = true; pair.client.pause(); pair.upstream.pause(); }
      return open.size;
    },
    close() {
      for (const pair of open) { pair.client.destroy(); pair.upstream.destroy(); }
      server.close();
    },
  };
}

before(async () => {
  demo = await startDemo(["--heartbeat-ms", String(HEARTBEAT_MS)]);
  ({ base, apiKey, browser } = demo);
  proxy = await freezingProxy(Number(new URL(base).port));
});

after(() => { proxy?.close(); return demo?.stop(); });

const publish = (uid, m) => publishTo(base, apiKey, uid, { m });

const waitFor = (page, predicate, arg, timeout = 15000) => page.waitForFunction(predicate, arg, { timeout, polling: 50 });
const notices = (page) => page.evaluate(() => window.log.filter((e) => e.type === "notice").map((e) => e.data.m));

for (const transport of ["ws", "sse", "iframe", "longpoll"]) {
  test(`${transport}: a connection frozen without a close is noticed within 2.5 heartbeats and resumed`, async () => {
    const uid = "frozen-" + transport;
    const page = await browser.newPage();
    await page.goto(proxy.base + "/herald.js");
    const token = await demoToken(base, uid);
    await page.evaluate(async ({ transport, token }) => {
      const { Herald } = await import("/herald.js");
      window.log = [];
      // A poller hears no heartbeat (its keepalive is the empty answer at
      // the hold): the app gives the interval for it.
      const heartbeatMs = transport === "longpoll" ? 1000 : undefined;
      window.herald = new Herald({ token, transport, hold: 2, heartbeatMs }).on("*", (e) => {
        window.log.push(e);
        if (e.type === "status" && e.state === "stale") window.staleAt = Date.now();
      }).start();
    }, { transport, token });
    for (const m of [1, 2, 3]) await publish(uid, m);
    await waitFor(page, () => window.log.filter((e) => e.type === "notice").length === 3);
    // The heartbeat interval came from the server (a stream's `ready` or
    // `hello`).
    assert.equal(await page.evaluate(() => window.herald.heartbeatMs), HEARTBEAT_MS);

    const frozenAt = await page.evaluate(() => Date.now());
    assert.ok(proxy.freeze() >= 1, "a connection to freeze");
    for (const m of [4, 5, 6]) await publish(uid, m);
    await waitFor(page, () => window.log.filter((e) => e.type === "notice").length >= 6, null, 20000);
    const staleAt = await page.evaluate(() => window.staleAt);
    assert.ok(staleAt, "herald.js said the connection was stale");
    // 2.5 heartbeats of silence (a long-poll: its 2 s hold as well), plus
    // the watchdog's own tick and a busy box's slack.
    const allowed = 2.5 * HEARTBEAT_MS + (transport === "longpoll" ? 2000 : 0) + 1500;
    assert.ok(staleAt - frozenAt <= allowed, `${transport}: stale after ${staleAt - frozenAt} ms`);
    // What was published meanwhile came once, in order, after the reconnect.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await notices(page), [1, 2, 3, 4, 5, 6]);
    await page.close();
  });
}
