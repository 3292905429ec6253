// The demo page: log in, see friends' presence, chat 1:1 and in groups
// with receipts, counters, news, broadcasts, and compare the transports.
// Message bodies are always rendered as text (textContent), never as HTML.
import { Herald } from "/herald.js";

const $ = (id) => document.getElementById(id);
const state = { uid: null, herald: null, chat: null, messages: new Map(), members: {} };

async function login(uid) {
  const response = await fetch("/v1/demo/login", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ uid }),
  });
  if (!response.ok) throw new Error("demo login failed: " + response.status);
  return (await response.json()).token;
}

$("go").onclick = async () => {
  const uid = $("uid").value;
  const token = await login(uid);
  state.uid = uid;
  const herald = new Herald({
    token, transport: $("transport").value, storageKey: "herald:demo:" + uid,
    getToken: () => login(uid),
  });
  state.herald = herald;
  window.herald = herald; // for the console (and the browser tests)
  herald.on("status", (s) => { $("conn").textContent = `${uid} · ${s.transport} · ${s.state}`; });
  herald.on("presence", (e) => setPresence(e.data.uid, e.data.status));
  herald.on("msg", (e) => showDirect(e.data));
  herald.on("group_msg", (e) => showGroup(e.data));
  herald.on("receipt", (e) => showReceipt(e.data));
  herald.on("group_receipt", (e) => showGroupReceipt(e.data));
  herald.on("counter", (e) => setCounter(e.data.name, e.data.value));
  herald.on("broadcast", (e) => banner(e.data.body));
  herald.on("typing", (e) => showTyping(e));
  herald.on("hb", (e) => { if (e.hints && e.hints.broadcast > (state.lastBroadcast || 0)) pullBroadcasts(); });
  // Events may be missing (expired, or a server that lost our position):
  // refetch what the page shows from the server's current state.
  herald.on("resync", async () => {
    const [friends, counters] = await Promise.all([herald.friendsPresence(), herald.counters()]);
    for (const [friend, status] of Object.entries(friends.friends)) setPresence(friend, status);
    for (const [name, value] of Object.entries(counters.counters)) setCounter(name, value);
  });
  herald.start();
  // One connection for all tabs of this user in this browser: say which.
  setInterval(async () => {
    const { role, tabs } = await herald.sharing();
    $("share").textContent = role === "alone" ? "" : role === "leader" ? `leader of ${tabs} tab${tabs > 1 ? "s" : ""}` : `shared with ${tabs} tabs`;
    $("share").dataset.role = role;
  }, 1000);
  $("login").hidden = true;
  $("app").hidden = false;
  document.body.dataset.connected = uid;
  const [friends, counters, news] = await Promise.all([herald.friendsPresence(), herald.counters(), herald.news()]);
  for (const [friend, status] of Object.entries(friends.friends)) addFriend(friend, status);
  for (const [name, value] of Object.entries(counters.counters)) setCounter(name, value);
  if (news) { $("news-body").textContent = typeof news.body === "string" ? news.body : JSON.stringify(news.body); $("news").showModal(); }
};

function addFriend(uid, status) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.dataset.friend = uid;
  const dot = document.createElement("span");
  dot.className = "dot " + status;
  dot.id = "dot-" + uid;
  button.append(dot, document.createTextNode(uid));
  button.onclick = () => openChat({ kind: "direct", id: uid });
  li.append(button);
  $("friends").append(li);
}

function setPresence(uid, status) {
  const dot = $("dot-" + uid);
  if (dot) { dot.className = "dot " + status; dot.title = status; }
}

function setCounter(name, value) {
  let badge = document.querySelector(`[data-counter="${CSS.escape(name)}"]`);
  if (!badge) {
    badge = document.createElement("span");
    badge.dataset.counter = name;
    $("counters").append(badge);
  }
  badge.textContent = `${name}: ${value}`;
  badge.className = value ? "badge" : "muted";
}

function banner(body) {
  $("banner").textContent = typeof body === "string" ? body : JSON.stringify(body);
  $("banner").hidden = false;
}

