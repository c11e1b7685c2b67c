import * as ffi from "ffi";
import { jitLib } from "../scan/nojit";

// once a second, not hot enough to pay back its traces (scan/nojit.ts jitLib)
jitLib?.off?.(true, true);

/**
 * Where the LuaJIT allocator of THIS VM keeps its memory, as address ranges.
 *
 * Method (no guessing, every step validated, every read checked by the caller's `readable`):
 *  1. A Lua thread of this VM (the running coroutine) gives a lua_State address
 *     (tostring(thread) = "thread: 0x..."). With GC64 (x86-64 LuaJIT 2.1, the Debian/OpenResty
 *     build) lua_State.glref is the 8-byte word at +16 and points at global_State.
 *  2. global_State starts with { lua_Alloc allocf; void *allocd; } (LuaJIT 2.1 since 2020; older
 *     2.1 snapshots put them a few words later, so words 0..15 are tried). A candidate is
 *     accepted only if allocf points into an executable file mapping and allocd is a bundled
 *     lj_alloc (dlmalloc) malloc_state: it sits at the start of a page-aligned segment
 *     (allocd - 16: the first mmap; later mmaps just below may be prepended to that segment), its
 *     own chunk header says "in use" with a malloc_state-sized size, its segment list (at +840:
 *     base, size, next) is page-aligned, bounded, acyclic and has a segment holding the
 *     malloc_state, and its `top` chunk header equals `topsize` and lies in a segment.
 *  3. The segment list is then the exact set of lj_alloc segments (128 KB granules, merged when
 *     adjacent). Large objects (>= 128 KB: big strings, table arrays) are "direct" mmaps that no
 *     list records: the region classifier recognises them by their chunk markers
 *     (prev_foot == 1, head == psize|2, fencepost 0xb at the end; see system/regions.ts).
 *  4. JIT machine code lives in separate mcode areas: anonymous executable mappings starting with
 *     an MCLink {next, size}; accepted when size tiles the mapping, `next` is 0 or another such
 *     area, and the area is within the +-2 GB jump range of the VM's code (allocf).
 * Why not addresses of live Lua objects (tostring of tables, the registry): they only sample the
 * mappings that happen to hold those objects, and say nothing about free or retained segments.
 * The GC and the JIT unmap this memory on their own schedule: the caller stops the GC, re-reads
 * the maps and reads through kernel copies (system/regions.ts, safe/probe.ts).
 * Limits: x86-64 GC64 builds only (else `error` says why and the classifier still finds direct
 * chunks); LUAJIT_USE_SYSMALLOC builds allocate from glibc, so their objects show as glibc_heap;
 * memory the allocator's segments hold but has not touched is counted in `bytes`, not RSS.
 */

export interface LjRange {
  start: number;
  end: number;
  kind: string; // "segment" | "mcode"
}

export interface LjLocate {
  ranges: LjRange[];
  method: string;
  error?: string;
}

export interface LjMem {
  readable: (this: void, addr: number, len: number) => boolean;
  u64: (this: void, addr: number) => number;
}

export interface LjMapping {
  start: number;
  end: number;
  perms: string;
  inode: number;
  path: string;
}

const PAGE = 4096;
const SEG_OFF = 840; // offsetof(struct malloc_state, seg) in lj_alloc.c, 64-bit
const MSTATE_MIN = 856; // chunk size of the malloc_state chunk: 872 (no prng) .. 880 (prng)
const MSTATE_MAX = 1024;
const MAX_SEGMENTS = 1000000;
const JUMP_RANGE = 2147483648;

// A thread of this VM: the running coroutine (timers, requests), else one made once (plain luajit).
// Created lazily: ngx_lua forbids coroutine.create in init_worker_by_lua.
let probe: LuaThread | undefined;
const gc64 = (() => {
  const [ok, v] = pcall(() => ffi.abi("gc64"));
  return ok && v === true;
})();

function threadAddr(): number | undefined {
  let th = coroutine.running() as LuaThread | undefined;
  if (th === undefined) {
    if (probe === undefined) probe = coroutine.create(() => undefined);
    th = probe;
  }
  const [hex] = string.match(tostring(th), "0x(%x+)");
  return hex !== undefined ? tonumber(hex, 16) : undefined;
}

function hasX(perms: string): boolean {
  const [i] = string.find(perms, "x", 1, true);
  return i !== undefined;
}

function inExecFile(maps: LjMapping[], addr: number): boolean {
  for (const m of maps) {
    if (addr >= m.start && addr < m.end) return m.inode !== 0 && hasX(m.perms);
  }
  return false;
}

