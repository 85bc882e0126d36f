// orderpipe's live dashboard. Plain script, no build step, no dependencies:
// every second it reads /metrics (Prometheus text) and /readyz and redraws;
// the lookup box reads /v1/orders/{id}?trace=1. A metric the process does
// not export shows "—".
"use strict";

const POLL_MS = 1000;
const WINDOW_MS = 30000; // latency percentiles over the last 30s when it has observations
const SPARK_POINTS = 60;
const NONE = "—";

const $ = (id) => document.getElementById(id);

// ---- Prometheus text format ------------------------------------------------

function parseValue(s) {
  switch (s) {
    case "+Inf": return Infinity;
    case "-Inf": return -Infinity;
    case "NaN": return NaN;
  }
  return Number(s);
}

const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(v) {
  return v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

// parseMetrics returns a Map from a sample's name to its samples
// [{labels, value}].
function parseMetrics(text) {
  const out = new Map();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line[0] === "#") continue;
    let name, labels = {}, rest;
    const brace = line.indexOf("{");
    const space = line.search(/\s/);
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      const end = line.lastIndexOf("}");
      const body = line.slice(brace + 1, end);
      for (const m of body.matchAll(labelRe)) labels[m[1]] = unescapeLabel(m[2]);
      rest = line.slice(end + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = parseValue(rest.split(/\s+/)[0]);
    if (!out.has(name)) out.set(name, []);
    out.get(name).push({ labels, value });
  }
  return out;
}

function matches(labels, want) {
  for (const [k, v] of Object.entries(want || {})) {
    if (v instanceof RegExp ? !v.test(labels[k] || "") : labels[k] !== v) return false;
  }
  return true;
}

// sum adds the samples of name whose labels match want: 0 if the process
// exports name but no such series (a counter that never counted one), null
// if it does not export name at all.
function sum(metrics, name, want) {
  const samples = metrics.get(name);
  if (!samples) return null;
  let total = 0;
  for (const s of samples) {
    if (matches(s.labels, want) && !Number.isNaN(s.value)) total += s.value;
  }
  return total;
}

// groupSum sums the samples of name by the labels in keys.
function groupSum(metrics, name, keys) {
  const out = new Map();
  for (const s of metrics.get(name) || []) {
    const k = keys.map((key) => s.labels[key] || "").join("\u0000");
    const cur = out.get(k) || { labels: Object.fromEntries(keys.map((key) => [key, s.labels[key] || ""])), value: 0 };
    cur.value += s.value;
    out.set(k, cur);
  }
  return [...out.values()];
}

