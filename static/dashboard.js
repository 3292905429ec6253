// The operations dashboard: reads herald's Prometheus text at /metrics
// (API key) once a second and draws what an operator watches, and shows
// one user (GET /api/v1/users/{uid}) and one event's delivery trace
// (GET /api/v1/users/{uid}/events/{seq}) as a timeline. No framework, no
// CDN: canvas and SVG.

const $ = (id) => document.getElementById(id);
const KEY = "herald:dashboard:key";
const SAMPLES = 120; // two minutes at one a second
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
const STREAMS = ["sse", "iframe", "ws", "webtransport"];
const TRANSPORTS = ["poll", "longpoll", "iframe", "sse", "ws", "webtransport"];

/** name{labels} value lines → Map "name{labels}" → number. */
function parse(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

const history = []; // one {at, values} per second, newest last
let timer;

async function sample() {
  const key = sessionStorage.getItem(KEY);
  let response;
  try {
    response = await fetch("/metrics", { headers: { authorization: "Bearer " + key }, cache: "no-store" });
  } catch (e) {
    $("state").textContent = "herald unreachable; retrying";
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    clearInterval(timer);
    showLogin("That API key was refused.");
    return;
  }
  if (!response.ok) {
    $("state").textContent = `metrics: HTTP ${response.status}; retrying`;
    return;
  }
  history.push({ at: Date.now(), values: parse(await response.text()) });
  if (history.length > SAMPLES + 1) history.shift();
  $("state").textContent = "live · " + new Date().toLocaleTimeString();
  draw();
  if (shown.uid) showUser();
}

// ---- one user, one event ----

const shown = { uid: "", seq: 0 };

/** GET `path` of the backend API: [status, JSON]. */
async function api(path) {
  const key = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: { authorization: "Bearer " + key }, cache: "no-store" });
  return [response.status, await response.json().catch(() => ({}))];
}

const ago = (ms) => (ms ? `${Math.max(0, Math.round((Date.now() - ms) / 1000))} s ago` : "never");

function fact(label, value, className) {
  const span = document.createElement("span");
  span.append(label + " ");
  const b = document.createElement("b");
  b.textContent = value;
  if (className) b.className = className;
  span.append(b);
  return span;
}

/** Which nodes answered (in a cluster), naming those that did not. */
function nodesFact(nodes) {
  if (!nodes || !nodes.nodes.length) return fact("nodes", "this one");
  const missing = nodes.missing.length ? ` · no answer from ${nodes.missing.join(", ")}` : "";
  return fact("nodes", `${nodes.nodes.length - nodes.missing.length} of ${nodes.nodes.length}${missing}`, nodes.missing.length ? "missing" : "");
}

async function showUser() {
  const { uid } = shown;
  const [status, user] = await api(`/api/v1/users/${encodeURIComponent(uid)}`);
  if (uid !== shown.uid) return;
  if (status !== 200) {
    $("user").hidden = true;
    $("user-error").hidden = false;
    $("user-error").textContent = user.message || `HTTP ${status}`;
    return;
  }
  $("user-error").hidden = true;
  $("user").hidden = false;
  const q = user.queue;
  $("user-facts").replaceChildren(
    fact("uid", user.uid),
    fact("seen as", user.presence.visible + (user.presence.chosen ? ` (chose ${user.presence.chosen})` : "")),
    fact("leases on", user.presence.leases.length ? user.presence.leases.join(", ") : "no node"),
    fact("head", String(q.head)),
    fact("acked", String(q.acked)),
    fact("waiting", String(q.waiting)),
    fact("oldest kept", q.oldest == null ? "none" : String(q.oldest)),
    fact("epoch", q.epoch),
    fact("send budget", user.send_budget ? `${user.send_budget.left} of ${user.send_budget.burst}` : "no limit"),
    nodesFact(user.nodes),
  );
  $("user-connections").tBodies[0].replaceChildren(...user.connections.map((c) => {
    const row = document.createElement("tr");
    row.dataset.transport = c.transport;
    for (const cell of [c.node, c.transport, c.client ?? "", ago(c.opened_at), ago(c.last_write_at), c.cursor, c.events_sent, c.bytes_sent]) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      row.append(td);
    }
    return row;
  }));
  const counters = Object.entries(user.counters).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const groups = user.groups.map((g) => `${g.gid} (read ${g.last_read} of ${g.newest})`).join(", ") || "none";
  $("user-more").replaceChildren(fact("groups", groups), fact("counters", counters));
  // The newest events kept, to pick one to trace.
  const first = Math.max(q.oldest ?? 1, q.head - 9, 1);
  const buttons = [];
  for (let seq = q.head; seq >= first && q.head > 0; seq--) {
    const b = document.createElement("button");
    b.textContent = String(seq);
    b.className = seq === shown.seq ? "shown" : "";
    b.onclick = () => { shown.seq = seq; showUser(); };
    buttons.push(b);
  }
  $("recent").replaceChildren(buttons.length ? "trace an event: " : "no events kept", ...buttons);
  if (shown.seq) await showTrace(uid, shown.seq);
}

