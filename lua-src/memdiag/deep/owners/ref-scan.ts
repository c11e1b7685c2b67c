import * as ffi from "ffi";
import { Ctx, skip, tick } from "../../base/context";
import { COPY_BYTES, copyIn } from "../heap/copy";
import { progress } from "../heap/walk";
import { PAGE, RangeIndex } from "./range-index";

/**
 * The reference scan: every 8-aligned word of a memory range looked up in a RangeIndex;
 * a word inside an indexed range is a reference to that range's node (interior pointers
 * included), handed to a module-level hit function.
 */

const u32 = ffi.cast("const uint32_t *", 0);
const TWO32 = 4294967296;
/** words scanned in one go (64 KB) */
const WORDS_PER_TICK = 8192;
/** bytes read between two budget checks, counted across scanRange calls */
const TICK_BYTES = 65536;
let sinceTick = 0;

export type HitFn = (this: void, at: number, node: number) => void;
/** scanWords' hits: at most one per word of a call (WORDS_PER_TICK in place, COPY_BYTES / 8 copied) */
const HIT_MAX = Math.max(WORDS_PER_TICK, COPY_BYTES / 8);
const HIT_AT = ffi.new("double[?]", HIT_MAX);
const HIT_NODE = ffi.new("double[?]", HIT_MAX);


/**
 * The hot loop: 8-aligned words of [from, to) that point into the index; hit()
 * gets the word's address + delta (the original address when scanning a copy).
 * One flat loop, no inner loop: each iteration either filters the word at i or takes one
 * step of the binary search for it (searching). A binary search nested in the word loop
 * aborted the trace compiler every scan ("loop unroll limit" from the search's exit side
 * trace running on through non-candidate words, "inner loop in root trace" for the word
 * loop): each abort a fraction of a millisecond inside a slice, in every scan.
 * The hits go to a fixed buffer (HIT_AT/HIT_NODE, returns their count) and deliver() calls
 * hit() afterwards: with the callbacks (three, with their own rare branches) inlined in the
 * word loop, its traces kept growing side traces scan after scan.
 */
function scanWords(ix: RangeIndex, from: number, to: number, delta: number): number {
  const lo = ix.lo;
  const hi = ix.hi;
  // high 32-bit halves of the indexed range: most words are rejected on one load
  const loH = Math.floor(lo / TWO32);
  const hiH = Math.floor((hi - 1) / TWO32);
  const pageLo = ix.pageLo;
  const pageHi = ix.pageHi;
  const starts = ix.starts;
  const ends = ix.ends;
  const nodes = ix.nodes;
  let i = from / 4;
  const iEnd = to / 4;
  let searching = false;
  let w = 0;
  let l = 0;
  let h = -1;
  let nHit = 0;
  while (i < iEnd) {
    if (searching) {
      if (l <= h) {
        const mid = Math.floor((l + h) / 2);
        if (starts[mid] <= w) {
          if (w < ends[mid]) {
            HIT_AT[nHit] = i * 4 + delta;
            HIT_NODE[nHit] = nodes[mid];
            nHit++;
            searching = false;
            i += 2;
          } else l = mid + 1;
        } else h = mid - 1;
      } else {
        searching = false;
        i += 2;
      }
    } else {
      const h32 = u32[i + 1];
      if (h32 >= loH && h32 <= hiH) {
        w = u32[i] + h32 * TWO32;
        if (w >= lo && w < hi) {
          const pg = Math.floor(w / PAGE);
          const pl = pageLo.get(pg);
          if (pl !== undefined) {
            l = pl;
            h = pageHi.get(pg)!;
            searching = true;
          } else i += 2;
        } else i += 2;
      } else i += 2;
    }
  }
  return nHit;
}

/** hit() for the nHit hits scanWords buffered */
function deliver(nHit: number, hit: HitFn): void {
  for (let k = 0; k < nHit; k++) hit(HIT_AT[k], HIT_NODE[k]);
}

/**
 * Scan [start, end) in place for pointers into the index; calls hit(address of the
 * word, node) for each. Returns the bytes scanned. For memory only other code can
 * unmap (glibc's, data segments): after a yield the rest must still be mapped.
 */
export function scanRange(ctx: Ctx, ix: RangeIndex, start: number, end: number, hit: HitFn): number {
  if (ix.n === 0) return 0;
  let a = start + ((8 - (start % 8)) % 8);
  if (end - a <= WORDS_PER_TICK * 8) {
    // most ranges (heap chunks, pool blocks): no loop here, so a trace through the caller's
    // loop meets one inner loop (the word loop), not two, and its side traces settle
    if (a >= end) return 0;
    const nHit = scanWords(ix, a, end - ((end - a) % 8), 0);
    if (nHit > 0) deliver(nHit, hit);
    progress.bytes += end - a;
    sinceTick += end - a;
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      tick(ctx);
    }
    return end - a;
  }
  let scanned = 0;
  while (a < end) {
    const stop = Math.min(end, a + WORDS_PER_TICK * 8);
    const nHit = scanWords(ix, a, stop - ((stop - a) % 8), 0);
    if (nHit > 0) deliver(nHit, hit);
    scanned += stop - a;
    progress.bytes += stop - a;
    sinceTick += stop - a;
    a = stop;
    // budget checks by bytes read across calls: thousands of small ranges (pool blocks) add up
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      if (tick(ctx) && a < end && !ctx.maps.readable(a, end - a)) {
        skip(ctx, "scan_range_unmapped");
        break;
      }
    }
  }
  return scanned;
}

/**
 * Scan [start, end) through a copy (deep/heap/copy.ts): for memory that may be unmapped
 * while we run (LuaJIT's). Stops at the first part that cannot be copied.
 */
export function scanRangeCopied(ctx: Ctx, ix: RangeIndex, start: number, end: number, hit: HitFn): number {
  if (ix.n === 0) return 0;
  let a = start + ((8 - (start % 8)) % 8);
  let scanned = 0;
  while (a < end) {
    const len = Math.min(end - a, COPY_BYTES);
    const [copy, got] = copyIn(a, len);
    const words = got - (got % 8);
    if (words > 0) {
      const nHit = scanWords(ix, copy, copy + words, a - copy);
      if (nHit > 0) deliver(nHit, hit);
    }
    scanned += words;
    progress.bytes += words;
    sinceTick += len;
    if (got < len) {
      skip(ctx, "scan_copy_short");
      break;
    }
    a += len;
    if (sinceTick >= TICK_BYTES) {
      sinceTick = 0;
      tick(ctx);
    }
  }
  return scanned;
}
