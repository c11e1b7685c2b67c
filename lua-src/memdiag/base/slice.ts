import { cpuMs, monoMs } from "./clock";

/**
 * The yield between slices: a 1 ms sleep. Without OpenResty's delayed-events patch
 * (Debian's libnginx-mod-http-lua 0.10.23) ngx.sleep(0) is a 0 ms timer plus a
 * "[warn] ngx.sleep(0) called without delayed events patch, this will hurt
 * performance" line in the error log on every call; a 1 ms timer logs nothing. It
 * only lengthens the collection's wall time (about 1 ms per yield on an idle worker,
 * less under load, when the event loop wakes anyway): requests still wait on us for
 * at most one slice. Counts that span slices must not depend on the yield's length
 * (see layers/pools/rooted.ts).
 */
export const YIELD_S = 0.001;

/**
 * Cuts a long collection into slices of at most `sliceMs` of wall time, yielding to
 * the event loop in between (ngx.sleep(YIELD_S)), so requests never wait on us for
 * more than about one slice. Only usable where ngx.sleep is allowed (timers, content).
 */
export class Budget {
  public slices = 1;
  public maxSliceMs = 0;
  /** the longest slice in thread CPU time, capped at its wall time (see endSlice) */
  public maxSliceCpuMs = 0;
  public totalMs = 0;
  /** bumped on every yield: cached views of memory (maps) are stale after one */
  public epoch = 0;
  private sliceStart: number;
  private sliceCpu0: number;

  constructor(public readonly sliceMs: number, private readonly canYield: boolean) {
    this.sliceStart = monoMs();
    this.sliceCpu0 = cpuMs();
  }

  /** True when the next check() (reserve(aheadMs), with aheadMs) will yield: lets a caller prepare only then. */
  due(aheadMs = 0): boolean {
    return this.canYield && monoMs() - this.sliceStart + aheadMs >= this.sliceMs;
  }

  /** Call often from loops; cheap. Returns true if it yielded (caller must revalidate). */
  check(): boolean {
    return this.reserve(0);
  }

  /**
   * Call before a step that has no checks inside and costs about `ms` (a /proc read, a
   * pool walk, building the output): yields now unless the step fits in what is left of
   * the slice, so it starts a slice rather than overrunning one. Returns true if it yielded.
   */
  reserve(ms: number): boolean {
    if (!this.due(ms)) return false;
    return this.yieldNow();
  }

  private yieldNow(): boolean {
    this.endSlice(monoMs() - this.sliceStart);
    ngx.sleep(YIELD_S);
    this.slices++;
    this.epoch++;
    this.sliceStart = monoMs();
    this.sliceCpu0 = cpuMs();
    return true;
  }

  /** a named step inside the current slice (diagnostics; no-op here, DeepBudget records it) */
  mark(_what: string): void {}

  finish(): void {
    this.endSlice(monoMs() - this.sliceStart);
    this.sliceStart = monoMs();
    this.sliceCpu0 = cpuMs();
  }

  private endSlice(elapsed: number): void {
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
    // the thread CPU clock can jump by milliseconds at a context switch on a virtual machine
    // (deep/budget.ts close()): a slice cannot use more CPU than wall time
    const cpu = Math.min(cpuMs() - this.sliceCpu0, elapsed);
    if (cpu > this.maxSliceCpuMs) this.maxSliceCpuMs = cpu;
  }
}
