import { runLua } from "../harness/lua";

/**
 * layers/luajit/gc-hold.ts in the luajit CLI (the OpenResty LuaJIT 2.1 nginx runs): a hold and its
 * release leave the collector's threshold where it was, so a program whose allocations are
 * interleaved with holds runs the same number of GC cycles as without them, where plain
 * stop/restart starts extra cycles. Cycles are counted by a finalizer that re-arms itself.
 */
const COUNTER = `
local S = { n = 0 }
local function arm()
  local p = newproxy(true)
  getmetatable(p).__gc = function() S.n = S.n + 1 arm() end
end
arm()
local keep = {}
for i = 1, 20000 do keep[i] = { i } end -- a live heap of a few MB, as in a worker
collectgarbage("collect")
local function garbage(n) local t for i = 1, n do t = { i, i } end return t end
`;

describe("gc-hold", () => {
  it("locates the collector's threshold and restores it on release", () => {
    const out = runLua(`
      local H = require("memdiag.layers.luajit.gc-hold")
      ${COUNTER}
      local before = H.gcThreshold()
      local held = H.holdGc()
      local stopped = H.gcThreshold()
      garbage(5000)
      local total = collectgarbage("count") * 1024
      H.releaseGc()
      return { mode = H.gcHoldMode(), held = held, before = before, stopped = stopped,
               after = H.gcThreshold(), total = total, running = collectgarbage("isrunning"),
               pause = collectgarbage("setpause", 200) }
    `);
    expect(out.mode).toBe("threshold");
    expect(out.held).toBe(true);
    expect(out.stopped).toBe(2 ** 47);
    expect(out.running).toBe(true);
    expect(out.pause).toBe(200); // the pause used for the restore is put back
    // the collector was pausing (after a full collect), so its threshold was above the heap:
    // restored to within half a percent of the heap (the restore's step), not reset to the heap's size
    expect(out.before).toBeGreaterThan(out.total);
    expect(Math.abs(out.after - out.before)).toBeLessThanOrEqual(out.total / 200 + 1);
  });

  it("leaves a collector the application stopped stopped", () => {
    const out = runLua(`
      local H = require("memdiag.layers.luajit.gc-hold")
      collectgarbage("stop")
      local held = H.holdGc()
      H.releaseGc()
      return { held = held, running = collectgarbage("isrunning") }
    `);
    expect(out).toEqual({ held: false, running: false });
  });

  it("runs as many GC cycles with holds interleaved as without, where stop/restart runs more", () => {
    const cycles = (between: string): number =>
      runLua(`
        local H = require("memdiag.layers.luajit.gc-hold")
        ${COUNTER}
        local n0 = S.n
        for i = 1, 400 do
          garbage(400)
          ${between}
        end
        return S.n - n0
      `);
    const none = cycles("");
    const held = cycles(`H.holdGc() garbage(100) H.releaseGc()`);
    const plainIdle = cycles(`collectgarbage("stop") garbage(100) collectgarbage("restart")`);
    const heldIdle = cycles(`garbage(100)`);
    // the held variant allocates what the last one does; only the stop/restart pairs differ
    expect(none).toBeGreaterThan(0);
    expect(Math.abs(held - heldIdle)).toBeLessThanOrEqual(1);
    expect(plainIdle).toBeGreaterThan(heldIdle * 2);
  });
});
