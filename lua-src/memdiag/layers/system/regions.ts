import { Ctx, refreshMaps, skip } from "../../base/context";
import { Mapping } from "../../safe/maps";
import { readSelfSmaps, UNREADABLE } from "./smaps";
import { residentBytes } from "./resident";
import { checkedMem, VANISHED } from "../../safe/probe";
import { ShmZone } from "../shm/zones";
import { cpuMs, monoMs } from "../../base/clock";
import { locateLuajit, LjLocate } from "../luajit/alloc";
import { gcRunning, holdGc, releaseGc } from "../luajit/gc-hold";
import { jitLib } from "../../base/nojit";
import { ClassifyResult, KnownRange, Mem, Region, TICK_EVERY, classify } from "./classify";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

/**
 * The regions layer as the agent collects it: reads /proc/self/smaps (reusing an expensive read
 * for a few collections), holds the Lua collector while it reads LuaJIT's memory, and hands the
 * mappings to the classifier (classify.ts), in slices.
 */

/** what one read of smaps (SMAPS_CHUNK, layers/system/smaps.ts) may cost under load (a whole read takes several; docs/design-figures.md) */
const SMAPS_READ_MS = 0.4;

export interface RegionsInfo {
  luajit_bytes: number;
  luajit_rss_bytes?: number;
  luajit_method: string;
  luajit_error?: string;
  smaps_ms: number;
  classify_ms: number;
  /** time this collection of regions held the worker (wall, yields excluded) */
  active_ms: number;
  /** thread CPU time of it (yields excluded): what it costs, unaffected by a busy host */
  cpu_ms: number;
  /** mappings whose Rss came from mincore (changed since the smaps read, or anonymous with a reused read) */
  changed: number;
  /** false when the last smaps read was reused (see SMAPS_TARGET_MS) */
  smaps_read: boolean;
}

let lastInfo: RegionsInfo | undefined;

/** Details of the last collection (LuaJIT locate method, timings), for the luajit layer and benchmarks. */
export function lastRegionsInfo(): RegionsInfo | undefined {
  return lastInfo;
}

export const REGIONS_TOP_N = 12;

/**
 * Adds what the classification found about the LuaJIT allocator to the luajit layer (schema:
 * luajit.regions_bytes, regions_rss_bytes, regions_method, regions_error; all optional).
 */
export function addLuajitRegions(luajit: { [k: string]: unknown }): void {
  const i = lastInfo;
  if (i === undefined) return;
  luajit.regions_bytes = i.luajit_bytes;
  luajit.regions_rss_bytes = i.luajit_rss_bytes;
  luajit.regions_method = i.luajit_method;
  luajit.regions_error = i.luajit_error;
}

/** system.regions_ms: worker CPU time of the last region classification, yields excluded (schema: optional). */
export function regionsMs(): number | undefined {
  return lastInfo?.cpu_ms;
}

/**
 * smaps is read and parsed with the GC running (layers/system/smaps.ts: next to no garbage). Then the
 * LuaJIT GC is stopped while chunk headers and allocator state are read: it frees big objects and
 * empty segments with munmap at any allocation of ours, so memory that /proc/self/maps showed
 * readable a moment ago could be gone. Maps are re-read after stopping it, and again after every
 * yield (the GC runs during yields). Garbage made while it is stopped: a maps read or two (the
 * text and the lines not seen before) and the classification's own tables. Held and released
 * with layers/luajit/gc-hold.ts, which gives the collector back at the pace it had.
 */
/**
 * The kernel builds smaps by walking every page table: ~4-10 µs per mapping (0.4-1 ms for an idle
 * worker's ~110 mappings, 7-10 ms at 1,000+). To keep the average under SMAPS_TARGET_MS (CPU) per
 * collection, an expensive read is reused for the next N-1 collections (N = cost / target, at
 * most SMAPS_MAX_EVERY). In between, private anonymous mappings (heaps, LuaJIT, stacks: the ones
 * that move) get their resident bytes from mincore, and file/shared mappings keep the cached Rss.
 */
const SMAPS_TARGET_MS = 1;
const SMAPS_MAX_EVERY = 10;
let smapsCache: { rss: LuaTable<number, number>; ends: LuaTable<number, number> } | undefined;
let smapsSkip = 0;

function privateAnon(m: Mapping): boolean {
  return m.inode === 0 && string.byte(m.perms, 4) === 112 && (m.path === "" || string.sub(m.path, 1, 6) === "[anon:" || m.path === "[heap]" || m.path === "[stack]");
}

