import * as ffi from "ffi";
import { probeUnavailable, selfPid } from "../../safe/probe";
import { addrOf } from "../../safe/mem";

/**
 * Fault-free reads of memory that may be unmapped under our feet. LuaJIT's own
 * allocator munmaps large blocks as soon as the agent's tables grow or the GC
 * sweeps, between reading /proc/self/maps and touching the memory, and without
 * any yield: a direct read of LuaJIT memory can SIGSEGV. process_vm_readv on our
 * own pid copies what is mapped and returns a short count (or EFAULT) for the rest.
 */
const C = ffi.C;
export const COPY_BYTES = 65536;
/**
 * pages probed per process_vm_readv call, with a budget check (the caller's `between`)
 * after each: the kernel resolves every page of the batch, and pages LuaJIT or glibc
 * reserved but never touched cost it a page-table walk or a fault each (measured:
 * 512-page batches made several-millisecond slices)
 */
const PROBE_BATCH = 64;
const PROBE_LEN = 16;

/**
 * The window, the probe buffer and the iovecs in one allocation for the worker's
 * life (page aligned inside). The iovecs hold addresses of what was last copied:
 * they must lie inside the window that the reference scan leaves out.
 */
const IOV_BYTES = (PROBE_BATCH + 1) * 16;
const SMALL_BYTES = 1024;
const TOTAL = COPY_BYTES + PROBE_BATCH * PROBE_LEN + IOV_BYTES + 16 + SMALL_BYTES;
const raw = ffi.new("uint8_t[?]", TOTAL + 4096);
/** exported so the module table anchors it: the pointers below do not keep it alive for the GC */
export const copyAnchor = raw;
const rawAddr = addrOf(raw);
const bufAddr = rawAddr + ((4096 - (rawAddr % 4096)) % 4096);
const buf = ffi.cast("uint8_t *", bufAddr);
const probeBuf = ffi.cast("uint8_t *", bufAddr + COPY_BYTES);
const liov = ffi.cast("memdiag_iovec_u_t *", bufAddr + COPY_BYTES + PROBE_BATCH * PROBE_LEN);
const riov = ffi.cast("memdiag_iovec_u_t *", bufAddr + COPY_BYTES + PROBE_BATCH * PROBE_LEN + 16);
/** a second, small window: lets a scan of the big one look around a hit */
const smallAddr = bufAddr + COPY_BYTES + PROBE_BATCH * PROBE_LEN + IOV_BYTES + 16;
const sliov = ffi.cast("memdiag_iovec_u_t *", smallAddr - 16);
const sriov = ffi.new("memdiag_iovec_u_t[1]");
const u32 = ffi.cast("const uint32_t *", 0);
const TWO32 = 4294967296;
let pid = 0;

/** The copy window [start, end): the reference scan must not read it as LuaJIT memory. */
export function copyWindow(): LuaMultiReturn<[number, number]> {
  return $multi(rawAddr, rawAddr + TOTAL + 4096);
}

/** Why safe copies do not work here (seccomp, old kernel), or undefined: the same system call as safe/probe.ts. */
export function copyUnavailable(): string | undefined {
  if (pid === 0) pid = selfPid();
  return probeUnavailable();
}

/**
 * Copy [addr, addr+len) (len <= COPY_BYTES) into the window; returns the address
 * of the copy and the number of bytes copied (short when part is unmapped).
 */
export function copyIn(addr: number, len: number): LuaMultiReturn<[number, number]> {
  liov[0].iov_base = bufAddr;
  liov[0].iov_len = len;
  riov[0].iov_base = (addr);
  riov[0].iov_len = len;
  const n = tonumber(C.process_vm_readv(pid, liov, 1, riov, 1, 0))!;
  return $multi(bufAddr, n < 0 ? 0 : n);
}

/** Copy [addr, addr+len) (len <= 1024) into the small window; returns its address and the bytes copied. */
export function copySmall(addr: number, len: number): LuaMultiReturn<[number, number]> {
  sliov[0].iov_base = (smallAddr);
  sliov[0].iov_len = len;
  sriov[0].iov_base = (addr);
  sriov[0].iov_len = len;
  const n = tonumber(C.process_vm_readv(pid, sliov, 1, sriov, 1, 0))!;
  sriov[0].iov_base = 0;
  return $multi(smallAddr, n < 0 ? 0 : n);
}

/**
 * The first 16 bytes of every page in [start, end), read without faulting:
 * calls fn(pageAddress, word0, word1) for each readable page, in order. The
 * callback returns how many bytes to skip forward (>= 4096, page multiple) or 0 for one page.
 */
export function probePages(
  start: number,
  end: number,
  fn: (this: void, page: number, w0: number, w1: number) => number,
  between?: (this: void) => void,
): void {
  let a = start;
  while (a < end) {
    // each batch makes the kernel resolve up to PROBE_BATCH pages: let the caller yield between batches
    if (between !== undefined && a > start) between();
    const n = Math.min(PROBE_BATCH, Math.floor((end - a) / 4096));
    if (n <= 0) break;
    for (let k = 0; k < n; k++) {
      riov[k].iov_base = (a + k * 4096);
      riov[k].iov_len = PROBE_LEN;
    }
    liov[0].iov_base = bufAddr + COPY_BYTES;
    liov[0].iov_len = n * PROBE_LEN;
    const got = tonumber(C.process_vm_readv(pid, liov, 1, riov, n, 0))!;
    const pages = got > 0 ? Math.floor(got / PROBE_LEN) : 0;
    let next = a + n * 4096;
    const pb = bufAddr + COPY_BYTES;
    let k = 0;
    while (k < pages) {
      const o = pb / 4 + k * 4;
      const w0 = u32[o] + u32[o + 1] * TWO32;
      const w1 = u32[o + 2] + u32[o + 3] * TWO32;
      const skipBytes = fn(a + k * 4096, w0, w1);
      if (skipBytes > 4096) {
        const target = a + k * 4096 + skipBytes;
        if (target >= a + pages * 4096) {
          next = target;
          break;
        }
        k += skipBytes / 4096;
      } else k++;
    }
    // the page after the readable ones faulted: step over it
    if (k >= pages && pages < n) next = a + (pages + 1) * 4096;
    a = next;
  }
}
