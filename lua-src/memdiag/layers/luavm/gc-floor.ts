/**
 * What survives a collection: the Lua heap's size at the end of each completed GC cycle.
 *
 * collectgarbage("count") between two cycles includes all the garbage made since the last
 * one; an idle worker's heap saw-tooths between its live size and about twice that (the
 * default pause), so a series of it sampled every few seconds rises and falls with the
 * collector, not with what the application keeps. A sentinel — a userdata with a finalizer,
 * reachable from nothing — is finalized once per cycle, in the cycle's last phase, after the
 * sweep has freed that cycle's garbage: the count read there is the live heap plus what was
 * allocated while the cycle ran (floating garbage, bounded by one cycle's allocation). The
 * finalizer arms the next sentinel, so every cycle is seen; the lowest such reading between
 * two snapshots is the snapshot's floor.
 *
 * The finalizer runs inside whatever allocation triggered the step (a request, a timer, the
 * agent itself): it only reads the count and makes one userdata, nothing that can yield,
 * error or call into nginx. At lua_close LuaJIT runs pending finalizers at most ten rounds,
 * so re-arming cannot keep a closing VM alive.
 */

/** completed cycles seen since the sentinel was first armed */
let cycles = 0;
/** the heap at the end of the latest completed cycle (bytes); -1 before the first */
let last = -1;
/** the lowest end-of-cycle heap since the last take(); -1 when no cycle ended since */
let low = -1;
let armed = false;

function arm(): void {
  const p = newproxy(true);
  (getmetatable(p) as { __gc?: (this: void) => void }).__gc = onCycleEnd;
}

function onCycleEnd(this: void): void {
  const bytes = collectgarbage("count") * 1024;
  cycles++;
  last = bytes;
  if (low < 0 || bytes < low) low = bytes;
  arm();
}

/** Start watching cycles (idempotent). The first floor exists once a cycle has completed. */
export function watchGcCycles(): void {
  if (armed) return;
  armed = true;
  arm();
}

export interface GcFloor {
  /** lowest end-of-cycle heap since the previous take (the latest one if no cycle ended since); undefined before any cycle */
  floor_bytes?: number;
  /** cycles completed since watching started */
  cycles: number;
}

/** The floor since the previous call, and the cycle count; starts watching on first use. */
export function takeGcFloor(): GcFloor {
  watchGcCycles();
  const v = low >= 0 ? low : last;
  low = -1;
  return { floor_bytes: v >= 0 ? Math.floor(v) : undefined, cycles };
}

/** cycles completed since watching started, without taking the floor (what a census compares across its slices) */
export function gcCycles(): number {
  return cycles;
}
