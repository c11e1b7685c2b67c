import { Maps } from "../../safe/maps";
import { rdU64 as rd } from "../../safe/mem";
import { jitLib } from "../../base/nojit";
import { gc64, threadAddr } from "./thread";

// a few calls per collection or scan slice, not hot enough to pay back traces (base/nojit.ts)
jitLib?.off?.(true, true);

/**
 * Holding the worker's LuaJIT collector while the agent reads memory the collector could free
 * and unmap (LuaJIT chunks, big strings), then handing it back at the pace it had.
 *
 * Why not collectgarbage("stop") / ("restart"): restart sets the collector's threshold to the
 * heap's current size, so the next allocation runs a GC step, and a collector that was
 * pausing between cycles starts a new cycle at once. The region classification and every
 * deep-scan slice restarted it, so the agent paced the collector of the whole VM: an idle
 * worker ran 7 GC cycles a minute with the agent classifying regions every 5 s, 2 when it
 * classified once (a finalizer counting cycles, 60 s each). Each cycle marks the whole Lua heap,
 * paid inside some slice of ours or some request of the application.
 *
 * So the hold reads the threshold first (global_State.gc.threshold, located and verified
 * below) and the release puts it back: collectgarbage("restart", -1) sets the threshold to
 * total/100 * pause, with pause chosen for that and restored at once (public API only; the
 * agent never writes into the VM). What the held stretch allocated is then owed as it would
 * have been: if the heap passed the old threshold meanwhile, the next allocation steps.
 *
 * Locating: the running thread's lua_State points at global_State (GC64: the word at +16,
 * as layers/luajit/alloc.ts reads it); gc.total is the word there that equals
 * collectgarbage("count") * 1024 exactly (read with nothing allocated in between), and
 * gc.threshold follows it. Verified by the stop itself: right after collectgarbage("stop")
 * the threshold word must read LJ_MAX_MEM64 (2^47), and gc.total is compared with the count
 * again at every hold. Anything else (non-GC64 build, no match, a failed check) falls back to
 * plain stop/restart, with the reason in gcHoldMode().
 */

/** LJ_MAX_MEM64: the threshold LUA_GCSTOP sets on GC64 builds */
const STOPPED = 2 ** 47;
/** words of global_State searched for gc.total (it is word 2 in LuaJIT 2.1 since 2020) */
const SEARCH_WORDS = 32;

/** address of global_State.gc.total; 0 when it cannot be used (see `reason`); undefined before the first hold */
let totalAt: number | undefined;
let reason: string | undefined;
/** the collector is stopped by us */
let held = false;
/** its threshold before we stopped it; -1 when unknown (plain restart on release) */
let saved = -1;
/**
 * A release can only set the threshold to a multiple of 1 % of the heap, so each one is off by
 * up to that. Rounding up every time would ratchet the threshold up by ~1 % of the heap per
 * release, and a loop of holds would starve the collector (test/unit/gc-hold.test.ts);
 * so the error is carried: `carry` is how far the threshold we set lies above the one the
 * collector would have, `lastSet` what we set. If the collector has moved it since (a step
 * sets it anew), the error is gone with it.
 */
let carry = 0;
let lastSet = -1;

function disable(why: string): void {
  totalAt = 0;
  reason = why;
}

function locate(): void {
  if (!gc64) return disable("non-GC64 LuaJIT: global_State not located");
  // the thread first: a probe thread made now may sit in memory the maps must already show
  const L = threadAddr();
  const [maps, err] = Maps.self();
  if (maps === undefined) return disable(`maps unreadable: ${err}`);
  if (L === undefined || L % 8 !== 0 || !maps.readable(L, 24)) return disable("thread address unreadable");
  const g = rd(L + 16);
  if (g % 8 !== 0 || !maps.readable(g, SEARCH_WORDS * 8 + 8)) return disable("global_State unreadable");
  for (let w = 0; w < SEARCH_WORDS; w++) {
    // no allocation between the count and the read: both are plain numbers
    if (rd(g + w * 8) === collectgarbage("count") * 1024) {
      totalAt = g + w * 8;
      return;
    }
  }
  disable("gc.total not found in global_State");
}

/** True when the collector runs (collectgarbage "isrunning", LuaJIT 2.1); assume yes where it cannot say. */
export function gcRunning(): boolean {
  const [ok, v] = pcall(collectgarbage as (this: void, opt: string) => unknown, "isrunning");
  return !ok || v !== false;
}

/**
 * Stop the collector if it runs (an application that stopped it keeps it stopped: we then
 * hold nothing and release nothing). Returns true when it is stopped by us now.
 */
export function holdGc(): boolean {
  if (held) return true;
  if (!gcRunning()) return false;
  if (totalAt === undefined) locate();
  saved = -1;
  if (totalAt !== 0 && totalAt !== undefined) {
    if (rd(totalAt) === collectgarbage("count") * 1024) {
      saved = rd(totalAt + 8);
      if (saved !== lastSet) carry = 0;
    } else disable("gc.total no longer matches collectgarbage('count')");
  }
  collectgarbage("stop");
  held = true;
  if (saved >= 0 && rd(totalAt! + 8) !== STOPPED) {
    disable("the word after gc.total is not the threshold (stop did not set it)");
    saved = -1;
  }
  return true;
}

/**
 * A hold that outlasts yields (the Lua heap census): while pinned, the holds and releases of
 * the agent's other readers (region classification, deep-scan slices) around their own
 * yields change nothing, so they cannot hand back a collector the census still needs held.
 */
let pinned = false;

/** Hold the collector until unpinGc(), whatever other readers release meanwhile; false when the application stopped it (nothing held) */
export function pinGc(): boolean {
  if (!holdGc()) return false;
  pinned = true;
  return true;
}

export function unpinGc(): void {
  if (!pinned) return;
  pinned = false;
  releaseGc();
}

/** Hand the collector back if we hold it, with its threshold as before the hold (see above). */
export function releaseGc(): void {
  if (!held || pinned) return;
  held = false;
  if (saved < 0 || saved >= STOPPED) {
    collectgarbage("restart");
    return;
  }
  const unit = Math.floor((collectgarbage("count") * 1024) / 100);
  const want = saved - carry;
  const pause = unit > 0 ? Math.min(2147483647, Math.max(1, Math.floor(want / unit + 0.5))) : 100;
  const old = collectgarbage("setpause", pause) as unknown as number;
  (collectgarbage as (this: void, opt: string, arg: number) => unknown)("restart", -1);
  collectgarbage("setpause", old);
  lastSet = rd(totalAt! + 8);
  carry = lastSet - want;
}

/** "threshold" when releases restore the collector's pace, else why they restart it plainly */
export function gcHoldMode(): string {
  if (totalAt === undefined) return "not used yet";
  return totalAt === 0 ? reason ?? "unavailable" : "threshold";
}

/** the collector's threshold in bytes, read like the hold reads it (tests); undefined when not located */
export function gcThreshold(): number | undefined {
  if (totalAt === undefined) locate();
  return totalAt !== 0 && totalAt !== undefined ? rd(totalAt + 8) : undefined;
}
