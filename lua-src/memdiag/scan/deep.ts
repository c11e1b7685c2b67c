import * as ffi from "ffi";
import { config } from "../config";
import { Ctx, tickStep } from "../context";
import { Maps } from "../safe/maps";
import { rdPtr } from "../safe/mem";
import { DeepBudget, stopScanDiagnostics } from "./budget";
import { monoMs } from "../util/clock";
import { arr } from "../util/json";
import { cdef } from "../util/cdef";
import { currentLayout } from "../layout/select";
import { off, sizeOf } from "../layout/types";
import { cycleAddr } from "../identity";
import { heapRegions, KIND_ARENA, KIND_MMAP, progress, sizeClassesJson, walkHeap } from "../heap/walk";
import { poolOffsets } from "../pools/walk";
import { discoverPools } from "../pools/discover";
import { dataSegments, luaRegions, moduleConfsCached, moduleFilesCached, rootedPoolSet } from "../pools/roots";
import { attributeOwners, groupUnrooted } from "../pools/owners";
import { annotateCreationSites } from "../sampler/sampler";
import { noJit } from "./nojit";
import { releaseGc } from "../luajit/gc-hold";
import { Episode, firstLine } from "../util/episode";

/**
 * The deep scan: glibc heap walk (size classes) → pool discovery → owner
 * attribution, as one job per worker on a timer, in slices of config.slice_ms
 * (Budget yields with ngx.sleep(0) between them). Its status is merged into every
 * snapshot this worker publishes while it runs, its result into every snapshot after.
 */

cdef(`extern uintptr_t ngx_pagesize;`);

export interface ScanStatus {
  state: string;
  phase?: string;
  started?: number;
  finished?: number;
  bytes_scanned: number;
  heap_bytes: number;
  ref_bytes: number;
  /** wall time of the slices (yield decisions use it) */
  ms_total: number;
  wall_ms: number;
  max_slice_ms: number;
  /** thread CPU time: what the scan cost the worker, unaffected by other processes */
  cpu_ms: number;
  max_slice_cpu_ms: number;
  slices: number;
  pools_found?: number;
  unrooted_pools?: number;
  /** thread CPU time per phase: heap walk (with pool-head pre-filter), pool discovery, owner attribution */
  phase_cpu_ms?: { walk: number; discover: number; owners: number };
  /** glibc thread arena heaps walked (64 MB-aligned heaps of non-main arenas) and their bytes */
  arena_heaps?: number;
  arena_bytes?: number;
  /** mmapped chunks found */
  mmapped_chunks?: number;
  /** slices over 1.5 ms of CPU, and the 99th percentile of slice CPU time (to 0.1 ms); slices not preempted */
  slow_slices?: number;
  slice_cpu_p99_ms?: number;
  /** reads of /proc/self/maps during the scan (they are lazy: only when a check leaves the brk heap after a yield) */
  maps_reads?: number;
  /** the longest CPU slice: steps it ran from/to, checks, page faults, preemptions, traces compiled, marks */
  max_slice_phase?: string;
  /** the same for each slice over 1.5 ms of CPU (the first 16) */
  slow_slice_sites?: string[];
  /**
   * slices during which the scheduler switched the worker out (their thread CPU time is
   * unreliable on some VMs and their wall time includes other processes): counted apart from
   * max_slice_cpu_ms, slow_slices and slice_cpu_p99_ms; their longest CPU time and how many
   * exceeded 1.5 ms
   */
  preempted_slices?: number;
  max_preempted_slice_cpu_ms?: number;
  slow_preempted_slices?: number;
  /** wall time spent at the end of the scan describing slow slices and traces (max_slice_phase, slow_slice_sites, jit_traces) */
  diag_ms?: number;
  /** slices whose thread CPU clock ran ahead of wall time (their CPU time is capped at the wall time) */
  cpu_clock_jumps?: number;
  /** LuaJIT trace compiler during the scan: totals, then trace starts and aborts by source line */
  jit_traces?: string[];
  error?: string;
}

const MAX_CANDIDATES = 2000000;
const MAX_GROUPS = 64;

let status: ScanStatus = { state: "idle", bytes_scanned: 0, heap_bytes: 0, ref_bytes: 0, ms_total: 0, wall_ms: 0, max_slice_ms: 0, cpu_ms: 0, max_slice_cpu_ms: 0, slices: 0 };
let budget: DeepBudget | undefined;
let t0 = 0;
let result: { size_classes: object[]; unrooted?: object[]; unrooted_error?: string; skipped: { [k: string]: number } } | undefined;
let running = false;

function pagesize(): number {
  const [ok, v] = pcall(() => tonumber(ffi.C.ngx_pagesize));
  return ok && v !== undefined && v > 0 ? (v as number) : 4096;
}

/** Status of the current or last deep scan, with live progress while running. */
export function deepScanStatus(): ScanStatus {
  const s: ScanStatus = { ...status };
  if (running && budget) {
    s.bytes_scanned = progress.bytes;
    s.ms_total = budget.totalMs;
    s.max_slice_ms = budget.maxSliceMs;
    s.cpu_ms = budget.cpuTotalMs;
    s.max_slice_cpu_ms = budget.maxSliceCpuMs;
    s.slices = budget.slices;
    s.wall_ms = monoMs() - t0;
  }
  return s;
}

