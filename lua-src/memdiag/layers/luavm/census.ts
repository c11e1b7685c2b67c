import * as ffi from "ffi";
import { cdef } from "../../base/cdef";
import { Budget } from "../../base/slice";
import { monoMs, cpuMs } from "../../base/clock";
import { rdPtr, rdU32, rdU64, rdU8 } from "../../safe/mem";
import { pinGc, unpinGc } from "../luajit/gc-hold";
import { watchGcCycles } from "./gc-floor";
import { gcMoved, markGc } from "./gc-marks";
import { Holders, runHolders } from "./holders";
import { CDATA_FIN, CT_IDS, CT_STRIDE, CdataType, topCdata } from "./cdata-types";
import { Scratch, mapScratch, unmapScratch } from "./scratch";
import { GCS, GCT, LJ, VmRefs, ctypeBytes, rdU16, tabBytes, verifyLayout } from "./lj-layout";

/**
 * Lua heap census: every live GC object of this worker's VM by type, counted and sized as the
 * collector accounts it, read from LuaJIT's own lists: the root list (every object but strings
 * and open upvalues, each thread's open upvalues hang off it) and the string table's chains.
 *
 * Why it is safe to walk the VM we run in:
 *   - The collector is held (luajit/gc-hold.ts pinGc) for the whole census: no object is freed
 *     or moved while held, so every object reached stays where it is; the agent's other readers
 *     cannot release it meanwhile. The collector is handed back at the pace it had.
 *   - The walk runs in slices of about slice_ms (util/budget.ts) and yields between them. What
 *     runs in between can take the collector back: collectgarbage("collect"/"step"/"restart")
 *     moves the threshold or the state, sweeps or completes a cycle. So after every yield,
 *     before the cursor is touched again, the threshold must still read "stopped", and the GC
 *     state, its sweep positions and the count of completed cycles (luavm/gc-floor.ts) must be
 *     as they were; otherwise the attempt is dropped (counted) and the census starts over, up to
 *     MAX_ATTEMPTS.
 *   - The application keeps allocating in between: new objects go to the head of the root list
 *     (behind our cursor, not counted: the census is of the heap as it was when it started);
 *     the string table can be resized, so its base and mask are re-read after every yield and a
 *     change restarts the string part. No pointer into a table's array or hash part, a stack or
 *     the string table is kept across a yield; the cursor is always an object header.
 *   - The collector stays held at most MAX_HOLD_MS per attempt (garbage piles up meanwhile);
 *     past that the census gives up with the reason.
 *   - The walk allocates nothing on the Lua heap it measures: tallies live in C memory.
 *   - Every list is bounded by the heap's size over the smallest object, every object's type
 *     byte must be a known type.
 */

cdef(`void *malloc(size_t size);`);

export const MAX_ATTEMPTS = 5;
export const MAX_HOLD_MS = 2000;
/** largest tables reported */
export const TOP_TABLES = 20;
/** objects between two budget checks */
const CHECK_EVERY = 128;
const NTYPES = 16;
/** per gct: [0..15] counts, [16..31] bytes; C memory, never freed (one per worker) */
const tally = ffi.cast("double *", ffi.C.malloc(8 * 2 * NTYPES));
/** per ctype id of the attempt running (luavm/cdata-types.ts), in its own scratch mapping */
let byCt: any;

const TYPE_NAMES: { [gct: number]: string } = {
  [GCT.str]: "string", [GCT.upval]: "upvalue", [GCT.thread]: "thread", [GCT.proto]: "proto", [GCT.func]: "function",
  [GCT.trace]: "trace", [GCT.cdata]: "cdata", [GCT.tab]: "table", [GCT.udata]: "userdata",
};
const STATE_NAMES = ["pause", "propagate", "atomic", "sweepstring", "sweep", "finalize"];

export interface CensusType {
  type: string;
  count: number;
  bytes: number;
}

