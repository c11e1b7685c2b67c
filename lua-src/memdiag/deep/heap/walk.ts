import { Ctx, skip, tick } from "../../base/context";
import { Maps } from "../../safe/maps";
import { rdU64 } from "../../safe/mem";
import { copyIn, copyUnavailable, probePages } from "./copy";
import { noJit } from "../../base/nojit";

/**
 * glibc heap walk (glibc 2.36, x86-64): the main arena (the brk heap, joined over
 * consecutive [heap] lines), mmapped chunks (anonymous mappings whose first chunk
 * header has IS_MMAPPED) and thread arenas (64 MB-aligned heaps). Chunk size is the
 * header word at +8 with the low 3 bits masked; the next chunk is this + size; a
 * chunk is in use when the next chunk's PREV_INUSE bit is set (tcache and fastbin
 * chunks still look in use). Every region is bounds-checked once against the
 * mappings; a header that breaks an invariant ends that region's walk with a
 * counted reason, never a wild read.
 */

export const KIND_MAIN = 1;
export const KIND_MMAP = 2;
export const KIND_ARENA = 3;

export interface HeapRegion {
  kind: number;
  /** first byte of the region (mapping start) */
  start: number;
  /** address of the first chunk header */
  first: number;
  /** end of the chunks (exclusive) */
  end: number;
}

const PREV_INUSE = 1;
const IS_MMAPPED = 2;
const MINSIZE = 32;
const HEAP_MAX = 67108864; // 64 MB: HEAP_MAX_SIZE of 64-bit glibc
/** sizeof(heap_info) in glibc >= 2.35 (ar_ptr, prev, size, mprotect_size, pagesize, pad) */
const HEAP_INFO_SIZE = 48;
/** sizeof(struct malloc_state) in glibc 2.26 .. 2.38 on x86-64 */
const MALLOC_STATE_SIZE = 2200;
/** bounds on garbage: no chunk and no region is larger than this */
const MAX_CHUNK = 1099511627776;
/**
 * chunks between two budget checks: tens of microseconds of walking at 1 KB chunks, so a slice
 * ends close to its deadline (four times as many overran slices noticeably); a check is one vDSO
 * clock read, a negligible share of the walk at this spacing (docs/design-figures.md)
 */
const CHECK_EVERY = 256;
/** the same in forEachInUseChunk, whose callbacks cost more per chunk (a hash lookup, a call, a scan) */
const VISIT_CHECK_EVERY = 256;
/** bytes a forEachInUseChunk callback may read between two budget checks */
const TICK_BYTES = 65536;

/** bytes walked or scanned by the running deep scan, for progress reports (reset by the scan) */
export const progress = { bytes: 0 };

/** An anonymous range that is not the allocator's (LuaJIT memory, .bss tails, ...). */
export interface AnonRange {
  start: number;
  end: number;
  /** start of the mapping it lies in */
  mapping: number;
}

/**
 * The regions to walk, from the mappings, and the anonymous private rw ranges that
 * are not glibc's. Mmapped chunks are found page by page inside every anonymous
 * mapping: the kernel merges adjacent anonymous mmaps (glibc's and LuaJIT's) into
 * one mapping line.
 */