export function deepScanRunning(): boolean {
  return running;
}

let phaseT = 0;
let tracing = false;
/** Log each phase's duration at NOTICE (benchmarks and debugging). */
export function setTrace(on: boolean): void {
  tracing = on;
}
/** "after <step>" names, made once per worker: a string made inside a slice can cost a string table rehash */
const afterName = new LuaTable<string, string>();
function trace(what: string, ctx?: Ctx): void {
  let name = afterName.get(what);
  if (name === undefined) {
    name = `after ${what}`;
    afterName.set(what, name);
  }
  if (budget) budget.phase = name;
  if (ctx !== undefined) tickStep(ctx);
  if (!tracing) return;
  const now = monoMs();
  ngx.log(ngx.NOTICE, `memdiag deep: ${what} +${string.format("%.3f", now - phaseT)} ms, max slice ${string.format("%.3f", budget?.maxSliceMs ?? 0)} (cpu ${string.format("%.3f", budget?.maxSliceCpuMs ?? 0)}), cpu total ${string.format("%.3f", budget?.cpuTotalMs ?? 0)}`);
  phaseT = now;
}

function scanOnce(): void {
  t0 = monoMs();
  progress.bytes = 0;
  ngx.update_time();
  status = { state: "running", phase: "heap", started: ngx.now(), bytes_scanned: 0, heap_bytes: 0, ref_bytes: 0, ms_total: 0, wall_ms: 0, max_slice_ms: 0, cpu_ms: 0, max_slice_cpu_ms: 0, slices: 1 };
  const b = new DeepBudget(config.slice_ms);
  b.progress = progress;
  budget = b;
  const reads0 = Maps.reads;
  const [maps, merr] = Maps.self();
  if (!maps) error(merr ?? "cannot read /proc/self/maps");
  const ctx: Ctx = { maps, budget: b, skipped: {}, mapsEpoch: 0 };
  const ps = pagesize();

  phaseT = monoMs();
  const [regions] = heapRegions(ctx.maps, ctx);
  let arenaHeaps = 0;
  let arenaBytes = 0;
  let mmapped = 0;
  for (const r of regions) {
    if (r.kind === KIND_ARENA) {
      arenaHeaps++;
      arenaBytes += r.end - r.first;
    } else if (r.kind === KIND_MMAP) mmapped++;
  }
  trace("regions", ctx);
  const phases = { walk: 0, discover: 0, owners: 0 };
  let c0 = b.cpuSoFar();
  const walk = walkHeap(ctx, regions, ps, MAX_CANDIDATES);
  phases.walk = b.cpuSoFar() - c0;
  status.heap_bytes = walk.bytes;
  trace("heap walk", ctx);
  const out: NonNullable<typeof result> = { size_classes: sizeClassesJson(walk.classes), skipped: ctx.skipped };

  // the mapping list is read directly below (not only through checks): bring it up to date
  ctx.maps.ensureFresh();
  const [L, lerr] = currentLayout(ctx);
  if (L === undefined) {
    out.unrooted_error = lerr ?? "no struct layout";
  } else {
    status.phase = "pools";
    c0 = b.cpuSoFar();
    const rooted = rootedPoolSet(ctx, L);
    trace("rooted set", ctx);
    const pools = discoverPools(ctx, poolOffsets(L), walk.candidates, ps, rooted);
    trace("discover", ctx);
    phases.discover = b.cpuSoFar() - c0;
    status.pools_found = pools.length;
    let unrooted = 0;
    for (const p of pools) if (p.rooted === undefined) unrooted++;
    status.unrooted_pools = unrooted;

    status.phase = "owners";
    // the mapping list is read directly below (not only through checks): bring it up to date
  ctx.maps.ensureFresh();
    c0 = b.cpuSoFar();
    b.phase = "owners: confs";
    const confs = moduleConfsCached(ctx, L);
    trace("confs", ctx);
    b.phase = "owners: segments";
    const [segments, bss] = dataSegments(ctx.maps, moduleFilesCached(ctx, L));
    b.phase = "owners: regions";
    const [regions2, other] = heapRegions(ctx.maps, ctx);
    b.phase = "owners: lua regions";
    const lua = luaRegions(other, bss);
    trace("roots", ctx);
    const cycle = cycleAddr();
    const cycleLog = ctx.maps.readable(cycle, sizeOf(L, "ngx_cycle_t")) ? rdPtr(cycle + off(L, "ngx_cycle_t", "log")) : 0;
    const own = attributeOwners(ctx, { pools, regions: regions2, segments, lua, confs, cycleLog, late: { P: poolOffsets(L), pagesize: ps, rooted: () => rootedPoolSet(ctx, L) } }, trace);
    status.ref_bytes = own.refBytes;
    phases.owners = b.cpuSoFar() - c0;
    trace("owners", ctx);
    const groups = groupUnrooted(ctx, pools, own, cycleLog);
    trace("groups");
    while (groups.length > MAX_GROUPS) groups.pop();
    annotateCreationSites(groups as { [k: string]: unknown }[], b);
    out.unrooted = groups;
  }
  b.finish();
  ngx.update_time();
  status = {
    state: "done",
    started: status.started,
    finished: ngx.now(),
    bytes_scanned: progress.bytes,
    heap_bytes: status.heap_bytes,
    ref_bytes: status.ref_bytes,
    ms_total: b.totalMs,
    wall_ms: monoMs() - t0,
    max_slice_ms: b.maxSliceMs,
    cpu_ms: b.cpuTotalMs,
    max_slice_cpu_ms: b.maxSliceCpuMs,
    slices: b.slices,
    pools_found: status.pools_found,
    unrooted_pools: status.unrooted_pools,
    phase_cpu_ms: phases,
    max_slice_phase: b.maxSlicePhase,
    cpu_clock_jumps: b.clockJumps,
    diag_ms: b.diagMs,
    preempted_slices: b.preemptedSlices,
    max_preempted_slice_cpu_ms: b.maxPreemptedCpuMs,
    slow_preempted_slices: b.slowPreempted,
    jit_traces: arr(b.jitSites) as unknown as string[],
    slow_slice_sites: b.slowSites.length > 0 ? (arr(b.slowSites) as unknown as string[]) : undefined,
    arena_heaps: arenaHeaps,
    arena_bytes: arenaBytes,
    mmapped_chunks: mmapped,
    slow_slices: b.slowSlices,
    slice_cpu_p99_ms: b.sliceCpuQuantile(0.99),
    maps_reads: Maps.reads - reads0,
  };
  result = out;
}

