/*
 * memdiag web console: one page, no framework. Talks to the control plane's REST API
 * (/api/...) and its live feed (ws /live); charts with uPlot (served at vendor/uplot/).
 * Shapes follow control-plane/src/protocol.ts (WorkerInfo, SnapshotSummary, Diff, Suspect).
 * format.js (the terminal console's formatting), chart.js and details.js load before this file.
 */
"use strict";

// ---------- formatting (the rest comes from format.js) ----------
// fmtBytes, signedBytes, signedCount, fmtCount, fmtRatio, fmtDuration, fmtRange and
// REGION_CLASSES come from format.js: control-plane/src/format.ts, the terminal console's own.
function fmtTime(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}
function fmtAgo(t) {
  const s = Date.now() / 1000 - t;
  if (s < 2) return "just now";
  return fmtDuration(s) + " ago";
}
function signClass(n) { return n > 0 ? "grow" : n < 0 ? "shrink" : ""; }
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
const $ = (id) => document.getElementById(id);

// ---------- API ----------
const params = new URLSearchParams(location.search);
// The token never goes in a URL (it would end up in history and logs). Beyond loopback the
// browser's Basic-auth prompt (any user, the token as password) authenticates fetches and the
// websocket. (sessionStorage "memdiag_token", if a user sets it, is sent as a Bearer header.)
if (params.has("token")) {
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
}
const TOKEN = sessionStorage.getItem("memdiag_token") || "";
const base = location.pathname.replace(/[^/]*$/, ""); // the folder this page is served from
async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(base + path.replace(/^\//, ""), {
    method: opts.method || "GET", headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await r.text();
  let body;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}
/** the API may answer a bare array or { <key>: [...] } */
function listOf(body, key) {
  if (Array.isArray(body)) return body;
  if (body && Array.isArray(body[key])) return body[key];
  return [];
}
function pointsOf(body) {
  const pts = Array.isArray(body) ? body : body && (body.points || body.series || body.data);
  if (!Array.isArray(pts)) return [];
  return pts.map((p) => (Array.isArray(p) ? { t: p[0], v: p[1] } : { t: p.t ?? p.time, v: p.v ?? p.value }));
}

// ---------- state ----------
function windowFromUrl() {
  const w = params.get("window");
  if (!w) return 600;
  const m = /^(\d+)(s|m|h)?$/.exec(w);
  if (!m) return 600;
  return Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] || "s"]);
}
const state = {
  windowS: windowFromUrl(),
  workers: new Map(), // key → WorkerInfo
  selected: null, // worker key
  hist: { t: [], id: [], deep: [], m: [] }, // selected worker's points in the window
  layerKind: "fallback",
  pick: { a: null, b: null }, // { id, time }
  suspects: [],
  diff: null,
  diffSection: "all",
  group: null, // { signature, worker }
  scan: null, // { key, since, id }
  live: false,
  lastUpdate: 0,
};
let chart = null;

// ---------- workers ----------
async function loadWorkers() {
  const ws = listOf(await api("/api/workers"), "workers");
  state.workers.clear();
  for (const w of ws) state.workers.set(w.key, w);
  if (!state.selected || !state.workers.has(state.selected)) {
    const live = ws.filter((w) => w.state === "live").sort((a, b) => (b.rss_bytes || 0) - (a.rss_bytes || 0));
    state.selected = (live[0] || ws[0] || {}).key || null;
  }
  renderWorkers();
  loadWorkerChanges().catch(() => {});
}

/** RSS change over the window for each live worker (first and last point of its RSS series) */
async function loadWorkerChanges() {
  const to = Date.now() / 1000 + 5, from = to - state.windowS - 5;
  const live = [...state.workers.values()].filter((w) => w.state === "live").slice(0, 16);
  await Promise.all(live.map(async (w) => {
    const pts = pointsOf(await api(`/api/series?worker=${encodeURIComponent(w.key)}&metric=system.rss_bytes&from=${from}&to=${to}`).catch(() => []));
    if (pts.length >= 2) w._change = pts[pts.length - 1].v - pts[0].v;
  }));
  renderWorkers();
}

