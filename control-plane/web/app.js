/*
 * memdiag web console: one page, no framework. Talks to the control plane's REST API
 * (/api/...) and its live feed (ws /live); charts with uPlot (served at vendor/uplot/).
 * Shapes follow control-plane/src/protocol.ts (WorkerInfo, SnapshotSummary, Diff, Suspect).
 */
"use strict";

// ---------- formatting ----------
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

// ---------- layers (what the stacked chart shows) ----------
const FALLBACK_LAYERS = [
  ["glibc", "glibc heap", "#7aa2f7"],
  ["luajit", "LuaJIT GC", "#bb9af7"],
  ["other", "rest of RSS", "#565f89"],
];
const REGION_RE = new RegExp(`^region\\.(${REGION_CLASSES.map(([c]) => c).join("|")})(\\..*)?$`);

/** region RSS by class when the agent reports regions, else glibc / LuaJIT / rest of RSS */
function layersOf(m) {
  const byClass = {};
  let any = false;
  for (const k in m) {
    const r = REGION_RE.exec(k);
    if (!r) continue;
    if (k.endsWith(".rss_bytes")) { byClass[r[1]] = (byClass[r[1]] || 0) + m[k]; any = true; }
  }
  if (any) return { kind: "regions", values: REGION_CLASSES.map(([c]) => byClass[c] || 0) };
  const rss = m["system.rss_bytes"] || 0;
  const glibc = (m["glibc.arena_bytes"] || 0) + (m["glibc.mmap_bytes"] || 0);
  const lj = m["luajit.gc_bytes"] || 0;
  return { kind: "fallback", values: [glibc, lj, Math.max(0, rss - glibc - lj)] };
}
function layerDefs(kind) { return kind === "regions" ? REGION_CLASSES : FALLBACK_LAYERS; }
function metricsForLayers(names) {
  const out = ["system.rss_bytes"];
  const regional = names.filter((n) => REGION_RE.test(n) && n.endsWith(".rss_bytes"));
  if (regional.length) return out.concat(regional);
  return out.concat(["glibc.arena_bytes", "glibc.mmap_bytes", "luajit.gc_bytes"]);
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

// ---------- history + chart ----------
async function loadHistory() {
  const key = state.selected;
  const w = key && state.workers.get(key);
  $("scan-now").disabled = !w || w.state !== "live";
  if (!w) { resetChart(); return; }
  $("chart-title").textContent = `pid ${w.pid} · ${w.instance}`;
  const to = Date.now() / 1000 + 5, from = to - state.windowS - 5;
  const k = encodeURIComponent(key);
  const [snaps, names] = await Promise.all([
    api(`/api/workers/${k}/snapshots?from=${from}&to=${to}&limit=20000`).then((b) => listOf(b, "snapshots")),
    api("/api/metrics/names").then((b) => listOf(b, "names")).catch(() => []),
  ]);
  if (state.selected !== key) return;
  const metrics = metricsForLayers(names);
  const series = await Promise.all(metrics.map((m) =>
    api(`/api/series?worker=${k}&metric=${encodeURIComponent(m)}&from=${from}&to=${to}`).then(pointsOf).catch(() => [])));
  if (state.selected !== key) return;
  snaps.sort((a, b) => a.time - b.time);
  const byTime = new Map(snaps.map((s) => [s.time, { id: s.id, time: s.time, deep: !!s.deep, m: { "system.rss_bytes": s.rss_bytes } }]));
  metrics.forEach((name, i) => {
    for (const p of series[i]) {
      const row = byTime.get(p.t);
      if (row) row.m[name] = p.v;
    }
  });
  const h = { t: [], id: [], deep: [], m: [] };
  for (const s of byTime.values()) { h.t.push(s.time); h.id.push(s.id); h.deep.push(s.deep); h.m.push(s.m); }
  state.hist = h;
  drawChart(true);
  updateWorkerChange();
}

function trimWindow() {
  const h = state.hist, cut = Date.now() / 1000 - state.windowS;
  let i = 0;
  while (i < h.t.length - 1 && h.t[i] < cut) i++;
  if (i > 0) for (const k of ["t", "id", "deep", "m"]) h[k].splice(0, i);
}

function chartData() {
  const h = state.hist;
  const kind = h.m.some((m) => layersOf(m).kind === "regions") ? "regions" : "fallback";
  state.layerKind = kind;
  const defs = layerDefs(kind);
  const raw = defs.map(() => []);
  for (const m of h.m) {
    const l = layersOf(m);
    const vals = l.kind === kind ? l.values : defs.map(() => 0);
    vals.forEach((v, i) => raw[i].push(v));
  }
  // stacked: series i is the sum of layers i..n-1 so each band fills down to the next one
  const stacked = defs.map((_, i) => h.t.map((_, j) => {
    let s = 0;
    for (let k = i; k < defs.length; k++) s += raw[k][j];
    return s;
  }));
  const rss = h.m.map((m) => (m["system.rss_bytes"] === undefined ? null : m["system.rss_bytes"]));
  return { defs, raw, data: [h.t.slice(), ...stacked, rss] };
}

function resetChart() {
  if (chart) { chart.destroy(); chart = null; }
  $("chart").dataset.points = "0";
  $("chart-empty").style.display = "";
  $("legend").innerHTML = "";
}

function drawChart(rebuild) {
  const h = state.hist;
  const cd = chartData();
  $("chart").dataset.points = String(h.t.length);
  if (!h.t.length) {
    resetChart();
    $("chart-empty").textContent = "No snapshots from this worker in the window yet. Agents send one every few seconds; wait a moment or widen the window.";
    return;
  }
  $("chart-empty").style.display = "none";
  const sig = cd.defs.map((d) => d[0]).join(",");
  if (chart && !rebuild && chart._sig === sig) {
    chart._raw = cd.raw;
    chart.setData(cd.data);
  } else {
    if (chart) chart.destroy();
    const width = Math.max(320, $("chart-wrap").clientWidth);
    const series = [{ value: (u, v) => (v === null ? "" : fmtTime(v)) }];
    cd.defs.forEach(([, label, color]) => series.push({ label, stroke: color, fill: color + "cc", width: 1, points: { show: false } }));
    series.push({ label: "RSS", stroke: "#f2f2f2", width: 2, dash: [6, 3], points: { show: false } });
    chart = new uPlot({
      width, height: 300, series,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: { x: { time: true } },
      axes: [
        {
          stroke: "#8a93a3", grid: { stroke: "#2a303a" }, ticks: { stroke: "#2a303a" }, space: 70,
          // whole seconds at most: snapshots are seconds apart
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400],
          values: (u, splits, ai, space, incr) => splits.map((v) => (incr >= 60 ? fmtTime(v).slice(0, 5) : fmtTime(v))),
        },
        { stroke: "#8a93a3", grid: { stroke: "#2a303a" }, ticks: { stroke: "#2a303a" }, size: 70, values: (u, vs) => vs.map(fmtBytes) },
      ],
      hooks: {
        setCursor: [(u) => renderLegend(u.cursor.idx)],
        draw: [drawPickMarkers],
      },
    }, cd.data, $("chart"));
    chart._sig = sig;
    chart._raw = cd.raw;
    chart.over.addEventListener("click", () => pickPoint(chart.cursor.idx));
  }
  renderLegend(null);
  const last = h.t[h.t.length - 1];
  $("chart-status").textContent = `${h.t.length} snapshots in the window · last ${fmtTime(last)} (${fmtAgo(last)})` +
    (state.layerKind === "fallback" ? " · layers from glibc/LuaJIT counters (the agent reports no region breakdown yet)" : "");
}