export function collectRegions(ctx: Ctx, zones: ShmZone[], rss: number): LuaMultiReturn<[Region[], number]> {
  const t0 = monoMs();
  const c0 = cpuMs();
  let yieldedMs = 0; // wall time spent away in yields: not our cost
  let yieldedCpu = 0; // thread CPU time of whatever ran during our yields
  // budget.check() rather than tick(): tick re-reads maps after every yield, which we only need
  // (once, with the GC stopped) when we are about to read memory. With 1,000+ mappings a maps read
  // costs more than a slice, and re-reading after every yield would turn each slice into one step.
  const tickTimed = (aheadMs = 0): boolean => {
    // the thread CPU clock is a system call (~1 µs here): read only around a yield
    if (!ctx.budget.due(aheadMs)) return false;
    const a = monoMs();
    const ac = cpuMs();
    ctx.budget.reserve(aheadMs);
    yieldedMs += monoMs() - a;
    yieldedCpu += cpuMs() - ac;
    return true;
  };
  const reuse = smapsCache !== undefined && smapsSkip > 0;
  if (reuse) {
    smapsSkip--;
  } else {
    // each read makes the kernel walk the page tables of the mappings it covers: it starts a
    // slice with room; the records it brought are parsed before the next read
    tickTimed(SMAPS_READ_MS);
    const got = readSelfSmaps(() => {
      tickTimed(SMAPS_READ_MS);
    });
    if (typeof got === "string") {
      skip(ctx, got === UNREADABLE ? "smaps_unreadable" : "smaps_unparsable");
      smapsCache = undefined;
    } else {
      smapsCache = got;
      const cost = cpuMs() - c0 - yieldedCpu;
      smapsSkip = Math.min(SMAPS_MAX_EVERY, Math.ceil(cost / SMAPS_TARGET_MS)) - 1;
    }
  }
  const tSmaps = monoMs() - t0;
  tickTimed(); // a slice boundary before the GC-stopped part

  const gcWasRunning = gcRunning();
  let changed = 0;
  // After a yield the maps must be re-read before memory is read again. That read costs more than a
  // slice once there are ~1,000 mappings; yielding again right after it would make every slice one
  // refresh and no progress. So after a refresh, work at least as long as the refresh took.
  let refreshCost = 0;
  let refreshedAt = 0;
  const checked = checkedMem(() => ctx.maps);
  const refresh = (): void => {
    const a = monoMs();
    checked.reset();
    refreshMaps(ctx);
    refreshedAt = monoMs();
    refreshCost = refreshedAt - a;
  };
  const onTick = (): void => {
    if (monoMs() - refreshedAt < refreshCost) return;
    if (!gcWasRunning) {
      if (tickTimed()) refresh();
      return;
    }
    // The GC is released only for a yield: released, the next allocation of ours may run a GC
    // step that sweeps (and munmaps) a big string or table, and the mappings read before would
    // be stale with no yield to say so (seen: a SIGSEGV at the start of a LuaJIT direct chunk
    // the sweep had just unmapped).
    if (!ctx.budget.due()) return;
    releaseGc();
    tickTimed();
    holdGc();
    refresh(); // others ran (and the GC) during the yield
  };
  // Header reads go through checkedMem: a mapping can still vanish under a read (another
  // thread's munmap, our own table growth moving a LuaJIT direct chunk), and then the read
  // fails instead of faulting. The classification is redone once on fresh maps; a second
  // failure gives the mappings' classes without reading memory (blind), never no snapshot.
  const blind: Mem = { readable: () => false, u64: () => error(VANISHED, 0) };
  const attempt = (mem: Mem): { res: ClassifyResult; lj: LjLocate } => {
    refresh();
    changed = 0;
    // Classify the mappings as they are now (GC stopped). smaps gave Rss a moment (or a few
    // collections) earlier: used for every mapping that is still the same; one that changed
    // meanwhile (the GC unmapped a chunk, the allocator grew a segment), and with a reused read
    // every private anonymous one, gets its resident bytes from mincore instead.
    const fresh = ctx.maps.list;
    let rssNow: LuaTable<number, number> | undefined;
    const cache = smapsCache;
    if (cache !== undefined) {
      rssNow = new LuaTable<number, number>();
      for (let i = 0; i < fresh.length; i++) {
        const m = fresh[i];
        const r = cache.rss.get(m.start);
        if (r !== undefined && cache.ends.get(m.start) === m.end && !(reuse && privateAnon(m))) rssNow.set(m.start, r);
        else {
          rssNow.set(m.start, residentBytes(m.start, m.end - m.start, onTick) ?? 0);
          changed++;
        }
        if (i % TICK_EVERY === TICK_EVERY - 1) onTick();
      }
    }
    const lj = locateLuajit(mem, ctx.maps.list);
    const known: KnownRange[] = [];
    for (const x of lj.ranges) known.push({ start: x.start, end: x.end, cls: "luajit" });
    const res = classify({
      list: fresh,
      rss: rssNow,
      mem,
      zones,
      known,
      resident: (a, len) => residentBytes(a, len, onTick),
      tick: onTick,
      topN: REGIONS_TOP_N,
      rssTotal: rss,
    });
    return { res, lj };
  };
  if (gcWasRunning) holdGc();
  let out: { res: ClassifyResult; lj: LjLocate } | undefined;
  let failure: unknown;
  for (const mem of [checked, checked, blind]) {
    const [ok, v] = pcall(attempt, mem);
    if (ok) {
      out = v as { res: ClassifyResult; lj: LjLocate };
      break;
    }
    failure = v;
    if (v !== VANISHED) break;
    skip(ctx, "regions_memory_vanished");
  }
  releaseGc();
  if (out === undefined) error(failure as string, 0);
  const { res, lj } = out;
  const ljt = res.byClass["luajit"];
  lastInfo = {
    luajit_bytes: ljt.bytes,
    luajit_rss_bytes: ljt.rss,
    luajit_method: lj.method,
    luajit_error: lj.error,
    smaps_ms: tSmaps,
    classify_ms: monoMs() - t0 - tSmaps,
    active_ms: monoMs() - t0 - yieldedMs,
    cpu_ms: cpuMs() - c0 - yieldedCpu,
    changed,
    smaps_read: !reuse,
  };
  return $multi(res.regions, res.explained);
}
