/* Report panel: the guided-analysis report of the selected worker (GET /api/report), the same
 * document `memdiag report --format html` writes, shown in a sandboxed frame (its own styles,
 * no script), with downloads of the HTML, Markdown and JSON forms. Uses app.js's globals:
 * state, api, $, esc, base, TOKEN, workerLabel. */
"use strict";

const rpState = { key: null, busy: false };

function rpQuery(format) {
  const q = new URLSearchParams({ worker: rpState.key, window: $("rp-window").value, format });
  return `/api/report?${q}`;
}

/** the API's text answer (HTML, Markdown) with the page's token, as api() does for JSON */
async function rpText(path) {
  const headers = {};
  if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
  const r = await fetch(base + path.replace(/^\//, ""), { headers });
  const text = await r.text();
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = JSON.parse(text).error || msg; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  return text;
}

function rpStatus(text, cls) {
  const el = $("rp-status");
  el.textContent = text;
  el.className = cls || "muted";
}

async function rpBuild() {
  if (!rpState.key || rpState.busy) return;
  rpState.busy = true;
  rpButtons();
  rpStatus("building the report…");
  try {
    const html = await rpText(rpQuery("html"));
    const frame = $("rp-frame");
    frame.srcdoc = html;
    frame.hidden = false;
    const verdict = /data-verdict="([^"]+)"/.exec(html);
    rpStatus(`${workerLabel(rpState.key)}: ${verdict ? verdict[1] : "report"} · built ${new Date().toLocaleTimeString()}`);
    $("rp-downloads").hidden = false;
  } catch (e) {
    rpStatus(`report failed: ${e.message}`, "error");
  } finally {
    rpState.busy = false;
    rpButtons();
  }
}

/** a download of one format, fetched with the token (a plain link could not carry it) */
async function rpDownload(format) {
  try {
    const body = format === "json" ? JSON.stringify(await api(rpQuery("json")), null, 2) : await rpText(rpQuery(format));
    const type = { html: "text/html", md: "text/markdown", json: "application/json" }[format];
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([body], { type }));
    a.download = `memdiag-report-${rpState.key.replace(/[^A-Za-z0-9._-]+/g, "_")}.${format}`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  } catch (e) {
    rpStatus(`download failed: ${e.message}`, "error");
  }
}

function rpButtons() {
  $("rp-build").disabled = !rpState.key || rpState.busy;
}

function rpSync() {
  const key = state.selected || null;
  if (key !== rpState.key) {
    rpState.key = key;
    $("rp-title").textContent = key ? workerLabel(key) : "—";
    $("rp-frame").hidden = true;
    $("rp-downloads").hidden = true;
    rpStatus(key ? "Build a report: system → allocator → owner → size classes → code path, a verdict per step." : "Pick a worker.");
  }
  rpButtons();
}

$("rp-build").addEventListener("click", rpBuild);
for (const f of ["html", "md", "json"]) $(`rp-dl-${f}`).addEventListener("click", () => rpDownload(f));
setInterval(rpSync, 500);
rpSync();