function renderLegend(idx) {
  const h = state.hist;
  if (!chart || !h.t.length) return;
  const i = idx === null || idx === undefined || idx < 0 ? h.t.length - 1 : idx;
  const defs = layerDefs(state.layerKind);
  const raw = chart._raw;
  const items = [];
  defs.forEach(([, label, color], k) => {
    if (!raw[k].some((x) => x > 0)) return; // a layer that is empty all along says nothing
    const v = raw[k][i], d = raw[k][i] - raw[k][0];
    items.push(`<span class="item"><span class="sw" style="background:${color}"></span>${esc(label)}
      <span class="val">${fmtBytes(v)}</span> <span class="val small ${signClass(d)}">${signedBytes(d)}</span></span>`);
  });
  const rss = h.m[i]["system.rss_bytes"], rss0 = h.m[0]["system.rss_bytes"];
  items.unshift(`<span class="item"><span class="sw" style="background:#f2f2f2"></span><b>RSS</b>
    <span class="val">${fmtBytes(rss)}</span> <span class="val small ${signClass(rss - rss0)}">${signedBytes(rss - rss0)}</span></span>`);
  items.push(`<span class="item muted">at ${fmtTime(h.t[i])}${h.deep[i] ? " · deep scan" : ""} · changes since window start</span>`);
  $("legend").innerHTML = items.join("");
}