function renderWorkers() {
  const el = $("workers");
  const ws = [...state.workers.values()].sort((a, b) => (a.state === b.state ? a.pid - b.pid : a.state === "live" ? -1 : 1));
  if (!ws.length) {
    el.innerHTML = `<p class="empty">No workers have reported yet. Agents push here when <code>control_plane.push</code> is on in
      memdiag.config.json: run <code>npm run configure</code>, then <code>nginx -s reload</code>. They connect to
      <code>${esc(location.host)}/ingest</code>.</p>`;
    return;
  }
  const rows = ws.map((w) => {
    const ch = w._change;
    return `<tr class="clickable${w.key === state.selected ? " selected" : ""}" data-key="${esc(w.key)}">
      <td>${esc(w.instance)}</td>
      <td class="num">${w.pid}</td>
      <td><span class="tag ${w.state === "live" ? "live" : ""}">${esc(w.state)}</span></td>
      <td class="num">${fmtBytes(w.rss_bytes)}</td>
      <td class="num ${signClass(ch)}">${ch === undefined ? "" : signedBytes(ch)}</td>
      <td class="num">${fmtCount(w.snapshots)}</td>
      <td class="muted">${fmtAgo(w.last_seen)}</td></tr>`;
  });
  const sel = state.workers.get(state.selected);
  const liveN = ws.filter((w) => w.state === "live").length;
  const goneNote = sel && sel.state === "gone"
    ? `<p class="hint">pid ${sel.pid} is gone (nginx reload, or the worker exited); its history stays here.${liveN ? " Click a live worker to follow it." : ""}</p>`
    : "";
  el.innerHTML = `<table><thead><tr><th>instance</th><th class="num">pid</th><th>state</th><th class="num">RSS</th>
    <th class="num">change</th><th class="num">snapshots</th><th>last seen</th></tr></thead><tbody>${rows.join("")}</tbody></table>${goneNote}`;
  for (const tr of el.querySelectorAll("tr[data-key]")) tr.addEventListener("click", () => selectWorker(tr.dataset.key));
}

async function selectWorker(key) {
  if (key === state.selected && chart) return;
  state.selected = key;
  state.pick = { a: null, b: null };
  state.diff = null;
  $("diff-title").textContent = "";
  $("diff-filters").innerHTML = "";
  $("diff").innerHTML = `<p class="empty">No diff yet. Click two points on the chart (A, then B), or use “Compare window start → latest”.</p>`;
  $("pick-hint").textContent = "Click a point on the chart to set A, then another for B: the diff between them appears below.";
  renderWorkers();
  await loadHistory();
  renderClasses();
}

// ---------- scan now ----------
/** POST a deep command, then follow it (GET /api/commands/:id) until the worker's snapshot answers it */
async function scanNow() {
  const key = state.selected;
  if (!key) return;
  $("scan-now").disabled = true;
  const scan = { key, since: Date.now() / 1000, id: null };
  state.scan = scan;
  $("scan-status").textContent = `deep scan requested at ${fmtTime(scan.since)} — waiting for the worker…`;
  try {
    const r = await api(`/api/workers/${encodeURIComponent(key)}/command`, { method: "POST", body: { command: "deep" } });
    scan.id = r && r.id;
  } catch (e) {
    $("scan-status").textContent = `scan request failed: ${e.message}`;
    state.scan = null;
    $("scan-now").disabled = false;
    return;
  }
  for (let i = 0; i < 120 && state.scan === scan && scan.id; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    let st;
    try { st = await api(`/api/commands/${encodeURIComponent(scan.id)}`); } catch { continue; }
    if (state.scan !== scan) return; // finished through the live feed
    if (st.snapshot_id) return scanDone(scan, st.snapshot_id);
    if (st.state === "failed" || st.state === "timeout") {
      $("scan-status").textContent = `deep scan ${st.state === "timeout" ? "timed out" : "failed"}${st.error ? ": " + st.error : ""}`;
      state.scan = null;
      $("scan-now").disabled = false;
      return;
    }
  }
  if (state.scan === scan) {
    $("scan-status").textContent = "no answer from the worker after 2 min — is it still connected? (see Workers)";
    state.scan = null;
    $("scan-now").disabled = false;
  }
}

function scanDone(scan, snapshotId) {
  if (state.scan !== scan) return;
  state.scan = null;
  $("scan-now").disabled = false;
  $("scan-status").textContent = `deep scan done at ${fmtTime(Date.now() / 1000)}${snapshotId ? ` (snapshot ${snapshotId})` : ""}`;
  if (!state.diff) renderClassesFromSnapshot();
  if (state.group) showGroup(state.group.signature, state.group.worker);
}

