import { runLua } from "../harness/lua";

/**
 * luavm/gc-floor.ts in the luajit CLI: the floor is the heap at the end of a cycle (what
 * survives), garbage made since does not move it, data kept does, and every cycle is counted.
 * Ground truth: collectgarbage("count") right after a full collection, and bytes the test keeps.
 */
describe("gc-floor", () => {
  it("reads what survives collection, not the garbage made between cycles", () => {
    const out = runLua(`
      local F = require("memdiag.layers.luavm.gc-floor")
      local first = F.takeGcFloor()
      collectgarbage("collect")
      local afterCollect = collectgarbage("count") * 1024
      local a = F.takeGcFloor()
      -- 16 MB of garbage with the collector stopped: the raw count rises, the floor stays
      collectgarbage("stop")
      local t
      for i = 1, 16 do t = string.rep(string.char(64 + i), 1024 * 1024) end
      t = nil
      local raw = collectgarbage("count") * 1024
      local b = F.takeGcFloor()
      collectgarbage("restart")
      -- 8 MB kept: after the next full cycle the floor has risen by that much
      local keep = {}
      for i = 1, 8 do keep[i] = string.rep(string.char(96 + i), 1024 * 1024) end
      collectgarbage("collect")
      local c = F.takeGcFloor()
      local cCount = collectgarbage("count") * 1024
      -- the lowest of several cycles since the previous take
      keep = nil
      collectgarbage("collect")
      collectgarbage("collect")
      local d = F.takeGcFloor()
      return { first = first.floor_bytes == nil, firstCycles = first.cycles, afterCollect = afterCollect, a = a.floor_bytes,
               aCycles = a.cycles, raw = raw, b = b.floor_bytes, bCycles = b.cycles, c = c.floor_bytes, cCount = cCount,
               cCycles = c.cycles, d = d.floor_bytes, dCycles = d.cycles }
    `);
    expect(out.first).toBe(true);
    expect(out.firstCycles).toBe(0);
    expect(out.aCycles).toBeGreaterThanOrEqual(1);
    // read inside the cycle's finalizer phase: the sweep is done; within 64 KB of the count after it
    expect(Math.abs(out.a - out.afterCollect)).toBeLessThan(64 * 1024);
    expect(out.raw - out.a).toBeGreaterThan(16 * 1024 * 1024);
    expect(out.b).toBe(out.a); // no cycle since: the latest floor again
    expect(out.bCycles).toBe(out.aCycles);
    expect(out.c - out.a).toBeGreaterThan(8 * 1024 * 1024);
    // plus string.rep's scratch buffer, which the VM counts in its heap (up to the 1 MB it grew to)
    expect(out.c - out.a).toBeLessThan(9 * 1024 * 1024 + 64 * 1024);
    expect(Math.abs(out.c - out.cCount)).toBeLessThan(64 * 1024);
    expect(out.cCycles).toBeGreaterThan(out.aCycles);
    expect(out.dCycles).toBeGreaterThanOrEqual(out.cCycles + 2);
    expect(out.d).toBeLessThan(out.a + 1024 * 1024 + 64 * 1024);
  });
});