function drawPickMarkers(u) {
  const ctx = u.ctx;
  for (const [name, p] of [["A", state.pick.a], ["B", state.pick.b]]) {
    if (!p) continue;
    const x = Math.round(u.valToPos(p.time, "x", true));
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.save();
    ctx.strokeStyle = "#f2a65a";
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillStyle = "#f2a65a";
    ctx.font = `${12 * devicePixelRatio}px sans-serif`;
    ctx.fillText(name, x + 4 * devicePixelRatio, u.bbox.top + 14 * devicePixelRatio);
    ctx.restore();
  }
}

function pickPoint(idx) {
  const h = state.hist;
  if (idx === null || idx === undefined || idx < 0 || idx >= h.t.length) return;
  const p = { id: h.id[idx], time: h.t[idx] };
  if (!state.pick.a || state.pick.b) state.pick = { a: p, b: null };
  else state.pick.b = p;
  chart && chart.redraw(false);
  const { a, b } = state.pick;
  if (a && b) {
    $("pick-hint").textContent = `A = ${fmtTime(a.time)}, B = ${fmtTime(b.time)}. Click again to start a new pair.`;
    const [x, y] = a.time <= b.time ? [a, b] : [b, a];
    loadDiff(`a=${x.id}&b=${y.id}`);
  } else {
    $("pick-hint").textContent = `A = ${fmtTime(a.time)}. Now click a second point for B.`;
  }
}

function updateWorkerChange() {
  const h = state.hist, w = state.workers.get(state.selected);
  if (w && h.m.length) w._change = (h.m[h.m.length - 1]["system.rss_bytes"] || 0) - (h.m[0]["system.rss_bytes"] || 0);
  renderWorkers();
}

// ---------- diff ----------
const SECTIONS = ["all", "system", "region", "glibc", "luajit", "shm", "pool", "size_class"];
async function loadDiff(query) {
  $("diff").innerHTML = `<p class="empty">Computing diff…</p>`;
  try {
    state.diff = await api(`/api/diff?${query}`);
  } catch (e) {
    $("diff").innerHTML = `<p class="empty">Diff failed: ${esc(e.message)}</p>`;
    return;
  }
  renderDiff();
  renderClasses();
}

function renderDiff() {
  const d = state.diff;
  if (!d) return;
  $("diff-title").textContent = `${fmtTime(d.a.time)} → ${fmtTime(d.b.time)} (${fmtDuration(d.b.time - d.a.time)})`;
  $("diff-filters").innerHTML = SECTIONS.map((s) => `<button data-s="${s}" class="${s === state.diffSection ? "on" : ""}">${s.replace("_", " ")}</button>`).join("");
  for (const b of $("diff-filters").querySelectorAll("button")) b.addEventListener("click", () => { state.diffSection = b.dataset.s; renderDiff(); });
  const showAll = $("diff-unchanged").checked;
  const rows = (d.rows || []).filter((r) => (state.diffSection === "all" || r.section === state.diffSection) &&
    (showAll || r.delta_bytes !== 0 || (r.delta_count || 0) !== 0));
  if (!rows.length) {
    $("diff").innerHTML = `<p class="empty">Nothing changed${state.diffSection === "all" ? "" : " in " + state.diffSection} between A and B. Tick “show unchanged” to see every row.</p>`;
    return;
  }
  const shown = rows.slice(0, 60);
  const html = shown.map((r) => {
    const sig = unrootedSig(r.key);
    return `<tr class="${sig ? "clickable" : ""}" ${sig ? `data-sig="${esc(sig)}"` : ""}>
      <td class="label">${esc(r.label || r.key)}</td><td class="muted">${esc(r.section)}</td>
      <td class="num">${fmtBytes(r.a_bytes)}</td><td class="num">${fmtBytes(r.b_bytes)}</td>
      <td class="num ${signClass(r.delta_bytes)}">${signedBytes(r.delta_bytes)}</td>
      <td class="num ${signClass(r.delta_bytes)}">${fmtRatio(r.delta_ratio)}</td>
      <td class="num ${signClass(r.delta_count || 0)}">${r.delta_count === undefined ? "" : signedCount(r.delta_count)}</td></tr>`;
  });
  $("diff").innerHTML = `<table><thead><tr><th>what</th><th>layer</th><th class="num">A</th><th class="num">B</th>
    <th class="num">Δ bytes</th><th class="num">Δ %</th><th class="num">Δ count</th></tr></thead><tbody>${html.join("")}</tbody></table>
    ${rows.length > shown.length ? `<p class="muted small">${rows.length - shown.length} more rows (pick a layer above to narrow).</p>` : ""}`;
  for (const tr of $("diff").querySelectorAll("tr[data-sig]")) tr.addEventListener("click", () => showGroup(tr.dataset.sig, d.b.worker || state.selected));
}

