// The demo through Debian's nginx with docs/deploy/nginx.conf, on all five
// transports; then through misconfigured ones, which herald.js notices and
// works around: a read timeout shorter than the long-poll hold (it holds
// less), and buffering left on for streams (it falls back to long-polls).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { demoToken, freePort, launchBrowser, openAs, openChatWith, root, startDemoServer } from "./support.mjs";

const shots = join(root, "target", "e2e");
let herald, heraldPort, browser;
const proxies = [];

before(async () => {
  heraldPort = await freePort();
  const dataDir = join(mkdtempSync(join(tmpdir(), "herald-e2e-")), "data");
  // Every connection comes from nginx's address: no per-address cap.
  ({ child: herald } = await startDemoServer(heraldPort, dataDir, ["--max-conns-per-ip", "0"]));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  for (const nginx of proxies) nginx.kill("SIGKILL");
  herald?.kill("SIGKILL");
});

/**
 * Starts nginx with docs/deploy/nginx.conf pointed at herald, changed by
 * `edit` (a misconfiguration); resolves with its base URL once it listens.
 */
async function startNginx(edit = (conf) => conf) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "herald-nginx-"));
  let conf = readFileSync(join(root, "docs", "deploy", "nginx.conf"), "utf8");
  for (const [from, to] of [["server 127.0.0.1:8080;", `server 127.0.0.1:${heraldPort};`], ["listen 80;", `listen 127.0.0.1:${port};`]]) {
    assert.ok(conf.includes(from), `docs/deploy/nginx.conf has "${from}"`);
    conf = conf.replace(from, to);
  }
  writeFileSync(join(dir, "herald.conf"), edit(conf));
  for (const temp of ["body", "proxy"]) mkdirSync(join(dir, temp));
  writeFileSync(join(dir, "nginx.conf"), `
    worker_processes 1;
    daemon off;
    master_process off;
    error_log stderr error;
    pid ${dir}/nginx.pid;
    events { worker_connections 1024; }
    http {
      access_log off;
      client_body_temp_path ${dir}/body;
      proxy_temp_path ${dir}/proxy;
      include ${dir}/herald.conf;
    }`);
  const nginx = spawn("nginx", ["-p", dir, "-c", join(dir, "nginx.conf")], { stdio: ["ignore", "inherit", "inherit"] });
  proxies.push(nginx);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try { await fetch(base + "/healthz"); return base; } catch { await new Promise((r) => setTimeout(r, 100)); }
  }
  throw new Error("nginx did not start");
}

const token = demoToken;

async function sendDirect(base, from, to, body) {
  const r = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: { authorization: "Bearer " + (await token(base, from)), "content-type": "application/json" },
    body: JSON.stringify({ to, body }),
  });
  assert.equal(r.status, 200);
}

test("the demo works through nginx with docs/deploy/nginx.conf on all five transports", async () => {
  const base = await startNginx();
  for (const transport of ["ws", "sse", "iframe", "longpoll", "poll"]) {
    const page = await openAs(browser, base, "carol", transport);
    await openChatWith(page, "dave");
    // Events come as they are written, not when a proxy buffer fills.
    for (const n of [1, 2]) {
      const text = `through nginx over ${transport} #${n} ${Date.now()}`;
      await sendDirect(base, "dave", "carol", text);
      await page.waitForSelector(`#messages li >> text=${text}`, { timeout: 10000 });
    }
    assert.match(await page.textContent("#conn"), new RegExp(`carol · ${transport} · open`));
    if (transport === "sse") await page.screenshot({ path: join(shots, "through-nginx.png") });
    await page.close();
  }
});

test("a proxy read timeout shorter than the long-poll hold: herald.js holds less and delivers", async () => {
  // The common mistake: nginx's default 60 s read timeout, here 3 s, under a 25 s hold.
  const base = await startNginx((conf) => conf.replace("proxy_read_timeout 130s;", "proxy_read_timeout 3s;"));
  const page = await browser.newPage();
  const holds = [];
  page.on("request", (r) => {
    const url = new URL(r.url());
    if (url.pathname === "/v1/longpoll") holds.push(Number(url.searchParams.get("timeout")));
  });
  await page.goto(base + "/herald.js");
  const t = await token(base, "erin");
  await page.evaluate(async (t) => {
    const { Herald } = await import("/herald.js");
    window.log = [];
    window.herald = new Herald({ token: t, transport: "longpoll" }).on("*", (e) => window.log.push(e)).start();
  }, t);
  // Two cuts at about 3 s, then a hold that fits under it.
  await page.waitForFunction(() => window.log.some((e) => e.state === "adapting"), null, { timeout: 20000 });
  const adapted = await page.evaluate(() => window.log.find((e) => e.state === "adapting"));
  assert.ok(adapted.hold >= 1 && adapted.hold < 3, JSON.stringify(adapted));
  assert.ok(adapted.cutAfter >= 2.5 && adapted.cutAfter < 5, JSON.stringify(adapted));
  // Held long-polls now end before the proxy cuts them, and events still come.
  const before = holds.length;
  await new Promise((r) => setTimeout(r, 4000));
  const text = `after adapting ${Date.now()}`;
  await sendDirect(base, "dave", "erin", text);
  await page.waitForFunction((text) => window.log.some((e) => e.type === "msg" && e.data.body === text), text, { timeout: 10000 });
  assert.deepEqual([...new Set(holds.slice(before))], [adapted.hold]);
  const retrying = await page.evaluate(() => window.log.filter((e) => e.state === "retrying").length);
  assert.equal(retrying, 0, "a cut is not a failure to back off from");
  await page.close();
});

test("a proxy that buffers streams: herald.js falls back from SSE and the iframe to long-polls", async () => {
  // Buffering on with herald's X-Accel-Buffering: no ignored, and gzip on
  // for event streams and HTML: nginx then holds a stream's headers and
  // bytes until a compression block fills (with buffering off, or without
  // gzip, this nginx passes the stream through at once).
  const base = await startNginx((conf) => conf.replace("proxy_buffering off;",
    "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; gzip on; gzip_proxied any; gzip_types text/event-stream;"));
  for (const transport of ["sse", "iframe"]) {
    const page = await browser.newPage();
    await page.goto(base + "/herald.js");
    const uid = "buffered-" + transport;
    const t = await token(base, uid);
    await page.evaluate(async ({ t, transport }) => {
      const { Herald } = await import("/herald.js");
      window.log = [];
      window.herald = new Herald({ token: t, transport }).on("*", (e) => window.log.push(e)).start();
    }, { t, transport });
    await page.waitForFunction(() => window.log.some((e) => e.state === "fallback"), null, { timeout: 15000 });
    const fallback = await page.evaluate(() => window.log.find((e) => e.state === "fallback"));
    assert.equal(fallback.transport, "longpoll", JSON.stringify(fallback));
    assert.match(fallback.error, new RegExp(`^${transport}: nothing came through`));
    const text = `past the buffer ${transport} ${Date.now()}`;
    await sendDirect(base, "dave", uid, text);
    await page.waitForFunction((text) => window.log.some((e) => e.type === "msg" && e.data.body === text), text, { timeout: 10000 });
    assert.equal(await page.evaluate(() => window.herald.stats.transport), "longpoll");
    await page.close();
  }
});
