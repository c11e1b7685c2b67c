import * as ffi from "ffi";
import { cdef } from "../../base/cdef";
import { monoMs } from "../../base/clock";
import { jitLib } from "../../base/nojit";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

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
  /** free chunks glibc counted (bins and fastbins): what the next call will walk */
  free_chunks?: number;
  /** what this call cost (wall) */
  mallinfo_ms?: number;
  error?: string;
}

/**
 * mallinfo2 cannot be sliced: it walks every free chunk of every arena with the arena locked.
 * Measured with glibc 2.36: 0.03–0.08 ms at 10k free chunks, 11 ms at 100k, 150–190 ms at 1M
 * (a fragmented gateway heap). The agent starts in fresh workers, where it is cheap, and free
 * chunks accumulate over minutes, so each call's count says what the next one will cost: the
 * call is given up for good at MAX_CHUNKS free chunks, or when it cost more than MAX_MS twice
 * in a row with at least MIN_CHUNKS of them. A slow call with few free chunks is the worker
 * being preempted or the VM stalling (CI saw 1.7 ms for 12 chunks under load), not the walk.
 */
export const MALLINFO_MAX_MS = 0.3;
export const MALLINFO_MIN_CHUNKS = 5000;
export const MALLINFO_MAX_CHUNKS = 20000;

let mallinfo2: ((this: void) => any) | undefined;
let missing: string | undefined;
let overLimit = 0;
let givenUp: string | undefined;
{
  // glibc < 2.33 has no mallinfo2 (and musl none at all): report, don't fail the agent.
  const [ok, fn] = pcall(() => ffi.C.mallinfo2);
  if (ok) mallinfo2 = fn;
  else missing = "mallinfo2 not available in this libc";
}

/** Pure: whether a call that cost `ms` for `freeChunks` (after `prevOver` slow calls in a row) ends the use of mallinfo2. */
export function mallinfoVerdict(ms: number, freeChunks: number, prevOver: number): { over: number; giveUp: boolean } {
  const over = ms > MALLINFO_MAX_MS && freeChunks >= MALLINFO_MIN_CHUNKS ? prevOver + 1 : 0;
  return { over, giveUp: over >= 2 || freeChunks >= MALLINFO_MAX_CHUNKS };
}

/** glibc's own totals over all arenas, while that stays cheap (see MALLINFO_MAX_MS). */
export function collectGlibc(): GlibcTotals {
  if (!mallinfo2) return { error: missing };
  if (givenUp) return { error: givenUp };
  const t0 = monoMs();
  const mi = mallinfo2();
  const ms = monoMs() - t0;
  const freeChunks = tonumber(mi.ordblks)! + tonumber(mi.smblks)!;
  const v = mallinfoVerdict(ms, freeChunks, overLimit);
  overLimit = v.over;
  if (v.giveUp) {
    givenUp =
      `mallinfo2 no longer called: it took ${string.format("%.2f", ms)} ms for ${freeChunks} free chunks ` +
      `(limits: ${MALLINFO_MAX_CHUNKS} free chunks, or ${MALLINFO_MAX_MS} ms twice in a row; it walks every free chunk with the arena locked, and cannot yield). ` +
      `The glibc_heap region gives the heap's size and RSS; a deep scan (?deep=1) gives in-use and free by size class.`;
    ngx.log(ngx.WARN, "memdiag: ", givenUp);
  }
  return {
    arena_bytes: tonumber(mi.arena)!,
    mmap_bytes: tonumber(mi.hblkhd)!,
    mmap_chunks: tonumber(mi.hblks)!,
    in_use_bytes: tonumber(mi.uordblks)!,
    free_bytes: tonumber(mi.fordblks)!,
    top_releasable_bytes: tonumber(mi.keepcost)!,
    free_chunks: freeChunks,
    mallinfo_ms: ms,
  };
}