export interface Census {
  ok: boolean;
  error?: string;
  /** unix time the census started */
  time: number;
  /** gc.total when the census started */
  heap_bytes: number;
  /** what the objects counted account for */
  objects_bytes: number;
  objects: number;
  /** heap_bytes - objects_bytes: the VM's own state (global, main thread, JIT state), the string table, buffers */
  other_bytes: number;
  /** of other_bytes: the VM's own block (global_State, main thread, JIT state), the string table's anchors, the string buffer */
  vm_bytes: number;
  types: CensusType[];
  /** the GC state the census found (a heap held mid-sweep still holds garbage not yet freed) */
  gc_state: string;
  attempts: number;
  /** why earlier attempts were dropped */
  aborted?: string[];
  wall_ms: number;
  cpu_ms: number;
  slices: number;
  max_slice_ms: number;
  /** the longest slice in the worker thread's CPU time (max_slice_ms is wall time: it includes time the OS gave other processes) */
  max_slice_cpu_ms: number;
  /** how long the collector was held by the attempt that finished */
  hold_ms: number;
  /** cdata by C type, the largest by bytes */
  cdata?: CdataType[];
  /** who holds it: the largest tables with their reference paths (luavm/holders.ts) */
  holders?: Holders;
  holders_error?: string;
}

