// The celeriac dashboard. Every piece of task data is written with textContent, never as HTML.
"use strict";

window.dashboardErrors = [];
window.addEventListener("error", (event) => window.dashboardErrors.push(String(event.message)));

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const HISTORY = 60;
const processedHistory = new Map(); // worker -> [[time, processed], …]
const readyHistory = new Map(); // queue -> [ready, …]
const flowHistory = new Map(); // queue -> [[time, sent, received], …]

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function link(text, href) {
  const a = el("a", text);
  a.href = href;
  return a;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    tr.append(cell instanceof Node ? wrap(cell) : el("td", cell));
  }
  return tr;
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function mebibytes(bytes) {
  return bytes ? `${(bytes / 1048576).toFixed(1)} MiB` : "-";
}

function clock(timestamp) {
  return new Date(timestamp * 1000).toISOString().replace("T", " ").slice(0, 23);
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 24");
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? 120 / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(23 - (v / max) * 22).toFixed(1)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return svg;
}

function remember(map, key, value) {
  const values = map.get(key) || [];
  values.push(value);
  while (values.length > HISTORY) values.shift();
  map.set(key, values);
  return values;
}

// Per-second rates between successive samples of a counter (`samples[i][column]`).
function rates(samples, column) {
  return samples.slice(1).map((sample, i) => {
    const before = samples[i];
    const dt = sample[0] - before[0];
    return dt > 0 ? Math.max(0, (sample[column] - before[column]) / dt) : 0;
  });
}

// The latest of `values` and a sparkline of them all.
function rateCell(values) {
  const td = document.createElement("td");
  const latest = values.length ? values[values.length - 1] : 0;
  td.append(el("span", `${latest.toFixed(1)} `), sparkline(values));
  return td;
}

function renderWorkers(snapshot) {
  const online = snapshot.workers.filter((w) => w.online).length;
  document.getElementById("worker-count").textContent = `${online} online, ${snapshot.workers.length - online} offline`;
  fill(document.querySelector("#workers tbody"), snapshot.workers.map((w) => {
    const history = remember(processedHistory, w.hostname, [snapshot.time, w.processed]);
    const status = el("td", w.online ? "online" : "offline", w.online ? "ok" : "bad");
    return row([
      w.hostname,
      status,
      `${w.active}/${w.concurrency}`,
      el("td", w.processed, "number"),
      rateCell(rates(history, 1)),
      el("td", w.loadavg ? w.loadavg.map((l) => l.toFixed(2)).join(" ") : "-", "nowrap"),
      el("td", mebibytes(w.rss_bytes), "nowrap"),
      (w.queues || []).join(", "),
    ]);
  }));
}

function renderQueues(snapshot) {
  fill(document.querySelector("#queues tbody"), snapshot.queues.map((q) => {
    const ready = remember(readyHistory, q.queue, q.ready);
    const flow = remember(flowHistory, q.queue, [snapshot.time, q.sent, q.received]);
    const dead = q.dead_lettered > 0
      ? link(String(q.dead_lettered), `#dlq/${encodeURIComponent(q.queue)}`)
      : el("span", "0");
    if (q.dead_lettered > 0) dead.className = "bad";
    const spark = document.createElement("td");
    spark.append(sparkline(ready));
    return row([
      q.error ? el("td", `${q.queue}: ${q.error}`, "error") : q.queue,
      el("td", q.ready, "number"),
      el("td", q.delayed, "number"),
      el("td", q.unacked, "number"),
      dead,
      rateCell(rates(flow, 1)),
      rateCell(rates(flow, 2)),
      spark,
    ]);
  }));
}

function stateClass(state) {
  if (state === "succeeded") return "ok";
  if (state === "failed" || state === "dead-lettered" || state === "revoked") return "bad";
  return "";
}

function renderTasks(snapshot) {
  fill(document.querySelector("#tasks tbody"), snapshot.tasks.map((t) => row([
    link(t.id, `#task/${t.id}`),
    t.name,
    el("td", t.state, `nowrap ${stateClass(t.state)}`),
    t.worker || "",
    el("td", seconds(t.runtime), "nowrap"),
    el("td", t.error || "", "error"),
  ])));
}

