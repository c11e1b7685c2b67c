/**
 * One frame of `memdiag console`: a pure function of what the control plane said,
 * laid out for a terminal of `width` × `height` (80×24 is the design target).
 */
import { DiffRow, Suspect, WorkerInfo } from "../protocol";
import { fmtBytes, fmtDuration, signedBytes, signedCount } from "../format";
import { CallpathsView, callpathLines } from "./callpaths";
import { Line, seg, renderLine, padLeft, padRight, deltaColor, wrap, fmtWindow, clock } from "./text";

export interface LayerRow {
  label: string;
  now: number;
  /** change since the worker's first stored snapshot */
  since_start: number | null;
  /** change over the window */
  window: number | null;
  count?: number;
  count_window?: number | null;
  indent?: boolean;
}

export interface Model {
  url: string;
  window_s: number;
  now: number;
  live: boolean | null;
  workers: WorkerInfo[];
  selected?: string;
  /** RSS change over the window per worker key */
  rss_change: Record<string, number>;
  layers: LayerRow[];
  /** time of the first snapshot the "since start" column compares with, and of the latest */
  start_time?: number;
  latest_time?: number;
  latest_deep_time?: number;
  suspects: Suspect[];
  /** the selected worker's newest stored call path fetch, if any */
  callpaths?: CallpathsView;
  status?: string;
  error?: string;
}

export interface FrameOptions {
  width: number;
  height: number;
  color: boolean;
  /** the key help line (interactive only) */
  keys: boolean;
}


/**
 * The layer breakdown from two diffs that end at the latest snapshot: one from the
 * worker's first snapshot (since start), one from the start of the window.
 */
export function layerRows(sinceStart: DiffRow[] | undefined, overWindow: DiffRow[] | undefined): LayerRow[] {
  const latest = overWindow ?? sinceStart ?? [];
  type Acc = { label: string; now: number; s: number | null; w: number | null; count?: number; cw?: number | null; indent?: boolean; order: number };
  const acc = new Map<string, Acc>();
  const group = (key: string): { id: string; label: string; order: number; indent?: boolean } | undefined => {
    if (key === "system.rss_bytes") return { id: "rss", label: "RSS", order: 0 };
    // region rows are mapped sizes (not RSS) and would not add up under RSS: the web chart shows region RSS
    if (key === "glibc.arena_bytes") return { id: key, label: "glibc arena", order: 30 };
    if (key === "glibc.mmap_bytes") return { id: key, label: "glibc mmapped", order: 31 };
    if (key === "glibc.in_use_bytes") return { id: key, label: "glibc in use", order: 32 };
    if (key === "luajit.gc_bytes") return { id: key, label: "LuaJIT GC heap", order: 40 };
    if (key === "luajit.gc_floor_bytes") return { id: key, label: "after collection", order: 41, indent: true };
    if (key.startsWith("shm.")) return { id: "shm", label: "shm zones used", order: 50 };
    if (key === "pool.connection") return { id: key, label: "connection pools", order: 60 };
    if (key === "pool.request") return { id: key, label: "request pools", order: 61 };
    if (key === "pool.cycle") return { id: key, label: "cycle pool", order: 62 };
    if (key.startsWith("pool.unrooted.")) return { id: "unrooted", label: "unrooted pools", order: 70 };
    return undefined;
  };
  const add = (rows: DiffRow[], col: "now" | "s" | "w"): void => {
    for (const r of rows) {
      const g = group(r.key);
      if (!g) continue;
      let a = acc.get(g.id);
      if (!a) {
        a = { label: g.label, now: 0, s: null, w: null, indent: g.indent, order: g.order };
        acc.set(g.id, a);
      }
      if (col === "now") {
        a.now += r.b_bytes;
        if (r.b_count !== undefined) a.count = (a.count ?? 0) + r.b_count;
      } else if (col === "s") a.s = (a.s ?? 0) + r.delta_bytes;
      else {
        a.w = (a.w ?? 0) + r.delta_bytes;
        if (r.delta_count !== undefined) a.cw = (a.cw ?? 0) + r.delta_count;
      }
    }
  };
  add(latest, "now");
  if (sinceStart) add(sinceStart, "s");
  if (overWindow) add(overWindow, "w");
  return [...acc.values()]
    .sort((x, y) => x.order - y.order)
    .map((a) => ({ label: a.label, now: a.now, since_start: a.s, window: a.w, count: a.count, count_window: a.cw, indent: a.indent }));
}

function workerName(w: WorkerInfo): string {
  return `pid ${w.pid}`;
}

