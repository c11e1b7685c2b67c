import * as ffi from "ffi";
import { cdef } from "./cdef";

cdef(`
  typedef struct { long tv_sec; long tv_nsec; } memdiag_timespec_t;
  int clock_gettime(int clk_id, memdiag_timespec_t *tp);
`);

const C = ffi.C;
const clock_gettime = C.clock_gettime;
const ts = ffi.new("memdiag_timespec_t");
const CLOCK_MONOTONIC = 1;
const CLOCK_THREAD_CPUTIME_ID = 3;

/** Monotonic milliseconds; ngx.now() is cached per event-loop turn and useless for slice budgets. */
export function monoMs(): number {
  clock_gettime(CLOCK_MONOTONIC, ts);
  return tonumber(ts.tv_sec)! * 1000 + tonumber(ts.tv_nsec)! / 1e6;
}

/** CPU time of this thread in milliseconds: what a collection really costs the worker. */
export function cpuMs(): number {
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts);
  return tonumber(ts.tv_sec)! * 1000 + tonumber(ts.tv_nsec)! / 1e6;
}
