// The status page: polls /status every 5 s and draws it. Plain JS and inline SVG, nothing fetched
// from anywhere else, so it works offline and behind a firewall.
// A bearer token, when the endpoint needs one, is given as /#token=... (a fragment never reaches
// the server or its logs); it is kept for this tab only.
// The words follow the document's `mode`: load (req/s) and slaves for the GBrowse render farm,
// jobs and nodes for a batch cluster (`run --cluster`).
"use strict";

window.onerror = function (message, source, line) {
  const box = document.getElementById("js-errors");
  if (box) {
    box.hidden = false;
    box.textContent += `script error: ${message} (${source}:${line})\n`;
  }
  document.documentElement.dataset.jsError = "1";
};

const POLL_MS = 5000;
const SPAN_S = 6 * 3600;
const MIN_SPAN_S = 300;
const SVG = "http://www.w3.org/2000/svg";
// Text of the elements marked data-word="key", by mode.
const WORDS = {
  gbrowse: {
    load: "load", band: "table band", members: "slaves", sensor: "load sensor",
    loadChart: "load", loadKey: "req/s", runningKey: "", fleetChart: "fleet size",
    decisionLoad: "load", none: "no slaves",
  },
  cluster: {
    load: "jobs pending", band: "node band", members: "nodes", sensor: "queue sensor",
    loadChart: "queue", loadKey: "pending jobs", runningKey: "running jobs", fleetChart: "nodes",
    decisionLoad: "pending slots", none: "no nodes",
  },
};

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("controller-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("controller-token");
}

async function poll() {
  const headers = {};
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const banner = document.getElementById("unreachable");
  try {
    const response = await fetch("/status", { headers, cache: "no-store" });
    if (response.status === 401) throw new Error("401: open this page as /#token=<token>");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    banner.hidden = true;
  } catch (error) {
    banner.hidden = false;
    banner.textContent = `cannot read /status: ${error.message}`;
  }
}

// ---- formatting ---------------------------------------------------------------------------

const num = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const money = (v) => (v === null || v === undefined ? "–" : `$${Number(v).toFixed(v < 10 ? 3 : 2)}`);
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });

function ago(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s}s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m}m`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h}h ${m % 60}m` : `${Math.floor(h / 24)}d ${h % 24}h`;
}

function setText(id, text, cls) {
  const el = document.getElementById(id);
  el.textContent = text;
  if (cls !== undefined) el.className = cls;
}

function fillTable(id, rows, columns, empty) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = body.insertRow();
    tr.className = "none";
    const td = tr.insertCell();
    td.colSpan = columns;
    td.textContent = empty;
    return;
  }
  for (const cells of rows) {
    const tr = body.insertRow();
    for (const cell of cells) {
      const td = tr.insertCell();
      if (cell instanceof Node) td.append(cell);
      else if (cell && typeof cell === "object") {
        td.textContent = cell.text;
        if (cell.cls) td.className = cell.cls;
      } else td.textContent = cell;
    }
  }
}

function dotted(text, ok) {
  const span = document.createElement("span");
  const dot = document.createElement("span");
  dot.className = `dot ${ok ? "ok" : "bad"}`;
  span.append(dot, text);
  return span;
}

// ---- page ---------------------------------------------------------------------------------

