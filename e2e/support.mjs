// What the browser tests share: free ports, Debian's chromium, and the demo
// page driven as a person would.
import net from "node:net";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const binary = join(root, "target", "debug", "herald");

/**
 * Starts herald in demo mode on `port` with `dataDir` (and `args`);
 * resolves with the child process once it listens, the generated API key,
 * and the URL it listens on (https:// with TLS).
 */
export function startDemoServer(port, dataDir, args = []) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, HERALD_LOG: "warn" };
    delete env.HERALD_SECRET; // demo mode
    delete env.HERALD_API_KEY;
    const child = spawn(binary, ["--listen", `127.0.0.1:${port}`, "--data", dataDir, ...args], {
      env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    let apiKey;
    child.stdout.on("data", (d) => {
      out += d;
      const key = out.match(/generated API key (\S+)/);
      if (key) apiKey = key[1];
      const listening = out.match(/listening on (\S+)/);
      if (listening) resolve({ child, apiKey, url: listening[1] });
    });
    child.on("exit", (code) => reject(new Error(`herald exited with ${code}: ${out}`)));
  });
}

/** A token for `uid` from the demo login of the server at `base`. */
export async function demoToken(base, uid) {
  const r = await fetch(`${base}/v1/demo/login`, { method: "POST", body: JSON.stringify({ uid }) });
  return (await r.json()).token;
}

/** Publishes `data` to `uid` with the API key; resolves with its seq. */
export async function publishTo(base, apiKey, uid, data) {
  const r = await fetch(`${base}/api/v1/publish`, {
    method: "POST",
    headers: { authorization: "Bearer " + apiKey, "content-type": "application/json" },
    body: JSON.stringify({ to: [uid], data }),
  });
  if (r.status !== 200) throw new Error(`publish to ${uid}: ${r.status} ${await r.text()}`);
  return (await r.json()).seqs[uid];
}

/**
 * A demo-mode herald (started with `args`) and a browser for one test
 * file: call in `before`; `stop()` in `after`.
 */
export async function startDemo(args = [], browserOptions = {}) {
  const port = await freePort();
  const dataDir = join(mkdtempSync(join(tmpdir(), "herald-e2e-")), "data");
  const { child, apiKey, url } = await startDemoServer(port, dataDir, args);
  const browser = await launchBrowser(browserOptions);
  return {
    base: url,
    apiKey,
    browser,
    async stop() {
      await browser.close();
      child.kill("SIGKILL");
    },
  };
}

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** Debian's chromium, headless (no browser is downloaded); QUIC only
 *  with `quic: true` (WebTransport needs it). */
export function launchBrowser({ quic = false } = {}) {
  return chromium.launch({
    executablePath: "/usr/lib/chromium/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", ...(quic ? [] : ["--disable-quic"]), "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Opens the demo page at `base` logged in as `uid` on `transport`
 *  (`browser`: a browser, or a context of one). */
export async function openAs(browser, base, uid, transport, setup) {
  const page = await browser.newPage();
  page.on("dialog", (d) => { page.sawDialog = d.message(); d.dismiss(); });
  if (setup) await setup(page);
  await page.goto(base + "/", { waitUntil: "domcontentloaded" });
  await page.selectOption("#uid", uid);
  await page.selectOption("#transport", transport);
  await page.click("#go");
  await page.waitForFunction(() => /· open$/.test(document.getElementById("conn").textContent), null, { timeout: 15000 });
  if (await page.isVisible("#news")) await page.click("#news button");
  return page;
}

export async function openChatWith(page, friend) {
  await page.click(`[data-friend="${friend}"]`);
  await page.waitForFunction((f) => document.getElementById("chat-title").textContent === f, friend);
}
