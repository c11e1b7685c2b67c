import * as ffi from "ffi";
import { cdef } from "../../base/cdef";
import { Budget } from "../../base/slice";

/**
 * Scratch memory for a walk of the Lua heap: outside the heap being measured, zeroed, and given
 * back in pieces across slices. A walk of a large heap needs tens to hundreds of MB of queue and
 * visited set; malloc + free of that much is one munmap of every page touched, milliseconds for
 * a hundred MB, in one slice. Mapped directly, it is unmapped PIECE bytes per slice.
 */
cdef(`
  void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
  int munmap(void *addr, size_t length);
`);

const PROT_RW = 3;
const MAP_PRIVATE_ANON = 0x22;
/** bytes unmapped per budget check */
const PIECE = 4 << 20;
const PAGE = 4096;

export interface Scratch {
  base: number;
  bytes: number;
}

/** `bytes` of zeroed memory, or undefined when the kernel refuses */
export function mapScratch(bytes: number): Scratch | undefined {
  const len = Math.ceil(bytes / PAGE) * PAGE;
  const p = ffi.C.mmap(undefined, len, PROT_RW, MAP_PRIVATE_ANON, -1, 0);
  const a = tonumber(ffi.cast("intptr_t", p))!;
  if (a === -1 || a === 0) return undefined;
  return { base: a, bytes: len };
}

/** give it back, PIECE bytes at a time, yielding between pieces as the budget says */
export function unmapScratch(s: Scratch, budget: Budget): void {
  for (let off = 0; off < s.bytes; off += PIECE) {
    ffi.C.munmap(ffi.cast("void *", s.base + off), Math.min(PIECE, s.bytes - off));
    budget.check();
  }
}
