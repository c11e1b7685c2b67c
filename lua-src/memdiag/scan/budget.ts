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
  public cpuTotalMs = 0;
  private wall0: number;
  private cpu0: number;

  constructor(sliceMs: number) {
    super(sliceMs, true);
    this.wall0 = monoMs();
    this.cpu0 = cpuMs();
  }

  check(): boolean {
    const elapsed = monoMs() - this.wall0;
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

  private close(elapsed: number): void {
    const cpu = cpuMs() - this.cpu0;
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    this.cpuTotalMs += cpu;
    if (cpu > this.maxSliceCpuMs) this.maxSliceCpuMs = cpu;
  }
}
