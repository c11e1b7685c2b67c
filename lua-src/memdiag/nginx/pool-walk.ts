import { Ctx, skip } from "../base/context";
import { Layout, off, sizeOf } from "./types";
import { rdPtr, rdU64 } from "../safe/mem";

/**
 * Walks one nginx pool (ngx_pool_t): its block chain, its large allocations and
 * its cleanup handlers, validating every pointer and bounding every list.
 * Shared by the rooted walk (cycle, connections, requests) and heap-wide
 * pool discovery.
 */

/** Numeric offsets resolved once per layout: no table lookups in the walk. */
export interface PoolOffsets {
  headerSize: number;
  last: number;
  end: number;
  next: number;
  max: number;
  current: number;
  large: number;
  cleanup: number;
  log: number;
  largeSize: number;
  largeNext: number;
  largeAlloc: number;
  cleanupSize: number;
  cleanupHandler: number;
  cleanupNext: number;
}

export function poolOffsets(L: Layout): PoolOffsets {
  return {
    headerSize: sizeOf(L, "ngx_pool_t"),
    last: off(L, "ngx_pool_t", "d.last"),
    end: off(L, "ngx_pool_t", "d.end"),
    next: off(L, "ngx_pool_t", "d.next"),
    max: off(L, "ngx_pool_t", "max"),
    current: off(L, "ngx_pool_t", "current"),
    large: off(L, "ngx_pool_t", "large"),
    cleanup: off(L, "ngx_pool_t", "cleanup"),
    log: off(L, "ngx_pool_t", "log"),
    largeSize: sizeOf(L, "ngx_pool_large_t"),
    largeNext: off(L, "ngx_pool_large_t", "next"),
    largeAlloc: off(L, "ngx_pool_large_t", "alloc"),
    cleanupSize: sizeOf(L, "ngx_pool_cleanup_t"),
    cleanupHandler: off(L, "ngx_pool_cleanup_t", "handler"),
    cleanupNext: off(L, "ngx_pool_cleanup_t", "next"),
  };
}

/** Bounds: far beyond any real pool, small enough that garbage cannot stall a slice for long. */
export const MAX_POOL_BLOCKS = 65536;
export const MAX_POOL_LARGE = 262144;
export const MAX_POOL_CLEANUPS = 65536;
/** glibc: malloc'd pointers are 16-aligned on x86-64 */
const MALLOC_ALIGN = 16;
const IS_MMAPPED = 2;
const SIZE_BITS = 7;

export interface PoolStats {
  blocks: number;
  block_bytes: number;
  used_bytes: number;
  large_blocks: number;
  large_bytes: number;
  /** size of the first block (the size the pool was created with) */
  create_size: number;
}

/** what a group of pools adds up to (a rooted kind, an unrooted signature) */
export interface PoolTotals {
  pools: number;
  blocks: number;
  block_bytes: number;
  used_bytes: number;
  large_blocks: number;
  large_bytes: number;
}

/** a group's totals as the snapshot reports them (pools.groups[], pools.unrooted[]) */
export function totalsOut(t: PoolTotals): { [k: string]: unknown } {
  return {
    pools: t.pools,
    blocks: t.blocks,
    block_bytes: t.block_bytes,
    used_bytes: t.used_bytes,
    large_blocks: t.large_blocks,
    large_bytes: t.large_bytes,
  };
}

/**
 * Where a pool's memory lies, filled by walkPool when asked (heap-wide discovery
 * indexes these ranges): block start addresses (first = the pool itself) with
 * their d.last, and large allocations with their usable sizes.
 */
export interface PoolMemory {
  blocks: number[];
  blockLast: number[];
  larges: number[];
  largeSizes: number[];
}

export function newPoolStats(): PoolStats {
  return { blocks: 0, block_bytes: 0, used_bytes: 0, large_blocks: 0, large_bytes: 0, create_size: 0 };
}

/**
 * Cheap check that `addr` looks like a pool head: d.last/d.end inside the block,
 * max in range, the whole first block readable. Does not walk lists.
 */
export function looksLikePoolHead(ctx: Ctx, P: PoolOffsets, addr: number, pagesize: number): boolean {
  if (addr % MALLOC_ALIGN !== 0 || !ctx.maps.readable(addr, P.headerSize)) return false;
  const last = rdPtr(addr + P.last);
  const end = rdPtr(addr + P.end);
  if (last < addr + P.headerSize || last > end) return false;
  const size = end - addr;
  const max = rdU64(addr + P.max);
  // ngx_create_pool: max = min(size - sizeof(ngx_pool_t), NGX_MAX_ALLOC_FROM_POOL = pagesize - 1)
  const expectMax = Math.min(size - P.headerSize, pagesize - 1);
  if (max !== expectMax) return false;
  return ctx.maps.readable(addr, size);
}

