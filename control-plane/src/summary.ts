/**
 * Flatten one snapshot into metric name → number (what charts, diffs, trends and
 * /metrics work on). Names:
 *   system.<field>                          rss_bytes, anon_bytes, …, explained_ratio
 *   region.<class>[.<name>]                 bytes; .rss_bytes and .mappings beside it (<name> only for
 *                                           shm zones: code and file mappings are summed per class)
 *   glibc.<field>                           arena_bytes, mmap_bytes, mmap_chunks, in_use_bytes, …
 *   luajit.gc_bytes, luajit.gc_floor_bytes      the heap now; what survived the latest collections
 *   lua.type.<type>.{bytes,count}           the latest Lua heap census (lua-series.ts)
 *   lua.table.<path>.{bytes,keys}           its largest tables by reference path
 *   shm.<name>.{size_bytes,used_bytes,free_bytes}
 *   pool.<kind>.{pools,blocks,block_bytes,used_bytes,large_blocks,large_bytes,bytes}   rooted groups
 *   pool.connections.{active,connection_n}
 *   pool.unrooted.<signature>.{pools,bytes,block_bytes,large_blocks,large_bytes}        deep scan only
 *   pool.unrooted_owner.<owner>.{pools,bytes,large_blocks}   all groups of one owner   deep scan only
 *   pool.unrooted_total.{pools,bytes,groups}                                            deep scan only
 *   size_class.<min_bytes>.{chunks,bytes,in_use_chunks,in_use_bytes}                   deep scan only
 *   size_class_total.{chunks,bytes}                                                     deep scan only
 *   glibc.thread_arena_{heaps,bytes}        glibc thread-arena heaps the last deep scan walked
 *   agent.{collect_ms,max_slice_ms,skipped}
 * Names carrying a user string (region name, shm name, signature) are parsed from
 * the end: the suffix set is fixed.
 */

import { putLuaCensus } from "./lua-series";

export interface UnrootedInfo {
  owner: string;
  retainer: string;
  create_size?: number;
  cleanups: string[];
  /** the C call path that created the group's first pool, innermost first (sampler armed while it was made) */
  created_at?: string[];
}

