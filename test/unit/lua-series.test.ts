/**
 * Lua censuses as series (control-plane/src/lua-series.ts): a table path whose keys and bytes keep
 * growing is a suspect with one sentence of evidence, and explains the Lua heap's own growth (no
 * second suspect for the same leak); a cache that fills up and stops is none; a diff between two
 * censuses lists the paths that grew.
 */
import { findSuspects, WorkerWindow } from "../../control-plane/src/suspects";
import { summarize } from "../../control-plane/src/summary";
import { diffStates } from "../../control-plane/src/diff";
import { buildSnapshot } from "../fixtures/snapshots";
import { luaAncestor } from "../../control-plane/src/lua-series";

const MB = 1 << 20;
const T0 = 1_764_150_000;
const PATH = 'package.loaded["app.cache"].by_key';

function census(keys: number, other: number) {
  const perKey = 120; // hash node + key table + value string
  const bytes = 64 + keys * perKey;
  return {
    ok: true, time: 0, heap_bytes: 8 * MB + bytes, objects_bytes: 7 * MB + bytes, objects: 50000 + 3 * keys, other_bytes: MB, attempts: 1,
    types: [{ type: "table", count: 20000 + 2 * keys, bytes: 3 * MB + bytes }, { type: "string", count: 30000 + keys, bytes: 4 * MB }],
    holders: {
      nodes: 1000, objects: 50000 + 3 * keys, truncated: false,
      tables: [
        // its ancestors reach what it reaches: they grow as much
        { path: "registry", bytes: 2048, reached_bytes: 6 * MB + bytes, keys: 40, array_slots: 0, hash_slots: 64 },
        { path: "package.loaded", bytes: 3136, reached_bytes: 5 * MB + bytes, keys: 100, array_slots: 0, hash_slots: 128 },
        { path: 'package.loaded["app.cache"]', bytes: 64, reached_bytes: 64 + bytes, keys: 1, array_slots: 0, hash_slots: 0 },
        { path: PATH, bytes: 64 + keys * 40, reached_bytes: bytes, keys, array_slots: 0, hash_slots: keys },
        { path: "_G.config", bytes: 4096, reached_bytes: 9000 + other, keys: 100, array_slots: 0, hash_slots: 128 },
      ],
    },
  };
}

function worker(keysAt: (i: number) => number): WorkerWindow {
  const snaps: WorkerWindow["snapshots"] = [];
  for (let i = 0; i <= 60; i++) {
    const keys = keysAt(i);
    const c = census(keys, (i % 3) * 100);
    const s: any = buildSnapshot({ seq: i + 1, time: T0 + i * 10, gc_bytes: c.heap_bytes + (i % 4) * MB, gc_floor_bytes: c.heap_bytes, rss_bytes: 40 * MB + c.heap_bytes });
    s.lua = { timers: { pending: 3, running: 1 }, census: { ...c, time: T0 + i * 10 } };
    const sum = summarize(s);
    snaps.push({ time: T0 + i * 10, deep: false, metrics: sum.metrics, unrooted: {} });
  }
  return { worker: "w", instance: "i", worker_start: T0 - 3600, snapshots: snaps };
}

describe("Lua table paths as series", () => {
  test("ancestry of paths", () => {
    expect(luaAncestor("registry", PATH)).toBe(true);
    expect(luaAncestor("package.loaded", PATH)).toBe(true);
    expect(luaAncestor('package.loaded["app.cache"]', PATH)).toBe(true);
    expect(luaAncestor(PATH, PATH)).toBe(false);
    expect(luaAncestor('package.loaded["app"]', 'package.loaded["app.cache"]')).toBe(false);
    expect(luaAncestor("_G.routes", "_G.routes_v2")).toBe(false);
    expect(luaAncestor("_G.routes", "_G.routes.by_host")).toBe(true);
    expect(luaAncestor("registry", "<main thread>.x")).toBe(false);
  });

  test("the summary names every census type and table path", () => {
    const m = worker(() => 1000).snapshots[0].metrics;
    expect(m[`lua.table.${PATH}.keys`]).toBe(1000);
    expect(m[`lua.table.${PATH}.bytes`]).toBe(64 + 1000 * 120);
    expect(m["lua.type.table.count"]).toBe(22000);
    expect(m["lua.type.string.bytes"]).toBe(4 * MB);
  });

  test("a growing table path is the suspect, with keys and bytes in its evidence; neither its ancestors nor the heap it grows are listed again", () => {
    // 200 keys a second: 2000 per snapshot, 120,000 in ten minutes
    const w = worker((i) => 1000 + i * 2000);
    const s = findSuspects([w], 600);
    const lua = s.filter((x) => x.owner === "lua");
    expect(lua.map((x) => x.metric)).toEqual([`lua.table.${PATH}.bytes`]);
    expect(lua[0].subject).toBe(PATH);
    expect(lua[0].delta_count).toBe(120000);
    expect(lua[0].evidence).toMatch(new RegExp(`^${PATH.replace(/[.[\]"]/g, "\\$&")}: \\+120000 keys, \\+13\\.7 MB in 10 min \\(1\\.4 MB/min, R² 1\\.00\\)`));
  });

  test("a cache that fills up in the first minutes and stays full is no suspect", () => {
    const w = worker((i) => Math.min(i, 12) * 10000);
    expect(findSuspects([w], 600).filter((x) => x.owner === "lua")).toEqual([]);
  });

  test("a diff between two censuses lists the path that grew, by bytes and keys", () => {
    const w = worker((i) => 1000 + i * 2000);
    const a = w.snapshots[0], b = w.snapshots[60];
    const rows = diffStates({ metrics: a.metrics, unrooted: {}, deep: false }, { metrics: b.metrics, unrooted: {}, deep: false });
    const r = rows.find((x) => x.key === `lua.table.${PATH}`)!;
    expect(r).toBeDefined();
    expect(r.delta_bytes).toBe(120000 * 120);
    expect((r as any).b_count - (r as any).a_count).toBe(120000);
    expect(r.label).toBe(PATH);
  });
});