export function heapRegions(maps: Maps, ctx?: Ctx): LuaMultiReturn<[HeapRegion[], AnonRange[]]> {
  MP.ctx = ctx;
  const out: HeapRegion[] = [];
  const other: AnonRange[] = [];
  // without fault-free copies, anonymous mappings cannot be probed safely: only the brk heap is walked
  const noCopy = copyUnavailable() !== undefined;
  const list = maps.list;
  let i = 0;
  while (i < list.length) {
    const m = list[i];
    if (m.path === "[heap]" && m.readable) {
      // join consecutive [heap] lines: one brk region
      let end = m.end;
      let j = i + 1;
      while (j < list.length && list[j].path === "[heap]" && list[j].start === end && list[j].readable) {
        end = list[j].end;
        j++;
      }
      out.push({ kind: KIND_MAIN, start: m.start, first: m.start, end });
      i = j;
      continue;
    }
    if (!noCopy && m.path === "" && m.readable && string.sub(m.perms, 1, 2) === "rw" && string.sub(m.perms, 4, 4) === "p" && m.end - m.start >= 4096) {
      // a syscall or more per anonymous mapping (the probe's batches check the budget only
      // inside one mapping): check between mappings too. Reads here go through copies and
      // `list` is the snapshot taken on entry, so a maps re-read cannot invalidate them.
      if (ctx !== undefined) tick(ctx);
      const arena = arenaRegion(m.start, m.end);
      if (arena !== undefined) {
        out.push(arena);
        if (arena.end < m.end) other.push({ start: arena.end, end: m.end, mapping: m.start });
      } else {
        mmappedChunks(m.start, m.end, out, other);
      }
    }
    i++;
  }
  return $multi(out, other);
}

/** smallest mmapped chunk we accept: glibc's mmap threshold never goes below 128 KB unless set by hand */
const MIN_MMAPPED = 131072;

/**
 * Mmapped chunks start on a page: prev_size 0 (or a small alignment offset),
 * size a page multiple with IS_MMAPPED set and PREV_INUSE/NON_MAIN_ARENA clear.
 * Everything else in the mapping goes to `other`.
 */
/** state of the page probe below (module level: a closure per mapping would stop the JIT) */
const MP = { start: 0, end: 0, otherStart: 0, out: [] as HeapRegion[], other: [] as AnonRange[], ctx: undefined as Ctx | undefined };

/** between probe batches: a budget check (the probe reads through copies, a yield cannot hurt it) */
function probeTick(this: void): void {
  if (MP.ctx !== undefined) tick(MP.ctx);
}

function probeMmapped(this: void, a: number, prevSize: number, raw: number): number {
  if (raw % 8 !== IS_MMAPPED || prevSize % 16 !== 0 || prevSize >= 4096) return 0;
  const size = raw - IS_MMAPPED;
  if (size < MIN_MMAPPED || size % 4096 !== 0 || a + size > MP.end) return 0;
  if (a > MP.otherStart) MP.other.push({ start: MP.otherStart, end: a, mapping: MP.start });
  MP.out.push({ kind: KIND_MMAP, start: a, first: a, end: a + size });
  MP.otherStart = a + size;
  return size;
}

function mmappedChunks(start: number, end: number, out: HeapRegion[], other: AnonRange[]): void {
  MP.start = start;
  MP.end = end;
  MP.otherStart = start;
  MP.out = out;
  MP.other = other;
  probePages(start, end, probeMmapped, probeTick);
  if (end > MP.otherStart) other.push({ start: MP.otherStart, end, mapping: start });
}

/** A thread arena heap: 64 MB aligned, heap_info with a sane size, chunks from after the arena header. */
function arenaRegion(start: number, end: number): HeapRegion | undefined {
  if (start % HEAP_MAX !== 0 || end - start < 4096) return undefined;
  // may be LuaJIT memory that happens to be aligned: read through a copy
  const [cp, got] = copyIn(start, 32);
  if (got !== 32) return undefined;
  const arPtr = rdU64(cp);
  const prev = rdU64(cp + 8);
  const size = rdU64(cp + 16);
  const mprot = rdU64(cp + 24);
  if (size < 4096 || size > HEAP_MAX || start + size > end || mprot < size || mprot > HEAP_MAX) return undefined;
  if (prev !== 0 && prev % HEAP_MAX !== 0) return undefined;
  let first: number;
  if (arPtr === start + HEAP_INFO_SIZE) {
    // first heap of its arena: struct malloc_state follows heap_info; first chunk aligned so chunk+16 is 16-aligned
    first = start + HEAP_INFO_SIZE + MALLOC_STATE_SIZE;
    if ((first + 16) % 16 !== 0) first += 16 - ((first + 16) % 16);
  } else {
    if (arPtr === 0 || arPtr % 8 !== 0) return undefined;
    first = start + HEAP_INFO_SIZE;
  }
  // the first chunk's header must look like one (PREV_INUSE set on the first chunk of a heap)
  const [cp2, got2] = copyIn(first + 8, 8);
  if (got2 !== 8) return undefined;
  const raw = rdU64(cp2);
  const csize = raw - (raw % 8);
  if (csize < MINSIZE || csize % 16 !== 0 || first + csize > start + size || raw % 2 !== PREV_INUSE) return undefined;
  return { kind: KIND_ARENA, start, first, end: start + size };
}