/** one attempt; returns undefined on success (tally filled), else why it was dropped and whether to retry */
function attempt(refs: VmRefs, budget: Budget, out: { objects: number; hold_ms: number; state: number; total: number; vm: number; ctScratch?: Scratch }): LuaMultiReturn<[string | undefined, boolean]> {
  const g = refs.g;
  for (let i = 0; i < 2 * NTYPES; i++) tally[i] = 0;
  // rows of ids seen are set, the rest stay zero pages: cleared by re-mapping, not by a loop
  const ctScratch = mapScratch(CT_IDS * CT_STRIDE * 8);
  if (ctScratch === undefined) return $multi("no memory for the cdata tally", false);
  byCt = ffi.cast("double *", ctScratch.base);
  out.ctScratch = ctScratch;
  const held = pinGc();
  const holdStart = monoMs();
  try {
    // a collector the application stopped is not ours to hold; it must then stay stopped
    const m = markGc(g);
    if (m.threshold < 2 ** 47) return $multi("the collector is running (could not be held)", false);
    const total = rdU64(g + LJ.gc_total);
    out.total = total;
    out.state = m.state;
    const maxObjects = Math.floor(total / 16) + 1;
    const cts = rdPtr(g + LJ.ctype_state);
    const main = refs.mainthread;
    let n = 0;
    const yielded = (): string | undefined => {
      if (!budget.check()) return undefined;
      if (monoMs() - holdStart > MAX_HOLD_MS) return `the collector would stay held longer than ${MAX_HOLD_MS} ms`;
      return gcMoved(g, m);
    };
    // the root list
    let o = rdPtr(g + LJ.gc_root);
    while (o !== 0) {
      if (o % 8 !== 0) return $multi("root list: misaligned object", false);
      const t = rdU8(o + LJ.gct);
      let b: number;
      if (t === GCT.tab) b = tabBytes(o);
      else if (t === GCT.func) {
        const nup = rdU8(o + LJ.fn_nupvalues);
        b = rdU8(o + LJ.fn_ffid) === 0 ? LJ.fnL_size - LJ.ref_size + LJ.ref_size * nup : LJ.fnC_size - LJ.tv_size + LJ.tv_size * nup;
      } else if (t === GCT.str) b = LJ.str_size + ((rdU32(o + LJ.str_len) + 4) - ((rdU32(o + LJ.str_len) + 4) % 4));
      else if (t === GCT.upval) b = LJ.uv_size;
      else if (t === GCT.proto) b = rdU32(o + LJ.pt_sizept);
      else if (t === GCT.udata) b = LJ.ud_size + rdU32(o + LJ.ud_len);
      else if (t === GCT.cdata) {
        const marked = rdU8(o + LJ.marked);
        const id = rdU16(o + LJ.cd_ctypeid);
        if (marked >= 128) b = rdU32(o + LJ.cd_var_len) + rdU16(o + LJ.cd_var_extra);
        else {
          const sz = ctypeBytes(rdPtr(cts + LJ.cts_tab), rdU32(cts + LJ.cts_top), id);
          if (sz < 0) return $multi("cdata of an unknown C type id", false);
          b = LJ.cd_size + sz;
        }
        byCt[id * CT_STRIDE]++;
        byCt[id * CT_STRIDE + 1] += b;
        if (marked % (2 * CDATA_FIN) >= CDATA_FIN) byCt[id * CT_STRIDE + 2]++;
      } else if (t === GCT.thread) {
        // the main thread's lua_State is part of the VM's own block (other_bytes); its stack is not
        b = (o === main ? 0 : LJ.th_size) + rdU32(o + LJ.th_stacksize) * LJ.tv_size;
        // its open upvalues are on a list of their own
        let uv = rdPtr(o + LJ.th_openupval), k = 0;
        while (uv !== 0 && k < maxObjects) {
          if (uv % 8 !== 0 || rdU8(uv + LJ.gct) !== GCT.upval) return $multi("open upvalue list: not an upvalue", false);
          tally[GCT.upval]++;
          tally[NTYPES + GCT.upval] += LJ.uv_size;
          uv = rdPtr(uv);
          k++;
        }
      } else if (t === GCT.trace)
        b = LJ.tr_size + (rdU32(o + LJ.tr_nins) - rdU32(o + LJ.tr_nk)) * LJ.irins_size + rdU16(o + LJ.tr_nsnap) * LJ.snap_size + rdU32(o + LJ.tr_nsnapmap) * LJ.snapentry_size;
      else return $multi(`root list: unknown object type ${t}`, false);
      tally[t]++;
      tally[NTYPES + t] += b;
      n++;
      if (n > maxObjects) return $multi("root list does not end", false);
      o = rdPtr(o);
      if (n % CHECK_EVERY === 0) {
        const why = yielded();
        if (why !== undefined) return $multi(why, true);
      }
    }
    // the string table's chains (the low bit of an anchor flags secondary hashing)
    let restarts = 0;
    let tab = rdPtr(g + LJ.str_tab), mask = rdU32(g + LJ.str_mask);
    let strCount = 0, strBytes = 0;
    let bucket = 0;
    let s = 0;
    // steps: buckets and strings alike (a sparse table is mostly empty buckets); the last
    // bucket's chain is walked after the bucket index has passed the mask
    let steps = 0;
    while (bucket <= mask || s !== 0) {
      if (s === 0) {
        const a = rdPtr(tab + bucket * 8);
        s = a - (a % 2);
        bucket++;
      } else {
        if (rdU8(s + LJ.gct) !== GCT.str) return $multi("string table: not a string", false);
        const len = rdU32(s + LJ.str_len);
        strCount++;
        strBytes += LJ.str_size + (len + 4 - ((len + 4) % 4));
        if (strCount > maxObjects) return $multi("string table does not end", false);
        s = rdPtr(s);
      }
      if (++steps % CHECK_EVERY === 0) {
        const why = yielded();
        if (why !== undefined) return $multi(why, true);
        if (rdPtr(g + LJ.str_tab) !== tab || rdU32(g + LJ.str_mask) !== mask) {
          // resized under us: the chains were relinked; count them again
          if (++restarts > MAX_ATTEMPTS) return $multi("the string table kept being resized", true);
          tab = rdPtr(g + LJ.str_tab);
          mask = rdU32(g + LJ.str_mask);
          strCount = 0;
          strBytes = 0;
          bucket = 0;
          s = 0;
        }
      }
    }
    tally[GCT.str] += strCount;
    tally[NTYPES + GCT.str] += strBytes;
    out.objects = n + strCount;
    out.vm = LJ.gg_size + (mask + 1) * 8 + (rdPtr(g + LJ.tmpbuf_e) - rdPtr(g + LJ.tmpbuf_b));
    out.hold_ms = monoMs() - holdStart;
    return $multi(undefined, false);
  } finally {
    if (held) unpinGc();
  }
}

