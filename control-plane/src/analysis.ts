/**
 * The store queries behind diffs and suspects: pick the snapshots (or the
 * per-worker states of an instance at a point in time), then hand them to the
 * pure logic in diff.ts and suspects.ts.
 */
import { Diff, Suspect } from "./protocol";
import { Store, SnapshotMetrics, WorkerRow } from "./store";
import { State, diffStates, overlayDeep, sumStates } from "./diff";
import { findSuspects, WorkerWindow } from "./suspects";
import { GrowthRules, DEFAULT_RULES } from "./trends";
import { HttpError } from "./params";

function state(s: SnapshotMetrics): State {
  return { metrics: s.metrics, unrooted: s.unrooted, deep: s.deep };
}

export function diffSnapshots(store: Store, a: number, b: number): Diff {
  const sa = store.snapshotMetrics(a);
  const sb = store.snapshotMetrics(b);
  if (!sa) throw new HttpError(404, `snapshot ${a} not found`);
  if (!sb) throw new HttpError(404, `snapshot ${b} not found`);
  const wa = store.workerById(sa.worker)?.key;
  const wb = store.workerById(sb.worker)?.key;
  return { a: { id: sa.id, time: sa.time, worker: wa }, b: { id: sb.id, time: sb.time, worker: wb }, rows: diffStates(state(sa), state(sb)) };
}

/** one worker at time t: its latest snapshot at or before t (the first one after t when t precedes it), deep part from its latest deep snapshot */
function workerAt(store: Store, w: WorkerRow, t: number, allowAfter: boolean): { st: State; snap: SnapshotMetrics } | undefined {
  let base = store.atOrBefore(w.id, t);
  if (!base && allowAfter) base = store.firstAfter(w.id, t);
  if (!base) return undefined;
  const deep = base.deep ? undefined : store.atOrBefore(w.id, Math.max(t, base.time), true);
  return { st: overlayDeep(state(base), deep ? state(deep) : undefined), snap: base };
}

export function diffTimes(store: Store, sel: { worker?: string; instance?: string }, from: number, to: number): Diff {
  if (sel.worker !== undefined) {
    const w = store.worker(sel.worker);
    if (!w) throw new HttpError(404, `worker '${sel.worker}' not found`);
    const a = workerAt(store, w, from, true);
    const b = workerAt(store, w, to, false);
    if (!a || !b) throw new HttpError(404, `worker '${sel.worker}' has no snapshots in that range`);
    return { a: { id: a.snap.id, time: a.snap.time, worker: w.key }, b: { id: b.snap.id, time: b.snap.time, worker: w.key }, rows: diffStates(a.st, b.st) };
  }
  const workers = store.workers({ instance: sel.instance });
  if (workers.length === 0) throw new HttpError(404, `instance '${sel.instance}' not found`);
  const side = (t: number): { st: State; id: number } => {
    const parts: State[] = [];
    let id = 0;
    for (const w of workers) {
      if (w.first_seen > t + 60 && w.snapshots === 0) continue;
      if (w.state === "gone" && w.last_seen < t) continue; // not running at t
      const x = workerAt(store, w, t, false);
      if (!x) continue;
      parts.push(x.st);
      id = Math.max(id, x.snap.id);
    }
    return { st: sumStates(parts), id };
  };
  const a = side(from), b = side(to);
  return { a: { id: a.id, time: from }, b: { id: b.id, time: to }, rows: diffStates(a.st, b.st) };
}

/** trend points per worker and kind (plain / deep) at most: suspects cost the same however often agents push */
export const MAX_POINTS = 120;

/** suspects over the last window_s seconds of each worker seen in it (optionally one instance or one worker) */
export function suspectsFor(store: Store, sel: { instance?: string; worker?: string }, window_s: number, now = Date.now() / 1000, rules: GrowthRules = DEFAULT_RULES): Suspect[] {
  const since = now - window_s;
  let workers = store.workersSeenSince(since);
  if (sel.instance !== undefined) workers = workers.filter((w) => w.instance === sel.instance);
  if (sel.worker !== undefined) workers = workers.filter((w) => w.key === sel.worker);
  const windows: WorkerWindow[] = [];
  for (const w of workers) {
    const last = store.atOrBefore(w.id, Number.MAX_VALUE);
    if (!last) continue;
    // the window ends at the worker's latest snapshot (agent clocks may differ from ours)
    const snaps = store.windowSampled(w.id, last.time - window_s, last.time, MAX_POINTS);
    windows.push({ worker: w.key, instance: w.instance, snapshots: snaps });
  }
  return findSuspects(windows, window_s, rules);
}
