import { Budget, YIELD_S } from "../base/slice";
import { cpuMs, monoMs } from "../base/clock";
import { Maps } from "../safe/maps";
import { noJit } from "../base/nojit";
import { holdGc, releaseGc } from "../layers/luajit/gc-hold";
import { EV, JT, SliceRec, attachTrace, faultsNow, jitModules, newRec, recText, traceSites, traceStartHook } from "./trace-events";

/**
 * The deep scan's slice budget: like base/slice.ts (yield when a slice has run
 * sliceMs of wall time, so requests wait at most about that long), but it also
 * measures each slice's thread CPU time, which is what the scan costs the worker
 * and what it controls (wall slices include time the OS gave to other processes).
 * It yields like Budget (ngx.sleep(YIELD_S): see base/slice.ts for why not ngx.sleep(0)).
 *
 * The LuaJIT GC is stopped while a slice runs and restarted before every yield:
 * the GC steps our few allocations trigger pay the whole VM's debt, many times the
 * scan's own work in the slice. The debt is paid at the normal pace by whatever
 * allocates between slices. Whoever creates a DeepBudget must
 * call finish() (also on errors) so the GC is never left stopped.
 */
const SLOW_SLICE_MS = 1.5;
/**
 * Yield once a slice has run this share of sliceMs: the headroom is for what runs past the last
 * check (a step's setup, a gap in which a virtual machine's host takes the CPU without the guest
 * seeing it). At this share the longest slice stays near sliceMs for about the same number of
 * slices and the same CPU time as at 1 (bench/deep-scan.ts; figures in docs/design-figures.md).
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
function traceStartedCur(this: void): void {
  if (CUR.b !== undefined) CUR.b.traceStarted();
}
traceStartHook.fn = traceStartedCur;

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
  /** slices over SLOW_SLICE_MS of CPU (the target for the longest slice, README "Performance") */
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
  /** bytes the scan has read so far (deep/heap/walk.ts progress), for the gap marks: was a long gap long work or a stall? */
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
   * Called every few tens of microseconds of work: wall clock only (the vDSO makes it cheap;
   * the thread CPU clock is a system call, and read per check it would be a noticeable share
   * of the scan), the CPU clock once per slice.
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
    // a thread's CPU time cannot exceed the wall time, but on some virtual machines the
    // thread CPU clock jumps by milliseconds at a context switch (docs/design-figures.md):
    // cap it. Stalls of the whole vCPU still count (both clocks see them).
    const cpuRaw = cpuMs() - this.cpu0;
    const cpu = Math.min(cpuRaw, monoMs() - this.wall0);
    if (cpuRaw > cpu + 0.05) this.clockJumps++;
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    this.cpuTotalMs += cpu;
    // Taken off the CPU by the scheduler during the slice: the thread CPU clock is then
    // unreliable on some virtual machines (docs/design-figures.md), and the wall time includes
    // whatever else ran. Counted apart from the slice figures.
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
