import { Budget } from "../util/budget";
import { cpuMs, monoMs } from "../util/clock";
import { Maps } from "../safe/maps";
import * as ffi from "ffi";
import { cdef } from "../util/cdef";
import { noJit } from "./nojit";
import { holdGc, releaseGc } from "../luajit/gc-hold";
import { traceEventsTaken } from "../luajit/trace-events";

cdef(`
  typedef struct { long tv[4]; long f[14]; } memdiag_rusage_t;
  int getrusage(int who, memdiag_rusage_t *usage);
`);
const RUSAGE_THREAD = 1;
const ru = ffi.new("memdiag_rusage_t");
/** page faults (minor + major) and involuntary context switches of this thread so far */
function faultsNow(): LuaMultiReturn<[number, number]> {
  if (ffi.C.getrusage(RUSAGE_THREAD, ru) !== 0) return $multi(0, 0);
  return $multi(tonumber(ru.f[4])! + tonumber(ru.f[5])!, tonumber(ru.f[13])!);
}

type TraceFn = (this: void, what: string, tr: number, func: unknown, pc: number, otr: unknown, oex: unknown) => void;
/** LuaJIT's jit.attach (trace events: "start", "stop", "abort", "flush"), when the VM has a JIT */
declare const jit: { attach?: (this: void, fn: TraceFn, what?: string) => void } | undefined;
/** trace events of the whole scan (the first MAX_EV): what, function, pc, abort reason; formatted at finish() */
const MAX_EV = 512;
const EV = { n: 0, what: [] as string[], func: [] as unknown[], pc: [] as number[], err: [] as unknown[], info: [] as unknown[], total: 0, aborts: 0, flushes: 0, ms: 0 };
/** trace compiler activity since the counters were last reset: traces started, aborted, flushes, CPU ms spent from start to stop/abort */
const JT = { starts: 0, aborts: 0, flushes: 0, ms: 0, t0: 0 };
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
    if (CUR.b !== undefined) CUR.b.traceStarted();
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
function attachTrace(on: boolean): void {
  if (jit === undefined || jit.attach === undefined || on === attached) return;
  // never take the slot from the application's own handler (trace-events.ts)
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

function jitModules(): LuaMultiReturn<[unknown, unknown]> {
  const [okU, ju] = pcall(require, "jit.util");
  const [okV, vmdef] = pcall(require, "jit.vmdef");
  return $multi(okU ? ju : undefined, okV ? vmdef : undefined);
}

function traceSites(): string[] {
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
 * The deep scan's slice budget: like util/budget.ts (yield when a slice has run
 * sliceMs of wall time, so requests wait at most about that long), but it also
 * measures each slice's thread CPU time, which is what the scan costs the worker
 * and what it controls (wall slices include time the OS gave to other processes),
 * and it yields with a 1 ms sleep: ngx.sleep(0) logs a warning on every call in
 * builds without OpenResty's delayed-events patch (Debian's nginx).
 *
 * The LuaJIT GC is stopped while a slice runs and restarted before every yield:
 * measured, the GC steps our few allocations trigger (paying the whole VM's debt)
 * cost 20-50x the scan's own work in the slice. The debt is paid at the normal
 * pace by whatever allocates between slices. Whoever creates a DeepBudget must
 * call finish() (also on errors) so the GC is never left stopped.
 */
const YIELD_S = 0.001;
const SLOW_SLICE_MS = 1.5;
/**
 * Yield once a slice has run this share of sliceMs: the headroom is for what runs past the last
 * check (a step's setup, a gap of a few hundred µs in which this VM's host takes the CPU without
 * the guest seeing it). 1 GB heap, 3 runs of 6 scans each (2026-11-27): at 1, the median scan's
 * longest slice was 1.67 / 1.46 / 1.38 ms and scans without a stall 1.2-1.7 ms; at 0.75, 1.35 /
 * 1.31 / 1.24 ms and 1.0-1.35 ms, for 1,200-1,900 slices instead of ~1,500 and the same CPU time.
 * (Before the scan's traces were kept out of its slices, 0.5 had not helped: compiles of 1-2 ms
 * dominated.)
 */
const YIELD_AT = 0.75;
/** ... or this share once the JIT compiled a trace in the slice (more tend to follow: side traces of the same loops) */
const YIELD_AFTER_TRACE = 0.3;
/** slow slices described one by one in the scan status, at most */
const MAX_SITES = 16;

/** the running scan's budget (one deep scan per worker), for hooks that have no ctx */
const CUR: { b?: DeepBudget } = {};
function markCur(this: void, what: string): void {
  if (CUR.b !== undefined) CUR.b.mark(what);
}

/**
 * What is known about one slice, as numbers and references to constant strings only:
 * recorded when a slice closes (just before the yield) and formatted at finish().
 */
interface SliceRec {
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

function newRec(): SliceRec {
  return { cpu: 0, wall: 0, faults: 0, preempted: 0, traces: 0, aborts: 0, traceMs: 0, from: "", to: "", checks: 0, maxGap: 0, lastCheck: 0, ev0: 0, ev1: 0, markWhat: [], markAt: [], markVal: [], markKb: [] };
}

function recText(r: SliceRec, ju: unknown, vmdef: unknown): string {
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

/**
 * The yield path of check(), kept out of the JIT (jit.off). check() is inlined into the trace
 * of every loop that calls it; its yield branch is a side exit taken once per slice, and once
 * hot (10 exits) LuaJIT compiled a side trace through close(), the sleep and the next slice's
 * setup for every such loop: five or six traces per loop (every NYI call, collectgarbage and
 * ngx.sleep, stitches a new one), ~1 ms of compiling each time, inside a slice, in every scan.
 * With the JIT off here a side trace aborts at this call (tryside times, then the exit is left
 * to the interpreter): the path runs interpreted, once per slice, for a few microseconds.
 */
function yieldSlice(this: void, b: DeepBudget, elapsed: number): boolean {
  b.nextSlice(elapsed);
  return true;
}
/** check()'s other rare branch, kept out of the JIT for the same reason */
function longGap(this: void, b: DeepBudget, now: number): void {
  b.noteGap(now - b.lastCheckAt());
}
noJit(yieldSlice);
noJit(longGap);

export class DeepBudget extends Budget {
  /** the longest slice in thread CPU time (slices not preempted: see close()) */
  public maxSliceCpuMs = 0;
  /** the step that was running when a slice ended (a constant string) */
  public phase = "";
  /** the longest (CPU) slice, described at finish() */
  public maxSlicePhase = "";
  private startPhase = "start";
  public cpuTotalMs = 0;
  /** slices during which the thread was switched out involuntarily (not in the slice CPU figures), their longest CPU time, and how many were over SLOW_SLICE_MS */
  public preemptedSlices = 0;
  public maxPreemptedCpuMs = 0;
  public slowPreempted = 0;
  /** slices whose thread CPU clock ran ahead of the wall clock (capped, see close()) */
  public clockJumps = 0;
  /** slices over SLOW_SLICE_MS of CPU (the issue-3 target for the longest slice) */
  public slowSlices = 0;
  /** the slow slices (the first MAX_SITES), described at finish() */
  public slowSites: string[] = [];
  /** the scan's trace compiler activity (totals, then the most frequent sites), made at finish() */
  public jitSites: string[] = [];
  private slow: SliceRec[] = [];
  private longest = newRec();
  // set before the trace handler is attached: a trace can start (traceStarted reads wall0)
  // before the constructor body reaches its own assignments
  private wall0: number = monoMs();
  private cpu0: number = cpuMs();

  constructor(sliceMs: number) {
    super(sliceMs, true);
    CUR.b = this;
    Maps.onRead = markCur;
    holdGc();
    attachTrace(true);
    this.beginSlice();
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
    this.lastCheck = this.wall0;
    this.deadline = this.wall0 + this.sliceMs * YIELD_AT;
  }

  /** per slice: page faults, involuntary switches and trace compiler at its start */
  private flt0 = 0;
  private ivcsw0 = 0;
  private beginSlice(): void {
    const [f, iv] = faultsNow();
    this.flt0 = f;
    this.ivcsw0 = iv;
    JT.starts = 0;
    JT.aborts = 0;
    JT.flushes = 0;
    JT.ms = 0;
    this.ev0 = EV.n;
  }
  private ev0 = 0;

  /**
   * Steps marked inside the current slice with their CPU offset (coarse points only: one
   * clock read each). Kept as references and numbers, formatted only at finish(): creating
   * strings inside a slice can cost milliseconds (LuaJIT interns every string, and crossing
   * the string table's size doubles and rehashes it, O(all strings of the VM); measured
   * 41 ms at 0.5 M strings). `what` must be a constant.
   */
  private markWhat: string[] = [];
  private markAt: number[] = [];
  private markVal: number[] = [];
  private markKb: number[] = [];
  /** bytes the scan has read so far (heap/walk.ts progress), for the gap marks: was a long gap long work or a stall? */
  public progress: { bytes: number } = { bytes: 0 };
  private lastBytes = 0;
  private nMarks = 0;
  mark(what: string, val = -1): void {
    if (this.nMarks >= 24) return;
    const i = this.nMarks++;
    this.markWhat[i] = what;
    this.markAt[i] = monoMs() - this.wall0;
    this.markVal[i] = val;
    this.markKb[i] = (this.progress.bytes - this.lastBytes) / 1024;
  }

  public checks = 0;
  /** the longest gap between two checks in the slice, when over half a slice (else 0) */
  public maxGapMs = 0;
  private lastCheck = 0;
  lastCheckAt(): number {
    return this.lastCheck;
  }
  /**
   * Called every few tens of microseconds of work: wall clock only (49 ns through the
   * vDSO here; the thread CPU clock is a system call, 2.1 us on this VM, and read per
   * check it cost ~10 % of the scan), the CPU clock once per slice.
   */
  check(): boolean {
    this.checks++;
    const now = monoMs();
    // a long stretch without a check (rare): noted out of the JIT (longGap)
    if (now - this.lastCheck > this.sliceMs * 0.5) longGap(this, now);
    this.lastCheck = now;
    this.lastBytes = this.progress.bytes;
    if (now < this.deadline) return false;
    return yieldSlice(this, now - this.wall0);
  }

  /** Budget.reserve: yield now unless a step of about `ms` without checks fits before the deadline */
  reserve(ms: number): boolean {
    const now = monoMs();
    if (now + ms < this.deadline) return false;
    return yieldSlice(this, now - this.wall0);
  }

  /** when the current slice yields: sliceMs * YIELD_AT after its start, earlier once a trace was compiled in it */
  private deadline = 0;
  /**
   * A trace compiled in this slice (called from the trace event handler): more tend to follow
   * (side traces of the same loops), each a step longer than the work between two checks;
   * yield early rather than risk a second one.
   */
  traceStarted(): void {
    const d = this.wall0 + this.sliceMs * YIELD_AFTER_TRACE;
    if (d < this.deadline) this.deadline = d;
  }

  /** a gap of `gap` ms between two checks ended now: the longest, and a mark */
  noteGap(gap: number): void {
    if (gap > this.maxGapMs) this.maxGapMs = gap;
    this.mark(this.phase, gap);
  }

  /** the end of a slice, the yield and the start of the next (yieldSlice, not compiled) */
  nextSlice(elapsed: number): void {
    this.close(elapsed);
    releaseGc();
    ngx.sleep(YIELD_S);
    holdGc();
    // whatever ran meanwhile may have unmapped memory: the next check outside the brk heap re-reads
    Maps.invalidateSelf();
    this.slices++;
    this.epoch++;
    this.beginSlice();
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
    // gaps are measured inside slices, not across the yield
    this.lastCheck = this.wall0;
    this.deadline = this.wall0 + this.sliceMs * YIELD_AT;
    this.lastBytes = this.progress.bytes;
  }

  finish(): void {
    if (CUR.b === this) {
      CUR.b = undefined;
      Maps.onRead = undefined;
    }
    releaseGc();
    this.close(monoMs() - this.wall0);
    attachTrace(false);
    // formatting takes up to ~1.5 ms (a source line per trace event named): in pieces, yielding
    // between them like the slices did (outside the slice figures)
    let t = monoMs();
    let spent = 0;
    const pause = (): void => {
      if (monoMs() - t < this.sliceMs) return;
      spent += monoMs() - t;
      ngx.sleep(YIELD_S);
      t = monoMs();
    };
    this.jitSites = traceSites();
    const [ju, vmdef] = jitModules();
    for (const r of this.slow) {
      pause();
      this.slowSites.push(recText(r, ju, vmdef));
    }
    pause();
    this.maxSlicePhase = `${recText(this.longest, ju, vmdef)}; ${this.slowSlices} of ${this.slices - this.preemptedSlices} slices over ${SLOW_SLICE_MS} ms CPU; ${this.preemptedSlices} preempted slices (${this.slowPreempted} over ${SLOW_SLICE_MS} ms, longest ${string.format("%.2f", this.maxPreemptedCpuMs)} ms)`;
    this.diagMs = spent + (monoMs() - t);
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }
  /** wall time finish() spent describing the slow slices and the traces (yielding every sliceMs) */
  public diagMs = 0;

  /** CPU time of all slices so far, the current one included (capped by wall time, as in close()) */
  cpuSoFar(): number {
    return this.cpuTotalMs + Math.min(cpuMs() - this.cpu0, monoMs() - this.wall0);
  }

  /** slices by CPU time in 0.1 ms buckets (the last one: 10 ms and more) */
  private hist: number[] = [];
  /** CPU time of the slice at the given quantile (0..1), to 0.1 ms; robust to the odd slice the host stole time from */
  sliceCpuQuantile(q: number): number {
    let n = 0;
    for (let i = 0; i <= 100; i++) n += this.hist[i] ?? 0;
    if (n === 0) return 0;
    let want = Math.ceil(n * q);
    for (let i = 0; i <= 100; i++) {
      want -= this.hist[i] ?? 0;
      if (want <= 0) return (i + 1) / 10;
    }
    return 10;
  }

  /** a slow slice's description, for the first MAX_SITES of them */
  private keepSlow(cpu: number, elapsed: number): void {
    if (this.slow.length >= MAX_SITES) return;
    const r = newRec();
    this.record(r, cpu, elapsed);
    this.slow.push(r);
  }

  /** the slice that just ended, into r (numbers and constant strings only) */
  private record(r: SliceRec, cpu: number, elapsed: number): void {
    const [f, iv] = faultsNow();
    r.cpu = cpu;
    r.wall = elapsed;
    r.faults = f - this.flt0;
    r.preempted = iv - this.ivcsw0;
    r.traces = JT.starts;
    r.aborts = JT.aborts;
    r.traceMs = JT.ms;
    r.from = this.startPhase;
    r.to = this.phase;
    r.checks = this.checks;
    r.maxGap = this.maxGapMs;
    r.lastCheck = this.lastCheck - this.wall0;
    r.ev0 = this.ev0;
    r.ev1 = EV.n;
    for (let i = 0; i < this.nMarks; i++) {
      r.markWhat[i] = this.markWhat[i];
      r.markAt[i] = this.markAt[i];
      r.markVal[i] = this.markVal[i];
      r.markKb[i] = this.markKb[i];
    }
    for (let i = r.markWhat.length - 1; i >= this.nMarks; i--) {
      r.markWhat[i] = undefined as unknown as string;
      r.markAt[i] = undefined as unknown as number;
      r.markVal[i] = undefined as unknown as number;
      r.markKb[i] = undefined as unknown as number;
    }
  }

  private close(elapsed: number): void {
    // a thread's CPU time cannot exceed the wall time, but this VM's thread CPU clock jumps
    // by milliseconds at some context switches (seen: 6.5 ms of "CPU" in a 0.76 ms slice):
    // cap it. Stalls of the whole vCPU still count (both clocks see them).
    const cpuRaw = cpuMs() - this.cpu0;
    const cpu = Math.min(cpuRaw, monoMs() - this.wall0);
    if (cpuRaw > cpu + 0.05) this.clockJumps++;
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    this.cpuTotalMs += cpu;
    // Taken off the CPU by the scheduler during the slice: on this VM the thread CPU clock is
    // then unreliable (measured in a plain LuaJIT loop reading 1 GB, no nginx: every CPU "stall"
    // over 1 ms, up to 26 ms, came with an involuntary switch, some with CPU >> wall time),
    // and the wall time includes whatever else ran. Counted apart from the slice figures.
    const [, iv] = faultsNow();
    if (iv > this.ivcsw0) {
      this.preemptedSlices++;
      if (cpu > this.maxPreemptedCpuMs) this.maxPreemptedCpuMs = cpu;
      if (cpu > SLOW_SLICE_MS) {
        this.slowPreempted++;
        this.keepSlow(cpu, elapsed);
      }
      this.resetSlice();
      return;
    }
    const bucket = Math.min(100, Math.floor(cpu * 10));
    this.hist[bucket] = (this.hist[bucket] ?? 0) + 1;
    if (cpu > SLOW_SLICE_MS) {
      this.slowSlices++;
      this.keepSlow(cpu, elapsed);
    }
    if (cpu > this.maxSliceCpuMs) {
      this.maxSliceCpuMs = cpu;
      this.record(this.longest, cpu, elapsed);
    }
    this.resetSlice();
  }

  private resetSlice(): void {
    this.checks = 0;
    this.maxGapMs = 0;
    this.nMarks = 0;
    this.startPhase = this.phase;
  }
}