// buckets returns the cumulative buckets of histogram name, merged over
// the series that match want: [{le, count}] by le; null if absent.
function buckets(metrics, name, want) {
  const samples = metrics.get(name + "_bucket");
  if (!samples) return null;
  const byLe = new Map();
  for (const s of samples) {
    if (!matches(s.labels, want)) continue;
    const le = parseValue(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  if (byLe.size === 0) return null;
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

function subtractBuckets(cur, old) {
  if (!old) return cur;
  return cur.map((b, i) => ({ le: b.le, count: Math.max(0, b.count - ((old[i] && old[i].le === b.le) ? old[i].count : 0)) }));
}

// quantile is histogram_quantile: linear within the bucket the rank falls
// in; the largest finite bound when it falls in +Inf.
function quantile(q, bs) {
  if (!bs || bs.length === 0) return null;
  const total = bs[bs.length - 1].count;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const b of bs) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      if (b.count === prevCount) return b.le;
      return prevLe + (b.le - prevLe) * (rank - prevCount) / (b.count - prevCount);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

// ---- formatting --------------------------------------------------------------

function fmtCount(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return NONE;
  return Math.round(v).toLocaleString("en-US");
}

function fmtRate(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return NONE;
  if (v >= 100) return Math.round(v).toLocaleString("en-US") + "/s";
  return v.toFixed(1) + "/s";
}

function fmtSeconds(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return NONE;
  if (s < 0.001) return (s * 1000).toFixed(2) + " ms";
  if (s < 1) return (s * 1000).toFixed(1) + " ms";
  return s.toFixed(2) + " s";
}

function fmtTime(iso) {
  const d = new Date(iso);
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${pad(d.getUTCMilliseconds(), 3)}Z`;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setText(id, text) {
  const e = $(id);
  if (e && e.textContent !== text) e.textContent = text;
}

// ---- the stages --------------------------------------------------------------

// stages are the counters whose deltas are the rates per stage.
const stages = {
  accepted: (m) => {
    const produced = sum(m, "orderpipe_ingest_produce_duration_seconds_count", { topic: "orders.submitted", result: "ok" });
    return produced !== null ? produced : sum(m, "orderpipe_ingest_requests_total", { route: "post_order", code: "202" });
  },
  commands: (m) => sum(m, "orderpipe_inventory_commands_total", { replay: "false" }),
  final: (m) => sum(m, "orderpipe_orders_final_total"),
  sink: (m) => sum(m, "orderpipe_sink_rows_total"),
  requests: (m) => sum(m, "orderpipe_ingest_requests_total"),
};

// latencies are the histograms of the latency table.
const latencies = [
  { name: "edge · POST /v1/orders", metric: "orderpipe_ingest_request_duration_seconds", want: { route: "post_order" } },
  { name: "edge · GET /v1/orders/{id}", metric: "orderpipe_ingest_request_duration_seconds", want: { route: "get_order" } },
  { name: "accept → final", metric: "orderpipe_stage_latency_seconds", want: { stage: "accept_to_final" } },
  { name: "final → stored", metric: "orderpipe_stage_latency_seconds", want: { stage: "final_to_stored" } },
  { name: "sink · batch write", metric: "orderpipe_sink_batch_duration_seconds", want: {} },
];

const state = {
  prev: null,        // {t, counters}
  spark: {},         // stage -> [rates]
  history: [],       // [{t, hist: [buckets per latency]}], the last WINDOW_MS
  lookedUp: null,    // the order id shown in the journey
  lookupFinal: false,
};

function drawSpark(id, values) {
  const svg = $(id);
  if (!svg) return;
  const max = Math.max(1e-9, ...values);
  const n = values.length;
  svg.replaceChildren();
  if (n < 2) return;
  // The newest point at the right edge; the series fills the width until
  // it has SPARK_POINTS points, then scrolls.
  const step = 120 / (n - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(27 - (v / max) * 25).toFixed(1)}`).join(" ");
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `0,28 ${pts} 120,28`);
  area.setAttribute("class", "area");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts);
  line.setAttribute("class", "line");
  svg.append(area, line);
}

function renderRates(m, now) {
  const counters = {};
  for (const [k, f] of Object.entries(stages)) counters[k] = f(m);
  const prev = state.prev;
  for (const [k, v] of Object.entries(counters)) {
    setText("total-" + k, fmtCount(v));
    let rate = null;
    if (prev && v !== null && prev.counters[k] !== null && prev.counters[k] !== undefined) {
      const dt = (now - prev.t) / 1000;
      rate = dt > 0 ? Math.max(0, v - prev.counters[k]) / dt : null; // a restart resets counters
    }
    setText("rate-" + k, v === null ? NONE : rate === null ? "…" : fmtRate(rate));
    if (rate !== null) {
      const s = (state.spark[k] = state.spark[k] || []);
      s.push(rate);
      if (s.length > SPARK_POINTS) s.shift();
      drawSpark("spark-" + k, s);
    }
  }
  state.prev = { t: now, counters };

  const confirmed = sum(m, "orderpipe_orders_final_total", { status: "confirmed" });
  const rejected = sum(m, "orderpipe_orders_final_total", { status: "rejected" });
  setText("final-split", confirmed === null ? "" : `(${fmtCount(confirmed)} confirmed · ${fmtCount(rejected || 0)} rejected)`);
  setText("in-flight", fmtCount(sum(m, "orderpipe_ingest_orders_in_flight")));
  setText("total-shed", fmtCount(sum(m, "orderpipe_ingest_requests_total", { code: "503" })));
  setText("total-limited", fmtCount(sum(m, "orderpipe_ingest_rate_limited_total")));
}

function renderLatency(m, now) {
  const hist = latencies.map((l) => buckets(m, l.metric, l.want));
  state.history.push({ t: now, hist });
  while (state.history.length > 1 && now - state.history[0].t > WINDOW_MS) state.history.shift();
  const old = state.history[0];
  const rows = [];
  let windowed = false;
  latencies.forEach((l, i) => {
    const cur = hist[i];
    if (!cur) {
      rows.push(el("tr", { "data-latency": l.name }, el("td", {}, l.name), el("td", { class: "num muted" }, NONE), el("td", { class: "num muted" }, NONE), el("td", { class: "num muted" }, NONE), el("td", { class: "num muted" }, NONE)));
      return;
    }
    let bs = cur, scope = "total";
    const delta = old !== state.history[state.history.length - 1] ? subtractBuckets(cur, old.hist[i]) : null;
    if (delta && delta[delta.length - 1].count > 0) {
      bs = delta;
      scope = "in " + Math.round((now - old.t) / 1000) + "s";
      windowed = true;
    }
    const count = bs[bs.length - 1].count;
    const cells = [0.5, 0.9, 0.99].map((q) => el("td", { class: "num" }, count > 0 ? fmtSeconds(quantile(q, bs)) : NONE));
    rows.push(el("tr", { "data-latency": l.name }, el("td", {}, l.name), ...cells, el("td", { class: "num muted" }, `${fmtCount(count)} ${scope}`)));
  });
  $("latency-body").replaceChildren(...rows);
  setText("latency-window", windowed ? "percentiles over the last 30s, from histogram buckets" : "percentiles since start, from histogram buckets");
}

