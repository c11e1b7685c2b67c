import * as ffi from "ffi";
import { FN_NAMES, MAX_DEPTH, MAX_SLOTS, MAX_STACKS, libraryPath, load, loaded, present, lastLoadError } from "./native";
import { symbolize } from "../../base/symbols";
import { hex } from "../../safe/mem";
import { arr, decode, NULL } from "../../base/json";
import { Budget } from "../../base/slice";
import { config } from "../../base/config";

/**
 * The allocation sampler seen from Lua: arm / disarm / clear, status, top call
 * paths (live or leak window), GOT view. Everything here runs on the worker's
 * Lua thread; the C side is thread safe against the worker's other threads.
 */

export interface ArmOptions {
  /** mean sampling interval in bytes (default 512 KiB) */
  rate?: number;
  /** frames per call path, 1..32 (default 32) */
  depth?: number;
  /** record every posix_memalign/memalign/aligned_alloc (pool blocks) in full (default true) */
  aligned?: boolean;
}

export interface TopOptions {
  limit?: number;
  /** only allocations made in the last N seconds (0 = all live) */
  window_s?: number;
  /** only allocations at least this old, in seconds */
  min_age_s?: number;
}

type Obj = { [k: string]: unknown };

const num = (v: unknown): number => tonumber(v) ?? 0;

const ARM_ERRORS: { [k: number]: string } = {
  [-1]: "already armed",
  [-2]: "cannot resolve the allocation functions or this library's own text",
  [-3]: "cannot map the sampler tables",
  [-4]: "cannot read /proc/self/maps",
  [-5]: "no GOT slot to rewrite",
};

function unavailable(err: string | undefined): Obj {
  return { available: false, armed: false, lib: libraryPath(), error: err ?? "not loaded" };
}

/** Status without loading the library when it was never armed in this worker. */
export function status(): Obj {
  const lib = loaded();
  if (lib === undefined) {
    return { available: present(), armed: false, loaded: false, lib: libraryPath(), error: lastLoadError() ?? NULL };
  }
  const s = ffi.new("memdiag_sampler_stats_t");
  lib.memdiag_sampler_stats(s);
  const objects: Obj[] = [];
  for (let i = 0; i < num(s.objects) && i < 256; i++) {
    const base = ffi.new("uint64_t[1]");
    const skipped = ffi.new("int[1]");
    const patched = ffi.new("int[1]");
    const name = lib.memdiag_sampler_object(0, i, base, skipped, patched);
    if (name === null) break;
    if (patched[0] > 0) objects.push({ name: ffi.string(name), base: hex(num(base[0])), slots: num(patched[0]) });
  }
  return {
    available: true,
    loaded: true,
    lib: libraryPath(),
    armed: s.armed !== 0,
    mean_bytes: num(s.mean_bytes),
    depth: num(s.depth),
    record_aligned: s.record_aligned !== 0,
    objects_seen: num(s.objects),
    objects_patched: num(s.objects_patched),
    slots_patched: num(s.slots_patched),
    slots_foreign: num(s.slots_foreign),
    slots_unwritable: num(s.slots_unwritable),
    restore_mismatch: num(s.restore_mismatch),
    arms: num(s.arms),
    disarms: num(s.disarms),
    armed_s: num(s.armed_ms) / 1000,
    sampled: num(s.sampled),
    recorded_aligned: num(s.recorded_aligned),
    frees_matched: num(s.frees_matched),
    live_records: num(s.live_entries),
    paths: num(s.live_stacks),
    drops: { table_full: num(s.drops_entries), paths_full: num(s.drops_stacks) },
    reentrant: num(s.reentrant),
    backtrace_ms: num(s.backtrace_ns) / 1e6,
    unwinds: num(s.unwinds),
    stack_cache_hits: num(s.cache_hits),
    self_bytes: num(s.self_bytes),
    patched_objects: arr(objects),
  };
}

export function arm(o: ArmOptions): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const [lib, err] = load();
  if (lib === undefined) return $multi(undefined, err);
  const opts = ffi.new("memdiag_sampler_opts_t");
  opts.mean_bytes = o.rate ?? 0;
  opts.depth = o.depth ?? 0;
  opts.record_aligned = o.aligned === false ? 0 : 1;
  const rc = num(lib.memdiag_sampler_arm(opts));
  if (rc < 0) return $multi(undefined, `arm failed: ${ARM_ERRORS[rc] ?? tostring(rc)}`);
  return $multi(status(), undefined);
}

export function disarm(): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const lib = loaded();
  if (lib === undefined || lib.memdiag_sampler_armed() === 0) return $multi(undefined, "not armed");
  const rc = num(lib.memdiag_sampler_disarm());
  if (rc < 0) return $multi(undefined, "not armed");
  const s = status();
  s.restored = rc;
  return $multi(s, undefined);
}