function render(s) {
  const now = s.now;
  const cluster = s.mode === "cluster";
  const words = WORDS[cluster ? "cluster" : "gbrowse"];
  for (const node of document.querySelectorAll("[data-word]")) node.textContent = words[node.dataset.word];
  document.querySelector(".k-running").hidden = !cluster;
  const name = [s.fleet, s.cluster ? `cluster ${s.cluster}` : ""].filter(Boolean).join(" · ");
  document.getElementById("fleet").textContent = name ? `· ${name}` : "";
  document.getElementById("dry-run").hidden = !s.dry_run;

  const actors = Object.entries(s.actors || {});
  const failing = actors.filter(([, a]) => a.state !== "running").map(([n]) => n);
  if (actors.length === 0) setText("health", "no actors yet", "badge warn");
  else if (failing.length === 0) setText("health", "all actors running", "badge ok");
  else setText("health", `not running: ${failing.join(", ")}`, "badge bad");
  setText("updated", `updated ${clock(now)}`);

  if (cluster) renderQueue(s.queue, s.nodes || {});
  else {
    setText("t-load", num(s.load));
    setText("t-load-more", "req/s");
    setText("t-pending", `${s.pending_requests} pending`);
  }
  setText("t-band", s.table_band ? `${s.table_band[0]}–${s.table_band[1]}` : "–");
  setText("t-fleet", `${s.desired ?? "–"} / ${s.ready ?? 0}`);
  setText("t-cost", money(s.cost_per_hour));
  setText("t-budget", s.max_cost_per_hour ? `$/hour, cap ${money(s.max_cost_per_hour)}` : "$/hour");
  setText("t-spend", money(s.spend));
  setText("t-uptime", `in ${ago(s.uptime)}`);
  const sensor = s.sensor || { ok: true };
  setText("t-sensor", sensor.ok ? "ok" : "lost", sensor.ok ? "ok" : "bad");
  setText("t-sensor-why", sensor.ok ? "" : `${sensor.reason} (${ago(now - sensor.since)})`);

  drawCharts(s.series || [], now, cluster);

  fillTable(
    "slaves",
    (s.slaves || []).map((v) => [
      v.instance_id,
      v.address || "–",
      dotted(v.state, v.healthy),
      v.since ? `${ago(now - v.since)} ago` : "–",
    ]),
    4,
    words.none,
  );
  fillTable(
    "actors",
    actors.map(([name, a]) => [
      name,
      dotted(a.error && a.state !== "running" ? `${a.state}: ${a.error}` : a.state, a.state === "running"),
      String(a.restarts),
    ]),
    3,
    "no actor has reported yet",
  );
  const err = s.last_error;
  setText("last-error", err ? `last EC2 error ${ago(now - err.at)} ago: ${err.operation} ${err.code} (${err.kind})` : "");
  fillTable(
    "decisions",
    (s.decisions || []).slice(0, 12).map((d) => [
      clock(d.at),
      cluster ? num(d.load, 0) : num(d.load),
      `${d.band[0]}–${d.band[1]}`,
      String(d.desired),
      action(d),
      { text: d.reason, cls: "reason" },
    ]),
    6,
    "no decision yet",
  );
  document.documentElement.dataset.rendered = String((Number(document.documentElement.dataset.rendered) || 0) + 1);
}

function renderQueue(q, nodes) {
  setText("t-load", q ? String(q.pending_jobs) : "–");
  let more = "no queue reading yet";
  if (q) {
    more = `${q.pending_slots} slots · ${q.running_jobs} running`;
    if (q.pending_jobs) more += ` · oldest ${ago(q.oldest_pending_seconds)}`;
  }
  setText("t-load-more", more);
  setText("t-pending", `${nodes.setting_up || 0} setting up · ${nodes.booting || 0} booting · ${nodes.draining || 0} draining`);
}

function action(d) {
  const parts = [];
  if (d.launch) parts.push(`+${d.launch}`);
  if (d.remove && d.remove.length) parts.push(`−${d.remove.length}`);
  const text = parts.length ? parts.join(" ") : "hold";
  return d.dry_run && parts.length ? `${text} (dry run)` : text;
}

// ---- charts -------------------------------------------------------------------------------

