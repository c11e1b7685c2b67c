import * as ffi from "ffi";
import { cdef } from "../base/cdef";
import { Maps } from "./maps";
import { jitLib } from "../base/nojit";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

/**
 * Reads that cannot fault, for memory that can be unmapped between the maps check
 * and the read without any yield of ours: LuaJIT direct chunks and mcode areas (the
 * GC and the JIT unmap them on their own schedule, and our own table growth can
 * mremap them), and anything other threads (aio thread pools) free. process_vm_readv
 * on our own pid copies what is mapped and returns a short count or EFAULT for the
 * rest; a read of the same address through an FFI pointer is a SIGSEGV that takes
 * the worker down (seen in CI: a read at a page-aligned address in the classifier).
 * One system call per checked range (1.8-2.2 us on this VM), so this is for header
 * reads, not for scanning; bulk copies are deep/heap/copy.ts.
 */
cdef(`
  typedef struct { uintptr_t iov_base; size_t iov_len; } memdiag_iovec_u_t;
  long process_vm_readv(int pid, const memdiag_iovec_u_t *local_iov, unsigned long liovcnt,
                        const memdiag_iovec_u_t *remote_iov, unsigned long riovcnt, unsigned long flags);
  int getpid(void);
`);

const C = ffi.C;
const pvRead = C.process_vm_readv;
const CHECK_MAX = 1024;
/** bytes copied per check at least: the next checks of a header walk (+8, +16, +32) hit the copy */
const LINE = 64;
/** mapping starts read per prefetch call at most (one system call for all of them) */
const PREFETCH_MAX = 32;
const BUF_BYTES = CHECK_MAX + PREFETCH_MAX * LINE;
const buf = ffi.new("uint8_t[?]", BUF_BYTES + 16);
/** exported so the module table anchors it: the kernel writes into it through a plain address the GC does not see */
export const probeAnchor = buf;
const bufAddr = tonumber(ffi.cast("uintptr_t", buf))!;
const base = bufAddr + ((16 - (bufAddr % 16)) % 16);
const preBase = base + CHECK_MAX;
const liov = ffi.new("memdiag_iovec_u_t[1]");
const riov = ffi.new("memdiag_iovec_u_t[?]", PREFETCH_MAX);
const u32 = ffi.cast("const uint32_t *", 0);
const TWO32 = 4294967296;
let pid = 0;
let broken: string | undefined;

/** Why checked reads fall back to plain ones here (seccomp, old kernel), or undefined. */
export function probeUnavailable(): string | undefined {
  if (pid === 0) {
    pid = C.getpid();
    if (copyToBuf(bufAddr, 8) !== 8) broken = `process_vm_readv on self failed (errno ${ffi.errno()})`;
  }
  return broken;
}

/** This worker's pid (the agent loads in init_worker, after the fork), for process_vm_readv. */
export function selfPid(): number {
  probeUnavailable();
  return pid;
}

function copyToBuf(addr: number, len: number): number {
  liov[0].iov_base = base;
  liov[0].iov_len = len;
  riov[0].iov_base = addr;
  riov[0].iov_len = len;
  return tonumber(pvRead(pid, liov, 1, riov, 1, 0))!;
}

/** Thrown (as the error value) when memory the maps called readable is gone. */
export const VANISHED = "memdiag: memory vanished under a checked read";

/** readable() has the kernel copy the range (the maps, for long ranges); u64() reads the copy. */
export interface CheckedMem {
  readable: (this: void, addr: number, len: number) => boolean;
  /** an 8-aligned word; error(VANISHED) if it is gone (outside the last checked range: read on its own) */
  u64: (this: void, addr: number) => number;
  /**
   * Copy the first bytes at addrs[0..n) (n <= PREFETCH_MAX) in one system call; later checks
   * at exactly those addresses are served from it until the next prefetch or reset.
   */
  prefetch: (this: void, addrs: number[], n: number) => void;
  /** forget every copy: call after a yield (the memory may have changed meanwhile) */
  reset: (this: void) => void;
}

/**
 * A CheckedMem. A range of up to 1 KB is readable when the kernel copies all of it: that
 * is the ground truth the maps only approximate (it also knows mappings made since the
 * maps were read, such as a new LuaJIT segment, and refuses device and [vvar] pages), and
 * the copy serves the words read inside it. A check costs one system call (1.8-2.2 us on
 * this VM, about 10x an FFI read), so each copies at least a LINE, which the next checks of
 * the same header usually fall in, and prefetch() reads a batch of mapping starts at once.
 * Longer ranges, and everything when process_vm_readv is unavailable, are checked against
 * getMaps() (read at each check, so a refreshed Maps is seen) and read directly: the old
 * behaviour, and what every other layer does.
 */
export function checkedMem(getMaps: (this: void) => Maps): CheckedMem {
  const direct = probeUnavailable() !== undefined;
  // the current copy: [lo, hi) of memory, held at wbase
  let lo = 0;
  let hi = 0;
  let wbase = base;
  // prefetched starts: address -> slot; bytes copied per slot
  let pre = new LuaTable<number, number>();
  const preGot: number[] = [];
  const reset = (): void => {
    lo = 0;
    hi = 0;
    pre = new LuaTable<number, number>();
  };
  const copyLine = (addr: number, len: number): boolean => {
    const got = copyToBuf(addr, Math.min(Math.max(len, LINE), CHECK_MAX));
    if (got < len) return false;
    lo = addr;
    hi = addr + got;
    wbase = base;
    return true;
  };
  const readable = (addr: number, len: number): boolean => {
    if (addr >= lo && addr + len <= hi && len >= 0) return true;
    if (direct || len > CHECK_MAX) {
      lo = 0;
      hi = 0;
      return getMaps().readable(addr, len);
    }
    if (addr < 4096 || addr % 8 !== 0 || len <= 0) return false;
    const slot = pre.get(addr);
    if (slot !== undefined && preGot[slot] >= len) {
      lo = addr;
      hi = addr + preGot[slot];
      wbase = preBase + slot * LINE;
      return true;
    }
    return copyLine(addr, len);
  };
  const u64 = (addr: number): number => {
    if (addr >= lo && addr + 8 <= hi) {
      const w = (wbase + (addr - lo)) / 4;
      return u32[w] + u32[w + 1] * TWO32;
    }
    if (direct) return u32[addr / 4] + u32[addr / 4 + 1] * TWO32;
    if (!copyLine(addr, 8)) error(VANISHED, 0);
    const w = base / 4;
    return u32[w] + u32[w + 1] * TWO32;
  };
  const prefetch = (addrs: number[], n: number): void => {
    if (direct) return;
    if (n > PREFETCH_MAX) n = PREFETCH_MAX;
    reset();
    let k = 0;
    // the kernel stops at the first address it cannot read: go on after it
    while (k < n) {
      const m = n - k;
      for (let j = 0; j < m; j++) {
        riov[j].iov_base = addrs[k + j];
        riov[j].iov_len = LINE;
        preGot[k + j] = 0;
      }
      liov[0].iov_base = preBase + k * LINE;
      liov[0].iov_len = m * LINE;
      const got = tonumber(pvRead(pid, liov, 1, riov, m, 0))!;
      const full = got > 0 ? Math.floor(got / LINE) : 0;
      for (let j = 0; j < full; j++) {
        pre.set(addrs[k + j], k + j);
        preGot[k + j] = LINE;
      }
      k += full + 1; // the one that failed (or came short) is read on its own if asked for
    }
  };
  return { readable, u64, prefetch, reset };
}
