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
import { isDeepMetric } from "./summary";

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

/**
 * The workers of an instance with the span of time (agent clock) each was running:
 * from its first stored snapshot to its last one when gone, open-ended while live.
 * Reloads and respawns start new workers of the same instance, so the instance's
 * view spans them: at any time t it is made of the workers running at t.
 */
export interface InstanceWorker {
  w: WorkerRow;
  first: number;
  end: number;
}

export function instanceWorkers(store: Store, instance: string): InstanceWorker[] {
  const workers = store.workers({ instance });
  if (workers.length === 0) throw new HttpError(404, `instance '${instance}' not found`);
  const out: InstanceWorker[] = [];
  for (const w of workers) {
    const span = store.span(w.id);
    if (!span) continue;
    out.push({ w, first: span.first, end: w.state === "live" ? Infinity : span.last });
  }
  return out;
}

const runningAt = (x: InstanceWorker, t: number): boolean => x.first <= t && t <= x.end;

export function diffTimes(store: Store, sel: { worker?: string; instance?: string }, from: number, to: number): Diff {
  if (sel.worker !== undefined) {
    const w = store.worker(sel.worker);
    if (!w) throw new HttpError(404, `worker '${sel.worker}' not found`);
    const a = workerAt(store, w, from, true);
    const b = workerAt(store, w, to, false);
    if (!a || !b) throw new HttpError(404, `worker '${sel.worker}' has no snapshots in that range`);
    return { a: { id: a.snap.id, time: a.snap.time, worker: w.key }, b: { id: b.snap.id, time: b.snap.time, worker: w.key }, rows: diffStates(a.st, b.st) };
  }
  const workers = instanceWorkers(store, sel.instance!);
  const side = (t: number): { st: State; id: number; workers: number } => {
    const parts: State[] = [];
    let id = 0;
    for (const x of workers) {
      if (!runningAt(x, t)) continue; // not started yet, or gone before t (its successor stands for it)
      const got = workerAt(store, x.w, t, false);
      if (!got) continue;
      parts.push(got.st);
      id = Math.max(id, got.snap.id);
    }
    return { st: sumStates(parts), id, workers: parts.length };
  };
  const a = side(from), b = side(to);
  if (a.workers === 0 && b.workers === 0) throw new HttpError(404, `instance '${sel.instance}' has no worker running at either time`);
  return { a: { id: a.id, time: from }, b: { id: b.id, time: to }, rows: diffStates(a.st, b.st) };
}

export interface InstanceSeries {
  instance: string;
  metric: string;
  /** keys of the workers that contributed, oldest first */
  workers: string[];
  /** [time, sum over the workers running at that time of each one's latest value at or before it] */
  points: [number, number][];
}

/**
 * A metric of a whole instance over time: at every time one of its workers reported the
 * metric, the sum over the workers running then of each one's latest value at or before
 * that time (deep-scan metrics: of its latest deep snapshot). Spans reloads: a gone
 * worker stops counting after its last snapshot, its successor counts from its first.
 */
export function instanceSeries(store: Store, instance: string, metric: string, from: number, to: number, limit: number): InstanceSeries {
  const deep = isDeepMetric(metric);
  const parts: { key: string; x: InstanceWorker; pts: [number, number][] }[] = [];
  for (const x of instanceWorkers(store, instance)) {
    if (x.end < from || x.first > to) continue;
    const pts: [number, number][] = [];
    if (x.first < from) {
      // the value it carried into the range
      const before = store.atOrBefore(x.w.id, from, deep);
      const v = before?.metrics[metric];
      if (before && v !== undefined && before.time < from) pts.push([before.time, v]);
    }
    pts.push(...store.series(x.w.id, metric, Math.max(from, x.first), Math.min(to, x.end), limit));
    if (pts.length) parts.push({ key: x.w.key, x, pts });
  }
  const times = [...new Set(parts.flatMap((p) => p.pts.map((q) => q[0]).filter((t) => t >= from && t <= to)))].sort((a, b) => a - b);
  const idx = parts.map(() => -1);
  const points: [number, number][] = [];
  for (const t of times) {
    if (points.length >= limit) break;
    let sum = 0, n = 0;
    parts.forEach((p, i) => {
      while (idx[i] + 1 < p.pts.length && p.pts[idx[i] + 1][0] <= t) idx[i]++;
      if (idx[i] < 0 || !runningAt(p.x, t)) return;
      sum += p.pts[idx[i]][1];
      n++;
    });
    if (n) points.push([t, sum]);
  }
  return { instance, metric, workers: parts.map((p) => p.key), points };
}

/** trend points per worker and kind (plain / deep) at most: suspects cost the same however often agents push */
export const MAX_POINTS = 120;

/** suspects over the last window_s seconds of each worker seen in it (optionally one instance or one worker) */
export function suspectsFor(store: Store, sel: { instance?: string; worker?: string }, window_s: number, now = Date.now() / 1000, rules: GrowthRules = DEFAULT_RULES): Suspect[] {
  const since = now - window_s;
  let workers = store.workersSeenSince(since);
  if (sel.instance !== undefined) workers = workers.filter((w) => w.instance === sel.instance);
  if (sel.worker !== undefined) workers = workers.filter((w) => w.key === sel.worker);
  // one worker at a time: memory holds one worker's window (≤ 2 × MAX_POINTS decoded snapshots),
  // however many workers the window saw (reloads and respawns add workers)
  const out: Suspect[] = [];
  for (const w of workers) {
    const last = store.atOrBefore(w.id, Number.MAX_VALUE);
    if (!last) continue;
    // the window ends at the worker's latest snapshot (agent clocks may differ from ours)
    const snaps = store.windowSampled(w.id, last.time - window_s, last.time, MAX_POINTS);
    const win: WorkerWindow = { worker: w.key, instance: w.instance, worker_start: w.worker_start, snapshots: snaps };
    out.push(...findSuspects([win], window_s, rules));
  }
  out.sort((x, y) => y.growth_bytes_per_min - x.growth_bytes_per_min);
  return out;
}
