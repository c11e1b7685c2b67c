import { Budget } from "../util/budget";
import { cpuMs, monoMs } from "../util/clock";

/**
 * The deep scan's slice budget: like util/budget.ts (yield when a slice has run
 * sliceMs of wall time, so requests wait at most about that long), but it also
 * measures each slice's thread CPU time, which is what the scan costs the worker
 * and what it controls (wall slices include time the OS gave to other processes),
 * and it yields with a 1 ms sleep: ngx.sleep(0) logs a warning on every call in
 * builds without OpenResty's delayed-events patch (Debian's nginx).
 */
const YIELD_S = 0.001;

export class DeepBudget extends Budget {
  public maxSliceCpuMs = 0;
  /** what was running when the longest (CPU) slice ended */
  public phase = "";
  public maxSlicePhase = "";
  public cpuTotalMs = 0;
  private wall0: number;
  private cpu0: number;

  constructor(sliceMs: number) {
    super(sliceMs, true);
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  public checks = 0;
  public maxGapMs = 0;
  private lastCheck = 0;
  check(): boolean {
    this.checks++;
    const now = monoMs();
    if (this.lastCheck > 0 && now - this.lastCheck > this.maxGapMs) this.maxGapMs = now - this.lastCheck;
    this.lastCheck = now;
    const elapsed = now - this.wall0;
    if (elapsed < this.sliceMs) return false;
    this.close(elapsed);
    ngx.sleep(YIELD_S);
    this.slices++;
    this.epoch++;
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
    return true;
  }

  finish(): void {
    this.close(monoMs() - this.wall0);
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
    if (cpu > this.maxSliceCpuMs) {
      this.maxSliceCpuMs = cpu;
      this.maxSlicePhase = `${this.phase} (${this.checks} checks, max gap ${string.format("%.3f", this.maxGapMs)} ms)`;
    }
    this.checks = 0;
    this.maxGapMs = 0;
  }
}
