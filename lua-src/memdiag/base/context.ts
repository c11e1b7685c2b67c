import { Maps } from "../safe/maps";
import { Budget } from "./slice";

/** What every layer collector gets: the address space, the slice budget, the skip counters. */
export interface Ctx {
  maps: Maps;
  budget: Budget;
  /** objects not followed because a safety check failed, by reason */
  skipped: { [reason: string]: number };
  /** budget epoch the maps were last known current at */
  mapsEpoch: number;
}

export function skip(ctx: Ctx, reason: string): void {
  ctx.skipped[reason] = (ctx.skipped[reason] ?? 0) + 1;
}

/**
 * Call from loops. After a yield other code ran and mappings may have changed:
 * the maps are marked stale (Maps.invalidate), so the next check outside the brk
 * heap re-reads /proc/self/maps before trusting an address (reading the file after
 * every slice would take a large share of each slice, more with many mappings).
 * Returns true when it yielded: callers revalidate what they were walking.
 */
export function tick(ctx: Ctx): boolean {
  if (!ctx.budget.check()) return false;
  stale(ctx);
  return true;
}

/** Budget.reserve through the context: yields unless a step of about `ms` fits in the slice (true if it yielded) */
export function tickAhead(ctx: Ctx, ms: number): boolean {
  if (!ctx.budget.reserve(ms)) return false;
  stale(ctx);
  return true;
}

/**
 * A step starts a fresh slice unless at least this share of the slice is left: steps begin
 * with work that has no checks inside (a maps read, setting up, and in a worker's first deep
 * scans the compiling of their loops' traces, which can take a good part of a slice)
 */
export const STEP_RESERVE = 0.5;

/** at the start of a step (see STEP_RESERVE): true if it yielded */
export function tickStep(ctx: Ctx): boolean {
  return tickAhead(ctx, ctx.budget.sliceMs * STEP_RESERVE);
}

/** mark the maps stale after a yield (re-read lazily); maps not read from this process are re-read now */
function stale(ctx: Ctx): void {
  if (ctx.maps.isSelf()) {
    ctx.maps.invalidate();
    ctx.mapsEpoch = ctx.budget.epoch;
  } else refreshMaps(ctx);
}

/** re-read the maps now (cheap when nothing changed: the parse is skipped) */
export function refreshMaps(ctx: Ctx): void {
  const [m] = Maps.self((w) => ctx.budget.mark(w));
  if (m) ctx.maps = m;
  ctx.mapsEpoch = ctx.budget.epoch;
}
