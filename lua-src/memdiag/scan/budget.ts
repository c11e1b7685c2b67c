import { Budget } from "../util/budget";
import { cpuMs, monoMs } from "../util/clock";
import { Maps } from "../safe/maps";

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

/** the running scan's budget (one deep scan per worker), for hooks that have no ctx */
const CUR: { b?: DeepBudget } = {};
function markCur(this: void, what: string): void {
  if (CUR.b !== undefined) CUR.b.mark(what);
}

export class DeepBudget extends Budget {
  public maxSliceCpuMs = 0;
  /** what was running when the longest (CPU) slice ended */
  public phase = "";
  public maxSlicePhase = "";
  private startPhase = "start";
  public cpuTotalMs = 0;
  /** slices over SLOW_SLICE_MS of CPU (the issue-3 target for the longest slice) */
  public slowSlices = 0;
  private slowStart: string[] = [];
  private slowEnd: string[] = [];
  private wall0: number;
  private cpu0: number;

  constructor(sliceMs: number) {
    super(sliceMs, true);
    CUR.b = this;
    Maps.onRead = markCur;
    collectgarbage("stop");
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  /**
   * Steps marked inside the current slice with their CPU offset (coarse points only: one
   * clock read each). Kept as references and numbers, formatted only when the slice turns
   * out to be the longest: creating strings inside a slice can cost milliseconds (LuaJIT
   * interns every string, and crossing the string table's size doubles and rehashes it,
   * O(all strings of the VM); measured 41 ms at 0.5 M strings). `what` must be a constant.
   */
  private markWhat: string[] = [];
  private markAt: number[] = [];
  private markVal: number[] = [];
  private nMarks = 0;
  mark(what: string, val = -1): void {
    if (this.nMarks >= 24) return;
    const i = this.nMarks++;
    this.markWhat[i] = what;
    this.markAt[i] = cpuMs() - this.cpu0;
    this.markVal[i] = val;
  }

  private marksText(): string {
    const out: string[] = [];
    for (let i = 0; i < this.nMarks; i++) {
      const at = string.format("%.2f", this.markAt[i]);
      out.push(this.markVal[i] >= 0 ? `gap ${string.format("%.2f", this.markVal[i])} ms in ${this.markWhat[i]}@${at}` : `${this.markWhat[i]}@${at}`);
    }
    return out.join(" ");
  }

  public checks = 0;
  public maxGapMs = 0;
  private lastCheck = 0;
  private lastCheckCpu = 0;
  check(): boolean {
    this.checks++;
    const now = monoMs();
    if (this.lastCheck > 0 && now - this.lastCheck > this.maxGapMs) this.maxGapMs = now - this.lastCheck;
    // a long stretch of CPU without a check: mark where it ended and in which step
    const cpu = cpuMs();
    if (this.lastCheckCpu > 0 && cpu - this.lastCheckCpu > this.sliceMs * 0.5) this.mark(this.phase, cpu - this.lastCheckCpu);
    this.lastCheck = now;
    this.lastCheckCpu = cpu;
    const elapsed = now - this.wall0;
    if (elapsed < this.sliceMs) return false;
    this.close(elapsed);
    collectgarbage("restart");
    ngx.sleep(YIELD_S);
    collectgarbage("stop");
    // whatever ran meanwhile may have unmapped memory: the next check outside the brk heap re-reads
    Maps.invalidateSelf();
    this.slices++;
    this.epoch++;
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
    // gaps are measured inside slices, not across the yield
    this.lastCheck = this.wall0;
    this.lastCheckCpu = this.cpu0;
    return true;
  }

  finish(): void {
    if (CUR.b === this) {
      CUR.b = undefined;
      Maps.onRead = undefined;
    }
    collectgarbage("restart");
    this.close(monoMs() - this.wall0);
    const slowWhere = new LuaTable<string, number>();
    const keys: string[] = [];
    for (let i = 0; i < this.slowStart.length; i++) {
      const k = `${this.slowStart[i]}>${this.slowEnd[i]}`;
      if (slowWhere.get(k) === undefined) keys.push(k);
      slowWhere.set(k, (slowWhere.get(k) ?? 0) + 1);
    }
    const where: string[] = [];
    for (const k of keys) if (where.length < 8) where.push(`${k}:${slowWhere.get(k)}`);
    this.maxSlicePhase += `; ${this.slowSlices} of ${this.slices} slices over ${SLOW_SLICE_MS} ms CPU (${where.join(", ")})`;
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  /** CPU time of all slices so far, the current one included */
  cpuSoFar(): number {
    return this.cpuTotalMs + (cpuMs() - this.cpu0);
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

  private close(elapsed: number): void {
    const cpu = cpuMs() - this.cpu0;
    const bucket = Math.min(100, Math.floor(cpu * 10));
    this.hist[bucket] = (this.hist[bucket] ?? 0) + 1;
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    this.cpuTotalMs += cpu;
    if (cpu > SLOW_SLICE_MS) {
      this.slowSlices++;
      // references only (no string made here): counted by start>end step at finish()
      if (this.slowStart.length < 256) {
        this.slowStart.push(this.startPhase);
        this.slowEnd.push(this.phase);
      }
    }
    if (cpu > this.maxSliceCpuMs) {
      this.maxSliceCpuMs = cpu;
      this.maxSlicePhase = `from "${this.startPhase}" to "${this.phase}" (wall ${string.format("%.2f", elapsed)}, last check cpu ${string.format("%.2f", this.lastCheckCpu - this.cpu0)}, ${this.checks} checks, max gap ${string.format("%.3f", this.maxGapMs)} ms)${this.nMarks > 0 ? " [" + this.marksText() + "]" : ""}`;
    }
    this.checks = 0;
    this.maxGapMs = 0;
    this.nMarks = 0;
    this.startPhase = this.phase;
  }
}