function drawCharts(series, now, cluster) {
  // From the first point (at least MIN_SPAN_S back, at most SPAN_S): a young controller's
  // history fills the chart rather than a sliver at its right edge.
  const start = Math.max(now - SPAN_S, Math.min(now - MIN_SPAN_S, series.length ? series[0].t : now));
  const pick = (key) => series.map((p) => [p.t, p[key]]);
  const extend = (points) => (points.length ? [...points, [now, points[points.length - 1][1]]] : points);
  if (cluster) {
    chart(
      "chart-load",
      start,
      now,
      [
        { points: pick("pending"), color: "#2563eb", step: true, area: true },
        { points: pick("running"), color: "#0d9488", step: true },
      ],
      (v) => String(Math.round(v)),
      true,
    );
  } else {
    chart("chart-load", start, now, [{ points: pick("load"), color: "#2563eb", area: true }], (v) => num(v, v < 10 ? 1 : 0));
  }
  chart(
    "chart-fleet",
    start,
    now,
    [
      { points: extend(pick("ready")), color: "#16a34a", step: true, area: true },
      { points: extend(pick("desired")), color: "#d97706", step: true, dash: "5 3" },
    ],
    (v) => String(Math.round(v)),
    true,
  );
  chart("chart-cost", start, now, [{ points: extend(pick("cost")), color: "#7c3aed", step: true, area: true }], (v, step) => `$${num(v, decimals(step))}`);
}

// Enough decimals to tell the ticks of a `step` apart ($0.0002 and $0.0004, not $0.00 twice).
function decimals(step) {
  return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
}

function niceStep(max, ticks, integer) {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 5, 10].map((m) => m * power).find((c) => c >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  return step;
}

function timeStep(span) {
  const steps = [60, 120, 300, 600, 900, 1800, 3600, 7200];
  return steps.find((s) => span / s <= 8) || 7200;
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function chart(id, t0, t1, lines, format, integer = false) {
  const svg = document.getElementById(id);
  const width = svg.clientWidth || 800;
  const height = svg.clientHeight || 120;
  const pad = { left: 44, right: 10, top: 8, bottom: 18 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();

  const values = lines.flatMap((l) => l.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const top = Math.max(integer ? 1 : 0.000001, ...values);
  const step = niceStep(top, 3, integer);
  const yMax = Math.ceil(top / step) * step;
  const x = (t) => pad.left + ((t - t0) / Math.max(1, t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / yMax) * (height - pad.top - pad.bottom);

  for (let v = 0; v <= yMax + step / 2; v += step) {
    svg.append(el("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
    svg.append(el("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v, step)));
  }
  const tStep = timeStep(t1 - t0);
  for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) {
    svg.append(el("line", { class: "grid", x1: x(t), x2: x(t), y1: pad.top, y2: height - pad.bottom }));
    svg.append(el("text", { x: x(t), y: height - 4, "text-anchor": "middle" }, clock(t)));
  }
  if (values.length === 0) {
    svg.append(el("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data yet"));
    return;
  }
  for (const line of lines) {
    for (const run of segments(line.points.filter((p) => p[0] >= t0))) {
      const d = path(run, x, y, line.step);
      if (line.area) {
        const base = y(0);
        const area = `${d} L${x(run[run.length - 1][0]).toFixed(1)},${base} L${x(run[0][0]).toFixed(1)},${base} Z`;
        svg.append(el("path", { d: area, fill: line.color, "fill-opacity": "0.12", stroke: "none" }));
      }
      const attrs = { class: "series", d, fill: "none", stroke: line.color, "stroke-width": "2", "stroke-linejoin": "round" };
      if (line.dash) attrs["stroke-dasharray"] = line.dash;
      svg.append(el("path", attrs));
    }
  }
}

function segments(points) {
  // Break the line where a value is missing (the sensor was lost) instead of drawing through it.
  const runs = [];
  let run = [];
  for (const p of points) {
    if (p[1] === null || p[1] === undefined) {
      if (run.length) runs.push(run);
      run = [];
    } else run.push(p);
  }
  if (run.length) runs.push(run);
  return runs;
}

function path(points, x, y, step) {
  let d = `M${x(points[0][0]).toFixed(1)},${y(points[0][1]).toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    const [t, v] = points[i];
    if (step) d += ` H${x(t).toFixed(1)}`;
    d += ` L${x(t).toFixed(1)},${y(v).toFixed(1)}`;
  }
  return d;
}

poll();
setInterval(poll, POLL_MS);
window.addEventListener("resize", poll);