let running = false;

/** ngx.now() in a worker; os.time() where there is no ngx (the luajit CLI of the unit tests) */
function unixNow(): number {
  const n = (_G as unknown as { ngx?: { update_time: (this: void) => void; now: (this: void) => number } }).ngx;
  if (n === undefined) return os.time();
  n.update_time();
  return n.now();
}

/**
 * Count the Lua heap now, in slices (yields between them when `canYield`). One at a time per
 * worker; the answer says why when the layout is refused or every attempt was dropped.
 */
export function runCensus(canYield: boolean, sliceMs: number, withHolders = true): Census {
  const res: Census = {
    ok: false, time: unixNow(), heap_bytes: 0, objects_bytes: 0, objects: 0, other_bytes: 0, vm_bytes: 0, types: [], gc_state: "?", attempts: 0,
    wall_ms: 0, cpu_ms: 0, slices: 0, max_slice_ms: 0, max_slice_cpu_ms: 0, hold_ms: 0,
  };
  const [refs, err] = verifyLayout();
  if (refs === undefined) {
    res.error = `layout refused: ${err}`;
    return res;
  }
  if (running) {
    res.error = "a census is already running in this worker";
    return res;
  }
  running = true;
  watchGcCycles();
  const w0 = monoMs(), c0 = cpuMs();
  const budget = new Budget(sliceMs, canYield);
  const out: { objects: number; hold_ms: number; state: number; total: number; vm: number; ctScratch?: Scratch } = { objects: 0, hold_ms: 0, state: 0, total: 0, vm: 0 };
  const aborted: string[] = [];
  try {
    while (res.attempts < MAX_ATTEMPTS) {
      res.attempts++;
      const [why, retry] = attempt(refs, budget, out);
      if (why === undefined) res.cdata = topCdata(byCt);
      byCt = undefined;
      if (out.ctScratch !== undefined) unmapScratch(out.ctScratch, budget);
      out.ctScratch = undefined;
      if (why === undefined) {
        res.ok = true;
        break;
      }
      aborted.push(why);
      if (!retry) break;
    }
    if (res.ok && withHolders) {
      for (let k = 0; k < MAX_ATTEMPTS; k++) {
        const [h, herr] = runHolders(refs, budget, TOP_TABLES, out.objects, tally[GCT.tab] + tally[GCT.func] + tally[GCT.thread] + tally[GCT.udata], MAX_HOLD_MS);
        res.holders = h;
        res.holders_error = herr;
        if (h !== undefined || herr === "no memory for the walk" || herr === "the registry is not a table") break;
        aborted.push(`holders: ${herr}`);
      }
    }
  } finally {
    running = false;
  }
  budget.finish();
  if (aborted.length > 0) res.aborted = aborted;
  res.wall_ms = monoMs() - w0;
  res.cpu_ms = cpuMs() - c0;
  res.slices = budget.slices;
  res.max_slice_ms = budget.maxSliceMs;
  res.max_slice_cpu_ms = budget.maxSliceCpuMs;
  if (!res.ok) {
    res.error = aborted[aborted.length - 1] ?? "no attempt finished";
    return res;
  }
  res.heap_bytes = out.total;
  res.objects = out.objects;
  res.hold_ms = out.hold_ms;
  res.gc_state = STATE_NAMES[out.state] ?? tostring(out.state);
  let sum = 0;
  for (const [gct, name] of pairs(TYPE_NAMES)) {
    const count = tally[gct], bytes = tally[NTYPES + gct];
    sum += bytes;
    res.types.push({ type: name, count, bytes });
  }
  table.sort(res.types, (a, b) => a.bytes > b.bytes);
  res.objects_bytes = sum;
  res.other_bytes = out.total - sum;
  res.vm_bytes = out.vm;
  return res;
}
