/* What the console shows under the chart: the diff of two snapshots, the heap's size classes,
 * the leak suspects and the drill-down into one pool group. Uses app.js's globals (state, api, $,
 * esc) and format.js's formatting. */
"use strict";

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