/** log2 size classes: index k holds chunks of [2^k, 2^(k+1)) bytes */
export interface SizeClasses {
  chunks: number[];
  bytes: number[];
  inUseChunks: number[];
  inUseBytes: number[];
}

export function newSizeClasses(): SizeClasses {
  const c: SizeClasses = { chunks: [], bytes: [], inUseChunks: [], inUseBytes: [] };
  for (let k = 0; k < 64; k++) {
    c.chunks[k] = 0;
    c.bytes[k] = 0;
    c.inUseChunks[k] = 0;
    c.inUseBytes[k] = 0;
  }
  return c;
}

const INV_LN2 = 1 / Math.log(2);

/** floor(log2(n)) for n >= 1, exact at powers of two (math.log is compiled by the JIT, frexp is not) */
export function log2floor(n: number): number {
  let k = Math.floor(Math.log(n) * INV_LN2);
  if (2 ** k > n) k--;
  else if (2 ** (k + 1) <= n) k++;
  return k;
}

export function sizeClassesJson(c: SizeClasses): object[] {
  const out: object[] = [];
  for (let k = 0; k < 64; k++) {
    if (c.chunks[k] > 0) {
      const min = 2 ** k;
      out.push({
        min_bytes: min,
        max_bytes: min * 2 - 1,
        chunks: c.chunks[k],
        bytes: c.bytes[k],
        in_use_chunks: c.inUseChunks[k],
        in_use_bytes: c.inUseBytes[k],
        free_chunks: c.chunks[k] - c.inUseChunks[k],
        free_bytes: c.bytes[k] - c.inUseBytes[k],
      });
    }
  }
  return out;
}
// once per scan, 64 steps building tables: compiling it (in a worker's first scans) cost more than it runs
noJit(sizeClassesJson);

export interface WalkResult {
  classes: SizeClasses;
  /** user pointers of in-use chunks whose first words look like a pool header (cheap pre-filter) */
  candidates: number[];
  chunks: number;
  bytes: number;
}

/**
 * After a yield the mapping list was re-read: the region may have grown, shrunk
 * or gone. Returns the new end to walk to (0 = stop).
 */
function revalidate(ctx: Ctx, r: HeapRegion, cur: number): number {
  const maps = ctx.maps;
  if (r.kind === KIND_MAIN) {
    // the brk heap ends at the current break (no maps re-read needed: see Maps.invalidate)
    const [bs, be] = maps.brkHeap();
    if (bs !== 0 && bs === r.start) return cur >= bs && cur + 16 <= be ? be : 0;
  }
  if (!maps.readable(cur, 16)) return 0;
  if (r.kind === KIND_MAIN) {
    // follow the joined [heap] lines from cur
    let i = maps.find(cur);
    let end = maps.list[i].end;
    while (i + 1 < maps.n && maps.list[i + 1].start === end && maps.list[i + 1].path === "[heap]" && maps.list[i + 1].readable) {
      i++;
      end = maps.list[i].end;
    }
    return end;
  }
  const e = maps.readableEnd(cur);
  return Math.min(e, r.end);
}

/**
 * Walk every chunk of the regions: size classes (whole process) and pool-head
 * candidates. `pagesize` bounds a pool's max field.
 */
