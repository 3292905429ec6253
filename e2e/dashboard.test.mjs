// The operations dashboard in a real browser: the API key entered once,
// then live figures from /metrics while the test makes traffic of every
// kind the page shows.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { demoToken, root, startDemo } from "./support.mjs";

let demo, base, apiKey, browser;

before(async () => {
  demo = await startDemo(["--send-rate", "1"]);
  ({ base, apiKey, browser } = demo);
});

after(() => demo?.stop());

const token = (uid) => demoToken(base, uid);

const value = (page, metric) => page.$eval(`[data-metric="${metric}"]`, (t) => Number(t.dataset.value));

test("the dashboard asks for the API key once and draws live figures from /metrics", async () => {
  const page = await browser.newPage();
  await page.goto(base + "/dashboard");
  // A wrong key is refused and asked for again.
  await page.fill("#key", "not-the-key-0123456789");
  await page.click("#key-form button");
  await page.waitForSelector("#key-error:not([hidden])");
  assert.match(await page.textContent("#key-error"), /refused/);
  await page.fill("#key", apiKey);
  await page.click("#key-form button");
  await page.waitForFunction(() => Number(document.body.dataset.samples) >= 2);

  // Traffic: streams open (presence pushed to online friends), a held
  // long-poll, published events, and a sender over the send limit.
  const controls = [];
  for (const uid of ["alice", "bob", "carol"]) {
    const control = new AbortController();
    const r = await fetch(`${base}/v1/sse?token=${encodeURIComponent(await token(uid))}`, { signal: control.signal });
    assert.equal(r.status, 200);
    controls.push(control);
  }
  const dave = await token("dave");
  const held = new AbortController();
  const longpoll = fetch(`${base}/v1/longpoll?timeout=20&token=${encodeURIComponent(dave)}`, { signal: held.signal }).catch(() => {});
  const publish = () => fetch(`${base}/api/v1/publish`, {
    method: "POST",
    headers: { authorization: "Bearer " + apiKey, "content-type": "application/json" },
    body: JSON.stringify({ to: ["alice", "bob", "carol"], data: { tick: Date.now() } }),
  });
  const erin = await token("erin");
  for (let i = 0; i < 5; i++) {
    await fetch(`${base}/v1/messages`, {
      method: "POST",
      headers: { authorization: "Bearer " + erin, "content-type": "application/json" },
      body: JSON.stringify({ to: "alice", body: "flood " + i }),
    });
  }
  await page.waitForFunction(() => Number(document.querySelector('[data-metric="refused"]').dataset.value) >= 1);
  for (let i = 0; i < 6; i++) {
    await publish();
    await new Promise((r) => setTimeout(r, 300));
  }
  await page.waitForFunction(() => {
    const v = (m) => Number(document.querySelector(`[data-metric="${m}"]`).dataset.value);
    return v("connections-sse") === 3 && v("longpolls") === 1 && v("fanout") > 0;
  }, null, { timeout: 10000 });
  assert.equal(await value(page, "connections"), 4);
  assert.ok(await value(page, "refused") >= 3, "sends past the limit of 1/s, bursts of 2");
  // Rates are per interval: the charts kept the traffic of the last two minutes.
  const drawn = await page.evaluate(() => [...document.querySelectorAll("canvas")].every((c) => {
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    return data.some((byte, i) => i % 4 === 3 && byte > 0);
  }));
  assert.ok(drawn, "every chart drew something");
  await page.screenshot({ path: join(root, "target", "e2e", "dashboard.png"), fullPage: true });

  // Entered once: a reload keeps it for this tab.
  await page.reload();
  await page.waitForFunction(() => Number(document.body.dataset.samples) >= 2);
  assert.equal(await page.isVisible("#login"), false);
  held.abort();
  await longpoll;
  for (const control of controls) control.abort();
  await page.close();
});

test("the dashboard finds a user and draws an event's delivery trace, live", async () => {
  const page = await browser.newPage();
  await page.goto(base + "/dashboard");
  await page.fill("#key", apiKey);
  await page.click("#key-form button");
  await page.waitForFunction(() => Number(document.body.dataset.samples) >= 1);

  // Bob has a stream open; the backend publishes to him with a traceparent.
  const bob = await token("bob");
  const stream = new AbortController();
  const sse = await fetch(`${base}/v1/sse?token=${encodeURIComponent(bob)}`, { signal: stream.signal });
  assert.equal(sse.status, 200);
  const published = await fetch(`${base}/api/v1/publish`, {
    method: "POST",
    headers: {
      authorization: "Bearer " + apiKey,
      "content-type": "application/json",
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    },
    body: JSON.stringify({ to: ["bob"], data: "where is it?" }),
  });
  assert.equal(published.status, 200);
  const seq = (await published.json()).seqs.bob;
  const reader = sse.body.getReader();
  let text = "";
  while (!text.includes("where is it?")) text += new TextDecoder().decode((await reader.read()).value);

  await page.fill("#uid", "bob");
  await page.fill("#seq", String(seq));
  await page.click("#user-form button");
  await page.waitForSelector('#user-connections tr[data-transport="sse"]');
  await page.waitForFunction(() => (document.querySelector("#trace").dataset.steps || "").includes("written:sse"));
  const facts = await page.textContent("#user-facts");
  assert.match(facts, /seen as online/);
  assert.match(facts, /leases on [0-9a-f]+/, "the node that holds bob's lease");
  assert.match(facts, /head \d+/);
  assert.equal(await page.getAttribute("#recent button.shown", "class"), "shown");
  assert.match(await page.textContent("#trace"), /POST \/api\/v1\/publish/);
  assert.match(await page.textContent("#trace"), /trace 4bf92f35/);

  // Bob acks it: the open view shows it within a refresh, without a click.
  const acked = await fetch(`${base}/v1/ack`, {
    method: "POST",
    headers: { authorization: "Bearer " + bob, "content-type": "application/json" },
    body: JSON.stringify({ seq }),
  });
  assert.equal(acked.status, 200);
  await page.waitForFunction(() => document.querySelector("#trace").dataset.steps.endsWith("acked"));
  assert.equal(await page.locator("#trace circle").count(), 4);
  assert.match(await page.textContent("#trace-facts"), /acked yes/);
  await page.screenshot({ path: join(root, "target", "e2e", "dashboard-user.png"), fullPage: true });

  // An event that does not exist says so.
  await page.fill("#seq", String(seq + 100));
  await page.click("#user-form button");
  await page.waitForSelector("#trace-error:not([hidden])");
  assert.match(await page.textContent("#trace-error"), /has no event/);
  stream.abort();
  await page.close();
});
