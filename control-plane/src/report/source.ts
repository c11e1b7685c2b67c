/**
 * The report's input from the control plane's store: which worker (given, or the
 * one of the selection that grows fastest), its snapshots over the window, its
 * stored call-path fetches in the window, and a line per other worker of its
 * instance. Windows end at the worker's latest snapshot (agent clock) unless `to` is given.
 */
import { Store, WorkerRow } from "../store";
import { CallpathStore } from "../callpaths";
import { Symbolizer } from "../elfsym";
import { nameCreationPaths } from "./creation";
import { Callpaths } from "../protocol";
import { HttpError } from "../params";
import { MAX_POINTS, suspectsFor } from "../analysis";
import { ReportInput } from "./build";
import { Report } from "./model";

export interface ReportSelection {
  worker?: string;
  instance?: string;
  /** seconds; used when `from` is not given */
  window_s: number;
  from?: number;
  to?: number;
}

/** a worker by key, or by pid when the value is all digits and one worker of the selection has it */
function findWorker(store: Store, v: string, instance?: string): WorkerRow {
  const byKey = store.worker(v);
  if (byKey) return byKey;
  if (/^\d+$/.test(v)) {
    const ws = store.workers(instance !== undefined ? { instance } : {}).filter((w) => w.pid === Number(v));
    const live = ws.filter((w) => w.state === "live");
    const pick = live.length === 1 ? live[0] : ws.length ? ws.sort((a, b) => b.last_seen - a.last_seen)[0] : undefined;
    if (pick) return pick;
  }
  throw new HttpError(404, `worker '${v}' not found (give its key from GET /api/workers, or its pid)`);
}

/** the window, within the worker's life: a worker younger than the window is reported over all of it */
function windowOf(store: Store, w: WorkerRow, sel: ReportSelection): { from: number; to: number } {
  const span = store.span(w.id);
  if (span === undefined) throw new HttpError(404, `worker '${w.key}' has no snapshots`);
  const to = sel.to ?? span.last;
  const from = Math.max(sel.from ?? to - sel.window_s, span.first);
  if (!(from < to)) throw new HttpError(400, `from must be before to (from ${from}, to ${to})`);
  return { from, to };
}

/** the worker a report on an instance (or on everything) is about: the fastest-growing suspect's, else the largest RSS growth */
function pickWorker(store: Store, sel: ReportSelection): { w: WorkerRow; others: WorkerRow[] } {
  if (sel.instance !== undefined && store.workers({ instance: sel.instance }).length === 0) throw new HttpError(404, `instance '${sel.instance}' not found`);
  let ws = sel.instance !== undefined ? store.workers({ instance: sel.instance }) : store.workers();
  if (ws.length === 0) throw new HttpError(404, "no workers stored yet");
  const withData = ws.filter((w) => store.span(w.id) !== undefined);
  if (withData.length) ws = withData;
  if (sel.instance === undefined && new Set(ws.map((w) => w.instance)).size > 1) {
    throw new HttpError(400, `several instances stored (${[...new Set(ws.map((w) => w.instance))].join(", ")}): give instance or worker`);
  }
  const now = Math.max(...ws.map((w) => store.span(w.id)?.last ?? 0));
  const sus = suspectsFor(store, { instance: sel.instance ?? ws[0].instance }, sel.window_s, now);
  const top = sus[0]?.worker;
  const rssGrowth = (w: WorkerRow): number => {
    const { from, to } = windowOf(store, w, sel);
    const a = store.firstAfter(w.id, from) ?? store.atOrBefore(w.id, from), b = store.atOrBefore(w.id, to);
    return a && b ? b.rss_bytes - a.rss_bytes : -Infinity;
  };
  const w = (top !== undefined ? ws.find((x) => x.key === top) : undefined) ?? ws.slice().sort((a, b) => rssGrowth(b) - rssGrowth(a))[0];
  return { w, others: ws.filter((x) => x !== w && x.instance === w.instance) };
}

/** one for the process: it caches the objects' symbol tables */
const symbolizer = new Symbolizer();

export function reportInputFromStore(store: Store, callpaths: CallpathStore, sel: ReportSelection, reach: ReportInput["reach"], now = Date.now() / 1000): { input: ReportInput; worker: WorkerRow } {
  const { w, others } = sel.worker !== undefined ? { w: findWorker(store, sel.worker, sel.instance), others: [] as WorkerRow[] } : pickWorker(store, sel);
  if (sel.instance !== undefined && w.instance !== sel.instance) throw new HttpError(400, `worker '${w.key}' is not in instance '${sel.instance}'`);
  const { from, to } = windowOf(store, w, sel);
  const snapshots = store.windowSampled(w.id, from, to, MAX_POINTS).map((s) => ({ time: s.time, deep: s.deep, metrics: s.metrics, unrooted: s.unrooted }));
  // call paths at the window's start: the latest fetch before it (else the first in it); at its end: the
  // latest in it (fetches are stamped by this process's clock: a minute of slack past the agent's `to`)
  const fetches = callpaths.list(w.key); // newest first
  const get = (id: number | undefined): Callpaths | undefined => (id === undefined ? undefined : callpaths.get(id));
  const last = fetches.find((c) => c.time <= to + 60 && c.time >= from);
  const first = fetches.find((c) => c.time <= from) ?? [...fetches].reverse().find((c) => c.time >= from);
  const cp = last ? { first: get(first?.id), last: get(last.id) } : undefined;
  nameCreationPaths(snapshots, [cp?.first, cp?.last], symbolizer);
  const otherLines: Report["others"] = others.map((o) => {
    const ow = windowOf(store, o, { ...sel, to: undefined, from: undefined });
    const a = store.firstAfter(o.id, ow.from) ?? store.atOrBefore(o.id, ow.from), b = store.atOrBefore(o.id, ow.to);
    const s = suspectsFor(store, { worker: o.key }, sel.window_s, ow.to)[0];
    return { key: o.key, pid: o.pid, rss_bytes: b?.rss_bytes, rss_delta: a && b ? b.rss_bytes - a.rss_bytes : undefined, ...(s ? { top_suspect: s.evidence } : {}) };
  });
  return {
    worker: w,
    input: {
      mode: "history",
      generated_at: now,
      worker: { key: w.key, instance: w.instance, pid: w.pid, host: w.host, worker_start: w.worker_start },
      window: { from, to, seconds: to - from },
      snapshots,
      callpaths: cp,
      reach,
      ...(others.length ? { others: otherLines } : {}),
    },
  };
}
