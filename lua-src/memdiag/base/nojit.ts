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
 * defined in it). Used by the once-a-second collection's modules: their loops become hot
 * every second and, with the JIT on, are traced, aborted and retried again and again inside
 * the slices, which costs the worker more than running them interpreted (docs/design-figures.md).
 */
export const jitLib = jit;

/** Lua's `package` (a reserved word in TypeScript) */
const pkg = _G["package"] as { path: string; loaded: unknown; searchpath(this: void, name: string, path: string): string | undefined };

/**
 * A second copy of module `name`, loaded from its file with the JIT off for every function in
 * it, and with `deps` standing in for the modules it requires while it loads (so that it calls
 * other interpreted copies rather than the compiled modules). Its functions are new prototypes,
 * so the module it copies keeps its traces. Turning the JIT off and on again on the same
 * functions instead slows the compiled code for good (most likely traces blacklisted while
 * off; docs/design-figures.md).
 * Returns [undefined, reason] when the file cannot be found or loaded; package.loaded is left
 * as it was either way.
 */
export function interpretedCopy(
  name: string,
  deps: LuaTable<string, unknown>,
): LuaMultiReturn<[unknown, undefined] | [undefined, string]> {
  const path = pkg.searchpath(name, pkg.path) as string | undefined;
  if (path === undefined) return $multi(undefined, `${name} not found on package.path`);
  const [chunk, loadErr] = loadfile(path);
  if (chunk === undefined) return $multi(undefined, `${name}: ${loadErr}`);
  if (jit?.off !== undefined) jit.off(chunk, true);
  const loaded = pkg.loaded as LuaTable<string, unknown>;
  const saved = new LuaTable<string, unknown>();
  for (const [dep, mod] of deps) {
    saved.set(dep, loaded.get(dep));
    loaded.set(dep, mod);
  }
  const [ok, mod] = pcall(chunk as (this: void, n: string) => unknown, name);
  for (const [dep] of deps) loaded.set(dep, saved.get(dep));
  if (!ok) return $multi(undefined, `${name}: ${tostring(mod)}`);
  return $multi(mod, undefined);
}
