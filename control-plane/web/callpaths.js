/* Call paths panel: allocation sampler of the selected worker through the control plane.
 * Arm / disarm (POST /api/workers/:key/command sampler_arm|sampler_disarm), fetch the outstanding
 * sampled allocations (GET /api/workers/:key/callpaths), an icicle flame graph of outstanding bytes
 * by call path (own SVG renderer: root on top, callers above callees, width = bytes), a diff flame
 * graph between two stored fetches (GET .../callpaths/diff; growth red, shrink green) and folded
 * stacks downloads (FlameGraph input). Uses app.js's globals (state, api, $, esc, fmtTime) and
 * format.js's (fmtBytes, signedBytes). */
"use strict";

const cpState = { key: null, fetches: [], current: null, diff: null, zoom: [], busy: false, mode: "fetch" };
const SVGNS = "http://www.w3.org/2000/svg";
const ROW = 18;

function cpApi(key, rest) { return `/api/workers/${encodeURIComponent(key)}${rest}`; }

function cpStatus(html) { $("cp-status").innerHTML = html; }

const ARM_HINT = (err) => `${esc(err)}. Arm it here (<b>Arm</b>), or on the nginx host: <code>curl -s '127.0.0.1:&lt;memdiag port&gt;/_memdiag?sampler=arm&amp;sampler_all=1'</code>`;

async function cpCommand(command, args) {
  const key = cpState.key;
  if (!key) return;
  cpState.busy = true;
  cpButtons();
  cpStatus(`${command === "sampler_arm" ? "arming" : "disarming"}…`);
  try {
    const r = await api(cpApi(key, "/command"), { method: "POST", body: args ? { command, args } : { command } });
    let st = r;
    for (let i = 0; i < 60 && st.state === "sent"; i++) {
      await new Promise((res) => setTimeout(res, 250));
      st = await api(`/api/commands/${encodeURIComponent(r.id)}`);
    }
    if (st.state === "done") {
      const s = st.result || {};
      cpStatus(command === "sampler_arm"
        ? `armed at ${fmtTime(Date.now() / 1000)}: mean interval ${fmtBytes(s.mean_bytes)}, ${s.slots_patched} GOT slots in ${s.objects_patched} objects. Let the leak happen, then <b>Fetch</b>.`
        : `disarmed: ${s.restored} GOT slots restored; the records stay readable (<b>Fetch</b>) until the next arm.`);
    } else if (/unknown command/.test(st.error || "")) {
      cpStatus(`this agent does not take sampler commands (${esc(st.error)}). On the nginx host: <code>curl -s '127.0.0.1:&lt;memdiag port&gt;/_memdiag?sampler=${command === "sampler_arm" ? "arm" : "disarm"}&amp;sampler_all=1'</code>`);
    } else {
      cpStatus(`<span class="bad">${esc(command)} ${esc(st.state)}${st.error ? ": " + esc(st.error) : ""}</span>`);
    }
  } catch (e) {
    cpStatus(`<span class="bad">${esc(e.message)}</span>`);
  } finally {
    cpState.busy = false;
    cpButtons();
  }
}

async function cpFetch() {
  const key = cpState.key;
  if (!key) return;
  cpState.busy = true;
  cpButtons();
  cpStatus("asking the worker for its outstanding allocations…");
  try {
    const c = await api(cpApi(key, "/callpaths"));
    if (cpState.key !== key) return;
    cpState.current = c;
    cpState.diff = null;
    cpState.zoom = [];
    cpState.mode = "fetch";
    cpStatus(`fetch #${c.id} at ${fmtTime(c.time)}: ${c.paths_total} call paths, ${fmtBytes(c.est_bytes_total)} outstanding (estimated)${c.sampler && c.sampler.armed ? "" : " — sampler disarmed: frozen records"}${c.truncated_paths ? `; ${c.truncated_paths} small paths left out` : ""}`);
    await cpLoadHistory();
    cpRender();
  } catch (e) {
    cpStatus(/never armed/.test(e.message) ? ARM_HINT(e.message) : `<span class="bad">${esc(e.message)}</span>`);
  } finally {
    cpState.busy = false;
    cpButtons();
  }
}

async function cpLoadHistory() {
  const key = cpState.key;
  if (!key) return;
  const h = await api(cpApi(key, "/callpaths/history"));
  if (cpState.key !== key) return;
  cpState.fetches = Array.isArray(h) ? h : [];
  const opts = cpState.fetches.map((f) => `<option value="${f.id}">#${f.id} ${esc(fmtTime(f.time))} · ${esc(fmtBytes(f.est_bytes_total))}</option>`).join("");
  const a = $("cp-a"), b = $("cp-b");
  const keepA = a.value, keepB = b.value;
  a.innerHTML = opts;
  b.innerHTML = opts;
  if (cpState.fetches.length >= 2) {
    a.value = cpState.fetches.some((f) => String(f.id) === keepA) && keepA !== String(cpState.fetches[0].id) ? keepA : String(cpState.fetches[1].id);
    b.value = String(cpState.fetches[0].id);
  }
  cpButtons();
}

