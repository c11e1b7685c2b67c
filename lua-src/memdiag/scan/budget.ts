import { Budget } from "../util/budget";
import { cpuMs, monoMs } from "../util/clock";

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

export class DeepBudget extends Budget {
  public maxSliceCpuMs = 0;
  /** what was running when the longest (CPU) slice ended */
  public phase = "";
  public maxSlicePhase = "";
  private startPhase = "start";
  public cpuTotalMs = 0;
  /** slices over SLOW_SLICE_MS of CPU (the issue-3 target for the longest slice) */
  public slowSlices = 0;
  private slowWhere = new LuaTable<string, number>();
  private wall0: number;
  private cpu0: number;

  constructor(sliceMs: number) {
    super(sliceMs, true);
    collectgarbage("stop");
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  /** steps marked inside the current slice with their CPU offset (coarse points only: one clock read each) */
  private marks: string[] = [];
  mark(what: string): void {
    if (this.marks.length < 24) this.marks.push(`${what}@${string.format("%.2f", cpuMs() - this.cpu0)}`);
  }

  public checks = 0;
  public maxGapMs = 0;
  private lastCheck = 0;
  check(): boolean {
    this.checks++;
    const now = monoMs();
    if (this.lastCheck > 0 && now - this.lastCheck > this.maxGapMs) this.maxGapMs = now - this.lastCheck;
    // a long stretch without a check: mark where (in CPU time) it ended
    if (this.lastCheck > 0 && now - this.lastCheck > this.sliceMs * 2) this.mark(`gap ${string.format("%.1f", now - this.lastCheck)} ms`);
    this.lastCheck = now;
    const elapsed = now - this.wall0;
    if (elapsed < this.sliceMs) return false;
    this.close(elapsed);
    collectgarbage("restart");
    ngx.sleep(YIELD_S);
    collectgarbage("stop");
    this.slices++;
    this.epoch++;
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
    return true;
  }

  finish(): void {
    collectgarbage("restart");
    this.close(monoMs() - this.wall0);
    const where: string[] = [];
    for (const [k, n] of this.slowWhere) if (where.length < 8) where.push(`${k}:${n}`);
    this.maxSlicePhase += `; ${this.slowSlices} of ${this.slices} slices over ${SLOW_SLICE_MS} ms CPU (${where.join(", ")})`;
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  /** CPU time of all slices so far, the current one included */
  cpuSoFar(): number {
    return this.cpuTotalMs + (cpuMs() - this.cpu0);
  }

  private close(elapsed: number): void {
    const cpu = cpuMs() - this.cpu0;
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    this.cpuTotalMs += cpu;
    if (cpu > SLOW_SLICE_MS) {
      this.slowSlices++;
      const k = `${this.startPhase}>${this.phase}`;
      this.slowWhere.set(k, (this.slowWhere.get(k) ?? 0) + 1);
    }
    if (cpu > this.maxSliceCpuMs) {
      this.maxSliceCpuMs = cpu;
      this.maxSlicePhase = `from "${this.startPhase}" to "${this.phase}" (${this.checks} checks, max gap ${string.format("%.3f", this.maxGapMs)} ms)${this.marks.length > 0 ? " [" + this.marks.join(" ") + "]" : ""}`;
    }
    this.checks = 0;
    this.maxGapMs = 0;
    this.marks = [];
    this.startPhase = this.phase;
  }
}
