// herald.js: the browser client of herald. A dependency-free ES module.
//
//   import { Herald } from "/herald.js";
//   const h = new Herald({ token, getToken, transport: "auto" });
//   h.on("msg", (event) => ...);
//   h.start();
//
// Every transport reads "events after my cursor"; the cursor survives
// reconnects and page reloads, so nothing is lost and nothing is seen
// twice. The tabs of one browser share ONE connection per user: one tab
// leads (a Web Lock) and hands every event to the others over a
// BroadcastChannel; when it closes another takes over from the shared
// cursor (localStorage). See docs/client.md.

const STREAM_TYPES = ["notice", "msg", "group_msg", "presence", "receipt", "group_receipt",
  "counter", "broadcast", "gap", "hb", "hello", "typing"];
/** A typing signal shows for this long unless renewed (the sender renews
 *  every TYPING_EVERY_MS while typing). */
const TYPING_SHOWN_MS = 5000;
const TYPING_EVERY_MS = 2000;
/** SSE and the iframe stream say `ready` at once; not seeing it this soon
 *  means something on the path buffers the stream. */
const READY_WITHIN_MS = 5000;
const TRANSPORTS = ["webtransport", "ws", "sse", "iframe", "longpoll", "poll"];
let iframeCallbacks = 0;

export class Herald {
  /**
   * @param {object} o
   * @param {string} [o.url] server origin (default: this page's)
   * @param {string} o.token client token
   * @param {() => Promise<string>} [o.getToken] called again on 401
   * @param {"webtransport"|"ws"|"sse"|"iframe"|"longpoll"|"poll"|"auto"} [o.transport]
   *   "auto" tries WebTransport first where the browser has it and the
   *   server serves it, then ws, sse, iframe and longpoll
   * @param {string} [o.storageKey] where the cursor is kept (localStorage
   *   when shared, else sessionStorage)
   * @param {boolean} [o.share] one connection for all tabs of this browser
   *   (default true where Web Locks and BroadcastChannel exist)
   * @param {string} [o.uid] the user, if the token does not say (its `sub`)
   * @param {number} [o.pollInterval] short-poll interval, ms
   * @param {number} [o.hold] long-poll hold, seconds (1-110, default 25)
   * @param {string[]} [o.types] extra event types to receive over SSE
   * @param {number} [o.heartbeatMs] the server's heartbeat interval until
   *   a stream announces it (default 15000): a transport silent for 2.5 of
   *   them is taken for dead and reopened from the cursor
   */
  constructor(o) {
    this.url = (o.url || location.origin).replace(/\/$/, "");
    this.token = o.token;
    this.getToken = o.getToken;
    this.wanted = o.transport || "auto";
    this.uid = o.uid || tokenSubject(o.token);
    // Tabs of one browser share a connection per server and user.
    this.share = o.share !== false && Boolean(this.uid) && typeof BroadcastChannel === "function"
      && typeof navigator !== "undefined" && Boolean(navigator.locks);
    this.shareName = `herald:${this.url}:${this.uid}`;
    this.storage = this.share ? localStorage : sessionStorage;
    this.storageKey = o.storageKey || (this.share ? this.shareName + ":cursor" : "herald:cursor");
    // "alone" (not shared), "follower" (another tab holds the connection), "leader".
    this.role = this.share ? "follower" : "alone";
    this.pollInterval = o.pollInterval || 1000;
    // Seconds a long-poll is held; shortened if the path cuts it (cutShort).
    this.hold = Math.min(110, Math.max(1, Math.round(o.hold || 25)));
    this.types = STREAM_TYPES.concat(o.types || []);
    this.heartbeatMs = o.heartbeatMs || 15000;
    this.lastHeard = Date.now();
    this.handlers = new Map();
    this.cursor = Number(this.storage.getItem(this.storageKey) || 0);
    // The history the cursor belongs to; a server whose queue was recreated
    // answers a stale one with a gap (see resync).
    this.epoch = this.storage.getItem(this.storageKey + ":epoch") || "";
    this.seenMsgids = new Set();
    this.running = false;
    this.attempt = 0;
    this.pendingAck = 0;
    this.groupReads = new Map();
    // Who is typing, by "from|to" or "from|gid": the timer that ends it.
    this.typers = new Map();
    // When this client last signalled each target.
    this.typingSent = new Map();
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
    this.order = this.wanted === "auto"
      ? TRANSPORTS.slice(0, 5).filter((t) => t !== "webtransport" || typeof WebTransport === "function")
      : [this.wanted];
    this.ackTimer = setInterval(() => this.flushAcks(), 1000);
    if (this.share) this.join();
    else this.lead();
    return this;
  }

