import { jitLib } from "../../base/nojit";
import { gc64, threadAddr } from "./thread";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
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
 *     malloc_state, and its `top` chunk lies in a segment and reaches that segment's end (topReached).
 *  3. The segment list is then the exact set of lj_alloc segments (128 KB granules, merged when
 *     adjacent). Large objects (>= 128 KB: big strings, table arrays) are "direct" mmaps that no
 *     list records: the region classifier recognises them by their chunk markers
 *     (prev_foot == 1, head == psize|2, fencepost 0xb at the end; see layers/system/classify.ts).
 *  4. JIT machine code lives in separate mcode areas: anonymous executable mappings starting with
 *     an MCLink {next, size}; accepted when size tiles the mapping, `next` is 0 or another such
 *     area, and the area is within the +-2 GB jump range of the VM's code (allocf).
 * Why not addresses of live Lua objects (tostring of tables, the registry): they only sample the
 * mappings that happen to hold those objects, and say nothing about free or retained segments.
 * The GC and the JIT unmap this memory on their own schedule: the caller stops the GC, re-reads
 * the maps and reads through kernel copies (layers/system/regions.ts, safe/probe.ts).
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
const LOCATE_TRIES = 3;
const NOT_SEGMENT_START = "allocd not at a segment start";

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
  if (base0 % PAGE !== 0 || !mem.readable(base0, SEG_OFF + 40)) return $multi(undefined, NOT_SEGMENT_START);
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
  // one copy holds both (readable copies at least a line): they agree with each other
  if (!mem.readable(ms + 16, 24)) return $multi(undefined, "malloc_state unreadable");
  const topsize = mem.u64(ms + 16);
  const top = mem.u64(ms + 32);
  if (top === 0) return $multi(segs, undefined);
  let seg: LjRange | undefined;
  for (const r of segs) if (top >= r.start && top < r.end) seg = r;
  if (seg === undefined) return $multi(undefined, "top outside segments");
  const err = topReached(mem, top, top + topsize, seg.end);
  if (err !== undefined) return $multi(undefined, err);
  return $multi(segs, undefined);
}

const MIN_CHUNK = 32;
// chunks carved since the top was read (a few: the walk gains ~30 chunks per 1 KB copy). It runs
// inside a slice with no budget check, up to LOCATE_TRIES times: this bound keeps even three
// failed walks under one slice (docs/design-figures.md)
const TOP_WALK_MAX = 1024;
const TOP_FOOT_MAX = 256;
const TOP_COPY = 1024; // the most one kernel copy holds (safe/probe.ts CHECK_MAX)

/**
 * Checks that `top` and `topsize` (read together, from one copy) describe this allocator's top
 * chunk. Its header is read later, by another copy, and every read of ours may allocate in
 * between (an interpreted FFI call boxes its 64-bit result). Small requests the bins cannot serve
 * are carved from the top chunk's front, so the header at the old `top` may by then be an in-use
 * chunk, and `top` has moved up by its size. What carving keeps is the top's end (top + topsize),
 * so: the chunks from the old `top` must tile up to a chunk whose size reaches exactly that end.
 * Requiring the old header to equal `topsize` refused the real allocator whenever the heap was
 * growing from its top ("top chunk size != topsize", and the classification then blind to
 * LuaJIT's memory and to the glibc chunks mapped next to it): 1 in 2,000 locates in a quiet
 * luajit, and the 64 MB regions test failed in 1 of 3 to 10 runs.
 */
function topReached(mem: LjMem, top: number, topEnd: number, segEnd: number): string | undefined {
  // dlmalloc keeps a few words of the segment (its footer) past the top chunk
  if (topEnd > segEnd || segEnd - topEnd > TOP_FOOT_MAX) return "top chunk does not end its segment";
  let c = top;
  let copied = 0;
  for (let i = 0; i < TOP_WALK_MAX; i++) {
    // Each copy of ours boxes its result: one more chunk carved from the top. Copying a line per
    // header would make the walk chase a top that moves as fast as it does ("top chunk not
    // reached"). One copy of up to 1 KB holds many headers, consistent
    // with each other: the headers inside it are checked against it, and the walk gains on the top.
    if (c + 16 > copied) {
      const len = Math.max(16, Math.min(TOP_COPY, topEnd - c));
      if (!mem.readable(c, len)) return "top unreadable";
      copied = c + len;
    } else if (!mem.readable(c, 16)) return "top unreadable";
    const h = mem.u64(c + 8);
    const size = h - (h % 8);
    if (size === topEnd - c && h % 4 < 2) return undefined; // the top chunk: free
    if (size < MIN_CHUNK || c + size >= topEnd) return "top chunk size != topsize";
    c += size;
  }
  return "top chunk not reached";
}

/**
 * segmentsOf, read again when it fails: our own allocations between its reads can move the top
 * where topReached cannot follow (into a segment mapped since the list was read, or inside a
 * chunk below it that grew in place); a fresh read finds it where it is now.
 */
export function allocatorSegments(mem: LjMem, ms: number): LuaMultiReturn<[LjRange[] | undefined, string | undefined]> {
  let [segs, err] = segmentsOf(mem, ms);
  for (let retry = 1; retry < LOCATE_TRIES && !segs && err !== NOT_SEGMENT_START; retry++) {
    const [s2, e2] = segmentsOf(mem, ms);
    segs = s2;
    err = e2;
  }
  return $multi(segs, err);
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
    const [segs, err] = allocatorSegments(mem, allocd);
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