export function clear(): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const lib = loaded();
  if (lib === undefined) return $multi(status(), undefined);
  if (num(lib.memdiag_sampler_clear()) < 0) return $multi(undefined, "disarm first");
  return $multi(status(), undefined);
}

interface ObjectInfo {
  name: string;
  path: string;
  base: number;
  build_id: string;
}

/** Objects by load base (path from dl_iterate_phdr; the executable's from /proc/self/exe). */
const objectsByBase = new LuaTable<number, ObjectInfo>();
let objectCount = 0;
let pathChars: any = undefined;
let baseOut: any = undefined;

function objectAt(lib: any, pc: number): ObjectInfo | undefined {
  if (pathChars === undefined) {
    pathChars = ffi.new("char[512]");
    baseOut = ffi.new("uint64_t[1]");
  }
  if (lib.memdiag_sampler_object_at(ffi.cast("const void *", pc), pathChars, 512, baseOut) === 0) return undefined;
  const base = num(baseOut[0]);
  let o = objectsByBase.get(base);
  if (o === undefined) {
    const path = ffi.string(pathChars);
    const [b] = string.match(path, "([^/]+)$");
    const idBuf = ffi.new("char[80]");
    const id = lib.memdiag_sampler_build_id(ffi.cast("const void *", pc), idBuf, 80) !== 0 ? ffi.string(idBuf) : "";
    o = { name: b ?? path, path, base, build_id: id };
    if (objectCount < 1024) {
      objectsByBase.set(base, o);
      objectCount++;
    }
  }
  return o;
}

/**
 * One frame: module + offset + build-id; `name` only when dladdr's symbol really
 * contains the address (static functions stay module + offset).
 */
function frame(lib: any, ret: number): Obj {
  // return addresses point after the call: name the call instruction
  const pc = ret - 1;
  const o = objectAt(lib, pc);
  const s = symbolize(pc);
  const module = o !== undefined ? o.name : NULL;
  const offset = o !== undefined ? hex(pc - o.base) : NULL;
  const name = s.exact ? s.name : NULL;
  return {
    pc: hex(pc),
    module,
    offset,
    build_id: o !== undefined && o.build_id !== "" ? o.build_id : NULL,
    path: o !== undefined ? o.path : NULL,
    name,
    label: s.exact ? s.name : o !== undefined ? `${o.name}+${hex(pc - o.base)}` : hex(pc),
  };
}

let pathBuf: any = undefined;
let frameBuf: any = undefined;

function buffers(): void {
  if (pathBuf === undefined) {
    pathBuf = ffi.new("memdiag_sampler_path_t[?]", MAX_STACKS);
    frameBuf = ffi.new("void *[?]", MAX_DEPTH);
  }
}

/** Raw return addresses of path id (copied out: no shared buffer is held across a yield). */
function rawFrames(lib: any, id: number): number[] {
  const depth = num(lib.memdiag_sampler_frames(id, frameBuf, MAX_DEPTH));
  const out: number[] = [];
  for (let f = 0; f < depth; f++) out.push(tonumber(ffi.cast("uintptr_t", frameBuf[f]))!);
  return out;
}

/**
 * Symbolises frames, yielding to the event loop between ~1 ms slices where
 * allowed (content handler, timer): a cold symbol cache costs milliseconds.
 */
function symbolizeAll(lib: any, raws: number[], budget: Budget): Obj[] {
  const frames: Obj[] = [];
  for (const r of raws) {
    frames.push(frame(lib, r));
    budget.check();
  }
  return frames;
}

function newBudget(): Budget {
  const phase = ngx.get_phase();
  return new Budget(config.slice_ms, phase === "content" || phase === "timer");
}

