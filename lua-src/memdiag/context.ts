import { Maps } from "./safe/maps";
import { Budget } from "./util/budget";

/** What every layer collector gets: the address space, the slice budget, the skip counters. */
export interface Ctx {
  maps: Maps;
  budget: Budget;
  /** objects not followed because a safety check failed, by reason */
  skipped: { [reason: string]: number };
  /** yields happened since maps were read: re-read before trusting addresses again */
  mapsEpoch: number;
}

export function skip(ctx: Ctx, reason: string): void {
  ctx.skipped[reason] = (ctx.skipped[reason] ?? 0) + 1;
}

/**
 * Call from loops. After a yield other code ran, mappings may have changed, so
 * the address space is re-read; returns true when that happened.
 */
export function tick(ctx: Ctx): boolean {
  if (!ctx.budget.check()) return false;
  refreshMaps(ctx);
  ctx.budget.mark("maps");
  return true;
}

export function refreshMaps(ctx: Ctx): void {
  const [m] = Maps.self();
  if (m) ctx.maps = m;
  ctx.mapsEpoch = ctx.budget.epoch;
}
