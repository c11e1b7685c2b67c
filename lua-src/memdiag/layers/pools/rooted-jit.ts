/**
 * Which copy of the rooted walk runs a collection: an interpreted copy of layers/pools/rooted.ts and
 * nginx/pool-walk.ts while the worker has few pools, the compiled modules once it has many.
 *
 * Compiled, the walk's traces are recorded again and again in a worker's first minutes: its
 * exits follow the traffic (slot kinds, pool shapes, the address checks it inlines), and each
 * new hot exit is a compile inside a slice. Under saturating proxied load with 32 connections
 * (~70 pools), the first 120 collections spent 83 ms compiling traces, and p99 latency rose
 * 0.1-0.3 ms until they settled (README, performance). With this copy interpreted the same 120
 * collections compiled 14-15 ms (the helpers the walk calls and layers/pools/free-slots.ts, which
 * settle quickly) and the walk took 0.4-0.56 ms. Interpreted costs ~740 ns per pool, so at
 * 10,000 connections (7 ms per collection) the compiled walk is worth its compiles: 120-200 ns
 * per pool (collect-cost, issue 2's ≤ 500 ns).
 *
 * The choice follows the last collection's pools_walked, with a gap between the two thresholds
 * so a worker near one of them does not switch every second. A switch turns nothing off (two
 * sets of prototypes), but the compiled walk compiles its traces in its first collections:
 * at 1,000 connections the first 3 walked at ~1-2 µs per pool, with walk slices up to 2.2 ms.
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