// ---------- live feed ----------
let wsRetry = 1000;
function connectLive() {
  // browsers cannot set headers on a websocket: the token travels as the subprotocol bearer.<token>
  const url = location.origin.replace(/^http/, "ws") + base + "live";
  const ws = TOKEN ? new WebSocket(url, ["bearer." + TOKEN]) : new WebSocket(url);
  ws.onopen = () => {
    wsRetry = 1000;
    setConn(true);
    // catch up on what happened while we were away
    refreshAll().catch(() => {});
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    onLive(msg);
  };
  ws.onclose = () => {
    setConn(false);
    setTimeout(connectLive, wsRetry);
    wsRetry = Math.min(wsRetry * 2, 15000);
  };
}
function setConn(up) {
  state.live = up;
  const el = $("conn");
  el.className = "conn " + (up ? "conn-up" : "conn-down");
  el.textContent = up ? "live" : "reconnecting…";
}

function onLive(msg) {
  if (msg.type === "snapshot" && msg.worker) {
    const prev = state.workers.get(msg.worker.key);
    state.workers.set(msg.worker.key, Object.assign({}, msg.worker, { _change: prev && prev._change }));
    if (!state.selected) { state.selected = msg.worker.key; loadHistory().catch(() => {}); }
    if (msg.worker.key === state.selected && msg.summary) {
      const h = state.hist;
      const t = msg.summary.time;
      if (!h.t.length || t > h.t[h.t.length - 1]) {
        const m = msg.summary.metrics || {};
        const deep = Object.keys(m).some((k) => k.startsWith("pool.unrooted_total.") || k.startsWith("size_class_total."));
        h.t.push(t); h.id.push(msg.snapshot_id); h.deep.push(deep); h.m.push(m);
        trimWindow();
        drawChart(false);
        updateWorkerChange();
        if (deep) classesSoon();

      }
    } else {
      renderWorkers();
    }
    state.lastUpdate = Date.now();
  } else if (msg.type === "worker_gone" && msg.worker) {
    state.workers.set(msg.worker.key, msg.worker);
    renderWorkers();
    if (msg.worker.key === state.selected) $("scan-now").disabled = true;
  } else if (msg.type === "command_result") {
    if (state.scan && msg.id === state.scan.id && !msg.ok) {
      $("scan-status").textContent = `deep scan failed: ${msg.error || "the worker refused"}`;
      state.scan = null;
      $("scan-now").disabled = false;
    }
  } else if (msg.type === "suspects" && Array.isArray(msg.suspects)) {
    // the feed carries the server's default window; keep our own when the user chose another
    if (!msg.suspects.length || msg.suspects.every((s) => s.window_s === state.windowS)) {
      state.suspects = msg.suspects;
      renderSuspects();
    } else {
      loadSuspects();
    }
  }
}

// ---------- wiring ----------
async function refreshAll() {
  await loadWorkers();
  await Promise.all([loadHistory(), loadSuspects()]);
  if (!state.diff) renderClasses();
}

(() => {
  const sel = $("window");
  if (![...sel.options].some((o) => Number(o.value) === state.windowS)) {
    const o = document.createElement("option");
    o.value = String(state.windowS);
    o.textContent = fmtDuration(state.windowS);
    sel.appendChild(o);
  }
  sel.value = String(state.windowS);
})();
// the live feed pushes suspects for the server's window (10 min); ask for ours every 10 s as well
setInterval(() => { if (state.live) loadSuspects(); }, 10000);
$("window").addEventListener("change", (e) => {
  state.windowS = Number(e.target.value);
  state.pick = { a: null, b: null };
  refreshAll().catch(showError);
});
$("scan-now").addEventListener("click", scanNow);
$("diff-unchanged").addEventListener("change", renderDiff);
$("diff-window").addEventListener("click", () => {
  const h = state.hist;
  if (h.id.length < 2) { $("diff").innerHTML = `<p class="empty">Need at least two snapshots in the window.</p>`; return; }
  state.pick = { a: { id: h.id[0], time: h.t[0] }, b: { id: h.id[h.id.length - 1], time: h.t[h.t.length - 1] } };
  chart && chart.redraw(false);
  loadDiff(`a=${h.id[0]}&b=${h.id[h.id.length - 1]}`);
});
window.addEventListener("resize", () => { if (chart) chart.setSize({ width: Math.max(320, $("chart-wrap").clientWidth), height: 300 }); });
setInterval(() => {
  $("clock").textContent = new Date().toLocaleTimeString("en-GB", { hour12: false });
  if (state.hist.t.length) {
    const last = state.hist.t[state.hist.t.length - 1];
    $("chart-status").textContent = $("chart-status").textContent.replace(/\(.*? ago\)|\(just now\)/, `(${fmtAgo(last)})`);
  }
}, 1000);

function showError(e) {
  $("chart-status").textContent = "Error: " + (e && e.message ? e.message : e);
}

refreshAll().catch(showError).finally(connectLive);