async function pullBroadcasts() {
  const list = await state.herald.broadcasts(state.lastBroadcast || 0);
  state.lastBroadcast = list.cursor;
  for (const b of list.broadcasts) banner(b.body);
}

// Who is typing, per chat key: the set of uids (herald.js ends each after 5 s).
const typers = new Map();

function showTyping(e) {
  const chat = e.gid !== undefined ? { kind: "group", id: e.gid } : { kind: "direct", id: e.from };
  const set = typers.get(key(chat)) || new Set();
  if (e.stopped) set.delete(e.from); else set.add(e.from);
  typers.set(key(chat), set);
  drawTyping();
}

function drawTyping() {
  const set = state.chat ? typers.get(key(state.chat)) : null;
  const names = set ? [...set] : [];
  $("typing").textContent = names.length === 0 ? ""
    : names.join(", ") + (names.length === 1 ? " is typing…" : " are typing…");
}

$("text").oninput = () => {
  const chat = state.chat;
  if (chat && $("text").value) state.herald.typing(chat.kind === "group" ? { gid: chat.id } : chat.id).catch(() => {});
};

document.querySelectorAll("[data-group]").forEach((b) => { b.onclick = () => openChat({ kind: "group", id: b.dataset.group }); });
$("status").onchange = () => state.herald.setStatus($("status").value);

async function openChat(chat) {
  state.chat = chat;
  $("chat-title").textContent = chat.kind === "group" ? "# " + chat.id : chat.id;
  $("messages").replaceChildren();
  $("text").disabled = false;
  $("composer").querySelector("button").disabled = false;
  $("group-presence").textContent = "";
  drawTyping();
  const thread = state.messages.get(key(chat)) || [];
  for (const item of thread) render(item);
  if (chat.kind === "group") {
    // Group presence is pulled on demand, never pushed.
    const presence = await state.herald.groupPresence(chat.id);
    state.members[chat.id] = Object.keys(presence.members).length;
    $("group-presence").textContent = Object.entries(presence.members).map(([u, s]) => `${u}: ${s}`).join(" · ");
    const history = await state.herald.groupHistory(chat.id);
    for (const m of history.messages) showGroup(m);
  } else {
    // The newest of the conversation's history (it survives reloads),
    // merged with what this page already has, in id order.
    const history = await state.herald.history(chat.id, { limit: HISTORY_PAGE });
    mergeHistory(chat, history);
  }
}

/** Messages of a 1:1 conversation per history page. */
const HISTORY_PAGE = 20;

/** Adds a page of `chat`'s history to what the page has, once each, in id
 *  order, marks the other side's unread ones read, and redraws. */
function mergeHistory(chat, history) {
  const items = state.messages.get(key(chat)) || [];
  for (const m of history.messages) {
    if (items.some((x) => x.msgId === m.id)) continue;
    const mine = m.from === state.uid;
    items.push({ id: "d" + m.id, msgId: m.id, mine, from: m.from, body: m.body, status: mine && m.read ? receiptStatus("read") : "" });
    if (!mine && !m.read) state.herald.markRead(m.id).catch(() => {});
  }
  items.sort((a, b) => a.msgId - b.msgId);
  state.messages.set(key(chat), items);
  if (state.chat !== chat) return;
  $("messages").replaceChildren();
  if (history.more) {
    // Older messages stay on the server until asked for.
    const li = document.createElement("li");
    li.className = "earlier";
    const button = document.createElement("button");
    button.id = "earlier";
    button.textContent = "Earlier messages";
    button.onclick = async () => {
      button.disabled = true;
      const oldest = items.find((x) => x.msgId)?.msgId;
      mergeHistory(chat, await state.herald.history(chat.id, { before: oldest, limit: HISTORY_PAGE }));
      $("messages").firstElementChild?.scrollIntoView({ block: "start" });
    };
    li.append(button);
    $("messages").append(li);
  }
  for (const item of items) render(item);
}

const key = (chat) => chat.kind + ":" + chat.id;

function remember(chat, item) {
  const k = key(chat);
  if (!state.messages.has(k)) state.messages.set(k, []);
  const list = state.messages.get(k);
  if (list.some((x) => x.id === item.id)) return false;
  list.push(item);
  return true;
}