/** "pool.unrooted.<sig>[.suffix]" → sig */
function unrootedSig(key) {
  if (!key || !key.startsWith("pool.unrooted.")) return null;
  let rest = key.slice("pool.unrooted.".length);
  for (const suf of ["pools", "bytes", "block_bytes", "large_blocks", "large_bytes"]) {
    if (rest.endsWith("." + suf)) { rest = rest.slice(0, -suf.length - 1); break; }
  }
  return rest || null;
}

// ---------- size classes ----------
function renderClasses() {
  const rows = state.diff ? (state.diff.rows || []).filter((r) => r.section === "size_class") : [];
  if (!rows.length) { renderClassesFromSnapshot(); return; }
  $("classes-title").textContent = "A → B";
  const cls = rows.map((r) => ({ min: Number(r.key.split(".")[1]), bytes: r.b_bytes, d: r.delta_bytes, n: r.b_count, dn: r.delta_count }))
    .filter((c) => Number.isFinite(c.min)).sort((a, b) => a.min - b.min);
  drawClasses(cls, true);
}

/** no diff chosen: the latest deep scan in the window, with its change since the first deep scan in the window */
async function renderClassesFromSnapshot() {
  const h = state.hist;
  const deepIdx = [];
  for (let i = 0; i < h.deep.length; i++) if (h.deep[i]) deepIdx.push(i);
  if (!deepIdx.length) {
    $("classes-title").textContent = "";
    $("classes").innerHTML = `<p class="empty">No size classes yet. They come from a deep scan: press <b>Scan now</b>${state.selected ? "" : " after picking a worker"}.</p>`;
    return;
  }
  const first = deepIdx[0], last = deepIdx[deepIdx.length - 1];
  try {
    if (first !== last) {
      const d = await api(`/api/diff?a=${h.id[first]}&b=${h.id[last]}`);
      const rows = (d.rows || []).filter((r) => r.section === "size_class");
      if (rows.length) {
        $("classes-title").textContent = `deep scans ${fmtTime(h.t[first])} → ${fmtTime(h.t[last])}`;
        drawClasses(rows.map((r) => ({ min: Number(r.key.split(".")[1]), bytes: r.b_bytes, d: r.delta_bytes, n: r.b_count, dn: r.delta_count }))
          .filter((c) => Number.isFinite(c.min)).sort((a, b) => a.min - b.min), true);
        return;
      }
    }
    const s = await api(`/api/snapshots/${h.id[last]}`);
    const snap = s.snapshot || s;
    const sc = (snap.glibc && snap.glibc.size_classes) || [];
    $("classes-title").textContent = `deep scan at ${fmtTime(h.t[last])}`;
    drawClasses(sc.map((c) => ({ min: c.min_bytes, bytes: c.bytes, n: c.chunks })).sort((a, b) => a.min - b.min), false);
  } catch (e) {
    $("classes").innerHTML = `<p class="empty">Could not load the deep scan: ${esc(e.message)}</p>`;
  }
}

/** refresh the histogram when new deep scans arrive (at most every 5 s), unless the user is looking at a diff */
let classesTimer = null;
function classesSoon() {
  if (state.diff || classesTimer) return;
  classesTimer = setTimeout(() => {
    classesTimer = null;
    if (!state.diff) renderClassesFromSnapshot();
  }, 5000);
}

