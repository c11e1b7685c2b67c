import { runLua } from "../harness/lua";

/**
 * luavm/census.ts in the luajit CLI (the OpenResty LuaJIT 2.1 GC64 build nginx runs): objects
 * the test makes are counted by type with the bytes the collector accounts for them, the rest
 * of gc.total is the VM's own state, and a layout that does not read the probe objects back
 * as made is refused with the check that failed.
 */
const BY = `
local function by(c) local r = {} for _, t in ipairs(c.types) do r[t.type] = t end return r end
`;

describe("Lua heap census", () => {
  it("counts what the test keeps, by type, with the collector's own sizes", () => {
    const out = runLua(`
      local C = require("memdiag.layers.luavm.census")
      ${BY}
      local tn = require("table.new")
      keep = { t = tn(1000, 0), s = tn(1000, 0), f = tn(1000, 0), u = tn(1000, 0), c = tn(1000, 0), co = tn(10, 0) }
      C.runCensus(false, 1, false) -- the first verifies the layout: its probe objects are garbage after it
      collectgarbage("collect")
      local a = C.runCensus(false, 1, false)
      for i = 1, 1000 do keep.t[i] = tn(3, 4) end                    -- colocated 4-slot array, 4-node hash: 64+32+96
      for i = 1, 1000 do keep.s[i] = string.rep("q", 50) .. i end     -- 24 + len rounded up past the NUL to 4
      for i = 1, 1000 do local x, y = i, -i keep.f[i] = function() return x + y end end -- 2 upvalues, closed
      for i = 1, 1000 do keep.u[i] = newproxy(false) end               -- 48 + 0
      for i = 1, 1000 do keep.c[i] = require("ffi").new("double[5]") end -- 16 + 40
      for i = 1, 10 do keep.co[i] = coroutine.create(print) end
      collectgarbage("collect")
      local b = C.runCensus(false, 1, false)
      local A, B = by(a), by(b)
      local sbytes = 0
      for i = 1, 1000 do local n = 50 + #tostring(i) sbytes = sbytes + 24 + (n + 4) - (n + 4) % 4 end
      local d = {}
      for k, v in pairs(B) do d[k] = { count = v.count - (A[k] and A[k].count or 0), bytes = v.bytes - (A[k] and A[k].bytes or 0) } end
      return { ok = a.ok and b.ok, d = d, sbytes = sbytes, rest = { a.other_bytes - a.vm_bytes, b.other_bytes - b.vm_bytes },
               sum = b.objects_bytes + b.other_bytes == b.heap_bytes, attempts = b.attempts, state = b.gc_state }
    `);
    expect(out.ok).toBe(true);
    expect(out.sum).toBe(true);
    expect(out.attempts).toBe(1);
    const d = out.d;
    // the census's own result tables of the first run are alive in the second: a handful
    expect(d.table.count - 1000).toBeGreaterThanOrEqual(0);
    expect(d.table.count - 1000).toBeLessThan(30);
    expect(d.table.bytes - 1000 * (64 + 4 * 8 + 4 * 24)).toBeLessThan(30 * 200);
    expect(d.table.bytes).toBeGreaterThanOrEqual(1000 * (64 + 4 * 8 + 4 * 24));
    // strings: the VM's own come and go by a few (interned names of the runs themselves)
    expect(Math.abs(d.string.count - 1000)).toBeLessThan(30);
    expect(Math.abs(d.string.bytes - out.sbytes)).toBeLessThan(30 * 64);
    // 1000 closures of two upvalues: 48 - 8 + 2 * 8 each, and their 2000 closed upvalues of 48
    expect(d.function.count).toBeGreaterThanOrEqual(1000);
    expect(d.function.count).toBeLessThan(1005);
    expect(d.function.bytes - 1000 * 56).toBeLessThan(5 * 80);
    expect(d.upvalue.count).toBeGreaterThanOrEqual(2000);
    expect(d.upvalue.count).toBeLessThan(2010);
    expect(d.upvalue.bytes).toBe(d.upvalue.count * 48);
    // the VM's own userdata and cdata come and go by a few (the cycle sentinel, module state)
    expect(Math.abs(d.userdata.count - 1000)).toBeLessThanOrEqual(3);
    expect(Math.abs(d.userdata.bytes - 1000 * 48)).toBeLessThanOrEqual(3 * 64);
    expect(Math.abs(d.cdata.count - 1000)).toBeLessThanOrEqual(3);
    expect(Math.abs(d.cdata.bytes - 1000 * 56)).toBeLessThanOrEqual(3 * 64);
    // a coroutine: its lua_State (112) and a fresh stack (LJ_STACK_START + LJ_STACK_EXTRA slots)
    expect(d.thread.count).toBe(10);
    expect(d.thread.bytes % 10).toBe(0);
    expect(d.thread.bytes / 10).toBeGreaterThan(112);
    // what no object accounts for beyond the VM's block, string table and buffer: the JIT's buffers, a few KB
    for (const r of out.rest) {
      expect(r).toBeGreaterThanOrEqual(0);
      expect(r).toBeLessThan(64 * 1024);
    }
  });

  it("refuses a layout that does not read its probe objects back as made, with the check that failed", () => {
    const out = runLua(`
      local L = require("memdiag.layers.luavm.lj-layout")
      L.LJ.tab_asize = L.LJ.tab_asize + 4
      local C = require("memdiag.layers.luavm.census")
      local r = C.runCensus(false, 1)
      return { ok = r.ok, error = r.error }
    `);
    expect(out.ok).toBe(false);
    expect(out.error).toBe("layout refused: a table's header does not read as made (gct, asize, hmask, metatable)");
  });

  it("refuses when global_State.gc.total is not where the layout says", () => {
    const out = runLua(`
      local L = require("memdiag.layers.luavm.lj-layout")
      L.LJ.gc_total = L.LJ.gc_total + 8
      local r = require("memdiag.layers.luavm.census").runCensus(false, 1)
      return { ok = r.ok, error = r.error }
    `);
    expect(out).toEqual({ ok: false, error: "layout refused: global_State.gc.total does not equal collectgarbage('count')" });
  });

  it("hands the collector back at the pace it had, and leaves one the application stopped stopped", () => {
    const out = runLua(`
      local C = require("memdiag.layers.luavm.census")
      local H = require("memdiag.layers.luajit.gc-hold")
      collectgarbage("collect")
      local before = H.gcThreshold()
      local r = C.runCensus(false, 1, false)
      local after = H.gcThreshold()
      local total = collectgarbage("count") * 1024
      collectgarbage("stop")
      local r2 = C.runCensus(false, 1, false)
      return { ok = r.ok, before = before, after = after, total = total, running = collectgarbage("isrunning"), ok2 = r2.ok }
    `);
    expect(out.ok).toBe(true);
    expect(Math.abs(out.after - out.before)).toBeLessThanOrEqual(out.total / 100 + 1);
    expect(out.running).toBe(false);
    expect(out.ok2).toBe(true);
  });

  it("finds the largest tables by their path from a root, with their keys and slots", () => {
    const out = runLua(`
      local C = require("memdiag.layers.luavm.census")
      local M = { by_key = {} }
      package.loaded["app.cache"] = M
      for i = 1, 3000 do M.by_key[{}] = i end
      routes = {}
      for i = 1, 700 do routes[i] = { i } end
      local kept = {}
      for i = 1, 1200 do kept["k" .. i] = true end
      function get_kept() return kept end
      collectgarbage("collect")
      local r = C.runCensus(false, 1)
      local by = {}
      local kept
      for _, t in ipairs(r.holders.tables) do
        by[t.path] = t
        if t.path:match("^_G%.get_kept upvalue 1 of <function stdin:%d+>$") then kept = t end
      end
      return { ok = r.ok, err = r.holders_error or "", cache = by['package.loaded["app.cache"].by_key'], routes = by["_G.routes"],
               kept = kept or false, truncated = r.holders.truncated }
    `);
    expect(out.ok).toBe(true);
    expect(out.err).toBe("");
    expect(out.truncated).toBe(false);
    expect(out.cache).toMatchObject({ keys: 3000, hash_slots: 4096, array_slots: 0, bytes: 64 + 4096 * 24 });
    // the 3000 key tables are reached first through it
    expect(out.cache.reached_bytes).toBeGreaterThanOrEqual(out.cache.bytes + 3000 * 64);
    expect(out.routes).toMatchObject({ keys: 700, array_slots: 1025, hash_slots: 0, bytes: 64 + 1025 * 8 });
    // and the 700 { i } tables it alone holds, each a header with a small colocated array
    const per = (out.routes.reached_bytes - out.routes.bytes) / 700;
    expect(Number.isInteger(per)).toBe(true);
    expect(per).toBeGreaterThanOrEqual(64 + 2 * 8);
    expect(per).toBeLessThanOrEqual(64 + 4 * 8);
    expect(out.kept).toMatchObject({ keys: 1200, hash_slots: 2048 });
  });

  it("counts cdata by C type, with their bytes and finalizers", () => {
    const out = runLua(`
      local ffi = require("ffi")
      ffi.cdef("typedef struct census_fix_t { double a[4]; int b; } census_fix_t; struct census_plain_s { int x; };")
      local C = require("memdiag.layers.luavm.census")
      keep = {}
      for i = 1, 1000 do keep[i] = ffi.gc(ffi.new("census_fix_t"), function() end) end
      for i = 1, 500 do keep[#keep + 1] = ffi.new("struct census_plain_s[10]") end
      collectgarbage("collect")
      local r = C.runCensus(false, 1, false)
      local by = {}
      for _, c in ipairs(r.cdata) do by[c.ctype] = c end
      return { fix = by["struct census_fix_t"] or false, plain = by["struct census_plain_s[10]"] or false, size = ffi.sizeof("census_fix_t") }
    `);
    // each: the 16-byte cdata header and the struct itself
    expect(out.fix).toEqual({ ctype: "struct census_fix_t", count: 1000, bytes: 1000 * (16 + out.size), finalizers: 1000 });
    expect(out.plain).toEqual({ ctype: "struct census_plain_s[10]", count: 500, bytes: 500 * (16 + 40), finalizers: 0 });
  });
});