/** Live sampled allocations grouped by call path, largest estimated bytes first. */
export function top(o: TopOptions): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const lib = loaded();
  if (lib === undefined) return $multi(undefined, "sampler was never armed in this worker");
  buffers();
  const cpu0 = os.clock();
  const windowMs = Math.floor((o.window_s ?? 0) * 1000);
  const minAgeMs = Math.floor((o.min_age_s ?? 0) * 1000);
  const n = num(lib.memdiag_sampler_paths(pathBuf, MAX_STACKS, windowMs, minAgeMs));
  const order: number[] = [];
  let totalEst = 0;
  let totalCount = 0;
  for (let i = 0; i < n; i++) {
    order.push(i);
    totalEst += num(pathBuf[i].est_bytes);
    totalCount += num(pathBuf[i].est_count_milli) / 1000;
  }
  table.sort(order, (a, b) => num(pathBuf[a].est_bytes) > num(pathBuf[b].est_bytes));
  const limit = Math.min(o.limit ?? 20, order.length);
  // copy everything out of the shared buffers before the first yield
  const picked: { p: Obj; raws: number[] }[] = [];
  for (let k = 0; k < limit; k++) {
    const p = pathBuf[order[k]];
    const id = num(p.id);
    picked.push({
      p: {
        id,
        fn: FN_NAMES[num(p.fn)] ?? "?",
        est_bytes: num(p.est_bytes),
        est_count: Math.floor(num(p.est_count_milli) / 1000 + 0.5),
        records: num(p.live_count),
        record_bytes: num(p.live_bytes),
        total_records: num(p.total_count),
        total_record_bytes: num(p.total_bytes),
      },
      raws: rawFrames(lib, id),
    });
  }
  const budget = newBudget();
  const paths: Obj[] = [];
  for (const { p, raws } of picked) {
    const frames = symbolizeAll(lib, raws, budget);
    // folded stack (FlameGraph): outermost first, the allocation function last
    const folded: string[] = [];
    for (let f = frames.length - 1; f >= 0; f--) folded.push(string.gsub(frames[f].label as string, "[; ]", "_")[0]);
    folded.push(p.fn as string);
    p.frames = arr(frames);
    p.folded = table.concat(folded, ";");
    paths.push(p);
  }
  budget.finish();
  return $multi(
    {
      window_s: o.window_s ?? 0,
      min_age_s: o.min_age_s ?? 0,
      paths_total: n,
      est_bytes_total: totalEst,
      est_count_total: Math.floor(totalCount + 0.5),
      paths: arr(paths),
      cpu_ms: (os.clock() - cpu0) * 1000,
      slices: budget.slices,
      max_slice_ms: budget.maxSliceMs,
    },
    undefined,
  );
}

/**
 * The live records at exactly these addresses (e.g. pools' first blocks): path
 * id, allocation function, size, age and frames, so a pool is joined to its
 * creation site. Addresses with no record map to NULL.
 */
export function lookup(addrs: number[]): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const lib = loaded();
  if (lib === undefined) return $multi(undefined, "sampler was never armed in this worker");
  buffers();
  const size = ffi.new("uint64_t[1]");
  const age = ffi.new("uint32_t[1]");
  const found: { addr: number; id: number; size: number; age: number; fn: string; raws: number[] }[] = [];
  for (const a of addrs) {
    const id = num(lib.memdiag_sampler_lookup(ffi.cast("const void *", a), size, age));
    found.push({ addr: a, id, size: num(size[0]), age: num(age[0]), fn: id !== 0 ? FN_NAMES[num(lib.memdiag_sampler_path_fn(id))] ?? "?" : "", raws: id !== 0 ? rawFrames(lib, id) : [] });
  }
  // symbolise each path once, with yields
  const budget = newBudget();
  const byPath = new LuaTable<number, Obj[]>();
  const out: Obj[] = [];
  for (const r of found) {
    if (r.id === 0) {
      out.push({ addr: hex(r.addr), record: NULL });
      continue;
    }
    let frames = byPath.get(r.id);
    if (frames === undefined) {
      frames = symbolizeAll(lib, r.raws, budget);
      byPath.set(r.id, frames);
    }
    out.push({ addr: hex(r.addr), record: { path: r.id, fn: r.fn, size: r.size, age_s: r.age / 1000, frames: arr(frames) } });
  }
  budget.finish();
  return $multi({ records: arr(out) }, undefined);
}

/**
 * Joins the unrooted pool groups of this worker's last deep scan (snapshot
 * `pools.unrooted`, see deep/scan.ts) with the records: each group's example
 * pools are looked up at their address (= first block, recorded in full while
 * armed) and the group gains `created_at`, the call path most of them share.
 * Pools created before arming have no record (`matched` < `examples`).
 */
