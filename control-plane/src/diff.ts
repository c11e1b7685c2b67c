/**
 * Diffs: which rows changed between two states (a snapshot, or a whole instance
 * summed over its workers at a point in time), per layer, pool group and size
 * class, in bytes and counts, sorted by growth (largest increase first).
 */
import { DiffRow } from "./protocol";
import { luaRowLabel, luaSlot } from "./lua-series";
import { UnrootedInfo, isDeepMetric, splitSuffix, UNROOTED_SUFFIXES, SIZE_CLASS_SUFFIXES, SHM_SUFFIXES, REGION_SUFFIXES } from "./summary";
import { classMax, fmtRange } from "./format";

/** what a diff side is made of: flattened metrics (summed when several workers) and unrooted-group owners */
export interface State {
  metrics: Record<string, number>;
  unrooted: Record<string, UnrootedInfo>;
  deep: boolean;
}

type Section = DiffRow["section"];
interface Slot {
  row: string;
  section: Section;
  role: "bytes" | "count";
}

const SYSTEM_LABEL: Record<string, string> = {
  rss_bytes: "RSS", anon_bytes: "anonymous memory", file_bytes: "file-backed memory", shmem_bytes: "shared memory",
  vm_data_bytes: "VmData", swap_bytes: "swap",
};
const GLIBC_LABEL: Record<string, string> = {
  arena_bytes: "glibc arena", mmap_bytes: "glibc mmapped chunks", in_use_bytes: "glibc in use", free_bytes: "glibc free",
  top_releasable_bytes: "glibc releasable top",
};
const REGION_LABEL: Record<string, string> = {
  glibc_heap: "glibc heap", luajit: "LuaJIT", shm_zone: "shm zone", code: "code", file: "file", stack: "stack", other_anon: "other anonymous",
};

/** which diff row a metric feeds, and whether as its bytes or its count; undefined for metrics that are no row */
export function slotOf(name: string): Slot | undefined {
  const dot = name.indexOf(".");
  const head = dot < 0 ? name : name.slice(0, dot);
  const rest = name.slice(dot + 1);
  switch (head) {
    case "system":
      return SYSTEM_LABEL[rest] ? { row: name, section: "system", role: "bytes" } : undefined;
    case "region": {
      const s = splitSuffix(name, "region.", REGION_SUFFIXES);
      if (s) return s.suffix === "mappings" ? { row: `region.${s.middle}`, section: "region", role: "count" } : undefined;
      return { row: name, section: "region", role: "bytes" };
    }
    case "glibc":
      if (rest === "mmap_chunks") return { row: "glibc.mmap_bytes", section: "glibc", role: "count" };
      return GLIBC_LABEL[rest] ? { row: name, section: "glibc", role: "bytes" } : undefined;
    case "luajit":
      return rest === "gc_bytes" || rest === "gc_floor_bytes" ? { row: name, section: "luajit", role: "bytes" } : undefined;
    case "shm": {
      const s = splitSuffix(name, "shm.", SHM_SUFFIXES);
      return s && s.suffix === "used_bytes" ? { row: `shm.${s.middle}`, section: "shm", role: "bytes" } : undefined;
    }
    case "pool": {
      if (rest.startsWith("unrooted.")) {
        const s = splitSuffix(name, "pool.unrooted.", UNROOTED_SUFFIXES);
        if (!s) return undefined;
        const row = `pool.unrooted.${s.middle}`;
        if (s.suffix === "bytes") return { row, section: "pool", role: "bytes" };
        if (s.suffix === "pools") return { row, section: "pool", role: "count" };
        return undefined;
      }
      const m = /^pool\.(cycle|connection|request)\.(bytes|pools)$/.exec(name);
      if (!m) return undefined;
      return { row: `pool.${m[1]}`, section: "pool", role: m[2] === "bytes" ? "bytes" : "count" };
    }
    case "size_class": {
      const s = splitSuffix(name, "size_class.", SIZE_CLASS_SUFFIXES);
      if (!s) return undefined;
      if (s.suffix === "bytes") return { row: `size_class.${s.middle}`, section: "size_class", role: "bytes" };
      if (s.suffix === "chunks") return { row: `size_class.${s.middle}`, section: "size_class", role: "count" };
      return undefined;
    }
    case "lua": {
      const l = luaSlot(name);
      return l ? { ...l, section: "luajit" } : undefined;
    }
    default:
      return undefined;
  }
}

