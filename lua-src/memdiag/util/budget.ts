import { monoMs } from "./clock";

/**
 * Cuts a long collection into slices of at most `sliceMs` of wall time, yielding to
 * the event loop in between with ngx.sleep(0), so requests never wait on us for
 * more than about one slice. Only usable where ngx.sleep is allowed (timers, content).
 */
export class Budget {
  public slices = 1;
  public maxSliceMs = 0;
  public totalMs = 0;
  /** bumped on every yield: cached views of memory (maps) are stale after one */
  public epoch = 0;
  private sliceStart: number;

  constructor(public readonly sliceMs: number, private readonly canYield: boolean) {
    this.sliceStart = monoMs();
  }

  /** Call often from loops; cheap. Returns true if it yielded (caller must revalidate). */
  check(): boolean {
    const now = monoMs();
    const elapsed = now - this.sliceStart;
    if (elapsed < this.sliceMs || !this.canYield) return false;
    this.endSlice(elapsed);
    ngx.sleep(0);
    this.slices++;
    this.epoch++;
    this.sliceStart = monoMs();
    return true;
  }

  /** a named step inside the current slice (diagnostics; no-op here, DeepBudget records it) */
  mark(_what: string): void {}

  finish(): void {
    this.endSlice(monoMs() - this.sliceStart);
    this.sliceStart = monoMs();
  }

  private endSlice(elapsed: number): void {
    this.totalMs += elapsed;
    if (elapsed > this.maxSliceMs) this.maxSliceMs = elapsed;
  }
}
