import * as ffi from "ffi";
import { cdef } from "../util/cdef";

cdef(`
  struct mallinfo2 {
    size_t arena; size_t ordblks; size_t smblks; size_t hblks; size_t hblkhd;
    size_t usmblks; size_t fsmblks; size_t uordblks; size_t fordblks; size_t keepcost;
  };
  struct mallinfo2 mallinfo2(void);
`);

export interface GlibcTotals {
  arena_bytes?: number;
  mmap_bytes?: number;
  mmap_chunks?: number;
  in_use_bytes?: number;
  free_bytes?: number;
  top_releasable_bytes?: number;
  error?: string;
}

let mallinfo2: ((this: void) => any) | undefined;
let missing: string | undefined;
{
  // glibc < 2.33 has no mallinfo2 (and musl none at all): report, don't fail the agent.
  const [ok, fn] = pcall(() => ffi.C.mallinfo2);
  if (ok) mallinfo2 = fn;
  else missing = "mallinfo2 not available in this libc";
}

/** glibc's own totals over all arenas (takes each arena lock briefly). */
export function collectGlibc(): GlibcTotals {
  if (!mallinfo2) return { error: missing };
  const mi = mallinfo2();
  return {
    arena_bytes: tonumber(mi.arena)!,
    mmap_bytes: tonumber(mi.hblkhd)!,
    mmap_chunks: tonumber(mi.hblks)!,
    in_use_bytes: tonumber(mi.uordblks)!,
    free_bytes: tonumber(mi.fordblks)!,
    top_releasable_bytes: tonumber(mi.keepcost)!,
  };
}
