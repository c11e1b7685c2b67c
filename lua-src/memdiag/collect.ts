import { Ctx, refreshMaps, tick, tickStep } from "./base/context";
import { Maps } from "./safe/maps";
import { Budget } from "./base/slice";
import { monoMs } from "./base/clock";
import { arr, NULL } from "./base/json";
import { readStatus } from "./layers/system/status";
import { addLuajitRegions, collectRegions, regionsMs } from "./layers/system/regions";
import { collectGlibc } from "./layers/glibc/mallinfo";
import { collectLuajit } from "./layers/luajit/gc";
import { collectShm } from "./layers/shm/zones";
import { collectRootedPools } from "./layers/pools/rooted-jit";
import { currentLayout } from "./nginx/select";
import { config } from "./base/config";
import { identity } from "./nginx/identity";
import { AGENT_VERSION, SCHEMA_VERSION } from "./contract/version";
import { mergeDeepScan } from "./deep/scan";
import { jitLib } from "./base/nojit";
import { collectLua } from "./layers/luavm/section";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

let seq = 0;

/** the last region classification, reused until config.regions_every_s has passed (its cost: regionsMs()) */
const REG: { regions?: object[]; explained: number; at: number } = { explained: 0, at: 0 };

/**
 * One snapshot of this worker, top-down: system → allocator → LuaJIT → shm → pools.
 * Runs in slices (yields between them) when `canYield`; the result is a plain table
 * ready for JSON. `full`: the address space is classified now whatever its age.
 */
export function collectSnapshot(canYield: boolean, full = false): { [k: string]: unknown } {
  const t0 = monoMs();
  const budget = new Budget(config.slice_ms, canYield);
  const [maps] = Maps.self();
  const ctx: Ctx = { maps: maps ?? Maps.parse(""), budget, skipped: {}, mapsEpoch: 0 };
  if (!maps) ctx.skipped["maps_unreadable"] = 1;

  // Each layer starts with work that has no budget check inside (the cycle pool's walk, the
  // listeners, the first smaps read: 0.05-0.7 ms each under paced load, traced), so each starts
  // a fresh slice unless most of the current one is left (tickStep); a plain check let a layer
  // begin at 0.9 ms into a slice and end it at 1.6.
  const status = readStatus();
  const glibc = collectGlibc();
  const luajit = collectLuajit();
  tick(ctx);

  const [layout, layoutError] = currentLayout(ctx);
  tickStep(ctx);
  const zones = collectShm(ctx, layout);
  tickStep(ctx);
  if (ctx.mapsEpoch !== budget.epoch) refreshMaps(ctx);
  const pools = collectRootedPools(ctx, layout, layoutError);
  const rss = status?.rss_bytes ?? 0;
  // Measured under proxied load, the classification was ~1.3 ms of a ~3.3 ms collection; the
  // address space's split moves over minutes, RSS itself (status, every time) over seconds.
  if (full || REG.regions === undefined || monoMs() - REG.at >= config.regions_every_s * 1000) {
    tickStep(ctx);
    if (ctx.mapsEpoch !== budget.epoch) refreshMaps(ctx);
    const [regions, explained] = collectRegions(ctx, zones, rss);
    REG.regions = arr(regions);
    REG.explained = explained;
    REG.at = monoMs();
  }
  addLuajitRegions(luajit);

  const shm = arr(
    zones.map((z) => ({
      name: z.name, size_bytes: z.size_bytes, used_bytes: z.used_bytes, free_bytes: z.free_bytes, owner: z.owner, error: z.error,
      slab: z.slab && { ...z.slab, classes: arr(z.slab.classes) }, slab_error: z.slab_error, dict: z.dict,
    })),
  );

  // the snapshot's tables and its encode (0.1-0.3 ms) follow this slice without a check
  tickStep(ctx);
  budget.finish();
  seq++;
  ngx.update_time();
  const id = identity();
  const snap: { [k: string]: unknown } = {
    schema: SCHEMA_VERSION,
    pid: ngx.worker.pid(),
    host: id.host,
    instance: id.instance,
    worker_id: ngx.worker.id() ?? -1,
    worker_start: id.worker_start,
    generation: id.generation,
    nginx_version: id.nginx_version,
    agent_version: AGENT_VERSION,
    layout: layout ? layout.id : NULL,
    layout_error: layout ? undefined : layoutError,
    seq,
    time: ngx.now(),
    collect_ms: budget.totalMs,
    wall_ms: monoMs() - t0,
    slices: budget.slices,
    max_slice_ms: budget.maxSliceMs,
    max_slice_cpu_ms: budget.maxSliceCpuMs,
    system: {
      rss_bytes: rss,
      anon_bytes: status?.anon_bytes ?? 0,
      file_bytes: status?.file_bytes ?? 0,
      shmem_bytes: status?.shmem_bytes ?? 0,
      vm_data_bytes: status?.vm_data_bytes ?? 0,
      swap_bytes: status?.swap_bytes ?? 0,
      regions: REG.regions,
      explained_ratio: REG.explained,
      regions_ms: regionsMs(),
      regions_age_s: math.floor((monoMs() - REG.at) / 100) / 10,
    },
    glibc,
    luajit,
    lua: collectLua(),
    shm,
    pools,
    skipped: ctx.skipped,
  };
  mergeDeepScan(snap);
  return snap;
}
