import * as ffi from "ffi";
import { cpuMs } from "../base/clock";
import { cdef } from "../base/cdef";
import { traceEventsTaken } from "../layers/luajit/vm-events";

/**
 * What the deep scan's budget records about its slices, for the scan status: the
 * thread's page faults and involuntary switches (getrusage), and LuaJIT's trace
 * compiler events (jit.attach) with the source lines they happened at. Only numbers
 * and references to constant strings are kept while slices run; the text is made at
 * the end of the scan (recText, traceSites), outside the slices.
 */

/** called when the trace compiler starts a trace (the running scan's budget yields earlier then) */
export const traceStartHook: { fn?: (this: void) => void } = {};

cdef(`
  typedef struct { long tv[4]; long f[14]; } memdiag_rusage_t;
  int getrusage(int who, memdiag_rusage_t *usage);
`);
const RUSAGE_THREAD = 1;
const ru = ffi.new("memdiag_rusage_t");
/** page faults (minor + major) and involuntary context switches of this thread so far */
export function faultsNow(): LuaMultiReturn<[number, number]> {
  if (ffi.C.getrusage(RUSAGE_THREAD, ru) !== 0) return $multi(0, 0);
  return $multi(tonumber(ru.f[4])! + tonumber(ru.f[5])!, tonumber(ru.f[13])!);
}

type TraceFn = (this: void, what: string, tr: number, func: unknown, pc: number, otr: unknown, oex: unknown) => void;
/** LuaJIT's jit.attach (trace events: "start", "stop", "abort", "flush"), when the VM has a JIT */
declare const jit: { attach?: (this: void, fn: TraceFn, what?: string) => void } | undefined;
/** trace events of the whole scan (the first MAX_EV): what, function, pc, abort reason; formatted at finish() */
const MAX_EV = 512;
export const EV = { n: 0, what: [] as string[], func: [] as unknown[], pc: [] as number[], err: [] as unknown[], info: [] as unknown[], total: 0, aborts: 0, flushes: 0, ms: 0 };
/** trace compiler activity since the counters were last reset: traces started, aborted, flushes, CPU ms spent from start to stop/abort */
export const JT = { starts: 0, aborts: 0, flushes: 0, ms: 0, t0: 0 };
function onTrace(this: void, what: string, _tr: number, func: unknown, pc: number, otr: unknown, oex: unknown): void {
  if (what === "start" || what === "abort" || what === "flush") {
    if (what === "start") EV.total++;
    else if (what === "abort") EV.aborts++;
    else EV.flushes++;
    if (EV.n < MAX_EV) {
      const i = EV.n++;
      EV.what[i] = what;
      EV.func[i] = func;
      EV.pc[i] = pc;
      EV.err[i] = otr;
      EV.info[i] = oex;
    }
  }
  if (what === "start") {
    JT.starts++;
    JT.t0 = cpuMs();
    if (traceStartHook.fn !== undefined) traceStartHook.fn();
  } else if (what === "stop" || what === "abort") {
    if (what === "abort") JT.aborts++;
    if (JT.t0 > 0) {
      JT.ms += cpuMs() - JT.t0;
      EV.ms += cpuMs() - JT.t0;
    }
    JT.t0 = 0;
  } else if (what === "flush") JT.flushes++;
}
let attached = false;
export function attachTrace(on: boolean): void {
  if (jit === undefined || jit.attach === undefined || on === attached) return;
  // never take the slot from the application's own handler (layers/luajit/vm-events.ts)
  if (on && traceEventsTaken(onTrace)) return;
  attached = on;
  if (on) {
    EV.n = 0;
    EV.total = 0;
    EV.aborts = 0;
    EV.flushes = 0;
    EV.ms = 0;
    jit.attach(onTrace, "trace");
  }
  else jit.attach(onTrace);
}
/**
 * The scan's trace events by source line: "N start/abort file:line (reason)", most frequent
 * first (at most 12), after the totals. Made at finish(), outside the slices.
 */
function evText(i: number, ju: unknown, vmdef: unknown): string {
  let loc = "?";
  if (ju !== undefined && type(EV.func[i]) === "function") {
    const fi = (ju as { funcinfo: (this: void, f: unknown, pc: number) => { loc?: string } }).funcinfo(EV.func[i], EV.pc[i]);
    loc = fi.loc ?? "?";
  }
  let why = "";
  if (EV.what[i] === "abort" && vmdef !== undefined && type(EV.err[i]) === "number") {
    const fmt = (vmdef as { traceerr: string[] }).traceerr[EV.err[i] as number];
    if (fmt !== undefined) {
      const [okF, txt] = pcall(string.format, fmt, EV.info[i]);
      why = ` (${okF ? txt : fmt})`;
    }
  }
  return `${EV.what[i]} ${loc}${why}`;
}

