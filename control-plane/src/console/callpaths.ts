/**
 * Terminal console: the top allocation call paths of the selected worker by
 * outstanding bytes, one line each, allocation function first
 * (leaf → root), cut to the terminal width. Shown when the control plane has a
 * stored fetch of the worker (GET /api/workers/:key/callpaths/history); key `c`
 * fetches a fresh one from the worker (GET /api/workers/:key/callpaths).
 */
import type { ControlPlane } from "./client";
import type { Callpaths } from "../protocol";
import { fmtBytes } from "../format";
import { Line, seg, padLeft, clock } from "./text";

export interface CallpathsView {
  id: number;
  time: number;
  est_bytes_total: number;
  paths_total: number;
  armed: boolean;
  /** largest first: bytes and leaf → root labels */
  top: { bytes: number; frames: string[] }[];
}

export function callpathsView(c: Callpaths, max = 20): CallpathsView {
  const top = [...c.paths]
    .sort((a, b) => b.est_bytes - a.est_bytes)
    .slice(0, max)
    .map((p) => ({ bytes: p.est_bytes, frames: [p.fn, ...p.frames.map((f) => f.label)] }));
  return { id: c.id, time: c.time, est_bytes_total: c.est_bytes_total, paths_total: c.paths_total, armed: c.sampler?.armed === true, top };
}

/** "malloc ← ngx_alloc+0xd ← … " cut to `width` columns (ends in "…" when cut) */
export function pathLine(frames: string[], width: number): string {
  const s = frames.join(" ← ");
  if (s.length <= width) return s;
  return width <= 1 ? "…".slice(0, width) : s.slice(0, width - 1) + "…";
}

/** header + at most `rows` path lines (fewer when there are fewer paths) */
export function callpathLines(v: CallpathsView, width: number, rows: number): Line[] {
  const out: Line[] = [];
  out.push([
    seg("CALL PATHS", "bold"),
    seg(` outstanding sampled allocations · fetch ${clock(v.time)} · ${fmtBytes(v.est_bytes_total)} in ${v.paths_total} paths${v.armed ? "" : " · disarmed"}`, "dim"),
  ]);
  if (v.top.length === 0) out.push([seg("  none outstanding", "dim")]);
  for (const p of v.top.slice(0, Math.max(0, rows))) {
    out.push([seg(padLeft(fmtBytes(p.bytes), 10), "yellow"), seg("  " + pathLine(p.frames, width - 12))]);
  }
  return out;
}

/** the worker's newest stored fetch, or undefined when there is none */
export async function latestCallpaths(cp: ControlPlane, key: string): Promise<CallpathsView | undefined> {
  const k = encodeURIComponent(key);
  const hist = await cp.get<{ id: number }[]>(`/api/workers/${k}/callpaths/history`);
  if (!Array.isArray(hist) || hist.length === 0) return undefined;
  return callpathsView(await cp.get<Callpaths>(`/api/callpaths/${hist[0].id}`));
}

/** a fresh fetch from the worker (stored by the control plane) */
export async function fetchCallpaths(cp: ControlPlane, key: string): Promise<CallpathsView> {
  return callpathsView(await cp.get<Callpaths>(`/api/workers/${encodeURIComponent(key)}/callpaths`));
}