function renderLag(m) {
  const rows = [];
  const groups = groupSum(m, "orderpipe_consumer_lag_records", ["group", "topic"]);
  groups.sort((a, b) => (a.labels.group + a.labels.topic).localeCompare(b.labels.group + b.labels.topic));
  for (const g of groups) {
    rows.push(el("tr", { "data-lag": "group" }, el("td", {}, "group " + g.labels.group), el("td", { class: "muted" }, g.labels.topic), el("td", { class: "num " + lagClass(g.value) }, fmtCount(g.value))));
  }
  const views = groupSum(m, "orderpipe_view_lag_records", ["view"]);
  views.sort((a, b) => a.labels.view.localeCompare(b.labels.view));
  for (const v of views) {
    rows.push(el("tr", { "data-lag": "view" }, el("td", {}, "view " + v.labels.view), el("td", { class: "muted" }, "changelog"), el("td", { class: "num " + lagClass(v.value) }, fmtCount(v.value))));
  }
  // The collector leaves out what it could not read rather than show it
  // stale: say so, or a missing group reads as a caught-up one.
  if (sum(m, "orderpipe_lag_reading_ok", {}) === 0) {
    rows.unshift(el("tr", { "data-lag": "failed" }, el("td", { colSpan: 3, class: "warn" }, "lag unknown: the last reading failed (the broker did not answer); rows it could not read are left out")));
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colSpan: 3, class: "muted" }, NONE + " (this process exports no lag metrics)")));
  $("lag-body").replaceChildren(...rows);
}

function lagClass(v) {
  if (v >= 1000) return "bad";
  if (v >= 100) return "warn";
  return "good";
}

function renderDLQ(m) {
  const parts = [];
  const groups = groupSum(m, "orderpipe_processor_dead_letters_total", ["group"]);
  for (const g of groups) parts.push(["processor " + g.labels.group, g.value]);
  // The counter has a series per group once one dead-letters; until then a
  // process that runs the processors shows 0 for them.
  if (groups.length === 0 && m.has("orderpipe_orders_final_total")) parts.push(["processors", 0]);
  const sink = sum(m, "orderpipe_sink_dead_letters_total");
  if (sink !== null) parts.push(["postgres sink", sink]);
  const total = parts.length ? parts.reduce((a, p) => a + p[1], 0) : null;
  setText("dlq-total", fmtCount(total));
  $("dlq-total").className = "big " + (total === null ? "muted" : total > 0 ? "bad" : "good");
  $("dlq-body").replaceChildren(...parts.map(([name, v]) => el("tr", {}, el("td", {}, name), el("td", { class: "num" }, fmtCount(v)))));
}

function renderReadiness(r) {
  const badge = $("readiness-badge");
  const status = r ? r.status : "unreachable";
  badge.textContent = status;
  badge.className = "badge " + ({ ready: "good", degraded: "warn" }[status] || "bad");
  setText("readiness-status", status);
  const rows = [];
  const checks = r && r.checks ? Object.entries(r.checks).sort((a, b) => a[0].localeCompare(b[0])) : [];
  for (const [name, reason] of checks) {
    const ok = reason === "ok";
    rows.push(el("tr", { "data-check": name }, el("td", {}, el("span", { class: "dot " + (ok ? "good" : "bad") }), name), el("td", { class: ok ? "muted" : "reason" }, reason)));
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "muted" }, NONE)));
  $("readiness-body").replaceChildren(...rows);
}

// ---- polling -----------------------------------------------------------------