function showDirect(m) {
  const other = m.from === state.uid ? m.to : m.from;
  const mine = m.from === state.uid;
  const status = (mine && earlyReceipts.get(m.id)) || "";
  earlyReceipts.delete(m.id);
  const item = { id: "d" + m.id, msgId: m.id, mine, from: m.from, body: m.body, status };
  if (!remember({ kind: "direct", id: other }, item)) return;
  if (state.chat && state.chat.kind === "direct" && state.chat.id === other) {
    render(item);
    if (!item.mine) state.herald.markRead(m.id).catch(() => {});
  }
}

function showGroup(m) {
  const item = { id: `g${m.gid}:${m.msgid}`, msgid: m.msgid, mine: m.from === state.uid, from: m.from, body: m.body, status: "" };
  if (!remember({ kind: "group", id: m.gid }, item)) return;
  if (state.chat && state.chat.kind === "group" && state.chat.id === m.gid) {
    render(item);
    state.herald.groupRead(m.gid, m.msgid); // batched
  }
}

/** Receipts for messages not shown yet: the answer to a send can come after
 *  the recipient has already read the message. */
const earlyReceipts = new Map();
const receiptStatus = (kind, current) => (kind === "read" ? "✓✓ read" : current || "✓ delivered");

function showReceipt(r) {
  const pending = new Set(r.ids);
  for (const list of state.messages.values()) {
    for (const item of list) {
      if (item.msgId && pending.has(item.msgId)) {
        item.status = receiptStatus(r.kind, item.status);
        updateStatus(item);
        pending.delete(item.msgId);
      }
    }
  }
  for (const id of pending) earlyReceipts.set(id, receiptStatus(r.kind, earlyReceipts.get(id)));
}

function showGroupReceipt(r) {
  const list = state.messages.get("group:" + r.gid) || [];
  for (const receipt of r.receipts || [r]) {
    const item = list.find((x) => x.msgid === receipt.msgid);
    if (item) { item.status = `read by ${receipt.read} of ${receipt.read + receipt.unread}`; updateStatus(item); }
  }
}

function render(item) {
  const li = document.createElement("li");
  li.id = "m-" + item.id;
  li.className = item.mine ? "mine" : "";
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = item.from + (item.status ? " · " + item.status : "");
  const text = document.createElement("span");
  text.className = "body";
  text.textContent = typeof item.body === "string" ? item.body : JSON.stringify(item.body); // never HTML
  li.append(meta, text);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function updateStatus(item) {
  const meta = document.querySelector(`#${CSS.escape("m-" + item.id)} .meta`);
  if (meta) meta.textContent = item.from + " · " + item.status;
}

$("composer").onsubmit = async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text || !state.chat) return;
  $("text").value = "";
  $("send-error").hidden = true;
  try {
    if (state.chat.kind === "group") {
      await state.herald.groupSend(state.chat.id, text);
    } else {
      const { id } = await state.herald.send(state.chat.id, text);
      showDirect({ id, from: state.uid, to: state.chat.id, body: text });
    }
  } catch (err) {
    // Not sent (e.g. the send limit held twice): give the text back.
    if (!$("text").value) $("text").value = text;
    $("send-error").textContent = "Not sent: " + err.message;
    $("send-error").hidden = false;
  }
};

// ---- compare view ----------------------------------------------------------

$("compare-open").onclick = () => { $("compare").hidden = false; $("compare").scrollIntoView(); };