export function poolCreationSites(snapshotJson: string | undefined): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const lib = loaded();
  if (lib === undefined) return $multi(undefined, "sampler was never armed in this worker");
  if (snapshotJson === undefined) return $multi(undefined, "no snapshot in this worker yet");
  const [snap] = decode(snapshotJson);
  const groups = snap && snap.pools && snap.pools.unrooted;
  if (type(groups) !== "table") return $multi(undefined, "no deep scan result in the last snapshot; run /_memdiag?deep=1 first");
  buffers();
  const budget = newBudget();
  const out: Obj[] = [];
  for (const g of groups as Obj[]) {
    const examples = (g.examples as string[] | undefined) ?? [];
    const site = creationSite(lib, examples);
    let createdAt: unknown = NULL;
    if (site.path !== 0) {
      const fn = FN_NAMES[num(lib.memdiag_sampler_path_fn(site.path))] ?? "?";
      const frames = symbolizeAll(lib, rawFrames(lib, site.path), budget);
      createdAt = { path: site.path, fn, examples_on_path: site.onPath, frames: arr(frames) };
    }
    out.push({
      signature: g.signature,
      owner: g.owner,
      retainer: g.retainer,
      pools: g.pools,
      create_size: g.create_size,
      examples: examples.length,
      matched: site.matched,
      created_at: createdAt,
    });
  }
  budget.finish();
  return $multi({ scan_time: (snap.scan && snap.scan.finished_at) ?? NULL, groups: arr(out) }, undefined);
}

/**
 * The call path that created most of these pools: each example's first block is
 * looked up among the records (pool blocks are recorded in full while armed).
 */
function creationSite(lib: any, examples: string[]): { path: number; onPath: number; matched: number } {
  const counts = new LuaTable<number, number>();
  let matched = 0;
  let best = 0;
  let bestN = 0;
  for (const a of examples) {
    const addr = tonumber(a);
    if (addr === undefined) continue;
    const id = num(lib.memdiag_sampler_lookup(ffi.cast("const void *", addr), undefined, undefined));
    if (id === 0) continue;
    matched++;
    const c = (counts.get(id) ?? 0) + 1;
    counts.set(id, c);
    if (c > bestN) {
      bestN = c;
      best = id;
    }
  }
  return { path: best, onPath: bestN, matched };
}

/**
 * Deep scan → snapshot: when the sampler has records in this worker, each
 * unrooted group gains `created_at` (frame labels of the creation path,
 * innermost first), so the control plane shows where the pools were made
 * next to who holds them. Pools created while disarmed have no record: the
 * field is then left out.
 */
export function annotateCreationSites(groups: Obj[], budget: Budget): void {
  const lib = loaded();
  if (lib === undefined) return;
  buffers();
  for (const g of groups) {
    const site = creationSite(lib, (g.examples as string[] | undefined) ?? []);
    if (site.path === 0) continue;
    const labels: string[] = [];
    for (const f of symbolizeAll(lib, rawFrames(lib, site.path), budget)) labels.push(f.label as string);
    g.created_at = arr(labels);
  }
}

/**
 * GOT view: `scan` = a fresh walk of every loaded object's JUMP_SLOT/GLOB_DAT
 * slots of the hooked functions (current value, global definition, hook);
 * `patched` = the slots the last arm rewrote with their saved originals.
 * Loads the library (no arming).
 */
export function got(): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  const [lib, err] = load();
  if (lib === undefined) return $multi(undefined, err);
  const buf = ffi.new("memdiag_sampler_slot_t[?]", MAX_SLOTS);
  const hooks: number[] = [];
  const reals: number[] = [];
  for (let f = 0; f < FN_NAMES.length; f++) {
    hooks.push(num(lib.memdiag_sampler_hook(f)));
    reals.push(num(lib.memdiag_sampler_real(f)));
  }
  const n = num(lib.memdiag_sampler_scan(buf, MAX_SLOTS));
  const scan: Obj[] = [];
  let hooked = 0;
  for (let i = 0; i < n; i++) {
    const e = buf[i];
    const fn = num(e.fn);
    const value = num(e.value);
    const name = lib.memdiag_sampler_object(1, e.obj, undefined, undefined, undefined);
    if (value === hooks[fn]) hooked++;
    scan.push({
      object: name !== null ? ffi.string(name) : NULL,
      fn: FN_NAMES[fn],
      slot: hex(num(e.slot)),
      value: hex(value),
      real: hex(reals[fn]),
      hooked: value === hooks[fn],
    });
  }
  const m = num(lib.memdiag_sampler_slots(buf, MAX_SLOTS));
  const patched: Obj[] = [];
  for (let i = 0; i < m; i++) {
    const e = buf[i];
    patched.push({ fn: FN_NAMES[num(e.fn)], slot: hex(num(e.slot)), value: hex(num(e.value)), orig: hex(num(e.orig)) });
  }
  const hookMap: Obj = {};
  const realMap: Obj = {};
  for (let f = 0; f < FN_NAMES.length; f++) {
    hookMap[FN_NAMES[f]] = hex(hooks[f]);
    realMap[FN_NAMES[f]] = hex(reals[f]);
  }
  return $multi({ armed: lib.memdiag_sampler_armed() !== 0, hooked, hooks: hookMap, real: realMap, scan: arr(scan), patched: arr(patched) }, undefined);
}

export { unavailable };
