// herald.js: the browser client of herald. A dependency-free ES module.
//
//   import { Herald } from "/herald.js";
//   const h = new Herald({ token, getToken, transport: "auto" });
//   h.on("msg", (event) => ...);
//   h.start();
//
// Every transport reads "events after my cursor"; the cursor survives
// reconnects and page reloads (sessionStorage), so nothing is lost and
// nothing is seen twice. See the README section "Integrating a web chat
// frontend".

const STREAM_TYPES = ["notice", "msg", "group_msg", "presence", "receipt", "group_receipt",
  "counter", "broadcast", "gap", "hb", "hello"];
const TRANSPORTS = ["ws", "sse", "iframe", "longpoll", "poll"];
let iframeCallbacks = 0;

export class Herald {
  /**
   * @param {object} o
   * @param {string} [o.url] server origin (default: this page's)
   * @param {string} o.token client token
   * @param {() => Promise<string>} [o.getToken] called again on 401
   * @param {"ws"|"sse"|"iframe"|"longpoll"|"poll"|"auto"} [o.transport]
   * @param {string} [o.storageKey] where the cursor is kept (sessionStorage)
   * @param {number} [o.pollInterval] short-poll interval, ms
   * @param {string[]} [o.types] extra event types to receive over SSE
   */
  constructor(o) {
    this.url = (o.url || location.origin).replace(/\/$/, "");
    this.token = o.token;
    this.getToken = o.getToken;
    this.wanted = o.transport || "auto";
    this.storageKey = o.storageKey || "herald:cursor";
    this.pollInterval = o.pollInterval || 1000;
    this.types = STREAM_TYPES.concat(o.types || []);
    this.handlers = new Map();
    this.cursor = Number(sessionStorage.getItem(this.storageKey) || 0);
    // The history the cursor belongs to; a server whose queue was recreated
    // answers a stale one with a gap (see resync).
    this.epoch = sessionStorage.getItem(this.storageKey + ":epoch") || "";
    this.seenMsgids = new Set();
    this.running = false;
    this.attempt = 0;
    this.pendingAck = 0;
    this.groupReads = new Map();
    this.stats = { transport: null, requests: 0, usefulRequests: 0, bytes: 0, delivered: 0, latencies: [] };
  }