/** a human label for a diff row key */
export function rowLabel(row: string, unrooted: Record<string, UnrootedInfo> = {}): string {
  if (row.startsWith("system.")) return SYSTEM_LABEL[row.slice(7)] ?? row;
  if (row.startsWith("glibc.")) return GLIBC_LABEL[row.slice(6)] ?? row;
  if (row === "luajit.gc_bytes") return "LuaJIT GC heap";
  if (row === "luajit.gc_floor_bytes") return "LuaJIT heap after collection";
  const lua = luaRowLabel(row);
  if (lua !== undefined) return lua;
  if (row.startsWith("shm.")) return `shm zone ${row.slice(4)} used`;
  if (row.startsWith("region.")) {
    const rest = row.slice(7);
    const i = rest.indexOf(".");
    const cls = i < 0 ? rest : rest.slice(0, i);
    const name = i < 0 ? "" : rest.slice(i + 1);
    return `${REGION_LABEL[cls] ?? cls}${name ? " " + name : ""}`;
  }
  if (row.startsWith("pool.unrooted.")) {
    const sig = row.slice(14);
    const info = unrooted[sig];
    return info ? `unrooted pools held by ${info.owner}` : `unrooted pools ${sig}`;
  }
  if (row.startsWith("pool.")) return `${row.slice(5)} pools`;
  if (row.startsWith("size_class.")) {
    const min = Number(row.slice(11));
    return `${fmtRange(min, classMax(min))} chunks`;
  }
  return row;
}

/** rows from a to b; deep-scan rows only when both sides carry deep-scan data */
export function diffStates(a: State, b: State): DiffRow[] {
  const withDeep = a.deep && b.deep;
  const rows = new Map<string, DiffRow>();
  const take = (name: string, side: "a" | "b", v: number): void => {
    if (!withDeep && isDeepMetric(name)) return;
    const slot = slotOf(name);
    if (!slot) return;
    let r = rows.get(slot.row);
    if (!r) {
      r = { key: slot.row, label: "", section: slot.section, a_bytes: 0, b_bytes: 0, delta_bytes: 0, delta_ratio: null };
      rows.set(slot.row, r);
    }
    if (slot.role === "bytes") {
      if (side === "a") r.a_bytes += v;
      else r.b_bytes += v;
    } else if (side === "a") r.a_count = (r.a_count ?? 0) + v;
    else r.b_count = (r.b_count ?? 0) + v;
  };
  for (const k in a.metrics) take(k, "a", a.metrics[k]);
  for (const k in b.metrics) take(k, "b", b.metrics[k]);
  const owners = { ...a.unrooted, ...b.unrooted };
  const out: DiffRow[] = [];
  for (const r of rows.values()) {
    r.label = rowLabel(r.key, owners);
    r.delta_bytes = r.b_bytes - r.a_bytes;
    r.delta_ratio = r.a_bytes === 0 ? null : r.delta_bytes / r.a_bytes;
    if (r.a_count !== undefined || r.b_count !== undefined) {
      r.a_count ??= 0;
      r.b_count ??= 0;
      r.delta_count = r.b_count - r.a_count;
    }
    if (r.a_bytes === 0 && r.b_bytes === 0 && !r.a_count && !r.b_count) continue;
    out.push(r);
  }
  out.sort((x, y) => y.delta_bytes - x.delta_bytes || Math.abs(y.delta_count ?? 0) - Math.abs(x.delta_count ?? 0) || (x.key < y.key ? -1 : 1));
  return out;
}

/** sum several workers' states into one (an instance at a point in time) */
export function sumStates(states: readonly State[]): State {
  const metrics: Record<string, number> = {};
  const unrooted: Record<string, UnrootedInfo> = {};
  let deep = false;
  for (const s of states) {
    for (const k in s.metrics) {
      if (k === "system.explained_ratio") continue; // a ratio does not add up
      metrics[k] = (metrics[k] ?? 0) + s.metrics[k];
    }
    Object.assign(unrooted, s.unrooted);
    deep ||= s.deep;
  }
  return { metrics, unrooted, deep };
}

/** a worker at time t: its latest snapshot, with the deep-scan part taken from its latest deep snapshot */
export function overlayDeep(base: State, deepSnap: State | undefined): State {
  if (base.deep || !deepSnap) return base;
  const metrics: Record<string, number> = {};
  for (const k in base.metrics) if (!isDeepMetric(k)) metrics[k] = base.metrics[k];
  for (const k in deepSnap.metrics) if (isDeepMetric(k)) metrics[k] = deepSnap.metrics[k];
  return { metrics, unrooted: deepSnap.unrooted, deep: true };
}