$("compare-run").onclick = async () => {
  const token = await login(state.uid);
  const started = Date.now();
  const transports = ["poll", "longpoll", "iframe", "sse", "ws"];
  // WebTransport where this browser has it and the server serves it (HTTPS and --webtransport-listen).
  if (typeof WebTransport === "function" && (await fetch("/v1/webtransport")).ok) transports.push("webtransport");
  const subscribers = transports.map((transport) => {
    // Each on its own connection (not shared with the page's client): that is what is compared.
    const h = new Herald({ token, transport, share: false, storageKey: `herald:compare:${transport}:${started}`, pollInterval: 1000 });
    h.compare = { latencies: [], delivered: 0, framing: 0 };
    h.on("msg", (e) => {
      if (e.data.body && e.data.body.compare !== undefined) {
        h.compare.delivered += 1;
        h.compare.latencies.push(Date.now() - e.ts);
        h.compare.framing += framing(transport, e, h.epoch);
      }
    });
    return h;
  });
  // Start from the current head so the backlog does not count.
  const head = (await state.herald.call("GET", "/v1/poll?limit=1000&cursor=" + state.herald.cursor)).cursor;
  for (const h of subscribers) { h.cursor = Math.max(head, state.herald.cursor); h.start(); }
  $("compare-state").textContent = "running…";
  await new Promise((r) => setTimeout(r, 1500));
  for (const h of subscribers) {
    // A stream counts its one open connection (WebTransport also its advert); polls count every request.
    h.stats.requests = h.stats.transport === "poll" || h.stats.transport === "longpoll" ? 0 : 1;
    h.stats.usefulRequests = 0;
    h.stats.bytes = 0;
  }
  const measuring = Date.now();
  for (let n = 0; n < 40; n++) {
    state.herald.send(state.uid, { compare: n }).catch(() => {});
    await new Promise((r) => setTimeout(r, 250));
  }
  await new Promise((r) => setTimeout(r, 2500));
  const seconds = (Date.now() - measuring) / 1000;
  for (const h of subscribers) h.stop();
  const headers = await headerBytes(token);
  const rows = subscribers.map((h) => {
    const sorted = [...h.compare.latencies].sort((a, b) => a - b);
    const pct = (p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);
    const polls = h.stats.transport === "poll" || h.stats.transport === "longpoll";
    const delivered = h.compare.delivered;
    // Bodies as received, each event's framing, and one request and response head per request.
    const wire = h.stats.bytes + h.compare.framing + h.stats.requests * (headers.request + headers.response);
    return {
      transport: h.stats.transport, delivered, p50: pct(0.5), p95: pct(0.95),
      requests: h.stats.requests,
      requestsPerEvent: delivered ? h.stats.requests / delivered : null,
      usefulRatio: polls && h.stats.requests ? h.stats.usefulRequests / h.stats.requests : null,
      bytesPerEvent: delivered ? wire / delivered : null,
      // What 100 000 users online at this page's rate would send a server.
      projected: polls ? Math.round((h.stats.requests / seconds) * 100000) : null,
    };
  });
  drawTable(rows);
  drawCharts(rows);
  drawProjection(rows);
  $("compare-state").textContent = "done";
  document.body.dataset.compared = "yes";
};

/** Bytes of one event's framing beyond its JSON on `transport` (the JSON itself is in stats.bytes). */
function framing(transport, event, epoch) {
  const json = JSON.stringify(event).length;
  const chunk = (n) => n.toString(16).length + 4; // chunked encoding: size line and CRLF
  switch (transport) {
    case "sse": {
      const block = `id: ${event.seq}:${epoch}\nevent: ${event.type}\ndata: \n\n`.length;
      return block + chunk(block + json);
    }
    case "iframe": {
      const script = "<script>parent.__heraldN();</script>\n".length;
      return script + chunk(script + json);
    }
    case "ws": return json < 126 ? 2 : 4; // server frames are unmasked
    case "webtransport": return 1; // the line end (QUIC's own framing is not visible to a page)
    default: return 1; // the comma between events in a page
  }
}

/**
 * One request head and one response head of a poll, in bytes, as far as a
 * page can see them: the request line, Host and Authorization (the headers
 * the browser adds itself are hidden from the page and not counted), the
 * status line and every response header.
 */
async function headerBytes(token) {
  const path = "/v1/poll?cursor=" + state.herald.cursor;
  const response = await fetch(path, { headers: { authorization: "Bearer " + token } });
  await response.text();
  let responseHead = `HTTP/1.1 ${response.status} ${response.statusText}\r\n\r\n`.length;
  for (const [name, value] of response.headers) responseHead += name.length + value.length + 4;
  const request = `GET ${path}&epoch=xxxxxxxxxxxxx HTTP/1.1\r\nHost: ${location.host}\r\nAuthorization: Bearer ${token}\r\n\r\n`.length;
  return { request, response: responseHead };
}