/** Validate a malloc_state candidate; returns its segments or an error. */
function segmentsOf(mem: LjMem, ms: number): LuaMultiReturn<[LjRange[] | undefined, string | undefined]> {
  const base0 = ms - 16;
  if (base0 % PAGE !== 0 || !mem.readable(base0, SEG_OFF + 40)) return $multi(undefined, "allocd not at a segment start");
  const head = mem.u64(ms - 8);
  const csize = head - (head % 4);
  if (head % 4 < 2 || csize < MSTATE_MIN || csize > MSTATE_MAX) return $multi(undefined, "malloc_state chunk header invalid");
  const segs: LjRange[] = [];
  const seen = new LuaTable<number, boolean>();
  let s = ms + SEG_OFF;
  let holdsState = false;
  for (let i = 0; i < MAX_SEGMENTS; i++) {
    if (!mem.readable(s, 24)) return $multi(undefined, "segment record unreadable");
    const base = mem.u64(s);
    const size = mem.u64(s + 8);
    const next = mem.u64(s + 16);
    if (base === 0 || base % PAGE !== 0 || size === 0 || size % PAGE !== 0 || !mem.readable(base, 16)) {
      return $multi(undefined, "segment invalid");
    }
    if (seen.get(base)) return $multi(undefined, "segment list cycle");
    seen.set(base, true);
    segs.push({ start: base, end: base + size, kind: "segment" });
    if (base0 >= base && base0 < base + size) holdsState = true;
    if (next === 0) break;
    if (i === MAX_SEGMENTS - 1) return $multi(undefined, "segment list too long");
    s = next;
  }
  if (!holdsState) return $multi(undefined, "no segment holds the malloc_state");
  const topsize = mem.u64(ms + 16);
  const top = mem.u64(ms + 32);
  if (top !== 0) {
    if (!mem.readable(top, 16)) return $multi(undefined, "top unreadable");
    const th = mem.u64(top + 8);
    if (th - (th % 4) !== topsize) return $multi(undefined, "top chunk size != topsize");
    let inSeg = false;
    for (const r of segs) if (top >= r.start && top < r.end) inSeg = true;
    if (!inSeg) return $multi(undefined, "top outside segments");
  }
  return $multi(segs, undefined);
}

/** MCLink-headed mcode areas near the VM code (see header comment, step 4). */
function mcodeAreas(mem: LjMem, maps: LjMapping[], vmCode: number): LjRange[] {
  const anonExec: LjMapping[] = [];
  for (const m of maps) {
    if (m.inode === 0 && m.path === "" && hasX(m.perms)) anonExec.push(m);
  }
  const isArea = (a: number): boolean => {
    for (const m of anonExec) if (a >= m.start && a < m.end) return true;
    return false;
  };
  const out: LjRange[] = [];
  for (const m of anonExec) {
    if (Math.abs(m.start - vmCode) > JUMP_RANGE) continue;
    // an area may be merged with adjacent ones in one mapping: walk MCLinks through it
    let p = m.start;
    const found: LjRange[] = [];
    for (let i = 0; i < 4096 && p < m.end; i++) {
      if (!mem.readable(p, 16)) break;
      const next = mem.u64(p);
      const size = mem.u64(p + 8);
      if (size === 0 || size % PAGE !== 0 || p + size > m.end) break;
      if (next !== 0 && (next % PAGE !== 0 || !isArea(next))) break;
      found.push({ start: p, end: p + size, kind: "mcode" });
      p += size;
    }
    if (p === m.end) for (const r of found) out.push(r);
  }
  return out;
}

/** Segments + mcode areas of this VM's allocator; `error` set (and ranges empty) when unverifiable. */
export function locateLuajit(mem: LjMem, maps: LjMapping[]): LjLocate {
  if (!gc64) return { ranges: [], method: "markers", error: "non-GC64 LuaJIT: lua_State layout not supported" };
  const L = threadAddr();
  if (L === undefined || !mem.readable(L, 24)) return { ranges: [], method: "markers", error: "thread address unreadable" };
  const g = mem.u64(L + 16);
  if (!mem.readable(g, 16 * 8 + 8)) return { ranges: [], method: "markers", error: "global_State unreadable" };
  let lastErr = "allocator not found in global_State";
  for (let w = 0; w < 16; w++) {
    const allocf = mem.u64(g + w * 8);
    const allocd = mem.u64(g + w * 8 + 8);
    if (!inExecFile(maps, allocf) || allocd % 8 !== 0 || !mem.readable(allocd, 8)) continue;
    const [segs, err] = segmentsOf(mem, allocd);
    if (!segs) {
      lastErr = err!;
      continue;
    }
    const ranges = segs;
    for (const r of mcodeAreas(mem, maps, allocf)) ranges.push(r);
    table.sort(ranges, (a, b) => a.start < b.start);
    return { ranges, method: "lj_alloc" };
  }
  return { ranges: [], method: "markers", error: lastErr };
}