export function jitModules(): LuaMultiReturn<[unknown, unknown]> {
  const [okU, ju] = pcall(require, "jit.util");
  const [okV, vmdef] = pcall(require, "jit.vmdef");
  return $multi(okU ? ju : undefined, okV ? vmdef : undefined);
}

export function traceSites(): string[] {
  const out: string[] = [];
  out.push(string.format("%d traces started, %d aborted, %d flushes, %.1f ms cpu from start to stop/abort", EV.total, EV.aborts, EV.flushes, EV.ms));
  const [ju, vmdef] = jitModules();
  // counted by (event, function, pc) without making strings; only the 12 most frequent are named
  const byFunc = new LuaTable<AnyNotNil, LuaTable<number, number>>();
  const first: number[] = [];
  const count: number[] = [];
  for (let i = 0; i < EV.n; i++) {
    let byPc = byFunc.get(EV.func[i] as AnyNotNil);
    if (byPc === undefined) {
      byPc = new LuaTable();
      byFunc.set(EV.func[i] as AnyNotNil, byPc);
    }
    // pc * 4 + event kind: one key per site and event
    const key = EV.pc[i] * 4 + (EV.what[i] === "start" ? 0 : EV.what[i] === "abort" ? 1 : 2);
    const j = byPc.get(key);
    if (j === undefined) {
      byPc.set(key, first.length);
      first.push(i);
      count.push(1);
    } else count[j]++;
  }
  const order: number[] = [];
  for (let j = 0; j < first.length; j++) order.push(j);
  table.sort(order, (a, b) => count[a] > count[b]);
  for (let k = 0; k < order.length && k < 12; k++) out.push(`${count[order[k]]} ${evText(first[order[k]], ju, vmdef)}`);
  return out;
}

/** stop the trace-event diagnostics (also after a failed scan that never reached finish()) */
export function stopScanDiagnostics(): void {
  attachTrace(false);
}

/**
 * What is known about one slice, as numbers and references to constant strings only:
 * recorded when a slice closes (just before the yield) and formatted at finish().
 */
export interface SliceRec {
  cpu: number;
  wall: number;
  faults: number;
  preempted: number;
  traces: number;
  aborts: number;
  traceMs: number;
  from: string;
  to: string;
  checks: number;
  maxGap: number;
  /** wall offset of the last check */
  lastCheck: number;
  /** the slice's trace events: EV[ev0 .. ev1) */
  ev0: number;
  ev1: number;
  markWhat: string[];
  markAt: number[];
  markVal: number[];
  markKb: number[];
}

export function newRec(): SliceRec {
  return { cpu: 0, wall: 0, faults: 0, preempted: 0, traces: 0, aborts: 0, traceMs: 0, from: "", to: "", checks: 0, maxGap: 0, lastCheck: 0, ev0: 0, ev1: 0, markWhat: [], markAt: [], markVal: [], markKb: [] };
}

export function recText(r: SliceRec, ju: unknown, vmdef: unknown): string {
  const marks: string[] = [];
  const evs: string[] = [];
  for (let i = r.ev0; i < r.ev1 && i < EV.n && evs.length < 8; i++) evs.push(evText(i, ju, vmdef));
  for (let i = 0; i < r.markWhat.length; i++) {
    const at = string.format("%.2f", r.markAt[i]);
    marks.push(r.markVal[i] >= 0 ? `gap ${string.format("%.2f", r.markVal[i])} ms (${string.format("%.0f", r.markKb[i])} KB read) in ${r.markWhat[i]}@${at}` : `${r.markWhat[i]}@${at}`);
  }
  return string.format(
    "%.2f ms cpu (wall %.2f) from \"%s\" to \"%s\": %d checks, last at %.2f, max gap %.3f ms; faults %d, preempted %d, traces %d (aborted %d, %.2f ms cpu)%s",
    r.cpu, r.wall, r.from, r.to, r.checks, r.lastCheck, r.maxGap, r.faults, r.preempted, r.traces, r.aborts, r.traceMs,
    (marks.length > 0 ? " [" + marks.join(" ") + "]" : "") + (evs.length > 0 ? " {" + evs.join("; ") + "}" : ""),
  );
}