function drawClasses(cls, withDelta) {
  cls = cls.filter((c) => c.bytes > 0 || (c.d || 0) !== 0);
  if (!cls.length) { $("classes").innerHTML = `<p class="empty">The scan found no heap chunks.</p>`; return; }
  const max = Math.max(...cls.map((c) => c.bytes), 1);
  const html = cls.map((c) => {
    const w = Math.max(1, Math.round((c.bytes / max) * 100));
    return `<tr><td class="num">${fmtRange(c.min, c.min * 2 || 32)}</td>
      <td class="barcell"><span class="bar${withDelta && c.d > 0 ? " up" : ""}" style="width:${w}%"></span></td>
      <td class="num">${fmtCount(c.n)}</td><td class="num">${fmtBytes(c.bytes)}</td>
      ${withDelta ? `<td class="num ${signClass(c.dn || 0)}">${signedCount(c.dn || 0)}</td><td class="num ${signClass(c.d)}">${signedBytes(c.d)}</td>` : ""}</tr>`;
  });
  $("classes").innerHTML = `<table><thead><tr><th class="num">chunk size</th><th></th><th class="num">chunks</th><th class="num">bytes</th>
    ${withDelta ? `<th class="num">Δ chunks</th><th class="num">Δ bytes</th>` : ""}</tr></thead><tbody>${html.join("")}</tbody></table>`;
}

// ---------- suspects ----------
async function loadSuspects() {
  try {
    state.suspects = listOf(await api(`/api/suspects?window=${state.windowS}`), "suspects");
  } catch (e) {
    $("suspects").innerHTML = `<p class="empty">Could not load suspects: ${esc(e.message)}</p>`;
    return;
  }
  renderSuspects();
}

function renderSuspects() {
  $("suspects-window").textContent = `· last ${fmtDuration(state.windowS)}`;
  const s = state.suspects;
  if (!s.length) {
    $("suspects").innerHTML = `<p class="empty">No suspects: nothing has grown beyond noise in the last ${fmtDuration(state.windowS)}.
      Trends need a few minutes of snapshots; pool groups need deep scans (<b>Scan now</b>).</p>`;
    return;
  }
  $("suspects").innerHTML = s.slice(0, 8).map((x, i) => `<div class="suspect" data-i="${i}">
    <div><span class="rank">#${i + 1}</span><span class="subject">${esc(x.subject)}</span></div>
    <div class="muted">held by <b>${esc(x.owner)}</b>${x.worker ? ` · worker ${esc(workerLabel(x.worker))}` : ` · ${esc(x.instance)}`}</div>
    <div class="evidence">${esc(x.evidence)}</div>
    <div class="facts"><span class="grow">${signedBytes(x.growth_bytes_per_min)}/min</span> · R² ${Number(x.r2).toFixed(2)} ·
      ${signedBytes(x.delta_bytes)}${x.delta_count !== undefined ? ` (${signedCount(x.delta_count)})` : ""} in the last ${fmtDuration(x.window_s)} ·
      ${Math.round((x.monotonic_ratio || 0) * 100)}% of steps up</div></div>`).join("");
  for (const el of $("suspects").querySelectorAll(".suspect")) {
    el.addEventListener("click", () => {
      const x = s[Number(el.dataset.i)];
      const sig = unrootedSig(x.metric);
      if (x.worker && x.worker !== state.selected && state.workers.has(x.worker)) selectWorker(x.worker);
      if (sig) showGroup(sig, x.worker || state.selected);
      else $("group").innerHTML = `<p class="empty">“${esc(x.subject)}” is a layer, not a pool group: see its rows in the diff (use “Compare window start → latest”).</p>`;
    });
  }
}
function workerLabel(key) {
  const w = state.workers.get(key);
  return w ? `pid ${w.pid}` : key;
}