export function walkHeap(ctx: Ctx, regions: HeapRegion[], pagesize: number, maxCandidates: number): WalkResult {
  const classes = newSizeClasses();
  const cChunks = classes.chunks;
  const cBytes = classes.bytes;
  const uChunks = classes.inUseChunks;
  const uBytes = classes.inUseBytes;
  const cand: number[] = [];
  let ncand = 0;
  let nchunks = 0;
  let nbytes = 0;
  const maxField = pagesize - 1;
  const base = progress.bytes;

  for (const r of regions) {
    let end = r.end;
    // an mmapped chunk is read through a copy below (it may be gone: the copy comes back
    // short): no maps check, which after a yield would cost a read of /proc/self/maps
    if (r.kind !== KIND_MMAP && !ctx.maps.readable(r.start, end - r.start)) {
      const e = revalidate(ctx, r, r.first);
      if (e === 0) {
        skip(ctx, "heap_region_unreadable");
        continue;
      }
      end = e;
    }
    if (r.kind === KIND_MMAP) {
      // one mmapped chunk, validated page-wise by heapRegions; read through a copy (see deep/heap/copy.ts)
      const size = r.end - r.first;
      const k = log2floor(size);
      cChunks[k] += 1;
      cBytes[k] += size;
      uChunks[k] += 1;
      uBytes[k] += size;
      nchunks++;
      nbytes += size;
      const u = r.first + 16;
      const [cp, got] = copyIn(u, 40);
      if (got === 40 && ncand < maxCandidates) {
        const dl = rdU64(cp);
        const de = rdU64(cp + 8);
        const mx = rdU64(cp + 32);
        if (dl >= u + 80 && de >= dl && de - u <= size && mx === Math.min(de - u - 80, maxField)) {
          cand[ncand] = u;
          ncand++;
        }
      }
      continue;
    }
    const mmapped = false;
    let cur = r.first;
    let n = 0;
    // size of the current chunk
    if (cur + 16 > end) continue;
    let raw = rdU64(cur + 8);
    while (true) {
      const size = raw - (raw % 8);
      if (size < MINSIZE || size % 16 !== 0 || size > MAX_CHUNK) {
        skip(ctx, "heap_bad_chunk_size");
        break;
      }
      const next = cur + size;
      if (next > end) {
        skip(ctx, "heap_chunk_past_end");
        break;
      }
      let inUse: boolean;
      let nextRaw = 0;
      let last = false;
      if (mmapped) {
        if (raw % 8 !== IS_MMAPPED) {
          skip(ctx, "heap_mmap_header");
          break;
        }
        inUse = true;
        if (next + 16 <= end) nextRaw = rdU64(next + 8);
        else last = true;
      } else if (next + 16 <= end) {
        nextRaw = rdU64(next + 8);
        inUse = nextRaw % 2 === PREV_INUSE;
      } else {
        // the top chunk: it ends the region and is free by definition
        inUse = false;
        last = true;
      }
      const k = log2floor(size);
      cChunks[k] += 1;
      cBytes[k] += size;
      if (inUse) {
        uChunks[k] += 1;
        uBytes[k] += size;
        // pool head pre-filter: d.last/d.end inside the chunk, max = min(size - 80, pagesize - 1)
        if (size >= 96) {
          const u = cur + 16;
          const dl = rdU64(u);
          if (dl >= u + 80 && dl - u <= size) {
            const de = rdU64(u + 8);
            if (de >= dl && de - u <= size) {
              const mx = rdU64(u + 32);
              const want = de - u - 80 < maxField ? de - u - 80 : maxField;
              if (mx === want && ncand < maxCandidates) {
                cand[ncand] = u;
                ncand++;
              }
            }
          }
        }
      }
      nchunks++;
      nbytes += size;
      if (last) break;
      cur = next;
      raw = nextRaw;
      n++;
      if (n % CHECK_EVERY === 0) progress.bytes = base + nbytes;
      if (n % CHECK_EVERY === 0 && tick(ctx)) {
        end = revalidate(ctx, r, cur);
        if (end === 0 || cur + 16 > end) {
          skip(ctx, "heap_region_changed");
          break;
        }
        raw = rdU64(cur + 8);
      }
      if (mmapped && next === end) break;
    }
  }
  progress.bytes = base + nbytes;
  if (ncand >= maxCandidates) skip(ctx, "pool_candidates_bound");
  return { classes, candidates: cand, chunks: nchunks, bytes: nbytes };
}