  stop() {
    this.running = false;
    clearInterval(this.ackTimer);
    clearTimeout(this.watchdog);
    for (const timer of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    this.flushAcks();
    this.teardown();
    if (this.channel) { this.channel.close(); this.channel = null; }
    if (this.releaseLock) this.releaseLock(); // the next tab leads
    if (this.lockWait) this.lockWait.abort();
  }

  // ---- sharing one connection between tabs ---------------------------
  //
  // Every tab of one user asks for the same Web Lock; the tab that holds
  // it leads: it opens the transport, acks, and posts every event it
  // emits on a BroadcastChannel, where the other tabs (followers) emit it
  // too, de-duplicated by seq. A lock is released when its tab closes,
  // crashes or is discarded, and the next tab leads from the cursor the
  // leader kept in localStorage (saved after each event was posted, so a
  // new leader reads again at worst what followers already have).

  join() {
    this.channel = new BroadcastChannel(this.shareName);
    this.channel.onmessage = (m) => this.fromTabs(m.data);
    this.channel.postMessage({ t: "joined" });
    const released = new Promise((resolve) => { this.releaseLock = resolve; });
    // stop() also withdraws a request still waiting for the lock.
    this.lockWait = new AbortController();
    navigator.locks.request(this.shareName, { signal: this.lockWait.signal }, () => {
      if (!this.running) return undefined;
      this.lead();
      return released;
    }).catch(() => {});
  }

  /** This tab opens the connection (alone, or for every tab). */
  lead() {
    if (this.share) {
      this.role = "leader";
      // Resume from the furthest position any leader saved (this tab may
      // have seen further as a follower, in the same history).
      const saved = Number(this.storage.getItem(this.storageKey) || 0);
      const savedEpoch = this.storage.getItem(this.storageKey + ":epoch") || "";
      if (savedEpoch !== this.epoch && savedEpoch) { this.epoch = savedEpoch; this.cursor = saved; }
      else this.cursor = Math.max(this.cursor, saved);
      this.channel.postMessage({ t: "leader" });
    }
    this.connect();
    this.watch();
  }

  /** What another tab of this user posted. */
  fromTabs(m) {
    if (m.t === "joined" && this.role === "leader" && this.lastStatus) {
      this.channel.postMessage({ t: "event", event: this.lastStatus });
    } else if (m.t === "groupRead" && this.role === "leader") {
      this.groupRead(m.gid, m.msgid);
    } else if (m.t === "event" && this.role === "follower") {
      const event = m.event;
      if (typeof event.seq === "number" && event.type !== "gap") {
        if (event.seq <= this.cursor) return; // seen already (a handoff reads again)
        this.cursor = event.seq;
        this.stats.delivered += 1;
        if (event.ts) this.stats.latencies.push(Date.now() - event.ts);
      }
      if (event.type === "resync") this.cursor = event.cursor;
      if (event.type === "status") this.stats.transport = event.transport;
      // Each tab ends a typing indicator itself (its leader may be gone by then).
      if (event.type === "typing") { if (!event.stopped) this.typingSeen(event); return; }
      this.emit(event);
    }
  }

  /** Who holds the connection, and how many tabs of this user share it. */
  async sharing() {
    if (!this.share) return { role: this.role, tabs: 1 };
    const { held = [], pending = [] } = await navigator.locks.query();
    const tabs = [...held, ...pending].filter((l) => l.name === this.shareName).length;
    return { role: this.role, tabs: Math.max(1, tabs) };
  }

  // ---- delivery -------------------------------------------------------

  deliver(event, bytes) {
    this.heard(event);
    this.stats.bytes += bytes || 0;
    if (event.type === "hb") { this.keptReceipts(event.receipts); this.emit(event); return; }
    if (event.type === "typing") { this.typingSeen(event); return; }
    if (event.type === "hello" || event.type === "reconnect") { this.setEpoch(event.epoch); return; }
    if (event.type === "gap" && event.data && event.data.epoch) {
      // The queue was recreated: its history starts again at seq 1.
      this.emit(event);
      this.resync("epoch", 0, event.data.epoch);
      return;
    }
    if (typeof event.seq !== "number" || event.seq <= this.cursor) return; // seen already
    if (event.type === "gap") {
      // Events from..to expired before we read them; the queue goes on after them.
      this.emit(event);
      this.resync("gap", event.seq, undefined, { from: event.data.from, to: event.data.to });
      return;
    }
    this.cursor = event.seq;
    this.pendingAck = this.cursor;
    this.stats.delivered += 1;
    if (event.ts) this.stats.latencies.push(Date.now() - event.ts);
    const duplicate = event.type === "group_msg" && this.seenMsgids.has(event.data.gid + ":" + event.data.msgid);
    if (event.type === "group_msg") this.seenMsgids.add(event.data.gid + ":" + event.data.msgid);
    // Emitted (and handed to the other tabs) before the cursor is saved.
    if (!duplicate) this.emit(event); // a group message again is another device's resend
    this.storage.setItem(this.storageKey, String(this.cursor));
  }

  /** A typing signal: emitted at once, then again with `stopped: true`
   *  once no new one came for TYPING_SHOWN_MS. Not part of the queue: no
   *  seq, nothing acked, gone after a reconnect. */
  typingSeen(event) {
    const key = event.from + "|" + (event.gid !== undefined ? "g:" + event.gid : event.to);
    clearTimeout(this.typers.get(key));
    this.typers.set(key, setTimeout(() => {
      this.typers.delete(key);
      this.emit({ ...event, stopped: true });
    }, TYPING_SHOWN_MS));
    this.emit({ ...event, stopped: false });
  }

  /**
   * Group receipt totals that rode on a keepalive (a server run with
   * `--group-receipts keepalive`): `{gid: {msgid: {read, unread}}}`,
   * emitted as the `group_receipt` events a pushing server would send
   * (without a seq: they are not part of the queue).
   */
  keptReceipts(receipts) {
    for (const [gid, counts] of Object.entries(receipts || {})) {
      const all = Object.entries(counts).map(([msgid, c]) => ({ msgid: Number(msgid), read: c.read, unread: c.unread }))
        .sort((a, b) => a.msgid - b.msgid);
      const newest = all[all.length - 1];
      if (newest) this.emit({ type: "group_receipt", data: { gid, ...newest, receipts: all } });
    }
  }

  setEpoch(epoch) {
    if (!epoch || epoch === this.epoch) return;
    this.epoch = epoch;
    this.storage.setItem(this.storageKey + ":epoch", epoch);
  }

  /** `cursor=N&epoch=E`: where to resume, in which history. */
  position() {
    return `cursor=${this.cursor}` + (this.epoch ? `&epoch=${encodeURIComponent(this.epoch)}` : "");
  }

  emit(event) {
    if (this.role === "leader" && this.channel) {
      if (event.type === "status") this.lastStatus = event;
      this.channel.postMessage({ t: "event", event });
    }
    for (const fn of this.handlers.get(event.type) || []) fn(event);
    for (const fn of this.handlers.get("*") || []) fn(event);
  }

  // ---- the watchdog -----------------------------------------------------
  //
  // A connection can die without a word (sleep and wake, a Wi-Fi switch, a
  // NAT that forgot it): no close, no error, only silence, and a chat that
  // looks fine but shows nothing new. The server writes a heartbeat at
  // least every `heartbeat_ms` (its `ready` and `hello` say how often), so
  // an open transport that hears nothing for 2.5 of them (a long-poll: its
  // hold and as much again) is taken for dead and reopened from the cursor.

  /** Something came from the server; it may say the heartbeat interval. */
  heard(event) {
    this.lastHeard = Date.now();
    const every = event && event.heartbeat_ms;
    if (typeof every === "number" && every > 0) this.heartbeatMs = every;
  }

  /** How long the open transport may stay silent. */
  silenceAllowed() {
    const beats = 2.5 * this.heartbeatMs;
    if (this.stats.transport === "longpoll") return this.hold * 1000 + beats;
    if (this.stats.transport === "poll") return this.pollInterval + beats;
    return beats;
  }

  watch() {
    clearTimeout(this.watchdog);
    if (!this.running) return;
    const silent = Date.now() - this.lastHeard;
    if (this.live && silent > this.silenceAllowed()) {
      this.emit({ type: "status", transport: this.order[0], state: "stale", silentMs: silent });
      this.streamFailed(new Error(`nothing heard for ${silent} ms`), this.wasOpen);
    }
    this.watchdog = setTimeout(() => this.watch(), Math.max(100, Math.min(1000, this.heartbeatMs / 4)));
  }

  // ---- connection management -----------------------------------------
  //
  // Every failure goes through recover(): a refusal the server explains
  // (401, 409, 429, 503, ...) is handled for what it is, on every
  // transport, and anything else backs off exponentially with jitter. A
  // stream transport (ws, sse, iframe) cannot read the status of a
  // refused request, so when one fails before it opened, probe() asks the
  // server why with one plain HTTP request.

  connect() {
    if (!this.running) return;
    if (this.order[0] === "webtransport" && this.wanted === "auto" && !this.advertAsked) {
      // Tried only where the server serves it: asked once.
      this.advertAsked = true;
      this.webtransportAdvert().then((advert) => {
        if (advert === null) this.order.shift();
        this.connect();
      });
      return;
    }
    const transport = this.order[0];
    this.stats.transport = transport;
    this.live = true;
    this.wasOpen = false;
    this.heard();
    this.emit({ type: "status", transport, state: "connecting" });
    this["open_" + transport]();
  }

  /** A stream transport ended or was refused: learn why, then recover. */
  async streamFailed(error, opened) {
    this.teardown();
    if (!this.running) return;
    // An open stream that ends (a server restart, its lifetime) is simply reopened.
    const refusal = opened ? { status: -1 } : await this.probe();
    this.recover(refusal.status === 0 ? { ...refusal, error } : refusal, opened);
  }

  /**
   * Why a stream of this position and token would be refused: the status
   * (0 when the server cannot be reached, 200 when HTTP itself works) of a
   * plain SSE request, aborted as soon as its headers arrive.
   */
  async probe() {
    const control = new AbortController();
    const timer = setTimeout(() => control.abort(), 10000);
    try {
      const response = await fetch(`${this.url}/v1/sse?${this.position()}&token=${encodeURIComponent(this.token)}`,
        { headers: { accept: "text/event-stream" }, signal: control.signal, cache: "no-store" });
      return await refusalOf(response);
    } catch (e) {
      return { status: 0, error: e };
    } finally {
      clearTimeout(timer);
      control.abort();
    }
  }

  /**
   * Recovers from a failure. `refusal.status`: the HTTP status that
   * explains it (0: no answer; 200: HTTP works but this transport does
   * not; -1: an open stream ended). At most one getToken call per backoff
   * step, and only on 401; at most one resync per step.
   */
  async recover(refusal, opened) {
    this.teardown();
    if (!this.running) return;
    const { status } = refusal;
    if (opened) { this.attempt = 0; this.renewedAt = this.resyncedAt = -1; }
    const code = refusal.body && refusal.body.error;
    if (status === 409 && code === "cursor_ahead") {
      // The server never had our position: one resync, then read on from its head.
      const again = this.resyncedAt === this.attempt;
      this.resyncedAt = this.attempt;
      if (!again) {
        this.resync("cursor_ahead", refusal.body.head || 0, this.epoch);
        return this.retry(0, refusal);
      }
    } else if (status === 400 && (code === "bad_cursor" || code === "bad_epoch")) {
      this.resync(code, 0, "");
      return this.retry(0, refusal);
    } else if (status === 401) {
      if (this.renewedAt !== this.attempt && this.getToken) {
        this.renewedAt = this.attempt;
        if (await this.renewToken()) return this.retry(0, refusal);
      }
      this.emit({ type: "status", transport: this.order[0], state: "unauthorized" });
    } else if (status === 200 && !opened && this.wanted === "auto" && this.order.length > 1) {
      // HTTP works but this transport does not (e.g. a proxy that blocks WebSocket).
      this.order.shift();
      this.emit({ type: "status", transport: this.order[0], state: "fallback", error: String(refusal.error || "") });
      return this.retry(0, refusal);
    }
    this.attempt += 1;
    // Exponential with jitter, never sooner than the server's Retry-After.
    let delay = Math.min(30000, 250 * 2 ** Math.min(this.attempt, 7)) * (0.5 + Math.random() / 2);
    if (refusal.retryAfter) delay = Math.max(delay, refusal.retryAfter * 1000 * (1 + Math.random() / 5));
    this.retry(delay, refusal);
  }

  retry(delay, refusal) {
    if (!this.running) return;
    this.emit({ type: "status", transport: this.order[0], state: "retrying", delay, httpStatus: refusal.status });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * The app's view may be missing events (they expired, the queue was
   * recreated, or the server never had our position): reread from `cursor`
   * in history `epoch`, and tell the app once to refetch its state.
   */
  resync(reason, cursor, epoch, details = {}) {
    this.cursor = cursor;
    this.storage.setItem(this.storageKey, String(cursor));
    if (epoch !== undefined && epoch !== this.epoch) {
      this.epoch = epoch;
      if (epoch) this.storage.setItem(this.storageKey + ":epoch", epoch);
      else this.storage.removeItem(this.storageKey + ":epoch");
    }
    this.emit({ type: "resync", reason, cursor, ...details });
  }

  opened() {
    this.wasOpen = true;
    this.heard();
    this.attempt = 0;
    this.renewedAt = this.resyncedAt = -1;
    this.emit({ type: "status", transport: this.order[0], state: "open" });
  }

  /**
   * A stream (SSE, iframe) sent no `ready` in time: a proxy buffers it, so
   * events would arrive late or never. Use the next transport (long-poll
   * for a fixed one): its answers are complete responses, which a
   * buffering proxy passes on.
   */
  buffered(transport) {
    this.teardown();
    if (!this.running) return;
    if (this.wanted === "auto" && this.order.length > 1) this.order.shift();
    else this.order = ["longpoll"];
    this.emit({ type: "status", transport: this.order[0], state: "fallback",
      error: `${transport}: nothing came through in ${READY_WITHIN_MS / 1000} s; a proxy buffers it` });
    this.connect();
  }

  /** Falls back unless the stream shows its `ready` in time (see buffered). */
  expectReady(transport) {
    clearTimeout(this.readyTimer);
    this.readyTimer = setTimeout(() => this.buffered(transport), READY_WITHIN_MS);
  }

  teardown() {
    this.live = false;
    clearTimeout(this.readyTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.pollTimer);
    if (this.abort) this.abort.abort();
    if (this.ws) { this.ws.onclose = this.ws.onerror = null; this.ws.close(); this.ws = null; }
    if (this.wt) { const wt = this.wt; this.wt = this.wtWriter = null; try { wt.close(); } catch { /* closed already */ } }
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
      const hold = this.hold;
      const q = kind === "longpoll" ? `&timeout=${hold}` : "";
      const sent = Date.now();
      this.heard();
      let response;
      try {
        this.stats.requests += 1;
        response = await fetch(`${this.url}/v1/${kind}?${this.position()}${q}`,
          { headers: { authorization: "Bearer " + this.token }, signal });
      } catch (e) {
        if (signal.aborted) return;
        if (kind === "longpoll" && this.cutShort(sent, hold)) continue;
        this.recover({ status: 0, error: e }, opened);
        return;
      }
      if (!response.ok) {
        // A proxy's read timeout answers 504 (or 502) when it gives up on a held request.
        const proxyGaveUp = response.status === 504 || response.status === 502;
        if (kind === "longpoll" && proxyGaveUp && this.cutShort(sent, hold)) continue;
        this.recover(await refusalOf(response), opened);
        return;
      }
      if (!opened) { opened = true; this.opened(); }
      const text = await response.text();
      const body = JSON.parse(text);
      if (body.events.length) this.stats.usefulRequests += 1;
      this.stats.bytes += text.length;
      for (const event of body.events) this.deliver(event, 0);
      for (const signal of body.signals || []) this.deliver(signal, 0);
      this.keptReceipts(body.receipts);
      this.setEpoch(body.epoch);
      if (body.hints) this.emit({ type: "hb", hints: body.hints });
      if (kind === "poll" && !body.events.length) {
        await new Promise((resolve) => { this.pollTimer = setTimeout(resolve, this.pollInterval); });
      }
    }
  }

