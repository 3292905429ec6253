// One connection per browser, not per tab: the tabs of one user in one
// browser (a browser context here) share the connection one of them
// holds, in Debian's chromium against the real server. Every tab sees
// every event published while it was open, once, in order; a closed leader
// is replaced within a second from the shared cursor; 8 tabs on SSE all
// work (each its own EventSource would stall the 7th at the browser's 6
// connections per host); two users, or `share: false`, do not share.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { demoToken, publishTo, startDemo } from "./support.mjs";

let demo, base, apiKey, browser;

before(async () => {
  demo = await startDemo(["--heartbeat-ms", "2000"]);
  ({ base, apiKey, browser } = demo);
});

after(() => demo?.stop());

const publish = (uid, data) => publishTo(base, apiKey, uid, data);

/** The value of a metric line of `/metrics` (0 if absent). */
async function metric(line) {
  const text = await (await fetch(`${base}/metrics`, { headers: { authorization: "Bearer " + apiKey } })).text();
  const found = text.split("\n").find((l) => l.startsWith(line + " "));
  return found ? Number(found.split(" ").pop()) : 0;
}

async function eventually(check, what, within = 10000) {
  const until = Date.now() + within;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) assert.fail(`${what}: not within ${within} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A tab of `context` running herald.js for `uid` on `transport`; every
 *  event it emits is kept in `window.log`, with when it became leader. */
async function tab(context, uid, transport, options = {}) {
  const page = await context.newPage();
  await page.goto(base + "/herald.js");
  const token = await demoToken(base, uid);
  await page.evaluate(async ({ token, transport, options }) => {
    const { Herald } = await import("/herald.js");
    window.log = [];
    window.herald = new Herald({ token, transport, heartbeatMs: 2000, ...options });
    window.herald.on("*", (e) => window.log.push(e));
    const lead = window.herald.lead.bind(window.herald);
    window.herald.lead = () => { window.ledAt = Date.now(); lead(); };
    window.herald.start();
  }, { token, transport, options });
  page.openedAt = Date.now();
  return page;
}

const seqsOf = (page) => page.evaluate(() => window.log.filter((e) => e.type === "notice").map((e) => e.seq));
const roles = (pages) => Promise.all(pages.map((p) => p.evaluate(() => window.herald.role)));

/** Asserts that `seqs` are strictly increasing and hold every one of `expected`. */
function assertOnceInOrder(seqs, expected, what) {
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${what}: ${seqs[i]} after ${seqs[i - 1]}`);
  const got = new Set(seqs);
  const missing = expected.filter((s) => !got.has(s));
  assert.deepEqual(missing, [], `${what}: missing`);
}

for (const transport of ["sse", "longpoll", "ws"]) {
  test(`${transport}: 5 tabs share one connection; tabs that open and close see every event of their time once, in order`, async () => {
    const uid = "tabs-" + transport;
    const context = await browser.newContext();
    const open = [];
    for (let i = 0; i < 5; i++) open.push(await tab(context, uid, transport));
    await eventually(async () => (await roles(open)).filter((r) => r === "leader").length === 1, "one leader");
    assert.equal((await roles(open)).filter((r) => r === "follower").length, 4);
    const held = transport === "longpoll" ? "herald_longpolls_held" : `herald_connections{kind="${transport}"}`;
    await eventually(async () => (await metric(held)) === 1, `${held} = 1`);

    // 200 events; a tab closes after 50 (the leader: a handoff), one opens
    // after 100, another closes after 150.
    const published = []; // [seq, sentAt, answeredAt]
    const closed = [];
    const closeTab = async (page) => {
      closed.push({ page, seqs: await seqsOf(page), closedAt: Date.now() });
      open.splice(open.indexOf(page), 1);
      await page.close();
    };
    for (let n = 1; n <= 200; n++) {
      const sentAt = Date.now();
      const seq = await publish(uid, { n });
      published.push([seq, sentAt, Date.now()]);
      if (n === 50) await closeTab(open[(await roles(open)).indexOf("leader")]);
      if (n === 100) open.push(await tab(context, uid, transport));
      if (n === 150) await closeTab(open[1]);
      await new Promise((r) => setTimeout(r, 5));
    }
    const last = published[published.length - 1][0];
    for (const page of open) {
      await page.waitForFunction((last) => window.log.some((e) => e.seq === last), last, { timeout: 15000 });
    }
    const during = (from, to) => published.filter(([, sent, answered]) => sent >= from && answered <= to).map(([s]) => s);
    for (const [i, page] of open.entries()) {
      assertOnceInOrder(await seqsOf(page), during(page.openedAt, Date.now()), `open tab ${i}`);
    }
    for (const [i, { page, seqs, closedAt }] of closed.entries()) {
      // A tab sees what was published while it was open, up to what had
      // reached it when it closed (at most a leader's delivery later).
      const upTo = seqs.length ? seqs[seqs.length - 1] : 0;
      assertOnceInOrder(seqs, during(page.openedAt, closedAt).filter((s) => s <= upTo), `closed tab ${i}`);
      const due = during(page.openedAt, closedAt - 2000).pop() ?? 0;
      assert.ok(upTo >= due, `closed tab ${i} had ${upTo}, not ${due}`);
    }
    assert.equal((await roles(open)).filter((r) => r === "leader").length, 1, "one leader after the handoffs");
    await context.close();
  });
}