function drawTable(rows) {
  const body = $("compare-table").tBodies[0];
  body.replaceChildren();
  const fmt = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.dataset.transport = r.transport;
    for (const v of [r.transport, r.delivered, fmt(r.p50), fmt(r.p95), r.requests, fmt(r.requestsPerEvent, 2),
      r.usefulRatio === null ? "–" : Math.round(r.usefulRatio * 100) + "%", fmt(r.bytesPerEvent)]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    body.append(tr);
  }
}

/**
 * Three small bar charts, one per question, each on a log scale so that
 * short polling's bars do not flatten the others: latency (p50 solid, p95
 * light), requests per message, bytes per message.
 */
function drawCharts(rows) {
  const canvas = $("compare-chart");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const panels = [
    { title: "latency, ms (p50 · p95)", values: (r) => [r.p50, r.p95] },
    { title: "requests per message", values: (r) => [r.requestsPerEvent] },
    { title: "bytes per message, with HTTP heads", values: (r) => [r.bytesPerEvent] },
  ];
  const width = canvas.width / panels.length;
  panels.forEach((panel, i) => logBars(g, i * width, 0, width, canvas.height, panel.title, rows, panel.values));
}

function logBars(g, left, top, width, height, title, rows, values) {
  const all = rows.flatMap(values).filter((v) => v > 0);
  const low = Math.floor(Math.log10(Math.min(...all, 1)));
  const high = Math.max(low + 1, Math.ceil(Math.log10(Math.max(...all, 1))));
  const plotTop = top + 34;
  const plotBottom = top + height - 28;
  const y = (v) => plotBottom - ((Math.log10(v) - low) / (high - low)) * (plotBottom - plotTop);
  g.font = "12px system-ui";
  g.fillStyle = "#1d2330";
  g.fillText(title, left + 8, top + 16);
  g.font = "10px system-ui";
  for (let p = low; p <= high; p++) {
    g.strokeStyle = "#e3e6ec";
    g.beginPath(); g.moveTo(left + 30, y(10 ** p)); g.lineTo(left + width - 6, y(10 ** p)); g.stroke();
    g.fillStyle = "#6b7385";
    g.fillText(p >= 0 ? String(10 ** p) : (10 ** p).toFixed(-p), left + 2, y(10 ** p) + 3);
  }
  const slot = (width - 40) / rows.length;
  rows.forEach((r, i) => {
    const x = left + 34 + i * slot;
    const shown = values(r);
    shown.forEach((v, k) => {
      if (!(v > 0)) return;
      const bar = (slot - 6) / shown.length;
      g.fillStyle = k === 0 ? "#2f6fd0" : "#bcd3f5";
      g.fillRect(x + k * bar, y(v), bar - 1, plotBottom - y(v));
    });
    g.fillStyle = "#1d2330";
    g.fillText(r.transport === "webtransport" ? "wt (h3)" : r.transport, x, plotBottom + 12);
    const first = shown[0];
    g.fillText(first > 0 ? short(first) : "–", x, plotBottom + 24);
  });
}

/** 0.025, 2.0, 515: two significant digits below 10, whole numbers above. */
function short(v) {
  return v >= 10 ? String(Math.round(v)) : v >= 1 ? v.toFixed(1) : v.toPrecision(2);
}

/** The request rate 100 000 online users would put on a server at these rates. */
function drawProjection(rows) {
  const fmt = (n) => n.toLocaleString("en-US");
  const parts = rows.map((r) => r.projected === null
    ? `${r.transport}: 100 000 open connections, ${r.requests > 1 ? "reconnecting" : "no requests while open"}`
    : `${r.transport}: ${fmt(r.projected)} requests/s`);
  $("compare-projection").textContent = "100 000 users online at this rate would put on a server: " + parts.join("; ") + ".";
}
