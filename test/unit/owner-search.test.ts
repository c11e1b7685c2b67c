import { runLua } from "../harness/lua";

/**
 * deep/owners/search.ts on synthetic reference graphs built here (no nginx, no memory
 * read): nodes 1..30 are pools, 31.. plain heap chunks; the expected owners follow
 * from the graph by hand.
 */
interface Out {
  owner: Record<string, number>;
  parent: Record<string, number>;
  altRoot: number[];
  altPools: number[];
  altOf: Record<string, number[]>;
}

function search(edges: Record<number, number[]>, roots: [number, string][], latePools: number[] = []): Out {
  const e = Object.entries(edges).map(([n, out]) => `[${n}] = {${out.join(",")}}`).join(", ");
  return runLua<Out>(`
    local S = require("memdiag.deep.owners.search")
    local checks = 0
    local ctx = { budget = { check = function() checks = checks + 1 return false end }, skipped = {} }
    local late = {}
    for _, n in ipairs({${latePools.join(",")}}) do late[n] = true end
    local g = { edges = { ${e} }, nodes = 64, nPools = 30, latePool = late,
      rootNode = { ${roots.map((r) => r[0]).join(",")} }, rootKind = { ${roots.map((r) => JSON.stringify(r[1])).join(",")} } }
    local r = S.searchOwners(ctx, g)
    local owner, parent, altOf = {}, {}, {}
    for n = 1, 63 do
      if r.owner[n] ~= nil then owner[tostring(n)] = r.owner[n]; parent[tostring(n)] = r.parent[n] end
      if r.altOf[n] ~= nil then altOf[tostring(n)] = arr(r.altOf[n]) end
    end
    return { owner = owner, parent = parent, altRoot = arr(r.altRoot), altPools = arr(r.altPools), altOf = altOf }`);
}

describe("owner search on a synthetic graph", () => {
  test("a chain root → pool → heap chunk → pool → pool belongs to the root, with the path as parents", () => {
    const r = search({ 1: [31], 31: [2], 2: [3] }, [[1, "segment"]]);
    expect(r.owner).toEqual({ 1: 0, 31: 0, 2: 0, 3: 0 });
    expect(r.parent).toEqual({ 1: 0, 31: 1, 2: 31, 3: 2 });
    expect(r.altRoot).toEqual([]);
  });

  test("nodes no root reaches have no owner", () => {
    const r = search({ 1: [2], 5: [6] }, [[1, "segment"]]);
    expect(Object.keys(r.owner).sort()).toEqual(["1", "2"]);
  });

  test("tiers: nginx/module data claim first, then connection/request pools, then Lua", () => {
    // pool 4: pointed at by Lua directly and by a data segment through a heap chunk;
    // pool 6: only a connection pool and Lua point at it; pool 7: only Lua
    const r = search({ 32: [4], 9: [6] }, [
      [4, "lua"], [32, "segment"], [6, "lua"], [9, "connection pool"], [7, "lua"],
    ]);
    expect(r.owner[4]).toBe(1);
    expect(r.parent[4]).toBe(32);
    expect(r.owner[6]).toBe(3);
    expect(r.owner[9]).toBe(3);
    expect(r.owner[7]).toBe(4);
  });

  test("within a tier the root holding a list's head owns it; a root into its middle is an alternative", () => {
    // list 10 → 11 → 12 → 13 (pools); root 0 holds the head, root 1 a stale word pointing at 11
    const r = search({ 10: [11], 11: [12], 12: [13] }, [[10, "segment"], [11, "segment"]]);
    for (const n of [10, 11, 12, 13]) expect(r.owner[n]).toBe(0);
    expect(r.parent[11]).toBe(10);
    expect(r.altRoot).toEqual([1]);
    // it reaches 11, 12 and 13, and is listed with the pools within two hops of its entry
    expect(r.altPools).toEqual([3]);
    expect(r.altOf).toEqual({ 11: [0], 12: [0], 13: [0] });
  });

  test("a root reaching another through a heap chunk makes that one interior too", () => {
    const r = search({ 10: [40], 40: [11], 11: [12] }, [[11, "segment"], [10, "cycle"]]);
    for (const n of [10, 40, 11, 12]) expect(r.owner[n]).toBe(1);
    expect(r.altRoot).toEqual([0]);
  });

  test("two roots in a cycle are both interior and neither is preferred: each keeps its own node", () => {
    const r = search({ 1: [2], 2: [1] }, [[1, "segment"], [2, "segment"]]);
    expect(r.owner).toEqual({ 1: 0, 2: 1 });
    expect(r.altRoot).toEqual([0, 1]);
  });

  test("late pools (node ids past the chunks) count as pools for the alternatives", () => {
    const r = search({ 10: [50], 50: [51] }, [[10, "segment"], [50, "segment"]], [50, 51]);
    expect(r.owner[51]).toBe(0);
    expect(r.altRoot).toEqual([1]);
    expect(r.altPools).toEqual([2]);
    expect(r.altOf).toEqual({ 50: [0], 51: [0] });
  });
});