test("the leader closed during a steady stream: another leads within 1 s, from the cursor", async (t) => {
  const uid = "handoff";
  const context = await browser.newContext();
  const tabs = [];
  for (let i = 0; i < 3; i++) tabs.push(await tab(context, uid, "sse"));
  await eventually(async () => (await roles(tabs)).includes("leader"), "a leader");
  const delivered = () => metric('herald_delivered_events_total{kind="sse"}');
  const before = await delivered();
  let stop = false;
  let count = 0;
  const stream = (async () => {
    while (!stop) {
      await publish(uid, { n: ++count });
      await new Promise((r) => setTimeout(r, 50)); // 20/s
    }
  })();
  await new Promise((r) => setTimeout(r, 1000));
  const leader = tabs[(await roles(tabs)).indexOf("leader")];
  const closedAt = Date.now();
  await leader.close();
  tabs.splice(tabs.indexOf(leader), 1);
  await eventually(async () => (await roles(tabs)).includes("leader"), "a new leader", 5000);
  const next = tabs[(await roles(tabs)).indexOf("leader")];
  const ledAt = await next.evaluate(() => window.ledAt);
  t.diagnostic(`the next tab led ${ledAt - closedAt} ms after the leader closed`);
  assert.ok(ledAt - closedAt < 1000, `led ${ledAt - closedAt} ms after the close`);
  await new Promise((r) => setTimeout(r, 1000));
  stop = true;
  await stream;
  for (const page of tabs) {
    await page.waitForFunction((n) => window.log.some((e) => e.data && e.data.n === n), count, { timeout: 10000 });
    const ns = await page.evaluate(() => window.log.filter((e) => e.type === "notice").map((e) => e.data.n));
    assert.deepEqual(ns, Array.from({ length: count }, (_, i) => i + 1), "every event once, in order");
  }
  // The new leader went on from the shared cursor: the server sent each
  // event about once (a restart from 0 would send them all again).
  const sent = (await delivered()) - before;
  t.diagnostic(`${sent} events sent by the server for ${count} published`);
  assert.ok(sent <= count + 25, `${sent} events sent by the server for ${count} published`);
  await context.close();
});

/** Waits until the streams of the tests before have ended (each ends
 *  when the server next writes to it: a heartbeat, every 2 s). */
const noStreamLeft = () => eventually(async () => (await metric('herald_connections{kind="sse"}')) === 0, "no SSE stream left");

test("8 tabs on SSE: each receives live events and each can send, within 2 s", async () => {
  await noStreamLeft();
  const context = await browser.newContext();
  const tabs = [];
  for (let i = 0; i < 8; i++) tabs.push(await tab(context, "eight", "sse"));
  const peer = await tab(await browser.newContext(), "eight-peer", "ws");
  await eventually(async () => (await roles(tabs)).includes("leader"), "a leader");
  const seq = await publish("eight", { n: "live" });
  const sentAt = Date.now();
  await Promise.all(tabs.map((p) => p.waitForFunction((s) => window.log.some((e) => e.seq === s), seq, { timeout: 2000 })));
  assert.ok(Date.now() - sentAt < 2000);
  await Promise.all(tabs.map((p, i) => p.evaluate((i) => window.herald.send("eight-peer", "from tab " + i), i)));
  await peer.waitForFunction(() => new Set(window.log.filter((e) => e.type === "msg").map((e) => e.data.body)).size === 8,
    null, { timeout: 2000 });
  assert.equal(await metric('herald_connections{kind="sse"}'), 1, "one SSE stream for 8 tabs");
  await context.close();
});

test("a follower's group read mark goes through the leader; a stopped follower leaves the others be", async () => {
  const context = await browser.newContext();
  // On long-poll: its leader sends read marks though it sends no acks.
  const tabs = [await tab(context, "reader", "longpoll"), await tab(context, "reader", "longpoll")];
  await eventually(async () => (await roles(tabs)).includes("leader"), "a leader");
  const follower = tabs[(await roles(tabs)).indexOf("follower")];
  const leader = tabs[(await roles(tabs)).indexOf("leader")];
  const members = await fetch(`${base}/api/v1/groups/readers/members`, {
    method: "PUT",
    headers: { authorization: "Bearer " + apiKey, "content-type": "application/json" },
    body: JSON.stringify({ members: ["reader", "writer"] }),
  });
  assert.equal(members.status, 200);
  const writer = await demoToken(base, "writer");
  const posted = await fetch(`${base}/v1/groups/readers/messages`, {
    method: "POST",
    headers: { authorization: "Bearer " + writer, "content-type": "application/json" },
    body: JSON.stringify({ body: "read me" }),
  });
  const { msgid } = await posted.json();
  await follower.evaluate((msgid) => window.herald.groupRead("readers", msgid), msgid);
  await eventually(async () => {
    const r = await fetch(`${base}/v1/groups/readers/receipts?msgids=${msgid}`, { headers: { authorization: "Bearer " + writer } });
    return (await r.json()).receipts[0].readers.includes("reader");
  }, "the read mark reached the server");
  await follower.evaluate(() => window.herald.stop());
  assert.equal(await follower.evaluate(() => window.herald.role), "follower");
  const seq = await publish("reader", { n: "after the stop" });
  await leader.waitForFunction((s) => window.log.some((e) => e.seq === s), seq, { timeout: 5000 });
  await context.close();
});

test("two users in one browser do not share; share: false opens one connection per tab", async () => {
  await noStreamLeft();
  const context = await browser.newContext();
  const a = await tab(context, "one-of-two", "sse");
  const b = await tab(context, "two-of-two", "sse");
  const c = await tab(context, "unshared", "sse", { share: false });
  const d = await tab(context, "unshared", "sse", { share: false });
  assert.deepEqual(await roles([a, b, c, d]).then((r) => r.slice(2)), ["alone", "alone"]);
  await eventually(async () => (await roles([a, b])).every((r) => r === "leader"), "each user leads");
  await eventually(async () => (await metric('herald_connections{kind="sse"}')) === 4, "4 streams");
  await context.close();
});
