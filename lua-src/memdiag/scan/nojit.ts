/** LuaJIT's jit module (absent in plain Lua) */
declare const jit: { off?: (this: void, fn: unknown, recursive?: boolean) => void } | undefined;

/**
 * Keep a once-per-scan function out of the JIT (its own bytecode only, not what it calls).
 * Its loops run a few times to a few thousand times per scan: too few for a trace to pay
 * back its compile (0.2-2 ms here, inside a slice), but enough that, summed over scans, they
 * keep becoming hot, and a loop calling a closure made per scan, or nesting another loop,
 * aborted and retried every scan. The hot loops they call (heap walk, reference scan, pool
 * walk, index build) are functions of their own and are compiled as before.
 */
export function noJit(fn: unknown): void {
  if (jit !== undefined && jit.off !== undefined) jit.off(fn);
}

/**
 * The jit module, for a module that keeps all its functions out of the JIT with
 * `jitLib?.off?.(true, true)` at its top level (true: the calling chunk, and every function
 * defined in it). Used by the once-a-second collection's modules: with the JIT on, a
 * collection under load cost 5.9-6.9 ms of the worker and its longest slice 1.7-1.9 ms
 * (median); with it off 1.7-2.2 ms and 1.1 ms. Its loops become hot every second and are
 * traced, aborted and retried again and again, inside the slices.
 */
export const jitLib = jit;