/**
 * Visit every in-use chunk (user pointer, usable bytes) of the regions, in address
 * order. The callback does its own budget checks; the walk re-validates the region
 * after every callback that yielded (ctx.budget.epoch moved).
 */
export function forEachInUseChunk(
  ctx: Ctx,
  regions: HeapRegion[],
  fn: (this: void, user: number, usable: number, mmapped: boolean) => void,
): number {
  let nbytes = 0;
  for (const r of regions) {
    if (r.kind !== KIND_MMAP) ctx.budget.mark(r.kind === KIND_MAIN ? "chunks: brk heap" : "chunks: arena");
    let end = r.end;
    if (r.kind === KIND_MMAP) {
      // an mmapped chunk may be gone since the regions were listed: the callback gets
      // mmapped = true and must read it through a copy or check the maps itself
      fn(r.first + 16, r.end - r.first - 16, true);
      nbytes += r.end - r.first;
      continue;
    }
    if (!ctx.maps.readable(r.start, end - r.start)) {
      const e = revalidate(ctx, r, r.first);
      if (e === 0) continue;
      end = e;
    }
    if (r.kind === KIND_MMAP) {
      fn(r.first + 16, r.end - r.first - 16, true);
      nbytes += r.end - r.first;
      continue;
    }
    const mmapped = false;
    let cur = r.first;
    if (cur + 16 > end) continue;
    let raw = rdU64(cur + 8);
    let n = 0;
    let sinceTick = 0;
    while (true) {
      const size = raw - (raw % 8);
      if (size < MINSIZE || size % 16 !== 0 || size > MAX_CHUNK) break;
      const next = cur + size;
      if (next > end) break;
      let inUse: boolean;
      let nextRaw = 0;
      let last = false;
      if (mmapped) {
        if (raw % 8 !== IS_MMAPPED) break;
        inUse = true;
        if (next + 16 <= end) nextRaw = rdU64(next + 8);
        else last = true;
      } else if (next + 16 <= end) {
        nextRaw = rdU64(next + 8);
        inUse = nextRaw % 2 === PREV_INUSE;
      } else {
        inUse = false;
        last = true;
      }
      if (inUse) {
        const epoch = ctx.budget.epoch;
        // usable bytes: up to the next chunk's header (its prev_size word belongs to us, but a
        // pointer to the next chunk's header is glibc's, not ours: stop before it)
        fn(cur + 16, size - 16, mmapped);
        nbytes += size;
        sinceTick += size;
        if (ctx.budget.epoch !== epoch) {
          end = revalidate(ctx, r, cur);
          if (end === 0 || next + 16 > end) break;
          nextRaw = rdU64(next + 8);
          if (!mmapped && nextRaw % 2 !== PREV_INUSE && rdU64(cur + 8) !== raw) break;
        }
      }
      if (last || (mmapped && next === end)) break;
      cur = next;
      raw = nextRaw;
      n++;
      // the callback reads the chunks: check the budget by bytes read as well as by chunks walked
      if ((n % VISIT_CHECK_EVERY === 0 || sinceTick >= TICK_BYTES) && ((sinceTick = 0), tick(ctx))) {
        end = revalidate(ctx, r, cur);
        if (end === 0 || cur + 16 > end) break;
        raw = rdU64(cur + 8);
      }
    }
  }
  return nbytes;
}
