import { runLua } from "../harness/lua";
import { validateSnapshot } from "../../schema/validate";

/**
 * trimToFit on a synthetic snapshot with long lists, built in Lua (so arrays
 * carry the encoder's array marker exactly as in the agent) and checked here
 * against the schema and against the untrimmed original.
 */
const BUILD = `
local trim = require("memdiag.push.trim")
local function pool(i, kind)
  return { kind = kind, address = string.format("0x%x", 0x10000 + i * 4096), blocks = 1 + i % 3,
           block_bytes = 1024 * i, used_bytes = 512 * i, large_blocks = i % 2, large_bytes = 100 * i }
end
local top = arr({})
for i = 1, 40 do top[#top + 1] = pool(i, "request") end
local unrooted = arr({})
for g = 1, 30 do
  local ex = arr({})
  for k = 1, 8 do ex[#ex + 1] = string.format("0x%x", 0x700000 + g * 4096 + k * 16) end
  local h = arr({})
  for b = 1, 12 do h[#h + 1] = { min_bytes = 2^b, max_bytes = 2^(b+1) - 1, count = b, bytes = b * 2^b } end
  unrooted[#unrooted + 1] = { signature = "sig" .. g, pools = g, block_bytes = 4096 * g, large_blocks = g,
    large_bytes = 10000 * g, owner = "ngx_http_x_module.so (.bss+0x40)", retainer = "x -> pool", examples = ex,
    large_histogram = h, cleanups = arr({}) }
end
local regions = arr({})
for i = 1, 60 do regions[#regions + 1] = { class = "file", name = "/usr/lib/lib" .. i .. ".so", bytes = 4096 * i, mappings = 2 } end
local snap = { schema = 1, pid = 1234, host = "h", nginx_version = "1.22.1", agent_version = "0.1.0", layout = "x",
  seq = 7, time = 1700000000.5, collect_ms = 1.5,
  system = { rss_bytes = 1, anon_bytes = 1, file_bytes = 1, shmem_bytes = 0, vm_data_bytes = 1, swap_bytes = 0, regions = regions, explained_ratio = 0.5 },
  glibc = {}, luajit = { gc_bytes = 100 }, shm = arr({}),
  pools = { available = true, top = top, unrooted = unrooted }, skipped = {} }
local full = J(snap)
`;

function trimAt(limitExpr: string) {
  return runLua(`${BUILD}
    local limit = ${limitExpr}
    local json, names = trim.trimToFit(snap, limit)
    return { full = full, json = json or NULL, names = arr(names), limit = limit, after = J(snap) }`);
}

describe("push trim", () => {
  test("a snapshot that fits is returned as is, nothing marked", () => {
    const r = trimAt("#full");
    expect(r.json).toBe(r.full);
    expect(r.names).toEqual([]);
  });

  test("examples go first; the output fits, validates and names what was shortened; input untouched", () => {
    const r = trimAt("#full - 2000");
    expect(r.json.length).toBeLessThanOrEqual(r.limit);
    const s = JSON.parse(r.json);
    const full = JSON.parse(r.full);
    expect(validateSnapshot(s).error).toBeUndefined();
    expect(s.trimmed).toEqual(["pools.unrooted.examples"]);
    // the biggest group (last here) keeps its examples, the smallest lost theirs; every group keeps one
    const n = full.pools.unrooted.length;
    expect(s.pools.unrooted[n - 1].examples).toEqual(full.pools.unrooted[n - 1].examples);
    expect(s.pools.unrooted[0].examples.length).toBe(1);
    for (const g of s.pools.unrooted) expect(g.examples.length).toBeGreaterThanOrEqual(1);
    expect(s.pools.top).toEqual(full.pools.top);
    expect(s.system.regions).toEqual(full.system.regions);
    expect(r.after).toBe(r.full);
  });

  test("deep trim: every list shortened, smallest entries dropped first, biggest kept, order preserved", () => {
    const r = trimAt("4000");
    expect(r.json).not.toBeNull();
    expect(r.json.length).toBeLessThanOrEqual(4000);
    const s = JSON.parse(r.json);
    const full = JSON.parse(r.full);
    expect(validateSnapshot(s).error).toBeUndefined();
    expect(s.trimmed).toEqual(expect.arrayContaining(["pools.unrooted.examples", "pools.unrooted.large_histogram", "pools.top", "system.regions"]));
    expect(s.trimmed).toEqual(r.names);
    // regions kept are the largest ones, in their original order
    const kept = s.system.regions.map((x: any) => x.bytes);
    const largest = full.system.regions.map((x: any) => x.bytes).sort((a: number, b: number) => b - a).slice(0, kept.length);
    expect([...kept].sort((a: number, b: number) => b - a)).toEqual(largest);
    expect(kept).toEqual([...kept].sort((a: number, b: number) => a - b));
    expect(s.system.regions.length).toBeGreaterThanOrEqual(1);
    // unrooted: the biggest group survives
    const biggest = full.pools.unrooted[full.pools.unrooted.length - 1].signature;
    expect(s.pools.unrooted.map((g: any) => g.signature)).toContain(biggest);
    // empty lists stay JSON arrays
    expect(Array.isArray(s.pools.top)).toBe(true);
    expect(r.after).toBe(r.full);
  });

  test("impossible limit: no JSON, lists named", () => {
    const r = trimAt("300");
    expect(r.json).toBeNull();
    expect(r.names.length).toBeGreaterThan(0);
  });

  test("snapshot without pools lists (current collector shape) trims regions only", () => {
    const r = runLua(`
      local trim = require("memdiag.push.trim")
      local regions = arr({})
      for i = 1, 50 do regions[#regions + 1] = { class = "file", name = "/lib/" .. i, bytes = i, mappings = 1 } end
      local snap = { schema = 1, seq = 1, system = { regions = regions }, pools = { available = false, error = "x" } }
      local full = J(snap)
      local json, names = trim.trimToFit(snap, #full - 500)
      return { json = json, names = arr(names), limit = #full - 500 }`);
    expect(r.json.length).toBeLessThanOrEqual(r.limit);
    expect(r.names).toEqual(["system.regions"]);
  });
});