export interface Summary {
  metrics: Record<string, number>;
  /** per unrooted signature: who holds it (for labels and evidence) */
  unrooted: Record<string, UnrootedInfo>;
  /** the snapshot carries deep-scan data (pools.unrooted or glibc.size_classes) */
  deep: boolean;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

export const SYSTEM_FIELDS = ["rss_bytes", "anon_bytes", "file_bytes", "shmem_bytes", "vm_data_bytes", "swap_bytes", "explained_ratio"];
export const GLIBC_FIELDS = ["arena_bytes", "mmap_bytes", "mmap_chunks", "in_use_bytes", "free_bytes", "top_releasable_bytes"];
const POOL_FIELDS = ["pools", "blocks", "block_bytes", "used_bytes", "large_blocks", "large_bytes"];

export function summarize(s: Obj): Summary {
  const m: Record<string, number> = {};
  const put = (k: string, v: unknown): void => {
    const n = num(v);
    if (n !== undefined) m[k] = (m[k] ?? 0) + n;
  };
  const unrooted: Record<string, UnrootedInfo> = {};
  let deep = false;

  const sys = isObj(s.system) ? s.system : {};
  for (const f of SYSTEM_FIELDS) put(`system.${f}`, sys[f]);
  if (Array.isArray(sys.regions)) {
    for (const r of sys.regions) {
      if (!isObj(r) || typeof r.class !== "string") continue;
      const k = r.class === "shm_zone" && typeof r.name === "string" && r.name !== "" ? `region.${r.class}.${r.name}` : `region.${r.class}`;
      put(k, r.bytes);
      put(`${k}.rss_bytes`, r.rss_bytes);
      put(`${k}.mappings`, r.mappings);
    }
  }

  const g = isObj(s.glibc) ? s.glibc : {};
  for (const f of GLIBC_FIELDS) put(`glibc.${f}`, g[f]);
  if (Array.isArray(g.size_classes)) {
    deep = true;
    m["size_class_total.chunks"] = 0;
    m["size_class_total.bytes"] = 0;
    for (const c of g.size_classes) {
      if (!isObj(c)) continue;
      const k = `size_class.${c.min_bytes}`;
      put(`${k}.chunks`, c.chunks);
      put(`${k}.bytes`, c.bytes);
      put(`${k}.in_use_chunks`, c.in_use_chunks);
      put(`${k}.in_use_bytes`, c.in_use_bytes);
      put("size_class_total.chunks", c.chunks);
      put("size_class_total.bytes", c.bytes);
    }
  }

  if (isObj(s.luajit)) {
    put("luajit.gc_bytes", s.luajit.gc_bytes);
    put("luajit.gc_floor_bytes", s.luajit.gc_floor_bytes);
  }
  putLuaCensus(s.lua, put);

  if (Array.isArray(s.shm)) {
    for (const z of s.shm) {
      if (!isObj(z) || typeof z.name !== "string") continue;
      put(`shm.${z.name}.size_bytes`, z.size_bytes);
      put(`shm.${z.name}.used_bytes`, z.used_bytes);
      put(`shm.${z.name}.free_bytes`, z.free_bytes);
    }
  }

  const p = isObj(s.pools) ? s.pools : {};
  if (Array.isArray(p.groups)) {
    for (const gr of p.groups) {
      if (!isObj(gr) || typeof gr.kind !== "string") continue;
      for (const f of POOL_FIELDS) put(`pool.${gr.kind}.${f}`, gr[f]);
      put(`pool.${gr.kind}.bytes`, (num(gr.block_bytes) ?? 0) + (num(gr.large_bytes) ?? 0));
    }
  }
  if (isObj(p.connections)) {
    put("pool.connections.active", p.connections.active);
    put("pool.connections.connection_n", p.connections.connection_n);
  }
  if (Array.isArray(p.unrooted)) {
    deep = true;
    m["pool.unrooted_total.pools"] = 0;
    m["pool.unrooted_total.bytes"] = 0;
    m["pool.unrooted_total.groups"] = 0;
    for (const u of p.unrooted) {
      if (!isObj(u) || typeof u.signature !== "string") continue;
      const k = `pool.unrooted.${u.signature}`;
      const bytes = (num(u.block_bytes) ?? 0) + (num(u.large_bytes) ?? 0);
      put(`${k}.pools`, u.pools);
      put(`${k}.bytes`, bytes);
      put(`${k}.block_bytes`, u.block_bytes);
      put(`${k}.large_blocks`, u.large_blocks);
      put(`${k}.large_bytes`, u.large_bytes);
      const owner = typeof u.owner === "string" ? u.owner : "unknown";
      // per owner: stable even when the agent splits one kind of pool into several signatures
      put(`pool.unrooted_owner.${owner}.pools`, u.pools);
      put(`pool.unrooted_owner.${owner}.bytes`, bytes);
      put(`pool.unrooted_owner.${owner}.large_blocks`, u.large_blocks);
      put("pool.unrooted_total.pools", u.pools);
      put("pool.unrooted_total.bytes", bytes);
      m["pool.unrooted_total.groups"]++;
      const cleanups = Array.isArray(u.cleanups)
        ? u.cleanups.filter(isObj).map((c) => String(c.handler))
        : [];
      unrooted[u.signature] = {
        owner,
        retainer: typeof u.retainer === "string" ? u.retainer : "",
        create_size: num(u.create_size),
        cleanups,
        ...(Array.isArray(u.created_at) && u.created_at.length ? { created_at: u.created_at.map(String) } : {}),
      };
    }
  }

  if (isObj(s.scan)) {
    put("glibc.thread_arena_heaps", s.scan.arena_heaps);
    put("glibc.thread_arena_bytes", s.scan.arena_bytes);
  }

  put("agent.collect_ms", s.collect_ms);
  put("agent.max_slice_ms", s.max_slice_ms);
  if (isObj(s.skipped)) {
    let n = 0;
    for (const v of Object.values(s.skipped)) n += num(v) ?? 0;
    m["agent.skipped"] = n;
  }
  return { metrics: m, unrooted, deep };
}

/** True for metric names that only deep-scan snapshots carry. */
export function isDeepMetric(name: string): boolean {
  return name.startsWith("pool.unrooted.") || name.startsWith("pool.unrooted_owner.") || name.startsWith("pool.unrooted_total.") || name.startsWith("size_class.") || name.startsWith("size_class_total.");
}

/** Split "<prefix><middle>.<suffix>" where suffix is one of `suffixes`; undefined when it does not fit. */
export function splitSuffix(name: string, prefix: string, suffixes: readonly string[]): { middle: string; suffix: string } | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  for (const suf of suffixes) {
    if (rest.endsWith("." + suf) && rest.length > suf.length + 1) return { middle: rest.slice(0, -suf.length - 1), suffix: suf };
  }
  return undefined;
}

export const UNROOTED_SUFFIXES = ["pools", "bytes", "block_bytes", "large_blocks", "large_bytes"] as const;
export const OWNER_SUFFIXES = ["pools", "bytes", "large_blocks"] as const;
export const SIZE_CLASS_SUFFIXES = ["chunks", "bytes", "in_use_chunks", "in_use_bytes"] as const;
export const SHM_SUFFIXES = ["size_bytes", "used_bytes", "free_bytes"] as const;
export const REGION_SUFFIXES = ["rss_bytes", "mappings"] as const;