  /**
   * A held long-poll failed before its hold was up: something on the path
   * (a proxy's read timeout, a load balancer's idle timeout) may cut
   * requests shorter than the hold. Seen twice at about the same time, the
   * hold is shortened to fit under it (the server takes `timeout=` in
   * seconds); the request is retried at once. Returns whether it was
   * taken for such a cut.
   */
  cutShort(sent, hold) {
    const seconds = (Date.now() - sent) / 1000;
    if (seconds < 1 || seconds > hold - 0.5) return false;
    const again = this.cutAfter && Math.abs(seconds - this.cutAfter) <= this.cutAfter / 4;
    this.cutAfter = seconds;
    if (again) {
      this.hold = Math.max(1, Math.floor(seconds * 0.8));
      this.emit({ type: "status", transport: "longpoll", state: "adapting", hold: this.hold, cutAfter: seconds });
    }
    return true;
  }

  open_sse() {
    this.stats.requests += 1;
    // Its event ids are `seq:epoch`, sent back as Last-Event-ID on reconnects.
    const es = new EventSource(`${this.url}/v1/sse?${this.position()}&token=${encodeURIComponent(this.token)}`);
    this.es = es;
    let opened = false;
    es.onopen = () => { if (!opened) { opened = true; this.opened(); } };
    const handle = (e) => this.deliver(JSON.parse(e.data), e.data.length);
    for (const type of this.types) es.addEventListener(type, handle);
    es.addEventListener("ready", (e) => { clearTimeout(this.readyTimer); this.heard(JSON.parse(e.data)); });
    this.expectReady("sse");
    es.onerror = () => {
      if (es.readyState !== EventSource.CLOSED) return; // it reconnects by itself with Last-Event-ID
      // Refused (a reconnect of an open stream included): reopen from our cursor.
      this.streamFailed(new Error("EventSource refused"), false);
    };
  }

