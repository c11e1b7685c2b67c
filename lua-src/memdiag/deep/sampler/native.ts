import * as ffi from "ffi";
import { cdef } from "../../base/cdef";

/**
 * FFI binding of build/native/libmemdiag_sampler.so (lua-src/native/sampler.c).
 * The library is loaded only by load(), i.e. when a user arms the sampler or
 * asks for its GOT view; the agent works without it (available() says why).
 * Struct layouts mirror sampler.c exactly.
 */
cdef(`
  typedef struct { uint64_t mean_bytes; int32_t depth; int32_t record_aligned; } memdiag_sampler_opts_t;
  typedef struct {
    int32_t version, armed, objects, objects_patched, slots_patched, slots_foreign, slots_unwritable, depth, record_aligned, pad;
    uint64_t mean_bytes, arms, disarms, sampled, recorded_aligned, frees_matched, live_entries, live_stacks,
             drops_entries, drops_stacks, reentrant, self_bytes, armed_ms, backtrace_ns, restore_mismatch, unwinds, cache_hits;
  } memdiag_sampler_stats_t;
  typedef struct {
    uint32_t id, depth, fn, pad;
    uint64_t live_count, live_bytes, est_bytes, est_count_milli, total_count, total_bytes;
  } memdiag_sampler_path_t;
  typedef struct { uint64_t slot, value, orig; uint32_t fn; int32_t obj; } memdiag_sampler_slot_t;
  int memdiag_sampler_version(void);
  int memdiag_sampler_arm(const memdiag_sampler_opts_t *opts);
  int memdiag_sampler_disarm(void);
  int memdiag_sampler_clear(void);
  int memdiag_sampler_armed(void);
  void memdiag_sampler_stats(memdiag_sampler_stats_t *s);
  int memdiag_sampler_paths(memdiag_sampler_path_t *out, int max, uint32_t window_ms, uint32_t min_age_ms);
  int memdiag_sampler_frames(uint32_t id, void **out, int max);
  uint32_t memdiag_sampler_path_fn(uint32_t id);
  uint32_t memdiag_sampler_lookup(const void *ptr, uint64_t *size, uint32_t *age_ms);
  int memdiag_sampler_slots(memdiag_sampler_slot_t *out, int max);
  int memdiag_sampler_scan(memdiag_sampler_slot_t *out, int max);
  const char *memdiag_sampler_object(int scan, int obj, uint64_t *base, int *skipped, int *patched);
  uint64_t memdiag_sampler_hook(int fn);
  uint64_t memdiag_sampler_real(int fn);
  int memdiag_sampler_build_id(const void *addr, char *out, int len);
  int memdiag_sampler_object_at(const void *addr, char *out, int len, uint64_t *base);
`);

export const ABI_VERSION = 2;
export const MAX_DEPTH = 32;
export const MAX_STACKS = 8192;
export const MAX_SLOTS = 2048;
export const FN_NAMES = ["malloc", "calloc", "realloc", "free", "posix_memalign", "memalign", "aligned_alloc"];

/** build/native/libmemdiag_sampler.so, found from this file's own path (build/lua/memdiag/deep/sampler/native.lua). */
export function libraryPath(): string {
  const info = debug.getinfo(1, "S");
  let src = (info && info.source) || "";
  if (string.sub(src, 1, 1) === "@") src = string.sub(src, 2);
  const [buildDir] = string.match(src, "^(.*)/lua/memdiag/deep/sampler/[^/]+$");
  return `${buildDir ?? "build"}/native/libmemdiag_sampler.so`;
}

let lib: any = undefined;
let loadError: string | undefined = undefined;

/** Loads the library once; returns it, or undefined and the reason. */
export function load(): LuaMultiReturn<[any, string | undefined]> {
  if (lib !== undefined) return $multi(lib, undefined);
  const path = libraryPath();
  const [ok, res] = pcall(ffi.load, path);
  if (!ok) {
    loadError = `cannot load ${path}: ${tostring(res)} (build it with: npm run build:native)`;
    return $multi(undefined, loadError);
  }
  const [vok, ver] = pcall(() => (res as any).memdiag_sampler_version());
  if (!vok || ver !== ABI_VERSION) {
    loadError = `${path}: ABI version ${tostring(ver)}, expected ${ABI_VERSION} (rebuild: npm run build:native)`;
    return $multi(undefined, loadError);
  }
  lib = res;
  loadError = undefined;
  return $multi(lib, undefined);
}

/** The library if it has been loaded already (never loads it). */
export function loaded(): any {
  return lib;
}

/** true when the .so exists and is readable (no load). */
export function present(): boolean {
  const [f] = io.open(libraryPath(), "rb");
  if (f === undefined) return false;
  f.close();
  return true;
}

export function lastLoadError(): string | undefined {
  return loadError;
}
