// What the browser tests share: free ports, Debian's chromium, and the demo
// page driven as a person would.
import net from "node:net";
import { chromium } from "playwright-core";

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

/** Debian's chromium, headless (no browser is downloaded). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/lib/chromium/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Opens the demo page at `base` logged in as `uid` on `transport`. */
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