// ---------- pool group drill-down ----------
async function showGroup(sig, workerKey) {
  state.group = { signature: sig, worker: workerKey };
  $("group-title").textContent = "";
  $("group").innerHTML = `<p class="empty">Loading the latest deep scan…</p>`;
  const w = state.workers.get(workerKey);
  try {
    // the worker's deep snapshots, newest first (from the chart when it shows this worker)
    let deep = [];
    const h = state.hist;
    if (workerKey === state.selected) {
      for (let i = h.deep.length - 1; i >= 0; i--) if (h.deep[i]) deep.push({ id: h.id[i], time: h.t[i] });
    }
    if (!deep.length && w) {
      const snaps = listOf(await api(`/api/workers/${encodeURIComponent(workerKey)}/snapshots?limit=5000`), "snapshots");
      deep = snaps.filter((s) => s.deep).sort((a, b) => b.time - a.time);
    }
    if (!deep.length) {
      $("group").innerHTML = `<p class="empty">This worker has no deep scan yet: press <b>Scan now</b>.</p>`;
      return;
    }
    // the latest scan that reports the group (a group can drop out of one scan, e.g. when its owner changes)
    for (let k = 0; k < Math.min(deep.length, 8); k++) {
      const s = await api(`/api/snapshots/${deep[k].id}`);
      if (state.group.signature !== sig) return; // the user moved on
      const snap = s.snapshot || s;
      const g = ((snap.pools && snap.pools.unrooted) || []).find((x) => x.signature === sig);
      if (g) {
        renderGroup(g, deep[k].time, w, k > 0 ? deep[0].time : null);
        return;
      }
    }
    $("group").innerHTML = `<p class="empty">The recent deep scans (latest ${fmtTime(deep[0].time)}) have no pool group <code>${esc(sig)}</code> any more: it was freed, or its owner changed (a new group).</p>`;
  } catch (e) {
    $("group").innerHTML = `<p class="empty">Could not load the pool group: ${esc(e.message)}</p>`;
  }
}

function renderGroup(g, t, w, latest) {
  $("group-title").textContent = `· deep scan at ${fmtTime(t)}${w ? ` · pid ${w.pid}` : ""}` +
    (latest ? ` (the scan at ${fmtTime(latest)} does not report it)` : "");
  const hops = String(g.retainer || "").split(/\s*→\s*|\s*->\s*/).filter(Boolean);
  const lost = g.owner === "unreferenced" && hops.length <= 1;
  const retainer = lost
    ? `<span class="muted">nothing the scan knows references these pools: they are lost (or held through memory it does not read)</span>`
    : hops.length
    ? hops.map((hop, i) => `<span class="hop${i === 0 ? " root" : ""}">${esc(hop)}</span>`).join(`<span class="arrow">→</span>`)
    : `<span class="muted">no retainer path (nothing references these pools: they are lost)</span>`;
  const cleanups = (g.cleanups || []).length
    ? g.cleanups.map((c) => `<code>${esc(c.handler)}</code> ×${fmtCount(c.count)}`).join(", ")
    : `<span class="muted">none registered</span>`;
  const hist = (g.large_histogram || []).filter((b) => b.count > 0)
    .map((b) => `${fmtRange(b.min_bytes, b.max_bytes + 1)}: ${fmtCount(b.count)} (${fmtBytes(b.bytes)})`).join("; ");
  $("group").innerHTML = `
    <dl class="kv">
      <dt>held by</dt><dd><b>${esc(g.owner)}</b></dd>
      <dt>pools</dt><dd>${fmtCount(g.pools)}</dd>
      <dt>memory</dt><dd>${fmtBytes((g.block_bytes || 0) + (g.large_bytes || 0))} (blocks ${fmtBytes(g.block_bytes)}, large ${fmtBytes(g.large_bytes)} in ${fmtCount(g.large_blocks)})</dd>
      ${g.create_size !== undefined ? `<dt>created with</dt><dd>ngx_create_pool(${fmtCount(g.create_size)} B)</dd>` : ""}
      <dt>cleanups</dt><dd>${cleanups}</dd>
      ${g.log ? `<dt>log</dt><dd>${esc(g.log)}</dd>` : ""}
      ${hist ? `<dt>large blocks</dt><dd>${esc(hist)}</dd>` : ""}
      <dt>signature</dt><dd class="small">${esc(g.signature)}</dd>
    </dl>
    <div class="muted small">retainer path (shortest, from the root that keeps them alive):</div>
    <div class="retainer">${retainer}</div>
    <div class="muted small">example pools:</div>
    <div class="mono">${(g.examples || []).map(esc).join("  ") || "–"}</div>
    ${g.created_at && g.created_at.length ? `<div class="muted small" style="margin-top:8px">allocated at:</div><div class="mono small">${g.created_at.map(esc).join("<br>")}</div>` : ""}`;
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