async function cpDiff() {
  const key = cpState.key;
  const a = $("cp-a").value, b = $("cp-b").value;
  if (!key || !a || !b) return;
  try {
    const d = await api(cpApi(key, `/callpaths/diff?a=${a}&b=${b}`));
    if (cpState.key !== key) return;
    cpState.diff = d;
    cpState.zoom = [];
    cpState.mode = "diff";
    const grew = d.rows.filter((r) => r.delta_bytes > 0).reduce((s, r) => s + r.delta_bytes, 0);
    cpStatus(`diff #${d.a.id} (${fmtTime(d.a.time)}) → #${d.b.id} (${fmtTime(d.b.time)}): ${signedBytes(grew)} on growing paths. Width = bytes at B; red = grew, green = shrank.`);
    cpRender();
    // the download link follows what is drawn (a fetch finishing meanwhile set it to the fetch)
    cpButtons();
  } catch (e) {
    cpStatus(`<span class="bad">${esc(e.message)}</span>`);
  }
}

function cpButtons() {
  const w = cpState.key && state.workers.get(cpState.key);
  const live = !!(w && w.state === "live");
  $("cp-arm").disabled = !live || cpState.busy;
  $("cp-disarm").disabled = !live || cpState.busy;
  $("cp-fetch").disabled = !live || cpState.busy;
  $("cp-diff").disabled = cpState.fetches.length < 2;
  const id = cpState.mode === "diff" && cpState.diff ? null : cpState.current && cpState.current.id;
  const dl = $("cp-download");
  if (cpState.mode === "diff" && cpState.diff) {
    dl.href = base + cpApi(cpState.key, `/callpaths/diff?a=${cpState.diff.a.id}&b=${cpState.diff.b.id}&format=folded`).slice(1);
    dl.download = `memdiag-diff-${cpState.diff.a.id}-${cpState.diff.b.id}.folded`;
    dl.textContent = "download folded diff (difffolded)";
    dl.hidden = false;
  } else if (id) {
    dl.href = base + `api/callpaths/${id}?format=folded`;
    dl.download = `memdiag-callpaths-${id}.folded`;
    dl.textContent = "download folded stacks";
    dl.hidden = false;
  } else dl.hidden = true;
}

// ---------- flame graph (icicle) ----------
/** tree from [{frames: [outer..inner] names, value, delta?}] */
function cpTree(items) {
  const root = { name: "all", value: 0, delta: 0, children: new Map() };
  for (const it of items) {
    root.value += it.value;
    root.delta += it.delta || 0;
    let n = root;
    for (const name of it.stack) {
      let c = n.children.get(name);
      if (!c) n.children.set(name, (c = { name, value: 0, delta: 0, children: new Map() }));
      c.value += it.value;
      c.delta += it.delta || 0;
      n = c;
    }
  }
  return root;
}

function cpItems() {
  if (cpState.mode === "diff" && cpState.diff) {
    return cpState.diff.rows.filter((r) => r.b_bytes > 0).map((r) => ({ stack: r.folded.split(";"), value: r.b_bytes, delta: r.delta_bytes }));
  }
  if (!cpState.current) return [];
  return cpState.current.paths.filter((p) => p.est_bytes > 0).map((p) => ({ stack: p.folded.split(";"), value: p.est_bytes }));
}

function cpColor(n, diff) {
  if (diff) {
    if (!n.value) return "#3a3f4a";
    const r = Math.max(-1, Math.min(1, n.delta / n.value));
    if (r > 0) return `hsl(0, ${45 + 40 * r}%, ${38 + 10 * (1 - r)}%)`;
    if (r < 0) return `hsl(120, ${25 + 35 * -r}%, ${34 + 8 * (1 + r)}%)`;
    return "#4a5060";
  }
  // warm palette, stable per name
  let h = 0;
  for (let i = 0; i < n.name.length; i++) h = (h * 31 + n.name.charCodeAt(i)) >>> 0;
  const alloc = /^(malloc|calloc|realloc|posix_memalign|memalign|aligned_alloc)$/.test(n.name);
  return alloc ? "#6b7a99" : `hsl(${20 + (h % 30)}, ${55 + (h % 20)}%, ${42 + (h % 12)}%)`;
}

