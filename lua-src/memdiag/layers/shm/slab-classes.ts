/**
 * What a slab pool's pages are used for: nginx's own per-size-class statistics
 * (ngx_slab_pool_t.stats, one ngx_slab_stat_t {total, used, reqs, fails} per class of
 * 8 .. pagesize/2 bytes), the pages held by whole-page allocations, and the free pages'
 * largest contiguous run.
 *
 * This is where "no memory" comes from while free space looks ample: a class's pages stay
 * assigned to it while any of its chunks is in use, so a dict whose small values were
 * mostly deleted holds many free chunks of that class and no free page for a value of
 * another class; and a value larger than pagesize/2 needs a contiguous run of free pages,
 * which a fragmented free list may not have even when free_space() reports megabytes.
 *
 * Read without the zone's mutex (other workers allocate meanwhile): the counters are words
 * nginx updates under it, each read is a consistent word, the set of them a moment's view.
 * The free list is followed only through page descriptors inside the pool's own descriptor
 * array, bounded by its length; a list seen changing under the walk gives no largest run.
 */
import { Layout, off, sizeOf } from "../../nginx/types";
import { rdPtr, rdU64 } from "../../safe/mem";

export interface SlabClass {
  /** chunk size of the class (bytes) */
  size: number;
  /** chunks in the pages the class holds */
  total: number;
  used: number;
  /** pages the class holds */
  pages: number;
  /** allocations asked of the class, and those that failed ("no memory") since the zone was created */
  reqs: number;
  fails: number;
}

export interface SlabInfo {
  page_size: number;
  pages: number;
  free_pages: number;
  /** pages held by allocations of more than pagesize/2 (each a run of whole pages) */
  page_alloc_pages: number;
  /** the longest run of contiguous free pages (bytes): the largest value larger than pagesize/2 that fits */
  largest_free_run_bytes?: number;
  free_runs?: number;
  classes: SlabClass[];
}

/** free runs followed at most (each one is a fragment: more than this is a broken or racing list) */
const MAX_FREE_RUNS = 1 << 16;

/** chunks one page of a class holds (ngx_slab_alloc_locked: small classes keep their bitmap in the page itself) */
function perPage(shift: number, pageShift: number, ptrSize: number): number {
  const exactShift = pageShift - Math.log(8 * ptrSize) / Math.log(2);
  const chunks = 2 ** (pageShift - shift);
  if (shift >= exactShift) return chunks;
  let n = Math.floor(chunks / (2 ** shift * 8));
  if (n === 0) n = 1;
  return chunks - n;
}

/**
 * The slab pool at `addr` (header already validated by the caller: addr/end/start/pfree),
 * or an error saying which invariant failed.
 */
export function readSlab(L: Layout, addr: number, size: number, ps: number): LuaMultiReturn<[SlabInfo | undefined, string | undefined]> {
  const ptr = L.constants["sizeof_ptr"] ?? 8;
  const descSize = off(L, "ngx_slab_pool_t", "stats") - off(L, "ngx_slab_pool_t", "free"); // ngx_slab_page_t
  const statSize = 4 * ptr;
  const minShift = rdU64(addr + off(L, "ngx_slab_pool_t", "min_shift"));
  const pageShift = Math.floor(Math.log(ps) / Math.log(2) + 0.5);
  if (minShift < 1 || minShift >= pageShift || rdU64(addr + off(L, "ngx_slab_pool_t", "min_size")) !== 2 ** minShift)
    return $multi(undefined, "slab min_shift/min_size out of range");
  const n = pageShift - minShift;
  const slots = addr + sizeOf(L, "ngx_slab_pool_t");
  const stats = rdPtr(addr + off(L, "ngx_slab_pool_t", "stats"));
  if (stats !== slots + n * descSize) return $multi(undefined, "slab stats not after the class slots");
  const pagesAt = rdPtr(addr + off(L, "ngx_slab_pool_t", "pages"));
  const last = rdPtr(addr + off(L, "ngx_slab_pool_t", "last"));
  const start = rdPtr(addr + off(L, "ngx_slab_pool_t", "start"));
  if (pagesAt !== stats + n * statSize || last < pagesAt || (last - pagesAt) % descSize !== 0 || last > start)
    return $multi(undefined, "slab page descriptors out of place");
  const pages = (last - pagesAt) / descSize;
  if (start + pages * ps > addr + size) return $multi(undefined, "slab pages beyond the zone");
  const pfree = rdU64(addr + off(L, "ngx_slab_pool_t", "pfree"));

  const classes: SlabClass[] = [];
  let classPages = 0;
  for (let i = 0; i < n; i++) {
    const s = stats + i * statSize;
    const shift = minShift + i;
    const total = rdU64(s), used = rdU64(s + ptr);
    const per = perPage(shift, pageShift, ptr);
    const cp = Math.ceil(total / per);
    classPages += cp;
    classes.push({ size: 2 ** shift, total, used: Math.min(used, total), pages: cp, reqs: rdU64(s + 2 * ptr), fails: rdU64(s + 3 * ptr) });
  }
  const info: SlabInfo = {
    page_size: ps,
    pages,
    free_pages: pfree,
    page_alloc_pages: Math.max(0, pages - pfree - classPages),
    classes,
  };

  // the free list: pool->free is its head; each run's first descriptor has slab = run length
  const head = addr + off(L, "ngx_slab_pool_t", "free");
  let p = rdPtr(head + ptr);
  let runs = 0, largest = 0, freeSeen = 0;
  while (p !== head) {
    if (runs >= MAX_FREE_RUNS || p < pagesAt || p >= last || (p - pagesAt) % descSize !== 0) return $multi(info, undefined);
    const len = rdU64(p);
    if (len < 1 || len > pages) return $multi(info, undefined);
    runs++;
    freeSeen += len;
    if (len > largest) largest = len;
    p = rdPtr(p + ptr);
  }
  // a list that changed under the walk adds up to something else than pfree: no figure then
  if (freeSeen === pfree) {
    info.largest_free_run_bytes = largest * ps;
    info.free_runs = runs;
  }
  return $multi(info, undefined);
}