async function showTrace(uid, seq) {
  const [status, trace] = await api(`/api/v1/users/${encodeURIComponent(uid)}/events/${seq}`);
  if (uid !== shown.uid || seq !== shown.seq) return;
  $("trace-error").hidden = status === 200;
  $("trace-box").hidden = status !== 200;
  if (status !== 200) {
    $("trace-error").textContent = trace.message || `HTTP ${status}`;
    return;
  }
  const kind = trace.event ? trace.event.type : "";
  $("trace-facts").replaceChildren(
    fact("event", `${seq}${kind ? " · " + kind : ""}`),
    fact("status", trace.status === "kept" ? "kept" : "expired (no longer in the queue)", trace.status === "kept" ? "" : "missing"),
    fact("acked", trace.acked ? "yes" : "no"),
    fact("trace", trace.traced_for_minutes ? `last ${trace.traced_for_minutes} min` : "off (--trace-minutes 0)"),
    nodesFact(trace.nodes),
  );
  timeline($("trace"), trace.steps);
}

const SVG = "http://www.w3.org/2000/svg";
const STEP_COLOURS = { appended: "#6b7385", durable: "#16a34a", written: "#2563eb", acked: "#9333ea", read: "#ea580c" };

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, String(v));
  if (text != null) element.textContent = text;
  return element;
}

/** The steps of a trace on a time axis, one row each, oldest on top. */
function timeline(box, steps) {
  const width = Math.max(480, box.clientWidth || 800);
  const rowHeight = 26;
  const height = 40 + Math.max(1, steps.length) * rowHeight;
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.setAttribute("height", String(height));
  box.dataset.steps = steps.map((s) => s.step + (s.transport ? ":" + s.transport : "")).join(",");
  if (!steps.length) {
    box.replaceChildren(svg("text", { x: 10, y: 30 }, "nothing traced for this event on any node that answered"));
    return;
  }
  const start = steps[0].at;
  const span = Math.max(10, steps[steps.length - 1].at - start);
  const left = 330, right = width - 70;
  const x = (at) => left + ((at - start) / span) * (right - left);
  const parts = [
    svg("line", { x1: left, y1: 24, x2: right, y2: 24, stroke: "#c5cad6" }),
    svg("text", { x: left, y: 16, class: "time" }, "0 ms"),
    svg("text", { x: right - 10, y: 16, class: "time" }, `+${span} ms`),
  ];
  steps.forEach((s, i) => {
    const y = 44 + i * rowHeight;
    const colour = STEP_COLOURS[s.step] || "#1d2330";
    const what = [s.step, s.transport, s.connection != null ? `#${s.connection}` : "", s.cursor != null ? `to ${s.cursor}` : ""]
      .filter(Boolean).join(" ");
    const why = s.cause ? ` · ${s.cause.what}${s.cause.key ? " key " + s.cause.key : ""}${s.cause.trace_id ? " trace " + s.cause.trace_id.slice(0, 8) + "…" : ""}` : "";
    // The time and cause beside the dot, on the side with room.
    const late = x(s.at) > (left + right) / 2;
    parts.push(
      svg("line", { x1: x(s.at), y1: 24, x2: x(s.at), y2: y, stroke: colour, "stroke-dasharray": "2 3" }),
      svg("circle", { cx: x(s.at), cy: y, r: 6, fill: colour, "data-step": s.step }),
      svg("text", { x: 10, y: y + 4 }, `${what} · node ${s.node.slice(0, 6)}`),
      svg("text", { x: x(s.at) + (late ? -10 : 10), y: y + 4, class: "time", "text-anchor": late ? "end" : "start" },
        `+${s.at - start} ms${why}`),
    );
  });
  box.replaceChildren(...parts);
}

$("user-form").onsubmit = (e) => {
  e.preventDefault();
  shown.uid = $("uid").value.trim();
  shown.seq = Number($("seq").value) || 0;
  $("trace-box").hidden = true;
  $("trace-error").hidden = true;
  if (shown.uid) showUser();
};