async function poll() {
  const now = Date.now();
  const errors = [];
  try {
    const [mr, rr] = await Promise.allSettled([
      fetch("/metrics", { cache: "no-store" }).then((r) => { if (!r.ok) throw new Error("/metrics: HTTP " + r.status); return r.text(); }),
      fetch("/readyz", { cache: "no-store" }).then((r) => r.json()),
    ]);
    if (mr.status === "fulfilled") {
      const m = parseMetrics(mr.value);
      renderRates(m, now);
      renderLatency(m, now);
      renderLag(m);
      renderDLQ(m);
    } else errors.push(String(mr.reason && mr.reason.message || mr.reason));
    if (rr.status === "fulfilled") renderReadiness(rr.value);
    else { renderReadiness(null); errors.push("/readyz: " + String(rr.reason && rr.reason.message || rr.reason)); }
    if (state.lookedUp && !state.lookupFinal) await lookup(state.lookedUp, false);
  } finally {
    setText("updated", "updated " + new Date(now).toISOString().slice(11, 19) + "Z");
    setText("poll-error", errors.join(" · "));
    setTimeout(poll, POLL_MS);
  }
}

// ---- order lookup ------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

const stepNames = {
  accepted: "accepted by the edge",
  reservation_requested: "reservation requested",
  reservation_answered: "reservation answered",
  confirmed: "confirmed",
  rejected: "rejected",
  stored: "stored in Postgres",
};

async function lookup(id, fresh) {
  if (fresh) {
    state.lookedUp = id;
    state.lookupFinal = false;
    $("journey").replaceChildren();
    $("order-summary").replaceChildren(el("span", { class: "muted" }, "looking up " + id + "…"));
  }
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = "Bearer " + key;
  let resp, body;
  try {
    resp = await fetch("/v1/orders/" + encodeURIComponent(id) + "?trace=1", { headers, cache: "no-store" });
    body = await resp.json();
  } catch (err) {
    $("order-summary").replaceChildren(el("span", { class: "error" }, "lookup failed: " + err.message));
    return;
  }
  if (state.lookedUp !== id) return; // another lookup started meanwhile
  if (!resp.ok) {
    state.lookupFinal = resp.status !== 503;
    $("order-summary").replaceChildren(el("span", { class: "error", "data-problem": String(resp.status) }, `${resp.status} ${body.title || ""}: ${body.detail || ""}`));
    $("journey").replaceChildren();
    return;
  }
  renderOrder(body);
}

function renderOrder(o) {
  const trace = o.trace || [];
  const stored = trace.find((s) => s.step === "stored");
  // Keep polling until the order is final and its stored step is settled.
  state.lookupFinal = o.status !== "pending" && !!stored && (!!stored.at || (stored.note || "").startsWith("unknown"));
  const items = (o.items || []).map((i) => `${i.quantity}× ${i.sku}`).join(", ");
  $("order-summary").replaceChildren(
    el("span", { class: "pill " + o.status, id: "order-status" }, o.status),
    el("span", {}, " " + o.order_id),
    el("span", { class: "muted" }, ` · customer ${o.customer_id} · ${items} · ${(o.total_cents / 100).toFixed(2)} ${o.currency} · version ${o.version}`),
    o.reason ? el("div", { class: "reason" }, o.reason) : ""
  );
  const t0 = trace.length && trace[0].at ? Date.parse(trace[0].at) : null;
  const last = trace.reduce((a, s) => (s.at ? Math.max(a, Date.parse(s.at)) : a), t0 || 0);
  const span = t0 !== null ? Math.max(1, last - t0) : 1;
  const items2 = trace.map((s) => {
    const offset = s.at && t0 !== null ? Date.parse(s.at) - t0 : null;
    const what = [stepNames[s.step] || s.step];
    if (s.sku) what.push(" · " + s.sku);
    if (s.result) what.push(" · " + s.result);
    const bar = el("div", { class: "bar" });
    if (offset !== null) {
      const mark = el("span", { class: "mark " + s.step });
      mark.style.left = ((offset / span) * 100).toFixed(2) + "%";
      bar.append(mark);
    }
    return el("li", { class: "step " + s.step + (s.at ? "" : " untimed"), "data-step": s.step, "data-sku": s.sku || "" },
      el("span", { class: "when" }, s.at ? fmtTime(s.at) : NONE),
      el("span", { class: "offset" }, offset !== null ? "+" + offset.toFixed(0) + " ms" : ""),
      el("span", { class: "what" }, what.join("")),
      bar,
      s.note ? el("span", { class: "note" }, s.note) : "");
  });
  $("journey").replaceChildren(...items2);
}

// ---- start -------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("orderpipe.apiKey");
  if (saved) $("api-key").value = saved;
  $("api-key").addEventListener("change", () => sessionStorage.setItem("orderpipe.apiKey", apiKey()));
  $("lookup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("lookup-id").value.trim();
    if (id) lookup(id, true);
  });
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash) {
    $("lookup-id").value = fromHash;
    lookup(fromHash, true);
  }
  poll();
});
