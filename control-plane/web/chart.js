/* The stacked RSS chart of the selected worker: which layers it stacks (region classes from
 * format.js when the agent reports regions, else glibc / LuaJIT / rest of RSS), its history in
 * the window, and picking two points for a diff. Uses app.js's globals (state, chart, api, $). */
"use strict";

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