/** The value of `name` at sample `i` (0 when absent). */
const at = (i, name) => history[i].values.get(name) ?? 0;

/** Per second between samples i-1 and i of the counter `name`. */
function rate(i, name) {
  const seconds = (history[i].at - history[i - 1].at) / 1000;
  return seconds > 0 ? Math.max(0, at(i, name) - at(i - 1, name)) / seconds : 0;
}

/** A series over the kept samples: f(i) for every sample i ≥ 1. */
function series(f) {
  const points = [];
  for (let i = 1; i < history.length; i++) points.push(f(i));
  return points;
}

function draw() {
  if (history.length < 2) return;
  const last = history.length - 1;
  const delivered = (i) => TRANSPORTS.reduce((sum, t) => sum + rate(i, `herald_delivered_events_total{kind="${t}"}`), 0);
  // Mean batch over the last interval: Δsum / Δcount of the histogram.
  const batch = (i) => {
    const count = at(i, "herald_commit_batch_size_count") - at(i - 1, "herald_commit_batch_size_count");
    return count > 0 ? (at(i, "herald_commit_batch_size_sum") - at(i - 1, "herald_commit_batch_size_sum")) / count : 0;
  };
  const fanout = fanoutBuckets(history[last].values);
  const connections = (i) => STREAMS.reduce((n, t) => n + at(i, `herald_connections{kind="${t}"}`), 0)
    + at(i, "herald_longpolls_held");

  tiles([
    ["connections", "open connections", connections(last)],
    ...STREAMS.map((t) => [`connections-${t}`, `${t} open`, at(last, `herald_connections{kind="${t}"}`)]),
    ["longpolls", "long-polls held", at(last, "herald_longpolls_held")],
    ["appended", "events appended /s", rate(last, "herald_appends_total")],
    ["delivered", "events delivered /s", delivered(last)],
    ["batch", "commit batch (mean)", batch(last)],
    ["useful", "long-polls useful /s", rate(last, 'herald_longpoll_returns_total{kind="events"}')],
    ["empty", "long-polls empty /s", rate(last, 'herald_longpoll_returns_total{kind="empty"}')],
    ["fanout", "presence fan-out (mean N)", fanout.mean],
    ["refused", "sends refused (total)", at(last, "herald_send_limited_total")],
  ]);

  lines($("chart-connections"), "open connections", [
    ...STREAMS.map((t) => ({ name: t, points: series((i) => at(i, `herald_connections{kind="${t}"}`)) })),
    { name: "long-polls held", points: series((i) => at(i, "herald_longpolls_held")) },
  ]);
  lines($("chart-events"), "events per second", [
    { name: "appended (durable)", points: series((i) => rate(i, "herald_appends_total")) },
    { name: "delivered", points: series(delivered) },
  ]);
  lines($("chart-batch"), "group commit: appends per flush (mean)", [{ name: "batch", points: series(batch) }]);
  lines($("chart-longpolls"), "long-poll returns per second", [
    { name: "useful (events)", points: series((i) => rate(i, 'herald_longpoll_returns_total{kind="events"}')) },
    { name: "empty (timed out)", points: series((i) => rate(i, 'herald_longpoll_returns_total{kind="empty"}')) },
  ]);
  bars($("chart-fanout"), "presence fan-out: online reverse friends per change (N)", fanout.bars);
  lines($("chart-refusals"), "sends refused by the send limit, per second", [
    { name: "refused", points: series((i) => rate(i, "herald_send_limited_total")) },
  ]);
  document.body.dataset.samples = String(history.length);
}

/** The presence fan-out histogram: changes per bucket of N, and the mean N. */
function fanoutBuckets(values) {
  const buckets = [];
  for (const [name, value] of values) {
    const m = name.match(/^herald_presence_fanout_bucket\{le="([^"]+)"\}$/);
    if (m) buckets.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), cumulative: value });
  }
  buckets.sort((a, b) => a.le - b.le);
  const bars = buckets.map((b, i) => ({
    label: b.le === Infinity ? `>${buckets[i - 1]?.le ?? 0}` : `≤${b.le}`,
    value: b.cumulative - (i > 0 ? buckets[i - 1].cumulative : 0),
  }));
  const count = values.get("herald_presence_fanout_count") ?? 0;
  return { bars, mean: count ? (values.get("herald_presence_fanout_sum") ?? 0) / count : 0 };
}