/** periodic scans that keep failing: one line when it starts, one when it ends (util/episode.ts) */
const failEp = new Episode("memdiag: ", ["failed deep scan", "failed deep scans"]);

function runNow(): void {
  running = true;
  const [ok, err] = xpcall(scanOnce, debug.traceback);
  // the budget holds the GC inside slices: never leave it held, whatever happened
  releaseGc();
  Maps.onRead = undefined;
  stopScanDiagnostics();
  running = false;
  budget = undefined;
  if (!ok) {
    ngx.update_time();
    status = { ...status, state: "failed", finished: ngx.now(), error: tostring(err) };
    failEp.hit(ngx.ERR, firstLine(tostring(err)), `deep scan failed: ${err}`);
  } else failEp.end(ngx.NOTICE, "deep scans work again");
}

function job(this: void, premature: boolean): void {
  if (premature || ngx.worker.exiting()) {
    running = false;
    return;
  }
  runNow();
}

/**
 * Start a deep scan in this worker on a timer (returns at once). The websocket
 * push's "deep" command calls this. false + reason when one is already running.
 */
export function runDeepScan(): LuaMultiReturn<[boolean, string | undefined]> {
  if (running) return $multi(false, "a deep scan is already running in this worker");
  running = true;
  status = { ...status, state: "running", phase: "queued" };
  const [ok, err] = ngx.timer.at(0, job);
  if (!ok) {
    running = false;
    return $multi(false, `cannot start deep scan: ${err}`);
  }
  return $multi(true, undefined);
}

/** Wait (yielding) until no deep scan runs in this worker, at most timeoutS seconds. */
export function waitDeepScan(timeoutS: number): boolean {
  const deadline = monoMs() + timeoutS * 1000;
  while (running && monoMs() < deadline) ngx.sleep(0.01);
  return !running;
}

/** Merge the deep scan's status and last result into a snapshot under construction. */
export function mergeDeepScan(snap: { [k: string]: unknown }): void {
  snap.scan = deepScanStatus();
  if (result === undefined) return;
  const glibc = snap.glibc as { [k: string]: unknown } | undefined;
  if (glibc !== undefined) glibc.size_classes = arr(result.size_classes);
  const pools = snap.pools as { [k: string]: unknown } | undefined;
  if (pools !== undefined && result.unrooted !== undefined) pools.unrooted = arr(result.unrooted);
  const skipped = snap.skipped as { [k: string]: number } | undefined;
  if (skipped !== undefined) {
    for (const [k, v] of pairs(result.skipped)) skipped[`deep_${k}`] = v;
  }
}

function periodic(this: void, premature: boolean): void {
  if (premature || ngx.worker.exiting()) return;
  if (!running) runNow();
  if (ngx.worker.exiting()) return;
  const [ok, err] = ngx.timer.at(config.deep_interval_s, periodic);
  if (!ok) ngx.log(ngx.ERR, "memdiag: cannot schedule the next deep scan: ", err);
}

/** Periodic deep scans when config.deep_interval_s > 0 (off by default). */
export function scheduleDeepScans(): void {
  if (config.deep_interval_s <= 0) return;
  const [ok, err] = ngx.timer.at(config.deep_interval_s, periodic);
  if (!ok) ngx.log(ngx.ERR, "memdiag: cannot schedule deep scans: ", err);
}

noJit(scanOnce);
