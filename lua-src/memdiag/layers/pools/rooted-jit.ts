/**
 * Which copy of the rooted walk runs a collection: an interpreted copy of layers/pools/rooted.ts and
 * nginx/pool-walk.ts while the worker has few pools, the compiled modules once it has many.
 *
 * Compiled, the walk's traces are recorded again and again in a worker's first minutes: its
 * exits follow the traffic (slot kinds, pool shapes, the address checks it inlines), and each
 * new hot exit is a compile inside a slice, which shows in request latency. A few pools cost
 * little to walk interpreted, so small workers avoid those compiles; per pool the compiled walk
 * is several times faster, so large workers are worth its compiles (bench/collect-cost.ts;
 * figures in docs/design-figures.md).
 *
 * The choice follows the last collection's pools_walked, with a gap between the two thresholds
 * so a worker near one of them does not switch every second. A switch turns nothing off (two
 * sets of prototypes), but the compiled walk compiles its traces in its first collections,
 * which are slower per pool.
 */
import { Ctx } from "../../base/context";
import { Layout } from "../../nginx/types";
import { collectRooted } from "./rooted";
import { interpretedCopy } from "../../base/nojit";

/** pools walked at or above which the next collection runs compiled */
export const COMPILED_FROM = 800;
/** pools walked below which a compiled worker goes back to the interpreted copy */
export const INTERPRETED_BELOW = 400;

type Walk = typeof collectRooted;

let interpreted: Walk | undefined;
let copyError: string | undefined;
let compiled = false;

function loadCopy(): Walk | undefined {
  if (interpreted !== undefined || copyError !== undefined) return interpreted;
  const deps = new LuaTable<string, unknown>();
  const [walk, walkErr] = interpretedCopy("memdiag.nginx.pool-walk", deps);
  if (walk === undefined) {
    copyError = walkErr;
    return undefined;
  }
  deps.set("memdiag.nginx.pool-walk", walk);
  const [rooted, rootedErr] = interpretedCopy("memdiag.layers.pools.rooted", deps);
  if (rooted === undefined) {
    copyError = rootedErr;
    return undefined;
  }
  interpreted = (rooted as { collectRooted: Walk }).collectRooted;
  return interpreted;
}

// loaded with the modules (init_worker), so that both copies are read from the same files
loadCopy();

/**
 * collectRooted through the copy chosen for this worker's size; a walk's result says which ran
 * (`walk_compiled`). Without the interpreted copy (its file unreadable) the compiled walk runs
 * and `walk_copy_error` says why.
 */
export function collectRootedPools(ctx: Ctx, layout: Layout | undefined, layoutError: string | undefined): { [k: string]: unknown } {
  const copy = compiled ? undefined : loadCopy();
  const res = (copy ?? collectRooted)(ctx, layout, layoutError);
  const walked = res.pools_walked;
  if (typeof walked !== "number") return res;
  res.walk_compiled = copy === undefined;
  if (copyError !== undefined) res.walk_copy_error = copyError;
  if (!compiled && walked >= COMPILED_FROM) compiled = true;
  else if (compiled && walked < INTERPRETED_BELOW) compiled = false;
  return res;
}