/**
 * Usable size of a malloc'd pointer, computed from its chunk header the way
 * malloc_usable_size does, but only after checking the header and the next
 * chunk are mapped (glibc's own function would follow a garbage size blindly).
 * Returns 0 when the pointer does not look like a live malloc chunk.
 */
export function usableSize(ctx: Ctx, p: number): number {
  if (p % MALLOC_ALIGN !== 0 || !ctx.maps.readable(p - 16, 16)) return 0;
  const raw = rdU64(p - 8);
  const size = raw - (raw % 8);
  if (size < 32) return 0;
  if (raw % 4 >= IS_MMAPPED) {
    // mmapped chunk: whole chunk in its own mapping
    return ctx.maps.readable(p - 16, size) ? size - 16 : 0;
  }
  if (!ctx.maps.readable(p - 16, size + 16)) return 0;
  // in use iff the next chunk's PREV_INUSE bit is set
  const nextRaw = rdU64(p - 16 + size + 8);
  if (nextRaw % 2 !== 1) return 0;
  return size - 8;
}

/**
 * Walk the pool at addr, adding to `st`. Cleanup handler addresses are counted
 * into `handlers` (address → count) when given. Returns false (and counts a skip)
 * when the header or a list fails validation; partial figures stay in `st`.
 */
export function walkPool(
  ctx: Ctx,
  P: PoolOffsets,
  addr: number,
  st: PoolStats,
  handlers: LuaTable<number, number> | undefined,
  mem?: PoolMemory,
): boolean {
  const maps = ctx.maps;
  if (!maps.readable(addr, P.headerSize)) {
    skip(ctx, "pool_unreadable");
    return false;
  }
  const firstEnd = rdPtr(addr + P.end);
  const size = firstEnd - addr;
  if (size < P.headerSize || size > 1073741824) {
    skip(ctx, "pool_bad_size");
    return false;
  }
  st.create_size = size;

  // blocks: the first carries the full header, the rest ngx_pool_data_t; all have the same size
  let b = addr;
  let n = 0;
  while (b !== 0) {
    if (n >= MAX_POOL_BLOCKS) {
      skip(ctx, "pool_blocks_bound");
      return false;
    }
    if (!maps.readable(b, P.next + 8)) {
      skip(ctx, "pool_block_unreadable");
      return false;
    }
    const last = rdPtr(b + P.last);
    const end = rdPtr(b + P.end);
    if (end - b !== size || last < b || last > end) {
      skip(ctx, "pool_block_invalid");
      return false;
    }
    st.blocks++;
    if (mem) {
      mem.blocks.push(b);
      mem.blockLast.push(last);
    }
    st.block_bytes += size;
    st.used_bytes += last - b;
    n++;
    const nx = rdPtr(b + P.next);
    if (nx === addr || nx === b) {
      skip(ctx, "pool_block_cycle");
      return false;
    }
    b = nx;
  }

  let l = rdPtr(addr + P.large);
  n = 0;
  while (l !== 0) {
    if (n >= MAX_POOL_LARGE) {
      skip(ctx, "pool_large_bound");
      return false;
    }
    if (!maps.readable(l, P.largeSize)) {
      skip(ctx, "pool_large_unreadable");
      return false;
    }
    const a = rdPtr(l + P.largeAlloc);
    // alloc is NULL after ngx_pfree(); the entry stays on the list
    if (a !== 0) {
      const u = usableSize(ctx, a);
      if (u > 0) {
        st.large_blocks++;
        st.large_bytes += u;
        if (mem) {
          mem.larges.push(a);
          mem.largeSizes.push(u);
        }
      } else {
        skip(ctx, "pool_large_not_a_chunk");
      }
    }
    n++;
    const nx = rdPtr(l + P.largeNext);
    if (nx === l) {
      skip(ctx, "pool_large_cycle");
      return false;
    }
    l = nx;
  }

  let c = rdPtr(addr + P.cleanup);
  n = 0;
  while (c !== 0) {
    if (n >= MAX_POOL_CLEANUPS) {
      skip(ctx, "pool_cleanup_bound");
      return false;
    }
    if (!maps.readable(c, P.cleanupSize)) {
      skip(ctx, "pool_cleanup_unreadable");
      return false;
    }
    const h = rdPtr(c + P.cleanupHandler);
    // handler is NULL when a cleanup was added but not yet armed, or disarmed by its owner
    if (handlers && h !== 0) handlers.set(h, (handlers.get(h) ?? 0) + 1);
    n++;
    const nx = rdPtr(c + P.cleanupNext);
    if (nx === c) {
      skip(ctx, "pool_cleanup_cycle");
      return false;
    }
    c = nx;
  }
  return true;
}