function cpRender() {
  const el = $("cp-flame");
  el.innerHTML = "";
  const diff = cpState.mode === "diff";
  const items = cpItems();
  if (!items.length) {
    el.innerHTML = `<p class="empty">${diff ? "Nothing outstanding at B." : cpState.current ? "No outstanding sampled allocations (arm, let the worker run, fetch again)." : "No call paths yet: <b>Arm</b> the sampler, let traffic run, then <b>Fetch</b>."}</p>`;
    return;
  }
  let root = cpTree(items);
  for (const name of cpState.zoom) {
    const c = root.children.get(name);
    if (!c) break;
    root = c;
  }
  const width = Math.max(320, el.clientWidth || 800);
  const rects = [];
  let depth = 0;
  const walk = (n, x, w, d, path) => {
    if (w < 0.5) return;
    depth = Math.max(depth, d);
    rects.push({ n, x, w, d, path });
    let cx = x;
    const kids = [...n.children.values()].sort((a, b) => b.value - a.value);
    for (const c of kids) {
      const cw = n.value ? (w * c.value) / n.value : 0;
      walk(c, cx, cw, d + 1, path.concat(c.name));
      cx += cw;
    }
  };
  walk(root, 0, width, 0, cpState.zoom.slice());
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String((depth + 1) * ROW));
  svg.setAttribute("class", "flame");
  svg.dataset.nodes = String(rects.length);
  const total = root.value;
  for (const r of rects) {
    const g = document.createElementNS(SVGNS, "g");
    g.setAttribute("transform", `translate(${r.x.toFixed(2)},${r.d * ROW})`);
    g.dataset.name = r.n.name;
    g.dataset.bytes = String(r.n.value);
    if (diff) g.dataset.delta = String(r.n.delta);
    const rect = document.createElementNS(SVGNS, "rect");
    rect.setAttribute("width", Math.max(0.5, r.w - 0.5).toFixed(2));
    rect.setAttribute("height", String(ROW - 1));
    rect.setAttribute("fill", r.d === 0 && !diff ? "#3b4a66" : cpColor(r.n, diff));
    const title = document.createElementNS(SVGNS, "title");
    const pct = total ? ((100 * r.n.value) / total).toFixed(1) : "0";
    title.textContent = `${r.n.name}\n${fmtBytes(r.n.value)} (${pct} %)${diff ? `, ${signedBytes(r.n.delta)} since A` : ""}`;
    g.appendChild(title);
    g.appendChild(rect);
    if (r.w > 30) {
      const t = document.createElementNS(SVGNS, "text");
      t.setAttribute("x", "3");
      t.setAttribute("y", String(ROW - 5));
      const chars = Math.floor((r.w - 6) / 6.6);
      const label = r.d === 0 ? `${cpState.zoom.length ? "⤺ " + r.n.name : "all"} · ${fmtBytes(r.n.value)}${diff ? " (" + signedBytes(r.n.delta) + ")" : ""}` : r.n.name;
      t.textContent = label.length > chars ? label.slice(0, Math.max(1, chars - 1)) + "…" : label;
      g.appendChild(t);
    }
    // click: zoom into this node; the top bar zooms back out one level
    g.addEventListener("click", () => {
      if (r.d === 0) cpState.zoom.pop();
      else cpState.zoom = r.path;
      cpRender();
    });
    svg.appendChild(g);
  }
  el.appendChild(svg);
  cpTable(diff);
}

/** the largest paths (or largest growth) as a table below the graph, leaf first */
function cpTable(diff) {
  const rows = diff
    ? cpState.diff.rows.filter((r) => r.delta_bytes !== 0).slice(0, 10).map((r) => ({ folded: r.folded, a: fmtBytes(r.b_bytes), b: signedBytes(r.delta_bytes), cls: r.delta_bytes > 0 ? "bad" : "shrink" }))
    : cpState.current.paths.slice(0, 10).map((p) => ({ folded: p.folded, a: fmtBytes(p.est_bytes), b: fmtCount(p.est_count), cls: "" }));
  const leafFirst = (f) => f.split(";").reverse().join(" ← ");
  $("cp-flame").insertAdjacentHTML("beforeend", `<table class="cp-top"><tr><th class="num">${diff ? "at B" : "bytes"}</th><th class="num">${diff ? "growth" : "allocs"}</th><th>call path (allocation ← … ← outermost)</th></tr>${rows
    .map((r) => `<tr><td class="num">${esc(r.a)}</td><td class="num ${r.cls}">${esc(r.b)}</td><td class="label mono">${esc(leafFirst(r.folded))}</td></tr>`)
    .join("")}</table>`);
}

// ---------- wiring ----------
function cpSync() {
  const key = state.selected || null;
  if (key !== cpState.key) {
    cpState.key = key;
    cpState.current = null;
    cpState.diff = null;
    cpState.fetches = [];
    cpState.zoom = [];
    cpState.mode = "fetch";
    $("cp-title").textContent = key ? workerLabel(key) : "—";
    $("cp-a").innerHTML = "";
    $("cp-b").innerHTML = "";
    cpStatus(key ? "Arm the sampler, let the leak happen, then Fetch (each fetch is stored: pick two to diff)." : "Pick a worker.");
    cpRender();
    if (key) cpLoadHistory().catch(() => {});
  }
  cpButtons();
}

$("cp-arm").addEventListener("click", () => {
  const rate = Number($("cp-rate").value);
  cpCommand("sampler_arm", rate ? { rate } : undefined);
});
$("cp-disarm").addEventListener("click", () => cpCommand("sampler_disarm"));
$("cp-fetch").addEventListener("click", cpFetch);
$("cp-diff").addEventListener("click", cpDiff);
window.addEventListener("resize", () => { if (cpState.current || cpState.diff) cpRender(); });
setInterval(cpSync, 500);
cpSync();