function tiles(list) {
  const box = $("tiles");
  if (!box.children.length) {
    for (const [id, label] of list) {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.metric = id;
      tile.append(document.createElement("b"), document.createTextNode(label));
      box.append(tile);
    }
  }
  for (const [id, , value] of list) {
    const tile = box.querySelector(`[data-metric="${id}"]`);
    tile.dataset.value = String(value);
    tile.firstChild.textContent = format(value);
  }
}

/** A round top for an axis up to `max`: 1, 2 or 5 times a power of ten. */
function roundTop(max) {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((s) => s * power).find((top) => top >= max);
}

function frame(canvas, title, top) {
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  g.font = "13px system-ui";
  g.fillStyle = "#1d2330";
  g.fillText(title, 10, 18);
  const plot = { left: 50, right: width - 10, top: 30, bottom: height - 40 };
  g.font = "11px system-ui";
  // Round steps: fifths of a top of 5·10ⁿ, quarters of 1·10ⁿ or 2·10ⁿ.
  const steps = String(top).startsWith("5") ? 5 : 4;
  for (let k = 0; k <= steps; k++) {
    const y = plot.bottom - (k / steps) * (plot.bottom - plot.top);
    g.strokeStyle = "#e3e6ec";
    g.beginPath(); g.moveTo(plot.left, y); g.lineTo(plot.right, y); g.stroke();
    g.fillStyle = "#6b7385";
    g.fillText(format((top * k) / steps), 6, y + 4);
  }
  return { g, plot };
}

/** Lines over the last SAMPLES seconds, y from 0, a legend below. */
function lines(canvas, title, list) {
  const top = roundTop(Math.max(0, ...list.flatMap((s) => s.points)));
  const { g, plot } = frame(canvas, title, top);
  const x = (i) => plot.right - ((SAMPLES - 1 - i) / (SAMPLES - 1)) * (plot.right - plot.left);
  const y = (v) => plot.bottom - (v / top) * (plot.bottom - plot.top);
  g.fillStyle = "#6b7385";
  g.fillText("2 min ago", plot.left, plot.bottom + 13);
  g.fillText("now", plot.right - g.measureText("now").width, plot.bottom + 13);
  let legend = plot.left;
  list.forEach((s, k) => {
    const offset = SAMPLES - s.points.length;
    g.strokeStyle = COLOURS[k % COLOURS.length];
    g.lineWidth = 2;
    g.beginPath();
    s.points.forEach((v, i) => (i ? g.lineTo(x(i + offset), y(v)) : g.moveTo(x(i + offset), y(v))));
    g.stroke();
    g.lineWidth = 1;
    g.fillStyle = COLOURS[k % COLOURS.length];
    g.fillRect(legend, canvas.height - 22, 10, 10);
    g.fillStyle = "#1d2330";
    const label = `${s.name} ${format(s.points[s.points.length - 1] ?? 0)}`;
    g.fillText(label, legend + 14, canvas.height - 13);
    legend += g.measureText(label).width + 30;
  });
}

function bars(canvas, title, list) {
  const top = roundTop(Math.max(0, ...list.map((b) => b.value)));
  const { g, plot } = frame(canvas, title, top);
  const slot = (plot.right - plot.left) / Math.max(1, list.length);
  list.forEach((b, i) => {
    const h = (b.value / top) * (plot.bottom - plot.top);
    g.fillStyle = COLOURS[0];
    g.fillRect(plot.left + i * slot + 2, plot.bottom - h, slot - 4, h);
    g.fillStyle = "#1d2330";
    g.fillText(b.label, plot.left + i * slot + 2, plot.bottom + 14);
    if (b.value) g.fillText(String(b.value), plot.left + i * slot + 2, plot.bottom - h - 4);
  });
  g.fillStyle = "#6b7385";
  g.fillText("changes, by the number of online friends each one reached", plot.left, canvas.height - 13);
}

function format(v) {
  if (v >= 100 || Number.isInteger(v)) return Math.round(v).toLocaleString("en-US");
  return v < 1 ? v.toFixed(2) : v.toFixed(1);
}

function showLogin(error) {
  $("login").hidden = false;
  $("board").hidden = true;
  $("key-error").hidden = !error;
  $("key-error").textContent = error || "";
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  history.length = 0;
  sample();
  timer = setInterval(sample, 1000);
}

$("key-form").onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  start();
};

if (sessionStorage.getItem(KEY)) start();
else showLogin();
