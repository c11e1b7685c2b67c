/**
 * The LuaJIT heap judged on what survives a collection. `luajit.gc_bytes` (collectgarbage
 * "count") includes the garbage made since the last cycle, so a clean worker's series climbs
 * for the whole stretch between two cycles — tens of seconds in an idle worker — and a window
 * that ends inside such a climb sees steady growth. Leak suspects therefore judge:
 *   - `luajit.gc_floor_bytes` where the agent reports it (the heap at the end of each cycle,
 *     after its sweep: luavm/gc-floor.ts), and not the raw count beside it;
 *   - otherwise (older agents) the raw count's lower envelope: each point replaced by the
 *     lowest value of the ENVELOPE_S before it, the points without that much history
 *     dropped. A steady leak keeps its slope (the envelope is the series shifted by
 *     ENVELOPE_S); a saw-tooth whose cycles are shorter than ENVELOPE_S is flat.
 */
import { Point } from "./trends";

export const LUA_HEAP = "luajit.gc_bytes";
export const LUA_FLOOR = "luajit.gc_floor_bytes";

/** longer than an idle worker's GC cycle (a few a minute) */
export const ENVELOPE_S = 60;

/** is this series left out of the suspects because a truer one of the same heap is there? */
export function supersededLuaSeries(metric: string, names: ReadonlySet<string>): boolean {
  return metric === LUA_HEAP && names.has(LUA_FLOOR);
}

/** the points a suspect is judged on: the raw Lua heap's lower envelope, any other series as it is */
export function survivingSeries(metric: string, pts: readonly Point[]): Point[] {
  return metric === LUA_HEAP ? lowerEnvelope(pts, ENVELOPE_S) : (pts as Point[]);
}

/** each point's value → the lowest of the points in [t - span_s, t]; points before first.t + span_s dropped */
export function lowerEnvelope(pts: readonly Point[], span_s: number): Point[] {
  const out: Point[] = [];
  if (pts.length === 0) return out;
  const from = pts[0].t + span_s;
  // monotonic deque of indices with increasing values: the window's minimum is at its head
  const dq: number[] = [];
  let head = 0;
  for (let i = 0; i < pts.length; i++) {
    while (dq.length > head && pts[dq[dq.length - 1]].v >= pts[i].v) dq.pop();
    dq.push(i);
    while (pts[dq[head]].t < pts[i].t - span_s) head++;
    if (pts[i].t >= from) out.push({ t: pts[i].t, v: pts[dq[head]].v });
  }
  return out;
}