function render(snapshot) {
  document.getElementById("broker").textContent = snapshot.broker;
  const trouble = document.getElementById("trouble");
  trouble.hidden = !snapshot.trouble;
  trouble.textContent = snapshot.trouble || "";
  renderWorkers(snapshot);
  renderQueues(snapshot);
  renderTasks(snapshot);
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

async function showTask(id) {
  document.getElementById("task-id").textContent = id;
  const fields = document.getElementById("task-fields");
  fields.replaceChildren();
  const timeline = document.querySelector("#timeline tbody");
  timeline.replaceChildren();
  try {
    const page = await api(`/api/tasks/${encodeURIComponent(id)}`);
    const t = page.events || {};
    const r = page.result || {};
    const add = (name, value) => fields.append(el("dt", name), el("dd", value ?? "-"));
    add("name", t.name ?? r.task);
    add("state (events)", t.state);
    add("state (result backend)", r.state);
    add("queue", t.queue);
    add("worker", t.worker);
    add("retries", t.retries ?? r.retries);
    add("runtime", seconds(t.runtime));
    add("finished", r.finished_at == null ? null : clock(r.finished_at));
    add("error", t.error ?? r.error);
    add("result", r.value);
    add("arguments", page.arguments);
    fill(timeline, (t.timeline || []).map((s) => row([clock(s.timestamp), s.event, s.hostname])));
  } catch (error) {
    fields.append(el("dt", "error"), el("dd", error.message, "bad"));
  }
}

async function showLetters(queue) {
  document.getElementById("dlq-queue").textContent = queue;
  const tbody = document.querySelector("#letters tbody");
  try {
    const letters = await api(`/api/dlq/${encodeURIComponent(queue)}`);
    fill(tbody, letters.map((l) => row([
      l.id ? link(l.id, `#task/${l.id}`) : "-",
      l.task || "(undecodable)",
      clock(l.at),
      el("td", l.reason, "error"),
    ])));
  } catch (error) {
    fill(tbody, [row([el("td", error.message, "bad")])]);
  }
}

async function change(action, question) {
  const queue = decodeURIComponent(location.hash.slice("#dlq/".length));
  if (!window.confirm(question.replace("{queue}", queue))) return;
  const outcome = document.getElementById("dlq-outcome");
  try {
    const body = await api(`/api/dlq/${encodeURIComponent(queue)}/${action}`, {
      method: "POST",
      headers: { "X-CSRF-Token": csrf },
    });
    outcome.className = "ok";
    outcome.textContent = action === "requeue" ? `requeued ${body.requeued}` : `purged ${body.purged}`;
  } catch (error) {
    outcome.className = "bad";
    outcome.textContent = error.message;
  }
  showLetters(queue);
}

function route() {
  const hash = location.hash;
  const pages = { overview: true, "task-page": false, "dlq-page": false };
  if (hash.startsWith("#task/")) {
    pages.overview = false;
    pages["task-page"] = true;
    showTask(decodeURIComponent(hash.slice("#task/".length)));
  } else if (hash.startsWith("#dlq/")) {
    pages.overview = false;
    pages["dlq-page"] = true;
    document.getElementById("dlq-outcome").textContent = "";
    showLetters(decodeURIComponent(hash.slice("#dlq/".length)));
  }
  for (const [id, shown] of Object.entries(pages)) document.getElementById(id).hidden = !shown;
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/api/stream");
  source.addEventListener("snapshot", (event) => {
    status.textContent = "live";
    status.className = "ok";
    render(JSON.parse(event.data));
  });
  source.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "bad";
  };
}

document.getElementById("requeue").addEventListener("click", () => change("requeue", "Requeue every dead letter of {queue}?"));
document.getElementById("purge").addEventListener("click", () => change("purge", "Delete every dead letter of {queue}? This cannot be undone."));
window.addEventListener("hashchange", route);
route();
connect();