export function renderFrame(m: Model, o: FrameOptions): string {
  const W = o.width;
  const out: Line[] = [];
  const liveTxt = m.live === null ? "" : m.live ? " · live" : " · reconnecting";
  out.push([seg("memdiag", "bold"), seg(` ${m.url} · window ${fmtWindow(m.window_s)} · ${clock(m.now)} UTC`, "dim"), seg(liveTxt, m.live ? "green" : "red")]);
  if (m.error) out.push([seg(m.error, "red")]);

  // workers
  const cols = { inst: W - 50, pid: 8, state: 6, rss: 10, chg: 11, n: 9 };
  out.push([seg(padRight("WORKERS", cols.inst + 2) + padLeft("pid", cols.pid) + "  " + padRight("state", cols.state) + padLeft("RSS", cols.rss) + padLeft(`Δ ${fmtWindow(m.window_s)}`, cols.chg) + padLeft("snaps", cols.n), "bold")]);
  const ws = [...m.workers].sort((a, b) => (a.state === b.state ? a.pid - b.pid : a.state === "live" ? -1 : 1));
  const maxWorkers = o.height >= 40 ? 12 : 4;
  if (ws.length === 0) {
    out.push([seg("  no workers yet: set control_plane.push in memdiag.config.json, run", "dim")]);
    out.push([seg("  `npm run configure` and reload nginx; agents connect to /ingest", "dim")]);
  }
  // keep the selected worker visible
  let shown = ws.slice(0, maxWorkers);
  const sel = ws.find((w) => w.key === m.selected);
  if (sel && !shown.includes(sel)) shown = [...shown.slice(0, maxWorkers - 1), sel];
  for (const w of shown) {
    const mark = w.key === m.selected ? "▶ " : "  ";
    const ch = m.rss_change[w.key];
    out.push([
      seg(mark + padRight(w.instance, cols.inst), w.key === m.selected ? "bold" : undefined),
      seg(padLeft(String(w.pid), cols.pid) + "  "),
      seg(padRight(w.state, cols.state), w.state === "live" ? "green" : "dim"),
      seg(padLeft(w.rss_bytes === undefined ? "–" : fmtBytes(w.rss_bytes), cols.rss)),
      seg(padLeft(ch === undefined ? "" : signedBytes(ch), cols.chg), deltaColor(ch)),
      seg(padLeft(String(w.snapshots), cols.n), "dim"),
    ]);
  }
  if (ws.length > shown.length) out.push([seg(`  … ${ws.length - shown.length} more (${ws.filter((w) => w.state === "live").length} live)`, "dim")]);

  // layers
  const selW = m.workers.find((w) => w.key === m.selected);
  if (selW) {
    const lc = { label: W - 36, now: 12, s: 12, w: 12 };
    out.push([
      seg(padRight(`LAYERS ${workerName(selW)}${selW.state === "gone" ? " (gone)" : ""}`, lc.label), "bold"),
      seg(padLeft("now", lc.now) + padLeft("Δ start", lc.s) + padLeft(`Δ ${fmtWindow(m.window_s)}`, lc.w), "bold"),
    ]);
    if (m.layers.length === 0) out.push([seg("  no snapshots of this worker in the window yet", "dim")]);
    for (const l of m.layers) {
      let label = (l.indent ? "    " : "  ") + l.label;
      if (l.count !== undefined && l.label.includes("pools")) label += ` (${l.count}${l.count_window ? " " + signedCount(l.count_window) : ""})`;
      out.push([
        seg(padRight(label, lc.label), l.label === "RSS" ? "bold" : undefined),
        seg(padLeft(fmtBytes(l.now), lc.now)),
        seg(padLeft(signedBytes(l.since_start), lc.s), deltaColor(l.since_start)),
        seg(padLeft(signedBytes(l.window), lc.w), deltaColor(l.window)),
      ]);
    }
    const notes = [];
    if (m.start_time !== undefined) notes.push(`start = first snapshot ${clock(m.start_time)}`);
    notes.push(m.latest_deep_time !== undefined ? `deep scan ${clock(m.latest_deep_time)}` : "no deep scan in the window (press d)");
    out.push([seg(`  ${notes.join(" · ")}`, "dim")]);
  }

  // top allocation call paths of the selected worker (a stored fetch), leaving room for suspects
  const footer = (m.status ? 1 : 0) + (o.keys ? 1 : 0);
  if (selW && m.callpaths) {
    const room0 = o.height - out.length - footer - 1 - 3;
    if (room0 >= 2) out.push(...callpathLines(m.callpaths, W, Math.min(o.height >= 40 ? 10 : 5, room0 - 1)));
  }

  // suspects: whatever room is left
  let room = o.height - out.length - footer - 1;
  out.push([seg(`SUSPECTS (last ${fmtDuration(m.window_s)})`, "bold")]);
  if (m.suspects.length === 0) {
    out.push([seg("  none: nothing grows beyond noise in this window", "dim")]);
    if (room >= 3) out.push([seg("  (trends need a few minutes of snapshots; deep scans add pool groups)", "dim")]);
  }
  for (let i = 0; i < m.suspects.length && room >= 2; i++) {
    const s = m.suspects[i];
    const who = s.worker ? m.workers.find((w) => w.key === s.worker) : undefined;
    out.push([seg(`${i + 1}. `, i === 0 ? "red" : "yellow"), seg(s.subject, "bold"), seg(who ? ` · ${workerName(who)}` : ` · ${s.instance}`, "dim")]);
    room--;
    const lines = wrap(s.evidence, W - 4, i === 0 ? Math.min(3, room) : Math.min(2, room));
    for (const l of lines) {
      if (room <= 0) break;
      out.push([seg("   " + l)]);
      room--;
    }
  }
  if (m.status) out.push([seg(m.status, "cyan")]);
  if (o.keys) out.push([seg("↑↓ worker  w window  d deep scan  c call paths  r refresh  q quit", "inverse")]);
  return out.slice(0, o.height).map((l) => renderLine(l, W, o.color)).join("\n") + "\n";
}
