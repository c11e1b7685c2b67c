import * as ffi from "ffi";
import { cdef } from "../../base/cdef";

/**
 * Resident bytes of an address range by mincore(2), which touches no page and fails instead of
 * faulting on memory that is gone.
 *
 * Its own module because the count wants the JIT and the regions layer runs interpreted
 * (base/nojit.ts): mincore gives one byte per page, and a 1 GB heap is 262,144 of them.
 * Counted interpreted inside layers/system/regions.ts, with no check in between, a large heap
 * would make one slice of several milliseconds (docs/design-figures.md). Compiled, the loop is
 * one stable trace; and
 * `between` runs after every batch of RESIDENT_BATCH_PAGES (64 MB), so the caller can yield.
 */
cdef(`int mincore(void *addr, size_t length, unsigned char *vec);`);
const mincore = ffi.C.mincore;
const PAGE = 4096;
export const RESIDENT_BATCH_PAGES = 16384;
const vec = ffi.new("unsigned char[?]", RESIDENT_BATCH_PAGES);

function countResident(n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) c += vec[i] % 2;
  return c;
}

/** Resident bytes of [addr, addr+len); undefined when mincore refuses (unaligned, unmapped). */
export function residentBytes(addr: number, len: number, between?: (this: void) => void): number | undefined {
  if (addr % PAGE !== 0) return undefined;
  let pages = 0;
  let p = addr;
  const end = addr + len;
  while (p < end) {
    const n = Math.min(RESIDENT_BATCH_PAGES, Math.ceil((end - p) / PAGE));
    if (mincore(ffi.cast("void *", p), n * PAGE, vec) !== 0) return undefined;
    pages += countResident(n);
    p += n * PAGE;
    if (p < end && between !== undefined) between();
  }
  return pages * PAGE;
}
