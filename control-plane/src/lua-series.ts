/**
 * Lua land as series: a census (snapshot lua.census, agent luavm/census.ts) becomes
 *   lua.type.<type>.{bytes,count}       live objects of each GC type
 *   lua.table.<path>.{bytes,keys}       each of the largest tables by its reference path:
 *                                       bytes reached first through it (itself included), keys
 * so a table path whose keys or bytes keep growing is a suspect like any other series, and a
 * diff between two censuses lists the paths that grew. Paths carry any characters: names are
 * parsed from the end (the suffix set is fixed). Snapshots carry the latest census until the
 * next, so a series steps at each census.
 */
import { splitSuffix } from "./summary";

export const LUA_TABLE_SUFFIXES = ["bytes", "keys"] as const;
export const LUA_TYPE_SUFFIXES = ["bytes", "count"] as const;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** the census's metrics, through the summary's `put` */
export function putLuaCensus(lua: unknown, put: (k: string, v: unknown) => void): void {
  if (!isObj(lua) || !isObj(lua.census) || lua.census.ok !== true) return;
  const c = lua.census;
  if (Array.isArray(c.types)) {
    for (const t of c.types) {
      if (!isObj(t) || typeof t.type !== "string") continue;
      put(`lua.type.${t.type}.bytes`, t.bytes);
      put(`lua.type.${t.type}.count`, t.count);
    }
  }
  if (isObj(c.holders) && Array.isArray(c.holders.tables)) {
    for (const t of c.holders.tables) {
      if (!isObj(t) || typeof t.path !== "string" || t.path === "") continue;
      put(`lua.table.${t.path}.bytes`, t.reached_bytes);
      put(`lua.table.${t.path}.keys`, t.keys);
    }
  }
}

/** the diff row a lua.* metric feeds (bytes or count), undefined for others */
export function luaSlot(name: string): { row: string; role: "bytes" | "count" } | undefined {
  const t = splitSuffix(name, "lua.table.", LUA_TABLE_SUFFIXES);
  if (t) return { row: `lua.table.${t.middle}`, role: t.suffix === "bytes" ? "bytes" : "count" };
  const y = splitSuffix(name, "lua.type.", LUA_TYPE_SUFFIXES);
  if (y) return { row: `lua.type.${y.middle}`, role: y.suffix === "bytes" ? "bytes" : "count" };
  return undefined;
}

export function luaRowLabel(row: string): string | undefined {
  if (row.startsWith("lua.table.")) return row.slice("lua.table.".length);
  if (row.startsWith("lua.type.")) return `Lua ${row.slice("lua.type.".length)} objects`;
  return undefined;
}

/** the count metric beside a lua.* bytes metric, and what it counts */
export function luaCount(metric: string): { count: string; noun: string } | undefined {
  const s = luaSlot(metric);
  if (!s || s.role !== "bytes") return undefined;
  return metric.startsWith("lua.table.") ? { count: `${s.row}.keys`, noun: "keys" } : { count: `${s.row}.count`, noun: "objects" };
}

/** the table path of a lua.table.* metric, else undefined */
export function luaTablePath(metric: string): string | undefined {
  const s = luaSlot(metric);
  return s && s.row.startsWith("lua.table.") ? s.row.slice("lua.table.".length) : undefined;
}

/**
 * Is table path `a` on the way from a root to `b`? Paths are written from their root, so an
 * ancestor's path is a prefix of its descendant's; the registry is the root of every path but
 * the main thread's.
 */
export function luaAncestor(a: string, b: string): boolean {
  if (a === b) return false;
  if (a === "registry") return !b.startsWith("<main thread>");
  return b.length > a.length && b.startsWith(a) && ".[ ".includes(b[a.length]);
}

/**
 * A table's series counts what it reaches, so every table on the path to a growing one grows as
 * much: of those, only the deepest is the suspect, unless an ancestor grew by more than twice
 * what its growing descendants explain.
 */
export function dropLuaAncestors<T extends { metric: string; tr: { fitted_delta: number } }>(passing: T[]): T[] {
  const tables = passing.map((p) => ({ p, path: luaTablePath(p.metric) })).filter((x) => x.path !== undefined);
  return passing.filter((p) => {
    const path = luaTablePath(p.metric);
    if (path === undefined) return true;
    const below = tables.filter((x) => luaAncestor(path, x.path!) && !tables.some((y) => y !== x && luaAncestor(path, y.path!) && luaAncestor(y.path!, x.path!)));
    const explained = below.reduce((s, x) => s + x.p.tr.fitted_delta, 0);
    return explained < 0.5 * p.tr.fitted_delta;
  });
}