  /** Calls fn(event) for events of `type` ("*" for all). */
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
    return this;
  }

  start() {
    this.running = true;
    this.order = this.wanted === "auto" ? TRANSPORTS.slice(0, 4) : [this.wanted];
    this.ackTimer = setInterval(() => this.flushAcks(), 1000);
    this.connect();
    return this;
  }

  stop() {
    this.running = false;
    clearInterval(this.ackTimer);
    this.flushAcks();
    this.teardown();
  }

  // ---- delivery -------------------------------------------------------

  deliver(event, bytes) {
    this.stats.bytes += bytes || 0;
    if (event.type === "hb") { this.emit(event); return; }
    if (event.type === "hello" || event.type === "reconnect") { this.setEpoch(event.epoch); return; }
    if (event.type === "gap" && event.data && event.data.epoch) {
      // The queue was recreated: its history starts again at seq 1.
      this.cursor = 0;
      sessionStorage.setItem(this.storageKey, "0");
      this.setEpoch(event.data.epoch);
      this.emit(event);
      return;
    }
    if (typeof event.seq !== "number" || event.seq <= this.cursor) return; // seen already
    this.cursor = event.seq;
    sessionStorage.setItem(this.storageKey, String(this.cursor));
    this.pendingAck = this.cursor;
    this.stats.delivered += 1;
    if (event.ts) this.stats.latencies.push(Date.now() - event.ts);
    if (event.type === "group_msg") {
      const key = event.data.gid + ":" + event.data.msgid;
      if (this.seenMsgids.has(key)) return; // the same message again (another device's resend)
      this.seenMsgids.add(key);
    }
    this.emit(event);
  }

  setEpoch(epoch) {
    if (!epoch || epoch === this.epoch) return;
    this.epoch = epoch;
    sessionStorage.setItem(this.storageKey + ":epoch", epoch);
  }

  /** `cursor=N&epoch=E`: where to resume, in which history. */
  position() {
    return `cursor=${this.cursor}` + (this.epoch ? `&epoch=${encodeURIComponent(this.epoch)}` : "");
  }

  emit(event) {
    for (const fn of this.handlers.get(event.type) || []) fn(event);
    for (const fn of this.handlers.get("*") || []) fn(event);
  }

  // ---- connection management -----------------------------------------

  connect() {
    if (!this.running) return;
    const transport = this.order[0];
    this.stats.transport = transport;
    this.emit({ type: "status", transport, state: "connecting" });
    this["open_" + transport]();
  }

  /** The transport failed: back off (exponential, with jitter), maybe fall back. */
  failed(error, { opened = false } = {}) {
    this.teardown();
    if (!this.running) return;
    if (!opened && this.wanted === "auto" && this.order.length > 1) {
      this.order.shift(); // e.g. a proxy that blocks WebSocket
      this.emit({ type: "status", transport: this.order[0], state: "fallback", error: String(error) });
      this.connect();
      return;
    }
    this.attempt = opened ? 0 : this.attempt + 1;
    const delay = Math.min(30000, 250 * 2 ** Math.min(this.attempt, 7)) * (0.5 + Math.random() / 2);
    this.emit({ type: "status", transport: this.order[0], state: "retrying", delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  opened() {
    this.attempt = 0;
    this.emit({ type: "status", transport: this.order[0], state: "open" });
  }

  teardown() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.pollTimer);
    if (this.abort) this.abort.abort();
    if (this.ws) { this.ws.onclose = this.ws.onerror = null; this.ws.close(); this.ws = null; }
    if (this.es) { this.es.close(); this.es = null; }
    if (this.iframe) { this.iframe.remove(); this.iframe = null; }
  }

  async renewToken() {
    if (!this.getToken) return false;
    try { this.token = await this.getToken(); return true; } catch { return false; }
  }

  // ---- transports -----------------------------------------------------

  async open_poll() { this.pollLoop("poll"); }
  async open_longpoll() { this.pollLoop("longpoll"); }

  async pollLoop(kind) {
    this.abort = new AbortController();
    const signal = this.abort.signal;
    let opened = false;
    while (this.running && !signal.aborted) {
      const q = kind === "longpoll" ? "&timeout=25" : "";
      let response;
      try {
        this.stats.requests += 1;
        response = await fetch(`${this.url}/v1/${kind}?${this.position()}${q}`,
          { headers: { authorization: "Bearer " + this.token }, signal });
      } catch (e) {
        if (!signal.aborted) this.failed(e, { opened });
        return;
      }
      if (response.status === 401 && (await this.renewToken())) continue;
      if (response.status === 409) { this.resetCursor(); continue; }
      if (!response.ok) { this.failed(new Error("HTTP " + response.status), { opened }); return; }
      if (!opened) { opened = true; this.opened(); }
      const text = await response.text();
      const body = JSON.parse(text);
      if (body.events.length) this.stats.usefulRequests += 1;
      this.stats.bytes += text.length;
      for (const event of body.events) this.deliver(event, 0);
      this.setEpoch(body.epoch);
      if (body.hints) this.emit({ type: "hb", hints: body.hints });
      if (kind === "poll" && !body.events.length) {
        await new Promise((resolve) => { this.pollTimer = setTimeout(resolve, this.pollInterval); });
      }
    }
  }

  /** The server does not know our cursor (e.g. a new data directory). */
  resetCursor() {
    this.cursor = 0;
    sessionStorage.setItem(this.storageKey, "0");
    this.epoch = "";
    sessionStorage.removeItem(this.storageKey + ":epoch");
    this.emit({ type: "gap", data: { reset: true } });
  }

  open_sse() {
    this.stats.requests += 1;
    // Its event ids are `seq:epoch`, sent back as Last-Event-ID on reconnects.
    const es = new EventSource(`${this.url}/v1/sse?${this.position()}&token=${encodeURIComponent(this.token)}`);
    this.es = es;
    let opened = false;
    es.onopen = () => { opened = true; this.opened(); };
    const handle = (e) => this.deliver(JSON.parse(e.data), e.data.length);
    for (const type of this.types) es.addEventListener(type, handle);
    es.onerror = async () => {
      if (es.readyState !== EventSource.CLOSED) return; // it reconnects by itself with Last-Event-ID
      if (await this.renewToken()) { this.teardown(); this.connect(); return; }
      this.failed(new Error("EventSource closed"), { opened });
    };
  }

  open_iframe() {
    this.stats.requests += 1;
    const name = "__herald" + (++iframeCallbacks);
    const frame = document.createElement("iframe");
    frame.style.display = "none";
    let opened = false;
    window[name] = (event) => {
      if (!opened) { opened = true; this.opened(); }
      this.deliver(event, JSON.stringify(event).length);
      if (event.type === "reconnect") { this.teardown(); this.connect(); }
    };
    // The document ends (load) when the server closes it: reopen from the cursor.
    frame.onload = () => { if (this.iframe === frame) this.failed(new Error("iframe ended"), { opened }); };
    frame.src = `${this.url}/v1/iframe?${this.position()}&cb=${name}&token=${encodeURIComponent(this.token)}`;
    this.iframe = frame;
    document.body.appendChild(frame);
  }

  open_ws() {
    this.stats.requests += 1;
    const url = this.url.replace(/^http/, "ws");
    const ws = new WebSocket(`${url}/v1/ws?${this.position()}&token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    this.replies = new Map();
    let opened = false;
    ws.onopen = () => { opened = true; this.opened(); };
    ws.onmessage = (e) => {
      const frame = JSON.parse(e.data);
      if (frame.op === "reply") {
        const pending = this.replies.get(frame.id);
        if (pending) { this.replies.delete(frame.id); pending(frame); }
        return;
      }
      this.deliver(frame, e.data.length);
    };
    ws.onerror = () => {};
    ws.onclose = async (e) => {
      if (!opened && e.code === 1006 && (await this.renewToken()) && this.attempt === 0) {
        this.attempt = 1; this.teardown(); this.connect(); return;
      }
      this.failed(new Error("WebSocket closed " + e.code), { opened });
    };
  }

  // ---- acks -------------------------------------------------------------

  /** Acks are batched: at most one per second, covering everything seen. */
  flushAcks() {
    const seq = this.pendingAck;
    if (!seq) return;
    this.pendingAck = 0;
    const transport = this.stats.transport;
    if (transport === "poll" || transport === "longpoll") return; // the next request's cursor acks
    if (transport === "ws" && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ op: "ack", seq }));
    } else {
      // Retried with the next flush unless refused (a 4xx changes nothing and would be refused again).
      this.call("POST", "/v1/ack", { seq }).catch((e) => { if (!(e.status < 500)) this.pendingAck ||= seq; });
    }
    for (const [gid, msgid] of this.groupReads) {
      this.call("POST", `/v1/groups/${encodeURIComponent(gid)}/read`, { msgid }).catch(() => {});
    }
    this.groupReads.clear();
  }

  // ---- actions (promise-returning) -------------------------------------

  /** One HTTP action. A 401 renews the token and retries once; a 429 (the
   *  send limit) waits its Retry-After (at most 10 s) and retries once:
   *  sends carry a cid, so a retry never sends twice. */
  async call(method, path, body) {
    let renewed = false;
    let waited = false;
    for (;;) {
      const response = await fetch(this.url + path, {
        method,
        headers: { authorization: "Bearer " + this.token, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && !renewed) {
        renewed = true;
        if (await this.renewToken()) continue;
      }
      if (response.status === 429 && !waited) {
        waited = true;
        const seconds = Math.min(Number(response.headers.get("retry-after")) || 1, 10);
        await new Promise((r) => setTimeout(r, seconds * 1000));
        continue;
      }
      if (response.status === 204) return null;
      const json = await response.json();
      if (!response.ok) throw Object.assign(new Error(json.message || response.status), { code: json.error, status: response.status });
      return json;
    }
  }

  send(to, body, cid = newCid()) { return this.call("POST", "/v1/messages", { to, body, cid }); }
  markRead(id) { return this.call("POST", `/v1/messages/${id}/read`); }
  groupSend(gid, body, cid = newCid()) { return this.call("POST", `/v1/groups/${encodeURIComponent(gid)}/messages`, { body, cid }); }
  /** Batched: sent with the next ack flush (at most once a second). */
  groupRead(gid, msgid) { this.groupReads.set(gid, Math.max(msgid, this.groupReads.get(gid) || 0)); }
  groupHistory(gid, after = 0) { return this.call("GET", `/v1/groups/${encodeURIComponent(gid)}/messages?after=${after}`); }
  groupReceipts(gid, msgids) { return this.call("GET", `/v1/groups/${encodeURIComponent(gid)}/receipts?msgids=${msgids.join(",")}`); }
  groupPresence(gid) { return this.call("GET", `/v1/groups/${encodeURIComponent(gid)}/presence`); }
  friendsPresence() { return this.call("GET", "/v1/friends/presence"); }
  setStatus(status) { return this.call("PUT", "/v1/status", { status }); }
  counters() { return this.call("GET", "/v1/counters"); }
  news() { return this.call("GET", "/v1/news"); }
  broadcasts(after = 0) { return this.call("GET", `/v1/broadcasts?after=${after}`); }

  /** Delivery latency percentiles (ms) and requests per delivered event. */
  summary() {
    const sorted = [...this.stats.latencies].sort((a, b) => a - b);
    const pct = (p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null;
    const s = this.stats;
    return {
      transport: s.transport, delivered: s.delivered, requests: s.requests, bytes: s.bytes,
      p50: pct(0.5), p95: pct(0.95),
      requestsPerEvent: s.delivered ? s.requests / s.delivered : null,
      usefulRatio: s.requests ? (s.transport === "poll" || s.transport === "longpoll" ? s.usefulRequests / s.requests : 1) : null,
    };
  }
}

function newCid() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)).slice(0, 36);
}
