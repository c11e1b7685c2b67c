import { runLua } from "../harness/lua";

/**
 * util/budget.ts holdGc: the collection stops the LuaJIT GC while its slices run and lets it
 * run while it yields; it always gives it back, and leaves a GC the application stopped alone.
 * ngx.sleep is a stub here (pure unit test): it records whether the GC runs during the yield.
 */
const NGX_STUB = `
  local during = {}
  ngx = { sleep = function() during[#during + 1] = collectgarbage("isrunning") end,
          update_time = function() end, now = os.time, log = function() end, ERR = 4 }
  local L = require("lualib_bundle")
  local function newBudget(...) return L.__TS__New(require("memdiag.util.budget").Budget, ...) end
`;

describe("Budget holdGc", () => {
  test("stopped in slices, running during yields, running after finish (twice is harmless)", () => {
    const r = runLua(`${NGX_STUB}
      local b = newBudget(0, true, true)
      local inSlice = collectgarbage("isrunning")
      local y1 = b:check()
      local afterYield = collectgarbage("isrunning")
      b:check()
      b:finish()
      local afterFinish = collectgarbage("isrunning")
      b:finish()
      return { inSlice = inSlice, y1 = y1, afterYield = afterYield, during = arr(during),
               afterFinish = afterFinish, afterSecond = collectgarbage("isrunning"), slices = b.slices }`);
    expect(r.inSlice).toBe(false);
    expect(r.y1).toBe(true);
    expect(r.afterYield).toBe(false);
    expect(r.during).toEqual([true, true]);
    expect(r.afterFinish).toBe(true);
    expect(r.afterSecond).toBe(true);
    expect(r.slices).toBe(3);
  });

  test("a GC the application stopped stays stopped", () => {
    const r = runLua(`${NGX_STUB}
      collectgarbage("stop")
      local b = newBudget(0, true, true)
      b:check()
      b:finish()
      return { during = arr(during), after = collectgarbage("isrunning") }`);
    expect(r.during).toEqual([false]);
    expect(r.after).toBe(false);
  });

  test("without holdGc (and when it cannot yield) the GC is not touched", () => {
    const r = runLua(`${NGX_STUB}
      local a = newBudget(0, true)
      local x = collectgarbage("isrunning")
      local b = newBudget(0, false, true)
      local y = collectgarbage("isrunning")
      a:finish() b:finish()
      return { x = x, y = y }`);
    expect(r).toEqual({ x: true, y: true });
  });

  test("collectSnapshot: the GC is held while a layer runs and given back when a layer fails", () => {
    // the first layer (system/status) replaced before memdiag.collect loads it
    const r = runLua(`${NGX_STUB}
      local seen = {}
      local fail = false
      package.loaded["memdiag.system.status"] = { readStatus = function()
        seen[#seen + 1] = collectgarbage("isrunning")
        if fail then error("layer failed on purpose", 0) end
        return nil
      end }
      local collect = require("memdiag.collect")
      fail = true
      local ok, err = pcall(collect.collectSnapshot, true)
      return { ok = ok, err = tostring(err), seen = arr(seen), after = collectgarbage("isrunning") }`);
    expect(r.ok).toBe(false);
    expect(r.err).toBe("layer failed on purpose");
    expect(r.seen).toEqual([false]);
    expect(r.after).toBe(true);
  });
});