  open_iframe() {
    this.stats.requests += 1;
    const name = "__herald" + (++iframeCallbacks);
    const frame = document.createElement("iframe");
    frame.style.display = "none";
    let opened = false;
    window[name] = (event) => {
      // The first call is the document's `ready`.
      if (!opened) { opened = true; clearTimeout(this.readyTimer); this.opened(); }
      this.deliver(event, JSON.stringify(event).length);
      if (event.type === "reconnect") { this.teardown(); this.connect(); }
    };
    // The document ends (load) when the server closes it, or at once when
    // the request was refused: reopen from the cursor, or find out why.
    frame.onload = () => {
      if (this.iframe !== frame) return;
      delete window[name];
      this.streamFailed(new Error("iframe ended"), opened);
    };
    frame.src = `${this.url}/v1/iframe?${this.position()}&cb=${name}&token=${encodeURIComponent(this.token)}`;
    this.iframe = frame;
    document.body.appendChild(frame);
    this.expectReady("iframe");
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
      this.heard(frame);
      if (frame.op === "reply") {
        const pending = this.replies.get(frame.id);
        if (pending) { this.replies.delete(frame.id); pending(frame); }
        return;
      }
      this.deliver(frame, e.data.length);
    };
    ws.onerror = () => {};
    ws.onclose = (e) => this.streamFailed(new Error("WebSocket closed " + e.code), opened);
  }

  /**
   * WebTransport (HTTP/3): the server advertises where (`GET
   * /v1/webtransport`, with the hash of a self-signed certificate); the
   * events come one JSON per line on a stream the server opens, commands
   * go one per line on a bidirectional stream, typing signals come as
   * datagrams. A refused session says why in one line on its stream.
   */
  async open_webtransport() {
    this.stats.requests += 2; // the advert and the session
    // Asked each time: a restarted server may have a new certificate.
    const advert = await this.webtransportAdvert();
    if (!this.live || this.stats.transport !== "webtransport") return;
    if (!advert || typeof WebTransport !== "function") {
      // Not served here, or not in this browser: HTTP works, this transport does not.
      this.recover({ status: advert === undefined ? 0 : 200 }, false);
      return;
    }
    const hashes = advert.certificate_hashes || [];
    const options = hashes.length ? { serverCertificateHashes: hashes.map((hex) => (
      { algorithm: "sha-256", value: new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16))) })) } : {};
    let wt;
    try {
      wt = new WebTransport(`${advert.url}?${this.position()}&token=${encodeURIComponent(this.token)}`, options);
    } catch (e) {
      this.streamFailed(e, false);
      return;
    }
    this.wt = wt;
    this.replies = new Map();
    let opened = false;
    const ended = (error) => { if (this.wt === wt) this.streamFailed(error, opened); };
    wt.closed.then(() => ended(new Error("WebTransport closed")), (e) => ended(e));
    try {
      await wt.ready;
      const streams = wt.incomingUnidirectionalStreams.getReader();
      const { value: events } = await streams.read();
      streams.releaseLock();
      if (!events) throw new Error("no event stream");
      this.readDatagrams(wt);
      for await (const line of jsonLines(events)) {
        if (this.wt !== wt) return;
        const event = JSON.parse(line);
        if (event.type === "refused") {
          // Checked like any request: the same recovery as an HTTP refusal.
          this.wt = null;
          wt.close();
          this.recover({ status: event.status, retryAfter: event.retry_after || 0, body: event }, false);
          return;
        }
        if (!opened) { opened = true; this.opened(); await this.openCommands(wt); }
        this.deliver(event, line.length + 1);
      }
      ended(new Error("WebTransport event stream ended"));
    } catch (e) {
      ended(e);
    }
  }

  /** Where the server serves WebTransport (`GET /v1/webtransport`):
   *  null when it does not, undefined when it cannot be reached. */
  async webtransportAdvert() {
    try {
      const response = await fetch(`${this.url}/v1/webtransport`, { cache: "no-store" });
      return response.ok ? await response.json() : null;
    } catch {
      return undefined;
    }
  }

  /** The session's command stream, and its replies. */
  async openCommands(wt) {
    const { readable, writable } = await wt.createBidirectionalStream();
    if (this.wt !== wt) return;
    this.wtWriter = writable.getWriter();
    (async () => {
      try {
        for await (const line of jsonLines(readable)) {
          const reply = JSON.parse(line);
          const pending = this.replies.get(reply.id);
          if (pending) { this.replies.delete(reply.id); pending(reply); }
        }
      } catch { /* the session ended */ }
    })();
  }

  /** Typing signals, which may be lost, come as datagrams. */
  async readDatagrams(wt) {
    const reader = wt.datagrams.readable.getReader();
    const text = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.wt !== wt) return;
        this.deliver(JSON.parse(text.decode(value)), value.length);
      }
    } catch { /* the session ended */ }
  }

  /** Sends a command over the open WebSocket or WebTransport session;
   *  false when neither is open (then HTTP carries it). */
  sendOp(command) {
    const transport = this.stats.transport;
    if (transport === "ws" && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(command));
      return true;
    }
    if (transport === "webtransport" && this.wtWriter) {
      this.wtWriter.write(new TextEncoder().encode(JSON.stringify(command) + "\n")).catch(() => {});
      return true;
    }
    return false;
  }

  // ---- acks -------------------------------------------------------------

  /** Acks are batched: at most one per second, covering everything seen. */
  flushAcks() {
    if (this.role === "follower") {
      // The leader sends them, with its own.
      for (const [gid, msgid] of this.groupReads) this.channel?.postMessage({ t: "groupRead", gid, msgid });
      this.groupReads.clear();
      return;
    }
    const seq = this.pendingAck;
    this.pendingAck = 0;
    const transport = this.stats.transport;
    // A poll's or long-poll's next request acks with its cursor.
    const ackHere = seq && transport !== "poll" && transport !== "longpoll";
    if (ackHere && !this.sendOp({ op: "ack", seq })) {
      // Retried with the next flush unless refused (a 4xx changes nothing and would be refused again).
      this.call("POST", "/v1/ack", { seq }).catch((e) => { if (!(e.status < 500)) this.pendingAck ||= seq; });
    }
    // Group read marks go whether or not there was an ack to send.
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

  /**
   * Says "I am typing" to `target`: a uid, or `{ gid }` for a group. Call it
   * on every keystroke: a signal goes out at most every 2 s per target
   * (the server allows a few per second per user). Never stored: only the
   * recipients' connections open now get it, as a `typing` event.
   */
  typing(target) {
    const body = typeof target === "string" ? { to: target } : { gid: target.gid };
    const key = body.to !== undefined ? body.to : "g:" + body.gid;
    const now = Date.now();
    if (now - (this.typingSent.get(key) || 0) < TYPING_EVERY_MS) return Promise.resolve(null);
    this.typingSent.set(key, now);
    if (this.sendOp({ op: "typing", ...body })) return Promise.resolve(null);
    return this.call("POST", "/v1/typing", body);
  }

  send(to, body, cid = newCid()) { return this.call("POST", "/v1/messages", { to, body, cid }); }
  markRead(id) { return this.call("POST", `/v1/messages/${id}/read`); }
  groupSend(gid, body, cid = newCid()) { return this.call("POST", `/v1/groups/${encodeURIComponent(gid)}/messages`, { body, cid }); }
  /** Batched: sent with the next ack flush (at most once a second). */
  groupRead(gid, msgid) { this.groupReads.set(gid, Math.max(msgid, this.groupReads.get(gid) || 0)); }
  /** The direct conversation with `uid`, oldest first: the newest `limit`, or those before/after a message id. */
  history(uid, { before, after, limit } = {}) {
    const q = new URLSearchParams();
    if (before !== undefined) q.set("before", before);
    if (after !== undefined) q.set("after", after);
    if (limit !== undefined) q.set("limit", limit);
    return this.call("GET", `/v1/conversations/${encodeURIComponent(uid)}/messages?${q}`);
  }
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

/** What a refused request's answer says: status, Retry-After, JSON body. */
async function refusalOf(response) {
  const refusal = { status: response.status, retryAfter: Number(response.headers.get("retry-after")) || 0 };
  if (!response.ok) {
    try { refusal.body = await response.json(); } catch { /* not JSON (a proxy's page) */ }
  }
  return refusal;
}

/** The lines of a stream of bytes, without their `\n`. */
async function* jsonLines(readable) {
  const reader = readable.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    pending += value;
    let end;
    while ((end = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, end);
      pending = pending.slice(end + 1);
      if (line.trim()) yield line;
    }
  }
}

/** The `sub` of a JWT (the user it was minted for), or "" if it has none. */
function tokenSubject(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(part)).sub || "");
  } catch {
    return "";
  }
}

function newCid() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)).slice(0, 36);
}
